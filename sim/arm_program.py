"""The simulated robot program behind the arm interface (docs/robot-interface.md): the
registers of its profile, motion and gripper timing, workspace limits, grading against the
simulator's ground truth, and faults on the robot's side. :class:`scallop.sim.arm.SimArm`
serves it over Modbus.

Time: the arm's state is computed lazily from ``clock.now()`` whenever a request arrives
(nothing runs in the background), so on a :class:`~scallop.sim.clock.VirtualClock` the same
requests at the same virtual times give the same run, whatever the thread timing.

Motion model (what a robot program written from the interface document does):

* free moves (to ``approach``, ``chute``, ``ready``): rest-to-rest trapezoidal profile at
  ``min(commanded speed, params.speed_mm_s)`` and ``params.accel_mm_s2``;
* timed moves (``grasp``, ``grip_end``, ``pull_end``): straight lines at the commanded speed
  (the robot blends into them), the ``grip_end`` move lasting at least the gripper's close time;
* the descent starts at ``grip_time - |grasp - approach| / grasp_speed``; arriving at the
  approach point later than that plus ``late_tolerance_ms`` means result LATE: the arm goes
  back to ready without descending.

Grading: when the gripper reaches the grasp point, ``grader.grade_pick(xy_B, t, pull_dir_B)``
says what happened (``uro_removed``, ``missed``, ``adductor_hit``, ``meat_hit``, ``empty``).
The arm reports result OK when the gripper closed on something, EMPTY otherwise.

Faults on the robot's side: ``stall_heartbeat``, ``inject_fault``, ``estop``/``release_estop``,
``restart_program``. The controller-heartbeat watchdog is always on: once the controller has
started its heartbeat, ``watchdog_ms`` without a change puts the arm in FAULT (fault code 1),
aborting the pick in progress; a RESET command clears it when the heartbeat is back.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from scallop.robot.arm import (
    ARM_CLOCK_MODULUS,
    PICK_TYPES,
    ArmState,
    CommandType,
    FaultCode,
    ResultCode,
    check_profile,
)
from scallop.robot.clock import Clock
from scallop.robot.config import ArmConfig, Box, trapezoid_time
from scallop.robot.planning import WAYPOINTS
from scallop.robot.registers import RegisterMap

GRADES = ("uro_removed", "missed", "adductor_hit", "meat_hit", "empty")
HOLDING = {"uro_removed", "adductor_hit", "meat_hit"}


class PickGradeLike(Protocol):
    result: str


class Grader(Protocol):
    """What the simulated world offers the arm: the outcome of a grip at belt point ``xy_B``
    (2,) at time ``t``, pulling along ``pull_dir_B`` (2,) (unit vector, belt frame)."""

    def grade_pick(self, xy_B: np.ndarray, t: float, pull_dir_B: np.ndarray) -> PickGradeLike: ...


@dataclass
class SimArmParams:
    """The simulated robot's own mechanics and program timing."""

    speed_mm_s: float = 1000.0
    accel_mm_s2: float = 6000.0
    gripper_close_s: float = 0.08
    gripper_open_s: float = 0.06
    settle_s: float = 0.0  # pause after each free move that ends at rest
    poll_period_s: float = 0.008  # the robot program looks at cmd_seq this often
    heartbeat_period_s: float = 0.05  # arm_heartbeat increments this often
    late_tolerance_s: float = 0.005
    workspace: Box | None = None  # the robot's own limits (None: the ArmConfig's workspace)
    keep_out: list[Box] | None = None  # None: the ArmConfig's keep-out boxes
    instant: bool = False  # benchmarks: every command completes at once

    @classmethod
    def from_config(cls, cfg: ArmConfig, profile: RegisterMap | None = None, **over: Any) -> SimArmParams:
        m = cfg.motion
        timing = profile.timing if profile is not None else {}
        kw: dict[str, Any] = {
            "speed_mm_s": m.speed_mm_s,
            "accel_mm_s2": m.accel_mm_s2,
            "gripper_close_s": m.gripper_close_s,
            "gripper_open_s": m.gripper_open_s,
            "settle_s": m.settle_s,
        }
        if "late_tolerance_ms" in timing:
            kw["late_tolerance_s"] = timing["late_tolerance_ms"] / 1000.0
        if "robot_poll_period_ms" in timing:
            kw["poll_period_s"] = timing["robot_poll_period_ms"] / 1000.0
        if "arm_heartbeat_period_ms" in timing:
            kw["heartbeat_period_s"] = timing["arm_heartbeat_period_ms"] / 1000.0
        kw.update(over)
        return cls(**kw)


