"""The simulator's scene: scallop geometry, the belt's look, and rendering through a camera.

How a frame is made (the same path for the running world and for data-set frames):

1. Every pixel's belt-plane coordinates come from :meth:`CameraModel.belt_maps` (once per
   camera), so lens distortion, tilt and scale are those of the camera model itself.
2. The scene is painted in an orthographic *canvas* in belt millimetres (material
   coordinates: the canvas moves with the belt). The belt texture is a periodic tile; each
   scallop is a pre-rendered *sprite* (colour + part labels + alpha + soft shadow), rendered
   once and composited at an integer canvas offset, because a scallop is rigid on the belt.
3. ``cv2.remap`` carries the canvas into the camera image (linear for colour, nearest for
   the part and instance maps), then the camera's own effects are applied in image space:
   lighting level and colour temperature, vignetting, a gradient across the field, motion
   blur along the travel, sensor noise and JPEG.

Part labels (uint8): 0 background, 1 mantle, 2 gonad, 3 adductor, 4 uro, 5 gill.
Colours are drawn in CIE L*a*b* inside the ranges of the appearance spec
(shared/spec/scallop-appearance.md) and converted to BGR with OpenCV.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

import cv2
import numpy as np

from scallop.calibration.camera_model import CameraModel
from scallop.sim.config import ProductConfig

PART_NAMES = ("background", "mantle", "gonad", "adductor", "uro", "gill")
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


def _uniform3(rng: np.random.Generator, key: str) -> tuple[float, float, float]:
    lo, hi = LAB_RANGES[key]
    return tuple(float(rng.uniform(a, b)) for a, b in zip(lo, hi))


# ============================================================================ look
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


# ============================================================================ product
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


def _wrap(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2 * np.pi) - np.pi


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell_px: float) -> np.ndarray:
    """Zero-mean, unit-ish smooth noise of ``shape`` with features about ``cell_px`` across."""
    h, w = shape
    gh, gw = max(2, int(math.ceil(h / cell_px)) + 2), max(2, int(math.ceil(w / cell_px)) + 2)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


@dataclass
class Sprite:
    """A scallop pre-rendered on the canvas grid.

    kx, ky: canvas-grid index of pixel (0, 0) (global grid: x = kx·s on the belt material,
            y = ky·s in the belt frame).
    bgr:    (h, w, 3) float32 colour, 0..255 (not premultiplied).
    alpha:  (h, w) float32 coverage 0..1 (anti-aliased outline).
    parts:  (h, w) uint8 part labels.
    shadow: (h, w) float32 0..1, soft contact shadow cast on what lies below.
    """

    kx: int
    ky: int
    bgr: np.ndarray
    alpha: np.ndarray
    parts: np.ndarray
    shadow: np.ndarray


class ScallopModel:
    """Geometry and appearance of one scallop, in its own frame (mm, origin at the meat's
    centre, +q towards the gonad crescent). Part membership is a set of signed distances
    (mm, positive inside) shared by the renderer and by :meth:`part_at`, so grading asks the
    same shapes the pixels were drawn from."""

    SHADOW_MM = 3.0

    def __init__(self, spec: ScallopSpec) -> None:
        self.spec = spec
        self.uro_present = bool(spec.uro and not spec.upside_down)
        self._sprites: dict[tuple, Sprite] = {}
        self._outlines: dict[int, np.ndarray] = {}
        rng = np.random.default_rng(spec.texture_seed)
        self._derive_shape(rng)
        self._derive_texture(rng)

    # ------------------------------------------------------------ shape parameters
    def _derive_shape(self, rng: np.random.Generator) -> None:
        sp = self.spec
        self.R0 = sp.diameter_mm / 2
        self.ell_phase = float(rng.uniform(0, np.pi))
        freqs = rng.integers(9, 25, size=3)
        amps = rng.dirichlet([2.0, 2.0, 2.0]) * sp.ruffle
        self.ruffles = [(int(f), float(a), float(rng.uniform(0, 2 * np.pi))) for f, a in zip(freqs, amps)]
        self.mantle_phase = float(rng.uniform(0, 2 * np.pi))
        self.a0 = sp.adductor_frac * self.R0
        self.add_centre = np.array(sp.adductor_offset_mm, dtype=np.float64)
        self.add_ell = float(rng.uniform(0.0, 0.04))
        self.add_phase = float(rng.uniform(0, np.pi))
        self.gonad_dir = np.pi / 2
        self.gonad_half = np.deg2rad(sp.gonad_arc_deg) / 2
        min_r = self.R0 * (1 - sp.ellipticity - sp.ruffle)
        room = min_r - self.a0 - float(np.linalg.norm(self.add_centre)) - 1.5
        self.gonad_t0 = max(1.5, sp.gonad_fill * room)
        self.gill_t0 = max(1.5, float(rng.uniform(0.55, 0.85)) * room)
        self.gill_half = np.deg2rad(sp.gill_arc_deg) / 2
        self.r_max = self.R0 * (1 + sp.ellipticity + sp.ruffle) + 0.5
        # Shape variety beyond the spec's named parameters: where the crescent is thickest,
        # how bluntly it ends, and lobes that pinch the uro's outline (never enlarge it).
        self.gonad_power = float(rng.uniform(0.4, 0.9))
        self.gonad_skew = float(rng.uniform(0.7, 1.4))
        self.uro_lobes = [
            (2, float(rng.uniform(0, 0.1)), float(rng.uniform(0, 2 * np.pi))),
            (3, float(rng.uniform(0, 0.06)), float(rng.uniform(0, 2 * np.pi))),
        ]
        self._place_uro(min_r)
        self._place_eyes(rng)

    def _place_uro(self, min_r: float) -> None:
        sp = self.spec
        L, W = sp.uro_length_mm, sp.uro_width_mm
        tilt = np.deg2rad(sp.uro_tilt_deg)
        for attempt in range(16):
            # Centre just outside the adductor (tucked under it by a tenth of its width),
            # straddling the end of the gonad crescent; if it would stick out of the meat,
            # tuck it deeper under the adductor, and only then make it smaller.
            tuck = 0.4 - 0.1 * min(attempt, 3)
            rho = self.a0 + tuck * W
            ang = self.gonad_dir + sp.uro_end * (self.gonad_half + 0.3 * L / rho)
            radial = np.array([math.cos(ang), math.sin(ang)])
            centre = self.add_centre + rho * radial
            e_long = np.array([-radial[1], radial[0]])
            c, s = math.cos(tilt), math.sin(tilt)
            e_long = np.array([c * e_long[0] - s * e_long[1], s * e_long[0] + c * e_long[1]])
            # The short axis points away from the adductor, so the kidney's bend hugs it.
            e_v = np.array([-e_long[1], e_long[0]])
            if e_v @ radial < 0:
                e_v = -e_v
            if self._uro_fits(centre, e_long, e_v, L, W):
                break
            if attempt >= 3:
                L, W = max(6.0, L * 0.95), max(4.0, W * 0.95)
        self.uro_L, self.uro_W = L, W
        self.uro_e_long, self.uro_e_v, self.uro_centre = e_long, e_v, centre
        # Highlight: a small glossy spot on the uro's outer half.
        self.uro_spot = centre + 0.18 * L * self.uro_e_long * (1 if sp.texture_seed % 2 else -1) + 0.15 * W * e_v

    def _uro_fits(self, centre, e_long, e_v, L, W) -> bool:
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        hl, hw = L / 2, W / 2
        du = hl * np.cos(t)
        dv = self.spec.uro_bend * hw * (0.5 - (du / hl) ** 2) + hw * np.sin(t)
        pts = centre[None] + du[:, None] * e_long[None] + dv[:, None] * e_v[None]
        r = np.hypot(pts[:, 0], pts[:, 1])
        return bool(np.all(r < self.radius(np.arctan2(pts[:, 1], pts[:, 0])) - 0.8))

    def _place_eyes(self, rng: np.random.Generator) -> None:
        n = self.spec.eye_dots
        th = np.sort(rng.uniform(0, 2 * np.pi, n)) if n else np.zeros(0)
        rad = rng.uniform(0.5, 1.0, n)  # dot radius 0.5–1.0 mm (1–2 mm across)
        inset = rng.uniform(0.5, 1.5, n) + rad
        r = self.radius(th) - inset
        self.eyes = np.column_stack([r * np.cos(th), r * np.sin(th), rad]) if n else np.zeros((0, 3))

    def _derive_texture(self, rng: np.random.Generator) -> None:
        # Light falling a little more on one side of the meat.
        self.shade_amp = float(rng.uniform(0.0, 0.06))
        self.shade_dir = float(rng.uniform(0, 2 * np.pi))
        # Wet glints on the meat (never on the uro, which has its own highlight).
        n_glints = int(rng.choice([0, 0, 1, 2, 3]))
        gr = self.R0 * np.sqrt(rng.uniform(0, 0.6, n_glints))
        ga = rng.uniform(0, 2 * np.pi, n_glints)
        self.glints = [
            (
                float(r * math.cos(a)),
                float(r * math.sin(a)),
                float(rng.uniform(0.4, 1.3)),
                float(rng.uniform(8.0, 25.0)),
            )
            for r, a in zip(gr, ga)
        ]
        self.fibre_n = int(rng.integers(50, 95))
        self.fibre_phase = float(rng.uniform(0, 2 * np.pi))
        self.fold_n = int(rng.integers(14, 30))
        self.fold_phase = float(rng.uniform(0, 2 * np.pi))
        self.gill_pitch = float(rng.uniform(1.1, 1.8))

    # ------------------------------------------------------------ frames
    @property
    def area_mm2(self) -> float:
        th = np.linspace(0, 2 * np.pi, 720, endpoint=False)
        return float(0.5 * np.mean(self.radius(th) ** 2) * 2 * np.pi)

    def _rot(self) -> tuple[float, float]:
        a = np.deg2rad(self.spec.rotation_deg)
        return math.cos(a), math.sin(a)

    def to_local(self, dx, dy) -> tuple[np.ndarray, np.ndarray]:
        """Offsets from the centre in the belt frame (mm) → scallop frame (p, q)."""
        c, s = self._rot()
        p = c * np.asarray(dx) + s * np.asarray(dy)
        q = -s * np.asarray(dx) + c * np.asarray(dy)
        if self.spec.upside_down:
            q = -q  # seen from the back the layout is mirrored
        return p, q

    def to_belt(self, pq) -> np.ndarray:
        """Scallop-frame points (N, 2) → offsets from the centre in the belt frame (N, 2)."""
        pq = np.atleast_2d(np.asarray(pq, dtype=np.float64))
        p, q = pq[:, 0], pq[:, 1] * (-1 if self.spec.upside_down else 1)
        c, s = self._rot()
        return np.column_stack([c * p - s * q, s * p + c * q])

    def radius(self, theta) -> np.ndarray:
        """Outline radius (mm) at scallop-frame angle ``theta``."""
        th = np.asarray(theta)
        r = 1.0 + self.spec.ellipticity * np.cos(2 * (th - self.ell_phase))
        for f, a, ph in self.ruffles:
            r = r + a * np.sin(f * th + ph)
        return self.R0 * r

    def outline(self, n: int = 96) -> np.ndarray:
        """Outline polygon in the belt frame, offsets from the centre (n, 2)."""
        cached = self._outlines.get(n)
        if cached is None:
            th = np.linspace(0, 2 * np.pi, n, endpoint=False)
            r = self.radius(th)
            cached = self._outlines[n] = self.to_belt(np.column_stack([r * np.cos(th), r * np.sin(th)]))
        return cached

    # ------------------------------------------------------------ signed distances
    def fields(self, p: np.ndarray, q: np.ndarray) -> dict[str, np.ndarray]:
        """Signed distances (mm, > 0 inside) of every part at scallop-frame points."""
        sp = self.spec
        r = np.hypot(p, q)
        th = np.arctan2(q, p)
        R = self.radius(th)
        out = {"r": r, "th": th, "R": R, "outline": R - r}
        m = sp.mantle_width_mm * (1 + 0.2 * np.sin(3 * th + self.mantle_phase))
        out["body"] = R - m - r
        dp, dq = p - self.add_centre[0], q - self.add_centre[1]
        rho = np.hypot(dp, dq)
        phi = np.arctan2(dq, dp)
        a = self.a0 * (1 + self.add_ell * np.cos(2 * (phi - self.add_phase)))
        out.update(rho=rho, phi=phi, a=a, adductor=a - rho)
        out["gonad"] = self._crescent(
            rho, phi, a, self.gonad_dir, self.gonad_half, self.gonad_t0, self.gonad_power, 0.8, self.gonad_skew
        )
        out["gill"] = self._crescent(rho, phi, a, self.gonad_dir + np.pi, self.gill_half, self.gill_t0, 0.35, -0.4)
        du = (p - self.uro_centre[0]) * self.uro_e_long[0] + (q - self.uro_centre[1]) * self.uro_e_long[1]
        dv = (p - self.uro_centre[0]) * self.uro_e_v[0] + (q - self.uro_centre[1]) * self.uro_e_v[1]
        hl, hw = self.uro_L / 2, self.uro_W / 2
        bend = sp.uro_bend * hw
        centre_line = bend * (0.5 - (du / hl) ** 2)  # ends curve towards the adductor
        nu, nv = du / hl, (dv - centre_line) / hw
        k = np.sqrt(nu**2 + nv**2)
        ang = np.arctan2(nv, nu)
        for f, amp, ph in self.uro_lobes:
            k = k * (1 + amp * (0.5 + 0.5 * np.cos(f * ang + ph)))
        out["uro"] = (1 - k) * min(hl, hw)
        out["uro_du"], out["uro_dv"] = du, dv
        if sp.uro_hidden > 0:
            # A fold of mantle over the uro's outer side, covering ``uro_hidden`` of its width.
            edge = hw - 2 * hw * sp.uro_hidden
            wav = 0.4 * np.sin(du * 1.3 + self.fold_phase)
            out["flap"] = np.minimum(dv - edge + wav, out["outline"] - 0.3)
        else:
            out["flap"] = np.full_like(r, -1.0)
        return out

    @staticmethod
    def _crescent(rho, phi, a, centre, half, t0, power, inner, skew=1.0):
        d = _wrap(phi - centre)
        s = np.clip((d + half) / (2 * half), 0.0, 1.0) ** skew
        t = t0 * np.sin(np.pi * s) ** power
        return np.minimum.reduce([rho - (a - inner), a + t - rho, (half - np.abs(d)) * rho])

    def labels_from_fields(self, F: dict[str, np.ndarray], uro: bool | None = None) -> np.ndarray:
        """Hard part labels from signed distances, in drawing order (later wins)."""
        sp = self.spec
        uro = self.uro_present if uro is None else uro
        inside = F["outline"] > 0
        lab = np.where(inside, MANTLE, BACKGROUND).astype(np.uint8)
        if sp.gills:
            lab[inside & (F["gill"] > 0)] = GILL
        if not sp.upside_down:
            lab[inside & (F["gonad"] > 0)] = GONAD
            if uro:
                lab[inside & (F["uro"] > 0)] = URO
                lab[inside & (F["flap"] > 0) & (F["uro"] > -2.5)] = MANTLE
        lab[inside & (F["adductor"] > 0)] = ADDUCTOR
        return lab

    def part_at(self, local_xy_mm) -> np.ndarray:
        """Part labels (uint8) at belt-frame offsets from this scallop's centre (N, 2) mm."""
        xy = np.atleast_2d(np.asarray(local_xy_mm, dtype=np.float64))
        p, q = self.to_local(xy[:, 0], xy[:, 1])
        return self.labels_from_fields(self.fields(p, q))

    # ------------------------------------------------------------ key points (belt offsets)
    def uro_centre_offset(self) -> np.ndarray:
        return self.to_belt(self.uro_centre)[0]

    def adductor_centre_offset(self) -> np.ndarray:
        return self.to_belt(self.add_centre)[0]

    # ------------------------------------------------------------ rendering
    def sprite(self, s: float) -> Sprite:
        """The cached sprite at canvas scale ``s`` (mm/px) on the global grid. Rendered once
        per scale and uro state: a scallop is rigid while it rides the belt."""
        key = (round(s, 9), self.uro_present)
        spr = self._sprites.get(key)
        if spr is None:
            spr = self._render_sprite(s)
            self._sprites = {k: v for k, v in self._sprites.items() if k[0] == key[0]}
            self._sprites[key] = spr
        return spr

    def _render_sprite(self, s: float) -> Sprite:
        sp = self.spec
        pad = self.r_max + self.SHADOW_MM
        kx = int(math.floor((sp.x_mm - pad) / s))
        ky = int(math.floor((sp.y_mm - pad) / s))
        n = int(math.ceil(2 * pad / s)) + 2
        xs = ((kx + np.arange(n)) * s - sp.x_mm).astype(np.float32)
        ys = ((ky + np.arange(n)) * s - sp.y_mm).astype(np.float32)
        X, Y = np.meshgrid(xs, ys)
        p, q = self.to_local(X, Y)
        F = self.fields(p, q)
        parts = self.labels_from_fields(F)
        lab = self._colour(F, s, n, kx, ky)
        bgr = lab_to_bgr(lab)
        alpha = np.clip(F["outline"] / s + 0.5, 0.0, 1.0).astype(np.float32)
        sig = max(0.5, 1.2 / s)
        shadow = cv2.GaussianBlur(alpha, (0, 0), sig) * 0.28
        return Sprite(kx=kx, ky=ky, bgr=bgr.astype(np.float32), alpha=alpha, parts=parts, shadow=shadow)

    def _colour(self, F: dict[str, np.ndarray], s: float, n: int, kx: int, ky: int) -> np.ndarray:
        """Per-pixel L*a*b* of the scallop (outside the outline: mantle colour, alpha hides it)."""
        sp = self.spec
        rng = np.random.default_rng([sp.texture_seed, n])

        def cov(sdf):
            return np.clip(sdf / s + 0.5, 0.0, 1.0)[..., None].astype(np.float32)

        def blend(lab, c, layer):
            lab += c * (np.asarray(layer, np.float32) - lab)

        r, th, R = F["r"], F["th"], F["R"]
        blotch = _smooth_noise(rng, (n, n), 6.0 / s)
        grain = cv2.GaussianBlur(rng.standard_normal((n, n)).astype(np.float32), (0, 0), max(0.4, 0.35 / s))
        lab = np.empty((n, n, 3), np.float32)
        lab[:] = sp.mantle_lab
        # Mantle: radial folds, a darker rim at the ruffled edge.
        rim = np.clip(1 - (R - r) / 1.6, 0, 1)
        folds = np.sin(self.fold_n * th + self.fold_phase + 0.8 * np.sin(3 * th)) * np.clip((r / R) ** 2, 0, 1)
        lab[..., 0] += 3.5 * folds + 1.5 * blotch - 7.0 * rim
        lab[..., 2] += 1.5 * folds
        # Inside the frill the tissue is smoother and a little lighter.
        inner = np.clip(F["body"] / 1.5 + 0.5, 0, 1)[..., None]
        body = np.array(sp.mantle_lab, np.float32) + (3.0, -1.0, -2.0)
        blend(lab, inner.astype(np.float32), body)
        if sp.gills:
            stripes = np.sin(2 * np.pi * F["rho"] * _wrap(F["phi"] - self.gonad_dir - np.pi) / self.gill_pitch)
            gill = np.empty_like(lab)
            gill[:] = sp.gill_lab
            gill[..., 0] += 4.0 * stripes + grain
            blend(lab, cov(F["gill"]), gill)
        if sp.upside_down:
            # Seen from the back the gonad is only a faint tint under the membrane.
            ghost = 0.75 * np.asarray(sp.mantle_lab, np.float32) + 0.25 * np.asarray(sp.gonad_lab, np.float32)
            blend(lab, cov(F["gonad"]) * 0.7, ghost)
        else:
            gonad = np.empty_like(lab)
            gonad[:] = sp.gonad_lab
            gonad[..., 0] += 2.0 * grain + 1.0 * blotch
            gonad[..., 1] += 1.5 * grain
            blend(lab, cov(F["gonad"]), gonad)
            if self.uro_present:
                blend(lab, cov(F["uro"]), self._uro_colour(F, n))
                if sp.uro_hidden > 0:
                    flap = np.empty_like(lab)
                    flap[:] = sp.mantle_lab
                    flap[..., 0] += 1.5 * blotch - 3.0 * np.clip(1 - F["flap"] / 1.2, 0, 1)
                    blend(lab, cov(np.minimum(F["flap"], F["uro"] + 2.5)), flap)
        add = np.empty_like(lab)
        add[:] = sp.adductor_lab
        rel = np.clip(F["rho"] / F["a"], 0, 1)
        fibres = np.sin(self.fibre_n * F["phi"] + self.fibre_phase + 3 * rel)
        add[..., 0] += 2.5 * (1 - rel**2) - 1.25 + 1.2 * fibres * rel + 0.8 * blotch
        add[..., 0] -= 3.0 * np.clip(1 - F["adductor"] / 0.7, 0, 1)
        blend(lab, cov(F["adductor"]), add)
        self._draw_glints(lab, F)
        self._draw_eyes(lab, s, F, kx, ky)
        # A meat dome under diffuse light: the edges fall off a little, one side a little more.
        side = (np.cos(th) * math.cos(self.shade_dir) + np.sin(th) * math.sin(self.shade_dir)) * (r / R)
        lab[..., 0] *= (1 - 0.10 * np.clip(r / R, 0, 1) ** 3) * (1 + self.shade_amp * side)
        return lab

    def _draw_glints(self, lab: np.ndarray, F: dict[str, np.ndarray]) -> None:
        if not self.glints:
            return
        p, q = F["r"] * np.cos(F["th"]), F["r"] * np.sin(F["th"])
        keep = 1.0 - np.clip(F["uro"] / 0.5 + 1.0, 0, 1) if self.uro_present and not self.spec.upside_down else 1.0
        for gx, gy, sigma, strength in self.glints:
            g = np.exp(-((p - gx) ** 2 + (q - gy) ** 2) / (2 * sigma**2)) * keep
            g = g.astype(np.float32)
            lab[..., 0] += g * np.minimum(strength, 97.0 - lab[..., 0])
            lab[..., 1] *= 1 - 0.6 * g
            lab[..., 2] *= 1 - 0.6 * g

    def _uro_colour(self, F: dict[str, np.ndarray], n: int) -> np.ndarray:
        sp = self.spec
        uro = np.empty((n, n, 3), np.float32)
        uro[:] = sp.uro_lab
        k = np.clip(1 - F["uro"] / (min(self.uro_L, self.uro_W) / 2), 0, 1)
        uro[..., 0] -= 4.0 * k**2  # glossy body: darker towards the rim
        if sp.uro_highlight > 0:
            du = F["uro_du"] - (self.uro_spot - self.uro_centre) @ self.uro_e_long
            dv = F["uro_dv"] - (self.uro_spot - self.uro_centre) @ self.uro_e_v
            sx, sy = 0.09 * self.uro_L, 0.07 * self.uro_W
            spot = (sp.uro_highlight * np.exp(-0.5 * ((du / sx) ** 2 + (dv / sy) ** 2))).astype(np.float32)
            uro[..., 0] += spot * (92.0 - uro[..., 0])
            uro[..., 1] *= 1 - spot
            uro[..., 2] *= 1 - spot
        return uro

    def _draw_eyes(self, lab: np.ndarray, s: float, F: dict[str, np.ndarray], kx: int, ky: int) -> None:
        if not len(self.eyes):
            return
        sp = self.spec
        n = lab.shape[0]
        off = self.to_belt(self.eyes[:, :2])
        cx = (sp.x_mm + off[:, 0]) / s - kx
        cy = (sp.y_mm + off[:, 1]) / s - ky
        eye = np.array([12.0, 1.5, 3.0], np.float32)
        for (x, y), rad in zip(np.column_stack([cx, cy]), self.eyes[:, 2]):
            rp = rad / s + 1.5
            x0, x1 = max(0, int(x - rp)), min(n, int(x + rp) + 2)
            y0, y1 = max(0, int(y - rp)), min(n, int(y + rp) + 2)
            if x0 >= x1 or y0 >= y1:
                continue
            yy, xx = np.mgrid[y0:y1, x0:x1]
            d = np.hypot(xx - x, yy - y) * s
            c = np.clip((rad - d) / s + 0.5, 0, 1)[..., None].astype(np.float32)
            c *= (F["outline"][y0:y1, x0:x1] > 0)[..., None]
            patch = lab[y0:y1, x0:x1]
            patch += c * (eye - patch)


