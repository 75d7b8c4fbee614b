"""Registering the fluorescence camera to the colour camera on the belt plane.

A second, monochrome camera beside the colour camera sees the uro's fluorescence
(docs/fluorescence.md). Its pixels are carried onto the colour frame's pixels by a homography
of the belt plane, measured here from PAIRS of photos of one board lying flat on the stopped
belt, each pair taken by both cameras with the board unmoved:

* the board's corners are found in both photos of a pair with the detector of the other steps
  (:func:`scallop.calibration.boards.detect`) and matched by corner id;
* lens distortion is taken out of both sides before the fit, so that what is fitted is a true
  homography: the colour corners with the colour camera's intrinsics from the line's file, the
  fluorescence corners with the fluorescence camera's own intrinsics when they are given (a
  ``scallop calibrate intrinsics`` file of that camera); without them its lens is taken to be
  distortion-free, and whatever distortion it has shows in the residuals;
* ``cv2.findHomography`` fits all corners of all pairs by least squares, without RANSAC: a pair
  whose board moved between its two photos must show in the figures, not be dropped quietly.

The homography H maps **undistorted** fluorescence pixels to **undistorted** colour pixels
(each camera's pinhole pixels: its own camera matrix, lens distortion removed), the definition
the simulator uses (``H = K_c [r1 r2 t]_c · (K_f [r1 r2 t]_f)⁻¹``). For cameras without lens
distortion these are the raw pixels and ``cv2.warpPerspective(fluorescence, H, colour_size)``
registers the image exactly. With distortion, a plain warp is off by the distortion's
displacement; :class:`Registration` maps raw pixels to raw pixels exactly (undistort, H,
distort) and builds the maps for ``cv2.remap``. The step reports how far a plain warp would be
off (``plain_warp_max_mm``).

The homography holds on the plane the board's printed face lay on (the belt plus the plate's
thickness). A point above that plane (a scallop's top) is seen by the two cameras from
different places and lands off by about ``baseline × height / camera height`` (parallax). With
the fluorescence camera's intrinsics the step also solves that camera's pose on the belt (its
corners against where the colour camera put them on the belt), reports the parallax per 10 mm
of height, and stores the pose, from which :meth:`Registration.from_calibration` builds the
registration of any plane (``z_mm``), e.g. at the height of the scallops' tops.

Residuals: every fluorescence corner mapped onto the colour frame, against where the colour
camera saw it, both taken to belt millimetres with the colour camera's belt calibration.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np

from scallop.calibration.boards import MIN_CORNERS_PER_VIEW, BoardSpec, Detection, detect, parse_board
from scallop.calibration.camera_model import CameraModel
from scallop.calibration.check import Figure, overall
from scallop.calibration.errors import (
    BoardNotFoundError,
    BoardSpecError,
    CalibrationFileError,
    DegenerateGeometryError,
    ImageError,
)
from scallop.errors import check_number

if TYPE_CHECKING:
    from scallop.calibration.store import LineCalibration

# Limits, stated with every verdict.
# A corner mapped from the fluorescence camera lands this far (mm on the belt) from where the
# colour camera saw it: the belt step's limits, so the channel sits on the colour frame as well
# as the colour frame sits on the belt. 1 mm is 2 colour pixels at 0.5 mm/px and a fifth of the
# narrowest uro (5 mm across, the spec): the parts stage still reads the uro's glow on the uro.
RESIDUAL_MAX_LIMITS = (0.5, 1.0)  # mm, worst corner
# One pair fits a homography to any board, even one moved between its two photos (a board slid
# on the belt is still a plane seen twice): only a second pair elsewhere can show it, a third
# one shows which pair is wrong.
PAIRS_LIMITS = (3, 2)  # pairs
# A homography has 8 unknowns, two equations per corner: fewer than 20 corners (5 equations
# per unknown) leave the fit at the mercy of a single poor corner.
CORNERS_LIMITS = (50, 20)  # corners
# The fit is pinned down inside the hull of the board corners and extrapolates outside it.
# Measured on the simulator (docs/fluorescence.md), the mapping's worst error over the whole
# overlap: 0.05 mm with the hull over 63 % of the overlap, 0.3 mm at 35 %, 0.6 mm at 7 % (one
# board), while the corners' own residuals stayed at 0.13–0.17 mm: they cannot show it.
COVERAGE_LIMITS = (0.5, 0.25)  # share of the overlap inside the corners' hull
# With the fluorescence camera's intrinsics, its pose on the belt is fitted to its corners: a
# lens file that fits its photos leaves each corner within a fraction of a pixel of that pose
# (0.25 px worst on the commissioning rehearsal), another camera's file tens of pixels (54 px
# worst for the colour camera's photos stretched to the fluorescence camera's size), and the
# baseline and parallax it gives are then wrong (538 mm instead of 172: 12.6 mm off per 10 mm
# of height, not 1.3). The mapping on the board's plane does not show it: a homography fits.
POSE_FIT_LIMITS = (1.0, 2.5)  # px, worst corner against the fitted pose
# The fluorescence camera seeing less than this share of the colour frame is noted: scallops
# outside the overlap get no channel.
OVERLAP_NOTE_BELOW = 0.95
GRID_STEP_PX = 8  # colour pixels between the samples of the overlap and the coverage


def _r(v, digits: int):
    """A figure for JSON: rounded, None when not finite (JSON has no NaN or infinity)."""
    return round(float(v), digits) if v is not None and np.isfinite(v) else None


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _points(px) -> np.ndarray:
    a = np.asarray(px, dtype=np.float64)
    return a.reshape(-1, 2)


def _undistort(px: np.ndarray, K: np.ndarray, dist: np.ndarray | None) -> np.ndarray:
    """Raw pixels (N, 2) → the same camera's pinhole pixels (lens distortion removed, same K)."""
    if dist is None or not np.any(dist):
        return px.copy()
    return cv2.undistortPoints(px.reshape(-1, 1, 2), K, dist, P=K).reshape(-1, 2)


