"""The belt encoder: counts per millimetre and the direction of travel.

Two ways to measure it, both ending in the same straight-line fit of belt position against
encoder count:

* **track** — a board (a small ChArUco board makes a good marker) rides the belt through
  the view; in each frame its position on the belt comes from the belt calibration and its
  encoder count from the frame's latch (:func:`encoder_from_track`).
* **touches** — a robot touches one mark on the belt at two (or more) encoder positions,
  the belt moved forward in between; the touches are carried into the belt frame
  (:func:`encoder_from_touches`).

Observations are given in time order, so the fit also tells which way the counts run when
the belt moves forward (``count_sign``) and in which direction the belt moves in the belt
frame (``travel_dir``; (1, 0) once the belt frame has been aligned with it).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field

import numpy as np

from scallop.calibration.boards import BoardSpec, detect, parse_board
from scallop.calibration.camera_model import CameraModel
from scallop.calibration.check import Figure, overall
from scallop.calibration.errors import BoardNotFoundError, DegenerateGeometryError

RESIDUAL_LIMITS = (0.3, 1.0)  # mm RMS off the fitted straight travel
TRAVEL_LIMITS = (250.0, 100.0)  # mm of travel covered: longer pins the scale better
SCALE_STD_LIMITS = (0.05, 0.2)  # % one standard deviation of counts/mm
MIN_TRAVEL_MM = 20.0


@dataclass
class EncoderResult:
    """Encoder scale and travel direction.

    counts_per_mm: encoder counts per mm of belt travel (> 0).
    count_sign:    +1 when counts rise as the belt moves forward, -1 when they fall.
    travel_dir:    (2,) unit vector: where the belt carries things, in the belt frame.
    residuals_mm:  (N,) each observation's distance from the fitted straight travel.
    travel_mm:     belt travel covered by the observations.
    scale_std_pct: one standard deviation of counts_per_mm, % (from the fit's scatter, or
                   from the assumed touch accuracy when only two touches were given).
    """

    counts_per_mm: float
    count_sign: int
    travel_dir: np.ndarray
    residuals_mm: np.ndarray
    travel_mm: float
    scale_std_pct: float
    method: str
    when: str = ""
    skipped: list[str] = field(default_factory=list)
    points_mm: np.ndarray | None = None  # (N, 2) the observations, belt frame (for the picture)

    @property
    def angle_deg(self) -> float:
        """Angle of the travel from belt +x (how far the belt board was turned)."""
        return float(np.degrees(np.arctan2(self.travel_dir[1], self.travel_dir[0])))

    @property
    def residual_rms_mm(self) -> float:
        return float(np.sqrt(np.mean(self.residuals_mm**2)))

    def shift_mm(self, delta_counts) -> np.ndarray:
        """Belt displacement (N, 2) mm for encoder count differences (N,)."""
        dc = np.atleast_1d(np.asarray(delta_counts, dtype=np.float64))
        return (dc * self.count_sign / self.counts_per_mm)[:, None] * self.travel_dir[None, :]

    def figures(self) -> list[Figure]:
        figs = [
            Figure("travel covered", self.travel_mm, "mm", *TRAVEL_LIMITS, higher_is_better=True),
            Figure("counts/mm std dev", self.scale_std_pct, "%", *SCALE_STD_LIMITS),
        ]
        if len(self.residuals_mm) > 2:
            figs.insert(0, Figure("RMS residual off straight travel", self.residual_rms_mm, "mm", *RESIDUAL_LIMITS))
        return figs

    @property
    def verdict(self) -> str:
        return overall(self.figures())

    def to_json(self) -> dict:
        return {
            "counts_per_mm": self.counts_per_mm,
            "count_sign": self.count_sign,
            "travel_dir": [float(v) for v in self.travel_dir],
            "travel_angle_deg": round(self.angle_deg, 4),
            "residual_rms_mm": round(self.residual_rms_mm, 4),
            "residuals_mm": [round(float(r), 4) for r in self.residuals_mm],
            "travel_mm": round(self.travel_mm, 2),
            "scale_std_pct": round(self.scale_std_pct, 5),
            "observations": len(self.residuals_mm),
            "method": self.method,
            "skipped": self.skipped,
            "verdict": self.verdict,
            "figures": [f.to_dict() for f in self.figures()],
        }

    def section(self) -> dict:
        return {
            "when": self.when,
            "method": self.method,
            "counts_per_mm": self.counts_per_mm,
            "count_sign": self.count_sign,
            "travel_dir": [float(v) for v in self.travel_dir],
            "measured_angle_deg": self.angle_deg,
            "residual_rms_mm": self.residual_rms_mm,
            "residuals_mm": [float(r) for r in self.residuals_mm],
            "travel_mm": self.travel_mm,
            "scale_std_pct": self.scale_std_pct,
            "verdict": self.verdict,
        }


def fit_encoder(counts, xy_mm, *, method: str = "track", point_sigma_mm: float = 0.2) -> EncoderResult:
    """Fit ``xy = a + counts · v`` to observations in time order.

    counts: (N,) encoder counts; xy_mm: (N, 2) belt positions of the same mark.
    point_sigma_mm: the accuracy assumed for each position when only two are given (the
    scatter cannot be measured then).
    """
    c = np.asarray(counts, dtype=np.float64).ravel()
    xy = np.asarray(xy_mm, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] < 2 or len(xy) != len(c):
        raise DegenerateGeometryError(f"{len(c)} counts but positions of shape {xy.shape}: they must pair up")
    xy = xy[:, :2]
    if len(c) < 2:
        raise DegenerateGeometryError(
            f"{len(c)} observation(s): at least 2 (encoder count, position) pairs are needed, more are better"
        )
    if np.ptp(c) == 0:
        raise DegenerateGeometryError("the encoder count never changed: is the belt moving and the encoder wired?")
    A = np.column_stack([np.ones_like(c), c - c.mean()])
    coef, *_ = np.linalg.lstsq(A, xy, rcond=None)
    v = coef[1]  # mm per count, 2-vector
    speed = float(np.linalg.norm(v))
    travel_mm = float(np.ptp(c) * speed)
    if travel_mm < MIN_TRAVEL_MM:
        raise DegenerateGeometryError(
            f"the mark moved only {travel_mm:.1f} mm (minimum {MIN_TRAVEL_MM:g} mm): let the belt run further "
            f"between observations"
        )
    sign = 1 if c[-1] > c[0] else -1
    direction = sign * v / speed
    fitted = A @ coef
    residuals = np.linalg.norm(xy - fitted, axis=1)
    n = len(c)
    sxx = float(np.sum((c - c.mean()) ** 2))
    if n > 2:
        # Scatter along the travel gives the slope's standard error.
        along = (xy - fitted) @ direction
        sigma = float(np.sqrt(np.sum(along**2) / (n - 2)))
    else:
        sigma = float(point_sigma_mm)
    slope_std = sigma / np.sqrt(sxx)
    return EncoderResult(
        counts_per_mm=1.0 / speed,
        count_sign=sign,
        travel_dir=direction,
        residuals_mm=residuals,
        travel_mm=travel_mm,
        scale_std_pct=100.0 * slope_std / speed,
        method=method,
        when=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        points_mm=np.asarray(xy_mm, dtype=np.float64)[:, :2],
    )


def board_position(
    camera: CameraModel, image: np.ndarray, board: BoardSpec | str, thickness_mm: float = 0.0
) -> np.ndarray | None:
    """Belt position (2,) of the board's inner corner 0 in one frame, or None when the board
    is not seen. Every visible corner counts (a 2-D rigid fit of the board to the corners
    mapped onto the belt), so a board partly out of view still gives its origin."""
    from scallop.calibration.robot import umeyama

    board = parse_board(board)
    det = detect(image, board)
    if det is None:
        return None
    mapped = camera.pixel_to_belt(det.image_points, z_mm=thickness_mm)
    obj = det.object_points.copy()
    obj[:, 1] *= -1  # the board lies face up: its y runs along belt -y
    # Orientation on the belt does not matter (any turn is allowed), only the origin.
    src = np.column_stack([obj[:, :2], np.zeros(len(obj))])
    dst = np.column_stack([mapped, np.zeros(len(mapped))])
    _, t, _ = umeyama(src, dst)
    return t[:2]


def encoder_from_track(
    camera: CameraModel, frames, board: BoardSpec | str, *, thickness_mm: float = 0.0
) -> EncoderResult:
    """Counts per mm from a board riding the belt.

    frames: iterable of ``(name, image, counts)`` in time order (images as the camera
    delivers them, counts latched at exposure).
    """
    board = parse_board(board)
    counts, xy, skipped = [], [], []
    n = 0
    for name, image, cnt in frames:
        n += 1
        if cnt is None:
            skipped.append(f"{name}: no encoder count")
            continue
        pos = board_position(camera, image, board, thickness_mm)
        if pos is None:
            skipped.append(f"{name}: board not found")
            continue
        counts.append(int(cnt))
        xy.append(pos)
    if len(counts) < 2:
        raise BoardNotFoundError(
            f"the board was located in only {len(counts)} of {n} frames (with encoder counts): at least 2 are "
            f"needed; check --board and that the frames carry encoder counts"
        )
    res = fit_encoder(counts, np.array(xy), method="track")
    res.skipped = skipped
    return res


def encoder_from_touches(counts, points_B, *, touch_sigma_mm: float = 0.2) -> EncoderResult:
    """Counts per mm from robot touches of one mark at two or more encoder positions.

    counts: (N,) encoder counts at the touches, in time order; points_B: (N, 2|3) the
    touches carried into the belt frame (``LineCalibration.robot_to_belt``).
    touch_sigma_mm: the touch accuracy assumed when only two touches are given.
    """
    pts = np.asarray(points_B, dtype=np.float64)
    if pts.ndim != 2:
        raise DegenerateGeometryError(f"touches: expected (N, 2) or (N, 3) points, got shape {pts.shape}")
    return fit_encoder(counts, pts[:, :2], method="touches", point_sigma_mm=touch_sigma_mm)
