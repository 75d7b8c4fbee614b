"""From a target on the belt to a pick trajectory in the robot's base frame.

* :class:`PickTarget` — what vision (or the simulator's ground truth) hands over: a grasp
  point in the belt frame at the exposure's encoder count, and the direction away from the
  adductor.
* :class:`PickPlanner` — the intercept (when the arm, leaving its ready position or the
  chute at a given time, can meet the uro inside its pick window) and the trajectory:
  approach above the grasp point, descend while following the belt, grip while following
  the belt, pull away from the adductor while lifting, carry to the chute, release, return
  to ready. Every waypoint and every segment between them is checked against the workspace
  box and the keep-out boxes before a plan is returned: a plan that exists is safe to send.
  A *chained* plan starts at the previous pick's release: the arm goes from the chute
  straight to the approach instead of stopping at ready (interface v2, ``PICK_CHAINED``).
* :class:`Skip` — a target the arm will not pick, with a :class:`SkipReason` (recorded, and
  diverted for manual handling downstream).

Times are seconds on the controller's clock; the arm's own clock appears only in
:mod:`scallop.robot.arm`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from scallop.errors import DataError
from scallop.robot.belt import ConveyorTracker
from scallop.robot.config import ArmConfig, Box, trapezoid_time
from scallop.robot.errors import WorkspaceViolation

WAYPOINTS = ("approach", "grasp", "grip_end", "pull_end", "chute", "ready")


class SkipReason(StrEnum):
    LOW_CONFIDENCE = "low_confidence"  # detection confidence under the arm's minimum
    NO_PULL_DIRECTION = "no_pull_direction"  # vision could not tell where the adductor is
    OUTSIDE_WINDOW = "outside_window"  # its line across the belt misses the pick window
    PASSED = "passed_window"  # already downstream of the pick window
    TOO_LATE = "too_late"  # the arm cannot reach it before it leaves the window
    WORKSPACE = "workspace"  # the trajectory leaves the workspace or enters a keep-out
    NO_CAPACITY = "no_capacity"  # every arm was busy until it left all windows
    POSITION_UNCERTAIN = "position_uncertain"  # no recent encoder sample: where the belt is is a guess
    ARM_UNAVAILABLE = "arm_unavailable"  # disconnected, faulted, heartbeat stalled
    ARM_LATE = "arm_late"  # sent, but the arm reported it could not meet the grip time
    ARM_REJECTED = "arm_rejected"  # sent, but the arm refused the parameters
    ARM_ABORTED = "arm_aborted"  # sent, but stopped by a fault, e-stop or watchdog
    NOT_RECORDED = "not_recorded"  # not sent: the production record could not hold it first


@dataclass(frozen=True)
class PickTarget:
    """A grasp point on the belt.

    id:         the controller's id of the scallop (track id), carried to the arm.
    xy_mm:      (2,) grasp point in the belt frame at the exposure.
    encoder:    encoder count latched at that exposure.
    pull_dir:   (2,) unit vector in the belt frame pointing away from the adductor
                (normalised here; NaN when unknown).
    z_mm:       grasp height above the belt surface.
    confidence: 0..1.
    t_exposure: controller time of the exposure (informational).
    """

    id: int
    xy_mm: np.ndarray
    encoder: int
    pull_dir: np.ndarray
    z_mm: float = 0.0
    confidence: float = 1.0
    t_exposure: float = float("nan")

    def __post_init__(self) -> None:
        xy = np.asarray(self.xy_mm, dtype=np.float64).reshape(-1)
        if xy.shape != (2,) or not np.all(np.isfinite(xy)):
            raise DataError(f"target {self.id}: xy_mm={self.xy_mm!r} must be 2 finite numbers")
        d = np.asarray(self.pull_dir, dtype=np.float64).reshape(-1)
        if d.shape != (2,):
            raise DataError(f"target {self.id}: pull_dir={self.pull_dir!r} must be 2 numbers")
        n = float(np.hypot(*d)) if np.all(np.isfinite(d)) else float("nan")
        d = d / n if n > 1e-9 else np.array([np.nan, np.nan])
        object.__setattr__(self, "xy_mm", xy)
        object.__setattr__(self, "pull_dir", d)
        object.__setattr__(self, "encoder", int(self.encoder))
        object.__setattr__(self, "z_mm", float(self.z_mm))
        object.__setattr__(self, "confidence", float(self.confidence))


@dataclass(frozen=True)
class Skip:
    target: PickTarget
    reason: SkipReason
    detail: str = ""
    arm: str = ""


@dataclass(frozen=True)
class Waypoint:
    """name: one of WAYPOINTS. xyz_mm: (3,) robot base frame. speed_mm_s: tool speed of the
    move that ends here. t_arrive: planned arrival (controller clock)."""

    name: str
    xyz_mm: np.ndarray
    speed_mm_s: float
    t_arrive: float


@dataclass
class PickPlan:
    """A checked trajectory for one target on one arm.

    waypoints:   the six WAYPOINTS in order, robot base frame.
    grip_time:   controller time at which the gripper is at ``grasp`` and starts closing.
    t_start:     when the arm is assumed free at ``start_mm``; t_end: back at ready (unless
                 the next pick is chained, which starts at ``t_release`` from the chute).
    belt_velocity_R: (3,) belt surface velocity in the robot frame, mm/s.
    grasp_B:     (3,) grasp point in the belt frame at grip_time.
    pull_dir_B:  (2,) the target's pull direction (belt frame).
    deadline:    the latest grip start whose grip closes before the target leaves this
                 arm's pick window (EDF key).
    chained:     planned to start at the previous pick's release (``start_mm`` is the chute);
                 the segment from ready to the approach is checked too, since an arm that
                 takes the command after it has left the chute starts from there.
    """

    target: PickTarget
    arm: str
    waypoints: list[Waypoint]
    grip_time: float
    t_start: float
    t_end: float
    start_mm: np.ndarray
    belt_velocity_R: np.ndarray
    grasp_B: np.ndarray
    pull_dir_B: np.ndarray
    deadline: float
    wait_s: float = 0.0  # planned idle time at the approach point
    chained: bool = False
    t_release: float = math.nan  # gripper open over the chute: a chained next pick starts here

    def paths(self, from_start: bool = True) -> list[list[tuple[str, np.ndarray]]]:
        """Every way the robot may travel for this command, as polylines for
        :meth:`Workspace.check_path`: the waypoints in order (from ``start_mm`` with
        ``from_start``); approach <-> ready, which a LATE pick returns along and a chained
        command taken after the release starts from; chute -> approach for a chained plan."""
        approach = self.waypoint("approach").xyz_mm
        out = [
            ([("start", self.start_mm)] if from_start else []) + [(w.name, w.xyz_mm) for w in self.waypoints],
            [("ready", self.waypoint("ready").xyz_mm), ("approach", approach)],
        ]
        if self.chained:
            out.append([("chute", self.waypoint("chute").xyz_mm), ("approach", approach)])
        return out

    def waypoint(self, name: str) -> Waypoint:
        for w in self.waypoints:
            if w.name == name:
                return w
        raise KeyError(name)

    @property
    def duration_s(self) -> float:
        return self.t_end - self.t_start

    def command_fields(self) -> dict[str, float]:
        """Register values of the command block except ``grip_time_ms`` and ``cmd_type``
        (the arm client adds those: the first needs the arm's clock)."""
        out: dict[str, float] = {"target_id": self.target.id % 0x100000000}
        for axis, v in zip("xyz", self.belt_velocity_R):
            out[f"belt_v{axis}"] = float(v)
        for w in self.waypoints:
            for axis, v in zip("xyz", w.xyz_mm):
                out[f"{w.name}_{axis}"] = float(v)
            out[f"{w.name}_speed"] = float(max(1, min(65535, round(w.speed_mm_s))))
        return out


class Workspace:
    """The box the tool may move in and the boxes it must never enter (robot base frame)."""

    def __init__(self, box: Box, keep_out: list[Box] | tuple[Box, ...] = (), step_mm: float = 5.0) -> None:
        self.box = box
        self.keep_out = list(keep_out)
        self.step_mm = float(step_mm)

    def check_point(self, name: str, p: np.ndarray) -> None:
        p = np.asarray(p, dtype=np.float64)
        if not np.all(np.isfinite(p)):
            raise WorkspaceViolation(f"waypoint {name} is not finite: {p}", name, p)
        if not self.box.contains(p):
            axes = [
                f"{a}={v:.1f} (allowed {lo:g}..{hi:g})"
                for a, v, lo, hi in zip("xyz", p, self.box.min_mm, self.box.max_mm)
                if not lo <= v <= hi
            ]
            raise WorkspaceViolation(
                f"waypoint {name} at {_fmt(p)} mm is outside the workspace: {', '.join(axes)}", name, p
            )
        for k, box in enumerate(self.keep_out):
            if box.contains(p):
                raise WorkspaceViolation(
                    f"waypoint {name} at {_fmt(p)} mm is inside keep-out box "
                    f"{box.name or k} {box.min_mm}..{box.max_mm}",
                    name,
                    p,
                )

    def check_path(self, points: list[tuple[str, np.ndarray]]) -> None:
        """Every point and the straight segments between consecutive points (sampled every
        ``step_mm``). Raises :class:`WorkspaceViolation` naming the first offender."""
        for name, p in points:
            self.check_point(name, p)
        for (n0, a), (n1, b) in zip(points, points[1:]):
            a, b = np.asarray(a, float), np.asarray(b, float)
            n = max(2, int(math.ceil(np.linalg.norm(b - a) / self.step_mm)) + 1)
            s = np.linspace(0.0, 1.0, n)[:, None]
            pts = a + s * (b - a)
            inside = self.box.contains(pts)
            bad = ~inside
            for box in self.keep_out:
                bad |= box.contains(pts)
            if bad.any():
                q = pts[int(np.argmax(bad))]
                what = "leaves the workspace" if not inside.all() else "crosses a keep-out box"
                raise WorkspaceViolation(f"segment {n0} -> {n1} {what} at {_fmt(q)} mm", f"{n0}->{n1}", q)


def _fmt(p: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.1f}" for v in p) + ")"


