"""The second channel: what a fluorescence camera sees of the same scene.

Under UV or blue excitation the uro's chlorophyll (pheophytins after boiling) glows deep red
and muscle does not (``shared/spec/scallop-appearance.md``, "Second channel: fluorescence").
This module paints that image from what the colour renderer already knows: the same part
geometry (:meth:`ScallopModel.fields`, on the same sprite grid), the same canvas in belt
millimetres and the same camera maps, so a fluorescence image rendered through the colour
renderer's camera is registered to the colour frame pixel for pixel. Through another camera
(:class:`SceneRenderer` of its own) it is what a second camera beside the colour one sees.

Grey levels (the spec's table; :data:`LEVELS`), before noise and blur:

* uro 110–240: a level per scallop (diet, season: ±40 % around 175, :data:`URO_CENTRE`),
  patchy ±25 % within the uro; every uro pixel stays inside the table's 110–240 (the
  exposure is set so the brightest uro does not saturate). Under a mantle flap the uro
  keeps 10–50 % of its glow (a share per scallop).
* gills 25–80, striated (the colour image's stripes): they filter phytoplankton too.
* gonad: female 15–45, male 8–25; adductor and mantle 5–25; mantle eyes 0–15.
* belt and water 0–10 (the filter blocks the excitation's glare, so droplets stay dark);
  debris: shell grit 0–10, torn pieces of uro 80–200.

Each scallop's levels are drawn from its own ``texture_seed`` (:meth:`ScallopGlow.of`), so the
same scallop glows the same in every frame and every data set. The image then gets the
channel's own camera effects: motion blur 2–4× the colour camera's (a longer exposure) along
the travel and sensor noise σ 3–8 (weak light, high gain).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from scallop.errors import check_range
from scallop.sim.scene.effects import motion_kernel
from scallop.sim.scene.hard import Debris
from scallop.sim.scene.look import MANTLE
from scallop.sim.scene.model import ScallopModel, _smooth_noise, _wrap
from scallop.sim.scene.renderer import Placed, SceneRenderer
from scallop.sim.scene.spec import ScallopSpec

#: Grey levels of the fluorescence image per thing seen (low, high), the spec's table.
LEVELS: dict[str, tuple[float, float]] = {
    "uro": (110.0, 240.0),
    "gill": (25.0, 80.0),
    "gonad_female": (15.0, 45.0),
    "gonad_male": (8.0, 25.0),
    "adductor": (5.0, 25.0),
    "mantle": (5.0, 25.0),
    "eye": (0.0, 15.0),
    "belt": (0.0, 10.0),
    "grit": (0.0, 10.0),
    "uro_debris": (80.0, 200.0),
}
#: The middle of the uro's range; scallops spread ±:data:`URO_SPREAD` around it.
URO_CENTRE = 175.0
URO_SPREAD = 0.40
#: Patchiness within one uro, a share of its level.
URO_PATCHINESS = 0.25
#: Share of the uro's glow that passes a mantle flap lying over it.
FLAP_KEEP = (0.10, 0.50)
#: Sensor noise σ (grey levels) and exposure as a multiple of the colour camera's.
NOISE_SIGMA = (3.0, 8.0)
EXPOSURE_RATIO = (2.0, 4.0)
#: The colour camera's motion blur reaches 3 px; the channel's is its exposure ratio longer.
MAX_BLUR_PX = 3.0 * EXPOSURE_RATIO[1]


def _draw(rng: np.random.Generator, key: str, margin: float = 0.0) -> float:
    lo, hi = LEVELS[key]
    return float(rng.uniform(lo + margin, hi - margin))


@dataclass(frozen=True)
class ScallopGlow:
    """How one scallop fluoresces (grey levels before noise).

    uro:       mean level of its uro before the table's bound (175 ± 40 %: 105–245).
    flap_keep: share of the uro's glow a mantle flap over it lets through (0.1–0.5).
    gill:      middle level of the gill stripes; gonad, adductor, mantle, eyes: their levels.
    """

    uro: float
    flap_keep: float
    gill: float
    gonad: float
    adductor: float
    mantle: float
    eyes: float

    @classmethod
    def of(cls, spec: ScallopSpec) -> ScallopGlow:
        """The scallop's glow, drawn from its own texture seed: reproducible, and independent of
        the frame, the camera and the colour render's random draws."""
        rng = np.random.default_rng([spec.texture_seed, 0xF1])
        mantle = _draw(rng, "mantle", 3.0)
        return cls(
            uro=URO_CENTRE * (1.0 + URO_SPREAD * float(rng.uniform(-1.0, 1.0))),
            flap_keep=float(rng.uniform(*FLAP_KEEP)),
            gill=float(rng.uniform(35.0, 60.0)),
            gonad=_draw(rng, "gonad_male" if spec.gonad == "male" else "gonad_female", 3.0),
            adductor=_draw(rng, "adductor", 3.0),
            mantle=mantle,
            # Eye dots are pigment: darker than the mantle they sit in.
            eyes=float(min(rng.uniform(1.0, 12.0), mantle - 2.0)),
        )


