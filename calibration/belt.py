"""The belt plane: where the belt surface is, seen from the calibrated camera.

A board lies flat on the stopped belt; its pose, solved with the camera's intrinsics, gives
the belt frame B (see ``camera_model.py``) and so the mapping pixel → belt millimetres
(undistort, then intersect the pixel's ray with the plane z = 0).

How B is tied to the board: x runs along the board's rows of corners, turned (for a plain
chessboard, whose corners OpenCV may number from either end) so that +x is the board axis
closest to the direction of travel in the image; y lies across the belt, z up, and the
origin is the board's inner corner 0 placed at ``origin_mm`` (default (0, 0)). The board
need not be square to the belt: ``scallop calibrate encoder`` later measures the true
direction of travel and turns B so x follows it exactly (:func:`rotate_frame`).
A board printed on a plate of some thickness lies that far above the belt: pass
``thickness_mm`` and the plane is moved down to the belt surface.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field

import cv2
import numpy as np

from scallop.calibration.boards import BoardSpec, Detection, detect, parse_board
from scallop.calibration.camera_model import CameraModel
from scallop.calibration.check import Figure, overall
from scallop.calibration.errors import BoardNotFoundError, BoardSpecError, ImageError

# Limits, stated with every verdict.
RESIDUAL_MAX_LIMITS = (0.5, 1.0)  # mm: worst corner off its known place on the belt
REPROJ_LIMITS = (0.5, 1.0)  # px
TRAVEL_DIRECTIONS = {"right": (1.0, 0.0), "left": (-1.0, 0.0), "down": (0.0, 1.0), "up": (0.0, -1.0)}

# Board frame (x along rows, y along columns, z into the board) → belt frame (z up).
_BOARD_TO_BELT = np.diag([1.0, -1.0, -1.0])


def _rot_z(angle_rad: float) -> np.ndarray:
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass
class BeltResult:
    """The belt plane measured from one photo of a board lying flat on the belt.

    camera:          intrinsics plus the belt pose (R, t: belt → camera).
    residuals_mm:    (N,) distance between each corner mapped pixel → belt and its known
                     place on the belt.
    reproj_rms_px:   RMS reprojection error of the corners under the solved pose.
    corners_px:      (N, 2) the detected corners (for pictures and the drift check).
    corners_B:       (N, 3) the same corners' known positions in the belt frame, mm.
    corner_ids:      (N,) each corner's id on its board, as oriented (the first board's
                     corner 0 is the belt frame's origin); corner_photo: (N,) its photo.
    placement:       where the board was taken to lie: origin_mm, yaw_deg, thickness_mm.
    """

    camera: CameraModel
    residuals_mm: np.ndarray
    reproj_rms_px: float
    corners_px: np.ndarray
    corners_B: np.ndarray
    board: str
    placement: dict = field(default_factory=dict)
    when: str = ""
    corner_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    corner_photo: np.ndarray = field(default_factory=lambda: np.zeros(0, int))

    @property
    def residual_rms_mm(self) -> float:
        return float(np.sqrt(np.mean(self.residuals_mm**2)))

    @property
    def residual_max_mm(self) -> float:
        return float(np.max(self.residuals_mm))

    @property
    def camera_height_mm(self) -> float:
        return float(self.camera.centre_B[2])

    @property
    def tilt_deg(self) -> float:
        """Angle between the optical axis and straight down."""
        axis_B = self.camera.R.T @ np.array([0.0, 0.0, 1.0])
        return float(np.degrees(np.arccos(np.clip(-axis_B[2], -1.0, 1.0))))

    @property
    def mm_per_px(self) -> float:
        w, h = self.camera.image_size
        return float(self.camera.mm_per_px_at([(w - 1) / 2, (h - 1) / 2])[0])

    def figures(self) -> list[Figure]:
        return [
            Figure("worst corner residual on the belt", self.residual_max_mm, "mm", *RESIDUAL_MAX_LIMITS),
            Figure("reprojection error", self.reproj_rms_px, "px", *REPROJ_LIMITS),
        ]

    @property
    def verdict(self) -> str:
        return overall(self.figures())

    def to_json(self) -> dict:
        return {
            "residual_rms_mm": round(self.residual_rms_mm, 4),
            "residual_max_mm": round(self.residual_max_mm, 4),
            "reproj_rms_px": round(self.reproj_rms_px, 4),
            "corners": len(self.residuals_mm),
            "camera_height_mm": round(self.camera_height_mm, 2),
            "tilt_deg": round(self.tilt_deg, 3),
            "mm_per_px": round(self.mm_per_px, 4),
            "board": self.board,
            "placement": self.placement,
            "R": self.camera.R.tolist(),
            "t": self.camera.t.tolist(),
            "verdict": self.verdict,
            "figures": [f.to_dict() for f in self.figures()],
        }

    def section(self) -> dict:
        """The ``belt`` part of the line calibration file."""
        return {
            "when": self.when,
            "board": self.board,
            "placement": self.placement,
            "R": self.camera.R.tolist(),
            "t": self.camera.t.tolist(),
            "residual_rms_mm": self.residual_rms_mm,
            "residual_max_mm": self.residual_max_mm,
            "reproj_rms_px": self.reproj_rms_px,
            "camera_height_mm": self.camera_height_mm,
            "tilt_deg": self.tilt_deg,
            "mm_per_px": self.mm_per_px,
            "travel_angle_deg": 0.0,
            "verdict": self.verdict,
        }


def _solve_board_pose(obj: np.ndarray, px: np.ndarray, K: np.ndarray, dist: np.ndarray):
    """Board → camera pose from planar points (z = 0): IPPE, then Levenberg–Marquardt."""
    obj32 = obj.astype(np.float64).reshape(-1, 1, 3)
    px64 = px.astype(np.float64).reshape(-1, 1, 2)
    ok, rvec, tvec = cv2.solvePnP(obj32, px64, K, dist, flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        raise BoardNotFoundError("the board's pose could not be solved from its corners")
    rvec, tvec = cv2.solvePnPRefineLM(obj32, px64, K, dist, rvec, tvec)
    R, _ = cv2.Rodrigues(rvec)
    return R, tvec.ravel()


def _orient(board: BoardSpec, det: Detection, K, dist, travel_px) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(object points, R, t) of the board → camera pose, with a plain chessboard's numbering
    chosen so its +x axis points most nearly along the travel in the image."""
    best = None
    for perm in board.relabelings():
        obj = board.object_points(perm[det.ids])
        R_bc, t_bc = _solve_board_pose(obj, det.image_points, K, dist)
        ends = np.array([[0.0, 0.0, 0.0], [board.square_mm, 0.0, 0.0]]).reshape(-1, 1, 3)
        a, _ = cv2.projectPoints(ends, cv2.Rodrigues(R_bc)[0], t_bc, K, dist)
        d = a.reshape(-1, 2)[1] - a.reshape(-1, 2)[0]
        score = float(np.dot(d / (np.linalg.norm(d) + 1e-12), travel_px))
        if best is None or score > best[0]:
            best = (score, obj, R_bc, t_bc)
    return best[1], best[2], best[3]