class PickPlanner:
    """Intercepts and trajectories for one arm (its config: pose, window, motion, workspace)."""

    def __init__(self, config: ArmConfig) -> None:
        self.config = config
        self.pose = config.robot_from_belt
        self.motion = config.motion
        self.workspace = Workspace(config.workspace, config.keep_out)
        self.ready = np.asarray(config.ready_mm, dtype=np.float64)
        self.chute = np.asarray(config.chute_mm, dtype=np.float64)
        self.up_R = self.pose.apply_vector(np.array([0.0, 0.0, 1.0]))

    # ------------------------------------------------------------------ timing pieces
    @property
    def descend_s(self) -> float:
        return self.motion.approach_height_mm / self.motion.descend_speed_mm_s

    @property
    def pull_s(self) -> float:
        return self.motion.pull_distance_mm / self.motion.pull_speed_mm_s

    def _grasp_B(self, xy: np.ndarray, target: PickTarget) -> np.ndarray:
        return np.array([xy[0], xy[1], target.z_mm + self.motion.grip_z_offset_mm])

    def _approach_R(self, grasp_R: np.ndarray, v_R: np.ndarray) -> np.ndarray:
        return grasp_R - v_R * self.descend_s + self.up_R * self.motion.approach_height_mm

    def pull_vector_B(self, pull_dir: np.ndarray) -> np.ndarray:
        d, a = self.motion.pull_distance_mm, math.radians(self.motion.pull_angle_deg)
        return np.array([pull_dir[0] * d * math.cos(a), pull_dir[1] * d * math.cos(a), d * math.sin(a)])

    # ------------------------------------------------------------------ planning
    def plan(
        self,
        target: PickTarget,
        tracker: ConveyorTracker,
        t_free: float,
        start_mm: np.ndarray | None = None,
        chained: bool = False,
    ) -> PickPlan | Skip:
        """Plan ``target`` for an arm that is free at ``t_free`` at ``start_mm`` (default: ready).

        ``chained``: the arm starts at the chute when the previous pick releases (``t_free`` is
        that release, ``start_mm`` defaults to the chute). The path from ready to the approach
        is checked as well: the robot runs the command from ready when it was not yet
        committed at the release (it then ends LATE if the grip time cannot be met)."""
        cfg, m = self.config, self.motion
        name = cfg.name
        if target.confidence < cfg.min_confidence:
            return Skip(
                target,
                SkipReason.LOW_CONFIDENCE,
                f"confidence {target.confidence:.2f} < {cfg.min_confidence:.2f}",
                name,
            )
        if not np.all(np.isfinite(target.pull_dir)):
            return Skip(target, SkipReason.NO_PULL_DIRECTION, "pull direction unknown", name)
        y = float(target.xy_mm[1])
        (x_lo, x_hi), (y_lo, y_hi) = cfg.pick_window_x_mm, cfg.pick_window_y_mm
        if not y_lo <= y <= y_hi:
            return Skip(target, SkipReason.OUTSIDE_WINDOW, f"y={y:.1f} mm outside {y_lo:g}..{y_hi:g}", name)
        v = tracker.speed_mm_s
        t_enter, t_leave = tracker.time_at_x(target, x_lo), tracker.time_at_x(target, x_hi)
        if v < 0:
            t_enter, t_leave = t_leave, t_enter
        # The gripper closes while riding with the belt: the grip must be complete, not just
        # begun, before the uro leaves the window.
        t_leave -= m.gripper_close_s
        default_start = self.chute if chained else self.ready
        start = default_start if start_mm is None else np.asarray(start_mm, dtype=np.float64)
        if t_leave <= t_free:
            return Skip(
                target,
                SkipReason.PASSED,
                f"leaves the window at t={t_leave:.3f} (grip closed), arm free at {t_free:.3f}",
                name,
            )
        v_R = self.pose.apply_vector(np.array([v, 0.0, 0.0]))

        def approach_at(tg: float) -> np.ndarray:
            g_R = self.pose.apply(self._grasp_B(tracker.position_at(target, tg), target))
            return self._approach_R(g_R, v_R)

        def earliest(tg: float) -> float:
            d = float(np.linalg.norm(approach_at(tg) - start))
            return (
                t_free
                + trapezoid_time(d, m.speed_mm_s, m.accel_mm_s2)
                + m.settle_s
                + m.arrival_margin_s
                + self.descend_s
            )

        tg = max(t_enter, earliest(t_free))
        for _ in range(30):
            nxt = max(t_enter, earliest(tg))
            if abs(nxt - tg) < 1e-6:
                tg = max(tg, nxt)
                break
            tg = nxt
        else:
            tg = max(tg, earliest(tg)) + 1e-3
        if earliest(tg) > tg + 1e-6:  # belt faster than the arm can follow: no fixed point
            return Skip(target, SkipReason.TOO_LATE, "the arm cannot catch up with the belt", name)
        if tg > t_leave:
            return Skip(
                target,
                SkipReason.TOO_LATE,
                f"earliest grip at t={tg:.3f} but it would close after the uro leaves the window "
                f"(latest start t={t_leave:.3f})",
                name,
            )

        xy = tracker.position_at(target, tg)
        grasp_B = self._grasp_B(xy, target)
        grasp = self.pose.apply(grasp_B)
        approach = self._approach_R(grasp, v_R)
        t_close, t_pull = m.gripper_close_s, self.pull_s
        grip_end = grasp + v_R * t_close
        pull_end = grip_end + self.pose.apply_vector(self.pull_vector_B(target.pull_dir)) + v_R * t_pull
        t_app = t_free + trapezoid_time(float(np.linalg.norm(approach - start)), m.speed_mm_s, m.accel_mm_s2)
        t_g = tg + t_close
        t_p = t_g + t_pull
        # Every free move ends at rest and costs settle_s before the robot program goes on.
        t_c = (
            t_p + trapezoid_time(float(np.linalg.norm(self.chute - pull_end)), m.speed_mm_s, m.accel_mm_s2) + m.settle_s
        )
        t_r = (
            t_c
            + m.gripper_open_s
            + trapezoid_time(float(np.linalg.norm(self.ready - self.chute)), m.speed_mm_s, m.accel_mm_s2)
            + m.settle_s
        )
        speed_belt = float(np.linalg.norm(v_R))
        wps = [
            Waypoint("approach", approach, m.speed_mm_s, t_app),
            Waypoint("grasp", grasp, float(np.linalg.norm(grasp - approach)) / self.descend_s, tg),
            Waypoint("grip_end", grip_end, speed_belt, t_g),
            Waypoint("pull_end", pull_end, float(np.linalg.norm(pull_end - grip_end)) / t_pull, t_p),
            Waypoint("chute", self.chute.copy(), m.speed_mm_s, t_c),
            Waypoint("ready", self.ready.copy(), m.speed_mm_s, t_r),
        ]
        plan = PickPlan(
            target,
            name,
            wps,
            tg,
            t_free,
            t_r,
            start,
            v_R,
            grasp_B,
            target.pull_dir.copy(),
            deadline=t_leave,
            wait_s=max(0.0, tg - self.descend_s - t_app - m.settle_s),
            chained=chained,
            t_release=t_c + m.gripper_open_s,
        )
        try:
            for path in plan.paths():
                self.workspace.check_path(path)
        except WorkspaceViolation as e:
            return Skip(target, SkipReason.WORKSPACE, str(e), name)
        return plan

    # ------------------------------------------------------------------ capacity
    def cycle_time(self, x_mm: float, y_mm: float, speed_mm_s: float, z_mm: float = 0.0, chained: bool = True) -> float:
        """Motion time of one pick at belt point (x, y), with no waiting, no margin and no start
        latency: what the arm's mechanics allow. ``chained`` (the default): from the previous
        release at the chute to this one, the cycle of an arm that is kept busy; otherwise
        from ready back to ready, one pick on its own."""
        m = self.motion
        v_R = self.pose.apply_vector(np.array([speed_mm_s, 0.0, 0.0]))
        grasp = self.pose.apply(np.array([x_mm, y_mm, z_mm + m.grip_z_offset_mm]))
        approach = self._approach_R(grasp, v_R)
        # A representative pull: across the belt, away from the arm's side, costs the mean carry.
        pull_end = (
            grasp
            + v_R * (m.gripper_close_s + self.pull_s)
            + self.up_R * (m.pull_distance_mm * math.sin(math.radians(m.pull_angle_deg)))
        )
        start = self.chute if chained else self.ready
        t = (
            trapezoid_time(float(np.linalg.norm(approach - start)), m.speed_mm_s, m.accel_mm_s2)
            + self.descend_s
            + m.gripper_close_s
            + self.pull_s
            + trapezoid_time(float(np.linalg.norm(self.chute - pull_end)), m.speed_mm_s, m.accel_mm_s2)
            + m.gripper_open_s
            + 2 * m.settle_s
        )
        if not chained:
            t += (
                trapezoid_time(float(np.linalg.norm(self.ready - self.chute)), m.speed_mm_s, m.accel_mm_s2) + m.settle_s
            )
        return t

    def nominal_cycle_s(self, belt_speed_mm_s: float, n: int = 9, chained: bool = True) -> float:
        """Mean :meth:`cycle_time` over an n×n grid covering the pick window."""
        (x0, x1), (y0, y1) = self.config.pick_window_x_mm, self.config.pick_window_y_mm
        xs, ys = np.linspace(x0, x1, n), np.linspace(y0, y1, n)
        return float(np.mean([self.cycle_time(x, y, belt_speed_mm_s, chained=chained) for x in xs for y in ys]))

    def capacity_per_s(self, belt_speed_mm_s: float) -> float:
        """Picks per second this arm sustains when kept busy: 1 / the mean chained cycle over
        the pick window (:meth:`nominal_cycle_s`)."""
        return 1.0 / self.nominal_cycle_s(belt_speed_mm_s)