@dataclass
class FluorescenceLook:
    """The channel's camera in one frame.

    noise_sigma:    sensor noise σ, grey levels (3–8).
    exposure_ratio: its exposure over the colour camera's (2–4), for the record.
    motion_blur_px: blur length along image x (the travel) in its own pixels, 0–12.
    belt_level:     the belt's (and water's) grey level before noise, 0–10.
    """

    noise_sigma: float = 5.0
    exposure_ratio: float = 3.0
    motion_blur_px: float = 0.0
    belt_level: float = 4.0

    def __post_init__(self) -> None:
        check_range("noise_sigma", self.noise_sigma, *NOISE_SIGMA)
        check_range("exposure_ratio", self.exposure_ratio, *EXPOSURE_RATIO)
        check_range("motion_blur_px", self.motion_blur_px, 0.0, MAX_BLUR_PX)
        check_range("belt_level", self.belt_level, *LEVELS["belt"])

    @classmethod
    def random(cls, rng: np.random.Generator, colour_blur_px: float) -> FluorescenceLook:
        """A frame drawn across the spec's envelope; ``colour_blur_px`` is the colour frame's
        blur on the same pixels, which the longer exposure stretches."""
        ratio = float(rng.uniform(*EXPOSURE_RATIO))
        return cls(
            noise_sigma=float(rng.uniform(*NOISE_SIGMA)),
            exposure_ratio=ratio,
            motion_blur_px=float(min(MAX_BLUR_PX, ratio * colour_blur_px)),
            belt_level=float(rng.uniform(0.5, 8.0)),
        )

    def to_dict(self) -> dict:
        return {k: round(float(v), 4) for k, v in asdict(self).items()}


@dataclass
class GlowSprite:
    """A scallop's fluorescence on the same grid as its colour sprite.

    level:      (h, w) float32 grey level (not premultiplied).
    alpha:      (h, w) float32 coverage of the meat's outline.
    on_top:     (h, w) bool, pixels of the meat (where this scallop hides what lies below).
    under_flap: (h, w) bool, where its uro glows through a mantle flap (labelled mantle).
    """

    kx: int
    ky: int
    level: np.ndarray
    alpha: np.ndarray
    on_top: np.ndarray
    under_flap: np.ndarray


