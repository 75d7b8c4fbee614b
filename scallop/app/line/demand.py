"""How hard the arrivals drive the arms, for back-pressure (docs/plc-interface.md, infeed).

:meth:`ArmDemand.share` is the share of the arms' capacity the recent arrivals ask for: scallops
handed to the arms per second over what the connected arms sustain at the belt's speed. The
line's PLC service reads it to slow or hold the feeder before a scallop has to be diverted.
"""

from __future__ import annotations

import math

from scallop.robot.planning import PickPlanner

# Back-pressure judges the arrivals over this long (once the line has run that long): long
# enough to see a burst for what it is, short enough to let the feeder run again soon after.
DEMAND_WINDOW_S = 20.0


class ArmDemand:
    """``arms``: the line's :class:`~scallop.app.line.arms.ArmDrivers`; ``stats`` counts the
    ``target`` events (picks asked of the arms); ``control`` tells how long the line has run."""

    def __init__(self, arms, stats, clock, control) -> None:
        self.arms = arms
        self.stats = stats
        self.clock = clock
        self.control = control
        self._capacity: dict[tuple[str, float], float] = {}  # (arm, belt speed) -> picks/s
        self._at, self._val = -math.inf, None

    def share(self) -> float | None:
        """Demand over capacity (None: not known yet, or no arm connected)."""
        tracker = self.arms.scheduler.tracker
        now = self.clock.now()
        if now < self._at + 1.0:
            return self._val  # judged once a second: it looks back over 20
        self._at = now
        self._val = None
        if not tracker.ready or self.control.uptime_s() < DEMAND_WINDOW_S:
            return None
        v = round(tracker.speed_mm_s, -1)
        if v <= 0:
            return None
        cap = 0.0
        for a in (c.config for c in self.arms.clients if c.connected):
            key = (a.name, v)
            if key not in self._capacity:
                self._capacity[key] = PickPlanner(a).capacity_per_s(v)
            cap += self._capacity[key]
        if cap <= 0:
            return None
        self._val = self.stats.per_minute(now, "target", DEMAND_WINDOW_S) / 60.0 / cap
        return self._val
