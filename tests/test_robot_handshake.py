"""The controller and the simulated arm over real sockets on 127.0.0.1: the handshake,
at-most-once execution, watchdogs both ways, workspace refusal, Modbus exceptions,
timeouts, reconnect back-off and RTU framing."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, replace

import numpy as np
import pytest

from scallop.robot.arm import ArmClient, ArmState, FaultCode, ResultCode, SeqStore
from scallop.robot.belt import ConveyorTracker
from scallop.robot.clock import SystemClock
from scallop.robot.config import ArmConfig, Box, TransportConfig
from scallop.robot.errors import (
    ArmBusyError,
    ArmFaultError,
    CommitUncertain,
    HeartbeatStalled,
    ModbusExceptionError,
    RobotDisconnectedError,
    RobotTimeoutError,
    WorkspaceViolation,
)
from scallop.robot.planning import PickPlan, PickPlanner, PickTarget
from scallop.sim.arm import SimArm, SimArmParams
from scallop.sim.clock import VirtualClock

V, MPC = 300.0, 0.1


@dataclass
class Grade:
    result: str


class RecordingGrader:
    """Says every grip removed the uro, and remembers where and when it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[np.ndarray, float, np.ndarray]] = []

    def grade_pick(self, xy_B, t, pull_dir_B):
        self.calls.append((np.asarray(xy_B), float(t), np.asarray(pull_dir_B)))
        return Grade("uro_removed")


@pytest.fixture(autouse=True, scope="module")
def no_threads_left_behind():
    yield
    time.sleep(0.05)
    left = [t.name for t in threading.enumerate() if t.name.startswith(("simarm-", "arm-"))]
    assert left == [], f"threads still running after the tests: {left}"


@pytest.fixture
def clock():
    return VirtualClock()


@pytest.fixture
def grader():
    return RecordingGrader()


@pytest.fixture
def arms():
    """Simulated arms started by a test; all closed afterwards."""
    made: list[SimArm] = []
    yield made
    for a in made:
        a.close()


@pytest.fixture
def clients():
    made: list[ArmClient] = []
    yield made
    for c in made:
        c.close()


def start_arm(arms, clock, cfg=None, **kw) -> SimArm:
    arm = SimArm(cfg or ArmConfig(), clock, **kw).start()
    arms.append(arm)
    return arm


def client_for(clients, arm: SimArm, clock, cfg: ArmConfig | None = None, timeout_s: float = 0.5, **over) -> ArmClient:
    base = cfg or arm.config
    c = ArmClient(replace(base, transport=arm.transport_config(timeout_s=timeout_s), **over), clock)
    clients.append(c)
    return c


def tracker_now(clock) -> ConveyorTracker:
    tr = ConveyorTracker(MPC)
    for dt in (-0.2, -0.1, 0.0):
        t = clock.now() + dt
        tr.update(t, int(round(V * t / MPC)))
    return tr


def make_plan(
    cfg: ArmConfig,
    clock,
    x_now: float = 600.0,
    y: float = 20.0,
    tid: int = 1,
    pull=(0.0, 1.0),
    t_free: float | None = None,
    chained: bool = False,
) -> PickPlan:
    """A target whose uro is at belt x=x_now at the current time."""
    tr = tracker_now(clock)
    enc = int(round(V * clock.now() / MPC))
    plan = PickPlanner(cfg).plan(
        PickTarget(tid, (x_now, y), enc, pull, z_mm=5.0), tr, clock.now() if t_free is None else t_free, chained=chained
    )
    assert isinstance(plan, PickPlan), plan
    return plan


def writes_to(arm: SimArm, name: str) -> list[tuple[float, int, list[int]]]:
    f = arm.map.field(name)
    return [w for w in arm.write_log if w[1] <= f.address < w[1] + len(w[2])]


