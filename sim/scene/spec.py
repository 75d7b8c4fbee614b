"""One scallop as drawn from the product mix: where it lies, its shape and its colours
(the parameters only; :mod:`scallop.sim.scene.model` turns them into geometry and pixels)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from scallop.sim.config import ProductConfig
from scallop.sim.scene.look import LAB_RANGES


def _uniform3(rng: np.random.Generator, key: str) -> tuple[float, float, float]:
    lo, hi = LAB_RANGES[key]
    return tuple(float(rng.uniform(a, b)) for a, b in zip(lo, hi))


@dataclass
class ScallopSpec:
    """One scallop: where it lies, how it is shaped and coloured.

    x_mm, y_mm:       centre on the belt material (belt frame at zero travel), mm.
    rotation_deg:     turn of the scallop on the belt.
    diameter_mm:      whole meat, 40–75 mm.
    gonad:            "female" (orange–coral) or "male" (cream, close to the adductor).
    upside_down:      lying on its back: no uro, no gonad visible.
    uro:              the uro is present (False: already gone).
    uro_length_mm / uro_width_mm: 8–18 / 5–10 mm kidney or oval.
    uro_end:          +1 / -1, which end of the gonad crescent it sits at.
    uro_bend:         0 (oval) .. 0.4 (kidney, hugging the adductor).
    uro_tilt_deg:     turn of the uro's long axis away from tangential.
    uro_highlight:    0..1, strength of the specular highlight (0 = none).
    uro_hidden:       share of the uro's width under a fold of the mantle (0 = all visible).
    gills / gill_arc_deg: an optional striated band on the side away from the gonad.
    adductor_frac:    adductor diameter as a share of the meat diameter, 0.38–0.55.
    adductor_offset_mm: adductor centre from the meat centre (scallop frame).
    gonad_arc_deg:    100–170° of crescent; gonad_fill: its thickness as a share of the room.
    mantle_width_mm:  5–12 mm frill; ellipticity and ruffle shape the outline.
    eye_dots:         10–30 dark dots along the mantle edge.
    *_lab:            per-part colour, CIE L*a*b*.
    texture_seed:     seed of the fine texture (fibres, grain, eye placement).
    """

    id: int
    x_mm: float
    y_mm: float
    rotation_deg: float = 0.0
    diameter_mm: float = 60.0
    gonad: Literal["female", "male"] = "female"
    upside_down: bool = False
    uro: bool = True
    uro_length_mm: float = 13.0
    uro_width_mm: float = 7.5
    uro_end: int = 1
    uro_bend: float = 0.2
    uro_tilt_deg: float = 0.0
    uro_highlight: float = 0.7
    uro_hidden: float = 0.0
    gills: bool = False
    gill_arc_deg: float = 90.0
    adductor_frac: float = 0.46
    adductor_offset_mm: tuple[float, float] = (0.0, -1.0)
    gonad_arc_deg: float = 135.0
    gonad_fill: float = 0.7
    mantle_width_mm: float = 8.0
    ellipticity: float = 0.03
    ruffle: float = 0.025
    eye_dots: int = 20
    mantle_lab: tuple[float, float, float] = (65.0, 6.0, 22.0)
    adductor_lab: tuple[float, float, float] = (84.0, 1.0, 13.0)
    gonad_lab: tuple[float, float, float] = (62.0, 28.0, 38.0)
    uro_lab: tuple[float, float, float] = (24.0, 2.0, 7.0)
    gill_lab: tuple[float, float, float] = (52.0, 5.0, 13.0)
    texture_seed: int = 0

    def __post_init__(self) -> None:
        checks = (
            ("diameter_mm", 30.0, 90.0),
            ("uro_length_mm", 4.0, 25.0),
            ("uro_width_mm", 2.0, 14.0),
            ("uro_bend", 0.0, 0.6),
            ("uro_highlight", 0.0, 1.0),
            ("uro_hidden", 0.0, 0.8),
            ("adductor_frac", 0.3, 0.6),
            ("gonad_arc_deg", 60.0, 200.0),
            ("gonad_fill", 0.2, 1.0),
            ("mantle_width_mm", 2.0, 15.0),
            ("ellipticity", 0.0, 0.15),
            ("ruffle", 0.0, 0.08),
            ("eye_dots", 0, 80),
            ("gill_arc_deg", 20.0, 160.0),
        )
        for name, lo, hi in checks:
            v = getattr(self, name)
            if not (lo <= v <= hi):
                raise ValueError(f"scallop {self.id}: {name}={v!r} is out of range: allowed {lo:g}..{hi:g}")
        if self.gonad not in ("female", "male"):
            raise ValueError(f"scallop {self.id}: gonad={self.gonad!r} is not allowed: choose female or male")
        if self.uro_end not in (1, -1):
            raise ValueError(f"scallop {self.id}: uro_end={self.uro_end!r} is not allowed: choose 1 or -1")

    @classmethod
    def random(
        cls,
        rng: np.random.Generator,
        id: int,
        x_mm: float,
        y_mm: float,
        product: ProductConfig | None = None,
        diameter_mm: float | None = None,
    ) -> ScallopSpec:
        """A scallop drawn from the product mix; every colour inside the spec's ranges."""
        pr = product or ProductConfig()
        d = float(diameter_mm if diameter_mm is not None else rng.uniform(*pr.diameter_mm))
        R = d / 2
        ell, ruffle = float(rng.uniform(0.0, 0.08)), float(rng.uniform(0.012, 0.04))
        adductor_frac = float(rng.uniform(0.38, 0.55))
        off_r = float(rng.uniform(0.0, 0.07)) * R
        off_a = float(np.deg2rad(-90.0 + rng.uniform(-40.0, 40.0)))  # pushed away from the gonad
        # The uro must lie inside the meat: from the adductor's edge outwards about its
        # width, and half its length to either side. Bigger meat, bigger uro.
        reach = R * (1 - ell - ruffle) - 1.0 - off_r
        size = float(np.clip((d - 40.0) / 35.0, 0.0, 1.0))
        width = float(5.0 + 5.0 * np.clip(size + rng.normal(0, 0.25), 0, 1))
        length = float(8.0 + 10.0 * np.clip(size + rng.normal(0, 0.25), 0, 1))
        a = adductor_frac * R
        if reach - a < 5.0:  # a small meat with a big adductor: shrink the adductor
            a = reach - 5.0
            adductor_frac = a / R
        width = min(width, reach - a, 0.8 * length)
        half_len = math.sqrt(max(0.0, reach**2 - (a + width) ** 2))
        if 2 * half_len < 8.0:
            width = max(5.0, reach - a - 1.0 - max(0.0, (16.0 - 2 * half_len)) * 0.5)
            half_len = math.sqrt(max(0.0, reach**2 - (a + width) ** 2))
        length = float(np.clip(length, 8.0, max(8.0, min(18.0, 2 * half_len))))
        width = float(np.clip(width, 5.0, 10.0))
        male = bool(rng.random() < pr.male_share)
        room = R - a
        return cls(
            id=int(id),
            x_mm=float(x_mm),
            y_mm=float(y_mm),
            rotation_deg=float(rng.uniform(0.0, 360.0)),
            diameter_mm=d,
            gonad="male" if male else "female",
            upside_down=bool(rng.random() < pr.upside_down_share),
            uro=bool(rng.random() >= pr.no_uro_share),
            uro_length_mm=length,
            uro_width_mm=width,
            uro_end=int(rng.choice([-1, 1])),
            uro_bend=float(rng.uniform(0.0, 0.4)),
            uro_tilt_deg=float(rng.uniform(-20.0, 20.0)),
            uro_highlight=float(rng.uniform(0.4, 1.0)) if rng.random() < 0.8 else 0.0,
            uro_hidden=float(rng.uniform(0.2, 0.5)) if rng.random() < pr.hidden_uro_share else 0.0,
            gills=bool(rng.random() < pr.gill_share),
            gill_arc_deg=float(rng.uniform(60.0, 120.0)),
            adductor_frac=adductor_frac,
            adductor_offset_mm=(off_r * math.cos(off_a), off_r * math.sin(off_a)),
            gonad_arc_deg=float(rng.uniform(100.0, 170.0)),
            gonad_fill=float(rng.uniform(0.5, 0.9)),
            mantle_width_mm=float(np.clip(rng.uniform(5.0, 12.0), 2.0, max(2.0, room - 2.0))),
            ellipticity=ell,
            ruffle=ruffle,
            eye_dots=int(rng.integers(pr.eye_dots[0], pr.eye_dots[1] + 1)),
            mantle_lab=_uniform3(rng, "mantle"),
            adductor_lab=_uniform3(rng, "adductor"),
            gonad_lab=_uniform3(rng, "gonad_male" if male else "gonad_female"),
            uro_lab=_uniform3(rng, "uro"),
            gill_lab=_uniform3(rng, "gill"),
            texture_seed=int(rng.integers(0, 2**31 - 1)),
        )

    def to_dict(self) -> dict:
        return asdict(self)
