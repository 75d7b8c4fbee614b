"""Acceptance: the whole robot side (planner, scheduler, ArmClient, Modbus on loopback,
simulated arms) against a stand-in world, on a virtual clock.

The stand-in world is test-only: each scallop is a meat disk with the adductor as a disk at
its centre and the uro as a disk touching the adductor; they ride the belt at 300 mm/s.
Ground-truth targets (the uro's centre, the direction away from the adductor) stand in for
vision's detections.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from scallop.robot.belt import ConveyorTracker
from scallop.robot.config import ArmConfig, Pose
from scallop.robot.planning import PickPlanner, PickTarget, SkipReason
from scallop.robot.scheduler import Scheduler
from scallop.sim.arm import run_pick_line

V, MPC = 300.0, 0.1


@dataclass
class Grade:
    result: str


class StandInWorld:
    """Scallops riding the belt; grades grips like the simulator's world does."""

    def __init__(self, speed_mm_s: float = V, mm_per_count: float = MPC, grip_radius_mm: float = 2.0) -> None:
        self.v, self.mpc, self.grip_r = speed_mm_s, mm_per_count, grip_radius_mm
        self.c0 = np.zeros((0, 2))

    def travel(self, t: float) -> float:
        return self.v * t

    def encoder_at(self, t: float) -> int:
        return int(math.floor(self.travel(t) / self.mpc))

    def populate(
        self,
        rng: np.random.Generator,
        rate_per_s: float,
        duration_s: float,
        camera_x: float = 0.0,
        y_half: float = 110.0,
        jitter: float = 0.4,
    ) -> list[tuple[float, PickTarget]]:
        """Scallops crossing the camera line at ``rate_per_s`` on average, each gap drawn
        uniformly within ±``jitter`` of the mean (a singulated but irregular stream)."""
        times, t = [], 0.2
        while t < duration_s:
            times.append(t)
            t += rng.uniform(1 - jitter, 1 + jitter) / rate_per_s
        n = len(times)
        self.R = rng.uniform(20.0, 37.5, n)  # meat 40..75 mm across
        self.add_r = self.R * rng.uniform(0.38, 0.55, n)  # adductor 38..55 % of the diameter
        self.uro_r = rng.uniform(2.5, 5.0, n)  # uro 5..10 mm wide
        ang = rng.uniform(0.0, 2 * np.pi, n)
        self.u = np.stack([np.cos(ang), np.sin(ang)], 1)  # adductor -> uro
        y = rng.uniform(-y_half, y_half, n)
        self.c0 = np.stack([camera_x - self.v * np.asarray(times), y], 1)  # centres at t=0
        self.removed = np.zeros(n, bool)
        out = []
        for k, tk in enumerate(times):
            e = self.encoder_at(tk)
            centre = self.c0[k] + [e * self.mpc, 0.0]
            uro = centre + (self.add_r[k] + self.uro_r[k]) * self.u[k]
            out.append((tk, PickTarget(k, uro, e, self.u[k], z_mm=5.0, confidence=0.99, t_exposure=tk)))
        return out

    def grade_pick(self, xy_B, t, pull_dir_B, grip_radius_mm: float | None = None) -> Grade:
        gr = self.grip_r if grip_radius_mm is None else grip_radius_mm
        if len(self.c0) == 0:
            return Grade("empty")
        c = self.c0 + [self.travel(t), 0.0]
        d = np.linalg.norm(c - xy_B, axis=1)
        k = int(np.argmin(d))
        uro = c[k] + (self.add_r[k] + self.uro_r[k]) * self.u[k]
        if d[k] <= self.add_r[k] + gr:
            return Grade("adductor_hit")
        if not self.removed[k] and np.linalg.norm(uro - xy_B) <= self.uro_r[k]:
            if float(np.dot(pull_dir_B, self.u[k])) > 0.5:
                self.removed[k] = True
                return Grade("uro_removed")
            return Grade("meat_hit")
        if d[k] <= self.R[k]:
            return Grade("meat_hit")
        return Grade("missed") if d[k] <= self.R[k] + 15.0 else Grade("empty")


def two_arms() -> list[ArmConfig]:
    up = ArmConfig(name="up")
    down = ArmConfig(
        name="down", pick_window_x_mm=(1150.0, 1750.0), robot_from_belt=Pose((0.0, 0.0, 90.0), (400.0, -1450.0, 0.0))
    )
    return [up, down]