# ====================================================================== the handshake
@pytest.mark.parametrize("profile", ["generic", "ur"])
def test_full_handshake(arms, clients, clock, grader, profile):
    cfg = ArmConfig(profile=profile)
    arm = start_arm(arms, clock, cfg, grader=grader)
    c = client_for(clients, arm, clock)
    st = c.connect()
    assert (st.state, st.interface_version, st.ack_seq, st.done_seq) == (ArmState.IDLE, 2, 0, 0)
    plan = make_plan(cfg, clock)
    seq = c.submit(plan)
    # The whole command block in one request, then the sequence number alone, last.
    blk = arm.map.block("command")
    cmd_writes = [w for w in arm.write_log if w[1] in (blk.start, arm.map.address("cmd_seq"))]
    assert [(w[1], len(w[2])) for w in cmd_writes] == [(blk.start, blk.count), (arm.map.address("cmd_seq"), 1)]
    assert cmd_writes[1][2] == [seq]
    # What the arm holds is the plan, to the register resolution.
    held = arm.map.decode_block("command", cmd_writes[0][2])
    for w in plan.waypoints:
        for axis, v in zip("xyz", w.xyz_mm):
            assert held[f"{w.name}_{axis}"] == pytest.approx(v, abs=0.005)
    assert held["cmd_type"] == 1 and held["target_id"] == 1
    ack = c.wait_for(seq, "acked")
    assert ack.kind == "acked" and arm.ack_seq == seq
    assert ack.t - plan.t_start <= 0.02  # robot poll period + one client step
    done = c.wait_for(seq, "done")
    assert done.result == ResultCode.OK and done.plan is plan
    # Graded where and when the uro really was.
    rec = arm.records[0]
    assert rec.seq == seq and rec.grade == "uro_removed"
    assert rec.t_grip == pytest.approx(plan.grip_time, abs=1.5e-3)
    assert rec.wait_s == pytest.approx(plan.wait_s, abs=0.02) and rec.wait_s > 0  # held above the uro
    xy, t, d = grader.calls[0]
    assert t == rec.t_grip
    assert np.allclose(xy, plan.grasp_B[:2], atol=0.02)
    assert np.allclose(d, plan.pull_dir_B, atol=0.01)
    assert done.t >= rec.t_done and rec.t_done == pytest.approx(plan.t_end, abs=0.02)
    st = c.read_status()
    assert st.picks_total == 1 and st.state == ArmState.IDLE and st.result == ResultCode.OK
    assert np.allclose(st.tcp_mm, cfg.ready_mm, atol=0.01)


def test_arm_clock_offset_is_estimated(arms, clients, clock):
    clock.advance(5.0)  # the arm boots at t=5 on the controller's clock
    arm = start_arm(arms, clock)
    clock.advance(2.345)
    c = client_for(clients, arm, clock)
    c.connect()
    assert c.clock_offset_s == pytest.approx(-5.0, abs=6e-4)
    assert c.arm_ms(clock.now() + 1.0) == pytest.approx(3345, abs=1)


def test_one_command_queued_behind_the_running_one(arms, clients, clock):
    arm = start_arm(arms, clock)
    c = client_for(clients, arm, clock)
    c.connect()
    a = c.submit(make_plan(arm.config, clock, tid=1))
    assert not c.can_accept()
    with pytest.raises(ArmBusyError, match=f"has not taken seq {a}"):
        c.submit(make_plan(arm.config, clock, tid=2))
    pa = c.pending[a].plan
    c.wait_for(a, "acked")
    assert c.can_accept()
    b = c.submit(make_plan(arm.config, clock, x_now=450.0, tid=2, t_free=pa.t_end))
    assert not c.can_accept()  # one running, one queued: full
    ea = c.wait_for(a, "done")
    eb = c.wait_for(b, "done")
    assert (ea.result, eb.result) == (ResultCode.OK, ResultCode.OK)
    ra, rb = arm.records
    assert rb.t_ack == pytest.approx(ra.t_done)  # taken the moment the first one ended
    assert arm.executed_seqs() == [a, b]


def pick_then_chained(arms, clients, clock, grader=None):
    """A pick running on a connected arm, and a chained pick planned from its release (not sent)."""
    arm = start_arm(arms, clock, grader=grader)
    c = client_for(clients, arm, clock)
    c.connect()
    a = c.submit(make_plan(arm.config, clock, tid=1))
    pa = c.pending[a].plan
    c.wait_for(a, "acked")
    pb = make_plan(arm.config, clock, x_now=420.0, tid=2, t_free=pa.t_release, chained=True)
    return arm, c, a, pa, pb


def test_chained_pick_goes_from_the_chute_straight_to_its_approach(arms, clients, clock, grader):
    arm, c, a, pa, pb = pick_then_chained(arms, clients, clock, grader)
    assert pb.chained and np.allclose(pb.start_mm, arm.config.chute_mm)
    b = c.submit(pb)
    assert c.map.decode_block("command", arm.regs[24 - arm._lo : 83 - arm._lo])["cmd_type"] == 4
    ea, eb = c.wait_for(a, "done"), c.wait_for(b, "done")
    assert (ea.result, eb.result) == (ResultCode.OK, ResultCode.OK)
    ra, rb = arm.records
    # The first ends at its release over the chute, and the second is taken right there.
    assert ra.t_done == pytest.approx(pa.t_release, abs=0.02) and ra.t_done < pa.t_end - 0.1
    assert rb.t_ack == ra.t_done and rb.cmd_type == 4
    assert rb.t_grip == pytest.approx(pb.grip_time, abs=1.5e-3)
    assert [g[0][0] for g in grader.calls] == pytest.approx([pa.grasp_B[0], pb.grasp_B[0]], abs=0.05)
    assert arm.executed_seqs() == [a, b] and c.read_status().picks_total == 2


