"""Where every scallop ends, and the line PLC that makes it so (docs/plc-interface.md).

Each scallop the line decided on gets exactly one **disposition** when its decision ends
(:func:`disposition_of`):

* ``picked`` — an arm completed its pick (and a pick check, where there is one, saw the uro off);
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

from scallop.app.alarms import Alarms
from scallop.app.line.ledger import GRADE_URO_REMOVED, ScallopOutcome
from scallop.app.line.states import DISPOSITIONS, Disposition, LineReason, LineState, Result
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

# The only reason to let a scallop through unpicked: vision saw it whole, with no uro.
PASS_REASONS = frozenset({VisionReason.NO_URO.value})

# Why the line holds the gate open mid-run, the camera or the counts in doubt: without a gate, what
# passes then goes on unchecked (the start's and a stop's own spells are not: the feeder held).
BLIND_CAUSES = frozenset({"waiting_camera", "counts_in_doubt"})

# The line's states in which what passes the gate is vouched for scallop by scallop; in any
# other the gate is held open (everything to rework).
VOUCHED = frozenset({LineState.RUNNING, LineState.PAUSED, LineState.STOPPING})


def disposition_of(oc: ScallopOutcome) -> Disposition:
    """Where a finished decision sends its scallop (before the gate is asked)."""
    if oc.result == Result.PICKED:
        # A pick check (an inspection camera; the simulator's truth) that saw the uro left on, or
        # the jaws in meat, sends it to rework; without one a completed pick is taken at its word.
        if oc.grade not in (None, GRADE_URO_REMOVED):
            return Disposition.DIVERTED
        return Disposition.PICKED
    if oc.result == Result.SKIPPED and oc.reason in PASS_REASONS:
        return Disposition.PASSED
    return Disposition.DIVERTED


def _why_divert(oc: ScallopOutcome) -> str:
    """Why a scallop needed diverting, in words: its reason, or what the pick check saw."""
    if oc.reason:
        return oc.reason
    if oc.result == Result.PICKED and oc.grade not in (None, GRADE_URO_REMOVED):
        return f"the pick check saw {oc.grade.replace('_', ' ')}"
    return oc.result


def _hms(t: float) -> str:
    """A wall-clock time as the operator's screen shows it (local time, to the second)."""
    import time

    return time.strftime("%H:%M:%S", time.localtime(t))


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
        view_x_lo: float = 0.0,
        on_lot: Callable[[str], None] = lambda lot: None,
        pending: Callable[[], list[ScallopOutcome]] = lambda: [],
    ) -> None:
        self.config = config
        self.belt = belt
        self.alarms = alarms
        self.clock = clock
        self.belt_count_now = belt_count_now
        self.belt_speed = belt_speed
        self.event = event
        self.on_lot = on_lot  # the PLC set a production lot
        # Picks handed to an arm whose outcome is not known yet (the ledger's pending ones), and
        # those of them diverted before it was: track id -> the count at the gate.
        self.pending = pending
        self._prediverted: dict[int, float] = {}
        self._lot_number = 0
        self.client = PlcClient(config, clock, direction=belt.direction) if config is not None else None
        self.status: PlcStatus | None = None
        self.error = "" if config is not None else "no line PLC is configured"
        self.counts: Counter = Counter()
        self._lock = threading.RLock()  # dispose() runs in the frame and arm loops, service() in the PLC's
        self.not_diverted_reasons: Counter = Counter()
        self._recovering = False  # the PLC was lost: the gate stays held open until it has caught up
        # (divert seq, track id, belt count at the gate) not yet judged, in the order asked.
        self._requested: deque[tuple[int, int, float]] = deque()
        self._gate_faulted = False
        self._last_ok_count: float | None = None
        self._last_ok_wall = clock.wall()  # when the gate was last seen out of fault
        self._held_failed = False  # this spell's gate failure is alarmed
        self._blind_alarmed = False  # this spell's scallops gone on without a gate are alarmed
        self._held_since: float | None = None  # belt count from which the PLC showed the gate held open
        self._spell_wall: float | None = None  # when the gate was last held open (wall clock)
        self._plc_reason = ""  # why picking is held on the PLC's account ("" = it is not)
        self._feed_mode = Infeed.RUN
        self.hold_infeed = ""  # why the line holds the feeder itself ('' = it does not): the shift check
        self._person_keys: set[str] = set()
        # Belt travel from the camera view's upstream edge to past the gate (belt counts): what
        # went under the camera while the line was blind is at the gate within this.
        self._camera_to_gate_counts = (
            0.0 if config is None else (config.gate_x_mm + config.gate_lead_mm - view_x_lo) * belt.counts_per_mm
        )
        self.feed_while_blind = False  # set by the line while it waits for evidence only scallops bring
        # Frames the line analysed but could not track (counts in doubt for a frame pair): what
        # they showed is decided by no one, so the gate treats that moment as blind. Only the
        # frame thread adds, only service() reads.
        self._doubts = 0
        self._doubts_seen = 0
        self._blind_until: float | None = None
        self._was_blind = True  # from the start: nothing before it was seen
        # Why the gate is held open, every scallop to rework ('' while it diverts scallop by
        # scallop), since when (clock time), and the seconds of earlier such spells: the
        # operator must know that the rework lane takes everything, the record when and why.
        self.all_to_rework = ""
        self._spell_cause = ""  # what opened the current spell (all_to_rework: what holds it now)
        self._shown_since: float | None = None  # when the spell's banner began (the line not stopped)
        self._prev_mode = GateMode.DIVERT_ALL  # the mode written before the last poll (the PLC starts so)
        self._ran = False  # the line has vouched for what passes since this program started
        self._all_to_rework_since: float | None = None
        self._all_to_rework_s = 0.0
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
        if self._prediverted.pop(oc.track_id, None) is not None:
            # Its divert went out before its pick's outcome was known (the gate came first): it
            # goes to rework whatever the arm says now, a completed pick included.
            oc.extra["divert"] = "its pick was not known to be done when it reached the gate"
            d = Disposition.DIVERTED
            if oc.result == Result.PICKED:
                self._picked_to_rework(oc)
        elif d == Disposition.DIVERTED:
            why = self._divert(oc)
            if why:
                d = Disposition.NOT_DIVERTED
                oc.extra["not_diverted"] = why
                self.not_diverted_reasons[why] += 1
                self._person(
                    "plc.not_diverted",
                    oc.track_id,
                    f"scallop {oc.track_id} needed diverting ({_why_divert(oc)}) and was not: {why}. "
                    "Take it off the belt by hand",
                    why=why,
                )
        oc.extra["disposition"] = d.value
        self.counts[d.value] += 1

    def _picked_to_rework(self, oc: ScallopOutcome) -> None:
        """A good pick whose result came after its scallop reached the divert point: on a
        healthy arm, the gate stands too near the arms for their pick cycle (a second outside
        try: a slower arm sent 4 of 28 picked scallops to rework without a word). Safe, never
        silent: a warning with the count, for the engineer to move the gate."""
        self.counts["picked_to_rework"] += 1
        n = self.counts["picked_to_rework"]
        self.alarms.raise_(
            "plc.gate_near",
            "warning",
            "plc",
            f"{n} picked scallop(s) went to rework: their pick's result came after they reached the gate's divert "
            f"point (the last was scallop {oc.track_id}, arm {oc.arm or '?'}). If the arm was working normally, "
            "the gate stands too near the arms for their pick cycle: move plc.gate_x_mm downstream "
            "(docs/configuration.md)",
            code="plc.gate_near",
            params={"count": n, "track": oc.track_id, "arm": oc.arm},
        )

    def _person(self, code: str, tid: int, text: str, **params) -> None:
        """A scallop a person must see to: its own critical alarm (one per scallop, so a second
        one is not hidden behind the first's acknowledgement); the feeder holds until it is
        acknowledged."""
        key = f"{code}.{tid}"
        self.alarms.raise_(key, "critical", "plc", text, code=code, params={"track": tid, "detail": text, **params})
        self._person_keys.add(key)

    def waiting_for_a_person(self) -> bool:
        """A scallop-by-scallop alarm not acknowledged yet (acknowledged ones are cleared)."""
        waiting = False
        for key in list(self._person_keys):
            a = self.alarms.get(key)
            if a is None or a.acked or not a.active:
                self.alarms.clear(key)
                self._person_keys.discard(key)
            else:
                waiting = True
        return waiting

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
                # Too late for a request of its own: diverted only if the PLC had shown the gate held
                # open (for every scallop) before this one's count came (an outside try saw a
                # scallop counted so while the hold had just been asked for, the gate still shut).
                held = self._held_since
                if self.client.outputs.gate_mode == GateMode.DIVERT_ALL and held is not None and count >= held:
                    oc.extra["divert"] = "the gate was held open"
                    return ""
                return "it had reached the gate before the decision came"
        seq = client.divert(client.raw_count_at(count), oc.track_id)
        self._requested.append((seq, oc.track_id, count))
        if self.error:
            # Sent when the PLC answers again, if the scallop has not reached the gate by then
            # (meanwhile the PLC's own safe state holds the gate open).
            oc.extra["divert"] = "queued while the line PLC was not answering"
        return ""

    # A pick still unresolved this long (PLC period, link, scan) before its scallop's count at the
    # gate is diverted: its request then still arrives MIN_LEAD_S ahead.
    UNRESOLVED_LOOKAHEAD_S = 0.35

    def _divert_unresolved(self, now: float | None) -> None:
        """Divert the scallops whose pick is still unresolved as they near the gate: an arm gone
        off the network mid-pick (its outcome comes when it is back, seconds later), an arm
        stuck busy, a result not read yet. The gate stands past the arms so that a pick's outcome
        is known before its scallop gets there; when it is not, the scallop may carry its uro
        (an outside try saw each such scallop go on, alarmed only when the arm came back). A
        completed pick diverted so costs a look in the rework lane."""
        if now is None:
            return
        cfg = self.config
        ahead = self.UNRESOLVED_LOOKAHEAD_S * max(0.0, self.belt_speed()) * self.belt.counts_per_mm
        for oc in self.pending():
            count = (cfg.gate_x_mm - cfg.gate_lead_mm - float(oc.decision.track.u)) * self.belt.counts_per_mm
            if count > now + ahead:
                continue
            with self._lock:  # dispose() (the frame and arm loops) may end it meanwhile
                if oc.result or oc.track_id in self._prediverted or self._divert(oc):
                    # Ended, asked for already, or nothing could be asked for: its outcome, when
                    # it comes, is alarmed as not diverted.
                    continue
                self._prediverted[oc.track_id] = count
                self.counts["unresolved_diverted"] += 1
            self.event("divert_unresolved", "system", {"track": oc.track_id})

    # ------------------------------------------------------------------ the PLC
    def doubt(self) -> None:
        """A frame with scallops in it was not tracked: divert everything under the camera now."""
        self._doubts += 1

    def hold_reason(self) -> str:
        """Why no new pick may be sent on the PLC's account ("" when they may)."""
        return self._plc_reason

    # Back-pressure: the share of the arms' capacity the arrivals ask for (scallops needing a
    # pick per second / picks per second the arms sustain, over the last minute) at which the
    # feeder slows, holds, and runs again. At 100 % every burst leaves some unpicked; below 90 %
    # (the nominal scenario's 90 % of arrivals, of which 9 in 10 carry a uro) the line keeps its
    # full rate. The gaps between the thresholds keep the feeder from chattering.
    SLOW_AT, HOLD_AT, RUN_BELOW = 1.0, 1.2, 0.9

    def _feed(self, load: float | None) -> Infeed:
        if load is None or not self.config.back_pressure:
            return Infeed.RUN
        was = self._feed_mode
        if load >= self.HOLD_AT:
            mode = Infeed.HOLD
        elif load >= self.SLOW_AT:
            # A hold lasts until the load is clearly below its threshold.
            mode = Infeed.HOLD if was == Infeed.HOLD and load >= self.HOLD_AT - 0.05 else Infeed.SLOW
        elif load < self.RUN_BELOW:
            mode = Infeed.RUN
        else:
            mode = was  # between the thresholds: keep what it does
        if mode != was:
            self.event("infeed", "system", {"mode": mode.name, "load": round(load, 3)})
            self.counts[f"infeed_{mode.name.lower()}"] += 1
        self._feed_mode = mode
        return mode

    def service(self, state: LineState, critical_unacked: bool, warnings: bool, load: float | None = None) -> None:
        """Poll the PLC, beat, and set its outputs from the line's state (the robot I/O loop);
        ``load``: the share of the arms' capacity the arrivals ask for (back-pressure)."""
        # The gate stays open while the line cannot vouch for what passes, then until every
        # scallop that went under the camera meanwhile has passed the gate, and after a PLC
        # outage until every request owed to the PLC is in.
        now = self.belt_count_now()
        doubts = self._doubts
        doubts_new = doubts != self._doubts_seen
        vouched = state in VOUCHED and now is not None and not doubts_new
        self._doubts_seen = doubts
        if not vouched:
            self._blind_until = None if now is None else now + self._camera_to_gate_counts
        elif self._blind_until is None and self._was_blind:
            self._blind_until = now + self._camera_to_gate_counts
        self._was_blind = not vouched
        self._ran = self._ran or vouched
        blind = not vouched or (self._blind_until is not None and now < self._blind_until)
        if vouched and self._blind_until is not None and now >= self._blind_until:
            self._blind_until = None
        mode = GateMode.AUTO if not blind and not self._recovering else GateMode.DIVERT_ALL
        self._spell(mode, state, now, doubts_new)
        if self.client is None:
            return  # no PLC: the spells are still told (what passed unseen went on)
        self._divert_unresolved(now)
        # The feeder runs only while the line runs and the gate can divert: with the gate in
        # fault, or none fitted and a scallop the line could not divert waiting for a person
        # (it may carry its uro), no more come until it is seen to.
        gate_ok = self.status is not None and self.status.gate_state != GateState.FAULT
        waiting = self.waiting_for_a_person()
        # A dark fluorescence channel (or belt counts in doubt) is only seen to come back with
        # scallops in view: they keep coming meanwhile, every one to rework through the open gate.
        probing = state == LineState.WAITING_CAMERA and self.feed_while_blind and self.config.gate_fitted
        run = (state == LineState.RUNNING or probing) and gate_ok and not (waiting and not self.config.gate_fitted)
        run = run and not self.hold_infeed
        infeed = self._feed(load) if run else Infeed.HOLD
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
        # The hold confirmed by the PLC: asked for before this poll, and the gate open in it. From
        # the belt count of the first such poll on, what reaches the gate goes to rework.
        # (Written before the previous poll too: a PLC scan has seen it, and the gate open now is
        # its hold, not a single divert's opening.)
        held_now = mode == GateMode.DIVERT_ALL and self._prev_mode == GateMode.DIVERT_ALL
        if held_now and st.gate_state == GateState.OPEN and not st.safe_state:
            if self._held_since is None:
                self._held_since = self.belt_count_now()
        else:
            self._held_since = None
        if self.error:
            self.event("plc_back", "system", {"after": self.error})
        self.error = ""
        if self._recovering and self.client.pending_diverts() == 0:
            self._recovering = False
        self.alarms.clear("plc.lost")
        if st.lot_number and st.lot_number != self._lot_number:
            self.on_lot(str(st.lot_number))
        self._lot_number = st.lot_number
        self._inputs(st)
        self._confirmations(st)
        self._prev_mode = mode

    def _spell(self, mode: GateMode, state, now: float | None, doubts_new: bool) -> None:
        """Keep ``all_to_rework`` (a code the screen words: ``ALL_TO_REWORK_WHY``) and record
        each spell of the gate held open, with its cause and how long it lasted."""
        if mode != GateMode.DIVERT_ALL:
            if self._all_to_rework_since is not None:
                held = self.clock.now() - self._all_to_rework_since
                self._all_to_rework_s += held
                self.event("gate_auto", "system", {"after": self._spell_cause, "held_s": round(held, 1)})
            self._all_to_rework_since, self.all_to_rework, self._shown_since = None, "", None
            return
        blind_cause = LineState(state).value if state not in VOUCHED else "counts_in_doubt" if doubts_new else ""
        if self.client is not None and (self._recovering or self.error):
            why = "plc_lost"
        elif blind_cause:
            why = blind_cause
        else:
            # Vouched again (or starting, the count not known yet), what went under the camera
            # meanwhile still on its way to the gate: the spell keeps its cause (at a start, the
            # line's state before it: what was on the belt then).
            why = self.all_to_rework or LineState.STOPPED.value
        if self._all_to_rework_since is None:
            self._all_to_rework_since = self.clock.now()
            self._spell_wall = self.clock.wall()
            self._spell_cause = why
            self._blind_alarmed = False
            self._shown_since = None
            with self._lock:
                self.counts["all_to_rework_spells"] += 1
            self.event("all_to_rework", "system", {"why": why})
        if self._shown_since is None and state != LineState.STOPPED:
            self._shown_since = self.clock.now()  # the banner's time: not the hours the line stood stopped
        self.all_to_rework = why
        if blind_cause in BLIND_CAUSES and not self._gate_fitted() and not self._blind_alarmed:
            # No gate to send them to rework: what passed the camera unseen went on, and only a
            # person can take it off (one alarm a spell; the feeder holds meanwhile).
            self._blind_alarmed = True
            since = _hms(self._spell_wall)
            self._span_alarm(
                "blind_no_gate",
                since,
                f"the line could not vouch for what passed under the camera from {since} ({blind_cause.replace('_', ' ')}) "
                "and no reject gate is fitted: those scallops went on unchecked and may carry their uro; take "
                "them off the belt",
                why=blind_cause,
            )

    def _gate_fitted(self) -> bool:
        """A gate the line can send scallops to rework with: configured, and the PLC not saying
        it has none."""
        if self.config is None or not self.config.gate_fitted:
            return False
        return self.status is None or self.status.gate_state != GateState.NOT_FITTED

    def rework_status(self, state) -> dict:
        """For the screen: ``{"why": code, "for_s": seconds}`` while the gate is held open with
        scallops on their way ({} otherwise, and on a stopped line: the feeder holds, and the
        gate stays open only for what might still come)."""
        # (Read once: the PLC loop may end the spell between two reads.)
        since, why, st = self._shown_since, self.all_to_rework, self.status
        if since is None or not why or state == LineState.STOPPED:
            return {}
        if not self._gate_fitted() or (st is not None and st.gate_state != GateState.OPEN):
            # No gate, or one in fault (its own critical alarm says so): nothing goes to rework by
            # itself, and the banner would say what is not so.
            return {}
        return {"why": why, "for_s": round(max(0.0, self.clock.now() - since), 1)}

    def all_to_rework_s(self) -> float:
        """Seconds the gate has been held open so far, the current spell included."""
        now = self.clock.now()
        return self._all_to_rework_s + (0.0 if self._all_to_rework_since is None else now - self._all_to_rework_since)

    def _drop_passed(self) -> None:
        now = self.belt_count_now()
        if now is None:
            return
        for tid in self.client.drop_passed(self.client.raw_count_at(now)):
            self.event("divert_missed", "system", {"track": tid, "why": "reached the gate while the PLC was away"})
            self._person(
                "plc.divert_missed",
                tid,
                f"scallop {tid} reached the reject gate while the line PLC was not answering: the PLC's own safe "
                "state should have diverted it; check the rework lane",
            )

    def _confirmations(self, st: PlcStatus) -> None:
        """A gate that just went to FAULT failed the requests that came due since the last good
        poll: those scallops may have gone on with their uro (each is alarmed by name)."""
        with self._lock:
            self._judge(st)

    def _judge(self, st: PlcStatus) -> None:
        now = self.belt_count_now()
        faulted = st.gate_state == GateState.FAULT
        # The line's count is extrapolated from its frames, the PLC's read from the encoder:
        # a request is judged with this much slack either side (the belt's travel in 0.2 s).
        slack = 0.2 * max(0.0, self.belt_speed()) * self.belt.counts_per_mm
        if faulted and now is not None:
            # At the fault: the requests due since the last good poll; while it lasts, each one as
            # its count comes (the PLC marks them done without opening: an outside try saw a divert
            # queued before the fault fire into the jammed gate, its scallop gone on unnamed).
            lo = -math.inf
            if not self._gate_faulted and self._last_ok_count is not None:
                lo = self._last_ok_count - slack
            keep: deque[tuple[int, int, float]] = deque()
            for seq, tid, count in self._requested:
                if count > now + slack:
                    keep.append((seq, tid, count))
                elif count >= lo:
                    self.counts["unconfirmed"] += 1
                    self.event("divert_unconfirmed", "system", {"track": tid, "seq": seq})
                    self._person(
                        "plc.unconfirmed",
                        tid,
                        f"the reject gate failed while diverting scallop {tid}: it may have gone on with its uro; "
                        "take it off the belt by hand",
                    )
            self._requested = keep
        self._gate_faulted = faulted
        if not faulted and now is not None:
            self._last_ok_count = now
        if not faulted:
            self._last_ok_wall = self.clock.wall()
            while now is not None and self._requested and self._requested[0][2] < now - slack:
                self._requested.popleft()
        self._held_open_check(st)

    def _held_open_check(self, st: PlcStatus) -> None:
        """The gate in fault while it is held open for every scallop to go to rework: the line knows
        none of those scallops one by one, so what reached the gate since the later of its last good
        poll and the spell's start went on, and a person must take it off (one alarm a spell)."""
        held = GateMode.DIVERT_ALL in (self.client.outputs.gate_mode, self._prev_mode)  # now, or up to now
        if not held or st.gate_state != GateState.FAULT:
            self._held_failed = False
            return
        if self._held_failed or not self._ran:
            # (Not before the line ever vouched for what passes: nothing it saw went on, and a gate
            # jammed since the last shift is its own critical alarm.)
            return
        self._held_failed = True
        since = _hms(max(self._last_ok_wall, self._spell_wall or self._last_ok_wall))
        fault = GateFault(st.gate_fault).name
        self._span_alarm(
            "held_open_failed",
            since,
            f"the reject gate failed ({fault}) while it was held open for every scallop to go to rework: the "
            f"scallops that reached it since {since} went on and may carry their uro; take them off the belt "
            "past the gate",
            fault=fault,
        )

    def _span_alarm(self, kind: str, since: str, text: str, **detail) -> None:
        """Scallops gone on since ``since`` that the line knows none of one by one: counted, in the
        record (event ``kind``), and a person's critical alarm ``plc.<kind>.<n>``."""
        with self._lock:
            self.counts[kind] += 1
            n = self.counts[kind]
        self.event(kind, "system", {"since": since, **detail})
        self._person(f"plc.{kind}", n, text, since=since)

    def _lost(self, why: str) -> None:
        if not self.error:
            self.event("plc_lost", "system", {"why": why})
        self.error = why
        self.status = None
        self._recovering = True
        self._held_since = None  # the hold is known again only from the PLC's next answers
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
        if self.client.outputs.infeed != Infeed.HOLD and not st.feeder_running and st.safety_ok:
            self.alarms.raise_(
                "plc.feeder",
                "warning",
                "plc",
                "the feeder is stopped although the line asks it to run: check the feeder and its local switch",
            )
        else:
            self.alarms.clear("plc.feeder")
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
        counts = dict(self.counts)  # (one copy: the PLC loop may add a key meanwhile)
        return {
            "dispositions": {d: counts.get(d, 0) for d in DISPOSITIONS},
            "diverts_unconfirmed": counts.get("unconfirmed", 0),
            # Diverted as they neared the gate with their pick's outcome not known (an arm gone
            # off the network mid-pick, stuck busy): the arm's word came too late to trust.
            "unresolved_diverted": counts.get("unresolved_diverted", 0),
            # Of those, picks the arm then reported done: good product to rework (plc.gate_near).
            "picked_to_rework": counts.get("picked_to_rework", 0),
            # The gate failed while held open: what reached it since went on, unnamed (alarmed).
            "held_open_failed": counts.get("held_open_failed", 0),
            # Blind spells on a line without a gate: what passed then went on unchecked (alarmed).
            "blind_no_gate": counts.get("blind_no_gate", 0),
            # Spells of the gate held open (every scallop to rework) and their seconds in all.
            "all_to_rework": {
                "spells": counts.get("all_to_rework_spells", 0),
                "seconds": round(self.all_to_rework_s(), 1),
                "now": self.all_to_rework,
            },
            "infeed_changes": {k[7:]: v for k, v in counts.items() if k.startswith("infeed_")},
            "not_diverted_reasons": dict(self.not_diverted_reasons),
            "plc": None if self.config is None else {"connected": not self.error, "error": self.error},
        }
