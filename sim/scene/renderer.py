"""The compositor: belt strip, scallop sprites and camera effects into one frame with its
ground truth, through one camera model (see the package's docstring for the path)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from scallop.calibration.camera_model import CameraModel, interpolated_maps
from scallop.sim.scene.belt import BeltTexture
from scallop.sim.scene.effects import CameraEffects
from scallop.sim.scene.hard import Debris, paint_debris
from scallop.sim.scene.look import URO, LookParams
from scallop.sim.scene.model import ScallopModel
from scallop.sim.scene.truth import ScallopTruth


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
    return interpolated_maps(camera.image_size, camera.pixel_to_belt, step)


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
    def render(
        self,
        placed: list[Placed],
        travel: float,
        look: LookParams,
        rng: np.random.Generator,
        debris: list[Debris] = (),
    ) -> RenderResult:
        """``debris``: fragments on the belt (material coordinates), drawn under the scallops."""
        s = self.s
        k0 = int(math.floor((self.x_lo - travel) / s)) - self.PAD
        canvas = self.belt(look).strip(k0, self.width)
        paint_debris(canvas, list(debris), s, k0, self.ky0)
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
