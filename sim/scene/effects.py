"""What the camera adds in image space: light level and colour cast, vignetting and a
gradient across the field, motion blur along the travel, sensor noise and JPEG."""

from __future__ import annotations

import math

import cv2
import numpy as np

from scallop.sim.scene.look import LookParams


def white_balance_gains(color_temp_k: float) -> np.ndarray:
    """BGR gains of a light at ``color_temp_k`` seen by a camera balanced for about 5200 K:
    warmer light leaves the image redder, cooler light bluer (a smooth approximation of the
    residual cast, a few per cent per 1000 K)."""
    x = (color_temp_k - 5200.0) / 1300.0
    return np.array([1 + 0.11 * x, 1 + 0.01 * x, 1 - 0.10 * x], np.float32)


def field_gain(size: tuple[int, int], vignetting: float, gradient: float, angle_deg: float) -> np.ndarray:
    """(h, w) float32 illumination falloff: radial vignetting times a linear gradient."""
    w, h = size
    nx = ((np.arange(w) - (w - 1) / 2) / (w / 2)).astype(np.float32)
    ny = ((np.arange(h) - (h - 1) / 2) / (h / 2)).astype(np.float32)
    k = 1.0 / (w**2 + h**2)
    r2 = (nx**2 * (w**2 * k))[None, :] + (ny**2 * (h**2 * k))[:, None]  # 1 at the corners
    a = np.deg2rad(angle_deg)
    grad = (gradient * 0.5 * math.cos(a) * nx)[None, :] + (gradient * 0.5 * math.sin(a) * ny)[:, None]
    return ((1 - vignetting * r2) * (1 + grad)).astype(np.float32)


def motion_kernel(length_px: float) -> np.ndarray | None:
    """A 1×n box kernel of fractional length along image x (None when negligible)."""
    if length_px < 0.25:
        return None
    half = length_px / 2
    n = int(math.ceil(half + 0.5))
    xs = np.arange(-n, n + 1, dtype=np.float64)
    w = np.clip(np.minimum(xs + 0.5, half) - np.maximum(xs - 0.5, -half), 0, None)
    return (w / w.sum()).astype(np.float32)[None, :]


def jpeg_roundtrip(img: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 BGR
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


class CameraEffects:
    """Lighting, blur and sensor noise in image space, with per-look caches so a running
    world pays only for the per-frame arithmetic."""

    _BANK: np.ndarray | None = None  # shared by every renderer in the process
    _BANK_PAD = (97, 131)

    def __init__(self, size: tuple[int, int], noise_bank: bool = True) -> None:
        self.size = size
        self._gain_key: tuple | None = None
        self._gain: np.ndarray | None = None
        self._shape_key: tuple | None = None
        self._shape: np.ndarray | None = None
        self._use_bank = noise_bank

    def _field(self, look: LookParams) -> np.ndarray:
        """(h, w, 3) float32 gain: the field's falloff times the light's level and colour.
        Cached: a steady look costs one multiply per frame."""
        key = (
            round(look.vignetting, 6),
            round(look.gradient, 6),
            round(look.gradient_angle_deg, 3),
            round(look.brightness, 6),
            round(look.color_temp_k, 3),
        )
        if key != self._gain_key:
            if key[:3] != self._shape_key:
                self._shape = field_gain(self.size, look.vignetting, look.gradient, look.gradient_angle_deg)
                self._shape_key = key[:3]
            gains = white_balance_gains(look.color_temp_k) * look.brightness
            self._gain = cv2.multiply(
                cv2.cvtColor(self._shape, cv2.COLOR_GRAY2BGR), (float(gains[0]), float(gains[1]), float(gains[2]), 0.0)
            )
            self._gain_key = key
        return self._gain

    def _noise(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        if not self._use_bank:
            return rng.standard_normal(shape, dtype=np.float32)
        h, w = shape[:2]
        py, px = self._BANK_PAD
        bank = CameraEffects._BANK
        if bank is None or bank.shape[0] < h + py or bank.shape[1] < w + px:
            # One bank of noise for the largest frame, read at a random offset each frame:
            # drawing millions of normals per frame would cost most of the frame budget.
            bank = np.random.default_rng(12345).standard_normal(
                (max(h, 1080) + py, max(w, 1920) + px, 3), dtype=np.float32
            )
            CameraEffects._BANK = bank
        oy, ox = int(rng.integers(0, py)), int(rng.integers(0, px))
        return bank[oy : oy + h, ox : ox + w]

    def apply(self, img: np.ndarray, look: LookParams, rng: np.random.Generator) -> np.ndarray:
        """BGR uint8 → BGR uint8 (before JPEG)."""
        f = cv2.multiply(img, self._field(look), dtype=cv2.CV_32F)
        k = motion_kernel(look.motion_blur_px)
        if k is not None:
            f = cv2.filter2D(f, -1, k, borderType=cv2.BORDER_REFLECT)
        if look.noise_sigma > 0:
            f = cv2.scaleAdd(self._noise(rng, f.shape), float(look.noise_sigma), f)
        return cv2.convertScaleAbs(np.maximum(f, 0.0, out=f))  # rounds and saturates to uint8