def _distort(px: np.ndarray, K: np.ndarray, dist: np.ndarray | None, size: tuple[int, int] | None = None) -> np.ndarray:
    """Pinhole pixels (N, 2) → the raw pixels the lens puts them on. With the image ``size``,
    points the lens cannot bring into the image are NaN: far outside it a distortion polynomial
    can fold back and put them on the image."""
    if dist is None or not np.any(dist) or not len(px):
        return px.copy()
    norm = np.column_stack([px, np.ones(len(px))]) @ np.linalg.inv(K).T
    pts = np.column_stack([norm[:, 0], norm[:, 1], np.ones(len(px))])
    out, _ = cv2.projectPoints(pts.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K, dist)
    out = out.reshape(-1, 2)
    if size is not None:
        w, h = size
        border = np.array(
            [[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1], [(w - 1) / 2, 0], [(w - 1) / 2, h - 1], [0, (h - 1) / 2]]
            + [[w - 1, (h - 1) / 2]],
            dtype=np.float64,
        )
        edge = cv2.undistortPoints(border.reshape(-1, 1, 2), K, dist).reshape(-1, 2)
        reach = 1.05 * float(np.max(np.hypot(edge[:, 0], edge[:, 1])))
        out[np.hypot(norm[:, 0], norm[:, 1]) > reach] = np.nan
    return out


def _apply(H: np.ndarray, px: np.ndarray) -> np.ndarray:
    """``H`` applied to points (N, 2); NaN where a point maps to the line at infinity or
    behind (the other camera cannot see it there)."""
    h = np.column_stack([px, np.ones(len(px))]) @ H.T
    with np.errstate(divide="ignore", invalid="ignore"):
        out = h[:, :2] / h[:, 2:3]
    out[~(h[:, 2] > 1e-12)] = np.nan
    return out


@dataclass
class Registration:
    """The fluorescence camera's pixels on the colour camera's, on the belt plane.

    homography:   (3, 3) undistorted fluorescence pixels → undistorted colour pixels.
    colour_K / colour_dist / colour_size: the colour camera's intrinsics and (w, h) (the line
                  calibration's).
    fluo_size:    (w, h) of the fluorescence images.
    fluo_K / fluo_dist: the fluorescence camera's intrinsics, or None (its lens taken to be
                  distortion-free: its raw pixels are its pinhole pixels).
    """

    homography: np.ndarray
    colour_K: np.ndarray
    colour_dist: np.ndarray
    colour_size: tuple[int, int]
    fluo_size: tuple[int, int]
    fluo_K: np.ndarray | None = None
    fluo_dist: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.homography = np.asarray(self.homography, dtype=np.float64).reshape(3, 3)
        self.colour_K = np.asarray(self.colour_K, dtype=np.float64).reshape(3, 3)
        self.colour_dist = np.asarray(self.colour_dist, dtype=np.float64).ravel()
        self.colour_size = (int(self.colour_size[0]), int(self.colour_size[1]))
        self.fluo_size = (int(self.fluo_size[0]), int(self.fluo_size[1]))
        if self.fluo_K is not None:
            self.fluo_K = np.asarray(self.fluo_K, dtype=np.float64).reshape(3, 3)
            self.fluo_dist = np.asarray(self.fluo_dist, dtype=np.float64).ravel()

    @classmethod
    def from_calibration(cls, cal: LineCalibration, z_mm: float | None = None) -> Registration:
        """The registration stored in a line calibration (needs its intrinsics and its
        fluorescence part). With ``z_mm``, the registration of the plane that high above the
        belt instead of the board's (e.g. the height of the scallops' tops), from the two
        cameras' poses: needs the belt part and a fluorescence part measured with the
        fluorescence camera's intrinsics (which gives its pose)."""
        from scallop.calibration.errors import MissingPartError

        where = cal.path or "calibration"
        H = cal.fluorescence_homography
        if H is None or not cal.has("intrinsics"):
            missing = "intrinsics" if not cal.has("intrinsics") else "fluorescence"
            raise MissingPartError(f"{where}: has no {missing} calibration; run '{cal._how(missing)}'")
        fi = cal.fluorescence_intrinsics
        if z_mm is not None:
            fluo = cal.fluorescence_camera
            if fluo is None:
                raise MissingPartError(
                    f"{where}: the fluorescence part holds no pose of the fluorescence camera (measured without its "
                    "intrinsics), so it registers the board's plane only; rerun 'scallop calibrate fluorescence' "
                    "with --fluorescence-intrinsics"
                )
            H = plane_homography(cal.camera, fluo, check_number("z_mm", z_mm, -100.0, 200.0))
        return cls(H, cal.K, cal.dist, cal.image_size, cal.fluorescence_size, *(fi if fi is not None else (None, None)))

    @classmethod
    def at_height(cls, cal: LineCalibration, height_mm: float) -> Registration:
        """The registration for points ``height_mm`` above the belt: the stored homography when
        that is the board's plane (within 0.5 mm), else the plane's from the two cameras' poses
        (:meth:`from_calibration` with ``z_mm``; a part without the pose is refused, saying how
        to measure it)."""
        from scallop.calibration.errors import MissingPartError

        h = check_number("height_mm", height_mm, -100.0, 200.0)
        plane = (cal.data.get("fluorescence") or {}).get("plane_z_mm")
        if plane is not None and abs(h - float(plane)) <= 0.5:
            return cls.from_calibration(cal)
        try:
            return cls.from_calibration(cal, z_mm=h)
        except MissingPartError as e:
            if plane is None:
                raise
            raise MissingPartError(
                f"{e}; or register at the board's plane, {float(plane):g} mm, accepting the parallax above it"
            ) from None

    @property
    def exact_as_homography(self) -> bool:
        """True when neither lens distorts: a plain perspective warp is then exact."""
        return not np.any(self.colour_dist) and (self.fluo_dist is None or not np.any(self.fluo_dist))

    def _fluo_undistort(self, px: np.ndarray) -> np.ndarray:
        return px.copy() if self.fluo_K is None else _undistort(px, self.fluo_K, self.fluo_dist)

    def _fluo_distort(self, px: np.ndarray) -> np.ndarray:
        return px.copy() if self.fluo_K is None else _distort(px, self.fluo_K, self.fluo_dist, self.fluo_size)

    def to_colour(self, px) -> np.ndarray:
        """Raw fluorescence pixels (N, 2) → the raw colour pixels seeing the same belt point."""
        ideal = _apply(self.homography, self._fluo_undistort(_points(px)))
        ok = np.all(np.isfinite(ideal), axis=1)
        out = np.full_like(ideal, np.nan)
        out[ok] = _distort(ideal[ok], self.colour_K, self.colour_dist, self.colour_size)
        return out

    def to_fluorescence(self, px) -> np.ndarray:
        """Raw colour pixels (N, 2) → the raw fluorescence pixels seeing the same belt point
        (NaN where the fluorescence camera cannot see it)."""
        ideal = _apply(np.linalg.inv(self.homography), _undistort(_points(px), self.colour_K, self.colour_dist))
        ok = np.all(np.isfinite(ideal), axis=1)
        out = np.full_like(ideal, np.nan)
        out[ok] = self._fluo_distort(ideal[ok])
        return out

    def maps(self) -> tuple[np.ndarray, np.ndarray]:
        """(map_x, map_y), each (h, w) float32 over the colour frame: the fluorescence pixel
        each colour pixel sees, for ``cv2.remap(fluorescence, map_x, map_y, …)``. Outside the
        fluorescence image the maps point off it (remap's border value fills those pixels)."""
        w, h = self.colour_size
        u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
        f = self.to_fluorescence(np.column_stack([u.ravel(), v.ravel()]))
        f[~np.all(np.isfinite(f), axis=1)] = -1e6
        return f[:, 0].reshape(h, w).astype(np.float32), f[:, 1].reshape(h, w).astype(np.float32)

    def warp(self, image: np.ndarray) -> np.ndarray:
        """A fluorescence image on the colour frame's pixels (0 where the fluorescence camera
        does not see). Exact for lenses with distortion, unlike a plain perspective warp."""
        if self.exact_as_homography:
            return cv2.warpPerspective(image, self.homography, self.colour_size, flags=cv2.INTER_LINEAR, borderValue=0)
        mx, my = self.maps()
        return cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def overlap(self, step: int = GRID_STEP_PX) -> tuple[np.ndarray, np.ndarray]:
        """(grid (N, 2) colour pixels every ``step`` px, inside (N,) bool): which of them the
        fluorescence camera sees."""
        w, h = self.colour_size
        u, v = np.meshgrid(np.arange(step / 2, w, step), np.arange(step / 2, h, step))
        grid = np.column_stack([u.ravel(), v.ravel()])
        f = self.to_fluorescence(grid)
        fw, fh = self.fluo_size
        with np.errstate(invalid="ignore"):
            inside = (f[:, 0] >= 0) & (f[:, 0] <= fw - 1) & (f[:, 1] >= 0) & (f[:, 1] <= fh - 1)
        return grid, inside


