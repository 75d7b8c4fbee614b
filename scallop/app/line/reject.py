"""Where every scallop ends, and the line PLC that makes it so (docs/plc-interface.md).

Each scallop the line decided on gets exactly one **disposition** when its decision ends
(:func:`disposition_of`):

* ``picked`` — an arm completed its pick;
* ``passed`` — let through on purpose: vision saw it whole and saw no uro;
* ``diverted`` — it needed a pick and did not get one (no arm free, unsure, too close to a
  neighbour, the pick failed, the line paused …): the reject gate is asked to push it into the
  rework lane when it gets there;
* ``not_diverted`` — it needed diverting and could not be: no gate, the gate in fault, the PLC
  lost, or its decision came after it passed the gate. Each one is a critical alarm (a scallop
  that may carry its uro went on), and the infeed is held while the cause lasts.

:class:`RejectGate` is the line's side of the PLC: it polls it and beats, sets the infeed, the
stack light, the horn and the gate mode from the line's state, raises the PLC's alarms, and
turns each ``diverted`` scallop into a divert request at the belt count when it reaches the
gate. Without a PLC in the configuration it still gives every scallop its disposition, and one
that needed diverting is ``not_diverted``, with its alarm.
"""

from __future__ import annotations

import math
import threading
from collections import Counter, deque
from collections.abc import Callable
from enum import StrEnum

from scallop.app.alarms import Alarms
from scallop.app.line.ledger import ScallopOutcome
from scallop.app.line.states import LineReason, LineState, Result
from scallop.robot.belt import Belt
from scallop.robot.plc import (
    GateFault,
    GateMode,
    GateState,
    Infeed,
    PlcClient,
    PlcConfig,
    PlcError,
    PlcStatus,
    StackLight,
)
from scallop.vision.detections import VisionReason


class Disposition(StrEnum):
    PICKED = "picked"
    PASSED = "passed"
    DIVERTED = "diverted"
    NOT_DIVERTED = "not_diverted"


DISPOSITIONS: tuple[str, ...] = tuple(d.value for d in Disposition)

# The only reason to let a scallop through unpicked: vision saw it whole, with no uro.
PASS_REASONS = frozenset({VisionReason.NO_URO.value})

# The line's states in which what passes the gate is vouched for scallop by scallop; in any
# other the gate is held open (everything to rework).
VOUCHED = frozenset({LineState.RUNNING, LineState.PAUSED, LineState.STOPPING})


def disposition_of(oc: ScallopOutcome) -> Disposition:
    """Where a finished decision sends its scallop (before the gate is asked)."""
    if oc.result == Result.PICKED:
        return Disposition.PICKED
    if oc.result == Result.SKIPPED and oc.reason in PASS_REASONS:
        return Disposition.PASSED
    return Disposition.DIVERTED


