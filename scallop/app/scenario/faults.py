"""A scenario's faults as actions at virtual times on the running line, its simulated arms and
its camera, run from the line's ``on_tick`` hook (belt stops are not here: they are written
into the belt's speed profile, :meth:`scallop.app.scenario.spec.Scenario.line_config`)."""

from __future__ import annotations

import math
from collections.abc import Callable

from scallop.app.scenario.spec import FaultSpec


class FaultScript:
    """The faults of one run. An action returns False to be tried again the next tick (the
    operator's reset of an arm that does not answer yet); ``log`` lists the actions done and
    ``errors`` the ones that gave up."""

    def __init__(self, line, faults: list[FaultSpec], t0: float) -> None:
        self.line = line
        self.t0 = t0
        self.events: list[tuple[float, tuple[int, int], dict, Callable[[], bool]]] = []
        self.log: list[dict] = []
        self.errors: list[str] = []
        for i, f in enumerate(faults):
            self._schedule(f, i)
        self.events.sort(key=lambda e: (e[0], e[1]))
        self._next_t = self.events[0][0] if self.events else math.inf

    def _schedule(self, f: FaultSpec, i: int) -> None:
        line, t0 = self.line, self.t0
        backend = line.backend
        camera = backend.camera

        def add(t: float, what: str, fn: Callable[[], bool], action: str = "", **params) -> None:
            # ``what``: the log's own words (stable, for comparisons); ``action`` and its
            # ``params``: the report's, from the message catalogue (report.log.<action>).
            # At one instant a fault's end runs before another's start: one that ends as the
            # next begins must not undo it.
            entry = {"event": what, "fault": i, "action": action, "params": params}
            # A fault's end (the camera set back, the stall released, the server back, the gate freed).
            back = t == f.end_s and f.end_s > f.at_s
            self.events.append((t0 + t, (0 if back else 1, len(self.events)), entry, fn))

        def once(fn: Callable[[], None]) -> Callable[[], bool]:
            def run() -> bool:
                fn()
                return True

            return run

        def set_then_back(what: str, setter: Callable[[float], None], value: float, normal: float, **params) -> None:
            # ``setter(value)`` from at_s to end_s, then ``setter(normal)``.
            add(f.at_s, f"faults[{i}] {f.kind} {what}", once(lambda: setter(value)), f.kind, **params)
            add(f.end_s, f"faults[{i}] {f.kind} back", once(lambda: setter(normal)), f"{f.kind}_back")

        if f.kind == "belt_stop":
            return  # in the belt's speed profile
        if f.kind == "camera_drop":
            add(
                f.at_s,
                f"faults[{i}] camera_drop {f.frames}",
                once(lambda: camera.drop_next(f.frames)),
                "camera_drop",
                frames=f.frames,
            )
        elif f.kind == "fluorescence_drop":
            add(
                f.at_s,
                f"faults[{i}] fluorescence_drop {f.frames}",
                once(lambda: camera.lose_fluorescence(f.frames)),
                "fluorescence_drop",
                frames=f.frames,
            )
        elif f.kind == "fluorescence_shift":
            shift = f"{f.shift_mm:g}"
            set_then_back(f"{shift} mm", camera.knock_fluorescence, f.shift_mm, 0.0, shift=shift)
        elif f.kind == "camera_scale":
            set_then_back(f"{f.scale:g}", camera.rescale, f.scale, 1.0, scale=f"{f.scale:g}")
        elif f.kind == "camera_stall":
            add(
                f.at_s,
                f"faults[{i}] camera_stall {f.duration_s:g} s",
                once(lambda: camera.stall(f.duration_s)),
                "camera_stall",
                duration=f"{f.duration_s:g}",
            )
        elif f.kind == "heartbeat_stall":
            sim = backend.sim_arm(f.arm)
            add(
                f.at_s,
                f"faults[{i}] {f.arm} heartbeat stalls",
                once(lambda: sim.stall_heartbeat(True)),
                "heartbeat_stalls",
                arm=f.arm,
            )
            add(
                f.end_s,
                f"faults[{i}] {f.arm} heartbeat back",
                once(lambda: sim.stall_heartbeat(False)),
                "heartbeat_back",
                arm=f.arm,
            )
        elif f.kind == "arm_disconnect":
            sim = backend.sim_arm(f.arm)
            # Back on the same port: the controller's transport reconnects to where it was.
            add(f.at_s, f"faults[{i}] {f.arm} server down", once(sim.go_offline), "arm_down", arm=f.arm)
            add(f.end_s, f"faults[{i}] {f.arm} server back", once(sim.come_back), "arm_back", arm=f.arm)
            t_reset = f.end_s + f.reset_after_s
            add(
                t_reset,
                f"faults[{i}] operator resets {f.arm}",
                self._arm_reset(f.arm, give_up_at_s=t_reset + 10.0),
                "arm_reset",
                arm=f.arm,
            )
        elif f.kind == "plc_disconnect":
            plc = backend.sim_plc
            # The PLC keeps running (its watchdog sees the line go): only the link is cut.
            add(f.at_s, f"faults[{i}] line PLC server down", once(plc.go_offline), "plc_down")
            add(f.end_s, f"faults[{i}] line PLC server back", once(plc.come_back), "plc_back")
            add(
                f.end_s + f.reset_after_s,
                f"faults[{i}] operator checks the rework lane",
                once(self._operator_acks),
                "rework_checked",
            )
        elif f.kind == "gate_jam":
            plc = backend.sim_plc

            def reset_gate() -> None:
                self._operator_acks()  # the scallops the alarms name were taken off by hand
                if line.alarms.is_active("plc.gate"):
                    line.reset("scenario")

            add(f.at_s, f"faults[{i}] reject gate jams", once(lambda: plc.jam_gate(True)), "gate_jams")
            add(f.end_s, f"faults[{i}] reject gate freed", once(lambda: plc.jam_gate(False)), "gate_freed")
            add(
                f.end_s + f.reset_after_s,
                f"faults[{i}] operator clears the gate and resets",
                once(reset_gate),
                "gate_reset",
            )
        elif f.kind == "estop_restart":
            sims = list(backend.sim_arms) if f.arms else []

            def press() -> None:
                line.estop("scenario")
                for s in sims:
                    s.estop()

            def release() -> None:
                for s in sims:
                    s.release_estop()

            def restart() -> bool:
                if line.state == "estop":
                    line.reset("scenario")
                if line.state in ("stopped", "paused"):
                    line.start("scenario")
                return True

            add(f.at_s, f"faults[{i}] e-stop pressed", once(press), "estop_pressed")
            add(f.end_s, f"faults[{i}] e-stop released", once(release), "estop_released")
            add(f.end_s + f.reset_after_s, f"faults[{i}] operator resets and restarts the line", restart, "restarted")

    def _operator_acks(self) -> None:
        """The operator acknowledges every alarm on the screen (having seen to it)."""
        for a in self.line.alarms.visible():
            if a.active and not a.acked:
                self.line.ack_alarm(a.id, "scenario")

    def _arm_reset(self, name: str, give_up_at_s: float) -> Callable[[], bool]:
        """The operator's reset of one arm, tried every tick until the arm answers (or gives up)."""
        from scallop.robot.errors import RobotError

        def run() -> bool:
            c = next(c for c in self.line.clients if c.name == name)
            st = c.state_name
            if st in ("idle", "picking"):
                return True
            if st in ("fault", "estop"):
                try:
                    c.reset_fault()
                    return True
                except RobotError:
                    pass
            if self.line.clock.now() > self.t0 + give_up_at_s:
                self.errors.append(f"operator reset of {name} gave up: the arm stayed {st}")
                return True
            return False

        return run

    def tick(self, now: float) -> None:
        """Run the actions that are due at ``now`` (virtual time)."""
        if self._next_t > now:
            return
        keep = []
        while self.events and self.events[0][0] <= now:
            t, k, entry, fn = self.events.pop(0)
            if fn():
                self.log.append({"t": round(now - self.t0, 3)} | entry)
            else:
                keep.append((t, k, entry, fn))
        self.events = sorted(keep + self.events, key=lambda e: (e[0], e[1]))
        # A retried action waits a tick.
        self._next_t = min((e[0] for e in self.events), default=math.inf)
        if keep:
            self._next_t = now + self.line.config.runtime.tick_s