def test_chained_pick_committed_after_the_release_runs_from_ready(arms, clients, clock):
    """The robot looks for a chained pick at the release only: one committed later waits for
    the arm to reach ready, and a grip time it can no longer meet ends LATE, untouched."""
    arm, c, a, pa, pb = pick_then_chained(arms, clients, clock)
    while clock.now() < pa.t_release + 0.02:  # keep the heartbeat going
        clock.advance(min(0.05, pa.t_release + 0.02 - clock.now()))
        c.poll()
    b = c.submit(pb)
    eb = c.wait_for(b, "done")
    ra, rb = arm.records
    assert ra.t_done == pytest.approx(pa.t_end, abs=0.02)  # went back to ready
    assert rb.t_ack >= ra.t_done and rb.t_grip is None
    assert eb.result == ResultCode.LATE and c.read_status().picks_total == 1


def test_a_fault_before_the_release_aborts_the_pick_and_the_chained_one_never_runs(arms, clients, clock):
    from scallop.robot.arm import FaultCode

    arm, c, a, pa, pb = pick_then_chained(arms, clients, clock)
    b = c.submit(pb)
    while clock.now() < pa.t_release - 0.1:  # keep the heartbeat going until just before
        clock.advance(0.05)
        c.poll()
    arm.inject_fault(FaultCode.MOTION)
    # The chained command is answered NOT_READY at once, which may overwrite the first result
    # before it is read (then reported unknown); the arm's own records say what happened.
    events = []
    for _ in range(6):
        clock.advance(0.05)
        events += c.poll()
    done = {e.seq: e.result for e in events if e.kind == "done"}
    assert done[b] == ResultCode.NOT_READY and done.get(a) in (ResultCode.ABORTED, None)
    ra, rb = arm.records
    assert (ra.result, rb.result) == (ResultCode.ABORTED, ResultCode.NOT_READY)
    assert rb.t_grip is None and rb.seq == b and c.read_status().picks_total == 0


# ====================================================================== at most once
def test_commit_applied_then_connection_dropped_is_not_resent(arms, clients, clock):
    arm = start_arm(arms, clock)
    c = client_for(clients, arm, clock)
    c.connect()
    arm.drop_next_commit(apply=True)
    seq = c.submit(make_plan(arm.config, clock))
    kinds = [e.kind for e in c.poll()]  # what submit() learnt comes first in the next poll
    assert kinds[:3] == ["error", "connected", "commit_confirmed"]
    assert [w[2] for w in writes_to(arm, "cmd_seq")] == [[seq]]  # written once, never again
    assert c.wait_for(seq, "done").result == ResultCode.OK
    assert arm.executed_seqs() == [seq]


def test_commit_lost_with_the_connection_is_written_again_after_reading_back(arms, clients, clock):
    arm = start_arm(arms, clock)
    c = client_for(clients, arm, clock)
    c.connect()
    arm.drop_next_commit(apply=False)
    seq = c.submit(make_plan(arm.config, clock))
    seq_writes = [w[2] for w in writes_to(arm, "cmd_seq")]
    assert seq_writes == [[seq, -1], [seq]]  # the lost one (marked -1), then the read-back retry
    assert c.wait_for(seq, "done").result == ResultCode.OK
    assert arm.executed_seqs() == [seq]


def test_connection_dropped_mid_pick(arms, clients, clock):
    arm = start_arm(arms, clock)
    c = client_for(clients, arm, clock)
    c.connect()
    seq = c.submit(make_plan(arm.config, clock))
    c.wait_for(seq, "acked")
    clock.advance(0.2)
    arm.drop_connections()
    events = []
    for _ in range(200):
        events += c.poll()
        if any(e.kind == "done" for e in events):
            break
        clock.sleep(0.02)
    kinds = [e.kind for e in events]
    assert kinds.index("disconnected") < kinds.index("connected") < kinds.index("done")
    assert [e.result for e in events if e.kind == "done"] == [ResultCode.OK]
    assert len(writes_to(arm, "cmd_seq")) == 1
    assert arm.executed_seqs() == [seq]


