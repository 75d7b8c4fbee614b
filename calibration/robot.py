"""Belt frame → robot frame: a rigid transform from points both sides know.

The robot's tool touches marked points on the belt (board corners, cross marks) that the
camera also sees; each point is known in the belt frame (from the camera, through the belt
calibration) and in the robot frame (the touch). The least-squares rigid transform between
the two sets is the Kabsch / Umeyama solution, computed here in numpy (OpenCV 5 dropped
``calibrateHandEye``). Points that cannot pin a transform down are refused before solving:
fewer than three, two touches on nearly the same spot, all on one line, or all bunched up.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field

import numpy as np

from scallop.calibration.check import Figure, overall
from scallop.calibration.errors import DegenerateGeometryError

MIN_POINTS = 3
RECOMMENDED_POINTS = (4, 6)
MIN_SPACING_MM = 10.0  # two touches closer than this cannot be told apart reliably
MIN_SPREAD_MM = 40.0  # the points must span at least this much (largest extent)
MIN_WIDTH_MM = 10.0  # … and reach at least this far off the line through them
COLLINEAR_RATIO = 0.1  # width / length below this is "on one line"

RMS_LIMITS = (0.5, 1.0)  # mm
MAX_LIMITS = (1.0, 2.0)  # mm, worst point
SCALE_LIMITS = (0.3, 1.0)  # %: belt and robot lengths disagreeing


@dataclass
class RigidTransform:
    """``x_to = R @ x_from + t`` (mm).

    R: (3, 3) rotation, t: (3,) translation.
    """

    R: np.ndarray
    t: np.ndarray

    def __post_init__(self) -> None:
        self.R = np.asarray(self.R, dtype=np.float64).reshape(3, 3)
        self.t = np.asarray(self.t, dtype=np.float64).reshape(3)

    def apply(self, points) -> np.ndarray:
        """(N, 3) → (N, 3)."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        return p @ self.R.T + self.t

    def inverse(self) -> RigidTransform:
        return RigidTransform(self.R.T, -self.R.T @ self.t)

    def matrix(self) -> np.ndarray:
        """(4, 4) homogeneous matrix."""
        m = np.eye(4)
        m[:3, :3], m[:3, 3] = self.R, self.t
        return m

    @classmethod
    def from_matrix(cls, m) -> RigidTransform:
        m = np.asarray(m, dtype=np.float64)
        if m.shape != (4, 4):
            raise ValueError(f"expected a 4x4 matrix, got shape {m.shape}")
        if not np.allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-6) or np.linalg.det(m[:3, :3]) < 0:
            raise ValueError("the 3x3 part is not a rotation")
        return cls(m[:3, :3], m[:3, 3])


def _as3(points, what: str) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] not in (2, 3):
        raise DegenerateGeometryError(f"{what}: expected (N, 2) or (N, 3) points, got shape {p.shape}")
    if p.shape[1] == 2:
        p = np.column_stack([p, np.zeros(len(p))])
    if not np.all(np.isfinite(p)):
        raise DegenerateGeometryError(f"{what}: contains a missing or non-finite coordinate")
    return p


def check_spread(points, what: str = "points") -> None:
    """Refuse points that cannot fix a rigid transform; the message says how to fix it."""
    p = _as3(points, what)
    n = len(p)
    if n < MIN_POINTS:
        raise DegenerateGeometryError(
            f"{what}: {n} point(s) given, at least {MIN_POINTS} are needed "
            f"(recommended {RECOMMENDED_POINTS[0]}–{RECOMMENDED_POINTS[1]}, spread over the working area)"
        )
    d = np.linalg.norm(p[:, None, :] - p[None, :, :], axis=2)
    d[np.diag_indices(n)] = np.inf
    i, j = np.unravel_index(np.argmin(d), d.shape)
    if d[i, j] < MIN_SPACING_MM:
        raise DegenerateGeometryError(
            f"{what}: points {i + 1} and {j + 1} are only {d[i, j]:.1f} mm apart (minimum {MIN_SPACING_MM:g} mm): "
            f"touch distinct marks"
        )
    c = p - p.mean(0)
    _, sv, Vt = np.linalg.svd(c, full_matrices=False)
    along = c @ Vt.T  # coordinates along the principal directions
    length = float(np.ptp(along[:, 0]))
    width = float(np.ptp(along[:, 1]))
    span = float(np.max(d[np.isfinite(d)]))
    if span < MIN_SPREAD_MM:
        raise DegenerateGeometryError(
            f"{what}: all points lie within {span:.1f} mm (minimum span {MIN_SPREAD_MM:g} mm): "
            f"spread them over the area the robot picks in"
        )
    if sv[1] < COLLINEAR_RATIO * sv[0] or width < MIN_WIDTH_MM:
        raise DegenerateGeometryError(
            f"{what}: the points are (nearly) collinear ({width:.1f} mm off a {length:.0f} mm line): "
            f"the rotation about that line is undetermined; add a point well off the line"
        )


