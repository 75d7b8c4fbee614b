"""Configuration of one arm: validated dataclasses, one per concern.

Each dataclass checks its own ranges in ``__post_init__`` and raises
:class:`~scallop.robot.errors.RobotConfigError` (a ``ValueError``) whose message names the field,
e.g. ``motion.speed_mm_s=9000 is out of range: allowed 1..5000``. The types are plain
(numbers, strings, tuples, nested dataclasses, lists of dataclasses) so the line's TOML loader
can build them; numpy views (``Pose.R``, ``Box.lo``) are derived.

Frames: the belt frame B (x along travel, y across, z up, belt surface z = 0, millimetres)
and the robot base frame R of each arm. ``robot_from_belt`` maps B to R: ``p_R = R @ p_B + t``.
The pick window, the targets and the belt speed live in B; waypoints, the workspace,
keep-out boxes, the chute and the ready position live in R.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Literal

import numpy as np

from scallop.errors import check_number, check_vector
from scallop.robot.errors import RobotConfigError


def _range(name: str, value: float, lo: float, hi: float) -> None:
    check_number(name, value, lo, hi, error=RobotConfigError)


def _vec(name: str, value, n: int = 3) -> tuple[float, ...]:
    return check_vector(name, value, n, error=RobotConfigError)


@dataclass
class TransportConfig:
    """How to reach the arm's Modbus server.

    kind "tcp": ``host``/``port``. kind "rtu": ``serial_port`` is a device (``/dev/ttyUSB0``)
    or any pyserial URL (``socket://127.0.0.1:5020`` for RTU framing over a socket).
    """

    kind: Literal["tcp", "rtu"] = "tcp"
    host: str = "127.0.0.1"
    port: int = 502
    serial_port: str = ""
    baudrate: int = 115200
    parity: Literal["N", "E", "O"] = "N"
    stopbits: int = 1
    device_id: int = 1
    timeout_s: float = 0.5
    reconnect_min_s: float = 0.1
    reconnect_max_s: float = 5.0

    def __post_init__(self) -> None:
        if self.kind not in ("tcp", "rtu"):
            raise RobotConfigError(f"transport.kind={self.kind!r} is not allowed: choose 'tcp' or 'rtu'")
        if self.kind == "tcp":
            if not self.host:
                raise RobotConfigError("transport.host is empty: give the arm's IP address or name")
            _range("transport.port", self.port, 1, 65535)
        else:
            if not self.serial_port:
                raise RobotConfigError(
                    "transport.serial_port is empty: give a device (/dev/ttyUSB0) or "
                    "a pyserial URL (socket://host:port)"
                )
            if self.baudrate not in (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600):
                raise RobotConfigError(
                    f"transport.baudrate={self.baudrate} is not a standard rate: use e.g. 19200, 115200"
                )
        if self.parity not in ("N", "E", "O"):
            raise RobotConfigError(f"transport.parity={self.parity!r} is not allowed: choose 'N', 'E' or 'O'")
        if self.stopbits not in (1, 2):
            raise RobotConfigError(f"transport.stopbits={self.stopbits} is not allowed: choose 1 or 2")
        _range("transport.device_id", self.device_id, 0, 255)
        _range("transport.timeout_s", self.timeout_s, 0.01, 30)
        _range("transport.reconnect_min_s", self.reconnect_min_s, 0.0, 60)
        _range("transport.reconnect_max_s", self.reconnect_max_s, self.reconnect_min_s, 600)

    def describe(self) -> str:
        if self.kind == "tcp":
            return f"tcp {self.host}:{self.port} unit {self.device_id}"
        return f"rtu {self.serial_port} {self.baudrate} {self.parity}{self.stopbits} unit {self.device_id}"


@dataclass
class Pose:
    """A rigid transform given as roll/pitch/yaw in degrees (``R = Rz(yaw) @ Ry(pitch) @ Rx(roll)``)
    and a translation in mm."""

    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    translation_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        self.rotation_deg = _vec("robot_from_belt.rotation_deg", self.rotation_deg)
        self.translation_mm = _vec("robot_from_belt.translation_mm", self.translation_mm)
        for i, a in enumerate(self.rotation_deg):
            _range(f"robot_from_belt.rotation_deg[{i}]", a, -360, 360)

    @classmethod
    def from_matrix(cls, T: np.ndarray) -> Pose:
        """From a (4, 4) homogeneous transform or a (3, 4) [R | t] (e.g. a calibration's
        result); refuses a matrix whose rotation part is not a rotation."""
        m = np.asarray(T, dtype=np.float64)
        if m.shape not in ((4, 4), (3, 4)):
            raise RobotConfigError(f"robot_from_belt: expected a 4x4 or 3x4 matrix, got shape {m.shape}")
        R, t = m[:3, :3], m[:3, 3]
        if not np.allclose(R @ R.T, np.eye(3), atol=1e-6) or np.linalg.det(R) < 0:
            raise RobotConfigError("robot_from_belt: the rotation part is not a rotation matrix")
        pitch = math.asin(max(-1.0, min(1.0, -R[2, 0])))
        if abs(R[2, 0]) < 1 - 1e-9:
            roll, yaw = math.atan2(R[2, 1], R[2, 2]), math.atan2(R[1, 0], R[0, 0])
        else:  # gimbal lock: only roll - yaw (or roll + yaw) is defined; put it all in yaw
            roll, yaw = 0.0, math.atan2(-R[0, 1], R[1, 1])
        return cls(tuple(math.degrees(a) for a in (roll, pitch, yaw)), tuple(float(v) for v in t))

    @property
    def R(self) -> np.ndarray:
        """(3, 3) rotation."""
        r, p, y = np.deg2rad(self.rotation_deg)
        cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
        Rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
        Ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
        Rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
        return Rz @ Ry @ Rx

    @property
    def t(self) -> np.ndarray:
        """(3,) translation."""
        return np.asarray(self.translation_mm, dtype=np.float64)

    @property
    def matrix(self) -> np.ndarray:
        """(4, 4) homogeneous transform."""
        T = np.eye(4)
        T[:3, :3] = self.R
        T[:3, 3] = self.t
        return T

    def apply(self, p: np.ndarray) -> np.ndarray:
        """Points (..., 3) from the source frame to the target frame."""
        return np.asarray(p, dtype=np.float64) @ self.R.T + self.t

    def apply_vector(self, v: np.ndarray) -> np.ndarray:
        """Directions (..., 3): rotation only."""
        return np.asarray(v, dtype=np.float64) @ self.R.T

    def inverse_apply(self, p: np.ndarray) -> np.ndarray:
        return (np.asarray(p, dtype=np.float64) - self.t) @ self.R

    def inverse_apply_vector(self, v: np.ndarray) -> np.ndarray:
        return np.asarray(v, dtype=np.float64) @ self.R


@dataclass
class Box:
    """An axis-aligned box in the robot base frame, mm."""

    min_mm: tuple[float, float, float]
    max_mm: tuple[float, float, float]
    name: str = ""

    def __post_init__(self) -> None:
        label = f"box {self.name!r}" if self.name else "box"
        self.min_mm = _vec(f"{label}.min_mm", self.min_mm)
        self.max_mm = _vec(f"{label}.max_mm", self.max_mm)
        for i, (lo, hi) in enumerate(zip(self.min_mm, self.max_mm)):
            if not lo < hi:
                raise RobotConfigError(f"{label}: min_mm[{i}]={lo:g} must be below max_mm[{i}]={hi:g}")

    @property
    def lo(self) -> np.ndarray:
        return np.asarray(self.min_mm)

    @property
    def hi(self) -> np.ndarray:
        return np.asarray(self.max_mm)

    def contains(self, p: np.ndarray) -> np.ndarray:
        """Bool (...,) for points (..., 3); the boundary counts as inside."""
        p = np.asarray(p, dtype=np.float64)
        return np.all((p >= self.lo) & (p <= self.hi), axis=-1)


# Motion settings the robot program fixes: each arm's profile carries them ([motion] in
# robot/profiles/*.toml), so an arm running the reference program is planned as it moves.
PROFILE_MOTION_KEYS = (
    "speed_mm_s",
    "accel_mm_s2",
    "gripper_close_s",
    "gripper_open_s",
    "settle_s",
    "start_latency_s",
)


@dataclass
class MotionConfig:
    """How the arm moves, as the planner models it (match the robot program's settings).

    The keys in :data:`PROFILE_MOTION_KEYS` are the robot program's: unset (None) here, they
    take the arm's profile's ``[motion]`` values when the :class:`ArmConfig` is built; the
    others are the pick's own geometry and margins."""

    speed_mm_s: float | None = None  # free moves: approach, carry to the chute, return
    accel_mm_s2: float | None = None
    descend_speed_mm_s: float = 400.0  # vertical component of the descent onto the uro
    approach_height_mm: float = 30.0  # approach point above the grasp point
    pull_distance_mm: float = 25.0
    pull_angle_deg: float = 30.0  # lift angle of the pull above the belt plane
    pull_speed_mm_s: float = 250.0
    gripper_close_s: float | None = None
    gripper_open_s: float | None = None
    settle_s: float | None = None  # pause after each free move ending at rest (approach, chute, ready)
    grip_z_offset_mm: float = 0.0  # added to the target's z to get the grasp height
    start_latency_s: float | None = None  # commit -> arm starts moving (robot poll period + link)
    arrival_margin_s: float = 0.03  # plan to wait at least this long at the approach point

    def __post_init__(self) -> None:
        for name, lo, hi in (
            ("speed_mm_s", 1, 5000),
            ("accel_mm_s2", 10, 100000),
            ("descend_speed_mm_s", 1, 2000),
            ("approach_height_mm", 1, 300),
            ("pull_distance_mm", 1, 200),
            ("pull_angle_deg", 0, 90),
            ("pull_speed_mm_s", 1, 2000),
            ("gripper_close_s", 0.0, 2.0),
            ("gripper_open_s", 0.0, 2.0),
            ("settle_s", 0.0, 1.0),
            ("grip_z_offset_mm", -50, 50),
            ("start_latency_s", 0.0, 1.0),
            ("arrival_margin_s", 0.0, 1.0),
        ):
            value = getattr(self, name)
            if value is not None or name not in PROFILE_MOTION_KEYS:
                _range(f"motion.{name}", value, lo, hi)

    def with_profile(self, values: dict[str, float], profile: str) -> MotionConfig:
        """The unset keys taken from a profile's ``[motion]`` values (checked like any other)."""
        unknown = set(values) - set(PROFILE_MOTION_KEYS)
        if unknown:
            raise RobotConfigError(
                f"profile {profile!r}: unknown [motion] key(s) {', '.join(sorted(unknown))}; "
                f"allowed: {', '.join(PROFILE_MOTION_KEYS)}"
            )
        filled = {}
        for k in PROFILE_MOTION_KEYS:
            if getattr(self, k) is None:
                if k not in values:
                    raise RobotConfigError(
                        f"motion.{k} is not set and profile {profile!r} gives no [motion] {k}: "
                        "set it in [arms.motion] or in the profile"
                    )
                filled[k] = values[k]
        return replace(self, **filled) if filled else self

    def move_time(self, distance_mm: float, speed_mm_s: float | None = None) -> float:
        """Point-to-point time with a trapezoidal speed profile (start and end at rest)."""
        return trapezoid_time(distance_mm, speed_mm_s or self.speed_mm_s, self.accel_mm_s2)


def trapezoid_time(d: float, v: float, a: float) -> float:
    """Time to travel ``d`` mm from rest to rest with top speed ``v`` and acceleration ``a``."""
    d = abs(float(d))
    if d <= 0:
        return 0.0
    if d >= v * v / a:
        return d / v + v / a
    return 2.0 * math.sqrt(d / a)


def _profile_motion(profile: str) -> dict[str, float]:
    from scallop.robot.registers import RegisterMap

    if profile.endswith(".toml") or "/" in profile or "\\" in profile:
        return dict(RegisterMap.load(profile).motion)  # a file: read as it is now
    return _builtin_motion(profile)


@lru_cache(maxsize=8)
def _builtin_motion(name: str) -> dict[str, float]:
    from scallop.robot.registers import RegisterMap

    return dict(RegisterMap.load(name).motion)


def _default_pose() -> Pose:
    # Robot base beside the belt at belt (750, 400, 0), facing it: belt +x is robot +y and
    # belt +y is robot -x, so the window centre lies 400 mm in front of the base.
    return Pose(rotation_deg=(0.0, 0.0, 90.0), translation_mm=(400.0, -750.0, 0.0))


@dataclass
class ArmConfig:
    """One arm along the belt: how to reach it, where it is, what it may do."""

    name: str = "arm"
    profile: str = "generic"  # built-in profile name or path to a .toml
    # How to reach the arm. None: not given — the simulator then runs a simulated arm in its
    # place; a line with a real camera refuses an arm without one.
    transport: TransportConfig | None = None
    state_file: str = ""  # persisted command sequence ("" = memory only)
    heartbeat_period_s: float = 0.1  # controller -> arm heartbeat
    arm_heartbeat_timeout_s: float = 0.5  # arm heartbeat unchanged this long -> stalled
    watchdog_ms: int = 1000  # written to the arm: its controller-heartbeat timeout
    robot_from_belt: Pose = field(default_factory=_default_pose)
    pick_window_x_mm: tuple[float, float] = (450.0, 1050.0)  # along the belt, belt frame
    pick_window_y_mm: tuple[float, float] = (-170.0, 170.0)  # across the belt, belt frame
    workspace: Box = field(default_factory=lambda: Box((100.0, -420.0, -20.0), (720.0, 420.0, 400.0), "workspace"))
    keep_out: list[Box] = field(default_factory=list)
    motion: MotionConfig = field(default_factory=MotionConfig)
    chute_mm: tuple[float, float, float] = (180.0, 0.0, 100.0)  # release point above the chute, robot frame
    ready_mm: tuple[float, float, float] = (300.0, 0.0, 100.0)  # waiting position, robot frame
    min_confidence: float = 0.5

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise RobotConfigError("arm name is empty")
        if not isinstance(self.profile, str) or not self.profile:
            raise RobotConfigError(f"arm {self.name!r}: profile is empty: use 'generic', 'ur' or a .toml path")
        p = f"arm {self.name!r}: "
        try:
            self.motion = self.motion.with_profile(_profile_motion(self.profile), self.profile)
            _range("heartbeat_period_s", self.heartbeat_period_s, 0.01, 5.0)
            _range("arm_heartbeat_timeout_s", self.arm_heartbeat_timeout_s, 2 * self.heartbeat_period_s, 30.0)
            _range("watchdog_ms", self.watchdog_ms, 100, 65535)
            if self.watchdog_ms / 1000.0 < 3 * self.heartbeat_period_s:
                raise RobotConfigError(
                    f"watchdog_ms={self.watchdog_ms} is too short for heartbeat_period_s={self.heartbeat_period_s:g}: "
                    f"allowed >= {3000 * self.heartbeat_period_s:g}"
                )
            self.pick_window_x_mm = _vec("pick_window_x_mm", self.pick_window_x_mm, 2)
            self.pick_window_y_mm = _vec("pick_window_y_mm", self.pick_window_y_mm, 2)
            if not self.pick_window_x_mm[0] < self.pick_window_x_mm[1]:
                raise RobotConfigError(f"pick_window_x_mm={self.pick_window_x_mm}: start must be below end")
            if not self.pick_window_y_mm[0] < self.pick_window_y_mm[1]:
                raise RobotConfigError(f"pick_window_y_mm={self.pick_window_y_mm}: start must be below end")
            self.chute_mm = _vec("chute_mm", self.chute_mm)
            self.ready_mm = _vec("ready_mm", self.ready_mm)
            _range("min_confidence", self.min_confidence, 0.0, 1.0)
            for name, pt in (("chute_mm", self.chute_mm), ("ready_mm", self.ready_mm)):
                if not self.workspace.contains(np.asarray(pt)):
                    raise RobotConfigError(
                        f"{name}={pt} lies outside the workspace box {self.workspace.min_mm}..{self.workspace.max_mm}"
                    )
                for box in self.keep_out:
                    if box.contains(np.asarray(pt)):
                        raise RobotConfigError(f"{name}={pt} lies inside keep-out box {box.name or box.min_mm}")
        except RobotConfigError as e:
            raise RobotConfigError(p + str(e)) from None

    def belt_velocity_robot(self, speed_mm_s: float) -> np.ndarray:
        """(3,) belt surface velocity in the robot base frame for a belt speed along +x of B."""
        return self.robot_from_belt.apply_vector(np.array([speed_mm_s, 0.0, 0.0]))
