"""The arms as the line drives them: one connection each, served without holding up the others.

:class:`ArmDrivers` owns every arm's :class:`~scallop.robot.arm.ArmClient` and the
:class:`~scallop.robot.scheduler.Scheduler` that shares the targets among them. On the
simulator's virtual clock the line steps them all from its one thread, in a fixed order (so a
seed gives the same run); in real time each arm gets a thread of its own that serves only it,
so an arm that answers slowly, or not at all, delays nobody else — not the other arms, not
the frame loop, not the screen (the scheduler's lock is never held during Modbus I/O).

While the line holds its arms (e-stop, fault) they are still read, never commanded: no
heartbeat (each arm's watchdog stops it, shortened to 0.1 s by
:meth:`~scallop.robot.arm.ArmClient.hold`), but their tiles and alarms stay true.

Each driver keeps its arm's alarm on the screen (what state it is in and why, in plain words)
and hands what the arms report to the record as events: connections lost and made, Modbus
exceptions and timeouts, faults, restarts, commands with an unknown outcome and RESETs.

Fault flow: the controller never sends RESET by itself. An operator's acknowledgement of an
arm's fault or e-stop alarm, or the line's RESET, sends it (:meth:`ArmDrivers.reset_arm`),
whatever the line is doing; the arm refuses it while its e-stop is pressed or its fault's
cause is still there, and the alarm says so.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from scallop.app.alarms import Alarms
from scallop.app.line_api import ArmStatus
from scallop.robot.arm import ArmClient, ArmEvent, ArmState, FaultCode, ResultCode
from scallop.robot.belt import ConveyorTracker
from scallop.robot.config import ArmConfig
from scallop.robot.errors import RobotError
from scallop.robot.scheduler import ArmLane, Scheduler

# What an arm's state means to an operator when it needs attention, keyed by the state the
# tile shows (stable keys: the screen's message catalogue uses them). {arm}: its name,
# {where}: how it is reached, {error}: the last error, {fault}: FAULT_TEXT of its fault code.
ARM_ALARM_TEXT = {
    "disconnected": "arm {arm}: no connection to {where} ({error}); reconnecting by itself",
    "comm_error": "arm {arm}: answers with errors ({error}); no new picks until it answers properly",
    "stalled": "arm {arm}: its heartbeat stopped (robot program stopped or hung); no new picks",
    "fault": "arm {arm}: stopped by a fault: {fault}. Clear the cause, then acknowledge this alarm to reset the arm",
    "estop": "arm {arm}: emergency stop pressed on the arm. Release it, then acknowledge this alarm to reset the arm",
    "state_file": "{error}: free space on that disk or make the folder writable; picking resumes by itself",
    "stuck": "{error}: check the arm (its scallops go to rework meanwhile)",
}
# The cause the screen shows for each (alarm.<code> in scallop/app/web/i18n, with {arm} and {detail}).
ARM_ALARM_CODE = {state: f"arm.{state}" for state in ARM_ALARM_TEXT}
# A state must last this long before it is an alarm: the arm still reads "fault" for a poll
# after RESET, and a heartbeat late once under load is not worth an operator's attention. The
# arm client refuses picks at once either way (can_accept), so this delays only the alarm.
ARM_ALARM_AFTER_S = 1.0
# An arm's error repeated word for word within this is counted, not recorded again.
ERROR_REPEAT_S = 10.0
# Alarms about something that happened to an arm, by cause.
ARM_EVENT_TEXT = {
    "restarted": "arm {arm}: the robot program restarted or lost its state ({why}); {lost} command(s) it held have "
    "an unknown outcome. Picking resumes by itself",
    "reset_refused": "arm {arm}: RESET refused ({why}). Release the e-stop or clear the cause, then acknowledge this "
    "alarm (or press RESET) to try again",
}
FAULT_TEXT = {
    FaultCode.NONE: "no cause given by the arm",
    FaultCode.CTRL_WATCHDOG: "this controller's heartbeat stopped reaching it (watchdog)",
    FaultCode.ESTOP: "emergency stop",
    FaultCode.WORKSPACE: "a move outside its limits",
    FaultCode.GRIPPER: "the gripper did not open or close",
    FaultCode.MOTION: "protective stop (collision or motion limit)",
    FaultCode.INTERNAL: "robot program error",
}
# The record's event kinds for what an arm reports (docs/interfaces.md, table events).
RECORD_KIND = {
    "connected": "arm_connected",
    "disconnected": "arm_disconnected",
    "error": "arm_error",
    "alarm": "arm_heartbeat_stalled",
    "alarm_cleared": "arm_heartbeat_back",
    "fault": "arm_fault",
    "fault_cleared": "arm_fault_cleared",
    "restarted": "arm_restarted",
    "abandoned": "arm_command_abandoned",
    "commit_confirmed": "arm_commit_resolved",
    "state_file_error": "arm_state_file_error",
    "state_file_back": "arm_state_file_back",
    "stuck": "arm_stuck",
    "stuck_cleared": "arm_stuck_cleared",
}

RecordFn = Callable[[str, str, dict], None]
"""``record(kind, user, detail)``: :meth:`scallop.app.line.publisher.Publisher.event`."""


class ArmDrivers:
    def __init__(
        self,
        configs: list[ArmConfig],
        conveyor: ConveyorTracker,
        clock,
        alarms: Alarms,
        tick_s: float,
        record: RecordFn | None = None,
    ) -> None:
        self.clock = clock
        self.alarms = alarms
        self.tick_s = tick_s
        self.record = record or (lambda kind, user, detail: None)
        self.clients = [ArmClient(a, clock=clock) for a in configs]
        # The next pick is chosen a few ticks before the arm is free; a chained one must land a
        # tick before the release it starts from.
        self.scheduler = Scheduler(
            self.clients,
            conveyor,
            clock,
            commit_lead_s=max(0.25, 4 * tick_s),
            chain_margin_s=max(0.05, 1.5 * tick_s),
        )
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._resets: dict[tuple[str, int], str] = {}  # (arm, seq of its RESET) -> who asked
        self._fault_alarms: dict[int, str] = {}  # id of an arm's fault/e-stop alarm -> the arm
        self._alarm_since: dict[str, tuple[str, float]] = {}  # arm -> (state, first seen)
        self._held = False  # the line holds its arms (e-stop, fault): no heartbeat goes out
        self._last_error: dict[tuple[str, str], list] = {}  # (arm, detail) -> [when recorded, repeats since]

    @property
    def lanes(self) -> list[ArmLane]:
        return self.scheduler.lanes

    def connect(self) -> None:
        """Connect every arm; one that is not there is an alarm and does not stop the others
        (its driver keeps trying)."""
        for lane in self.lanes:
            try:
                lane.client.connect()
            except RobotError as e:
                self.record("arm_error", "system", {"arm": lane.name, "detail": str(e)})
            else:  # every link event is in the record, the run's first connection too
                self.record("arm_connected", "system", {"arm": lane.name, "detail": lane.client.transport.where})
            self._alarm(lane.client)

    def close(self) -> None:
        self.stop_threads()
        # Repeats of an error not yet told (its next row never came): told now, so the record
        # has every one (a second outside try found the last ~450 of a run missing).
        for (arm, detail), (_, n) in list(self._last_error.items()):
            if n:
                self.record("arm_error", "system", {"arm": arm, "detail": detail, "repeats_before": n})
        self._last_error.clear()
        for c in self.clients:
            try:
                c.close()
            except Exception:
                pass

    # ------------------------------------------------------------------ serving
    def step(self, active: bool = True) -> None:
        """Serve every arm once, upstream first (the virtual-clock driver). ``active=False``:
        the line holds its arms, they are only read."""
        self._held = not active
        self.scheduler.step(active)
        self._after()

    def serve(self, lane: ArmLane, active: bool = True) -> None:
        self._held = not active
        self.scheduler.serve(lane, active)
        self._after(lane)

    def start_threads(
        self,
        active: Callable[[], bool],
        after: Callable[[], None],
        stop: threading.Event,
        on_error: Callable[[str, BaseException], None],
        beat: Callable[[str], None] = lambda _loop: None,
        restart_s: float = 1.0,
    ) -> list[threading.Thread]:
        """A thread per arm serving it every tick (commanding it while ``active()``, only
        reading it otherwise); ``after()`` runs after each service (it hands the results on).
        An unexpected error goes to ``on_error`` (the line faults: it never carries on
        half-working) and the thread serves on after ``restart_s``: in fault it only reads the
        arm, so the line's RESET sees the arm's own state and resets it."""

        def loop(lane: ArmLane) -> None:
            while not stop.is_set():
                try:
                    while not stop.is_set():
                        beat(f"arm {lane.name}")
                        self.serve(lane, active())
                        after()
                        stop.wait(self.tick_s)
                except Exception as e:
                    on_error(f"arm {lane.name}", e)
                    stop.wait(restart_s)

        self._threads = [
            threading.Thread(target=loop, args=(lane,), name=f"line-arm-{lane.name}", daemon=True)
            for lane in self.lanes
        ]
        for t in self._threads:
            t.start()
        return self._threads

    def stop_threads(self) -> None:
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=5.0)
        self._threads = []

    def _after(self, lane: ArmLane | None = None) -> None:
        for name, e in self.scheduler.take_events():
            self._on_event(name, e)
        for ln in [lane] if lane is not None else self.lanes:
            self._alarm(ln.client)

    # ------------------------------------------------------------------ what the arms report
    def _on_event(self, arm: str, e: ArmEvent) -> None:
        key = f"arm:{arm}"
        with self._lock:
            reset_by = self._resets.pop((arm, e.seq), None) if e.kind in ("done", "abandoned") else None
        if reset_by is not None:
            result = e.result.name if e.result is not None else "UNKNOWN"
            self.record("arm_reset_done", reset_by, {"arm": arm, "seq": e.seq, "result": result})
            if e.result == ResultCode.OK:
                self.alarms.clear(f"{key}.reset")
            else:
                why = (
                    "e-stop still pressed or this controller's heartbeat not running"
                    if e.result == ResultCode.REJECTED
                    else f"the arm answered {result}"
                )
                self._reset_alarm(arm, why)
            return
        kind = RECORD_KIND.get(e.kind)
        if kind is None:
            return  # acks and pick results: the scallops table has them
        detail: dict = {"arm": arm, "detail": e.detail}
        if e.kind == "error":
            # The same error again at every poll (a register value out of range stays so) is one
            # row per ERROR_REPEAT_S with how many it stands for: an outside try wrote 6 967
            # identical rows in 75 s.
            now = self.clock.now()
            key = (arm, e.detail)
            last = self._last_error.get(key)
            if last is not None and now - last[0] < ERROR_REPEAT_S:
                last[1] += 1
                return
            if last is not None and last[1]:
                detail["repeats_before"] = last[1]
            if len(self._last_error) > 1000:
                self._last_error.clear()
            self._last_error[key] = [now, 0]
        if e.seq:
            detail["seq"] = e.seq
        if e.kind == "abandoned":
            detail["outcome"] = "never ran" if e.result == ResultCode.NOT_READY else "unknown"
            if e.plan is not None:
                detail["target"] = e.plan.target.id
        self.record(kind, "system", detail)
        if e.kind == "restarted":
            c = self._client(arm)
            text = ARM_EVENT_TEXT["restarted"].format(arm=arm, why=c.last_restart, lost=c.last_restart_lost)
            self.alarms.raise_(
                f"{key}.restart",
                "warning",
                key,
                text,
                code="arm.restarted",
                params={"arm": arm, "detail": c.last_restart, "lost": c.last_restart_lost},
            )

    def _alarm(self, c: ArmClient) -> None:
        key = f"arm:{c.name}"
        st = c.state_name
        status = c.status
        if st == "fault" and self._held and status is not None and status.fault_code == FaultCode.CTRL_WATCHDOG:
            # The line's own e-stop or fault stops the heartbeat on purpose: the arm's watchdog
            # fault is its consequence, already on the screen as the line's alarm; the line's
            # RESET resets the arm too.
            st = "held"
        if st in ARM_ALARM_TEXT:
            since = self._alarm_since.get(c.name)
            if since is None or since[0] != st:
                since = self._alarm_since[c.name] = (st, self.clock.now())
            if self.clock.now() - since[1] < ARM_ALARM_AFTER_S and not self.alarms.is_active(key):
                return
            fault = FAULT_TEXT[status.fault_code] if status is not None else FAULT_TEXT[FaultCode.NONE]
            own = {"state_file": c.store_error, "stuck": c.stuck}.get(st)
            error = own or c.last_error or "not connected yet"
            text = ARM_ALARM_TEXT[st].format(arm=c.name, where=c.transport.config.describe(), error=error, fault=fault)
            detail = fault if st in ("fault", "estop") else (own or c.last_error or "")
            a = self.alarms.raise_(
                key, "critical", key, text, code=ARM_ALARM_CODE[st], params={"arm": c.name, "detail": detail}
            )
            if st in ("fault", "estop"):
                with self._lock:
                    self._fault_alarms[a.id] = c.name
        else:
            self._alarm_since.pop(c.name, None)
            self.alarms.clear(key)
            with self._lock:
                for aid in [aid for aid, name in self._fault_alarms.items() if name == c.name]:
                    del self._fault_alarms[aid]  # its acknowledgement no longer resets anything
            if st in ("idle", "picking"):
                self.alarms.clear(f"{key}.restart")  # recovered

    # ------------------------------------------------------------------ control
    def _client(self, name: str) -> ArmClient:
        for c in self.clients:
            if c.name == name:
                return c
        raise KeyError(f"no arm {name!r} on this line")

    def faulted(self) -> list[str]:
        """The arms that report FAULT or ESTOP (as last read)."""
        return [
            c.name for c in self.clients if c.status is not None and c.status.state in (ArmState.FAULT, ArmState.ESTOP)
        ]

    def arm_of_alarm(self, alarm_id: int) -> str | None:
        """The arm whose fault or e-stop alarm this is (None for any other alarm)."""
        with self._lock:
            return self._fault_alarms.get(alarm_id)

    def reset_arm(self, name: str, user: str) -> bool:
        """Send RESET to one arm in fault or e-stop (an operator asked). The arm refuses it
        while the cause is there; its answer comes back as the ``arm_reset_done`` record event
        and, when refused, an alarm. Returns whether a RESET was sent."""
        lane = next((ln for ln in self.lanes if ln.name == name), None)
        if lane is None:
            raise KeyError(f"no arm {name!r} on this line")
        # A fresh status and a heartbeat (RESET needs it alive), through the scheduler so the
        # events of this poll are handled like any other.
        self.scheduler.poll(lane)
        self._after(lane)
        c = lane.client
        if c.status is None or c.status.state not in (ArmState.FAULT, ArmState.ESTOP):
            return False
        try:
            seq = c.reset_fault()
        except RobotError as e:
            self.record("arm_reset_failed", user, {"arm": name, "detail": str(e)})
            self._reset_alarm(name, str(e))
            return False
        with self._lock:
            self._resets[(name, seq)] = user
        self.record("arm_reset", user, {"arm": name, "seq": seq})
        return True

    def _reset_alarm(self, arm: str, why: str) -> None:
        """RESET refused: a warning whose acknowledgement sends RESET again, as its words say (an
        outside try acknowledged it as told and nothing was sent). Each refusal is a new alarm:
        the one acknowledged to try again must not hide the next refusal."""
        self.alarms.clear(f"arm:{arm}.reset")
        a = self.alarms.raise_(
            f"arm:{arm}.reset",
            "warning",
            f"arm:{arm}",
            ARM_EVENT_TEXT["reset_refused"].format(arm=arm, why=why),
            code="arm.reset_failed",
            params={"arm": arm, "detail": why},
        )
        with self._lock:
            self._fault_alarms[a.id] = arm

    def reset_faults(self, user: str) -> list[str]:
        """RESET every arm in fault or e-stop (RESET also takes an arm out of ESTOP once its
        button is released, docs/robot-interface.md); returns the arms it was sent to."""
        return [name for name in self.faulted() if self.reset_arm(name, user)]

    def send_idle_home(self) -> None:
        for c in self.clients:
            try:
                if c.connected and c.state_name == "idle":
                    c.move_ready()
            except RobotError:
                pass

    # ------------------------------------------------------------------ reading
    def statuses(self, tally: Callable[[str], tuple[int, int, str, float]]) -> list[ArmStatus]:
        out = []
        for c in self.clients:
            picks, removed, last, util = tally(c.name)
            st = c.status
            out.append(
                ArmStatus(
                    name=c.name,
                    state=c.state_name,
                    connected=c.connected,
                    picks=picks,
                    uro_removed=removed,
                    last_result=last,
                    utilisation=util,
                    fault=st.fault_code.name if st is not None and st.state in (ArmState.FAULT, ArmState.ESTOP) else "",
                )
            )
        return out

    def heartbeat_period_s(self) -> float:
        return min((c.config.heartbeat_period_s for c in self.clients), default=self.tick_s)

    def any_waiting(self) -> bool:
        """A queued target waits for an arm that can take it now."""
        return bool(self.scheduler.queue) and any(l.client.can_accept() for l in self.lanes)
