"""Which arm picks which scallop, and when.

Arms stand along the belt, each with its own connection (:class:`ArmClient`), planner and
pick window. On every :meth:`Scheduler.step`:

1. every arm is polled (heartbeat, status, acks, results);
2. targets no arm can still reach are dropped with a :class:`SkipReason`;
3. arms are served upstream first. An arm that can take a command gets, among the targets
   it can still meet inside its window (intercept computed from the moment it will be free),
   the one with the **earliest deadline** — the one leaving its window first. The upstream
   arm thereby takes what it can reach in time; whatever it cannot reach stays queued for the
   arms downstream.

An arm accepts its next command as soon as it has acknowledged the previous one, but the
next pick is chosen only ``commit_lead_s`` before the arm will be free: targets decided in
the meantime (a neighbour that leaves first) can still go first. When that moment is at
least ``chain_margin_s`` before the current pick releases over the chute, the next pick is
*chained*: planned from the chute at the release, so the arm goes straight to it instead
of stopping at ready (about 0.2 s a cycle with the default geometry). Otherwise it is
planned from where and when the current pick ends, at ready.

Before a pick's commit goes out, ``before_commit(arm, plan)`` (when set) is called outside the
lock; if it raises, the pick is not sent and the target is skipped ``NOT_RECORDED`` (the line
uses it to commit the pick's row to the production record first).

A pick the arm reports LATE, REJECTED or NOT_READY goes back to the queue for the arms
downstream of it; a commit whose write failed is resolved by the arm client (read back,
written again only if the arm does not hold it) and its target is never sent again
meanwhile; a pick held by an arm that restarted ends with an unknown outcome.

While the line holds its arms (e-stop, fault) :meth:`Scheduler.step` and :meth:`serve` with
``active=False`` only read the arms' status (no heartbeat, no command), so their results and
states stay true.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from scallop.robot.arm import ArmClient, ArmEvent, ResultCode
from scallop.robot.belt import ConveyorTracker
from scallop.robot.clock import Clock
from scallop.robot.errors import CommitUncertain, RobotCommError, RobotError, WorkspaceViolation
from scallop.robot.planning import (
    PickPlan,
    PickPlanner,
    PickTarget,
    Skip,
    SkipReason,
)


@dataclass
class PickOutcome:
    """A command the arm finished. ``result`` None: the arm moved on before it was read."""

    target: PickTarget
    arm: str
    seq: int
    result: ResultCode | None
    plan: PickPlan
    t_done: float


@dataclass
class _Queued:
    target: PickTarget
    excluded: set[str] = field(default_factory=set)
    held: SkipReason | None = None  # why it is waiting, when not for a free arm
    sending: str = ""  # the arm it is being sent to (the send runs outside the lock)


class ArmLane:
    """One arm as the scheduler sees it."""

    def __init__(self, client: ArmClient, planner: PickPlanner | None = None) -> None:
        self.client = client
        self.name = client.name
        self.config = client.config
        self.planner = planner or PickPlanner(client.config)
        self.inflight: dict[int, PickPlan] = {}
        self.submitted = 0

    @property
    def window_start(self) -> float:
        return self.config.pick_window_x_mm[0]

    def free_at(self, now: float, chain_margin_s: float = 0.05) -> tuple[float, np.ndarray, bool]:
        """When and where the arm will be free to start its next pick, and whether that is
        the current pick's release (a chained pick) rather than its return to ready."""
        t0 = now + self.config.motion.start_latency_s
        if self.inflight:
            last = max(self.inflight.values(), key=lambda p: p.t_end)
            if last.t_release - now >= chain_margin_s:
                return last.t_release, last.waypoint("chute").xyz_mm, True
            return max(t0, last.t_end), last.waypoint("ready").xyz_mm, False
        st = self.client.status
        pos = st.tcp_mm if st is not None else np.asarray(self.config.ready_mm)
        return t0, pos, False