# ============================================================================ belt
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


# ============================================================================ camera effects
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


# ============================================================================ truth
@dataclass
class ScallopTruth:
    """What is true about one scallop in one frame.

    id:               the scallop's id in the world (per frame 1..n in data sets).
    instance:         its value in the frame's instance map.
    center_px:        (x, y) projection of the meat centre (may lie outside the image).
    bbox_px:          (x0, y0, x1, y1) of its visible pixels, inclusive.
    visible_px:       visible pixels in the instance map.
    visible_fraction: visible pixels / pixels it would cover alone in an unbounded image (0..1).
    cut_by_border:    its outline leaves the image.
    uro_present:      uro pixels are visible in this frame.
    uro_centroid_px:  (x, y) centroid of the visible uro pixels, or None.
    uro_px:           visible uro pixels.
    has_uro:          the scallop carries a uro (visible or not: occluded, under the mantle).
    uro_hidden:       part of the uro is under a mantle fold.
    uro_center_B:     (x, y) belt frame mm of the uro's centre at this frame, or None.
    adductor_center_B:(x, y) belt frame mm of the adductor's centre at this frame.
    center_B:         (x, y) belt frame mm of the meat's centre at this frame.
    """

    id: int
    instance: int
    center_px: tuple[float, float]
    bbox_px: tuple[int, int, int, int]
    visible_px: int
    visible_fraction: float
    cut_by_border: bool
    uro_present: bool
    uro_centroid_px: tuple[float, float] | None
    uro_px: int
    has_uro: bool
    uro_hidden: bool
    upside_down: bool
    gonad: str
    gills: bool
    diameter_mm: float
    rotation_deg: float
    center_B: tuple[float, float]
    uro_center_B: tuple[float, float] | None
    adductor_center_B: tuple[float, float]

    def to_dict(self) -> dict:
        """Plain JSON-ready values (floats rounded to 0.001 px / mm)."""
        return {k: _plain(v) for k, v in asdict(self).items()}