# ---------------------------------------------------------------- the stand-in itself
def test_stand_in_world_grades_by_geometry():
    w = StandInWorld()
    arr = w.populate(np.random.default_rng(0), 1.0, 3.0)
    t, tg = arr[0]
    later = t + 1.5
    uro = tg.xy_mm + [w.travel(later) - w.travel(t), 0.0]
    centre = w.c0[0] + [w.travel(later), 0.0]
    assert w.grade_pick(centre, later, tg.pull_dir).result == "adductor_hit"
    assert w.grade_pick(uro, later, -tg.pull_dir).result == "meat_hit"  # pulled towards the adductor
    assert w.grade_pick(uro + [0.0, 300.0], later, tg.pull_dir).result == "empty"
    assert w.grade_pick(uro, later, tg.pull_dir).result == "uro_removed"
    assert w.grade_pick(uro, later, tg.pull_dir).result != "uro_removed"  # only once


# ---------------------------------------------------------------- acceptance
def test_one_arm_at_90_percent_of_capacity_removes_nearly_every_uro():
    cfg = ArmConfig(name="solo")
    cap = PickPlanner(cfg).capacity_per_s(V)
    assert 0.5 <= cap <= 1.0 / 0.6  # cycle time within 0.6..2 s
    w = StandInWorld()
    arrivals = w.populate(np.random.default_rng(7), 0.9 * cap, 380.0)
    rep = run_pick_line([cfg], w, arrivals, w.encoder_at, MPC, 380.0, step_s=0.1)
    assert rep.arrivals >= 200
    assert rep.uro_removed / rep.arrivals >= 0.995, rep.as_dict()
    assert rep.grades.get("adductor_hit", 0) == 0
    assert rep.grades.get("meat_hit", 0) == 0
    assert rep.belt_speed_mm_s == pytest.approx(V, rel=1e-6)
    assert not rep.errors


def test_two_arms_at_150_percent_reach_95_percent_of_their_capacity():
    arms = two_arms()
    cap = sum(PickPlanner(a).capacity_per_s(V) for a in arms)
    w = StandInWorld()
    arrivals = w.populate(np.random.default_rng(11), 1.5 * cap, 120.0)
    rep = run_pick_line(arms, w, arrivals, w.encoder_at, MPC, 120.0, step_s=0.1)
    assert rep.capacity_total_per_s == pytest.approx(cap)
    assert rep.picks_per_s >= 0.95 * cap, rep.as_dict()
    assert rep.grades.get("adductor_hit", 0) == 0
    assert rep.uro_removed == rep.picks  # every pick made removed its uro
    # Both arms work; what neither could take is reported, not lost.
    assert min(rep.per_arm.values()) >= 0.4 * rep.picks
    assert rep.picks + sum(rep.skips.values()) == rep.arrivals
    assert set(rep.skips) <= {"no_capacity"}


class AlwaysFreeArm:
    """An arm client stub for scheduler decisions (no sockets): always free, records what it is sent."""

    def __init__(self, cfg):
        self.config, self.name, self.status, self.sent = cfg, cfg.name, None, []

    def poll(self):
        return []

    def can_accept(self):
        return True

    def submit(self, plan):
        self.sent.append(plan)
        return len(self.sent)


def test_upstream_arm_takes_what_it_can_and_the_downstream_arm_the_rest():
    """Scheduler decisions with the arms' clients stubbed (no sockets): EDF within an arm,
    the upstream arm first."""
    from scallop.sim.clock import VirtualClock

    class StubClient:
        def __init__(self, cfg):
            self.config, self.name, self.status = cfg, cfg.name, None
            self.sent: list = []
            self.free = True

        def poll(self):
            return []

        def can_accept(self):
            return self.free

        def submit(self, plan):
            self.sent.append(plan)
            self.free = False
            return len(self.sent)

    clock = VirtualClock()
    tr = ConveyorTracker(MPC)
    tr.update(-0.1, -300)
    tr.update(0.0, 0)
    up, down = (StubClient(c) for c in two_arms())
    sched = Scheduler([down, up], tr, clock)  # given in any order
    assert [l.name for l in sched.lanes] == ["up", "down"]
    targets = [
        PickTarget(1, (100.0, 0.0), 0, (0.0, 1.0)),  # enters the upstream window at 1.2 s
        PickTarget(2, (700.0, 50.0), 0, (0.0, 1.0)),  # inside it, leaves first: EDF picks it
        PickTarget(3, (1040.0, 0.0), 0, (0.0, 1.0)),
    ]  # too late for the upstream arm
    sched.add(targets)
    sched.step()
    assert [p.target.id for p in up.sent] == [2]
    assert [p.target.id for p in down.sent] == [3]  # the upstream arm could not reach it
    assert set(sched.queue) == {1}
    up.free = True
    sched.step()
    assert [p.target.id for p in up.sent] == [2]  # chosen only commit_lead_s before the arm is free
    first = up.sent[0]
    t = first.t_release - 0.2
    clock.advance(t - clock.now())
    tr.update(t, int(round(V * t / MPC)))
    sched.step()
    assert [p.target.id for p in up.sent] == [2, 1]
    second = up.sent[1]
    # Chained: planned from the chute at the first pick's release, not from ready at its end.
    assert second.chained and second.t_start == pytest.approx(first.t_release)
    assert np.allclose(second.start_mm, first.waypoint("chute").xyz_mm)
    assert first.t_release < first.t_end - 0.1
    clock.advance(10.0 - clock.now())
    tr.update(10.0, 30000)
    sched.add([PickTarget(4, (0.0, 300.0), 0, (0.0, 1.0))])  # across the belt: no window holds it
    sched.step()
    assert [s.reason.value for s in sched.skips] == ["outside_window"]