def test_controller_restart_never_reuses_a_sequence_number(arms, clients, clock, tmp_path):
    arm = start_arm(arms, clock)
    state = tmp_path / "state" / "arm.json"
    c1 = client_for(clients, arm, clock, state_file=str(state))
    c1.connect()
    s1 = c1.submit(make_plan(arm.config, clock, tid=1))
    assert SeqStore(state).load() == 1  # persisted before the commit
    c1.wait_for(s1, "acked")
    c1.transport.close()  # the controller dies mid-pick
    c2 = client_for(clients, arm, clock, state_file=str(state))
    st = c2.connect()
    assert st.ack_seq == s1 and st.cmd_seq == s1
    assert not c2.pending  # it does not know about s1 ...
    while arm.snapshot()["done_seq"] != s1:
        c2.poll()
        clock.sleep(0.05)
    s2 = c2.submit(make_plan(arm.config, clock, tid=2))
    assert s2 != s1 and SeqStore(state).load() == 2
    assert c2.wait_for(s2, "done").result == ResultCode.OK
    assert arm.executed_seqs() == [s1, s2]  # ... and s1 ran exactly once
    assert c2.restarts == 0  # the arm finishing what it took before we came is no restart


def test_fresh_controller_without_state_steps_past_the_arms_sequence(arms, clients, clock):
    arm = start_arm(arms, clock)
    c1 = client_for(clients, arm, clock)
    c1.connect()
    s1 = c1.wait_for(c1.submit(make_plan(arm.config, clock)), "done").seq
    c1.close()
    c2 = client_for(clients, arm, clock)  # no state file: counter starts at 0
    c2.connect()
    s2 = c2.submit(make_plan(arm.config, clock, tid=2))
    assert s2 != s1
    c2.wait_for(s2, "done")
    assert arm.executed_seqs() == [s1, s2]


def test_robot_program_restart_does_not_replay_the_last_command(arms, clients, clock):
    arm = start_arm(arms, clock)
    c = client_for(clients, arm, clock)
    c.connect()
    seq = c.wait_for(c.submit(make_plan(arm.config, clock)), "done").seq
    arm.restart_program()
    for _ in range(20):
        c.poll()
        clock.sleep(0.05)
    assert arm.executed_seqs() == [seq]
    s2 = c.submit(make_plan(arm.config, clock, tid=2))  # and the arm works on afterwards
    assert c.wait_for(s2, "done").result == ResultCode.OK
    assert arm.executed_seqs() == [seq, s2]


# ====================================================================== workspace
def test_target_outside_the_workspace_is_never_written(arms, clients, clock):
    arm = start_arm(arms, clock)
    # The controller's own limits are tighter than the arm's: a floor at z=10 mm.
    strict = replace(arm.config, workspace=Box((100.0, -420.0, 10.0), (720.0, 420.0, 400.0), "ws"))
    c = client_for(clients, arm, clock, cfg=strict)
    c.connect()
    before = len(arm.write_log)
    plan = make_plan(arm.config, clock)  # planned for the looser limits: grasp at z=5
    with pytest.raises(
        WorkspaceViolation, match=r"waypoint grasp .* outside the workspace: z=5\.0 \(allowed 10\.\.400\)"
    ):
        c.submit(plan)
    c0 = client_for(clients, arm, clock)  # the arm's own limits
    c0.connect()
    far = make_plan(arm.config, clock)
    far.waypoints[4] = replace(far.waypoints[4], xyz_mm=np.array([5000.0, 0.0, 100.0]))
    with pytest.raises(WorkspaceViolation, match=r"waypoint chute at \(5000\.0, 0\.0, 100\.0\) mm .* x=5000\.0"):
        c0.submit(far)
    boxed = replace(arm.config, keep_out=[Box((200.0, -50.0, 0.0), (260.0, 50.0, 400.0), "chute-guard")])
    c2 = client_for(clients, arm, clock, cfg=boxed)
    c2.connect()
    with pytest.raises(WorkspaceViolation, match="keep-out"):
        c2.submit(make_plan(arm.config, clock))
    for _ in range(5):
        c.poll()
        clock.sleep(0.1)
    allowed = {arm.map.address("ctrl_heartbeat"), arm.map.address("watchdog_ms")}
    assert len(arm.write_log) > before
    assert {w[1] for w in arm.write_log} <= allowed  # nothing but heartbeats and the watchdog
    assert arm.records == []


