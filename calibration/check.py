"""Verdicts, and the drift check that tells operators when to call an engineer.

Every calibration step ends with :class:`Figure` s: a measured value with the limits that
make it good, marginal or redo, so the verdict is never a bare word. The drift check
re-measures the belt plane with a board lying on the belt and compares the result with the
saved calibration (see :func:`check_drift`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

VERDICTS = ("good", "marginal", "redo")


@dataclass
class Figure:
    """A measured figure and its limits.

    With ``higher_is_better`` False (errors, residuals): good when value ≤ good, marginal
    when ≤ marginal, else redo. With True (counts, coverage): good when ≥ good, and so on.
    """

    name: str
    value: float
    unit: str
    good: float
    marginal: float
    higher_is_better: bool = False

    @property
    def verdict(self) -> str:
        v = self.value
        if v is None or not np.isfinite(v):
            return "redo"
        if self.higher_is_better:
            return "good" if v >= self.good else ("marginal" if v >= self.marginal else "redo")
        return "good" if v <= self.good else ("marginal" if v <= self.marginal else "redo")

    def _fmt(self, v: float) -> str:
        if float(v).is_integer() and abs(v) >= 1:
            return f"{v:.0f}"
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"

    def describe(self) -> str:
        op = ">=" if self.higher_is_better else "<="
        unit = f" {self.unit}" if self.unit else ""
        return (
            f"{self.name}: {self._fmt(self.value)}{unit} -> {self.verdict} "
            f"(good {op} {self._fmt(self.good)}, marginal {op} {self._fmt(self.marginal)}, else redo)"
        )

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "value": float(self.value),
            "unit": self.unit,
            "verdict": self.verdict,
            "good": self.good,
            "marginal": self.marginal,
            "higher_is_better": self.higher_is_better,
        }


def overall(figures: list[Figure]) -> str:
    """The worst verdict among ``figures``."""
    if not figures:
        return "redo"
    return VERDICTS[max(VERDICTS.index(f.verdict) for f in figures)]


# ==================================================================== drift check
FIELD_DRIFT_LIMITS = (0.5, 1.0)  # mm, worst point of the field after the board's placement is removed
BOARD_RESIDUAL_LIMITS = (0.5, 1.0)  # mm, worst board corner through the saved calibration
POSITION_DRIFT_LIMITS = (1.0, 2.0)  # mm, worst point of the field, board at the calibration place
FIELD_GRID = (17, 11)  # image points (columns, rows) over which the mapping is compared


def _tilt_deg(axis: np.ndarray) -> float:
    """Angle between a camera's optical axis and the belt normal (degrees)."""
    return float(np.degrees(np.arccos(np.clip(-axis[2], -1, 1))))


