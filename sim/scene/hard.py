"""Hard conditions: named, seeded pushes of a frame to the edges of the appearance envelope
(shared/spec/scallop-appearance.md), for the held-out benchmark of hard scenes
(``scallop bench hard``) and for data sets that want more of them.

Each condition is a word a scene's settings can name (``DatasetSettings.hard``); every number
below stays inside the spec, the section it comes from named beside it:

``mantle_flap``     a fold of mantle over 50–80 % of the uro's width on every scallop that
                    has one ("uro partly hidden under the mantle", *Cases*; the fluorescence
                    table's "a uro under a mantle flap keeps 10–50 %").
``glare``           a wet belt at the top of its range (water film, 4–8 droplets per dm², each
                    with its specular glint: *The scene*, Belt) and a strong highlight on every
                    uro ("glossy, often with a specular highlight": *The product*).
``debris``          fragments on the belt: pale shell grit and dark torn pieces of uro from
                    earlier scallops (the fluorescence table's debris row), the dark ones in the
                    uro's own L*a*b* range: a hard negative for a "find the dark blob" model.
``tight_touching``  most scallops touching a neighbour, overlapping by up to 10 % of the
                    smaller one's area ("touching or overlapping by up to ~10 %": *Cases*).
``lighting``        the ends of the lighting envelope: brightness ±20–25 %, colour
                    temperature 4000–4300 K or 6200–6500 K, strong vignetting and gradient
                    (*The scene*, Lighting).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from scallop.sim.scene.look import LAB_RANGES, LookParams, lab_to_bgr
from scallop.sim.scene.spec import ScallopSpec

HARD_CONDITIONS = ("mantle_flap", "glare", "debris", "tight_touching", "lighting")

# Shell grit: pale, greyish fragments of shell (not in the spec's colour table: a calcite
# white to light brown, darker than the adductor's L 75–90 at its low end).
GRIT_LAB = ((62.0, -1.0, 2.0), (85.0, 4.0, 14.0))


def check_conditions(names) -> tuple[str, ...]:
    """The names as a tuple, each one of :data:`HARD_CONDITIONS` (else ValueError naming it)."""
    out = tuple(str(n) for n in names)
    for n in out:
        if n not in HARD_CONDITIONS:
            raise ValueError(f"hard condition {n!r} is not known: choose from {', '.join(HARD_CONDITIONS)}")
    return out


def hard_look(look: LookParams, names: tuple[str, ...], rng: np.random.Generator) -> LookParams:
    """``look`` pushed to the edges the named conditions ask for."""
    changes: dict = {}
    if "glare" in names:
        changes.update(water_film=float(rng.uniform(0.8, 1.0)), droplets_per_dm2=float(rng.uniform(4.0, 8.0)))
    if "lighting" in names:
        dim = rng.random() < 0.5
        warm = rng.random() < 0.5
        changes.update(
            brightness=float(rng.uniform(0.75, 0.8) if dim else rng.uniform(1.2, 1.25)),
            color_temp_k=float(rng.uniform(4000.0, 4300.0) if warm else rng.uniform(6200.0, 6500.0)),
            vignetting=float(rng.uniform(0.3, 0.35)),
            gradient=float(rng.uniform(0.15, 0.2)),
        )
    return replace(look, **changes) if changes else look


def hard_scallop(spec: ScallopSpec, names: tuple[str, ...], rng: np.random.Generator) -> ScallopSpec:
    """``spec`` with the named conditions' per-scallop changes (drawn for every scallop, used
    where it has a uro)."""
    hidden = float(rng.uniform(0.5, 0.8))
    highlight = float(rng.uniform(0.8, 1.0))
    changes: dict = {}
    if "mantle_flap" in names:
        changes["uro_hidden"] = hidden
    if "glare" in names:
        changes["uro_highlight"] = highlight
    return replace(spec, **changes) if changes else spec


@dataclass(frozen=True)
class Debris:
    """One fragment on the belt: centre in material coordinates (mm, belt frame at zero
    travel), an ellipse of ``length_mm`` × ``width_mm`` turned by ``angle_deg``, its colour
    in L*a*b*, ``dark`` for a torn piece of uro (else shell grit)."""

    x_mm: float
    y_mm: float
    length_mm: float
    width_mm: float
    angle_deg: float
    lab: tuple[float, float, float]
    dark: bool


def draw_debris(
    rng: np.random.Generator, box: tuple[float, float, float, float], per_dm2: tuple[float, float] = (1.0, 3.0)
) -> list[Debris]:
    """Fragments scattered over ``box`` (material x0 x1 y0 y1, mm): shell grit 1–4 mm and, a
    third of them, dark torn pieces of uro 2–8 mm (smaller than a whole uro's 8–18 mm)."""
    x0, x1, y0, y1 = box
    area_dm2 = (x1 - x0) * (y1 - y0) / 10000.0
    n = int(rng.poisson(rng.uniform(*per_dm2) * area_dm2))
    out = []
    for _ in range(n):
        dark = bool(rng.random() < 1 / 3)
        lo, hi = LAB_RANGES["uro"] if dark else GRIT_LAB
        length = float(rng.uniform(2.0, 8.0) if dark else rng.uniform(1.0, 4.0))
        out.append(
            Debris(
                x_mm=float(rng.uniform(x0, x1)),
                y_mm=float(rng.uniform(y0, y1)),
                length_mm=length,
                width_mm=float(length * rng.uniform(0.4, 0.9)),
                angle_deg=float(rng.uniform(0.0, 180.0)),
                lab=tuple(float(rng.uniform(a, b)) for a, b in zip(lo, hi)),
                dark=dark,
            )
        )
    return out


def paint_debris(canvas: np.ndarray, debris: list[Debris], s: float, k0: int, ky0: int) -> None:
    """Draw fragments into a belt canvas in place (column c is material x = (k0 + c)·s, row r
    is y = (ky0 + r)·s), anti-aliased at 1/16 px. They lie under the scallops (drawn first) and
    carry no part label: they are belt."""
    if not debris:
        return
    sh = 4
    colours = lab_to_bgr(np.array([d.lab for d in debris], np.float32))
    h, w = canvas.shape[:2]
    for d, bgr in zip(debris, colours):
        cx, cy = d.x_mm / s - k0, d.y_mm / s - ky0
        ax, ay = d.length_mm / (2 * s), d.width_mm / (2 * s)
        if cx + ax < -2 or cx - ax > w + 2 or cy + ax < -2 or cy - ax > h + 2:
            continue
        cv2.ellipse(
            canvas,
            (int(round(cx * 2**sh)), int(round(cy * 2**sh))),
            (max(1, int(round(ax * 2**sh))), max(1, int(round(ay * 2**sh)))),
            d.angle_deg,
            0,
            360,
            tuple(float(c) for c in bgr),
            -1,
            cv2.LINE_AA,
            sh,
        )


__all__ = [
    "HARD_CONDITIONS",
    "Debris",
    "check_conditions",
    "draw_debris",
    "hard_look",
    "hard_scallop",
    "paint_debris",
]