def umeyama(src, dst, with_scale: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """Least-squares ``dst ≈ s · R @ src + t`` (Umeyama 1991; Kabsch when ``with_scale`` is
    False). src, dst: (N, 3). Returns (R (3, 3) proper rotation, t (3,), s)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    H = b.T @ a / len(src)  # cross-covariance
    U, S, Vt = np.linalg.svd(H)
    # Guard against a reflection: coplanar points (a board on the belt) allow one.
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1.0
    R = U @ D @ Vt
    s = 1.0
    if with_scale:
        var_s = np.mean(np.sum(a**2, axis=1))
        s = float(np.trace(np.diag(S) @ D) / var_s)
    t = mu_d - s * R @ mu_s
    return R, t, s


@dataclass
class RobotFit:
    """The transform robot ← belt for one arm and how well the touched points agree.

    transform:     robot_from_belt (x_robot = R @ x_belt + t), mm.
    belt_points:   (N, 3) the marks in the belt frame.
    robot_points:  (N, 3) the touches in the robot frame.
    residuals_mm:  (N,) distance between each touch and its mark carried into the robot frame.
    scale:         Umeyama scale robot/belt (1 when both measure lengths alike).
    """

    arm: str
    transform: RigidTransform
    belt_points: np.ndarray
    robot_points: np.ndarray
    residuals_mm: np.ndarray
    scale: float
    when: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def rms_mm(self) -> float:
        return float(np.sqrt(np.mean(self.residuals_mm**2)))

    @property
    def max_mm(self) -> float:
        return float(np.max(self.residuals_mm))

    def figures(self) -> list[Figure]:
        return [
            Figure("RMS residual", self.rms_mm, "mm", *RMS_LIMITS),
            Figure("worst point residual", self.max_mm, "mm", *MAX_LIMITS),
            Figure("belt/robot length disagreement", 100 * abs(self.scale - 1.0), "%", *SCALE_LIMITS),
        ]

    @property
    def verdict(self) -> str:
        return overall(self.figures())

    def to_json(self) -> dict:
        return {
            "arm": self.arm,
            "robot_from_belt": self.transform.matrix().tolist(),
            "residuals_mm": [round(float(r), 4) for r in self.residuals_mm],
            "rms_mm": round(self.rms_mm, 4),
            "max_mm": round(self.max_mm, 4),
            "scale": self.scale,
            "points": len(self.residuals_mm),
            "notes": self.notes,
            "verdict": self.verdict,
            "figures": [f.to_dict() for f in self.figures()],
        }

    def section(self) -> dict:
        return {
            "when": self.when,
            "robot_from_belt": self.transform.matrix().tolist(),
            "belt_points": self.belt_points.tolist(),
            "robot_points": self.robot_points.tolist(),
            "residuals_mm": [float(r) for r in self.residuals_mm],
            "rms_mm": self.rms_mm,
            "max_mm": self.max_mm,
            "scale": self.scale,
            "verdict": self.verdict,
        }


def fit_robot(belt_points, robot_points, arm: str = "arm1") -> RobotFit:
    """Fit robot_from_belt to matching marks (belt mm, (N, 2) on the belt or (N, 3)) and
    touches (robot mm, (N, 3)); refuses degenerate sets with DegenerateGeometryError."""
    b = _as3(belt_points, "belt points")
    r = _as3(robot_points, "robot points")
    if len(b) != len(r):
        raise DegenerateGeometryError(f"{len(b)} belt points but {len(r)} robot touches: they must pair up")
    check_spread(b, "belt points")
    check_spread(r, "robot points")
    R, t, _ = umeyama(b, r)
    _, _, s = umeyama(b, r, with_scale=True)
    tf = RigidTransform(R, t)
    res = np.linalg.norm(tf.apply(b) - r, axis=1)
    notes = []
    if len(res) >= 4:
        # Least squares spreads one bad touch over all points; fitted without it, the bad
        # point stands out clearly.
        loo = np.zeros(len(b))
        for i in range(len(b)):
            keep = np.arange(len(b)) != i
            Ri, ti, _ = umeyama(b[keep], r[keep])
            loo[i] = np.linalg.norm(Ri @ b[i] + ti - r[i])
        worst = int(np.argmax(loo))
        others = float(np.median(np.delete(loo, worst)))
        if loo[worst] > max(3 * others, 1.0):
            notes.append(
                f"point {worst + 1} disagrees with the others by {loo[worst]:.2f} mm (fitted without "
                f"it; the others {others:.2f} mm): re-touch it or check that it pairs with the right mark"
            )
    if abs(s - 1.0) > SCALE_LIMITS[0] / 100:
        notes.append(
            f"robot lengths are {100 * (s - 1):+.2f} % of belt lengths: check the board's printed "
            f"square size and the robot's units"
        )
    if len(res) < RECOMMENDED_POINTS[0]:
        notes.append(
            f"only {len(res)} points: with {RECOMMENDED_POINTS[0]}–{RECOMMENDED_POINTS[1]} the "
            f"residuals also reveal a bad touch"
        )
    return RobotFit(
        arm=arm,
        transform=tf,
        belt_points=b,
        robot_points=r,
        residuals_mm=res,
        scale=s,
        when=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        notes=notes,
    )