def plane_homography(colour: CameraModel, fluo: CameraModel, z_mm: float = 0.0) -> np.ndarray:
    """3×3 from the fluorescence camera's undistorted pixels to the colour camera's, for the
    points on the plane ``z_mm`` above the belt (at 0 the simulator's
    ``H_colour · H_fluo⁻¹``): each camera maps the plane's (x, y) by ``K [r1 r2 (t + z r3)]``."""

    def plane_to_px(cam: CameraModel) -> np.ndarray:
        return cam.K @ np.column_stack([cam.R[:, 0], cam.R[:, 1], cam.t + float(z_mm) * cam.R[:, 2]])

    H = plane_to_px(colour) @ np.linalg.inv(plane_to_px(fluo))
    return H / H[2, 2]


def _solve_pose(belt_xyz: np.ndarray, px: np.ndarray, K, dist, size) -> CameraModel | None:
    """The fluorescence camera's pose on the belt from its corners and where the colour camera
    put them on the belt; None when it cannot be solved or lands below the belt."""
    z = float(belt_xyz[0, 2])
    obj = belt_xyz - [0.0, 0.0, z]  # on z = 0, which planar PnP wants
    try:
        ok, rvec, tvec = cv2.solvePnP(obj.reshape(-1, 1, 3), px.reshape(-1, 1, 2), K, dist, flags=cv2.SOLVEPNP_IPPE)
        if not ok:
            return None
        rvec, tvec = cv2.solvePnPRefineLM(obj.reshape(-1, 1, 3), px.reshape(-1, 1, 2), K, dist, rvec, tvec)
    except cv2.error:
        return None
    R = cv2.Rodrigues(rvec)[0]
    cam = CameraModel(K=K, dist=dist, R=R, t=tvec.ravel() - R @ [0.0, 0.0, z], image_size=size)
    return cam if cam.centre_B[2] > 0 else None