def _board_in_belt(theta: float, x: float, y: float, z: float):
    """(M, o): a board lying face up, turned theta, corner 0 at (x, y, z): X_B = M X_board + o."""
    return _rot_z(theta) @ _BOARD_TO_BELT, np.array([x, y, z])


def _refine_plane(R, t, extra: list, objs: list, pxs: list, K, dist, iterations: int = 30):
    """Jointly refine the belt pose (R, t) and the in-plane placement (x, y, theta) of every
    further board so all corners reproject best (Levenberg–Marquardt, numeric Jacobian: a
    few dozen parameters at most)."""

    def unpack(p):
        Rr, _ = cv2.Rodrigues(p[:3])
        return Rr, p[3:6], p[6:].reshape(-1, 3)

    def residual(p):
        _, tt, pl = unpack(p)
        rv = p[:3]
        out = []
        for k, (obj, px) in enumerate(zip(objs, pxs)):
            if k == 0:
                M, o = _board_in_belt(0.0, 0.0, 0.0, 0.0)  # board 0 fixed: it defines the frame
                X = obj @ M.T + o
            else:
                M, o = _board_in_belt(pl[k - 1, 2], pl[k - 1, 0], pl[k - 1, 1], 0.0)
                X = obj @ M.T + o
            proj, _ = cv2.projectPoints(X.reshape(-1, 1, 3), rv, tt, K, dist)
            out.append((proj.reshape(-1, 2) - px).ravel())
        return np.concatenate(out)

    p = np.concatenate([cv2.Rodrigues(R)[0].ravel(), t, np.asarray(extra, dtype=np.float64).ravel()])
    lam = 1e-3
    r = residual(p)
    cost = float(r @ r)
    for _ in range(iterations):
        J = np.empty((len(r), len(p)))
        for i in range(len(p)):
            step = 1e-6 * max(1.0, abs(p[i]))
            q = p.copy()
            q[i] += step
            J[:, i] = (residual(q) - r) / step
        A = J.T @ J
        g = J.T @ r
        improved = False
        for _ in range(10):
            dp = -np.linalg.solve(A + lam * np.diag(np.diag(A) + 1e-12), g)
            r_new = residual(p + dp)
            c_new = float(r_new @ r_new)
            if c_new < cost:
                p, r, lam = p + dp, r_new, max(lam / 10, 1e-9)
                improved = cost - c_new > 1e-12 * cost
                cost = c_new
                break
            lam *= 10
        if not improved:
            break
    Rr, tt, pl = unpack(p)
    return Rr, tt, pl