def test_arm_refuses_a_command_outside_its_own_limits(arms, clients, clock, grader):
    # Defence in depth: the robot checks too (a controller with looser limits than the robot).
    params = SimArmParams.from_config(ArmConfig(), workspace=Box((100.0, -420.0, 10.0), (720.0, 420.0, 400.0)))
    arm = start_arm(arms, clock, grader=grader, params=params)
    c = client_for(clients, arm, clock)
    c.connect()
    seq = c.submit(make_plan(arm.config, clock))
    done = c.wait_for(seq, "done")
    assert done.result == ResultCode.REJECTED
    assert grader.calls == [] and "outside the robot's limits" in arm.records[0].detail


# ====================================================================== watchdogs
def test_stalled_arm_heartbeat_raises_alarm_and_stops_commands(arms, clients, clock):
    arm = start_arm(arms, clock)
    c = client_for(clients, arm, clock)
    c.connect()
    arm.stall_heartbeat()
    events = []
    for _ in range(8):
        clock.sleep(0.1)
        events += c.poll()
    alarms = [e for e in events if e.kind == "alarm"]
    assert len(alarms) == 1 and "heartbeat stalled" in alarms[0].detail
    assert c.state_name == "stalled" and not c.can_accept()
    n_writes = len(arm.write_log)
    with pytest.raises(HeartbeatStalled, match="no new commands"):
        c.submit(make_plan(arm.config, clock))
    assert all(w[1] == arm.map.address("ctrl_heartbeat") for w in arm.write_log[n_writes:])
    arm.stall_heartbeat(False)
    clock.sleep(0.1)
    assert [e.kind for e in c.poll()] == ["alarm_cleared"]
    assert c.wait_for(c.submit(make_plan(arm.config, clock)), "done").result == ResultCode.OK


def test_stalled_controller_heartbeat_stops_the_arm(arms, clients, clock, grader):
    arm = start_arm(arms, clock, grader=grader)
    c = client_for(clients, arm, clock)
    c.connect()
    plan = make_plan(arm.config, clock, x_now=100.0)  # upstream: grip ~1.2 s from now
    seq = c.submit(plan)
    c.wait_for(seq, "acked")
    t_last_beat = max(w[0] for w in writes_to(arm, "ctrl_heartbeat"))
    clock.advance(1.1)  # the controller hangs past watchdog_ms=1000
    st = c.read_status()  # reading is not a heartbeat
    assert (st.state, st.fault_code) == (ArmState.FAULT, FaultCode.CTRL_WATCHDOG)
    assert (st.done_seq, st.result) == (seq, ResultCode.ABORTED)
    rec = arm.records[0]
    assert rec.t_done == pytest.approx(t_last_beat + 1.0)  # stopped exactly at the timeout
    assert rec.t_grip is None and grader.calls == []  # it never reached the uro
    assert rec.t_done < plan.grip_time
    events = c.poll()
    assert {"fault", "done"} <= {e.kind for e in events}
    with pytest.raises(ArmFaultError, match=r"FAULT \(CTRL_WATCHDOG\)"):
        c.submit(make_plan(arm.config, clock))
    r = c.wait_for(c.reset_fault(), "done")
    assert r.result == ResultCode.OK and c.read_status().state == ArmState.IDLE
    # It stopped where it was; back to ready before the next pick (planned from ready).
    assert not np.allclose(c.status.tcp_mm, arm.config.ready_mm, atol=1.0)
    assert c.wait_for(c.move_ready(), "done").result == ResultCode.OK
    assert np.allclose(c.read_status().tcp_mm, arm.config.ready_mm, atol=0.01)
    assert c.wait_for(c.submit(make_plan(arm.config, clock, tid=2)), "done").result == ResultCode.OK


def test_estop_aborts_and_needs_release_then_reset(arms, clients, clock):
    arm = start_arm(arms, clock)
    c = client_for(clients, arm, clock)
    c.connect()
    seq = c.submit(make_plan(arm.config, clock))
    c.wait_for(seq, "acked")
    clock.sleep(0.3)
    arm.estop()
    done = c.wait_for(seq, "done")
    assert done.result == ResultCode.ABORTED and c.state_name == "estop"
    assert c.wait_for(c.reset_fault(), "done").result == ResultCode.REJECTED  # button still pressed
    arm.release_estop()
    assert c.wait_for(c.reset_fault(), "done").result == ResultCode.OK
    assert c.read_status().state == ArmState.IDLE