@dataclass
class FluorescenceResult:
    """The fluorescence camera registered to the colour camera, with the figures that say how
    far to trust it.

    registration:   the mapping (:class:`Registration`).
    residuals_mm:   (N,) each corner mapped fluorescence → colour, against its colour
                    detection, on the belt (mm); residuals_px: the same in colour pixels
                    (undistorted: the colour camera's pinhole pixels).
    corner_pair:    (N,) the pair each corner came from; corners_colour_px / corners_fluo_px:
                    (N, 2) the corners as detected (raw pixels).
    pair_names:     (colour photo, fluorescence photo) of each pair.
    overlap_share:  share of the colour frame the fluorescence camera sees.
    board_coverage: share of that overlap inside the hull of all the board corners.
    plain_warp_max_mm: how far a plain perspective warp with the homography (lens distortion
                    ignored) lands from the exact mapping, worst over the overlap.
    mm_per_px / colour_mm_per_px: the fluorescence / colour camera's scale at its centre.
    plane_z_mm:     height of the plane the board's face lay on (its plate's thickness).
    fluo_camera:    the fluorescence camera's pose on the belt (with its intrinsics only).
    parallax_mm_per_10mm: how far a point 10 mm above that plane lands from where the colour
                    camera sees it, in the middle of the overlap (with the pose only).
    pose_fit_px:    worst corner, in fluorescence pixels, against that pose: whether the
                    intrinsics given are this camera's (``POSE_FIT_LIMITS``).
    """

    registration: Registration
    residuals_mm: np.ndarray
    residuals_px: np.ndarray
    corner_pair: np.ndarray
    corners_colour_px: np.ndarray
    corners_fluo_px: np.ndarray
    pair_names: list[tuple[str, str]]
    overlap_share: float
    board_coverage: float
    plain_warp_max_mm: float
    mm_per_px: float
    colour_mm_per_px: float
    board: str
    plane_z_mm: float
    colour_size: tuple[int, int]
    hull_px: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    notes: list[str] = field(default_factory=list)
    fluo_intrinsics_id: str | None = None
    fluo_camera: CameraModel | None = None
    colour_camera: CameraModel | None = None
    parallax_mm_per_10mm: float | None = None
    pose_fit_px: float | None = None
    when: str = ""

    @property
    def homography(self) -> np.ndarray:
        return self.registration.homography

    @property
    def baseline_mm(self) -> float | None:
        """Distance between the two cameras' centres (with the fluorescence camera's pose)."""
        if self.fluo_camera is None or self.colour_camera is None:
            return None
        return float(np.linalg.norm(self.fluo_camera.centre_B - self.colour_camera.centre_B))

    @property
    def pairs(self) -> int:
        return len(self.pair_names)

    @property
    def residual_median_mm(self) -> float:
        return float(np.median(self.residuals_mm))

    @property
    def residual_p95_mm(self) -> float:
        return float(np.percentile(self.residuals_mm, 95))

    @property
    def residual_max_mm(self) -> float:
        return float(np.max(self.residuals_mm))

    @property
    def residual_max_px(self) -> float:
        return float(np.max(self.residuals_px))

    def pair_worst_mm(self) -> list[float]:
        return [float(np.max(self.residuals_mm[self.corner_pair == k])) for k in range(self.pairs)]

    def figures(self) -> list[Figure]:
        pose = (
            [
                Figure(
                    "fluorescence camera: its intrinsics against its photos, worst corner",
                    self.pose_fit_px,
                    "px",
                    *POSE_FIT_LIMITS,
                )
            ]
            if self.pose_fit_px is not None
            else []
        )
        return pose + [
            Figure("worst corner residual on the belt", self.residual_max_mm, "mm", *RESIDUAL_MAX_LIMITS),
            Figure("pairs of photos", self.pairs, "", *PAIRS_LIMITS, higher_is_better=True),
            Figure("corners used", len(self.residuals_mm), "", *CORNERS_LIMITS, higher_is_better=True),
            Figure(
                "board coverage of the overlap",
                100 * self.board_coverage,
                "%",
                100 * COVERAGE_LIMITS[0],
                100 * COVERAGE_LIMITS[1],
                higher_is_better=True,
            ),
        ]

    @property
    def verdict(self) -> str:
        return overall(self.figures())

    def to_json(self) -> dict:
        return {
            "homography": self.homography.tolist(),
            "image_size": list(self.registration.fluo_size),
            "colour_image_size": list(self.colour_size),
            "pairs": self.pairs,
            "corners": len(self.residuals_mm),
            "residual_median_mm": _r(self.residual_median_mm, 4),
            "residual_p95_mm": _r(self.residual_p95_mm, 4),
            "residual_max_mm": _r(self.residual_max_mm, 4),
            "residual_max_px": _r(self.residual_max_px, 4),
            "pair_worst_mm": [_r(v, 4) for v in self.pair_worst_mm()],
            "pair_photos": [list(p) for p in self.pair_names],
            "overlap_share": _r(self.overlap_share, 4),
            "board_coverage": _r(self.board_coverage, 4),
            "plain_warp_max_mm": _r(self.plain_warp_max_mm, 4),
            "mm_per_px": _r(self.mm_per_px, 5),
            "colour_mm_per_px": _r(self.colour_mm_per_px, 5),
            "plane_z_mm": self.plane_z_mm,
            "baseline_mm": _r(self.baseline_mm, 2),
            "parallax_mm_per_10mm": _r(self.parallax_mm_per_10mm, 4),
            "pose_fit_max_px": _r(self.pose_fit_px, 4),
            "lens": "intrinsics" if self.registration.fluo_K is not None else "taken as distortion-free",
            "board": self.board,
            "notes": self.notes,
            "verdict": self.verdict,
            "figures": [f.to_dict() for f in self.figures()],
        }

    def picture(self, colour_image: np.ndarray, fluo_image: np.ndarray) -> np.ndarray:
        """One pair's photos laid over each other through the registration, with every pair's
        corners and residuals (:func:`scallop.calibration.pictures.registration_picture`)."""
        from scallop.calibration.pictures import registration_picture

        fl = fluo_image if fluo_image.ndim == 2 else cv2.cvtColor(fluo_image, cv2.COLOR_BGR2GRAY)
        reg = self.registration
        mx, my = reg.maps()

        def warp(img: np.ndarray) -> np.ndarray:
            return cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)

        return registration_picture(
            colour_image,
            warp(fl),
            warp(np.full(fl.shape[:2], 255, np.uint8)) > 127,
            self.corners_colour_px,
            reg.to_colour(self.corners_fluo_px),
            self.residuals_mm,
            RESIDUAL_MAX_LIMITS,
            self.hull_px,
            title=f"fluorescence camera on the colour frame: {self.verdict.upper()}, worst corner "
            f"{self.residual_max_mm:.2f} mm",
        )

    def section(self) -> dict:
        """The ``fluorescence`` part of the line calibration file."""
        r = self.registration
        sec = {
            "when": self.when,
            "board": self.board,
            "image_size": list(r.fluo_size),
            "homography": self.homography.tolist(),
            "plane_z_mm": self.plane_z_mm,
            "pairs": self.pairs,
            "corners": len(self.residuals_mm),
            "residual_median_mm": self.residual_median_mm,
            "residual_p95_mm": self.residual_p95_mm,
            "residual_max_mm": self.residual_max_mm,
            "overlap_share": self.overlap_share,
            "board_coverage": self.board_coverage,
            "plain_warp_max_mm": self.plain_warp_max_mm,
            "mm_per_px": self.mm_per_px,
            "verdict": self.verdict,
        }
        if r.fluo_K is not None:
            sec["K"] = r.fluo_K.tolist()
            sec["dist"] = [float(v) for v in r.fluo_dist]
            sec["fluorescence_intrinsics_id"] = self.fluo_intrinsics_id
        if self.fluo_camera is not None:
            sec["R"] = self.fluo_camera.R.tolist()
            sec["t"] = self.fluo_camera.t.tolist()
            sec["baseline_mm"] = self.baseline_mm
            sec["parallax_mm_per_10mm"] = self.parallax_mm_per_10mm
            sec["pose_fit_max_px"] = self.pose_fit_px
        return sec