def measure_belt(
    images,
    board: BoardSpec | str,
    K,
    dist,
    image_size: tuple[int, int],
    *,
    travel: str | tuple[float, float] = "right",
    origin_mm: tuple[float, float] = (0.0, 0.0),
    yaw_deg: float = 0.0,
    thickness_mm: float = 0.0,
    detection: Detection | None = None,
) -> BeltResult:
    """Solve the belt plane from photos of ``board`` lying flat on the belt.

    images:       one photo, or several with the board moved to other places on the belt
                  (slid across, or carried by the belt between photos). The first photo's
                  board defines the frame; the others only pin the plane down over more of
                  the field (a single board tilts the plane slightly far from itself).
    travel:       the direction things move across the image ("right", "left", "down",
                  "up", or an image vector): picks which board axis becomes belt +x.
    origin_mm:    where on the belt frame the first board's inner corner 0 is taken to be.
    yaw_deg:      that board's known turn from the belt x axis (0 when unknown: the encoder
                  step measures and removes it).
    thickness_mm: how far the printed surface lies above the belt.
    detection:    the first photo's board detection, when already done.
    """
    board = parse_board(board)
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    dist = np.asarray(dist, dtype=np.float64).ravel()
    w, h = (int(v) for v in image_size)
    images = [images] if isinstance(images, np.ndarray) else list(images)
    if not images:
        raise ImageError("no photo of the board on the belt given")
    for k, image in enumerate(images):
        img_h, img_w = image.shape[:2]
        if (img_w, img_h) != (w, h):
            raise ImageError(
                f"photo {k + 1} is {img_w}x{img_h} but the intrinsics are for {w}x{h}: use the same camera "
                f"and resolution, or redo the intrinsics for this one"
            )
    if not (0 <= thickness_mm < 100):
        # The board's description, not a photo, is wrong: a usage error (exit 2).
        raise BoardSpecError(f"thickness_mm={thickness_mm} is out of range: allowed 0..100")
    if isinstance(travel, str):
        if travel not in TRAVEL_DIRECTIONS:
            raise ImageError(f"travel={travel!r} is unknown: use one of {', '.join(TRAVEL_DIRECTIONS)}")
        travel_px = np.array(TRAVEL_DIRECTIONS[travel])
    else:
        travel_px = np.asarray(travel, dtype=np.float64)
        travel_px = travel_px / np.linalg.norm(travel_px)
    dets = []
    for k, image in enumerate(images):
        det = detection if (k == 0 and detection is not None) else detect(image, board)
        if det is None:
            raise BoardNotFoundError(
                f"no {board} found in photo {k + 1}: lay the whole board flat in view, evenly lit, and check --board"
            )
        dets.append(det)

    # Work in a frame with board 0's corner at the origin on the plane z = 0 (F), then place
    # F in the belt frame B: X_B = Mf @ X_F + o.
    objs, poses = [], []
    for det in dets:
        obj, R_bc, t_bc = _orient(board, det, K, dist, travel_px)
        objs.append(obj)
        poses.append((R_bc, t_bc))
    R0, t0 = poses[0]
    R = R0 @ _BOARD_TO_BELT.T  # F → camera (F = board 0 turned face up)
    t = t0
    extra = []
    for R_bc, t_bc in poses[1:]:
        # board k in F: X_F = R.T (R_bc X_board + t_bc - t)
        Rk = R.T @ R_bc @ _BOARD_TO_BELT.T
        ok = R.T @ (t_bc - t)
        extra.append((ok[0], ok[1], np.arctan2(Rk[1, 0], Rk[0, 0])))
    pxs = [d.image_points for d in dets]
    if len(dets) > 1:
        R, t, placed = _refine_plane(R, t, extra, objs, pxs, K, dist)
    else:
        placed = np.zeros((0, 3))

    Mf = _rot_z(np.radians(yaw_deg))
    o = np.array([origin_mm[0], origin_mm[1], thickness_mm], dtype=np.float64)
    R_B = R @ Mf.T
    t_B = t - R_B @ o
    cam = CameraModel(K=K, dist=dist, R=R_B, t=t_B, image_size=(w, h))
    if cam.centre_B[2] <= 0:
        raise BoardNotFoundError("the solved camera lies below the board: the detection is not trustworthy")
    corners_B, corners_px, ids, photo = [], [], [], []
    nx = board.corner_grid[0]
    for k, (obj, det) in enumerate(zip(objs, dets)):
        ids.append((np.rint(obj[:, 1] / board.square_mm) * nx + np.rint(obj[:, 0] / board.square_mm)).astype(int))
        photo.append(np.full(len(obj), k))
        if k == 0:
            M, ok_ = _board_in_belt(0.0, 0.0, 0.0, 0.0)
        else:
            M, ok_ = _board_in_belt(placed[k - 1, 2], placed[k - 1, 0], placed[k - 1, 1], 0.0)
        X_F = obj @ M.T + ok_
        corners_B.append(X_F @ Mf.T + o)
        corners_px.append(det.image_points)
    corners_B = np.vstack(corners_B)
    corners_px = np.vstack(corners_px)
    mapped = cam.pixel_to_belt(corners_px, z_mm=thickness_mm)
    residuals = np.linalg.norm(mapped - corners_B[:, :2], axis=1)
    reproj = cam.project(corners_B) - corners_px
    return BeltResult(
        camera=cam,
        residuals_mm=residuals,
        reproj_rms_px=float(np.sqrt(np.mean(np.sum(reproj**2, axis=1)))),
        corners_px=corners_px,
        corners_B=corners_B,
        board=str(board),
        placement={
            "origin_mm": [float(origin_mm[0]), float(origin_mm[1])],
            "yaw_deg": float(yaw_deg),
            "thickness_mm": float(thickness_mm),
            "travel": travel if isinstance(travel, str) else [float(v) for v in travel_px],
            "photos": len(dets),
        },
        when=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        corner_ids=np.concatenate(ids),
        corner_photo=np.concatenate(photo),
    )


