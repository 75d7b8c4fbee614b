"""The pick ledger: every scallop the line decided on, from its decision to its end.

A scallop enters the ledger once, when the tracker commits it (:meth:`PickLedger.decide`):
then it is either finished at once (skipped: no uro, line paused, …) or becomes a *pending*
pick target handed to the scheduler. A pending target ends exactly once — picked, failed
(sent to an arm that did not complete it) or skipped with the scheduler's reason — when the
scheduler's results are applied (:meth:`apply`), or when the line stops, e-stops or faults
(:meth:`fail_pending`, :meth:`cancel`). Nothing pending is ever dropped: that is the line's
at-most-once and exactly-one-decision bookkeeping.

The ledger does no I/O and holds its own short lock. What finished is returned to the caller,
who publishes it (the record, the screen) outside every lock. Counts for the screen are kept
as they happen, so a snapshot costs the same after a day as after a minute.
"""

from __future__ import annotations

import math
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from scallop.app.line.states import LineReason, LineState, Result
from scallop.app.stats import Stats
from scallop.robot.arm import ResultCode
from scallop.robot.belt import Belt
from scallop.robot.planning import PickTarget, Skip, SkipReason
from scallop.robot.scheduler import PickOutcome

if TYPE_CHECKING:
    # A type only: importing the tracker here would close an import cycle through
    # scallop.app.line's package (tracking imports the line's reasons).
    from scallop.app.tracking import Decision

# Grades a pick verifier may give (docs/interfaces.md).
GRADE_URO_REMOVED = "uro_removed"
GRADE_ADDUCTOR_HIT = "adductor_hit"


class PickVerifier(Protocol):
    """Tells what a finished pick did to its scallop: an inspection camera after the arms,
    or the simulator's ground truth. Without one, a pick's effect is unknown (None)."""

    def grade(self, arm: str, target_id: int) -> str | None:
        """ "uro_removed", "adductor_hit", "missed", "meat_hit", "empty", or None."""


@dataclass
class ScallopOutcome:
    """What became of one tracked scallop (the line's bookkeeping before the record)."""

    track_id: int
    decision: Decision
    result: str = ""  # a Result once finished, "" while pending
    reason: str = ""  # a VisionReason, LineReason or SkipReason value; "" for a pick
    arm: str = ""
    grade: str | None = None  # the verifier's verdict on a pick
    t_decided: float = 0.0
    extra: dict = field(default_factory=dict)


@dataclass
class ArmTally:
    picks: int = 0
    uro_removed: int = 0
    last_result: str = ""
    busy: deque = field(default_factory=lambda: deque(maxlen=500))  # (t_done, seconds of motion)