def _rigid_2d(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """src (N, 2) moved onto dst by the best 2-D rotation + translation."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    H = (dst - mu_d).T @ (src - mu_s)
    U, _, Vt = np.linalg.svd(H)
    D = np.diag([1.0, np.sign(np.linalg.det(U @ Vt)) or 1.0])
    R = U @ D @ Vt
    return (src - mu_s) @ R.T + mu_d


@dataclass
class DriftReport:
    """How far the saved calibration has drifted, from one photo of a board on the belt.

    field_drift_mm:      worst difference over the image between the saved and the newly
                         measured pixel → belt mapping, after removing where the board
                         happens to lie (so any placement works). Catches a camera that was
                         bumped (tilt), raised or lowered, or refocused.
    board_residual_mm:   worst board corner mapped with the saved calibration, against the
                         board's true shape (distances between corners).
    position_drift_mm:   worst difference without removing the placement; only meaningful
                         (and only given) when the board lies exactly where it lay for the
                         belt calibration (``same_place``): also catches a camera turned or
                         shifted.
    height_change_mm / tilt_change_deg: camera height above the belt and its tilt, new − saved.
    """

    field_drift_mm: float
    board_residual_mm: float
    position_drift_mm: float | None
    height_change_mm: float
    tilt_change_deg: float
    corners: int
    board: str
    notes: list[str] = field(default_factory=list)

    def figures(self) -> list[Figure]:
        figs = [
            Figure("mapping drift over the field", self.field_drift_mm, "mm", *FIELD_DRIFT_LIMITS),
            Figure(
                "worst board corner through the saved calibration", self.board_residual_mm, "mm", *BOARD_RESIDUAL_LIMITS
            ),
        ]
        if self.position_drift_mm is not None:
            figs.append(
                Figure(
                    "position drift (board at the calibration place)",
                    self.position_drift_mm,
                    "mm",
                    *POSITION_DRIFT_LIMITS,
                )
            )
        return figs

    @property
    def verdict(self) -> str:
        return overall(self.figures())

    @property
    def advice(self) -> str:
        return {
            "good": "the calibration holds: carry on",
            "marginal": "the calibration is drifting: picks may be off; ask an engineer to recalibrate soon",
            "redo": "the calibration no longer holds: stop picking and call an engineer to recalibrate "
            "(scallop calibrate belt, then encoder and robot)",
        }[self.verdict]

    def to_json(self) -> dict:
        return {
            "field_drift_mm": round(self.field_drift_mm, 4),
            "board_residual_mm": round(self.board_residual_mm, 4),
            "position_drift_mm": None if self.position_drift_mm is None else round(self.position_drift_mm, 4),
            "height_change_mm": round(self.height_change_mm, 3),
            "tilt_change_deg": round(self.tilt_change_deg, 4),
            "corners": self.corners,
            "board": self.board,
            "notes": self.notes,
            "verdict": self.verdict,
            "advice": self.advice,
            "figures": [f.to_dict() for f in self.figures()],
        }


def check_drift(
    calib, image: np.ndarray, board=None, *, same_place: bool = False, thickness_mm: float | None = None
) -> DriftReport:
    """Re-measure the belt plane from ``image`` (a board lying flat on the belt) and compare
    it with ``calib`` (a :class:`~scallop.calibration.store.LineCalibration` with intrinsics
    and belt). ``board`` and ``thickness_mm`` default to the ones the belt was calibrated with."""
    from scallop.calibration.belt import measure_belt, rotate_frame
    from scallop.calibration.boards import detect, parse_board
    from scallop.calibration.errors import BoardNotFoundError

    calib.check(require=("intrinsics", "belt"))
    saved = calib.camera
    belt = calib.data["belt"]
    placement = belt.get("placement", {})
    board = parse_board(board or belt.get("board"))
    thick = float(placement.get("thickness_mm", 0.0) if thickness_mm is None else thickness_mm)
    h, w = image.shape[:2]
    if (w, h) != calib.image_size:
        from scallop.calibration.errors import CameraMismatchError

        fw, fh = calib.image_size
        raise CameraMismatchError(
            f"photo is {w}x{h} but the calibration is for {fw}x{fh}: use the line's camera at its calibrated resolution"
        )
    det = detect(image, board)
    if det is None:
        raise BoardNotFoundError(f"no {board} found in the photo: lay the whole board flat in view and retry")
    travel = placement.get("travel", "right")
    new = measure_belt(
        image,
        board,
        calib.K,
        calib.dist,
        calib.image_size,
        travel=travel if isinstance(travel, str) else tuple(travel),
        origin_mm=tuple(placement.get("origin_mm", (0.0, 0.0))),
        yaw_deg=float(placement.get("yaw_deg", 0.0)),
        thickness_mm=thick,
        detection=det,
    )
    # The saved frame may have been turned to follow the travel: turn the new one alike.
    new_cam = rotate_frame(
        new.camera, np.radians(float(belt.get("travel_angle_deg", 0.0))), tuple(placement.get("origin_mm", (0.0, 0.0)))
    )

    gw, gh = FIELD_GRID
    u, v = np.meshgrid(np.linspace(0.02, 0.98, gw) * (w - 1), np.linspace(0.02, 0.98, gh) * (h - 1))
    grid = np.column_stack([u.ravel(), v.ravel()])
    old_xy = saved.pixel_to_belt(grid)
    new_xy = new_cam.pixel_to_belt(grid)
    field_drift = float(np.max(np.linalg.norm(_rigid_2d(new_xy, old_xy) - old_xy, axis=1)))
    position = float(np.max(np.linalg.norm(new_xy - old_xy, axis=1))) if same_place else None

    mapped = saved.pixel_to_belt(det.image_points, z_mm=thick)
    shape = det.object_points[:, :2] * np.array([1.0, -1.0])
    board_res = float(np.max(np.linalg.norm(_rigid_2d(shape, mapped) - mapped, axis=1)))

    axis_old = saved.R.T @ np.array([0.0, 0.0, 1.0])
    axis_new = new_cam.R.T @ np.array([0.0, 0.0, 1.0])
    notes = []
    if not same_place:
        notes.append(
            "board placement removed: a camera turned or shifted sideways is only caught with "
            "the board at its calibration place (--same-place)"
        )
    return DriftReport(
        field_drift_mm=field_drift,
        board_residual_mm=board_res,
        position_drift_mm=position,
        height_change_mm=float(new_cam.centre_B[2] - saved.centre_B[2]),
        tilt_change_deg=_tilt_deg(axis_new) - _tilt_deg(axis_old),
        corners=len(det),
        board=str(board),
        notes=notes,
    )