def pixel_to_belt(camera: CameraModel, px, z_mm: float = 0.0) -> np.ndarray:
    """Pixels (N, 2) → belt mm (N, 2) on the plane z = ``z_mm``: undistort, then ray–plane."""
    return camera.pixel_to_belt(px, z_mm=z_mm)


def rotate_frame(camera: CameraModel, angle_rad: float, pivot_xy=(0.0, 0.0)) -> CameraModel:
    """The same camera with the belt frame turned by ``angle_rad`` about the vertical through
    ``pivot_xy`` (the new x axis is the old frame's direction at that angle; the pivot keeps
    its coordinates, so the board corner that defined the origin stays where it was said to be)."""
    Rz, shift = turn_about(angle_rad, pivot_xy)
    # X_old = Rz @ X_new + shift
    return CameraModel(
        K=camera.K, dist=camera.dist, R=camera.R @ Rz, t=camera.t + camera.R @ shift, image_size=camera.image_size
    )


def turn_about(angle_rad: float, pivot_xy=(0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """(Rz (3, 3), shift (3,)) with ``X_old = Rz @ X_new + shift`` for a frame turned by
    ``angle_rad`` about the vertical through ``pivot_xy``."""
    Rz = _rot_z(angle_rad)
    o = np.array([pivot_xy[0], pivot_xy[1], 0.0], dtype=np.float64)
    return Rz, o - Rz @ o
