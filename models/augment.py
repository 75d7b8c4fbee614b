"""Photometric and geometric augmentation for training (numpy + OpenCV; no torch).

Strong on purpose: the model must hold up on scenes drawn by another renderer and on real
lines, so everything the appearance spec allows to vary is varied here again on top of
what the data set already varies — lighting level and colour, gradient and vignetting,
blur, sensor noise, JPEG, belt colour — while the things that define the parts (a dark
uro, a white adductor) are left intact.
"""

from __future__ import annotations

import cv2
import numpy as np


def _field(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth multiplicative illumination: a linear gradient times a vignette."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx = xx / max(w - 1, 1) - 0.5
    yy = yy / max(h - 1, 1) - 0.5
    a = rng.uniform(-0.25, 0.25)
    b = rng.uniform(-0.25, 0.25)
    g = 1.0 + a * xx + b * yy
    v = rng.uniform(0.0, 0.35)
    cx, cy = rng.uniform(-0.2, 0.2, size=2)
    g *= 1.0 - v * ((xx - cx) ** 2 + (yy - cy) ** 2) * 2
    return g


def recolour_background(img: np.ndarray, bg_mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Paint the belt a different plastic colour (keeping its texture), so the model does not
    learn one renderer's belt palette."""
    out = img.astype(np.float32)
    lum = out[bg_mask].mean(1, keepdims=True) if bg_mask.any() else None
    if lum is None:
        return img
    target = np.array(
        rng.choice(
            [[235, 235, 232], [200, 150, 90], [170, 170, 165], [225, 205, 170], [150, 120, 70], [120, 120, 118]]
        ),
        np.float32,
    )
    target *= rng.uniform(0.8, 1.1)
    rel = lum / max(float(lum.mean()), 1.0)
    out[bg_mask] = np.clip(rel * target[None, :], 0, 255)
    return out.astype(np.uint8)


def photometric(img: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Lighting level ±30 %, colour temperature, gamma, saturation, gradient/vignette, blur,
    motion blur, noise σ 0–5, JPEG quality 55–100. ``img`` is uint8 BGR."""
    h, w = img.shape[:2]
    x = img.astype(np.float32)
    gains = np.array([rng.uniform(0.85, 1.15), 1.0, rng.uniform(0.85, 1.15)], np.float32)
    gains *= rng.uniform(0.7, 1.3) ** strength
    x *= gains
    if rng.random() < 0.6:
        x *= _field(rng, h, w)[..., None]
    if rng.random() < 0.5:
        gamma = rng.uniform(0.8, 1.25)
        x = 255.0 * np.power(np.clip(x, 0, 255) / 255.0, gamma)
    if rng.random() < 0.5:
        grey = x.mean(2, keepdims=True)
        x = grey + (x - grey) * rng.uniform(0.65, 1.3)
    if rng.random() < 0.3:
        x += rng.uniform(-12, 12)
    x = np.clip(x, 0, 255).astype(np.uint8)
    r = rng.random()
    if r < 0.25:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.4, 1.3))
    elif r < 0.5:
        n = int(rng.integers(2, 5))
        k = np.zeros((n, n), np.float32)
        if rng.random() < 0.5:
            k[n // 2, :] = 1.0 / n
        else:
            k[:, n // 2] = 1.0 / n
        x = cv2.filter2D(x, -1, k)
    if rng.random() < 0.7:
        sigma = rng.uniform(0.5, 5.0)
        noise = rng.normal(0, sigma, x.shape).astype(np.float32)
        x = np.clip(x.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.4:
        q = int(rng.integers(55, 100))
        ok, buf = cv2.imencode(".jpg", x, [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok:
            x = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return x


def fluorescence(uv: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Jitter of the fluorescence plane alone ((h, w) uint8), never the colour jitter: the
    channel has no colour, white balance or JPEG, and its belt stays dark whatever colour the
    belt is (the filter blocks the excitation). What varies between lines and renderings is the
    excitation and gain (every level scaled together, ±30 % on top of the data's ±40 % between
    scallops), the sensor noise (the spec's σ 3–8, here 0–4 more) and the longer exposure's
    blur."""
    x = uv.astype(np.float32) * rng.uniform(0.7, 1.3)
    if rng.random() < 0.4:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.4, 1.5))
    if rng.random() < 0.7:
        x += rng.normal(0, rng.uniform(0.5, 4.0), x.shape).astype(np.float32)
    return np.clip(x, 0, 255).astype(np.uint8)


def rotate_scale_crop(
    img: np.ndarray,
    labels: np.ndarray,
    centre: tuple[float, float],
    size: int,
    scale: float,
    angle_deg: float,
    flip: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """A ``size``×``size`` crop centred on ``centre`` of ``img`` resampled by ``scale``
    (output px per input px), rotated by ``angle_deg``; labels resampled nearest. ``img`` may
    carry a fourth plane (the fluorescence image): it moves with the colour ones."""
    M = cv2.getRotationMatrix2D(centre, angle_deg, scale)
    M[0, 2] += size / 2.0 - centre[0]
    M[1, 2] += size / 2.0 - centre[1]
    if flip:
        M[0] = -M[0]
        M[0, 2] += size - 1
    im = cv2.warpAffine(img, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    lb = cv2.warpAffine(labels, M, (size, size), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT)
    return im, lb
