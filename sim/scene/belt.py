"""The belt's look: a periodic tile of modular plastic in material coordinates."""

from __future__ import annotations

import math

import cv2
import numpy as np

from scallop.sim.scene.look import LookParams


def _periodic_noise(rng: np.random.Generator, h: int, w: int, cell_px: float) -> np.ndarray:
    """Smooth noise (h, w) that repeats every ``w`` columns (the belt is a loop)."""
    gw = max(2, int(round(w / cell_px)))
    gh = max(2, int(math.ceil(h / cell_px)) + 1)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    padded = np.concatenate([grid[:, -2:], grid, grid[:, :2]], axis=1)
    cw = w / gw
    big = cv2.resize(padded, (int(round((gw + 4) * cw)), h), interpolation=cv2.INTER_CUBIC)
    x0 = int(round(2 * cw))
    return np.ascontiguousarray(big[:, x0 : x0 + w])


class BeltTexture:
    """The belt's look as a tile in material coordinates that repeats every ``period_px``
    columns: hinge lines across the belt, brick-laid module seams, a water film with sheen,
    droplets with specular highlights, and fine plastic texture.

    Row i is the belt-frame y = (ky0 + i)·s; column c is the material x = c·s (mod period).
    """

    def __init__(self, look: LookParams, s: float, ky0: int, height: int, period_px: int) -> None:
        self.s, self.ky0, self.height = s, ky0, height
        pitch_px = look.hinge_pitch_mm / s
        rows = max(2, 2 * int(math.ceil(period_px / pitch_px / 2)))  # even: the brick pattern repeats
        self.period_px = int(round(rows * pitch_px))
        self.pitch_mm = self.period_px * s / rows
        self.tile = self._build(look, np.random.default_rng([look.belt_seed, 7]))

    def _build(self, look: LookParams, rng: np.random.Generator) -> np.ndarray:
        s, h, w = self.s, self.height, self.period_px
        u = np.arange(w) * s
        y = (self.ky0 + np.arange(h)) * s
        # Hinge lines: a dark groove, a bright rounded lip just after it.
        m = np.mod(u + self.pitch_mm / 2, self.pitch_mm)  # hinges mid-way between tile ends
        d = np.where(m < self.pitch_mm / 2, m, m - self.pitch_mm)  # signed distance to the nearest hinge
        groove = (1 - 0.35 * np.exp(-((d / 0.6) ** 2)) + 0.07 * np.exp(-(((d - 1.6) / 0.7) ** 2))).astype(np.float32)
        # Module seams along the travel, offset by half a module on every other hinge row.
        mw = look.module_width_mm

        def seams(yy):
            dist = np.abs(np.mod(yy + mw / 2, mw) - mw / 2)
            return (1 - 0.22 * np.exp(-((dist / 0.45) ** 2))).astype(np.float32)

        odd = np.floor(u / self.pitch_mm + 0.5).astype(np.int64) % 2 == 1
        shade = np.where(odd[None, :], seams(y + mw / 2)[:, None], seams(y)[:, None])
        shade *= groove[None, :]
        # Wet patches (darker) and sheen (additive: the LEDs mirrored in the film).
        wet = _periodic_noise(rng, h, w, 45.0 / s)
        sheen = _periodic_noise(rng, h, w, 30.0 / s)
        shade *= 1 - 0.05 * look.water_film * (wet + 1.0)
        # Fine plastic texture: a blurred noise patch, tiled (too faint for its period to show).
        patch = cv2.GaussianBlur(rng.standard_normal((128, 128)).astype(np.float32), (0, 0), 0.7)
        fine = np.tile(patch, (h // 128 + 1, w // 128 + 1))[:h, :w]
        shade *= 1 + 0.02 * fine
        glare = (55.0 * look.water_film) * np.square(np.clip(sheen - 1.1, 0, None))
        self._droplets(shade, glare, look, rng)
        glare = glare.astype(np.float32)
        # Per channel in 2-D, then one merge of bytes: far cheaper than float colour images.
        return cv2.merge([cv2.convertScaleAbs(cv2.scaleAdd(shade, float(c), glare)) for c in look.belt_bgr])

    def _droplets(self, shade: np.ndarray, glare: np.ndarray, look: LookParams, rng: np.random.Generator) -> None:
        """Water droplets: a darker refracting rim and a specular glint (drawn anti-aliased
        into masks, then applied to the belt's shading and glare in place)."""
        s, (h, w) = self.s, shade.shape
        n = int(rng.poisson(look.droplets_per_dm2 * (h * s) * (w * s) / 10000.0))
        if n == 0:
            return
        ring = np.zeros((h, w), np.uint8)
        glint = np.zeros((h, w), np.uint8)
        sh = 4
        for _ in range(n):
            r_mm = float(np.exp(rng.uniform(np.log(0.6), np.log(3.0))))
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            r = r_mm / s
            for x in (cx - w, cx, cx + w):  # drawn across the seam so the loop is seamless
                if -r - 2 < x < w + r + 2:
                    c = (int(x * 2**sh), int(cy * 2**sh))
                    cv2.circle(ring, c, int(r * 2**sh), 255, max(1, int(round(0.35 * r))), cv2.LINE_AA, sh)
                    g = (int((x - 0.35 * r) * 2**sh), int((cy - 0.35 * r) * 2**sh))
                    cv2.circle(glint, g, max(1, int(0.28 * r * 2**sh)), 255, -1, cv2.LINE_AA, sh)
        shade *= 1 - ring.astype(np.float32) * np.float32(0.2 / 255.0)
        glare += glint.astype(np.float32) * np.float32(150.0 / 255.0)

    def strip(self, k0: int, width: int) -> np.ndarray:
        """Canvas columns k0 … k0+width−1 of the global grid, (height, width, 3) uint8."""
        out = np.empty((self.height, width, 3), np.uint8)
        start, pos = k0 % self.period_px, 0
        while pos < width:
            n = min(width - pos, self.period_px - start)
            out[:, pos : pos + n] = self.tile[:, start : start + n]
            pos += n
            start = 0
        return out
