"""The controller's side of the pick handshake with one arm (docs/robot-interface.md).

The arm is the Modbus server; :class:`ArmClient` is the client. One command moves like this:

1. write the whole command block in one request (function 16);
2. write ``cmd_seq`` by itself, LAST: this is the commit;
3. the robot program sees ``cmd_seq != ack_seq``, copies the block, sets ``ack_seq = cmd_seq``
   and executes; when finished it sets ``result`` and then ``done_seq = cmd_seq``.

At most once, also across reconnects and restarts:

* the arm executes a command only when ``cmd_seq`` differs from its ``ack_seq``, and on program
  start it sets ``ack_seq = done_seq = cmd_seq`` (whatever was committed before it started is
  never executed);
* the client persists its sequence counter (``state_file``, atomic replace) before every
  commit, and on connect steps past the arm's ``cmd_seq``/``ack_seq``, so a restarted
  controller never reuses a recent sequence number;
* a commit whose write fails in any way (timeout, disconnect, *or an exception answer*: a
  gateway answers 0x0B after forwarding the write) is never re-sent blindly: before anything
  else the client reads the arm's status and ``cmd_seq`` back, and only if the arm does not
  hold it writes the *same* block and the *same* sequence number again (so even a late
  duplicate of the first write changes nothing);
* a restarted robot program (its clock jumps, its sequence registers or ``result`` go back,
  ``cmd_seq`` is no longer ours) is recognised on the next status read or reconnect: every
  command it held ends with an unknown outcome (``abandoned``), never sent again, and the
  client continues from the sequence registers the arm holds now (``restarted``).

Heartbeats both ways: :meth:`ArmClient.poll` increments ``ctrl_heartbeat`` every
``heartbeat_period_s`` (the robot faults when it stalls for ``watchdog_ms``), and raises the
:class:`HeartbeatStalled` alarm when ``arm_heartbeat`` has not changed for
``arm_heartbeat_timeout_s``; while the alarm stands no command is sent.

``poll`` never raises for a communication problem: it reports it as an event, so the
caller's loop keeps running. ``submit`` raises typed errors (:mod:`scallop.robot.errors`)
before anything is written when the command cannot be sent.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np

from scallop.robot.clock import Clock, SystemClock
from scallop.robot.config import ArmConfig
from scallop.robot.errors import (
    ArmBusyError,
    ArmFaultError,
    ArmNotReady,
    CommitUncertain,
    HeartbeatStalled,
    ModbusExceptionError,
    ProtocolError,
    RobotCommError,
    RobotConfigError,
    RobotDisconnectedError,
    RobotError,
    StateFileError,
)
from scallop.robot.planning import WAYPOINTS, PickPlan, Workspace
from scallop.robot.protocol import (
    ARM_CLOCK_MODULUS,
    COMMAND_FIELDS,
    CONTROL_FIELDS,
    MIN_INTERFACE_VERSION,
    PICK_TYPES,
    PROTOCOL_FIELDS,
    SEQ_MODULUS,
    STATUS_FIELDS,
    ArmEvent,
    ArmState,
    ArmStatus,
    CommandType,
    EventKind,
    FaultCode,
    ResultCode,
    check_profile,
    wire_seq,
)
from scallop.robot.registers import RegisterMap
from scallop.robot.seq_store import SeqStore
from scallop.robot.transport import ModbusTransport

# The protocol's words and SeqStore were defined here first and callers import them from
# here, so this module re-exports them.
__all__ = [
    "ARM_CLOCK_MODULUS",
    "COMMAND_FIELDS",
    "CONTROL_FIELDS",
    "MIN_INTERFACE_VERSION",
    "PICK_TYPES",
    "PROTOCOL_FIELDS",
    "SEQ_MODULUS",
    "STATUS_FIELDS",
    "ArmClient",
    "ArmEvent",
    "ArmState",
    "ArmStatus",
    "CommandType",
    "EventKind",
    "FaultCode",
    "ResultCode",
    "SeqStore",
    "check_profile",
    "wire_seq",
]


@dataclass
class _Pending:
    seq: int
    cmd_type: CommandType
    plan: PickPlan | None
    words: list[int]
    t_commit: float
    acked: bool = False


# The arm's clock never runs back (beyond its millisecond truncation), and may drift from
# ours, but not by more than CLOCK_JUMP_MS (+0.1 % of the time between two reads): anything
# else means the robot program started again.
CLOCK_BACK_MS = 2
CLOCK_JUMP_MS = 1000.0
# watchdog_ms written while the line holds its heartbeat on purpose (e-stop, fault): the
# shortest the interface allows, so each arm stops within it, not within the configured one.
HOLD_WATCHDOG_MS = 100
DEFAULT_GRIP_HORIZON_MS = 30000


class ArmClient:
    """Controller side of one arm. Not thread-safe by itself except through
    :meth:`start_background`, which serialises with an internal lock."""

    def __init__(
        self,
        config: ArmConfig,
        clock: Clock | None = None,
        transport: ModbusTransport | None = None,
        profile: RegisterMap | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.clock = clock or SystemClock()
        self.map = profile or RegisterMap.load(config.profile)
        check_profile(self.map)
        if transport is None and config.transport is None:
            raise RobotConfigError(
                f"arm {config.name!r} has no transport: give [arms.transport] (host and port, or serial_port)"
            )
        self.transport = transport or ModbusTransport(config.transport, self.clock, config.name)
        self.workspace = Workspace(config.workspace, config.keep_out)
        self.seq_store = SeqStore(config.state_file or None, config.name)
        self._counter = self.seq_store.load()
        self.status: ArmStatus | None = None
        self.pending: dict[int, _Pending] = {}
        self._uncertain: _Pending | None = None
        self._last_commit: int | None = None  # seq of our last commit the arm holds
        self._arm_cmd_seq: int | None = None
        self._recent: deque[int] = deque(maxlen=4)  # our last commits
        self._hb = 0
        self._hb_next = -float("inf")
        self._arm_hb: int | None = None
        self._arm_hb_changed = 0.0
        self.alarm: str | None = None
        # Why the state file cannot be written ('' = it can); tried again every STORE_RETRY_S.
        self.store_error = ""
        self._store_retry_at = 0.0
        # A command long past the end its plan gave it ('' = none): an arm stuck busy.
        self.stuck = ""
        # The status contradicts itself (a fault code while IDLE or BUSY): no commands meanwhile.
        self.inconsistent = ""
        self._was_connected = False
        self._fault_seen = False
        self._offsets: deque[tuple[float, float]] = deque(maxlen=20)  # (rtt, offset_s)
        self._arm_ms_last: int | None = None
        self._arm_ms_wraps = 0
        self._lock = threading.RLock()
        self._bg: threading.Thread | None = None
        self._bg_stop = threading.Event()
        self._bg_events: deque[ArmEvent] = deque(maxlen=1000)
        # Events learnt outside poll() (connect(), a commit resolved inside submit()): the
        # next poll() returns them first, so the caller's loop sees everything.
        self._deferred: list[ArmEvent] = []
        self.last_error = ""  # the last communication or protocol error, for alarms
        self._failing_since: float | None = None
        self._relink = False  # watchdog_ms, heartbeat and cmd_seq to be set up again
        self._holding = False  # heartbeat held on purpose (hold())
        self._awaiting_program = False  # connected, the robot program not running yet
        self.restarts = 0
        self.last_restart = ""  # why the last restart was recognised
        self.last_restart_lost = 0  # how many commands it held then
        self.grip_horizon_s = self.map.timing.get("grip_horizon_ms", DEFAULT_GRIP_HORIZON_MS) / 1000.0

    # ================================================================== connection
    def _blk(self, name: str):
        return self.map.block(name)

    def connect(self) -> ArmStatus:
        """Connect, check the interface version, recognise a restarted arm, arm the watchdog
        and start the heartbeat. Raises typed errors."""
        with self._lock:
            st, events = self._connect()
            self._deferred += events
            return st

    def _connect(self) -> tuple[ArmStatus, list[ArmEvent]]:
        if not self.transport.connected:
            try:
                self.transport.connect()
            except RobotCommError as e:
                self._note_error(e)  # the transport's last real failure, not "backing off"
                raise
        try:
            st, events = self._handshake_on_connect()
        except ArmNotReady as e:
            # A controller booting before its robot program: it answers, so keep the link and
            # read it at each poll, to go on the moment the program runs (no back-off wait).
            self._awaiting_program = True
            self.last_error, self._failing_since = str(e), None
            raise
        except RobotError as e:
            # Half a connection is worse than none: the next poll() starts over, no sooner
            # than the back-off allows (a TCP connect alone never resets it).
            self.transport.close()
            self._note_error(e)
            e.in_handshake = True  # it answered, then refused: poll() reports it as an error of its own
            raise
        self.transport.confirm()
        self._was_connected = True
        self._awaiting_program = False
        return st, events

    def _handshake_on_connect(self) -> tuple[ArmStatus, list[ArmEvent]]:
        prev = self.status
        st = self.read_status(control=True)
        if st.interface_version == 0 or (st.state == ArmState.STARTING and st.interface_version == self.map.version):
            raise ArmNotReady(
                f"arm {self.name!r} answers but its robot program is not running yet "
                f"(interface_version={st.interface_version}, {st.state.name}): waiting for it"
            )
        if st.interface_version != self.map.version:
            raise ProtocolError(
                f"arm {self.name!r} reports interface_version={st.interface_version} but profile "
                f"{self.map.name!r} is version {self.map.version}"
                + (" (is the robot program running?)" if st.interface_version == 0 else "")
            )
        why = self._restart_reason(prev, st) if prev is not None else None
        events = self._resync(st, why) if why else []
        self._link(st.cmd_seq)
        return st, events

    def _link(self, cmd_seq: int | None = None) -> None:
        """Set up the link with what the arm holds now: continue past its sequence registers,
        write watchdog_ms, restart the heartbeat from the arm's value."""
        st = self.status
        if cmd_seq is None:
            cmd_seq = self._read_field("cmd_seq")
        self._arm_cmd_seq = cmd_seq
        # Whatever is in cmd_seq (ours, or another controller's) must be taken by the arm
        # before the slot counts as free. An unresolved commit is settled by reading it back.
        if self._uncertain is None or cmd_seq != self._uncertain.seq:
            self._last_commit = cmd_seq if cmd_seq and cmd_seq != st.ack_seq else None
        # A restarted controller (or a fresh state file) continues past what the arm holds.
        held = {s for s in (cmd_seq, st.ack_seq, st.done_seq) if s}
        while wire_seq(self._counter + 1) in held:
            self._counter += 1
        self._hb = self._read_field("ctrl_heartbeat")
        self.transport.write(
            self.map.address("watchdog_ms"), self.map.encode_field("watchdog_ms", self.config.watchdog_ms)
        )
        self._beat(force=True)
        self._arm_hb, self._arm_hb_changed = st.heartbeat, self.clock.now()
        self._relink = self._holding = False

    def _restart_reason(self, prev: ArmStatus, st: ArmStatus) -> str | None:
        """Why ``st`` says the robot program started again since ``prev`` (None: it did not).
        Only the robot writes the status block and only we write cmd_seq, so each of these is
        a restart (or a cleared register map) and nothing else."""
        why = []
        if st.interface_version != prev.interface_version:
            why.append(f"interface_version went from {prev.interface_version} to {st.interface_version}")
        d_arm = (st.arm_time_ms - prev.arm_time_ms + ARM_CLOCK_MODULUS // 2) % ARM_CLOCK_MODULUS
        d_arm -= ARM_CLOCK_MODULUS // 2
        d_ctl = (st.t - prev.t) * 1000.0
        if d_arm < -CLOCK_BACK_MS or d_arm - d_ctl > CLOCK_JUMP_MS + 1e-3 * abs(d_ctl):
            why.append(
                f"its clock went {'back' if d_arm < 0 else 'forward'} from {prev.arm_time_ms} to {st.arm_time_ms} ms "
                f"in {d_ctl / 1000.0:.1f} s (a restart, or a clock set: either way what it held is not known)"
            )
        unresolved = self._uncertain.seq if self._uncertain is not None else None
        # ack_seq only ever moves to a number committed to it, done_seq also to what it had taken.
        ours = {self._last_commit, self._arm_cmd_seq, unresolved, *self.pending, *self._recent} - {None}
        if st.ack_seq != prev.ack_seq and st.ack_seq not in ours:
            why.append(f"ack_seq went from {prev.ack_seq} to {st.ack_seq}")
        elif st.done_seq != prev.done_seq and st.done_seq not in ours | {prev.ack_seq}:
            why.append(f"done_seq went from {prev.done_seq} to {st.done_seq}")
        if st.result == ResultCode.NONE and prev.result != ResultCode.NONE:
            why.append("its result went back to 0")
        if (
            st.cmd_seq is not None
            and self._arm_cmd_seq is not None
            and st.cmd_seq not in (self._arm_cmd_seq, unresolved)
        ):
            why.append(f"cmd_seq went from {self._arm_cmd_seq} to {st.cmd_seq}")
        if st.state == ArmState.STARTING and prev.state != ArmState.STARTING:
            why.append("it reports STARTING")
        return "; ".join(why) or None

    def _resync(self, st: ArmStatus, why: str) -> list[ArmEvent]:
        """The arm restarted: nothing it held will run now (on program start it takes whatever
        cmd_seq holds as already seen), but what it was running may have run in part, so
        every command it held ends with an unknown outcome, never sent again. The link is set
        up again (watchdog_ms, heartbeat, cmd_seq) before the next command."""
        lost = list(self.pending.values()) + ([self._uncertain] if self._uncertain is not None else [])
        self.pending.clear()
        self._uncertain = None
        self._relink = True
        self.restarts += 1
        self.last_restart, self.last_restart_lost = why, len(lost)
        events = [
            ArmEvent(
                "restarted",
                st.t,
                detail=f"arm {self.name!r} restarted ({why}); "
                + (
                    f"{len(lost)} command(s) it held (seq {', '.join(str(p.seq) for p in lost)}) have an unknown outcome"
                    if lost
                    else "it held no command"
                ),
            )
        ]
        for p in lost:
            events.append(
                ArmEvent(
                    "abandoned",
                    st.t,
                    p.seq,
                    None,
                    p.plan,
                    f"arm {self.name!r} restarted while it held seq {p.seq} ({p.cmd_type.name}): outcome unknown",
                )
            )
        return events

    def close(self) -> None:
        self.stop_background()
        with self._lock:
            self.transport.close()

    def __enter__(self) -> ArmClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self.transport.connected

    def _note_error(self, e: BaseException) -> None:
        self.last_error = self.transport.last_error if isinstance(e, RobotCommError) else str(e)
        self.last_error = self.last_error or str(e)
        if self._failing_since is None:
            self._failing_since = self.clock.now()

    def _read_field(self, name: str) -> int:
        f = self.map.field(name)
        return int(f.decode(self.transport.read(f.address, f.size), self.map.word_order))

    def read_status(self, control: bool = False) -> ArmStatus:
        """Read (and remember) the status block; with ``control`` also the commit register."""
        with self._lock:
            b = self._blk("status")
            t0 = self.clock.now()
            w0 = time.perf_counter()
            words = self.transport.read(b.start, b.count)
            rtt = time.perf_counter() - w0
            t1 = self.clock.now()
            v = self.map.decode_block("status", words)
            cmd_seq = None
            if control:
                cmd_seq = self._read_field("cmd_seq")
            try:
                state, fault, result = ArmState(v["arm_state"]), FaultCode(v["fault_code"]), ResultCode(v["result"])
            except ValueError as e:
                raise ProtocolError(f"arm {self.name!r}: status register value outside the interface: {e}") from None
            st = ArmStatus(
                t1,
                int(v["interface_version"]),
                int(v["arm_heartbeat"]),
                state,
                fault,
                int(v["ack_seq"]),
                int(v["done_seq"]),
                result,
                int(v["arm_time_ms"]),
                np.array([v["tcp_x"], v["tcp_y"], v["tcp_z"]], dtype=np.float64),
                int(v["picks_total"]),
                cmd_seq,
            )
            self._clock_sample(st.arm_time_ms, 0.5 * (t0 + t1), rtt)
            self.status = st
            return st

    # ================================================================== arm clock
    def _clock_sample(self, arm_ms: int, t_mid: float, rtt: float) -> None:
        wraps = self._arm_ms_wraps
        if self._arm_ms_last is not None and arm_ms < self._arm_ms_last - ARM_CLOCK_MODULUS // 2:
            wraps += 1
        # +0.5 ms: the arm reports whole milliseconds, truncated.
        off = (arm_ms + wraps * ARM_CLOCK_MODULUS + 0.5) / 1000.0 - t_mid
        if self._offsets and abs(off - self.clock_offset_s) > 1.0:
            # The arm's clock jumped (robot program restarted): forget the old samples.
            self._offsets.clear()
            wraps = 0
            off = (arm_ms + 0.5) / 1000.0 - t_mid
        self._arm_ms_wraps, self._arm_ms_last = wraps, arm_ms
        self._offsets.append((rtt, off))

    @property
    def clock_offset_s(self) -> float:
        """Arm clock minus controller clock, seconds (from the quickest recent status read)."""
        if not self._offsets:
            raise ProtocolError(f"arm {self.name!r}: no status read yet, arm clock unknown")
        best = min(r for r, _ in self._offsets)
        # Among equally quick samples prefer the newest (drift).
        for rtt, off in reversed(self._offsets):
            if rtt <= best * 1.5 + 1e-4:
                return off
        return self._offsets[-1][1]

    def arm_ms(self, t: float) -> int:
        """Controller time -> value of the arm's ``arm_time_ms`` at that moment."""
        return int(round((t + self.clock_offset_s) * 1000.0)) % ARM_CLOCK_MODULUS

    # ================================================================== heartbeat / poll
    def _beat(self, force: bool = False) -> None:
        now = self.clock.now()
        if force or now >= self._hb_next:
            self._hb = (self._hb + 1) & 0xFFFF
            self.transport.write(self.map.address("ctrl_heartbeat"), [self._hb])
            self._hb_next = now + self.config.heartbeat_period_s

    def heartbeat(self) -> None:
        """Write ``ctrl_heartbeat`` if its period has passed (``poll`` does this too)."""
        with self._lock:
            self._beat()

    def poll(self, beat: bool = True) -> list[ArmEvent]:
        """One service step: reconnect if needed, heartbeat, read status, report what changed.
        Never raises for communication or protocol problems (they come back as events).

        ``beat=False`` (the line holds its arms: e-stop or fault): no heartbeat, no reconnect,
        only the status is read, so what the arm reports stays true on the screen; the first
        such poll shortens the arm's watchdog (:meth:`hold`)."""
        with self._lock:
            return self._poll(beat)

    def hold(self) -> None:
        """Hold the heartbeat on purpose (the line's e-stop or fault): write the shortest
        ``watchdog_ms`` so the arm stops within 0.1 s of our last heartbeat rather than the
        configured timeout. The next poll with a heartbeat writes the configured value back."""
        with self._lock:
            if self._holding:
                return
            self._holding = True
            if self.transport.connected:
                try:
                    self.transport.write(self.map.address("watchdog_ms"), [HOLD_WATCHDOG_MS])
                except RobotCommError as e:
                    self._note_error(e)

    def _poll(self, beat: bool = True) -> list[ArmEvent]:
        ev, self._deferred = self._deferred, []
        now = self.clock.now()
        if not beat:
            self.hold()
        if not self.transport.connected or self._awaiting_program:
            if not beat:
                return ev  # connecting writes the watchdog and a heartbeat: not while held
            waiting = self._awaiting_program
            try:
                _, events = self._connect()
                ev.append(ArmEvent("connected", now, detail=self.transport.where))
                ev += events
            except ArmNotReady as e:
                if not waiting:
                    self._was_connected = False
                    ev.append(ArmEvent("error", now, detail=str(e)))
                return ev
            except RobotError as e:
                self._awaiting_program = False
                if self._was_connected:
                    self._was_connected = False
                    ev.append(ArmEvent("disconnected", now, detail=str(e)))
                elif getattr(e, "in_handshake", False):
                    # It answered and refused the handshake (a write of watchdog_ms answered with
                    # an exception): an error of its own, not one more refused connection.
                    ev.append(ArmEvent("error", now, detail=str(e)))
                return ev
        if self._uncertain is not None:
            # Read the arm's sequence registers before anything else.
            seq = self._uncertain.seq
            try:
                ev += self._resolve_uncertain()
            except RobotError as e:
                self._note_error(e)
                lost = not self.transport.connected
                if lost:
                    self._was_connected = False
                detail = f"commit of seq {seq} still unresolved: {e}"
                ev.append(ArmEvent("disconnected" if lost else "error", now, seq, detail=detail))
                return ev
        try:
            if beat:
                if self._relink or self._holding:
                    self._link()
                self._beat()
            prev = self.status
            st = self.read_status()
        except ModbusExceptionError as e:  # the link is fine, the arm refused this request
            self._note_error(e)
            ev.append(ArmEvent("error", now, detail=str(e)))
            return ev
        except RobotCommError as e:
            self._note_error(e)
            self._was_connected = False
            ev.append(ArmEvent("disconnected", now, detail=str(e)))
            return ev
        except RobotError as e:
            self._note_error(e)
            ev.append(ArmEvent("error", now, detail=str(e)))
            return ev
        self._failing_since = None
        now = st.t
        if st.interface_version != self.map.version:
            # The robot program stopped or another one started: connect again from the
            # start (the handshake refuses until the right program runs).
            self.transport.close()
            self._was_connected = False
            err = ProtocolError(
                f"arm {self.name!r} now reports interface_version={st.interface_version} "
                f"(profile {self.map.name!r} is version {self.map.version}): connecting again"
            )
            self._note_error(err)
            ev.append(ArmEvent("disconnected", now, detail=str(err)))
            return ev
        why = self._restart_reason(prev, st) if prev is not None else None
        if why:
            ev += self._resync(st, why)
        # Arm heartbeat watchdog.
        if st.heartbeat != self._arm_hb:
            self._arm_hb, self._arm_hb_changed = st.heartbeat, now
            if self.alarm:
                self.alarm = None
                ev.append(ArmEvent("alarm_cleared", now, detail=f"arm {self.name!r} heartbeat is back"))
        elif now - self._arm_hb_changed > self.config.arm_heartbeat_timeout_s and not self.alarm:
            self.alarm = (
                f"arm {self.name!r}: heartbeat stalled at {st.heartbeat} for "
                f"{now - self._arm_hb_changed:.2f} s (limit {self.config.arm_heartbeat_timeout_s:g} s); "
                "no new commands"
            )
            ev.append(ArmEvent("alarm", now, detail=self.alarm))
        # Fault / e-stop transitions.
        if st.state in (ArmState.FAULT, ArmState.ESTOP):
            if not self._fault_seen:
                self._fault_seen = True
                ev.append(ArmEvent("fault", now, detail=f"arm {self.name!r}: {st.state.name} ({st.fault_code.name})"))
        elif self._fault_seen:
            self._fault_seen = False
            ev.append(ArmEvent("fault_cleared", now, detail=f"arm {self.name!r}: {st.state.name}"))
        ev.extend(self._consistency(st))
        ev.extend(self._track(st))
        ev.extend(self._stuck_check(now))
        ev.extend(self._retry_store(now))
        return ev

    # A command still not done this long after the end its plan gave it (or, for one without a
    # plan, after its commit plus NO_PLAN_S): the arm is stuck, it gets nothing new.
    STUCK_AFTER_S = 3.0
    NO_PLAN_S = 10.0

    def _stuck_check(self, now: float) -> list[ArmEvent]:
        """An arm that reports BUSY for ever with its heartbeat running (an outside try held it
        so) took no new command and said nothing: alarmed now, its picks go to rework."""
        late = None
        p = next(iter(self.pending.values()), None)  # the oldest: the one the arm is on
        if p is not None:
            end = p.plan.t_end if p.plan is not None else p.t_commit + self.NO_PLAN_S
            if now > end + self.STUCK_AFTER_S:
                late = (p, now - end)
        if late is not None and not self.stuck:
            p, over = late
            what = "pick" if p.plan is not None else p.cmd_type.name
            self.stuck = (
                f"arm {self.name!r}: its {what} (seq {p.seq}) is not done {over:.1f} s after it should have "
                "ended; no new picks until it is"
            )
            return [ArmEvent("stuck", now, p.seq, detail=self.stuck)]
        if late is None and self.stuck:
            was, self.stuck = self.stuck, ""
            return [ArmEvent("stuck_cleared", now, detail=f"done at last ({was})")]
        return []

    def _consistency(self, st: ArmStatus) -> list[ArmEvent]:
        """A fault code belongs to FAULT or ESTOP (docs/robot-interface.md §3); with IDLE or BUSY
        the status cannot be trusted: no command is sent (an outside try saw such an arm taken
        for healthy, its fault alarm cleared, a pick sent into NOT_READY)."""
        bad = st.fault_code != FaultCode.NONE and st.state not in (ArmState.FAULT, ArmState.ESTOP)
        if bad and not self.inconsistent:
            self.inconsistent = (
                f"arm {self.name!r} reports {st.state.name} with fault code {st.fault_code.name}: "
                "a status that contradicts itself; no new picks until it does not"
            )
            self.last_error = self.inconsistent
            return [ArmEvent("error", st.t, detail=self.inconsistent)]
        if not bad:
            self.inconsistent = ""
        return []

    def _track(self, st: ArmStatus) -> list[ArmEvent]:
        ev: list[ArmEvent] = []
        order = list(self.pending)  # issue order
        for seq in order:
            p = self.pending[seq]
            if not p.acked and (st.ack_seq == seq or st.done_seq == seq):
                p.acked = True
                ev.append(ArmEvent("acked", st.t, seq, plan=p.plan))
        if st.done_seq in self.pending:
            idx = order.index(st.done_seq)
            # The arm executes in order: anything issued before done_seq is finished too.
            for seq in order[:idx]:
                p = self.pending.pop(seq)
                ev.append(ArmEvent("done", st.t, seq, None, p.plan, "result overwritten before it was read"))
            p = self.pending.pop(st.done_seq)
            ev.append(ArmEvent("done", st.t, st.done_seq, st.result, p.plan))
        return ev

    # ================================================================== commands
    @property
    def slot_free(self) -> bool:
        """The arm has taken our last commit (so the command block may be overwritten)."""
        st = self.status
        if st is None or self._uncertain is not None or self._relink:
            return False
        if self._last_commit is None:
            return True
        return st.ack_seq == self._last_commit or st.done_seq == self._last_commit

    @property
    def uncertain_plan(self) -> PickPlan | None:
        """The plan whose commit is unresolved (link broke during the commit), if any."""
        return self._uncertain.plan if self._uncertain is not None else None

    def can_accept(self) -> bool:
        """Connected, heartbeat alive, not faulted, slot free, at most one command queued."""
        st = self.status
        return (
            self.transport.connected
            and self.alarm is None
            and self._failing_since is None  # its last read answered properly (not a failing one)
            and not self.store_error
            and not self.stuck
            and not self.inconsistent
            and not self._holding
            and not self._awaiting_program
            and st is not None
            and st.state in (ArmState.IDLE, ArmState.BUSY)
            and self.slot_free
            and sum(1 for p in self.pending.values() if not p.acked) == 0
            and len(self.pending) <= 1
        )

    @property
    def state_name(self) -> str:
        """For operator screens: idle, picking, disconnected, comm_error, stalled, state_file
        (its state file cannot be written), stuck (a command long overdue), fault, estop,
        starting."""
        st = self.status
        if not self.transport.connected or st is None:
            return "disconnected"
        if self._awaiting_program:
            return "starting"
        if (
            self._failing_since is not None
            and self.clock.now() - self._failing_since >= self.config.arm_heartbeat_timeout_s
        ):
            return "comm_error"  # it answers, but with errors, for a while now
        if self.inconsistent:
            return "comm_error"
        if self.alarm:
            return "stalled"
        if self.store_error:
            return "state_file"
        if self.stuck:
            return "stuck"
        return {
            ArmState.IDLE: "idle",
            ArmState.BUSY: "picking",
            ArmState.FAULT: "fault",
            ArmState.ESTOP: "estop",
            ArmState.STARTING: "starting",
        }[st.state]

    def _check_ready(self, allow_fault: bool = False) -> ArmStatus:
        if not self.transport.connected:
            raise RobotDisconnectedError(f"{self.transport.where} is not connected")
        if self.alarm:
            raise HeartbeatStalled(self.alarm)
        st = self.status
        if st is None:
            raise ProtocolError(f"arm {self.name!r}: no status read yet")
        if not allow_fault and st.state in (ArmState.FAULT, ArmState.ESTOP):
            raise ArmFaultError(
                f"arm {self.name!r} is in {st.state.name} ({st.fault_code.name}); clear the cause, then reset_fault()",
                int(st.fault_code),
                int(st.state),
            )
        if self._uncertain is not None:
            raise ArmBusyError(f"arm {self.name!r}: the commit of seq {self._uncertain.seq} is unresolved")
        if self._relink:
            raise ArmBusyError(f"arm {self.name!r} restarted: the link is set up again on the next poll")
        if self._awaiting_program:
            raise ArmNotReady(self.last_error)
        if not self.slot_free:
            raise ArmBusyError(f"arm {self.name!r} has not taken seq {self._last_commit} yet")
        return st

    def check_plan(self, plan: PickPlan) -> None:
        """The workspace check again, on exactly what will be written, and the grip-time
        horizon of the interface."""
        names = [w.name for w in plan.waypoints]
        if tuple(names) != WAYPOINTS:
            raise ProtocolError(f"plan for target {plan.target.id} has waypoints {names}, expected {list(WAYPOINTS)}")
        # The arm starts wherever it is: the start segment is the planner's to check.
        for path in plan.paths(from_start=False):
            self.workspace.check_path(path)
        ahead = plan.grip_time - self.clock.now()
        if ahead > self.grip_horizon_s:
            raise ProtocolError(
                f"arm {self.name!r}: target {plan.target.id} would be gripped {ahead:.1f} s from now, beyond "
                f"the interface's grip-time horizon of {self.grip_horizon_s:g} s"
            )

    @staticmethod
    def pick_type(plan: PickPlan) -> CommandType:
        return CommandType.PICK_CHAINED if plan.chained else CommandType.PICK

    def encode_pick(self, plan: PickPlan) -> list[int]:
        values = plan.command_fields()
        values["cmd_type"] = int(self.pick_type(plan))
        values["grip_time_ms"] = self.arm_ms(plan.grip_time)
        return self.map.encode_block("command", values)

    def submit(self, plan: PickPlan) -> int:
        """Send one pick; returns its sequence number once committed. Raises (before anything
        is written) WorkspaceViolation, HeartbeatStalled, ArmFaultError, ArmBusyError,
        RobotDisconnectedError, RegisterValueError, ProtocolError; RobotCommError when the
        block write fails (nothing committed); :class:`CommitUncertain` when the commit write
        fails and the arm could not be read back at once (the client keeps the command:
        :meth:`poll` resolves it, and the caller must not send the target again)."""
        with self._lock:
            self.check_plan(plan)
            self._check_ready()
            words = self.encode_pick(plan)
            return self._send(self.pick_type(plan), words, plan)

    def reset_fault(self) -> int:
        """Send RESET: the arm leaves FAULT/ESTOP if the cause is gone (e-stop released,
        controller heartbeat alive). Returns the command's sequence number."""
        with self._lock:
            self._check_ready(allow_fault=True)
            words = self.map.encode_block("command", {"cmd_type": int(CommandType.RESET)})
            return self._send(CommandType.RESET, words, None)

    def move_ready(self) -> int:
        """Send MOVE_READY: go to the configured ready position."""
        with self._lock:
            self._check_ready()
            r = self.config.ready_mm
            self.workspace.check_point("ready", np.asarray(r))
            words = self.map.encode_block(
                "command",
                {
                    "cmd_type": int(CommandType.MOVE_READY),
                    "ready_x": r[0],
                    "ready_y": r[1],
                    "ready_z": r[2],
                    "ready_speed": self.config.motion.speed_mm_s,
                },
            )
            return self._send(CommandType.MOVE_READY, words, None)

    def _next_seq(self) -> int:
        held = {
            s
            for s in (
                self._arm_cmd_seq,
                self.status.ack_seq if self.status else None,
                self.status.done_seq if self.status else None,
            )
            if s
        }
        n = self._counter + 1
        while wire_seq(n) in held or wire_seq(n) in self.pending:
            n += 1
        # Persist BEFORE the commit: a crash after the commit must not reuse the number.
        self._save_counter(n)
        self._counter = n
        return wire_seq(n)

    STORE_RETRY_S = 1.0

    def _save_counter(self, n: int) -> None:
        """Write the counter to the state file; a disk that refuses (full, read-only, gone)
        stops this arm's commands with :class:`StateFileError` until a write succeeds again
        (an outside try: an unhandled OSError here stopped the whole line for good)."""
        try:
            self.seq_store.save(n)
        except OSError as e:
            why = e.strerror or str(e)
            new = not self.store_error
            self.store_error = (
                f"arm {self.name!r}: cannot write its state file {self.seq_store.path} ({why}); "
                "no new picks until it can be written"
            )
            now = self.clock.now()
            self._store_retry_at = now + self.STORE_RETRY_S
            if new:
                self._deferred.append(ArmEvent("state_file_error", now, detail=self.store_error))
            raise StateFileError(self.store_error) from None

    def _retry_store(self, now: float) -> list[ArmEvent]:
        """While the state file cannot be written, try again (rarely); the arm takes picks as
        soon as it can."""
        if not self.store_error:
            return []
        if now < self._store_retry_at:
            return []
        was = self.store_error
        try:
            self._save_counter(self._counter)
        except StateFileError:
            return []
        self.store_error = ""
        return [ArmEvent("state_file_back", now, detail=f"arm {self.name!r}: its state file is written again ({was})")]

    def _send(self, cmd_type: CommandType, words: list[int], plan: PickPlan | None) -> int:
        blk = self._blk("command")
        # Block first: if this fails, nothing is committed (cmd_seq is untouched, and the arm
        # has taken the last command, so the block is ours to overwrite).
        try:
            self.transport.write(blk.start, words)
        except RobotCommError as e:
            self._note_error(e)
            raise
        seq = self._next_seq()
        p = _Pending(seq, cmd_type, plan, words, self.clock.now())
        try:
            self.transport.write(self.map.address("cmd_seq"), [seq])
        except RobotCommError as e:
            # Neither an exception answer nor a timeout proves the write was not performed: a
            # TCP->RTU gateway answers 0x0B after the write reached the arm, a reply can be
            # lost after the write landed. Until the arm is read back the commit is uncertain.
            self._uncertain = p
            self._note_error(e)
            self._deferred.append(
                ArmEvent("error", self.clock.now(), seq, plan=plan, detail=f"commit of seq {seq}: {e}")
            )
            try:
                if not self.transport.connected:
                    _, events = self._connect()  # the arm may have restarted meanwhile
                    self._deferred += [ArmEvent("connected", self.clock.now(), detail=self.transport.where), *events]
                if self._uncertain is p:
                    self._deferred += self._resolve_uncertain()
            except RobotError as e2:
                raise CommitUncertain(
                    f"{e}; commit of seq {seq} is uncertain: it will be read back before anything "
                    f"else and never re-sent blindly ({e2})",
                    seq,
                ) from None
            if seq in self.pending:
                return seq
            raise CommitUncertain(f"{e}; seq {seq} was not taken: see the events for its outcome", seq) from None
        self._commit_ok(p)
        return seq

    def _commit_ok(self, p: _Pending) -> None:
        self.pending[p.seq] = p
        self._last_commit = p.seq
        self._arm_cmd_seq = p.seq
        self._recent.append(p.seq)

    def _resolve_uncertain(self) -> list[ArmEvent]:
        """Settle a commit whose write failed, from the arm's own registers: the status block
        and cmd_seq first (a restarted arm ends it with an unknown outcome); if the arm holds
        our seq the commit landed; if not, nothing was taken (only we write cmd_seq) and the
        same block and the same seq are written again, unless the pick's time has passed."""
        p = self._uncertain
        if p is None:
            return []
        prev = self.status
        st = self.read_status(control=True)
        why = self._restart_reason(prev, st) if prev is not None else None
        if why:
            return self._resync(st, why)
        now = self.clock.now()
        if st.cmd_seq == p.seq:
            self._uncertain = None
            self._commit_ok(p)
            return [
                ArmEvent(
                    "commit_confirmed",
                    now,
                    p.seq,
                    plan=p.plan,
                    detail=f"arm {self.name!r} holds seq {p.seq}: it was committed although its write failed",
                )
            ]
        if p.plan is not None and now >= p.plan.grip_time:
            self._uncertain = None
            return [
                ArmEvent(
                    "abandoned",
                    now,
                    p.seq,
                    ResultCode.NOT_READY,
                    p.plan,
                    f"seq {p.seq} never reached arm {self.name!r} and its grip time has passed: not sent again",
                )
            ]
        # Even if the first write still lands late it carries the same values, and a pick
        # whose time has passed is answered LATE by the arm without moving: either way it runs
        # at most once.
        self.transport.write(self._blk("command").start, p.words)
        self.transport.write(self.map.address("cmd_seq"), [p.seq])
        self._uncertain = None
        self._commit_ok(p)
        return [
            ArmEvent(
                "commit_confirmed",
                now,
                p.seq,
                plan=p.plan,
                detail=f"seq {p.seq} had not reached arm {self.name!r}; written again after reading back",
            )
        ]

    # ================================================================== waiting helpers
    def wait_for(
        self, seq: int, kind: Literal["acked", "done"] = "done", timeout_s: float = 5.0, step_s: float | None = None
    ) -> ArmEvent:
        """Poll until ``seq`` is acked/done (on this client's clock). Raises RobotTimeoutError,
        or ArmFaultError when the arm faults first. Events seen meanwhile are kept in
        :meth:`drain_events`."""
        from scallop.robot.errors import RobotTimeoutError

        step = step_s or min(0.01, self.config.heartbeat_period_s)
        deadline = self.clock.now() + timeout_s
        while True:
            for e in self.poll():
                self._bg_events.append(e)
                if e.seq == seq and (e.kind == kind or e.kind == "done"):
                    return e
            if self.clock.now() >= deadline:
                raise RobotTimeoutError(
                    f"arm {self.name!r}: seq {seq} not {kind} within {timeout_s:g} s (state {self.state_name})"
                )
            self.clock.sleep(step)

    def drain_events(self) -> list[ArmEvent]:
        out = list(self._bg_events)
        self._bg_events.clear()
        return out

    # ================================================================== background service
    def start_background(self) -> None:
        """Call :meth:`poll` every heartbeat period on a thread (wall-clock deployments);
        events are collected for :meth:`drain_events`. Stopped by :meth:`close`."""
        if self._bg is not None:
            return
        self._bg_stop.clear()

        def loop() -> None:
            while not self._bg_stop.is_set():
                for e in self.poll():
                    self._bg_events.append(e)
                self._bg_stop.wait(self.config.heartbeat_period_s / 2)

        self._bg = threading.Thread(target=loop, name=f"arm-{self.name}", daemon=True)
        self._bg.start()

    def stop_background(self) -> None:
        if self._bg is not None:
            self._bg_stop.set()
            self._bg.join(timeout=5)
            self._bg = None