def test_fault_code_is_reported_and_blocks_picks(arms, clients, clock):
    arm = start_arm(arms, clock)
    c = client_for(clients, arm, clock)
    c.connect()
    arm.inject_fault(FaultCode.GRIPPER)
    ev = c.poll()
    assert [e.detail for e in ev if e.kind == "fault"] == ["arm 'arm': FAULT (GRIPPER)"]
    with pytest.raises(ArmFaultError, match=r"FAULT \(GRIPPER\)") as ei:
        c.submit(make_plan(arm.config, clock))
    assert ei.value.fault_code == FaultCode.GRIPPER


# ====================================================================== errors on the link
def test_modbus_exceptions_are_named(arms, clients, clock):
    arm = start_arm(arms, clock, ArmConfig(profile="ur"))
    c = client_for(clients, arm, clock)
    c.connect()
    arm.exception_replies(6)
    with pytest.raises(
        ModbusExceptionError,
        match=r"Modbus exception 6 \(SERVER DEVICE BUSY\) for function 3 "
        r"at register 128 \(count 18\)",
    ) as ei:
        c.read_status()
    assert (ei.value.code, ei.value.code_name) == (6, "SERVER DEVICE BUSY")
    with pytest.raises(
        ModbusExceptionError, match=r"exception 2 \(ILLEGAL DATA ADDRESS\) for function 3 at register 0"
    ):
        c.transport.read(0, 4)  # UR's map starts at 128
    with pytest.raises(
        ModbusExceptionError, match=r"exception 2 \(ILLEGAL DATA ADDRESS\) for function 16 at register 132"
    ):
        c.transport.write(arm.map.address("ack_seq"), [99])  # status is the arm's to write
    assert arm.ack_seq == 0
    arm.exception_replies(4)
    ev = c.poll()  # never raises, link kept
    assert any(e.kind == "error" and "SERVER DEVICE FAILURE" in e.detail for e in ev)
    assert c.connected and c.read_status().state == ArmState.IDLE


def test_timeouts_give_a_clear_error_and_no_stale_answers(arms, clients):
    clock = SystemClock()
    arm = start_arm(arms, clock)
    c = client_for(clients, arm, clock, timeout_s=0.1)
    c.connect()
    arm.slow_replies(0.3)
    with pytest.raises(
        RobotTimeoutError,
        match=r"arm 'arm' \(tcp 127\.0\.0\.1:\d+ unit 1\): no answer within 0\.1 s "
        r"to read of registers 0\.\.17",
    ):
        c.read_status()
    assert not c.connected  # closed so a late answer is never taken
    ev = c.poll()
    assert [e.kind for e in ev] in (["disconnected"], [])
    arm.slow_replies(0.0)
    time.sleep(0.35)
    ev = c.poll()
    assert "connected" in [e.kind for e in ev]
    st = c.read_status()
    assert st.interface_version == 2 and st.state == ArmState.IDLE


def test_refused_connection_and_back_off(clients):
    clock = VirtualClock()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    cfg = ArmConfig(
        name="left",
        transport=TransportConfig(port=port, timeout_s=0.2, reconnect_min_s=0.2, reconnect_max_s=0.5),
    )
    c = ArmClient(cfg, clock)
    clients.append(c)
    waits = []
    for delay in (0.2, 0.4, 0.5, 0.5):  # doubling, capped; each wait shortened by up to a quarter
        with pytest.raises(
            RobotDisconnectedError, match=rf"arm 'left' \(tcp 127\.0\.0\.1:{port} unit 1\): cannot connect"
        ):
            c.connect()
        wait = c.transport.retry_in()
        assert 0.75 * delay <= wait <= delay
        waits.append(wait)
        with pytest.raises(RobotDisconnectedError, match="back-off"):
            c.connect()  # too soon: not even tried
        clock.advance(wait)
    assert c.transport.attempts == 4
    assert len(set(waits)) == 4  # jittered
    assert c.poll() == []  # never raises in the loop
    assert c.state_name == "disconnected"
    assert c.last_error == "cannot connect (refused or no such port)"