class PickLedger:
    """``holder(track_id)`` names the arm holding an unresolved pick (in flight, or its commit
    uncertain), for picks cut short by a stop; ``keep`` outcomes stay in memory (the record
    holds them all)."""

    def __init__(
        self,
        clock,
        belt: Belt,
        stats: Stats,
        verifier: PickVerifier | None = None,
        holder: Callable[[int], str] = lambda _tid: "",
        keep: int = 5000,
    ) -> None:
        self.clock = clock
        self.belt = belt
        self.stats = stats
        self.verifier = verifier
        self.holder = holder
        self.keep = keep
        self._lock = threading.Lock()
        self.outcomes: dict[int, ScallopOutcome] = {}
        self.pending: dict[int, ScallopOutcome] = {}
        self.counts: Counter = Counter()
        self.skip_reasons: Counter = Counter()
        self.arms: dict[str, ArmTally] = {}
        self.observers: list[Callable[[ScallopOutcome], None]] = []

    # ------------------------------------------------------------------ decisions
    def decide(
        self, decisions: list[Decision], state: LineState, hold: str = ""
    ) -> tuple[list[PickTarget], list[ScallopOutcome]]:
        """Enter newly committed tracks. Returns the pick targets for the scheduler (their
        outcomes now pending) and the outcomes finished at once. ``hold``: why no pick may be
        sent now although the line runs (the line PLC lost, the safety circuit open)."""
        now = self.clock.now()
        targets: list[PickTarget] = []
        done: list[ScallopOutcome] = []
        with self._lock:
            for d in decisions:
                oc = self._enter(d, now)
                if not d.pick:
                    done.append(self._finish(oc, Result.SKIPPED, d.reason or "ambiguous"))
                    continue
                if state != LineState.RUNNING or hold:
                    why = LineReason.LINE_PAUSED if state == LineState.PAUSED else LineReason.LINE_STOPPED
                    done.append(self._finish(oc, Result.SKIPPED, hold if state == LineState.RUNNING else why))
                    continue
                v = d.view
                xy = (v.grasp_uv[0] + self.belt.mm(v.encoder), v.grasp_uv[1])
                try:
                    targets.append(
                        PickTarget(
                            id=oc.track_id,
                            xy_mm=xy,
                            encoder=v.encoder,
                            pull_dir=v.pull_dir,
                            confidence=v.confidence,
                            t_exposure=v.timestamp,
                        )
                    )
                except ValueError as e:
                    done.append(self._finish(oc, Result.SKIPPED, LineReason.BAD_TARGET, {"error": str(e)}))
                    continue
                self.pending[oc.track_id] = oc
        return targets, done

    def flush(self, decisions: list[Decision], reason: str, overrule: bool = False) -> list[ScallopOutcome]:
        """Tracks committed because the line stops: each is recorded, none picked. A scallop
        vision would not have picked keeps vision's reason, unless ``overrule`` (the belt count
        the track rests on is not trusted: where it was is not known either)."""
        now = self.clock.now()
        with self._lock:
            return [
                self._finish(
                    self._enter(d, now), Result.SKIPPED, reason if d.pick or overrule else (d.reason or reason)
                )
                for d in decisions
            ]

    def _enter(self, d: Decision, now: float) -> ScallopOutcome:
        oc = ScallopOutcome(d.track.id, d, t_decided=now)
        self.outcomes[oc.track_id] = oc
        self.counts["seen"] += 1
        self.stats.event(now, "seen")
        for fn in self.observers:
            fn(oc)
        return oc

    # ------------------------------------------------------------------ results
    def apply(self, skips: list[Skip], outcomes: list[PickOutcome]) -> list[ScallopOutcome]:
        """The scheduler's results since the last call: skips first, then finished picks."""
        done: list[ScallopOutcome] = []
        with self._lock:
            for s in skips:
                oc = self.pending.pop(s.target.id, None)
                if oc is not None:
                    done.append(self._finish(oc, Result.SKIPPED, s.reason, {"detail": s.detail, "arm": s.arm}))
            for o in outcomes:
                self._tally(o.arm).busy.append((o.t_done, o.plan.duration_s))
                oc = self.pending.pop(o.target.id, None)
                if oc is None:
                    continue
                oc.arm = o.arm
                # The arm's own word on the pick, kept whether or not anything can grade it.
                extra = {"seq": o.seq, "arm_result": o.result.name if o.result is not None else "unknown"}
                if o.result == ResultCode.OK:
                    done.append(self._finish(oc, Result.PICKED, "", extra))
                else:
                    why = {
                        ResultCode.EMPTY: LineReason.ARM_EMPTY,
                        ResultCode.ABORTED: SkipReason.ARM_ABORTED,  # stopped mid-pick: it may have gripped
                    }.get(o.result, LineReason.ARM_UNKNOWN)
                    done.append(self._finish(oc, Result.FAILED, why, extra))
        return done

    def cancel(self, track_ids: list[int], reason: str) -> list[ScallopOutcome]:
        """Targets taken back from the scheduler's queue before any arm had them."""
        with self._lock:
            return [
                self._finish(oc, Result.SKIPPED, reason)
                for oc in (self.pending.pop(t, None) for t in track_ids)
                if oc is not None
            ]

    def fail_pending(self, reason: str) -> list[ScallopOutcome]:
        """Picks handed to the scheduler and not yet resolved end as failed (never lost); one
        no arm holds (a stage crashed while sending it, before any arm had it) as skipped: a
        failed row names its arm, and the record refused one without (an outside try lost it)."""
        with self._lock:
            out = []
            for tid in list(self.pending):
                oc = self.pending.pop(tid)
                held = oc.arm or self.holder(tid)
                out.append(self._finish(oc, Result.FAILED if held else Result.SKIPPED, reason))
            return out

    def _tally(self, arm: str) -> ArmTally:
        t = self.arms.get(arm)
        if t is None:
            t = self.arms[arm] = ArmTally()
        return t

    def _finish(self, oc: ScallopOutcome, result: Result, reason: str, extra: dict | None = None) -> ScallopOutcome:
        oc.result, oc.reason = result.value, str(reason)
        if result == Result.FAILED and not oc.arm:
            # Cut short by an e-stop, a stop or a crash: the record names the arm holding the pick.
            oc.arm = self.holder(oc.track_id)
        if extra:
            oc.extra.update(extra)
        c = self.counts
        if result == Result.PICKED:
            c["picked"] += 1
            oc.grade = self.verifier.grade(oc.arm, oc.track_id) if self.verifier is not None else None
            tally = self._tally(oc.arm)
            tally.picks += 1
            if oc.grade == GRADE_URO_REMOVED:
                c["uro_removed"] += 1
                tally.uro_removed += 1
            elif oc.grade == GRADE_ADDUCTOR_HIT:
                c["adductor_hits"] += 1
            elif oc.grade is not None:
                c["missed"] += 1
            self.stats.event(self.clock.now(), "picked")
        elif result == Result.FAILED:
            c["failed"] += 1
            self.skip_reasons[oc.reason] += 1
        else:
            c["skipped"] += 1
            self.skip_reasons[oc.reason] += 1
        if oc.arm and result != Result.SKIPPED:
            self._tally(oc.arm).last_result = oc.grade or oc.result
        if len(self.outcomes) > self.keep:
            for k in list(self.outcomes)[:1000]:
                if k not in self.pending:
                    del self.outcomes[k]
        return oc

    # ------------------------------------------------------------------ reading
    def totals(self) -> tuple[dict[str, int], dict[str, int]]:
        """Copies of the counts and of the not-picked reasons."""
        with self._lock:
            return dict(self.counts), dict(self.skip_reasons)

    def arm_tally(self, arm: str, now: float) -> tuple[int, int | None, str, float]:
        """(picks, uro removed, last result, share of the last minute moving) for one arm;
        uro removed is None without a verifier (not known)."""
        known = self.verifier is not None
        with self._lock:
            t = self.arms.get(arm)
            if t is None:
                return 0, 0 if known else None, "", 0.0
            busy = sum(d for td, d in t.busy if now - 60.0 < td <= now)
            return t.picks, t.uro_removed if known else None, t.last_result, min(1.0, busy / 60.0)

    def open_count(self) -> int:
        with self._lock:
            return len(self.pending)

    def pending_outcomes(self) -> list[ScallopOutcome]:
        """The picks handed on and not resolved yet (a copy: the reject gate reads it from the
        PLC's loop)."""
        with self._lock:
            return list(self.pending.values())


def pull_angle_deg(pull) -> float | None:
    return None if pull is None else float(math.degrees(math.atan2(pull[1], pull[0])))