def test_a_pick_chosen_after_the_release_is_planned_from_ready():
    """Too close to the release for the robot to see it there: the next pick starts from
    ready when the current one ends, as an ordinary PICK."""
    from scallop.robot.scheduler import ArmLane

    cfg = ArmConfig(name="a")
    lane = ArmLane(AlwaysFreeArm(cfg))
    tr = ConveyorTracker(MPC)
    tr.update(-0.1, -300)
    tr.update(0.0, 0)
    plan = lane.planner.plan(PickTarget(1, (400.0, 0.0), 0, (0.0, 1.0)), tr, 0.0)
    lane.inflight[1] = plan
    t, pos, chained = lane.free_at(plan.t_release - 0.2, chain_margin_s=0.05)
    assert chained and t == plan.t_release and np.allclose(pos, cfg.chute_mm)
    t, pos, chained = lane.free_at(plan.t_release - 0.01, chain_margin_s=0.05)
    assert not chained and t == pytest.approx(plan.t_end) and np.allclose(pos, cfg.ready_mm)
    with pytest.raises(ValueError, match="chain_margin_s"):
        Scheduler([AlwaysFreeArm(cfg)], tr, None, commit_lead_s=0.1, chain_margin_s=0.2)


def test_an_idle_arm_with_a_long_start_latency_is_still_served():
    """The lead is measured from the earliest start: a start latency above the lead must not
    hold an idle arm back for ever."""
    from dataclasses import replace as dc_replace

    from scallop.robot.config import MotionConfig
    from scallop.sim.clock import VirtualClock

    clock = VirtualClock()
    tr = ConveyorTracker(MPC)
    tr.update(-0.1, -300)
    tr.update(0.0, 0)
    cfg = ArmConfig(name="a", motion=dc_replace(MotionConfig(), start_latency_s=0.5))
    arm = AlwaysFreeArm(cfg)
    sched = Scheduler([arm], tr, clock, commit_lead_s=0.25)
    sched.add([PickTarget(1, (200.0, 0.0), 0, (0.0, 1.0))])
    sched.step()
    assert [p.target.id for p in arm.sent] == [1] and arm.sent[0].t_start == pytest.approx(0.5)


def test_no_pick_is_sent_while_the_belt_position_is_a_guess():
    """Encoder samples come with the frames: when they stop (camera stalled) the belt may
    have stopped unseen, so nothing new is sent; targets that leave meanwhile say why."""
    from scallop.sim.clock import VirtualClock

    clock = VirtualClock()
    tr = ConveyorTracker(MPC)
    for k in range(5):  # a frame every 0.6 s until t=0
        t = -2.4 + 0.6 * k
        tr.update(t, int(round(V * t / MPC)))
    arm = AlwaysFreeArm(ArmConfig(name="a"))
    sched = Scheduler([arm], tr, clock)
    # 4 intervals of 0.6 s without a sample: still fresh; past that, held.
    assert tr.fresh(2.4) and not tr.fresh(2.41)
    clock.advance(2.5)
    sched.add([PickTarget(1, (300.0, 0.0), int(round(V * 2.5 / MPC)), (0.0, 1.0))])  # in the window at 3.0 s
    sched.step()
    assert arm.sent == [] and 1 in sched.queue
    clock.advance(3.0)  # x = 300 + 1650: past the window
    sched.step()
    assert [(s.target.id, s.reason) for s in sched.skips] == [(1, SkipReason.POSITION_UNCERTAIN)]
    # Frames again: a new target is sent at once.
    tr.update(clock.now(), int(round(V * clock.now() / MPC)))
    sched.add([PickTarget(2, (300.0, 0.0), int(round(V * clock.now() / MPC)), (0.0, 1.0))])
    sched.step()
    assert [p.target.id for p in arm.sent] == [2]