def test_a_server_that_accepts_but_never_answers_is_not_hammered(clients):
    """A TCP connect that works is no success: the back-off is reset only by a completed
    handshake, so a mute server gets an attempt per back-off delay, not one per poll."""
    clock = VirtualClock()
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    port = srv.getsockname()[1]
    cfg = ArmConfig(
        name="mute",
        transport=TransportConfig(port=port, timeout_s=0.05, reconnect_min_s=0.1, reconnect_max_s=5.0),
    )
    c = ArmClient(cfg, clock)
    clients.append(c)
    try:
        for _ in range(300):  # 3 s of polls every 10 ms
            c.poll()
            clock.advance(0.01)
        # 0.1, 0.2, 0.4, 0.8, 1.6 s (each up to a quarter shorter): 5 or 6 attempts in 3 s.
        assert 5 <= c.transport.attempts <= 7
        assert c.state_name == "disconnected" and "no answer within 0.05 s" in c.last_error
    finally:
        srv.close()


# ====================================================================== RTU
def crc16_modbus(data: bytes) -> int:
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def test_rtu_framing_full_handshake(arms, clients, clock):
    arm = start_arm(arms, clock, kind="rtu")
    frames: list[tuple[bool, bytes]] = []
    lock = threading.Lock()

    def trace(sending: bool, data: bytes) -> bytes:
        with lock:
            frames.append((sending, bytes(data)))
        return data

    cfg = replace(arm.config, transport=arm.transport_config(timeout_s=1.0))
    assert cfg.transport.kind == "rtu" and cfg.transport.serial_port.startswith("socket://")
    from scallop.robot.transport import ModbusTransport

    c = ArmClient(cfg, clock, transport=ModbusTransport(cfg.transport, clock, "arm", trace_packet=trace))
    clients.append(c)
    c.connect()
    seq = c.submit(make_plan(arm.config, clock))
    assert c.wait_for(seq, "done", step_s=0.3).result == ResultCode.OK
    sent = [f for s, f in frames if s]
    assert sent, "no frames traced"
    for f in sent:  # RTU: unit, function, data, CRC-16 (low byte first); no MBAP header
        assert f[0] == 1
        assert int.from_bytes(f[-2:], "little") == crc16_modbus(f[:-2])
    commit = bytes([1, 16, 0, 22, 0, 1, 2, seq >> 8, seq & 0xFF])
    assert any(f[:-2] == commit for f in sent)
    block = [f for f in sent if f[1] == 16 and f[2:4] == (24).to_bytes(2, "big")]
    assert len(block) == 1 and block[0][4:6] == (59).to_bytes(2, "big") and block[0][6] == 118
    # Answers arrive in pieces (the trace sees the growing buffer): a whole status answer is
    # unit 1, function 3, 36 data bytes (18 registers), CRC.
    whole = [f for s, f in frames if not s and f[:3] == bytes([1, 3, 36]) and len(f) == 41]
    assert whole and all(int.from_bytes(f[-2:], "little") == crc16_modbus(f[:-2]) for f in whole)
    assert arm.executed_seqs() == [seq]


def test_background_heartbeat_thread_stops_on_close(arms):
    clock = SystemClock()
    arm = start_arm(arms, clock)
    cfg = replace(arm.config, transport=arm.transport_config(), heartbeat_period_s=0.05, arm_heartbeat_timeout_s=0.5)
    c = ArmClient(cfg, clock)
    c.connect()
    c.start_background()
    time.sleep(0.3)
    th = c._bg
    c.close()
    assert th is not None and not th.is_alive()
    beats = writes_to(arm, "ctrl_heartbeat")
    assert len(beats) >= 4
    values = [w[2][0] for w in beats]
    assert values == sorted(values) and len(set(values)) == len(values)


def test_a_slow_arm_reports_late_and_touches_nothing(arms, clients, clock, grader):
    # The robot is slower than the planner believes: it cannot be over the uro in time.
    params = SimArmParams.from_config(ArmConfig(), speed_mm_s=300.0, accel_mm_s2=1500.0)
    arm = start_arm(arms, clock, grader=grader, params=params)
    c = client_for(clients, arm, clock)
    c.connect()
    seq = c.submit(make_plan(arm.config, clock, x_now=700.0, y=-120.0))
    done = c.wait_for(seq, "done")
    assert done.result == ResultCode.LATE
    assert grader.calls == [] and arm.records[0].t_grip is None
    assert "after the descent had to start" in arm.records[0].detail
    assert np.allclose(c.read_status().tcp_mm, arm.config.ready_mm, atol=0.01)