class RejectGate:
    """``belt_count_now()`` is the line's belt count now (extrapolated; None when unknown)."""

    # A request must reach the PLC this long before its count comes (link, queue, scan).
    MIN_LEAD_S = 0.15

    def __init__(
        self,
        config: PlcConfig | None,
        belt: Belt,
        alarms: Alarms,
        clock,
        belt_count_now: Callable[[], float | None],
        belt_speed: Callable[[], float],
        event: Callable[[str, str, dict | None], None] = lambda *a: None,
    ) -> None:
        self.config = config
        self.belt = belt
        self.alarms = alarms
        self.clock = clock
        self.belt_count_now = belt_count_now
        self.belt_speed = belt_speed
        self.event = event
        self.client = PlcClient(config, clock, direction=belt.direction) if config is not None else None
        self.status: PlcStatus | None = None
        self.error = "" if config is not None else "no line PLC is configured"
        self.counts: Counter = Counter()
        self._lock = threading.Lock()  # dispose() runs in the frame and arm loops, service() in the PLC's
        self.not_diverted_reasons: Counter = Counter()
        self._recovering = False  # the PLC was lost: the gate stays held open until it has caught up
        # (divert seq, track id, belt count at the gate) not yet judged, in the order asked.
        self._requested: deque[tuple[int, int, float]] = deque()
        self._gate_faulted = False
        self._last_ok_count: float | None = None
        self._plc_reason = ""  # why picking is held on the PLC's account ("" = it is not)
        if config is None:
            self.alarms.raise_(
                "plc.none",
                "warning",
                "plc",
                "no line PLC is configured: scallops the arms do not pick are not diverted (see docs/plc-interface.md)",
            )

    # ------------------------------------------------------------------ dispositions
    def dispose(self, done: list[ScallopOutcome]) -> None:
        """Give each finished outcome its disposition (``oc.extra['disposition']``) and ask the
        gate for the ones that need it."""
        with self._lock:
            for oc in done:
                self._dispose_one(oc)

    def _dispose_one(self, oc: ScallopOutcome) -> None:
        d = disposition_of(oc)
        if d == Disposition.DIVERTED:
            why = self._divert(oc)
            if why:
                d = Disposition.NOT_DIVERTED
                oc.extra["not_diverted"] = why
                self.not_diverted_reasons[why] += 1
                self.alarms.raise_(
                    "plc.not_diverted",
                    "critical",
                    "plc",
                    f"scallop {oc.track_id} needed diverting ({oc.reason or oc.result}) and was not: {why}. "
                    "Take it off the belt by hand",
                    params={"track": oc.track_id, "why": why},
                )
        oc.extra["disposition"] = d.value
        self.counts[d.value] += 1

    def _divert(self, oc: ScallopOutcome) -> str:
        """Ask for the divert; the reason it cannot be asked for ("" when it is)."""
        cfg, client, st = self.config, self.client, self.status
        if cfg is None or client is None:
            return "no line PLC is configured"
        if not cfg.gate_fitted or (st is not None and st.gate_state == GateState.NOT_FITTED):
            return "no reject gate is fitted"
        if st is not None and st.gate_state == GateState.FAULT:
            return f"the reject gate is in fault ({GateFault(st.gate_fault).name})"
        u = float(oc.decision.track.u)  # material position: belt x = u + belt travel
        count = (cfg.gate_x_mm - cfg.gate_lead_mm - u) * self.belt.counts_per_mm
        now = self.belt_count_now()
        if now is not None:
            margin = self.MIN_LEAD_S * max(0.0, self.belt_speed()) * self.belt.counts_per_mm
            if count < now + margin:
                return "it had reached the gate before the decision came"
        seq = client.divert(client.raw_count_at(count), oc.track_id)
        self._requested.append((seq, oc.track_id, count))
        if self.error:
            # Sent when the PLC answers again, if the scallop has not reached the gate by then
            # (meanwhile the PLC's own safe state holds the gate open).
            oc.extra["divert"] = "queued while the line PLC was not answering"
        return ""

    # ------------------------------------------------------------------ the PLC
    def hold_reason(self) -> str:
        """Why no new pick may be sent on the PLC's account ("" when they may)."""
        return self._plc_reason

    def service(self, state: LineState, critical_unacked: bool, warnings: bool) -> None:
        """Poll the PLC, beat, and set its outputs from the line's state (the robot I/O loop)."""
        if self.client is None:
            return
        # After an outage the gate stays open until every request owed to the PLC is in.
        mode = GateMode.AUTO if state in VOUCHED and not self._recovering else GateMode.DIVERT_ALL
        # The feeder runs only while the line runs, the gate is not in fault, and nothing critical
        # waits for a person (a scallop not diverted is one: no more come until it is seen to).
        gate_ok = self.status is not None and self.status.gate_state != GateState.FAULT
        run = state == LineState.RUNNING and gate_ok and not critical_unacked
        infeed = Infeed.RUN if run else Infeed.HOLD
        if state in (LineState.ESTOP, LineState.FAULT, LineState.STOPPED) or critical_unacked:
            light = StackLight.RED
        elif state == LineState.RUNNING and not warnings:
            light = StackLight.GREEN
        else:
            light = StackLight.AMBER
        self.client.set_outputs(infeed, light, critical_unacked, mode)
        try:
            if not self.client.transport.connected:
                self.client.connect()
            if self._recovering:
                self._drop_passed()
            self.client.beat()
            st = self.client.poll()
        except PlcError as e:
            self._lost(str(e))
            return
        self.status = st
        if self.error:
            self.event("plc_back", "system", {"after": self.error})
        self.error = ""
        if self._recovering and self.client.pending_diverts() == 0:
            self._recovering = False
        self.alarms.clear("plc.lost")
        self._inputs(st)
        self._confirmations(st)

    def _drop_passed(self) -> None:
        now = self.belt_count_now()
        if now is None:
            return
        for tid in self.client.drop_passed(self.client.raw_count_at(now)):
            self.event("divert_missed", "system", {"track": tid, "why": "reached the gate while the PLC was away"})
            self.alarms.raise_(
                "plc.divert_missed",
                "critical",
                "plc",
                f"scallop {tid} reached the reject gate while the line PLC was not answering: the PLC's own safe "
                "state should have diverted it; check the rework lane",
                params={"track": tid},
            )

    def _confirmations(self, st: PlcStatus) -> None:
        """A gate that just went to FAULT failed the requests that came due since the last good
        poll: those scallops may have gone on with their uro (each is alarmed by name)."""
        with self._lock:
            self._judge(st)

    def _judge(self, st: PlcStatus) -> None:
        now = self.belt_count_now()
        faulted = st.gate_state == GateState.FAULT
        if faulted and not self._gate_faulted and now is not None:
            lo = self._last_ok_count if self._last_ok_count is not None else -math.inf
            for seq, tid, count in self._requested:
                if lo <= count <= now:
                    self.counts["unconfirmed"] += 1
                    self.event("divert_unconfirmed", "system", {"track": tid, "seq": seq})
                    self.alarms.raise_(
                        "plc.unconfirmed",
                        "critical",
                        "plc",
                        f"the reject gate failed while diverting scallop {tid}: it may have gone on with its uro; "
                        "take it off the belt by hand",
                        params={"track": tid},
                    )
        self._gate_faulted = faulted
        if not faulted and now is not None:
            self._last_ok_count = now
            while self._requested and self._requested[0][2] < now:
                self._requested.popleft()

    def _lost(self, why: str) -> None:
        if not self.error:
            self.event("plc_lost", "system", {"why": why})
        self.error = why
        self.status = None
        self._recovering = True
        self._plc_reason = LineReason.PLC_LOST.value
        self.alarms.raise_(
            "plc.lost",
            "critical",
            "plc",
            f"line PLC not answering ({why}): no picks are sent; the PLC diverts every scallop on its own "
            "and holds the infeed until the line is back",
            params={"detail": why},
        )

    def _inputs(self, st: PlcStatus) -> None:
        reason = ""
        if not st.safety_ok:
            reason = LineReason.SAFETY_OPEN.value
            self.alarms.raise_(
                "plc.safety",
                "critical",
                "plc",
                "safety circuit open (guard or e-stop on the line): no picks are sent until it is closed",
            )
        else:
            self.alarms.clear("plc.safety")
        self._plc_reason = reason
        if st.gate_state == GateState.FAULT:
            self.alarms.raise_(
                "plc.gate",
                "critical",
                "plc",
                f"reject gate fault ({GateFault(st.gate_fault).name}): infeed held; scallops that need "
                "diverting cannot be; clear the gate, then press RESET",
                params={"detail": GateFault(st.gate_fault).name},
            )
        else:
            self.alarms.clear("plc.gate")
        if st.safe_state:
            self.alarms.raise_(
                "plc.safe_state",
                "warning",
                "plc",
                "the line PLC is in its safe state (it lost the line's heartbeat): every scallop goes to rework",
            )
        else:
            self.alarms.clear("plc.safe_state")

    def reset(self) -> None:
        """An operator's RESET also clears a gate fault whose cause is gone."""
        if self.client is not None:
            self.client.reset_gate()

    def close(self) -> None:
        if self.client is not None:
            self.client.close()

    def summary(self) -> dict:
        return {
            "dispositions": {d: self.counts.get(d, 0) for d in DISPOSITIONS},
            "diverts_unconfirmed": self.counts.get("unconfirmed", 0),
            "not_diverted_reasons": dict(self.not_diverted_reasons),
            "plc": None if self.config is None else {"connected": not self.error, "error": self.error},
        }