def _plain(v):
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return round(float(v), 4)
    return v


@dataclass
class FrameTruth:
    """Ground truth of one frame.

    parts:     (H, W) uint8 part labels (PART_NAMES).
    instances: (H, W) uint16, the visible owner of each pixel (ScallopTruth.instance), 0 = none.
    scallops:  facts of every scallop with at least one visible pixel, in drawing order.
    travel_mm: belt travel at exposure; encoder: the count latched; timestamp: seconds.
    mm_per_px: scale on the belt at the image centre.
    look:      the appearance parameters of this frame.
    """

    parts: np.ndarray
    instances: np.ndarray
    scallops: list[ScallopTruth]
    travel_mm: float = 0.0
    encoder: int | None = None
    timestamp: float = 0.0
    mm_per_px: float = 0.5
    look: LookParams | None = None

    def by_id(self, scallop_id: int) -> ScallopTruth | None:
        return next((s for s in self.scallops if s.id == scallop_id), None)


# ============================================================================ renderer
@dataclass
class Placed:
    """A scallop to draw: its model, its id in the truth, its instance-map value."""

    model: ScallopModel
    id: int
    instance: int


@dataclass
class RenderResult:
    image: np.ndarray  # (H, W, 3) uint8 BGR, before JPEG
    parts: np.ndarray  # (H, W) uint8
    instances: np.ndarray  # (H, W) uint16
    scallops: list[ScallopTruth] = field(default_factory=list)