def test_unresolved_commit_is_resolved_by_poll_once_the_link_is_back(arms, clients, clock, monkeypatch):
    arm = start_arm(arms, clock)
    c = client_for(clients, arm, clock)
    c.connect()
    arm.drop_next_commit(apply=True)
    real_connect = c.transport.connect
    calls = {"n": 0}

    def flaky_connect():
        calls["n"] += 1
        if calls["n"] == 1:  # the arm is unreachable right after the drop
            raise RobotDisconnectedError("arm 'arm': cannot connect (test)")
        return real_connect()

    monkeypatch.setattr(c.transport, "connect", flaky_connect)
    plan = make_plan(arm.config, clock)
    with pytest.raises(
        CommitUncertain,
        match=r"commit of seq 1 is uncertain: it will be read back before anything else and never re-sent blindly",
    ):
        c.submit(plan)
    assert c.uncertain_plan is plan and not c.can_accept()
    with pytest.raises(RobotDisconnectedError, match="is not connected"):
        c.submit(make_plan(arm.config, clock, tid=2))
    events = c.poll()
    assert [e.kind for e in events][:3] == ["error", "connected", "commit_confirmed"]
    assert c.uncertain_plan is None
    assert c.wait_for(1, "done").result == ResultCode.OK
    assert [w[2] for w in writes_to(arm, "cmd_seq")] == [[1]]
    assert arm.executed_seqs() == [1]


def test_interface_version_mismatch_is_refused(arms, clients, clock, tmp_path):
    from scallop.robot.errors import ProtocolError
    from scallop.robot.registers import RegisterMap

    src = RegisterMap.load("generic").source
    assert src == "profiles/generic.toml"
    from importlib import resources

    text = resources.files("scallop.robot").joinpath("profiles", "generic.toml").read_text()
    v3 = tmp_path / "generic-v3.toml"
    v3.write_text(text.replace("version = 2", "version = 3", 1))
    arm = start_arm(arms, clock, profile=str(v3))
    c = client_for(clients, arm, clock)  # the controller still speaks version 2
    with pytest.raises(ProtocolError, match=r"reports interface_version=3 but profile 'generic' is version 2"):
        c.connect()
    assert not c.connected  # no half-open link left behind
    # Polled again, the handshake is refused again: an error event of its own (the record has it).
    ev = c.poll()
    assert [e.kind for e in ev] == ["error"] and "interface_version=3" in ev[0].detail and not c.connected


def test_corrupt_state_file_is_named(tmp_path):
    from scallop.robot.errors import RobotConfigError

    bad = tmp_path / "arm.json"
    bad.write_text("{not json")
    with pytest.raises(RobotConfigError, match=r"arm 'left': state file .*arm\.json is unreadable .*sequence counter"):
        ArmClient(ArmConfig(name="left", state_file=str(bad), transport=TransportConfig()))
    store = SeqStore(tmp_path / "sub" / "s.json", "left")
    store.save(41)
    assert SeqStore(tmp_path / "sub" / "s.json").load() == 41
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["s.json"]  # no temp file left


def test_a_status_that_contradicts_itself_gets_no_command(arms, clients, clock):
    """docs/robot-interface.md §3: a fault code belongs to FAULT or ESTOP. An arm reporting
    IDLE or BUSY with one was taken for healthy in an outside try (its fault alarm cleared, a
    pick sent into NOT_READY); now it is a comm error until its status agrees with itself."""
    from scallop.robot.arm import FaultCode

    arm = start_arm(arms, clock)
    c = client_for(clients, arm, clock)
    c.connect()
    c.poll()
    assert c.can_accept() and c.state_name == "idle"
    arm.fault_code = FaultCode.GRIPPER  # IDLE with a gripper fault
    clock.advance(0.05)
    ev = c.poll()
    assert not c.can_accept() and c.state_name == "comm_error"
    assert [e.detail for e in ev if e.kind == "error"] == [
        "arm 'arm' reports IDLE with fault code GRIPPER: a status that contradicts itself; no new picks until it does not"
    ]
    arm.fault_code = FaultCode.NONE
    clock.advance(0.05)
    c.poll()
    assert c.can_accept() and c.state_name == "idle"


def test_no_command_goes_while_the_arms_status_cannot_be_read(arms, clients, clock):
    """A second outside try saw a commit go out 0.7 s into a spell of refused status reads (the
    arm shown as answering with errors only after 0.5 s): its last read must have answered."""
    arm = start_arm(arms, clock)
    c = client_for(clients, arm, clock)
    c.connect()
    c.poll()
    assert c.can_accept()
    arm.exception_replies(6, n=1)  # SERVER DEVICE BUSY to the next request: the status read
    clock.advance(0.05)
    c.poll()
    assert not c.can_accept() and c.state_name != "comm_error"  # not yet an alarm, already no command
    clock.advance(0.05)
    c.poll()
    assert c.can_accept()