@dataclass
class SimPickRecord:
    """What the simulated arm did with one command (ground truth for tests)."""

    seq: int
    cmd_type: int
    target_id: int
    t_ack: float
    t_done: float
    result: ResultCode
    t_grip: float | None = None  # when the gripper reached the grasp point
    grade: str | None = None  # the grader's verdict, None when not gripped
    grasp_B: np.ndarray | None = None  # (2,) belt-frame grip point
    pull_dir_B: np.ndarray | None = None  # (2,) unit vector, belt frame
    detail: str = ""
    wait_s: float = 0.0  # held still at the approach, waiting for the uro


@dataclass
class _Exec:
    rec: SimPickRecord
    segments: list[tuple[float, float, np.ndarray, np.ndarray]]  # (t0, t1, p0, p1)
    t_grip: float | None
    graded: bool = False
    holding: bool = False
    t_release: float | None = None  # gripper open over the chute: a PICK_CHAINED may take over here


class ArmProgram:
    """The robot's side of the interface without a server: register values in, register
    values out, on the clock. :class:`scallop.sim.arm.SimArm` is the one to use."""

    def __init__(
        self,
        config: ArmConfig,
        clock: Clock,
        grader: Grader | None = None,
        params: SimArmParams | None = None,
        profile: RegisterMap | str | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.grader = grader
        self.map = profile if isinstance(profile, RegisterMap) else RegisterMap.load(profile or config.profile)
        check_profile(self.map)
        self.params = params or SimArmParams.from_config(config, self.map)
        self.workspace = self.params.workspace or config.workspace
        self.keep_out = self.params.keep_out if self.params.keep_out is not None else list(config.keep_out)
        lo, hi = self.map.span()
        self._lo = lo
        self.regs = [0] * (hi - lo)
        self._lock = threading.RLock()
        # Robot state (all times on self.clock).
        self.boot_t = clock.now()
        self.state = ArmState.IDLE
        self.fault_code = FaultCode.NONE
        self.fault_since = self.boot_t
        self.ack_seq = 0
        self.done_seq = 0
        self.result = ResultCode.NONE
        self.picks_total = 0
        self.pos = np.asarray(config.ready_mm, dtype=np.float64).copy()
        self.idle_since = self.boot_t
        self._exec: _Exec | None = None
        self._cmd_changed_t = -math.inf
        self._hb_changed_t: float | None = None  # None: watchdog not armed yet
        self._wd_written_t = -math.inf  # a watchdog_ms written later fires no earlier than then
        self._program_start_t: float | None = None  # restart_program(start_after_s=...) pending
        self._hb_stall_t: float | None = None
        self._busy_hold = False  # hold_busy(): the command in hand never ends
        self._estop = False
        self._now = self.boot_t
        # Logs.
        self.write_log: list[tuple[float, int, list[int]]] = []
        self.records: list[SimPickRecord] = []
        self._set("interface_version", self.map.version)

    # ================================================================== registers
    def _addr(self, name: str) -> tuple[int, int]:
        f = self.map.field(name)
        return f.address - self._lo, f.size

    def _set(self, name: str, value: float) -> None:
        off, n = self._addr(name)
        self.regs[off : off + n] = self.map.encode_field(name, value)

    def _get(self, name: str) -> float | int:
        off, n = self._addr(name)
        return self.map.decode_field(name, self.regs[off : off + n])

    def _write(self, now: float, address: int, vals: list[int]) -> None:
        self.write_log.append((now, address, list(vals)))
        if len(self.write_log) > 200_000:  # a standalone arm runs for hours: keep the recent half
            del self.write_log[:100_000]
        hb_off, _ = self._addr("ctrl_heartbeat")
        seq_off, _ = self._addr("cmd_seq")
        wd_off, _ = self._addr("watchdog_ms")
        old_hb, old_seq, old_wd = self.regs[hb_off], self.regs[seq_off], self.regs[wd_off]
        off = address - self._lo
        self.regs[off : off + len(vals)] = vals
        if self.regs[hb_off] != old_hb:
            self._hb_changed_t = now
        if self.regs[seq_off] != old_seq:
            self._cmd_changed_t = now
        if self.regs[wd_off] != old_wd:
            self._wd_written_t = now

    def _refresh(self, now: float) -> None:
        p = self.params
        hb_t = now if self._hb_stall_t is None else min(now, self._hb_stall_t)
        self._set("arm_heartbeat", int((hb_t - self.boot_t) / p.heartbeat_period_s) & 0xFFFF)
        self._set("arm_state", int(self.state))
        self._set("fault_code", int(self.fault_code))
        self._set("ack_seq", self.ack_seq)
        self._set("done_seq", self.done_seq)
        self._set("result", int(self.result))
        self._set("arm_time_ms", int(math.floor((now - self.boot_t) * 1000.0 + 1e-6)) % ARM_CLOCK_MODULUS)
        pos = self._position(now)
        for axis, v in zip("xyz", pos):
            self._set(f"tcp_{axis}", float(v))
        self._set("picks_total", self.picks_total & 0xFFFFFFFF)

    # ================================================================== lazy timeline
    def _watchdog_s(self) -> float:
        wd = int(self._get("watchdog_ms"))
        return (wd if wd > 0 else self.map.timing.get("watchdog_default_ms", 1000)) / 1000.0

    def _position(self, t: float) -> np.ndarray:
        ex = self._exec
        if ex is None:
            return self.pos
        for t0, t1, p0, p1 in ex.segments:
            if t <= t1:
                if t <= t0 or t1 <= t0:
                    return p0.copy()
                return p0 + (p1 - p0) * ((t - t0) / (t1 - t0))
        return ex.segments[-1][3].copy() if ex.segments else self.pos

    def _advance(self, now: float) -> None:
        """Run every event up to ``now`` in time order."""
        for _ in range(10000):
            cands: list[tuple[float, int, str]] = []
            if self._program_start_t is not None:
                cands.append((self._program_start_t, -1, "start"))
            if self._hb_changed_t is not None and self.state not in (ArmState.FAULT, ArmState.ESTOP):
                t_wd = max(self._hb_changed_t + self._watchdog_s(), self._wd_written_t)
                cands.append((t_wd, 0, "watchdog"))
            ex = self._exec
            if ex is not None:
                if ex.t_grip is not None and not ex.graded:
                    cands.append((ex.t_grip, 1, "grip"))
                if self._chains(ex) and not self._busy_hold:
                    cands.append((ex.t_release, 2, "chain"))
                if not self._busy_hold:
                    cands.append((ex.rec.t_done, 3, "done"))
            elif self._pending_seq() is not None and self.state != ArmState.STARTING:
                since = self.fault_since if self.state in (ArmState.FAULT, ArmState.ESTOP) else self.idle_since
                cands.append((max(self._cmd_changed_t + self.params.poll_period_s, since), 4, "ack"))
            due = [c for c in cands if c[0] <= now]
            if not due:
                self._now = now
                return
            t, _, kind = min(due)
            if kind == "start":
                self._start_program(t)
            elif kind == "watchdog":
                self._fault(t, FaultCode.CTRL_WATCHDOG, ArmState.FAULT)
            elif kind == "grip":
                self._grip(t)
            elif kind == "chain":
                # Done at the release: drop the move to ready and take the chained pick from here.
                ex.segments = [sg for sg in ex.segments if sg[0] < t]
                ex.rec.t_done = t
                self._finish(t)
                self._take(t)
            elif kind == "done":
                self._finish(t)
            else:
                self._take(t)
        raise RuntimeError("simulated arm: event loop did not settle")

    def _chains(self, ex: _Exec) -> bool:
        """At the release, the robot program looks at cmd_seq: a PICK_CHAINED committed by then is
        taken at once, from the chute. One committed later waits until the arm is back at ready."""
        if ex.t_release is None or ex.rec.result != ResultCode.NONE or self._pending_seq() is None:
            return False
        if self._cmd_changed_t > ex.t_release:
            return False
        return int(self._get("cmd_type")) == CommandType.PICK_CHAINED

    def _pending_seq(self) -> int | None:
        seq = int(self._get("cmd_seq"))
        return seq if seq != 0 and seq != self.ack_seq else None

    def _fault(self, t: float, code: FaultCode, state: ArmState) -> None:
        ex = self._exec
        if ex is not None:
            self.pos = self._position(t)
            ex.rec.t_done = t
            ex.rec.result = ResultCode.ABORTED
            ex.rec.detail = f"aborted by {code.name}"
            if ex.t_grip is not None and not ex.graded and ex.t_grip > t:
                ex.rec.t_grip = None
            self.done_seq = ex.rec.seq
            self.result = ResultCode.ABORTED
            self._exec = None
        self.state, self.fault_code, self.fault_since = state, code, t

    def _grip(self, t: float) -> None:
        ex = self._exec
        ex.graded = True
        rec = ex.rec
        if self.grader is None:
            rec.grade = None
            ex.holding = True
            return
        g = self.grader.grade_pick(rec.grasp_B.copy(), t, rec.pull_dir_B.copy())
        rec.grade = str(getattr(g, "result", g))
        ex.holding = rec.grade in HOLDING

    def _finish(self, t: float) -> None:
        ex = self._exec
        rec = ex.rec
        if rec.result == ResultCode.NONE:
            if rec.cmd_type in PICK_TYPES:
                rec.result = ResultCode.OK if ex.holding else ResultCode.EMPTY
                self.picks_total += 1
            else:
                rec.result = ResultCode.OK
        self.pos = ex.segments[-1][3].copy() if ex.segments else self.pos
        self.result = rec.result
        self.done_seq = rec.seq
        self._exec = None
        self.state = ArmState.IDLE
        self.idle_since = t

    def _take(self, t: float) -> None:
        """The robot program sees a new cmd_seq at time t: copy the block, ack, execute."""
        seq = self._pending_seq()
        blk = self.map.decode_block(
            "command", self.regs[self.map.block("command").start - self._lo : self.map.block("command").end - self._lo]
        )
        self.ack_seq = seq
        ctype = int(blk["cmd_type"])
        rec = SimPickRecord(seq, ctype, int(blk["target_id"]), t, t, ResultCode.NONE)
        self.records.append(rec)

        def done_now(result: ResultCode, detail: str = "") -> None:
            rec.result, rec.detail, rec.t_done = result, detail, t
            self.done_seq, self.result = seq, result

        if self.state in (ArmState.FAULT, ArmState.ESTOP):
            if ctype == CommandType.RESET:
                hb_ok = self._hb_changed_t is not None and t - self._hb_changed_t < self._watchdog_s()
                if self._estop:
                    done_now(ResultCode.REJECTED, "e-stop still engaged")
                elif not hb_ok:
                    done_now(ResultCode.REJECTED, "controller heartbeat not running")
                else:
                    self.state, self.fault_code, self.idle_since = ArmState.IDLE, FaultCode.NONE, t
                    done_now(ResultCode.OK, "fault cleared")
            else:
                done_now(ResultCode.NOT_READY, f"arm in {self.state.name}")
            return
        if ctype == CommandType.RESET:
            done_now(ResultCode.OK, "nothing to reset")
            return
        if ctype not in (*PICK_TYPES, CommandType.MOVE_READY):
            done_now(ResultCode.REJECTED, f"unknown cmd_type {ctype}")
            return
        wp = {w: np.array([blk[f"{w}_x"], blk[f"{w}_y"], blk[f"{w}_z"]], dtype=np.float64) for w in WAYPOINTS}
        sp = {w: float(blk[f"{w}_speed"]) for w in WAYPOINTS}
        names = WAYPOINTS if ctype in PICK_TYPES else ("ready",)
        for w in names:
            bad = not self.workspace.contains(wp[w]) or any(b.contains(wp[w]) for b in self.keep_out)
            if bad or sp[w] <= 0:
                done_now(
                    ResultCode.REJECTED,
                    f"waypoint {w} {wp[w]} outside the robot's limits" if bad else f"waypoint {w} speed 0",
                )
                return
        p = self.params
        if p.instant:
            self.state = ArmState.BUSY
            self._exec = _Exec(rec, [(t, t, self.pos.copy(), wp["ready"])], None)
            rec.t_done = t
            self._finish(t)
            return
        segs: list[tuple[float, float, np.ndarray, np.ndarray]] = []

        def free_move(t0: float, a: np.ndarray, b: np.ndarray, speed: float) -> float:
            """Ends at rest; the program goes on ``settle_s`` later."""
            t1 = t0 + trapezoid_time(float(np.linalg.norm(b - a)), min(speed, p.speed_mm_s), p.accel_mm_s2)
            segs.append((t0, t1, a.copy(), b.copy()))
            if p.settle_s > 0:
                segs.append((t1, t1 + p.settle_s, b.copy(), b.copy()))
            return t1 + p.settle_s

        def line(t0: float, a: np.ndarray, b: np.ndarray, speed: float, at_least: float = 0.0) -> float:
            t1 = t0 + max(float(np.linalg.norm(b - a)) / speed, at_least)
            segs.append((t0, t1, a.copy(), b.copy()))
            return t1

        self.state = ArmState.BUSY
        if ctype == CommandType.MOVE_READY:
            t_end = free_move(t, self.pos, wp["ready"], sp["ready"])
            rec.t_done = t_end
            self._exec = _Exec(rec, segs, None)
            return
        t_app = free_move(t, self.pos, wp["approach"], sp["approach"])
        t_grip_cmd = self._arm_ms_to_time(int(blk["grip_time_ms"]), t)
        t_desc = float(np.linalg.norm(wp["grasp"] - wp["approach"])) / sp["grasp"]
        t_desc_start = t_grip_cmd - t_desc
        if t_app > t_desc_start + p.late_tolerance_s:
            t_end = free_move(t_app, wp["approach"], wp["ready"], sp["ready"])
            rec.result, rec.t_done = ResultCode.LATE, t_end
            rec.detail = f"at the approach {t_app - t_desc_start:.3f} s after the descent had to start"
            self._exec = _Exec(rec, segs, None)
            return
        t_ds = max(t_app, t_desc_start)
        rec.wait_s = t_ds - t_app
        segs.append((t_app, t_ds, wp["approach"].copy(), wp["approach"].copy()))
        t_g = line(t_ds, wp["approach"], wp["grasp"], sp["grasp"])
        t_ge = line(t_g, wp["grasp"], wp["grip_end"], sp["grip_end"], at_least=p.gripper_close_s)
        t_pe = line(t_ge, wp["grip_end"], wp["pull_end"], sp["pull_end"])
        t_ch = free_move(t_pe, wp["pull_end"], wp["chute"], sp["chute"])
        segs.append((t_ch, t_ch + p.gripper_open_s, wp["chute"].copy(), wp["chute"].copy()))
        t_end = free_move(t_ch + p.gripper_open_s, wp["chute"], wp["ready"], sp["ready"])
        pose = self.config.robot_from_belt
        v_R = np.array([blk["belt_vx"], blk["belt_vy"], blk["belt_vz"]], dtype=np.float64)
        rel_pull = (wp["pull_end"] - wp["grip_end"]) - v_R * (t_pe - t_ge)
        d_B = pose.inverse_apply_vector(rel_pull)[:2]
        n = float(np.hypot(*d_B))
        rec.pull_dir_B = d_B / n if n > 1e-9 else np.array([np.nan, np.nan])
        rec.grasp_B = pose.inverse_apply(wp["grasp"])[:2]
        rec.t_grip = t_g
        rec.t_done = t_end
        self._exec = _Exec(rec, segs, t_g, t_release=t_ch + p.gripper_open_s)

    def _arm_ms_to_time(self, ms: int, near: float) -> float:
        """Arm clock value -> sim time, taking the wrap nearest to ``near``."""
        base = (near - self.boot_t) * 1000.0
        k = round((base - ms) / ARM_CLOCK_MODULUS)
        return self.boot_t + (ms + k * ARM_CLOCK_MODULUS) / 1000.0

    # ================================================================== inspection
    def snapshot(self) -> dict:
        """State at clock.now() (advancing the lazy timeline)."""
        with self._lock:
            now = self.clock.now()
            self._advance(now)
            return {
                "state": self.state.name,
                "fault": self.fault_code.name,
                "ack_seq": self.ack_seq,
                "done_seq": self.done_seq,
                "result": self.result.name,
                "picks_total": self.picks_total,
                "pos": self._position(now).tolist(),
            }

    def busy(self) -> bool:
        """A command is executing, or committed and not yet taken, at clock.now(): a controller
        that vanished leaves the arm finishing its pick and taking one already committed."""
        with self._lock:
            self._advance(self.clock.now())
            return self._exec is not None or self._pending_seq() is not None

    def executed_seqs(self) -> list[int]:
        """Sequence numbers of commands the arm took (each at most once, by design)."""
        with self._lock:
            return [r.seq for r in self.records]

    # ================================================================== fault injection
    def hold_busy(self, on: bool = True) -> None:
        """Stay BUSY on the command in hand (its done deferred) while its heartbeat runs on: a
        robot program stuck in a move. Off: it finishes then, late."""
        with self._lock:
            now = self.clock.now()
            self._advance(now)
            self._busy_hold = on
            ex = self._exec
            if not on and ex is not None and ex.rec.t_done < now:
                ex.rec.t_done = now

    def stall_heartbeat(self, on: bool = True) -> None:
        """Freeze (or resume) arm_heartbeat from now on."""
        with self._lock:
            self._hb_stall_t = self.clock.now() if on else None

    def inject_fault(self, code: FaultCode = FaultCode.MOTION) -> None:
        with self._lock:
            now = self.clock.now()
            self._advance(now)
            self._fault(now, FaultCode(code), ArmState.FAULT)

    def estop(self) -> None:
        with self._lock:
            now = self.clock.now()
            self._advance(now)
            self._estop = True
            self._fault(now, FaultCode.ESTOP, ArmState.ESTOP)

    def release_estop(self) -> None:
        """Releases the button; the arm stays in ESTOP until a RESET command."""
        with self._lock:
            self._estop = False

    def restart_program(self, fresh_registers: bool = False, start_after_s: float = 0.0) -> None:
        """The robot program restarts: it treats whatever is in cmd_seq as already seen
        (ack_seq = done_seq = cmd_seq) and its clock starts again. ``fresh_registers``: the
        controller rebooted too (a power cycle), so every register starts at 0, including
        cmd_seq, watchdog_ms and ctrl_heartbeat; otherwise the server keeps them.
        ``start_after_s``: the program runs that much later (a controller booting before its
        program): meanwhile the arm reports STARTING, its heartbeat stands still and nothing
        is taken."""
        with self._lock:
            now = self.clock.now()
            self._advance(now)
            if self._exec is not None:
                self._fault(now, FaultCode.INTERNAL, ArmState.FAULT)
            if fresh_registers:
                self.regs[:] = [0] * len(self.regs)
                self._cmd_changed_t = self._wd_written_t = -math.inf
                self.ack_seq = self.done_seq = 0
            self.result = ResultCode.NONE
            self.state, self.fault_code = ArmState.STARTING, FaultCode.NONE
            self._hb_changed_t, self._hb_stall_t = None, now
            self.boot_t = now
            self._program_start_t = now + max(0.0, start_after_s)
            self._advance(now)

    def _start_program(self, t: float) -> None:
        """The start rule (docs/robot-interface.md, section 5): nothing committed before runs."""
        self._set("interface_version", self.map.version)
        seq = int(self._get("cmd_seq"))
        self.ack_seq = self.done_seq = seq
        self.result = ResultCode.NONE
        self.picks_total = 0
        self.state, self.fault_code, self.idle_since = ArmState.IDLE, FaultCode.NONE, t
        self._hb_changed_t = self._hb_stall_t = None
        self.boot_t = t
        self._program_start_t = None