def interpolated_belt_maps(camera: CameraModel, step: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Belt coordinates of every pixel from the camera model evaluated on a grid every
    ``step`` pixels (reaching past the border) and interpolated bilinearly: the maps are
    smooth, so this matches :meth:`CameraModel.belt_maps` to far below a pixel at a small
    fraction of the cost. Used where every frame has its own camera (data sets)."""
    w, h = camera.image_size
    gx = np.arange(-step, w + 2 * step, step, dtype=np.float64)
    gy = np.arange(-step, h + 2 * step, step, dtype=np.float64)
    u, v = np.meshgrid(gx, gy)
    xy = camera.pixel_to_belt(np.column_stack([u.ravel(), v.ravel()]))

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


class SceneRenderer:
    """Renders placed scallops on a moving belt through one :class:`CameraModel`.

    ``maps`` defaults to ``camera.belt_maps()``; the canvas scale is the finest the image
    needs (the smallest mm-per-pixel anywhere in the frame).
    """

    PAD = 4  # canvas pixels around the view, for interpolation

    def __init__(
        self,
        camera: CameraModel,
        maps: tuple[np.ndarray, np.ndarray] | None = None,
        noise_bank: bool = True,
        belt_period_mm: float = 0.0,
    ) -> None:
        self.camera = camera
        bx, by = maps if maps is not None else camera.belt_maps()
        w, h = camera.image_size
        self.s = self._canvas_scale(bx, by)
        self.x_lo, self.x_hi = float(bx.min()), float(bx.max())
        self.y_lo, self.y_hi = float(by.min()), float(by.max())
        s = self.s
        self.ky0 = int(math.floor(self.y_lo / s)) - self.PAD
        self.height = int(math.ceil(self.y_hi / s)) + self.PAD - self.ky0 + 1
        self.width = int(math.ceil((self.x_hi - self.x_lo) / s)) + 2 * self.PAD + 2
        self._bxs = (bx / s).astype(np.float32)
        self._mys = (by / s - self.ky0).astype(np.float32)
        self.period_px = max(self.width + 8, int(math.ceil(belt_period_mm / s)))
        self.effects = CameraEffects((w, h), noise_bank=noise_bank)
        self._belt: BeltTexture | None = None
        self._belt_key: tuple | None = None
        self.mm_per_px = float(camera.mm_per_px_at([[(w - 1) / 2, (h - 1) / 2]])[0])

    @staticmethod
    def _canvas_scale(bx: np.ndarray, by: np.ndarray) -> float:
        # Pixel spacing on the belt, sampled on a sparse grid (the maps are smooth).
        sx, sy = bx[::8, ::8], by[::8, ::8]
        dx = np.hypot(bx[::8, 1::8] - sx[:, : bx[::8, 1::8].shape[1]], by[::8, 1::8] - sy[:, : by[::8, 1::8].shape[1]])
        dy = np.hypot(bx[1::8, ::8] - sx[: bx[1::8, ::8].shape[0]], by[1::8, ::8] - sy[: by[1::8, ::8].shape[0]])
        return float(min(dx.min(), dy.min()))

    def belt(self, look: LookParams) -> BeltTexture:
        key = look.belt_key()
        if key != self._belt_key:
            self._belt = BeltTexture(look, self.s, self.ky0, self.height, self.period_px)
            self._belt_key = key
        return self._belt

    def view_x_range(self, travel: float) -> tuple[float, float]:
        """Material x range the canvas covers at ``travel``."""
        return self.x_lo - travel, self.x_hi - travel

    def in_canvas(self, model: ScallopModel, travel: float) -> bool:
        lo, hi = self.view_x_range(travel)
        sp, r = model.spec, model.r_max + ScallopModel.SHADOW_MM
        return (
            sp.x_mm + r > lo - self.PAD * self.s
            and sp.x_mm - r < hi + self.PAD * self.s
            and sp.y_mm + r > self.y_lo - self.PAD * self.s
            and sp.y_mm - r < self.y_hi + self.PAD * self.s
        )

    # ------------------------------------------------------------ one frame
    def render(self, placed: list[Placed], travel: float, look: LookParams, rng: np.random.Generator) -> RenderResult:
        s = self.s
        k0 = int(math.floor((self.x_lo - travel) / s)) - self.PAD
        canvas = self.belt(look).strip(k0, self.width)
        parts_c = np.zeros((self.height, self.width), np.uint8)
        inst_c = np.zeros((self.height, self.width), np.uint16)
        for pl in placed:
            self._composite(pl, k0, canvas, parts_c, inst_c)
        off = np.float32(travel / s + k0)
        mx = self._bxs - off
        img = cv2.remap(canvas, mx, self._mys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        parts = cv2.remap(parts_c, mx, self._mys, cv2.INTER_NEAREST, borderValue=0)
        inst = cv2.remap(inst_c, mx, self._mys, cv2.INTER_NEAREST, borderValue=0)
        img = self.effects.apply(img, look, rng)
        facts = [f for f in (self._facts(pl, travel, parts, inst) for pl in placed) if f is not None]
        return RenderResult(image=img, parts=parts, instances=inst, scallops=facts)

    def _composite(self, pl: Placed, k0: int, canvas, parts_c, inst_c) -> None:
        spr = pl.model.sprite(self.s)
        h, w = spr.alpha.shape
        r0, c0 = spr.ky - self.ky0, spr.kx - k0
        a0, b0 = max(0, r0), max(0, c0)
        a1, b1 = min(self.height, r0 + h), min(self.width, c0 + w)
        if a0 >= a1 or b0 >= b1:
            return
        sl = (slice(a0 - r0, a1 - r0), slice(b0 - c0, b1 - c0))
        region = canvas[a0:a1, b0:b1].astype(np.float32)
        alpha = spr.alpha[sl][..., None]
        region *= 1 - spr.shadow[sl][..., None]
        region += alpha * (spr.bgr[sl] - region)
        canvas[a0:a1, b0:b1] = np.clip(region + 0.5, 0, 255).astype(np.uint8)
        lab = spr.parts[sl]
        m = lab > 0
        parts_c[a0:a1, b0:b1][m] = lab[m]
        inst_c[a0:a1, b0:b1][m] = pl.instance

    def _facts(self, pl: Placed, travel: float, parts, inst) -> ScallopTruth | None:
        model, sp = pl.model, pl.model.spec
        w, h = self.camera.image_size
        centre = np.array([sp.x_mm + travel, sp.y_mm])
        ring = model.outline(96) + centre
        pts = np.vstack([centre[None], ring])
        px = self.camera.project_belt(pts)
        ring_px = px[1:]
        x0, y0 = (int(v) - 2 for v in np.floor(ring_px.min(axis=0)))
        x1, y1 = (int(v) + 2 for v in np.ceil(ring_px.max(axis=0)))
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1 + 1), min(h, y1 + 1)
        if x0 >= x1 or y0 >= y1:
            return None
        mask = inst[y0:y1, x0:x1] == pl.instance
        count = int(mask.sum())
        if count == 0:
            return None
        ys, xs = np.nonzero(mask)
        bbox = (int(xs.min()) + x0, int(ys.min()) + y0, int(xs.max()) + x0, int(ys.max()) + y0)
        uro = mask & (parts[y0:y1, x0:x1] == URO)
        uro_px = int(uro.sum())
        uro_c = None
        if uro_px:
            uy, ux = np.nonzero(uro)
            uro_c = (float(ux.mean()) + x0, float(uy.mean()) + y0)
        alone = abs(_polygon_area(ring_px))
        outside = bool(
            (ring_px[:, 0] < 0).any()
            or (ring_px[:, 0] > w - 1).any()
            or (ring_px[:, 1] < 0).any()
            or (ring_px[:, 1] > h - 1).any()
        )
        touches = bbox[0] == 0 or bbox[1] == 0 or bbox[2] == w - 1 or bbox[3] == h - 1
        has_uro = model.uro_present
        uro_B = tuple(float(v) for v in centre + model.uro_centre_offset()) if has_uro else None
        add_B = tuple(float(v) for v in centre + model.adductor_centre_offset())
        return ScallopTruth(
            id=pl.id,
            instance=pl.instance,
            center_px=(float(px[0, 0]), float(px[0, 1])),
            bbox_px=bbox,
            visible_px=count,
            visible_fraction=float(min(1.0, count / max(alone, 1.0))),
            cut_by_border=bool(outside or touches),
            uro_present=uro_px > 0,
            uro_centroid_px=uro_c,
            uro_px=uro_px,
            has_uro=has_uro,
            uro_hidden=bool(has_uro and sp.uro_hidden > 0),
            upside_down=sp.upside_down,
            gonad=sp.gonad,
            gills=sp.gills,
            diameter_mm=sp.diameter_mm,
            rotation_deg=sp.rotation_deg,
            center_B=(float(centre[0]), float(centre[1])),
            uro_center_B=uro_B,
            adductor_center_B=add_B,
        )


def _polygon_area(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


# ============================================================================ overlay
PART_COLOURS_BGR = {
    MANTLE: (0, 200, 255),
    GONAD: (255, 0, 255),
    ADDUCTOR: (255, 255, 0),
    URO: (0, 0, 255),
    GILL: (0, 255, 0),
}


def draw_truth(image: np.ndarray, truth: FrameTruth) -> np.ndarray:
    """The frame with its ground truth drawn over it: part outlines in colours, instance
    ids, uro centroids (cross), scallops cut by the border (red box, "CUT") and upside-down
    ones ("UD")."""
    out = image.copy()
    parts = truth.parts
    for label, colour in PART_COLOURS_BGR.items():
        m = (parts == label).astype(np.uint8)
        if m.any():
            edge = cv2.morphologyEx(m, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
            out[edge & (parts == label)] = colour
    # Where two scallops touch, the boundary between them (same part, different owner).
    inst = truth.instances.astype(np.int32)
    split = np.zeros(inst.shape, bool)
    split[:, 1:] |= (inst[:, 1:] != inst[:, :-1]) & (inst[:, 1:] > 0) & (inst[:, :-1] > 0)
    split[1:, :] |= (inst[1:, :] != inst[:-1, :]) & (inst[1:, :] > 0) & (inst[:-1, :] > 0)
    out[split] = (255, 255, 255)
    for f in truth.scallops:
        x0, y0, x1, y1 = f.bbox_px
        box = (0, 0, 255) if f.cut_by_border else (255, 255, 255)
        cv2.rectangle(out, (x0, y0), (x1, y1), box, 1)
        tags = [f"#{f.id}"]
        if f.cut_by_border:
            tags.append("CUT")
        if f.upside_down:
            tags.append("UD")
        if f.has_uro and not f.uro_present:
            tags.append("uro hidden")
        elif not f.has_uro:
            tags.append("no uro")
        tags.append(f"{f.visible_fraction:.2f}")
        cv2.putText(
            out, " ".join(tags), (x0 + 2, max(12, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA
        )
        cv2.putText(out, " ".join(tags), (x0 + 2, max(12, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, box, 1, cv2.LINE_AA)
        if f.uro_centroid_px is not None:
            c = (int(round(f.uro_centroid_px[0])), int(round(f.uro_centroid_px[1])))
            cv2.drawMarker(out, c, (0, 255, 255), cv2.MARKER_CROSS, 14, 2)
    return out
