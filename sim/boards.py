"""Calibration boards photographed by a simulated camera whose parameters are known.

A printed board (chessboard or ChArUco) is placed anywhere in the belt frame B — tilted
towards the camera for intrinsics, flat on the belt for the belt plane, slid along the belt
for the encoder — and "photographed" through a :class:`CameraModel`: for every pixel the
(undistorted) ray is intersected with the board's plane and the printed texture is looked
up there; pixels are supersampled, then mildly blurred and given sensor noise. Because the
camera is known exactly, what calibration recovers can be compared with the truth.

Placement: ``X_B = R_board @ X_board + origin`` with the board frame of
``scallop.calibration.boards`` (origin at inner corner 0, x along rows, y along columns,
z into the board). :func:`flat_pose` and :func:`tilted_pose` build the usual placements.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from scallop.calibration.boards import BoardSpec, parse_board
from scallop.calibration.camera_model import CameraModel

# Board frame z points into the board; a board lying face up has its z pointing down.
_FACE_UP = np.diag([1.0, -1.0, -1.0])


def _rot(axis: str, deg: float) -> np.ndarray:
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float64)
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float64)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)


def flat_pose(origin_xy_mm=(0.0, 0.0), yaw_deg: float = 0.0, thickness_mm: float = 0.0):
    """A board lying face up on the belt, inner corner 0 at ``origin_xy_mm``, its x axis
    turned ``yaw_deg`` from belt +x, its printed face ``thickness_mm`` above the belt."""
    R = _rot("z", yaw_deg) @ _FACE_UP
    return R, np.array([origin_xy_mm[0], origin_xy_mm[1], thickness_mm], dtype=np.float64)


def tilted_pose(board: BoardSpec | str, centre_B, tilt_x_deg: float, tilt_y_deg: float, yaw_deg: float = 0.0):
    """A board held face up with its centre at ``centre_B`` (mm), tipped ``tilt_x_deg`` about
    belt x and ``tilt_y_deg`` about belt y after turning ``yaw_deg`` about the vertical."""
    board = parse_board(board)
    R = _rot("x", tilt_x_deg) @ _rot("y", tilt_y_deg) @ _rot("z", yaw_deg) @ _FACE_UP
    nx, ny = board.corner_grid
    centre_board = np.array([(nx - 1) * board.square_mm / 2, (ny - 1) * board.square_mm / 2, 0.0])
    origin = np.asarray(centre_B, dtype=np.float64) - R @ centre_board
    return R, origin


def board_corners_B(board: BoardSpec | str, pose) -> np.ndarray:
    """All inner corners (N, 3) in the belt frame for a placement ``(R, origin)``."""
    board = parse_board(board)
    R, o = pose
    return board.object_points() @ np.asarray(R).T + np.asarray(o)


@lru_cache(maxsize=8)
def _camera_rays(K_bytes: bytes, dist_bytes: bytes, size: tuple[int, int], ss: int):
    """Camera-frame rays (x, y, 1) through the sub-pixel sample positions, as two
    (H*ss, W*ss) float32 images x and y (lens distortion removed)."""
    K = np.frombuffer(K_bytes, dtype=np.float64).reshape(3, 3)
    dist = np.frombuffer(dist_bytes, dtype=np.float64)
    w, h = size
    offs = (np.arange(ss) + 0.5) / ss - 0.5
    u = (np.arange(w)[:, None] + offs[None, :]).ravel()
    v = (np.arange(h)[:, None] + offs[None, :]).ravel()
    uu, vv = np.meshgrid(u, v)
    pts = np.column_stack([uu.ravel(), vv.ravel()]).reshape(-1, 1, 2)
    norm = cv2.undistortPoints(pts, K, dist).reshape(len(v), len(u), 2)
    # float32 halves the memory traffic of every render; 1e-7 relative is far below a texel.
    return np.ascontiguousarray(norm[..., 0], np.float32), np.ascontiguousarray(norm[..., 1], np.float32)


@lru_cache(maxsize=8)
def _texture(board_str: str, px_per_mm: float) -> tuple[np.ndarray, float, float]:
    img, ppm, origin_px = parse_board(board_str).render(px_per_mm)
    return img.astype(np.float32) / 255.0, ppm, origin_px


def render_board(
    camera: CameraModel,
    board: BoardSpec | str,
    pose,
    *,
    belt_grey: float = 120.0,
    black: float = 30.0,
    white: float = 225.0,
    supersample: int = 2,
    px_per_mm: float = 6.0,
    blur_sigma: float = 0.6,
    noise_sigma: float = 1.5,
    shading: float = 0.1,
    seed: int = 0,
) -> np.ndarray:
    """The camera's (H, W, 3) uint8 BGR picture of ``board`` placed at ``pose`` = (R, origin).

    Everything outside the board shows a plain belt (``belt_grey``); ``shading`` is the
    depth of a smooth brightness fall-off towards the image corners (vignetting).
    """
    board = parse_board(board)
    w, h = camera.image_size
    ss = int(supersample)
    rx, ry = _camera_rays(camera.K.tobytes(), camera.dist.tobytes(), (w, h), ss)
    R_b, o_b = (np.asarray(a, dtype=np.float64) for a in pose)
    # Board plane in the camera frame: X_C = Rc @ X_board + tc. A ray r = (x, y, 1) meets it
    # where s · (Rc.T r) - Rc.T tc has no z: board point = s · q - tb with q = Rc.T r.
    Rc = camera.R @ R_b
    tc = camera.R @ o_b + camera.t
    tb = Rc.T @ tc
    c = Rc.astype(np.float32)
    qz = rx * c[0, 2] + ry * c[1, 2] + c[2, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.float32(tb[2]) / qz
    tex, ppm, origin_px = _texture(str(board), float(px_per_mm))
    ok = np.isfinite(sc) & (sc > 0)
    mx = (rx * c[0, 0] + ry * c[1, 0] + c[2, 0]) * sc
    mx -= np.float32(tb[0])
    mx *= np.float32(ppm)
    mx += np.float32(origin_px)
    my = (rx * c[0, 1] + ry * c[1, 1] + c[2, 1]) * sc
    my -= np.float32(tb[1])
    my *= np.float32(ppm)
    my += np.float32(origin_px)
    mx[~ok] = -1e6
    my[~ok] = -1e6
    # The texture runs 0 (black) … 255 (white); map it to print contrast, the belt elsewhere.
    unit = cv2.remap(tex, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=-1.0)
    inside = unit >= 0
    val = np.where(inside, black + np.clip(unit, 0, 1) * (white - black), belt_grey).astype(np.float32)
    if ss > 1:
        val = val.reshape(h, ss, w, ss).mean(axis=(1, 3))
    if shading:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
        val = val * (1.0 - shading * r2 / 2.0)
    if blur_sigma > 0:
        val = cv2.GaussianBlur(val, (0, 0), blur_sigma)
    if noise_sigma > 0:
        val = val + np.random.default_rng(seed).normal(0.0, noise_sigma, val.shape).astype(np.float32)
    grey = np.clip(np.round(val), 0, 255).astype(np.uint8)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def calibration_poses(
    camera: CameraModel,
    board: BoardSpec | str,
    n: int = 12,
    *,
    seed: int = 0,
    margin_px: float = 25.0,
    max_tilt_deg: float = 40.0,
    height_mm=(60.0, 320.0),
):
    """``n`` varied placements of a board held above the belt, each wholly in view, tilted
    10–``max_tilt_deg`` degrees in changing directions and spread over the image — what an
    engineer is told to do for intrinsics."""
    board = parse_board(board)
    rng = np.random.default_rng(seed)
    w, h = camera.image_size
    # Board centres aimed at a 3×3 spread of image positions in turn, so the corners of the
    # image (where distortion is strongest) get corners too.
    targets = [(fx, fy) for fy in (0.15, 0.5, 0.85) for fx in (0.12, 0.5, 0.88)]
    poses = []
    target, misses = 0, 0
    for _ in range(300 * n):
        if len(poses) >= n:
            break
        if misses > 40:  # this aim does not fit the board: go on to the next one
            target, misses = target + 1, 0
        misses += 1
        z = rng.uniform(*height_mm)
        fx, fy = targets[target % len(targets)]
        aim = np.array([(fx + rng.uniform(-0.08, 0.08)) * (w - 1), (fy + rng.uniform(-0.08, 0.08)) * (h - 1)])
        xy = camera.pixel_to_belt(aim, z_mm=z)[0]
        tilt = rng.uniform(10.0, max_tilt_deg)
        direction = rng.uniform(0, 2 * np.pi)
        pose = tilted_pose(
            board, (xy[0], xy[1], z), tilt * np.cos(direction), tilt * np.sin(direction), yaw_deg=rng.uniform(-30, 30)
        )
        corners = board_corners_B(board, pose)
        # Facing the camera: the board's up normal points towards the camera centre.
        normal = pose[0] @ np.array([0.0, 0.0, -1.0])
        if np.dot(camera.centre_B - corners.mean(0), normal) <= 0:
            continue
        # Whole printed board (with its outer squares) in view, not only the inner corners.
        s = board.square_mm
        nx, ny = board.corner_grid
        outer = np.array([[-s, -s, 0], [nx * s, -s, 0], [nx * s, ny * s, 0], [-s, ny * s, 0]]) @ pose[0].T + pose[1]
        px = camera.project(np.vstack([corners, outer]))
        if np.all(
            (px[:, 0] > margin_px)
            & (px[:, 0] < w - 1 - margin_px)
            & (px[:, 1] > margin_px)
            & (px[:, 1] < h - 1 - margin_px)
        ):
            poses.append(pose)
            target, misses = target + 1, 0
    if len(poses) < n:
        raise ValueError(f"could only place {len(poses)} of {n} boards in view: use a smaller board")
    return poses


_VIEWS_CACHE: dict = {}


def intrinsics_views(
    camera: CameraModel, board: BoardSpec | str, n: int = 15, *, seed: int = 1, **render_kw
) -> list[tuple[str, np.ndarray]]:
    """``n`` named photos of ``board`` from :func:`calibration_poses`, rendered once per process
    for the same camera, board, count, seed and render options (tests and benchmarks share
    them). Treat the images as read-only."""
    import json

    board = parse_board(board)
    key = (json.dumps(camera.to_dict()), str(board), n, seed, tuple(sorted(render_kw.items())))
    if key not in _VIEWS_CACHE:
        poses = calibration_poses(camera, board, n, seed=seed)
        _VIEWS_CACHE[key] = [
            (f"view{i:02d}.png", render_board(camera, board, p, seed=seed * 1000 + i, **render_kw))
            for i, p in enumerate(poses)
        ]
    return _VIEWS_CACHE[key]