class Scheduler:
    """``commit_lead_s``: how long before an arm is free its next pick is chosen and sent.
    ``chain_margin_s``: a chained pick must be committed at least this long before the
    release it starts from (the robot looks for it at the release; one committed later is
    run from ready). Keep the lead above the margin plus the loop's tick.

    Thread safety: the scheduler's own lock guards the queue, the lanes' in-flight picks, the
    conveyor tracker and the results; it is never held during Modbus I/O. Each arm's
    connection is used by one caller at a time: :meth:`step` serves every arm in turn (one
    thread, on a virtual clock), :meth:`serve` one arm (a thread per arm, in real time), so a
    slow arm delays only itself.
    """

    def __init__(
        self,
        clients: list[ArmClient],
        tracker: ConveyorTracker,
        clock: Clock,
        commit_lead_s: float = 0.25,
        chain_margin_s: float = 0.05,
    ) -> None:
        if not clients:
            raise ValueError("the scheduler needs at least one arm")
        names = [c.name for c in clients]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must be unique, got {names}")
        if not 0.0 <= chain_margin_s < commit_lead_s:
            raise ValueError(
                f"chain_margin_s={chain_margin_s!r} must be >= 0 and below commit_lead_s={commit_lead_s!r}"
            )
        self.tracker = tracker
        self.clock = clock
        self.commit_lead_s = float(commit_lead_s)
        self.chain_margin_s = float(chain_margin_s)
        self._lock = threading.RLock()
        # Upstream first (the belt runs towards +x of the belt frame).
        self.lanes = sorted((ArmLane(c) for c in clients), key=lambda l: l.window_start)
        self.queue: dict[int, _Queued] = {}
        self.outcomes: list[PickOutcome] = []
        self.skips: list[Skip] = []
        # Recent history only: a line runs for days.
        self.events: deque[tuple[str, ArmEvent]] = deque(maxlen=1000)
        self.errors: deque[str] = deque(maxlen=200)
        # Called (arm name, plan) before each commit, outside the lock; raising refuses it.
        self.before_commit: Callable[[str, PickPlan], None] | None = None
        self.not_sent: Callable[[str, PickPlan], None] | None = None
        self._new_events: list[tuple[str, ArmEvent]] = []  # since the last take_events()

    # ------------------------------------------------------------------ input
    def add(self, targets: list[PickTarget] | tuple[PickTarget, ...]) -> None:
        with self._lock:
            for t in targets:
                if t.id in self.queue:
                    continue
                if not np.all(np.isfinite(t.pull_dir)):
                    self.skips.append(Skip(t, SkipReason.NO_PULL_DIRECTION, "pull direction unknown"))
                    continue
                if all(t.confidence < l.config.min_confidence for l in self.lanes):
                    self.skips.append(Skip(t, SkipReason.LOW_CONFIDENCE, f"confidence {t.confidence:.2f}"))
                    continue
                self.queue[t.id] = _Queued(t)

    def belt_sample(self, t: float, count: int) -> None:
        """A latched (time, belt count) pair for the conveyor tracker (each frame gives one)."""
        with self._lock:
            self.tracker.update(t, count)

    # ------------------------------------------------------------------ the loop body
    def step(self, active: bool = True) -> None:
        """Poll every arm, drop what no arm can reach, give free arms their next target
        (``active=False``: only read the arms, see the module's docstring)."""
        for lane in self.lanes:
            self.poll(lane, beat=active)
        if not active:
            return
        now = self.clock.now()
        self.expire(now)
        for lane in self.lanes:
            if lane.client.can_accept():
                self.dispatch(lane, now)

    def serve(self, lane: ArmLane, active: bool = True) -> None:
        """One arm's service: poll it, drop what no arm can reach, give it its next target."""
        self.poll(lane, beat=active)
        if not active:
            return
        now = self.clock.now()
        self.expire(now)
        if lane.client.can_accept():
            self.dispatch(lane, now)

    def poll(self, lane: ArmLane, beat: bool = True) -> None:
        events = lane.client.poll(beat)  # Modbus I/O: outside the lock
        with self._lock:
            for e in events:
                self._on_event(lane, e)

    def take_events(self) -> list[tuple[str, ArmEvent]]:
        """(arm, event) for everything the arms reported since the last call, in order."""
        with self._lock:
            out, self._new_events = self._new_events, []
            return out

    def _on_event(self, lane: ArmLane, e: ArmEvent) -> None:
        self.events.append((lane.name, e))
        self._new_events.append((lane.name, e))
        if e.kind == "abandoned":
            plan = lane.inflight.pop(e.seq, None) or e.plan
            if plan is None:
                return
            if e.result == ResultCode.NOT_READY:  # surely never ran
                self._requeue(plan.target, lane, SkipReason.ARM_UNAVAILABLE, e.detail)
            else:  # may have run: recorded as such, never sent again
                self.outcomes.append(PickOutcome(plan.target, lane.name, e.seq, None, plan, e.t))
        elif e.kind == "done" and e.seq in lane.inflight:
            plan = lane.inflight.pop(e.seq)
            if e.result in (ResultCode.LATE, ResultCode.REJECTED, ResultCode.NOT_READY):
                reason = {
                    ResultCode.LATE: SkipReason.ARM_LATE,
                    ResultCode.REJECTED: SkipReason.ARM_REJECTED,
                    ResultCode.NOT_READY: SkipReason.ARM_UNAVAILABLE,
                }[e.result]
                self._requeue(plan.target, lane, reason, f"arm reported {e.result.name}")
            else:  # OK, EMPTY, ABORTED (it may have gripped), or unknown (None / NONE: moved on, restarted)
                result = e.result if e.result not in (None, ResultCode.NONE) else None
                self.outcomes.append(PickOutcome(plan.target, lane.name, e.seq, result, plan, e.t))
        elif e.kind == "commit_confirmed" and e.plan is not None:
            lane.inflight[e.seq] = e.plan

    def _requeue(self, target: PickTarget, lane: ArmLane, reason: SkipReason, detail: str) -> None:
        downstream = [l for l in self.lanes if l.window_start > lane.window_start]
        if downstream:
            q = _Queued(target, {l.name for l in self.lanes if l.window_start <= lane.window_start})
            self.queue[target.id] = q
        else:
            self.skips.append(Skip(target, reason, detail, lane.name))

    def expire(self, now: float) -> None:
        with self._lock:
            for tid in list(self.queue):
                q = self.queue[tid]
                if q.sending:
                    continue
                t = q.target
                reachable = False
                in_some_y = False
                for lane in self.lanes:
                    if lane.name in q.excluded:
                        continue
                    (y0, y1) = lane.config.pick_window_y_mm
                    if not y0 <= t.xy_mm[1] <= y1:
                        continue
                    in_some_y = True
                    if self.tracker.time_at_x(t, lane.config.pick_window_x_mm[1]) > now:
                        reachable = True
                        break
                if not reachable:
                    del self.queue[tid]
                    if not in_some_y:
                        self.skips.append(Skip(t, SkipReason.OUTSIDE_WINDOW, "outside every arm's pick window"))
                    elif q.held is not None:
                        self.skips.append(Skip(t, q.held, "left every pick window while held"))
                    else:
                        self.skips.append(Skip(t, SkipReason.NO_CAPACITY, "left every pick window unpicked"))

    def dispatch(self, lane: ArmLane, now: float) -> None:
        """Choose the lane's next target and send it (the send outside the lock)."""
        while True:
            with self._lock:
                chosen = self._choose(lane, now)
                if chosen is None:
                    return
                q, plan = chosen
                q.sending = lane.name  # no other arm takes it, nothing expires it meanwhile
            if not self._before_commit(lane, q, plan):
                return
            try:
                seq = lane.client.submit(plan)
            except WorkspaceViolation as e:  # the client's own check disagreed: never send
                with self._lock:
                    q.sending = ""
                    q.excluded.add(lane.name)
                    self.errors.append(str(e))
                self._not_sent(lane, plan)
                continue
            except CommitUncertain as e:
                # The arm client holds it now: its events say whether it was committed, may
                # have run, or surely never ran. Sending it again could pick twice.
                with self._lock:
                    q.sending = ""
                    self.errors.append(str(e))
                    del self.queue[q.target.id]
                return
            except RobotError as e:
                with self._lock:
                    q.sending = ""
                    self.errors.append(str(e))
                    if isinstance(e, RobotCommError):
                        self._new_events.append((lane.name, ArmEvent("error", self.clock.now(), detail=str(e))))
                self._not_sent(lane, plan)
                return
            with self._lock:
                del self.queue[q.target.id]
                lane.inflight[seq] = plan
                lane.submitted += 1
            return

    def _not_sent(self, lane: ArmLane, plan: PickPlan) -> None:
        """``not_sent(arm, plan)`` (when set): a pick whose ``before_commit`` ran was not
        committed after all (the arm refused the block, the state file could not be written);
        the target stays queued and may go out again with a ``before_commit`` of its own."""
        if self.not_sent is not None:
            try:
                self.not_sent(lane.name, plan)
            except Exception as e:  # bookkeeping only: the pick itself is settled
                with self._lock:
                    self.errors.append(str(e))

    def _before_commit(self, lane: ArmLane, q: _Queued, plan: PickPlan) -> bool:
        """The ``before_commit`` hook (I/O: outside the lock). False: the pick is refused and
        its target skipped with the hook's error."""
        if self.before_commit is None:
            return True
        try:
            self.before_commit(lane.name, plan)
        except Exception as e:
            with self._lock:
                q.sending = ""
                del self.queue[q.target.id]
                self.skips.append(Skip(q.target, SkipReason.NOT_RECORDED, str(e), lane.name))
                self.errors.append(str(e))
            return False
        return True

    def _choose(self, lane: ArmLane, now: float) -> tuple[_Queued, PickPlan] | None:
        if self.queue and not self.tracker.fresh(now):
            # No recent encoder sample (camera stalled, trigger lost): the belt may have
            # stopped or changed speed unseen, so a grip planned now could land anywhere on
            # the scallop. Nothing new is sent until the belt's position is known again.
            for q in self.queue.values():
                q.held = SkipReason.POSITION_UNCERTAIN
            return None
        t_free, p_free, chained = lane.free_at(now, self.chain_margin_s)
        # Measured from the earliest the arm could start anything, so an idle arm (whose start
        # latency may exceed the lead) is always served.
        if t_free - (now + lane.config.motion.start_latency_s) > self.commit_lead_s:
            return None
        cands = [
            q
            for q in self.queue.values()
            if not q.sending and lane.name not in q.excluded and q.target.confidence >= lane.config.min_confidence
        ]
        x_hi = lane.config.pick_window_x_mm[1]
        cands.sort(key=lambda q: self.tracker.time_at_x(q.target, x_hi))  # earliest deadline first
        for q in cands:
            q.held = None
            res = lane.planner.plan(q.target, self.tracker, t_free, p_free, chained=chained)
            if isinstance(res, Skip):
                if res.reason == SkipReason.OUTSIDE_WINDOW:
                    q.excluded.add(lane.name)
                # WORKSPACE may depend on where the arm starts from: try again next time.
                continue
            if res.grip_time - now > lane.client.grip_horizon_s:
                continue  # a slow belt: sent once its grip time is within the interface's horizon
            return q, res
        return None

    # ------------------------------------------------------------------ handing results on
    def drain(self) -> tuple[list[Skip], list[PickOutcome]]:
        """The skips and finished picks since the last call, in the order they happened."""
        with self._lock:
            skips, outcomes = self.skips, self.outcomes
            self.skips, self.outcomes = [], []
            return skips, outcomes

    def take_queue(self) -> list[int]:
        """Empty the queue (the line stops or pauses): the ids of the targets no arm had."""
        with self._lock:
            ids = [tid for tid, q in self.queue.items() if not q.sending]
            for tid in ids:
                del self.queue[tid]
            return ids

    def holder(self, target_id: int) -> str:
        """The arm a pick was sent to (in flight, or its commit unresolved); "" when none."""
        with self._lock:
            for lane in self.lanes:
                if any(p.target.id == target_id for p in lane.inflight.values()):
                    return lane.name
        for lane in self.lanes:
            p = lane.client.uncertain_plan
            if p is not None and p.target.id == target_id:
                return lane.name
        return ""

    def in_flight(self) -> int:
        with self._lock:
            return sum(len(l.inflight) for l in self.lanes)

    # ------------------------------------------------------------------ reporting
    def pending(self) -> int:
        with self._lock:
            return len(self.queue) + sum(len(l.inflight) for l in self.lanes)
