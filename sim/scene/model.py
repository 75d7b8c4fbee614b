"""A scallop's geometry and appearance: signed-distance fields of its parts, the part at a
point (for grading) and its pre-rendered sprite (colour, labels, alpha, shadow)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from scallop.sim.scene.look import ADDUCTOR, BACKGROUND, GILL, GONAD, MANTLE, URO, lab_to_bgr
from scallop.sim.scene.spec import ScallopSpec


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

    def sprite_grid(self, s: float) -> tuple[int, int, np.ndarray, np.ndarray]:
        """The grid a sprite at canvas scale ``s`` is drawn on: the canvas index (kx, ky) of its
        pixel (0, 0) and the scallop-frame coordinates (p, q) of every pixel. Shared by every
        image of this scallop (colour, fluorescence), so they line up pixel for pixel."""
        sp = self.spec
        pad = self.r_max + self.SHADOW_MM
        kx = int(math.floor((sp.x_mm - pad) / s))
        ky = int(math.floor((sp.y_mm - pad) / s))
        n = int(math.ceil(2 * pad / s)) + 2
        xs = ((kx + np.arange(n)) * s - sp.x_mm).astype(np.float32)
        ys = ((ky + np.arange(n)) * s - sp.y_mm).astype(np.float32)
        X, Y = np.meshgrid(xs, ys)
        p, q = self.to_local(X, Y)
        return kx, ky, p, q

    def _render_sprite(self, s: float) -> Sprite:
        kx, ky, p, q = self.sprite_grid(s)
        n = p.shape[0]
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

    def eye_windows(self, s: float, F: dict[str, np.ndarray], kx: int, ky: int, n: int):
        """Each mantle eye on the sprite grid: ``(rows, cols, coverage)`` with the window's
        slices and the dot's anti-aliased coverage (h, w) float32 inside the outline. Every image
        of the scallop paints its eyes from these, so they sit on the same pixels."""
        if not len(self.eyes):
            return
        sp = self.spec
        off = self.to_belt(self.eyes[:, :2])
        cx = (sp.x_mm + off[:, 0]) / s - kx
        cy = (sp.y_mm + off[:, 1]) / s - ky
        for (x, y), rad in zip(np.column_stack([cx, cy]), self.eyes[:, 2]):
            rp = rad / s + 1.5
            x0, x1 = max(0, int(x - rp)), min(n, int(x + rp) + 2)
            y0, y1 = max(0, int(y - rp)), min(n, int(y + rp) + 2)
            if x0 >= x1 or y0 >= y1:
                continue
            yy, xx = np.mgrid[y0:y1, x0:x1]
            d = np.hypot(xx - x, yy - y) * s
            c = np.clip((rad - d) / s + 0.5, 0, 1).astype(np.float32)
            c *= F["outline"][y0:y1, x0:x1] > 0
            yield slice(y0, y1), slice(x0, x1), c

    def _draw_eyes(self, lab: np.ndarray, s: float, F: dict[str, np.ndarray], kx: int, ky: int) -> None:
        eye = np.array([12.0, 1.5, 3.0], np.float32)
        for rows, cols, c in self.eye_windows(s, F, kx, ky, lab.shape[0]):
            patch = lab[rows, cols]
            patch += c[..., None] * (eye - patch)