# ==================================================================== the fit
def _label_sets(board: BoardSpec, fluo: Detection) -> list[np.ndarray]:
    """The fluorescence detection's ids under each numbering of the printed board (a plain
    chessboard may be numbered from either end, and a square one turned; ChArUco has one)."""
    return [perm[fluo.ids] for perm in board.relabelings()]


def _match(colour: Detection, fluo_ids: np.ndarray, fluo: Detection) -> tuple[np.ndarray, np.ndarray]:
    """(colour pixels, fluorescence pixels) of the corners both saw, in id order."""
    common, ic, jf = np.intersect1d(colour.ids, fluo_ids, return_indices=True)
    return colour.image_points[ic], fluo.image_points[jf]


def _fit(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    # Method 0: all points, least squares refined by Levenberg–Marquardt on the distance in the
    # colour image. No RANSAC: a corner or pair that disagrees must show in the residuals.
    H, _ = cv2.findHomography(src.reshape(-1, 1, 2), dst.reshape(-1, 1, 2), 0)
    if H is None or not np.all(np.isfinite(H)) or abs(np.linalg.det(H)) < 1e-12:
        raise DegenerateGeometryError(
            "the board corners do not pin down a mapping between the two cameras (all on one line, or "
            "bunched together): lay the board flat, whole in both views, and photograph it again"
        )
    return H / H[2, 2]


def _turn(H: np.ndarray, at: np.ndarray) -> float:
    """How far (degrees) ``H`` turns a direction at point ``at``: near 0 for two cameras
    mounted alike."""
    a = _apply(H, np.array([at, at + [1.0, 0.0]]))
    d = a[1] - a[0]
    return abs(float(np.degrees(np.arctan2(d[1], d[0]))))


def _choose_labels(board, pairs_ideal) -> tuple[list[int], bool]:
    """Which numbering of each pair's fluorescence corners matches its colour corners.

    ``pairs_ideal``: per pair, (colour detection, fluorescence detection, colour ideal points
    by colour index, fluorescence ideal points by fluorescence index). Returns the chosen
    numbering per pair, and whether the choice rests on the cameras being mounted alike (one
    pair of a board with more than one numbering: every numbering then fits equally)."""
    n_labels = len(board.relabelings())
    if n_labels == 1:
        return [0] * len(pairs_ideal), False

    def matched(k: int, lab: int):
        dc, df, ci, fi = pairs_ideal[k]
        ids = _label_sets(board, df)[lab]
        _, ic, jf = np.intersect1d(dc.ids, ids, return_indices=True)
        return ci[ic], fi[jf]

    if len(pairs_ideal) == 1:
        best = None
        for lab in range(n_labels):
            c, f = matched(0, lab)
            if len(c) < 4:
                continue
            turn = _turn(_fit(f, c), f.mean(0))
            if best is None or turn < best[0]:
                best = (turn, lab)
        return [best[1] if best else 0], True
    best = None
    for lab0 in range(n_labels):
        c0, f0 = matched(0, lab0)
        if len(c0) < 4:
            continue
        H0 = _fit(f0, c0)
        labels = [lab0]
        for k in range(1, len(pairs_ideal)):
            scores = []
            for lab in range(n_labels):
                c, f = matched(k, lab)
                err = np.linalg.norm(_apply(H0, f) - c, axis=1) if len(c) else np.array([np.inf])
                scores.append(float(np.nanmedian(err)) if np.any(np.isfinite(err)) else np.inf)
            labels.append(int(np.argmin(scores)))
        cs, fs = zip(*(matched(k, lab) for k, lab in enumerate(labels)))
        c_all, f_all = np.vstack(cs), np.vstack(fs)
        if len(c_all) < 4:
            continue
        H = _fit(f_all, c_all)
        rms = float(np.sqrt(np.nanmean(np.sum((_apply(H, f_all) - c_all) ** 2, axis=1))))
        if best is None or rms < best[0]:
            best = (rms, labels)
    return (best[1] if best else [0] * len(pairs_ideal)), False


def _size(image: np.ndarray) -> tuple[int, int]:
    h, w = image.shape[:2]
    return int(w), int(h)


def register_fluorescence(
    colour_images,
    fluo_images,
    board: BoardSpec | str,
    cal: LineCalibration,
    *,
    thickness_mm: float,
    fluo_intrinsics: tuple | None = None,
    names: list[tuple[str, str]] | None = None,
) -> FluorescenceResult:
    """Register the fluorescence camera to the colour camera from pairs of photos.

    colour_images / fluo_images: the pairs, in the same order: photo k of each list taken by
                  the two cameras with the board lying flat on the stopped belt, unmoved.
    cal:          the line calibration with the colour camera's intrinsics and belt part
                  (the residuals are given in belt millimetres through it).
    thickness_mm: the board plate's thickness: the homography holds on the plane of its face.
    fluo_intrinsics: (K, dist, image_size[, id]) of the fluorescence camera, or None.
    names:        (colour photo, fluorescence photo) per pair, for the messages.
    """
    board = parse_board(board)
    thick = check_number("thickness_mm", thickness_mm, 0.0, 100.0, error=BoardSpecError)
    cal.check(require=("intrinsics", "belt"))
    colour_images = list(colour_images)
    fluo_images = list(fluo_images)
    if not colour_images:
        raise ImageError("no pair of photos given: pass the colour and the fluorescence photo of each board placement")
    if len(colour_images) != len(fluo_images):
        raise ImageError(
            f"{len(colour_images)} colour photo(s) but {len(fluo_images)} fluorescence photo(s): give one of each "
            "per board placement, in the same order"
        )
    n = len(colour_images)
    names = list(names) if names else [(f"colour photo {k + 1}", f"fluorescence photo {k + 1}") for k in range(n)]
    colour_size = cal.image_size
    fluo_size = _size(fluo_images[0])
    fK = fdist = None
    fid = None
    if fluo_intrinsics is not None:
        fK = np.asarray(fluo_intrinsics[0], dtype=np.float64).reshape(3, 3)
        fdist = np.asarray(fluo_intrinsics[1], dtype=np.float64).ravel()
        isize = tuple(int(v) for v in fluo_intrinsics[2])
        fid = fluo_intrinsics[3] if len(fluo_intrinsics) > 3 else None
        if isize != fluo_size:
            raise ImageError(
                f"{names[0][1]} is {fluo_size[0]}x{fluo_size[1]} but the fluorescence camera's intrinsics are for "
                f"{isize[0]}x{isize[1]}: use that camera at that resolution, or redo its intrinsics"
            )
    pairs = []
    for k, (ci, fi) in enumerate(zip(colour_images, fluo_images)):
        cn, fn = names[k]
        if _size(ci) != colour_size:
            w, h = _size(ci)
            raise ImageError(
                f"{cn} is {w}x{h} but the colour camera is calibrated for {colour_size[0]}x{colour_size[1]}: "
                "give the colour camera's photo first in each pair (--colour), at its calibrated resolution"
            )
        if _size(fi) != fluo_size:
            w, h = _size(fi)
            raise ImageError(
                f"{fn} is {w}x{h} but {names[0][1]} is {fluo_size[0]}x{fluo_size[1]}: all fluorescence photos must "
                "come from the fluorescence camera at one resolution"
            )
        dc = detect(ci, board)
        if dc is None:
            raise BoardNotFoundError(
                f"pair {k + 1}: no {board} found in {cn}: lay the whole board flat where both cameras see it, "
                "evenly lit, and check --board"
            )
        df = detect(fi, board)
        if df is None:
            raise BoardNotFoundError(
                f"pair {k + 1}: no {board} found in {fn}: is the board where the fluorescence camera sees it "
                "whole, and lit so that it shows (white light through its filter, or a fluorescent or backlit "
                "board)? Check its exposure and --board"
            )
        pairs.append(
            (
                dc,
                df,
                _undistort(dc.image_points, cal.K, cal.dist),
                df.image_points.copy() if fK is None else _undistort(df.image_points, fK, fdist),
            )
        )

    labels, assumed = _choose_labels(board, pairs)
    src, dst, raw_c, raw_f, which = [], [], [], [], []
    for k, ((dc, df, ci, fi), lab) in enumerate(zip(pairs, labels)):
        ids = _label_sets(board, df)[lab]
        _, ic, jf = np.intersect1d(dc.ids, ids, return_indices=True)
        if len(ic) < MIN_CORNERS_PER_VIEW:
            raise BoardNotFoundError(
                f"pair {k + 1}: {names[k][0]} and {names[k][1]} share {len(ic)} board corners (at least "
                f"{MIN_CORNERS_PER_VIEW} needed): lay the board where both cameras see it"
            )
        src.append(fi[jf])
        dst.append(ci[ic])
        raw_c.append(dc.image_points[ic])
        raw_f.append(df.image_points[jf])
        which.append(np.full(len(ic), k))
    src, dst = np.vstack(src), np.vstack(dst)
    raw_c, raw_f, which = np.vstack(raw_c), np.vstack(raw_f), np.concatenate(which)
    H = _fit(src, dst)
    reg = Registration(H, cal.K, cal.dist, colour_size, fluo_size, fK, fdist)

    # The colour camera as a pinhole (its lens taken out): the space the homography maps into.
    pinhole = CameraModel(K=cal.K, dist=np.zeros(5), R=cal.camera.R, t=cal.camera.t, image_size=colour_size)
    res_px, res_mm = _residuals(H, src, dst, pinhole, thick)

    grid, inside = reg.overlap()
    overlap_share = float(np.mean(inside))
    if not np.any(inside):
        raise DegenerateGeometryError(
            "the fitted mapping puts the fluorescence camera's view nowhere on the colour frame: the pairs are "
            "not of the same board placement; photograph them again"
        )
    hull = cv2.convexHull(raw_c.astype(np.float32)).reshape(-1, 2)
    mask = np.zeros((colour_size[1], colour_size[0]), np.uint8)
    cv2.fillConvexPoly(mask, np.round(hull).astype(np.int32), 1)
    gi = np.clip(np.round(grid).astype(int), 0, [colour_size[0] - 1, colour_size[1] - 1])
    in_hull = mask[gi[:, 1], gi[:, 0]].astype(bool)
    coverage = float(np.sum(in_hull & inside) / np.sum(inside))

    # What a plain cv2.warpPerspective with H (raw pixels taken as pinhole ones) would do.
    ov = grid[inside]
    f_raw = reg.to_fluorescence(ov)
    plain = _apply(H, f_raw)
    ok = np.all(np.isfinite(plain), axis=1)
    try:
        plain_mm = np.linalg.norm(
            cal.pixel_to_belt(plain[ok], z_mm=thick) - cal.pixel_to_belt(ov[ok], z_mm=thick), axis=1
        )
        plain_max = float(np.max(plain_mm)) if len(plain_mm) else 0.0
    except ValueError:
        plain_max = float("inf")

    fw, fh = fluo_size
    centre = np.array([(fw - 1) / 2.0, (fh - 1) / 2.0])
    c3 = reg.to_colour(np.array([centre, centre + [1.0, 0.0], centre + [0.0, 1.0]]))
    try:
        b3 = cal.pixel_to_belt(c3, z_mm=thick)
        fluo_scale = float(np.sqrt(np.linalg.norm(b3[1] - b3[0]) * np.linalg.norm(b3[2] - b3[0])))
    except ValueError:
        fluo_scale = float("nan")

    fluo_cam, parallax, pose_fit = None, None, None
    if fK is not None:
        belt = cal.pixel_to_belt(raw_c, z_mm=thick)
        xyz = np.column_stack([belt, np.full(len(belt), thick)])
        fluo_cam = _solve_pose(xyz, raw_f, fK, fdist, fluo_size)
        if fluo_cam is not None:
            pose_fit = float(np.max(np.linalg.norm(fluo_cam.project(xyz) - raw_f, axis=1)))
    if fluo_cam is not None:
        # A point 10 mm above the board's face in the middle of the overlap: where the colour
        # camera sees it, against where its fluorescence pixel lands through the registration.
        mid = cal.pixel_to_belt(ov.mean(0), z_mm=thick)[0]
        up = np.array([[mid[0], mid[1], thick + 10.0]])
        landed = reg.to_colour(fluo_cam.project(up))
        seen = cal.camera.project(up)
        try:
            parallax = float(
                np.linalg.norm(cal.pixel_to_belt(landed, z_mm=thick) - cal.pixel_to_belt(seen, z_mm=thick))
            )
        except ValueError:
            parallax = None

    notes = []
    if assumed:
        notes.append(
            f"one pair of a {board.kind} whose corners can be numbered from either end: the numbering was matched "
            "on the assumption that the two cameras are mounted turned alike; more pairs check it"
        )
    if fK is None:
        notes.append(
            "no intrinsics for the fluorescence camera: its lens is taken to be distortion-free, and any "
            "distortion it has shows in the residuals (give them with --fluorescence-intrinsics)"
        )
    if pose_fit is not None and pose_fit > POSE_FIT_LIMITS[0]:
        notes.append(
            f"the fluorescence camera's intrinsics do not fit its photos (a corner {pose_fit:.1f} px from the pose "
            "fitted to them): they are another camera's, or its lens was refocused or its resolution changed; "
            "the baseline and parallax above are then wrong: calibrate its intrinsics again "
            "('scallop calibrate intrinsics', docs/fluorescence.md)"
        )
    if overlap_share < OVERLAP_NOTE_BELOW:
        notes.append(
            f"the fluorescence camera sees {100 * overlap_share:.0f} % of the colour frame: scallops reaching "
            "outside that part get no fluorescence channel, and a line reading it sends those it finds without a uro "
            "to rework"
        )
    if not reg.exact_as_homography and plain_max > RESIDUAL_MAX_LIMITS[0]:
        notes.append(
            f"lens distortion: a plain perspective warp with the homography would be up to {plain_max:.2f} mm off "
            "over the overlap: the registration must undistort and distort around it "
            "(scallop.calibration.fluorescence.Registration does)"
        )
    if float(np.max(res_mm)) > RESIDUAL_MAX_LIMITS[1]:
        notes.append(_disagreement(src, dst, which, names, reg, pinhole, thick))
    return FluorescenceResult(
        registration=reg,
        residuals_mm=res_mm,
        residuals_px=res_px,
        corner_pair=which,
        corners_colour_px=raw_c,
        corners_fluo_px=raw_f,
        pair_names=names,
        overlap_share=overlap_share,
        board_coverage=coverage,
        plain_warp_max_mm=plain_max,
        mm_per_px=fluo_scale,
        colour_mm_per_px=cal.mm_per_px_center(),
        board=str(board),
        plane_z_mm=float(thick),
        colour_size=colour_size,
        hull_px=hull.astype(np.float64),
        notes=notes,
        fluo_intrinsics_id=fid,
        fluo_camera=fluo_cam,
        colour_camera=cal.camera,
        parallax_mm_per_10mm=parallax,
        pose_fit_px=pose_fit,
        when=_now(),
    )


def _residuals(H: np.ndarray, src: np.ndarray, dst: np.ndarray, pinhole: CameraModel, thick: float):
    """(colour px, belt mm) distances between the fluorescence corners mapped onto the colour
    frame and the colour camera's own detections, both undistorted (``src``, ``dst``): in the
    colour camera's pinhole pixels a mapping gone far wrong stays measurable, where the lens
    polynomial would fold points far outside the image back onto it."""
    mapped = _apply(H, src)
    if not np.all(np.isfinite(mapped)):
        raise DegenerateGeometryError(
            "the fitted mapping throws board corners out of the colour camera's sight: the photos of the pairs do "
            "not show the same board placements (taken at different times, or given in another order); "
            "photograph every pair again"
        )
    res_px = np.linalg.norm(mapped - dst, axis=1)
    try:
        res_mm = np.linalg.norm(
            pinhole.pixel_to_belt(mapped, z_mm=thick) - pinhole.pixel_to_belt(dst, z_mm=thick), axis=1
        )
    except ValueError:
        # Some corners mapped past the belt's horizon (a fit gone far wrong): the local scale
        # at the colour corner still says how far off, which is all a REDO needs.
        res_mm = res_px * pinhole.mm_per_px_at(dst)
    return res_px, res_mm


def _disagreement(src, dst, which, names, reg: Registration, pinhole: CameraModel, thick: float) -> str:
    """What to say when corners are off by more than the limit: the one pair that disagrees with
    the others when there is one (fitted without it, the others agree), else what to check."""
    n = len(names)
    if n >= 3:
        best = None
        for k in range(n):
            keep = which != k
            try:
                Hk = _fit(src[keep], dst[keep])
                _, others = _residuals(Hk, src[keep], dst[keep], pinhole, thick)
                _, left = _residuals(Hk, src[~keep], dst[~keep], pinhole, thick)
            except DegenerateGeometryError:
                continue
            if best is None or others.max() < best[0]:
                best = (float(others.max()), k, float(left.max()))
        if best is not None and best[0] <= RESIDUAL_MAX_LIMITS[1]:
            worst, k, left = best
            return (
                f"pair {k + 1} ({names[k][0]} + {names[k][1]}) disagrees with the others: without it they agree "
                f"within {worst:.2f} mm, its own corners are up to {left:.1f} mm off. Were its two photos taken "
                "at the same moment, the board unmoved, and given in the same place in both lists? Retake it"
            )
    lens = (
        "its intrinsics do not fit it: redo them with this camera"
        if reg.fluo_K is not None
        else "give its intrinsics (--fluorescence-intrinsics)"
    )
    return (
        "the pairs do not agree on one mapping: were both photos of every pair taken with the board unmoved, and "
        f"given in the same order in both lists? If they were, the fluorescence camera's lens distorts: {lens}"
    )


def check_section(where: str, sec) -> None:
    """A stored ``fluorescence`` part's numbers, or CalibrationFileError naming the key."""
    if not isinstance(sec, dict):
        raise CalibrationFileError(f"{where}: fluorescence must be an object, got {type(sec).__name__}")

    from scallop.calibration.store import stored_array  # the store imports this module

    def arr(key: str, shape):
        return stored_array(sec, where, "fluorescence", key, shape, "rerun 'scallop calibrate fluorescence'")

    H = arr("homography", (3, 3))
    if abs(np.linalg.det(H)) < 1e-12 or abs(H[2, 2]) < 1e-12:
        raise CalibrationFileError(
            f"{where}: fluorescence.homography is singular (it maps the view onto a line); rerun "
            "'scallop calibrate fluorescence'"
        )
    size = sec.get("image_size")
    if not (
        isinstance(size, list)
        and len(size) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise CalibrationFileError(f"{where}: fluorescence.image_size must be [width, height], got {size!r}")
    if ("K" in sec) != ("dist" in sec):
        raise CalibrationFileError(f"{where}: fluorescence holds only one of K and dist: both or neither")
    if "K" in sec:
        K = arr("K", (3, 3))
        if not (K[0, 0] > 0 and K[1, 1] > 0 and np.allclose(K[2], (0, 0, 1)) and K[1, 0] == 0):
            raise CalibrationFileError(
                f"{where}: fluorescence.K is not a camera matrix (focal lengths > 0, last row 0 0 1)"
            )
        d = arr("dist", None)
        if d.ndim != 1 or d.size not in (4, 5, 8, 12, 14):
            raise CalibrationFileError(f"{where}: fluorescence.dist must hold 4, 5, 8, 12 or 14 numbers")
    if ("R" in sec) != ("t" in sec) or ("R" in sec and "K" not in sec):
        raise CalibrationFileError(f"{where}: fluorescence holds a pose (R, t) only with both, and with K and dist")
    if "R" in sec:
        R = arr("R", (3, 3))
        if not (np.allclose(R @ R.T, np.eye(3), atol=1e-6) and np.linalg.det(R) > 0):
            raise CalibrationFileError(
                f"{where}: fluorescence.R is not a rotation matrix; rerun 'scallop calibrate fluorescence'"
            )
        arr("t", (3,))
    for key in ("plane_z_mm", "residual_max_mm"):
        if key in sec and sec[key] is not None:
            check_number(f"{where}: fluorescence.{key}", sec[key], error=CalibrationFileError)


__all__ = [
    "COVERAGE_LIMITS",
    "CORNERS_LIMITS",
    "PAIRS_LIMITS",
    "RESIDUAL_MAX_LIMITS",
    "FluorescenceResult",
    "Registration",
    "check_section",
    "plane_homography",
    "register_fluorescence",
]
