"""Part labels and colours of the scene, and the look of a frame (belt, light, camera).

Part labels (uint8): 0 background, 1 mantle, 2 gonad, 3 adductor, 4 uro, 5 gill.
Colours are drawn in CIE L*a*b* inside the ranges of the appearance spec
(shared/spec/scallop-appearance.md) and converted to BGR with OpenCV.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import cv2
import numpy as np

# The part labels every data set uses: defined once, by the data-set reader.
from scallop.models.dataset import PART_NAMES as PART_NAMES

BACKGROUND, MANTLE, GONAD, ADDUCTOR, URO, GILL = range(6)

# L*a*b* ranges of the appearance spec: (L, a, b) lows and highs.
LAB_RANGES = {
    "adductor": ((75, -2, 8), (90, 4, 20)),
    "gonad_female": ((55, 20, 30), (70, 35, 45)),
    "gonad_male": ((75, 0, 15), (85, 5, 25)),
    "uro": ((15, -5, 0), (35, 8, 15)),
    "mantle": ((55, 3, 15), (75, 10, 28)),
    "gill": ((45, 2, 8), (60, 8, 18)),
}

# Belt plastics as BGR (low, high) per channel.
BELT_BGR = {
    "white": ((212, 214, 214), (240, 242, 242)),
    "blue": ((150, 95, 25), (205, 145, 75)),
    "grey": ((115, 115, 110), (175, 175, 170)),
}


def lab_to_bgr(lab: np.ndarray) -> np.ndarray:
    """L*a*b* (…, 3) with L 0..100 → BGR float32 0..255 (sRGB, D65, via OpenCV)."""
    arr = np.asarray(lab, dtype=np.float32)
    flat = arr.reshape(-1, 1, 3)
    bgr = cv2.cvtColor(flat, cv2.COLOR_Lab2BGR).reshape(arr.shape)
    return np.clip(bgr * 255.0, 0.0, 255.0)


def bgr_to_lab(bgr: np.ndarray) -> np.ndarray:
    """BGR uint8/float (…, 3) 0..255 → L*a*b* float32 (L 0..100)."""
    arr = np.asarray(bgr, dtype=np.float32) / 255.0
    return cv2.cvtColor(arr.reshape(-1, 1, 3), cv2.COLOR_BGR2Lab).reshape(arr.shape)


@dataclass
class LookParams:
    """Everything about a frame's appearance that is not the product.

    belt_colour:      "white" | "blue" | "grey" (modular plastic).
    belt_bgr:         base colour of the plastic, BGR 0..255.
    hinge_pitch_mm:   hinge lines across the belt every 25–50 mm.
    module_width_mm:  width of one plastic module (seams along the travel, brick-laid).
    water_film:       0..1, wet patches and sheen on the belt.
    droplets_per_dm2: water droplets (with specular highlights) per 100 cm².
    belt_seed:        seed of the belt's texture (the same seed gives the same belt).
    brightness:       lighting level, 0.75..1.25 (±25 %).
    color_temp_k:     4000..6500 K, left uncorrected by the camera's white balance.
    vignetting:       0..0.4, darkening in the corners (share of the level).
    gradient:         0..0.25, level change across the field (share), along gradient_angle_deg.
    noise_sigma:      sensor noise σ in grey levels (1..4 in the envelope).
    jpeg_quality:     75..100; 100 means not JPEG-compressed.
    motion_blur_px:   0..3, blur length along image x (the travel).
    """

    belt_colour: Literal["white", "blue", "grey"] = "white"
    belt_bgr: tuple[float, float, float] = (228.0, 230.0, 229.0)
    hinge_pitch_mm: float = 38.1
    module_width_mm: float = 100.0
    water_film: float = 0.3
    droplets_per_dm2: float = 1.5
    belt_seed: int = 0
    brightness: float = 1.0
    color_temp_k: float = 5000.0
    vignetting: float = 0.15
    gradient: float = 0.05
    gradient_angle_deg: float = 30.0
    noise_sigma: float = 2.0
    jpeg_quality: int = 100
    motion_blur_px: float = 0.0

    def __post_init__(self) -> None:
        checks = (
            ("hinge_pitch_mm", 25.0, 50.0),
            ("module_width_mm", 30.0, 400.0),
            ("water_film", 0.0, 1.0),
            ("droplets_per_dm2", 0.0, 20.0),
            ("brightness", 0.5, 1.5),
            ("color_temp_k", 3000.0, 8000.0),
            ("vignetting", 0.0, 0.5),
            ("gradient", 0.0, 0.5),
            ("noise_sigma", 0.0, 10.0),
            ("jpeg_quality", 30, 100),
            ("motion_blur_px", 0.0, 10.0),
        )
        for name, lo, hi in checks:
            v = getattr(self, name)
            if not (lo <= v <= hi):
                raise ValueError(f"{name}={v!r} is out of range: allowed {lo:g}..{hi:g}")
        if self.belt_colour not in BELT_BGR:
            raise ValueError(f"belt_colour={self.belt_colour!r} is not allowed: choose white, blue or grey")
        self.belt_bgr = tuple(float(v) for v in self.belt_bgr)

    @classmethod
    def random(cls, rng: np.random.Generator) -> LookParams:
        """A look drawn across the whole appearance envelope."""
        colour = str(rng.choice(["white", "blue", "grey"], p=[0.45, 0.3, 0.25]))
        lo, hi = BELT_BGR[colour]
        bgr = tuple(float(rng.uniform(a, b)) for a, b in zip(lo, hi))
        # Most line cameras deliver raw frames; some compress down to quality 75.
        jpeg = 100 if rng.random() < 0.3 else int(rng.integers(75, 100))
        return cls(
            belt_colour=colour,
            belt_bgr=bgr,
            hinge_pitch_mm=float(rng.uniform(25.0, 50.0)),
            module_width_mm=float(rng.uniform(50.0, 160.0)),
            water_film=float(rng.uniform(0.0, 1.0)),
            droplets_per_dm2=float(rng.choice([0.0, rng.uniform(0.2, 2.0), rng.uniform(2.0, 8.0)])),
            belt_seed=int(rng.integers(0, 2**31 - 1)),
            brightness=float(rng.uniform(0.75, 1.25)),
            color_temp_k=float(rng.uniform(4000.0, 6500.0)),
            vignetting=float(rng.uniform(0.0, 0.35)),
            gradient=float(rng.uniform(0.0, 0.2)),
            gradient_angle_deg=float(rng.uniform(0.0, 360.0)),
            noise_sigma=float(rng.uniform(1.0, 4.0)),
            jpeg_quality=jpeg,
            motion_blur_px=float(rng.uniform(0.0, 3.0)),
        )

    def belt_key(self) -> tuple:
        """What the belt texture depends on (the rest is lighting and camera)."""
        return (
            self.belt_colour,
            self.belt_bgr,
            round(self.hinge_pitch_mm, 4),
            round(self.module_width_mm, 4),
            round(self.water_film, 4),
            round(self.droplets_per_dm2, 4),
            self.belt_seed,
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["belt_bgr"] = list(self.belt_bgr)
        return d