def glow_sprite(model: ScallopModel, s: float) -> GlowSprite:
    """Paint one scallop's fluorescence at canvas scale ``s``, part by part in the colour
    sprite's drawing order (later layers cover earlier ones), each layer inside its range."""
    sp = model.spec
    kx, ky, p, q = model.sprite_grid(s)
    n = p.shape[0]
    F = model.fields(p, q)
    labels = model.labels_from_fields(F)
    glow = ScallopGlow.of(sp)
    rng = np.random.default_rng([sp.texture_seed, n, 0xF2])

    def cov(sdf):
        return np.clip(sdf / s + 0.5, 0.0, 1.0).astype(np.float32)

    def blend(level, c, layer):
        level += c * (layer - level)

    def within(key, x):
        return np.clip(x, *LEVELS[key]).astype(np.float32)

    blotch = _smooth_noise(rng, (n, n), 6.0 / s)
    grain = cv2.GaussianBlur(rng.standard_normal((n, n)).astype(np.float32), (0, 0), max(0.4, 0.35 / s))
    mantle = within("mantle", glow.mantle + 1.5 * blotch)
    level = mantle.copy()
    if sp.gills:
        # The colour image's stripes, across the band: the gills' glow follows their lamellae.
        stripes = np.sin(2 * np.pi * F["rho"] * _wrap(F["phi"] - model.gonad_dir - np.pi) / model.gill_pitch)
        blend(level, cov(F["gill"]), within("gill", glow.gill * (1.0 + 0.35 * stripes)))
    if not sp.upside_down:  # seen from the back: neither gonad nor uro shows
        key = "gonad_male" if sp.gonad == "male" else "gonad_female"
        blend(level, cov(F["gonad"]), within(key, glow.gonad + 1.5 * grain))
    under_flap = np.zeros((n, n), bool)
    if model.uro_present:
        # Patches a few millimetres across, bounded to ±URO_PATCHINESS by tanh.
        patch = np.tanh(_smooth_noise(rng, (n, n), 2.5 / s))
        uro = within("uro", glow.uro * (1.0 + URO_PATCHINESS * patch))
        c_uro = cov(F["uro"])
        blend(level, c_uro, uro)
        if sp.uro_hidden > 0:
            # The flap's own tissue is mantle; where the uro lies under it, a share of its glow.
            under = mantle + c_uro * (glow.flap_keep * uro - mantle)
            blend(level, cov(np.minimum(F["flap"], F["uro"] + 2.5)), under)
            under_flap = (F["uro"] > 0) & (F["flap"] > 0) & (labels == MANTLE)
    rel = np.clip(F["rho"] / F["a"], 0, 1)
    fibres = np.sin(model.fibre_n * F["phi"] + model.fibre_phase + 3 * rel)
    blend(level, cov(F["adductor"]), within("adductor", glow.adductor + 1.0 * fibres * rel + 0.8 * blotch))
    for rows, cols, c in model.eye_windows(s, F, kx, ky, n):
        blend(level[rows, cols], c, np.float32(glow.eyes))
    return GlowSprite(kx=kx, ky=ky, level=level, alpha=cov(F["outline"]), on_top=labels > 0, under_flap=under_flap)


def paint_glowing_debris(canvas: np.ndarray, debris: list[Debris], s: float, k0: int, ky0: int) -> None:
    """Fragments into a fluorescence canvas in place (the colour canvas's grid, see
    :func:`scallop.sim.scene.hard.paint_debris`): shell grit at belt level 0–10, torn uro
    80–200. Each piece's level is drawn from its own position, so it glows the same in every
    frame it is seen in."""
    sh = 4
    h, w = canvas.shape
    for d in debris:
        cx, cy = d.x_mm / s - k0, d.y_mm / s - ky0
        ax, ay = d.length_mm / (2 * s), d.width_mm / (2 * s)
        x0, x1 = max(0, int(math.floor(cx - ax)) - 2), min(w, int(math.ceil(cx + ax)) + 3)
        y0, y1 = max(0, int(math.floor(cy - ax)) - 2), min(h, int(math.ceil(cy + ax)) + 3)
        if x0 >= x1 or y0 >= y1:
            continue
        rng = np.random.default_rng([round(d.x_mm * 1000) % 2**32, round(d.y_mm * 1000) % 2**32, 0xDEB])
        glow = _draw(rng, "uro_debris" if d.dark else "grit")
        # Anti-aliased coverage in a window: OpenCV draws anti-aliased only into 8-bit images.
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.ellipse(
            mask,
            (int(round((cx - x0) * 2**sh)), int(round((cy - y0) * 2**sh))),
            (max(1, int(round(ax * 2**sh))), max(1, int(round(ay * 2**sh)))),
            d.angle_deg,
            0,
            360,
            255,
            -1,
            cv2.LINE_AA,
            sh,
        )
        c = mask.astype(np.float32) / 255.0
        region = canvas[y0:y1, x0:x1]
        region += c * (glow - region)


@dataclass
class FluorescenceResult:
    """One fluorescence frame.

    image:      (H, W) uint8, what the camera gives (blur, noise).
    level:      (H, W) float32, the grey levels before blur and noise (for checks and truth).
    under_flap: (H, W) bool, pixels where a uro glows through a mantle flap.
    """

    image: np.ndarray
    level: np.ndarray
    under_flap: np.ndarray


