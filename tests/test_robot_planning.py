"""Arm configuration, conveyor tracking, intercepts and pick trajectories (no sockets)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scallop.robot.config import (
    ArmConfig,
    Box,
    MotionConfig,
    Pose,
    TransportConfig,
    trapezoid_time,
)
from scallop.robot.errors import RobotConfigError, WorkspaceViolation
from scallop.robot.planning import (
    WAYPOINTS,
    ConveyorTracker,
    PickPlan,
    PickPlanner,
    PickTarget,
    Skip,
    SkipReason,
    Workspace,
)

V = 300.0  # belt speed, mm/s
MPC = 0.1  # mm per encoder count


def tracker_at(t_now: float, v: float = V) -> ConveyorTracker:
    tr = ConveyorTracker(MPC)
    for k in range(5):
        t = t_now - 0.4 + 0.1 * k
        tr.update(t, int(round(v * t / MPC)))
    return tr


def target(x=0.0, y=20.0, enc=0, pull=(0.0, 1.0), tid=1, conf=0.95, z=5.0) -> PickTarget:
    return PickTarget(tid, (x, y), enc, pull, z_mm=z, confidence=conf)


# ---------------------------------------------------------------- config
def test_config_defaults_are_valid_and_consistent():
    cfg = ArmConfig()
    assert cfg.workspace.contains(np.array(cfg.ready_mm)) and cfg.workspace.contains(np.array(cfg.chute_mm))
    # The window centre on the belt centreline is 400 mm in front of the base.
    p = cfg.robot_from_belt.apply(np.array([750.0, 0.0, 0.0]))
    assert np.allclose(p, [400.0, 0.0, 0.0])
    assert np.allclose(cfg.belt_velocity_robot(V), [0.0, V, 0.0], atol=1e-9)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: MotionConfig(speed_mm_s=9000), r"motion\.speed_mm_s=9000 is out of range: allowed 1\.\.5000"),
        (lambda: MotionConfig(pull_angle_deg=120), r"motion\.pull_angle_deg=120 is out of range: allowed 0\.\.90"),
        (lambda: TransportConfig(port=70000), r"transport\.port=70000 is out of range: allowed 1\.\.65535"),
        (lambda: TransportConfig(kind="rtu"), r"transport\.serial_port is empty"),
        (
            lambda: TransportConfig(kind="rtu", serial_port="/dev/x", baudrate=12345),
            r"baudrate=12345 is not a standard rate",
        ),
        (lambda: TransportConfig(kind="udp"), r"transport\.kind='udp' is not allowed"),
        (lambda: TransportConfig(parity="X"), r"transport\.parity='X' is not allowed"),
        (lambda: Box((0, 0, 0), (10, -1, 5), "cam"), r"box 'cam': min_mm\[1\]=0 must be below max_mm\[1\]=-1"),
        (
            lambda: ArmConfig(name="left", watchdog_ms=50),
            r"arm 'left': watchdog_ms=50 is out of range: allowed 100\.\.65535",
        ),
        (lambda: ArmConfig(watchdog_ms=200), r"watchdog_ms=200 is too short for heartbeat_period_s=0\.1"),
        (
            lambda: ArmConfig(pick_window_x_mm=(900, 500)),
            r"pick_window_x_mm=\(900\.0, 500\.0\): start must be below end",
        ),
        (lambda: ArmConfig(chute_mm=(900, 0, 100)), r"chute_mm=\(900\.0, 0\.0, 100\.0\) lies outside the workspace"),
        (
            lambda: ArmConfig(keep_out=[Box((250, -50, 50), (350, 50, 150), "camera")]),
            r"ready_mm=\(300\.0, 0\.0, 100\.0\) lies inside keep-out box camera",
        ),
        (lambda: Pose(rotation_deg=(0, 0)), r"expected 3 numbers|expected 3 finite numbers"),
        (lambda: ArmConfig(name=" "), r"arm name is empty"),
    ],
)
def test_config_errors_name_the_field(make, message):
    with pytest.raises(RobotConfigError, match=message):
        make()


def test_config_error_is_a_value_error_for_the_line_loader():
    with pytest.raises(ValueError):
        MotionConfig(accel_mm_s2=-1)


def test_pose_round_trip_and_rotation_order():
    pose = Pose(rotation_deg=(10.0, -20.0, 135.0), translation_mm=(1.0, 2.0, 3.0))
    R = pose.R
    assert np.allclose(R @ R.T, np.eye(3)) and math.isclose(np.linalg.det(R), 1.0)
    p = np.array([[100.0, -50.0, 7.0], [0.0, 0.0, 0.0]])
    assert np.allclose(pose.inverse_apply(pose.apply(p)), p)
    assert np.allclose(pose.matrix @ np.r_[p[0], 1.0], np.r_[pose.apply(p[0]), 1.0])
    yaw = Pose(rotation_deg=(0, 0, 90))
    assert np.allclose(yaw.apply_vector([1.0, 0.0, 0.0]), [0.0, 1.0, 0.0], atol=1e-12)


@pytest.mark.parametrize("rpy", [(10.0, -20.0, 135.0), (0.0, 0.0, 90.0), (170.0, 5.0, -60.0), (0.0, 90.0, 30.0)])
def test_pose_from_matrix_round_trip(rpy):
    pose = Pose(rotation_deg=rpy, translation_mm=(5.0, -6.0, 7.0))
    back = Pose.from_matrix(pose.matrix)
    assert np.allclose(back.matrix, pose.matrix, atol=1e-9)
    assert np.allclose(Pose.from_matrix(pose.matrix[:3]).matrix, pose.matrix, atol=1e-9)
    with pytest.raises(RobotConfigError, match="not a rotation matrix"):
        Pose.from_matrix(np.diag([1.0, 1.0, -1.0, 1.0]))
    with pytest.raises(RobotConfigError, match="expected a 4x4 or 3x4 matrix"):
        Pose.from_matrix(np.eye(3))


def test_trapezoid_time_triangle_and_cruise():
    assert trapezoid_time(0, 1000, 6000) == 0.0
    # Short move never reaches top speed: t = 2 sqrt(d / a).
    assert trapezoid_time(60, 1000, 6000) == pytest.approx(2 * math.sqrt(0.01))
    # Long move: d / v + v / a.
    assert trapezoid_time(500, 1000, 5000) == pytest.approx(0.5 + 0.2)
    # Continuous at the boundary d = v^2 / a.
    assert trapezoid_time(200, 1000, 5000) == pytest.approx(0.4)


# ---------------------------------------------------------------- tracker
def test_tracker_speed_and_positions():
    tr = tracker_at(2.0)
    assert tr.speed_mm_s == pytest.approx(V, rel=1e-3)
    tg = target(x=10.0, enc=int(round(V * 1.0 / MPC)))  # seen at t=1.0
    assert tr.position_at(tg, 1.0) == pytest.approx([10.0, 20.0], abs=0.05)
    assert tr.position_at(tg, 3.0) == pytest.approx([610.0, 20.0], abs=0.2)
    assert tr.time_at_x(tg, 460.0) == pytest.approx(2.5, abs=1e-3)


def test_tracker_follows_speed_change_and_rejects_time_going_back():
    tr = ConveyorTracker(MPC, history_s=0.5)
    c = 0
    for k in range(30):  # 300 mm/s, then 150 mm/s
        t = 0.05 * k
        tr.update(t, c)
        c += int((V if t < 0.7 else V / 2) * 0.05 / MPC)
    assert tr.speed_mm_s == pytest.approx(V / 2, rel=0.02)
    with pytest.raises(ValueError, match="older than the last one"):
        tr.update(0.0, 0)
    with pytest.raises(ValueError, match="no encoder samples"):
        ConveyorTracker(MPC).count_at(1.0)
    with pytest.raises(ValueError, match="mm_per_count"):
        ConveyorTracker(0.0)


def test_target_normalises_pull_and_validates():
    t = PickTarget(3, (1.0, 2.0), 10, (3.0, 4.0))
    assert np.allclose(t.pull_dir, [0.6, 0.8])
    assert t.xy_mm.shape == (2,)
    assert np.all(np.isnan(PickTarget(3, (1.0, 2.0), 10, (0.0, 0.0)).pull_dir))
    with pytest.raises(ValueError, match="xy_mm"):
        PickTarget(3, (1.0, np.nan), 10, (1.0, 0.0))


# ---------------------------------------------------------------- planner
def test_plan_meets_the_uro_and_pulls_away_from_the_adductor():
    cfg = ArmConfig()
    planner = PickPlanner(cfg)
    tr = tracker_at(0.0)
    tg = target(x=200.0, y=30.0, enc=0, pull=(1.0, 1.0))
    plan = planner.plan(tg, tr, t_free=0.0)
    assert isinstance(plan, PickPlan)
    assert [w.name for w in plan.waypoints] == list(WAYPOINTS)
    pose, m = cfg.robot_from_belt, cfg.motion
    # At grip time the gripper is exactly where the uro is, in the window.
    g = plan.waypoint("grasp")
    assert g.t_arrive == plan.grip_time
    uro_B = np.r_[tr.position_at(tg, plan.grip_time), 5.0]
    assert np.allclose(pose.inverse_apply(g.xyz_mm), uro_B, atol=1e-9)
    assert cfg.pick_window_x_mm[0] <= uro_B[0] <= cfg.pick_window_x_mm[1]
    # The descent follows the belt: approach is above where the uro is when the descent starts.
    a = plan.waypoint("approach")
    t_desc = m.approach_height_mm / m.descend_speed_mm_s
    above = np.r_[tr.position_at(tg, plan.grip_time - t_desc), 5.0 + m.approach_height_mm]
    assert np.allclose(pose.inverse_apply(a.xyz_mm), above, atol=1e-9)
    assert g.speed_mm_s * t_desc == pytest.approx(np.linalg.norm(g.xyz_mm - a.xyz_mm))
    # The gripper rides with the belt while closing.
    ge = plan.waypoint("grip_end")
    assert np.allclose(ge.xyz_mm - g.xyz_mm, plan.belt_velocity_R * m.gripper_close_s)
    # Relative to the scallop, the pull is pull_distance along pull_dir, lifting at pull_angle.
    pe = plan.waypoint("pull_end")
    t_pull = m.pull_distance_mm / m.pull_speed_mm_s
    rel_B = pose.inverse_apply_vector(pe.xyz_mm - ge.xyz_mm - plan.belt_velocity_R * t_pull)
    assert np.linalg.norm(rel_B) == pytest.approx(m.pull_distance_mm)
    assert np.degrees(np.arctan2(rel_B[2], np.hypot(*rel_B[:2]))) == pytest.approx(m.pull_angle_deg)
    assert np.allclose(rel_B[:2] / np.hypot(*rel_B[:2]), [math.sqrt(0.5), math.sqrt(0.5)])
    assert np.allclose(plan.waypoint("chute").xyz_mm, cfg.chute_mm)
    assert np.allclose(plan.waypoint("ready").xyz_mm, cfg.ready_mm)
    times = [w.t_arrive for w in plan.waypoints]
    assert times == sorted(times) and plan.t_end == times[-1]


def test_intercept_accounts_for_travel_time():
    cfg = ArmConfig()
    planner = PickPlanner(cfg)
    tr = tracker_at(0.0)
    m = cfg.motion
    # A target already inside the window: grip as early as the arm can get there.
    tg = target(x=600.0, y=-100.0)
    plan = planner.plan(tg, tr, t_free=0.0)
    a = plan.waypoint("approach").xyz_mm
    travel = trapezoid_time(np.linalg.norm(a - np.asarray(cfg.ready_mm)), m.speed_mm_s, m.accel_mm_s2)
    assert plan.grip_time == pytest.approx(travel + m.arrival_margin_s + planner.descend_s, abs=1e-5)
    assert plan.wait_s == pytest.approx(m.arrival_margin_s, abs=1e-5)
    # A target still upstream: grip when it enters the window, the arm waits for it.
    up = target(x=-400.0, y=0.0)
    plan2 = planner.plan(up, tr, t_free=0.0)
    assert plan2.grip_time == pytest.approx((cfg.pick_window_x_mm[0] + 400.0) / V, abs=1e-3)
    assert plan2.wait_s > 1.0
    # The deadline (EDF key): the latest grip start whose grip has closed when the target
    # leaves the window.
    assert plan2.deadline == pytest.approx((cfg.pick_window_x_mm[1] + 400.0) / V - m.gripper_close_s, abs=1e-3)


def test_no_grip_that_would_close_outside_the_window():
    # Where the arm, free at t=0, meets a target already in the window:
    tr = tracker_at(0.0)
    tg = target(x=700.0, y=0.0)
    plan = PickPlanner(ArmConfig()).plan(tg, tr, t_free=0.0)
    m = ArmConfig().motion
    x_grip = float(tr.position_at(tg, plan.grip_time)[0])
    x_closed = x_grip + V * m.gripper_close_s  # the uro when the gripper has closed
    # A window ending just after the closed grip takes it; one ending between the grip's
    # start and its close does not: the gripper would still be closing outside the window.
    inside = PickPlanner(ArmConfig(pick_window_x_mm=(450.0, x_closed + 0.5))).plan(tg, tr, t_free=0.0)
    assert isinstance(inside, PickPlan) and inside.grip_time == pytest.approx(plan.grip_time)
    outside = PickPlanner(ArmConfig(pick_window_x_mm=(450.0, x_closed - 0.5))).plan(tg, tr, t_free=0.0)
    assert isinstance(outside, Skip) and outside.reason == SkipReason.TOO_LATE
    assert "close" in outside.detail


@pytest.mark.parametrize(
    "tg,t_free,reason",
    [
        (target(x=1020.0), 0.0, SkipReason.TOO_LATE),  # near the window's end: cannot get there in time
        (target(x=1040.0), 0.0, SkipReason.PASSED),  # a grip starting now would close past the end
        (target(x=1100.0), 0.0, SkipReason.PASSED),
        (target(x=600.0), 5.0, SkipReason.PASSED),  # arm free only after it has gone
        (target(y=200.0), 0.0, SkipReason.OUTSIDE_WINDOW),
        (target(conf=0.2), 0.0, SkipReason.LOW_CONFIDENCE),
        (target(pull=(0.0, 0.0)), 0.0, SkipReason.NO_PULL_DIRECTION),
    ],
)
def test_skip_reasons(tg, t_free, reason):
    res = PickPlanner(ArmConfig()).plan(tg, tracker_at(0.0), t_free)
    assert isinstance(res, Skip) and res.reason == reason, res
    assert res.detail


def test_keep_out_and_workspace_skip_with_the_waypoint_named():
    # A keep-out box over the downstream half of the belt, above the belt surface.
    cfg = ArmConfig(keep_out=[Box((330.0, 50.0, 0.0), (520.0, 400.0, 300.0), "camera-2")])
    planner = PickPlanner(cfg)
    res = planner.plan(target(x=700.0, y=0.0), tracker_at(0.0), 0.0)
    assert isinstance(res, Skip) and res.reason == SkipReason.WORKSPACE
    assert "keep-out box camera-2" in res.detail or "crosses a keep-out box" in res.detail
    # A low workspace floor above the grasp height: the grasp waypoint is named.
    cfg2 = ArmConfig(workspace=Box((100.0, -420.0, 10.0), (720.0, 420.0, 400.0)))
    res2 = PickPlanner(cfg2).plan(target(x=600.0), tracker_at(0.0), 0.0)
    assert isinstance(res2, Skip) and res2.reason == SkipReason.WORKSPACE
    assert "waypoint grasp" in res2.detail and "z=5.0 (allowed 10..400)" in res2.detail


def test_workspace_checks_segments_between_waypoints():
    ws = Workspace(Box((0, 0, 0), (100, 100, 100)), [Box((40, 40, 0), (60, 60, 100), "post")])
    ws.check_path([("a", np.array([10.0, 10.0, 10.0])), ("b", np.array([10.0, 90.0, 10.0]))])
    with pytest.raises(WorkspaceViolation, match=r"segment a -> b crosses a keep-out box at \(41\.3, 41\.3, 10\.0\)"):
        ws.check_path([("a", np.array([10.0, 10.0, 10.0])), ("b", np.array([90.0, 90.0, 10.0]))])
    with pytest.raises(
        WorkspaceViolation,
        match=r"waypoint b at \(10\.0, 10\.0, 120\.0\) mm is outside the workspace: "
        r"z=120\.0 \(allowed 0\.\.100\)",
    ):
        ws.check_path([("a", np.array([10.0, 10.0, 10.0])), ("b", np.array([10.0, 10.0, 120.0]))])
    with pytest.raises(WorkspaceViolation, match="inside keep-out box post"):
        ws.check_point("c", np.array([50.0, 50.0, 50.0]))


def test_capacity_is_the_inverse_mean_cycle_and_cycle_in_range():
    planner = PickPlanner(ArmConfig())
    c = planner.nominal_cycle_s(V)
    assert 0.6 <= c <= 2.0
    assert planner.capacity_per_s(V) == pytest.approx(1.0 / c)
    # Picks at the window's far corner take longer than at its centre.
    assert planner.cycle_time(1050.0, -140.0, V) > planner.cycle_time(750.0, 0.0, V)
    # Capacity is what a busy arm sustains: release to release, chained from the chute. A lone
    # pick from ready back to ready costs the chute -> ready -> approach detour on top.
    alone = planner.nominal_cycle_s(V, chained=False)
    assert c == pytest.approx(1.267, abs=0.005) and alone == pytest.approx(1.483, abs=0.005)
    for x, y in ((450.0, 0.0), (750.0, -170.0), (1050.0, 170.0)):
        assert 0.1 < planner.cycle_time(x, y, V, chained=False) - planner.cycle_time(x, y, V) < 0.35


def test_chained_plan_starts_at_the_chute_and_checks_the_path_from_ready_too():
    planner = PickPlanner(ArmConfig())
    tr = tracker_at(0.0)
    t = target(x=600.0, y=0.0)
    alone = planner.plan(t, tr, 0.0)
    chained = planner.plan(t, tr, 0.0, chained=True)
    assert isinstance(alone, PickPlan) and isinstance(chained, PickPlan)
    assert chained.chained and not alone.chained
    assert np.allclose(chained.start_mm, ArmConfig().chute_mm) and chained.t_start == 0.0
    # From the chute the approach is farther than from ready: the grip comes a little later,
    # but the release is what a chained successor starts from, well before the return to ready.
    assert chained.grip_time >= alone.grip_time
    assert chained.t_release == pytest.approx(chained.waypoint("chute").t_arrive + ArmConfig().motion.gripper_open_s)
    assert chained.t_release < chained.t_end - 0.2
    # A keep-out box across the chute -> approach segment: an arm taking the chained command
    # at the release would cross it, so only the chained plan is refused.
    ready, chute = np.asarray(ArmConfig().ready_mm), np.asarray(ArmConfig().chute_mm)
    approach = chained.waypoint("approach").xyz_mm
    mid = (chute + approach) / 2
    p1 = PickPlanner(ArmConfig(keep_out=[Box(tuple(mid - 4.0), tuple(mid + 4.0), "bracket")]))
    assert isinstance(p1.plan(t, tr, 0.0), PickPlan)
    res1 = p1.plan(t, tr, 0.0, chained=True)
    assert isinstance(res1, Skip) and "segment start -> approach crosses a keep-out box" in res1.detail
    # Whatever the start, the approach <-> ready segment is checked: the robot takes a chained
    # command committed after the release from ready, and a LATE pick goes back that way.
    mid = (ready + approach) / 2
    box = Box(tuple(mid - 4.0), tuple(mid + 4.0), "bracket")
    p2 = PickPlanner(ArmConfig(keep_out=[box]))
    res = p2.plan(t, tr, 0.0, start_mm=chute)
    assert isinstance(res, Skip) and "segment ready -> approach crosses a keep-out box" in res.detail
    res = p2.plan(t, tr, 0.0, chained=True)
    assert isinstance(res, Skip) and res.reason == SkipReason.WORKSPACE
    assert "segment ready -> approach crosses a keep-out box" in res.detail


def test_the_client_checks_the_other_starts_of_a_chained_plan_again():
    """The arm client's own last check, on exactly what is written: a chained plan made without
    a keep-out box the client knows of is refused before anything is sent."""
    from scallop.robot.arm import ArmClient
    from scallop.robot.clock import SystemClock

    plan = PickPlanner(ArmConfig()).plan(target(x=600.0, y=0.0), tracker_at(0.0), 0.0, chained=True)
    mid = (np.asarray(ArmConfig().chute_mm) + plan.waypoint("approach").xyz_mm) / 2
    offline = TransportConfig()  # never connected: the check runs before anything is sent
    client = ArmClient(
        ArmConfig(keep_out=[Box(tuple(mid - 4.0), tuple(mid + 4.0), "bracket")], transport=offline), SystemClock()
    )
    with pytest.raises(WorkspaceViolation, match="segment chute -> approach crosses a keep-out box"):
        client.check_plan(plan)
    ArmClient(ArmConfig(transport=offline), SystemClock()).check_plan(plan)  # without the box: fine


def test_command_fields_cover_the_command_block():
    from scallop.robot.arm import COMMAND_FIELDS

    plan = PickPlanner(ArmConfig()).plan(target(x=600.0), tracker_at(0.0), 0.0)
    fields = plan.command_fields()
    assert set(fields) | {"cmd_type", "grip_time_ms"} == set(COMMAND_FIELDS)
    assert fields["grip_end_speed"] == pytest.approx(V)
    assert fields["target_id"] == 1
