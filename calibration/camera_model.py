"""Pinhole camera with lens distortion, posed above the belt plane.

Frames used throughout the project (all in millimetres):

* **belt frame B** — fixed in space on the belt surface: x along the direction of
  travel, y across the belt, z up (towards the camera). The belt surface is z = 0.
* **camera frame C** — OpenCV convention: x right, y down, z along the optical axis.
  ``R, t`` map B to C: ``X_C = R @ X_B + t``.

The same class is the calibration's result (intrinsics + belt pose) and the simulator's
ground-truth camera, so calibration code can be checked against the simulator's truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np


def _as_points(a, dim: int) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    arr = arr.reshape(-1, arr.shape[-1])
    if arr.shape[-1] != dim:
        raise ValueError(f"expected points with {dim} coordinates, got shape {np.shape(a)}")
    return arr


@dataclass
class CameraModel:
    """Intrinsics ``K`` (3×3), distortion ``dist`` (OpenCV order k1 k2 p1 p2 k3),
    pose ``R`` (3×3) / ``t`` (3,) from belt frame to camera frame, and image size (w, h)."""

    K: np.ndarray
    dist: np.ndarray
    R: np.ndarray
    t: np.ndarray
    image_size: tuple[int, int]
    _maps: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.K = np.asarray(self.K, dtype=np.float64).reshape(3, 3)
        self.dist = np.asarray(self.dist, dtype=np.float64).ravel()
        self.R = np.asarray(self.R, dtype=np.float64).reshape(3, 3)
        self.t = np.asarray(self.t, dtype=np.float64).reshape(3)
        w, h = (int(v) for v in self.image_size)
        if w <= 0 or h <= 0:
            raise ValueError(f"image_size must be positive, got {self.image_size}")
        self.image_size = (w, h)
        if not np.allclose(self.R @ self.R.T, np.eye(3), atol=1e-6):
            raise ValueError("R is not a rotation matrix")

    # ----------------------------------------------------------------- builders
    @classmethod
    def looking_down(
        cls,
        image_size: tuple[int, int] = (1280, 720),
        mm_per_px: float = 0.5,
        tilt_deg: float = 0.0,
        dist: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0),
        focal_px: float | None = None,
        center_xy_mm: tuple[float, float] = (0.0, 0.0),
        yaw_deg: float = 0.0,
    ) -> CameraModel:
        """A camera above the belt whose optical axis meets the belt at ``center_xy_mm``.

        Image x runs along the belt's travel (+x of B), image y across the belt (+y of B)
        when ``yaw_deg`` is 0. ``tilt_deg`` pitches the camera about the across-belt axis.
        ``mm_per_px`` sets the mounting height (height = focal · mm_per_px at the centre).
        """
        w, h = image_size
        f = float(focal_px) if focal_px else 1.1 * w
        K = np.array([[f, 0, (w - 1) / 2.0], [0, f, (h - 1) / 2.0], [0, 0, 1.0]])
        # Straight down with a proper rotation (det +1): C.x = B.x, C.y = -B.y, C.z = -B.z,
        # so image x runs along the travel and image y along -y of the belt.
        R0 = np.array([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]])
        yaw = np.deg2rad(yaw_deg)
        Rz = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
        tilt = np.deg2rad(tilt_deg)
        # Pitch about the camera's own y axis (the across-belt axis): the view tips along x.
        Ry = np.array([[np.cos(tilt), 0, np.sin(tilt)], [0, 1, 0], [-np.sin(tilt), 0, np.cos(tilt)]])
        R = Ry @ R0 @ Rz.T
        # Distance along the optical axis that gives mm_per_px at the principal point.
        distance = f * mm_per_px
        axis_B = R.T @ np.array([0.0, 0.0, 1.0])
        aim = np.array([center_xy_mm[0], center_xy_mm[1], 0.0])
        t = -R @ (aim - axis_B * distance)
        return cls(K=K, dist=np.asarray(dist, dtype=np.float64), R=R, t=t, image_size=(w, h))

    # ----------------------------------------------------------------- geometry
    @property
    def centre_B(self) -> np.ndarray:
        """Camera centre in the belt frame (mm)."""
        return -self.R.T @ self.t

    @property
    def rvec(self) -> np.ndarray:
        return cv2.Rodrigues(self.R)[0].ravel()

    def project(self, points_B) -> np.ndarray:
        """Belt-frame 3-D points (N,3) → distorted pixel coordinates (N,2)."""
        pts = _as_points(points_B, 3)
        px, _ = cv2.projectPoints(pts.reshape(-1, 1, 3), self.rvec, self.t, self.K, self.dist)
        return px.reshape(-1, 2)

    def project_belt(self, xy_mm) -> np.ndarray:
        """Points on the belt surface (N,2) → pixels (N,2)."""
        xy = _as_points(xy_mm, 2)
        return self.project(np.column_stack([xy, np.zeros(len(xy))]))

    def pixel_rays(self, px) -> np.ndarray:
        """Pixels (N,2) → unit ray directions in the belt frame (N,3), lens distortion removed."""
        uv = _as_points(px, 2)
        norm = cv2.undistortPoints(uv.reshape(-1, 1, 2), self.K, self.dist).reshape(-1, 2)
        rays_C = np.column_stack([norm, np.ones(len(norm))])
        rays_B = rays_C @ self.R  # R.T @ r for each row
        return rays_B / np.linalg.norm(rays_B, axis=1, keepdims=True)

    def pixel_to_belt(self, px, z_mm: float = 0.0) -> np.ndarray:
        """Pixels (N,2) → belt-frame points (N,2) on the plane z = ``z_mm`` (ray–plane)."""
        rays = self.pixel_rays(px)
        c = self.centre_B
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (z_mm - c[2]) / rays[:, 2]
        if np.any(~np.isfinite(s)) or np.any(s <= 0):
            raise ValueError("a pixel's ray does not meet the belt plane in front of the camera")
        return c[None, :2] + s[:, None] * rays[:, :2]

    def belt_maps(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel belt coordinates (x_mm, y_mm), each (h, w) float32, computed once.

        The simulator renders *through* the camera with these: a pixel shows whatever lies
        on the belt where its (distorted) ray lands.
        """
        if "belt" not in self._maps:
            w, h = self.image_size
            u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
            xy = self.pixel_to_belt(np.column_stack([u.ravel(), v.ravel()]))
            self._maps["belt"] = (
                xy[:, 0].reshape(h, w).astype(np.float32),
                xy[:, 1].reshape(h, w).astype(np.float32),
            )
        return self._maps["belt"]

    def mm_per_px_at(self, px) -> np.ndarray:
        """Local scale on the belt (mm per pixel, geometric mean of both axes) at pixels (N,2)."""
        uv = _as_points(px, 2)
        a = self.pixel_to_belt(uv)
        bx = self.pixel_to_belt(uv + [1.0, 0.0])
        by = self.pixel_to_belt(uv + [0.0, 1.0])
        return np.sqrt(np.linalg.norm(bx - a, axis=1) * np.linalg.norm(by - a, axis=1))

    # ----------------------------------------------------------------- (de)serialise
    def mm_per_px_center(self) -> float:
        """Scale at the image centre, millimetres of belt per pixel."""
        w, h = self.image_size
        return float(self.mm_per_px_at([[(w - 1) / 2.0, (h - 1) / 2.0]])[0])

    def view_x_range(self) -> tuple[float, float]:
        """Belt-frame x (mm) covered by the image, from its border pixels."""
        w, h = self.image_size
        u = np.linspace(0, w - 1, 33)
        v = np.linspace(0, h - 1, 19)
        border = np.concatenate(
            [
                np.column_stack([u, np.zeros_like(u)]),
                np.column_stack([u, np.full_like(u, h - 1)]),
                np.column_stack([np.zeros_like(v), v]),
                np.column_stack([np.full_like(v, w - 1), v]),
            ]
        )
        x = self.pixel_to_belt(border)[:, 0]
        return float(x.min()), float(x.max())

    def to_dict(self) -> dict:
        return {
            "image_size": list(self.image_size),
            "K": self.K.tolist(),
            "dist": self.dist.tolist(),
            "R": self.R.tolist(),
            "t": self.t.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> CameraModel:
        return cls(K=d["K"], dist=d["dist"], R=d["R"], t=d["t"], image_size=tuple(d["image_size"]))


def interpolated_maps(size: tuple[int, int], fn, step: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Any smooth per-pixel map ``fn`` (pixels (N, 2) → (N, 2)) of an image of ``size``
    (w, h), evaluated every ``step`` pixels and interpolated bilinearly: two (h, w) float32."""
    w, h = size
    gx = np.arange(-step, w + 2 * step, step, dtype=np.float64)
    gy = np.arange(-step, h + 2 * step, step, dtype=np.float64)
    u, v = np.meshgrid(gx, gy)
    xy = fn(np.column_stack([u.ravel(), v.ravel()]))

    def weights(n: int) -> tuple[np.ndarray, np.ndarray]:
        pos = (np.arange(n) + step) / step  # grid node k sits at pixel (k - 1)·step
        i0 = np.floor(pos).astype(np.intp)
        return i0, (pos - i0).astype(np.float32)

    ix, fx = weights(w)
    iy, fy = weights(h)
    out = []
    for grid in (xy[:, 0].reshape(u.shape), xy[:, 1].reshape(u.shape)):
        # Separable linear interpolation in float arithmetic (cv2.remap would round the
        # weights to 1/32 of a cell).
        rows = (grid[:, ix] * (1 - fx) + grid[:, ix + 1] * fx).astype(np.float32)
        out.append(rows[iy] * (1 - fy)[:, None] + rows[iy + 1] * fy[:, None])
    return out[0], out[1]