class FluorescenceRenderer:
    """Renders the fluorescence image through the camera of ``scene`` (its maps and canvas
    grid). With the colour renderer's own ``scene`` the two images are registered pixel for
    pixel; with a renderer of another camera it is a second camera's view."""

    def __init__(self, scene: SceneRenderer) -> None:
        self.scene = scene
        # A scallop's sprites per (scale, uro state), dropped with the scallop itself.
        self._sprites: weakref.WeakKeyDictionary[ScallopModel, dict] = weakref.WeakKeyDictionary()

    def _sprite(self, model: ScallopModel) -> GlowSprite:
        key = (round(self.scene.s, 9), model.uro_present)
        cache = self._sprites.setdefault(model, {})
        spr = cache.get(key)
        if spr is None:
            cache.clear()  # one scale per renderer; a pulled uro makes the old sprite stale
            spr = cache[key] = glow_sprite(model, self.scene.s)
        return spr

    def render(
        self,
        placed: list[Placed],
        travel: float,
        look: FluorescenceLook,
        rng: np.random.Generator,
        debris: list[Debris] = (),
    ) -> FluorescenceResult:
        """The scene at belt ``travel`` (the same arguments as :meth:`SceneRenderer.render`);
        ``rng`` draws only this channel's noise."""
        sc = self.scene
        s = sc.s
        k0 = int(math.floor((sc.x_lo - travel) / s)) - sc.PAD
        canvas = np.full((sc.height, sc.width), look.belt_level, np.float32)
        paint_glowing_debris(canvas, list(debris), s, k0, sc.ky0)
        flap_c = np.zeros((sc.height, sc.width), np.uint8)
        for pl in placed:
            self._composite(self._sprite(pl.model), k0, canvas, flap_c)
        # The colour renderer's own pixel-to-canvas maps: the same path as its colour frames.
        mx = sc._bxs - np.float32(travel / s + k0)
        level = cv2.remap(canvas, mx, sc._mys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        under_flap = cv2.remap(flap_c, mx, sc._mys, cv2.INTER_NEAREST, borderValue=0) > 0
        return FluorescenceResult(image=self._camera(level, look, rng), level=level, under_flap=under_flap)

    def _composite(self, spr: GlowSprite, k0: int, canvas: np.ndarray, flap_c: np.ndarray) -> None:
        sc = self.scene
        h, w = spr.alpha.shape
        r0, c0 = spr.ky - sc.ky0, spr.kx - k0
        a0, b0 = max(0, r0), max(0, c0)
        a1, b1 = min(sc.height, r0 + h), min(sc.width, c0 + w)
        if a0 >= a1 or b0 >= b1:
            return
        sl = (slice(a0 - r0, a1 - r0), slice(b0 - c0, b1 - c0))
        region = canvas[a0:a1, b0:b1]
        region += spr.alpha[sl] * (spr.level[sl] - region)
        top = spr.on_top[sl]
        flap_c[a0:a1, b0:b1][top] = spr.under_flap[sl][top]

    @staticmethod
    def _camera(level: np.ndarray, look: FluorescenceLook, rng: np.random.Generator) -> np.ndarray:
        """Blur along the travel (the longer exposure), then the sensor's noise."""
        f = level
        k = motion_kernel(look.motion_blur_px)
        if k is not None:
            f = cv2.filter2D(f, -1, k, borderType=cv2.BORDER_REFLECT)
        if look.noise_sigma > 0:
            f = cv2.scaleAdd(rng.standard_normal(f.shape, dtype=np.float32), float(look.noise_sigma), f)
        else:
            f = f.copy()
        return cv2.convertScaleAbs(np.maximum(f, 0.0, out=f))  # rounds and saturates to uint8


__all__ = [
    "EXPOSURE_RATIO",
    "FLAP_KEEP",
    "LEVELS",
    "NOISE_SIGMA",
    "URO_CENTRE",
    "URO_PATCHINESS",
    "URO_SPREAD",
    "FluorescenceLook",
    "FluorescenceRenderer",
    "FluorescenceResult",
    "GlowSprite",
    "ScallopGlow",
    "glow_sprite",
    "paint_glowing_debris",
]
