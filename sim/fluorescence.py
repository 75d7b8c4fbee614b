"""The fluorescence channel of the simulated line: the two optical set-ups of the spec
(shared/spec/scallop-appearance.md, "Second channel: fluorescence"; docs/fluorescence.md).

* ``second_camera``: a monochrome camera beside the colour one, with its own intrinsics,
  viewpoint and resolution, exposed at the same moment. Its image is in its own pixels; the
  belt-plane homography between the two cameras carries it onto the colour frame.
* ``alternate``: the colour camera itself on alternate, strobed frames. Its image has the
  colour frame's pixels, but it is exposed ``frame_interval_ms`` later and the belt has
  moved meanwhile; the two frames' encoder counts tell how far.

Every fluorescence frame comes with what a consumer needs to register it (its camera model,
its encoder count, the homography) and with the simulator's own exact registration onto the
colour frame (what a data set's ``x.uv.png`` holds), so the line's registration can be checked
against the truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from scallop.calibration.camera_model import CameraModel
from scallop.sim.config import camera_looking_down
from scallop.sim.scene import SceneRenderer, interpolated_maps
from scallop.sim.scene.fluorescence import FluorescenceLook, FluorescenceRenderer

if TYPE_CHECKING:  # the world builds its channel, which renders under the world's lock
    from scallop.sim.world import SimWorld


def belt_homography(camera: CameraModel) -> np.ndarray:
    """3×3 homography from the belt plane (x, y in mm, z = 0) to ``camera``'s pixels, lens
    distortion left out (a pinhole: what a homography can hold)."""
    return camera.K @ np.column_stack([camera.R[:, 0], camera.R[:, 1], camera.t])


def fluorescence_homography(fluo: CameraModel, colour: CameraModel, shift_mm: float = 0.0) -> np.ndarray:
    """3×3 homography from a fluorescence image's pixels to the colour frame's pixels that saw
    the same piece of belt, for a belt that moved ``shift_mm`` along its travel (+x) between
    the colour exposure and the fluorescence one (0 for simultaneous exposures).

    A fluorescence pixel sees belt point X; that material was at X − shift at the colour
    exposure, where the colour camera saw it: H = H_colour · T(−shift) · H_fluo⁻¹."""
    T = np.array([[1.0, 0.0, -float(shift_mm)], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    H = belt_homography(colour) @ T @ np.linalg.inv(belt_homography(fluo))
    return H / H[2, 2]


@dataclass
class FluorescenceFrame:
    """One fluorescence exposure and how it lines up with its colour frame.

    image:          (h, w) uint8 as the fluorescence camera gives it, in its own pixels.
    timestamp:      its exposure time (the world's clock, s).
    encoder:        the belt encoder count latched at its exposure.
    colour_encoder: the count latched at the colour frame's exposure (the pair's other half).
    travel_mm:      belt travel at its exposure.
    shift_mm:       belt travel between the colour exposure and this one (0 for a second
                    camera; speed × frame interval for alternate frames).
    camera:         the model of the camera that took it.
    homography:     3×3, its pixels → the colour frame's pixels seeing the same material
                    (belt plane, lens distortion left out: exact for distortion-free cameras).
    registered:     (H, W) uint8 on the colour frame's pixels, registered exactly by the
                    simulator (lens distortion included): what ``x.uv.png`` holds.
    coverage:       (H, W) bool, colour pixels whose material this exposure saw (elsewhere
                    ``registered`` is 0).
    setup:          "second_camera" or "alternate".
    look:           the channel's blur, noise and belt level in this frame.
    """

    image: np.ndarray
    timestamp: float
    encoder: int
    colour_encoder: int
    travel_mm: float
    shift_mm: float
    camera: CameraModel
    homography: np.ndarray
    registered: np.ndarray
    coverage: np.ndarray
    setup: str
    look: FluorescenceLook


class FluorescenceChannel:
    """The fluorescence set-up of a :class:`SimWorld`, built by the world from
    ``config.fluorescence`` (never for setup "none")."""

    def __init__(self, world: SimWorld) -> None:
        cfg = world.config.fluorescence
        if not cfg.enabled:
            raise ValueError("fluorescence.setup is 'none': there is no channel to build")
        self.world = world
        self.cfg = cfg
        self.setup = cfg.setup
        if cfg.setup == "second_camera":
            self.camera = camera_looking_down(cfg)
            self.scene = SceneRenderer(self.camera, belt_period_mm=world.BELT_LOOP_MM)
            self.interval_s = 0.0
        else:
            self.camera = world.camera_model
            self.scene = world.renderer  # the same pixels, maps and canvas as the colour frames
            self.interval_s = cfg.frame_interval_ms / 1000.0
        self.renderer = FluorescenceRenderer(self.scene)
        # The belt under the UV light: one level per world, drawn from its seed.
        self.belt_level = float(np.random.default_rng([world.seed, 5]).uniform(0.5, 8.0))
        self._maps: dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def look_at(self, t: float) -> FluorescenceLook:
        """The channel's look at its exposure ``t``: blur from the belt speed over its longer
        exposure in its own pixels (capped where the colour camera's is, 3 px, times the ratio)."""
        w, cfg = self.world, self.cfg
        exposure_s = w.config.camera.exposure_ms * cfg.exposure_ratio / 1000.0
        blur = w.speed_mm_s(t) * exposure_s / self.scene.mm_per_px
        return FluorescenceLook(
            noise_sigma=cfg.noise_sigma,
            exposure_ratio=cfg.exposure_ratio,
            motion_blur_px=float(min(3.0 * cfg.exposure_ratio, blur)),
            belt_level=self.belt_level,
        )

    def render(self, t: float) -> FluorescenceFrame:
        """The fluorescence exposure that goes with the colour frame exposed at ``t``."""
        w = self.world
        t_f = t + self.interval_s
        with w._lock:
            travel_c = w.travel_mm(t)
            travel = w.travel_mm(t_f)
            w._advance(travel, t_f)
            placed = w.placed_in(self.scene, travel)
            look = self.look_at(t_f)
            rng = np.random.default_rng([w.seed, 6, int(round((t_f - w.t0) * 1e6)) & 0xFFFFFFFFFFFF])
            res = self.renderer.render(placed, travel, look, rng)
        shift = travel - travel_c
        mx, my, coverage = self._registration(shift)
        registered = cv2.remap(res.image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return FluorescenceFrame(
            image=res.image,
            timestamp=t_f,
            encoder=w.encoder_at(t_f),
            colour_encoder=w.encoder_at(t),
            travel_mm=travel,
            shift_mm=shift,
            camera=self.camera,
            homography=fluorescence_homography(self.camera, w.camera_model, shift),
            registered=registered,
            coverage=coverage,
            setup=self.setup,
            look=look,
        )

    def _registration(self, shift_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Maps from each colour pixel to the fluorescence pixel that saw the same material:
        the colour pixel's belt point, moved by ``shift_mm``, projected into the fluorescence
        camera. Cached per shift (a belt at constant speed always gives the same one)."""
        key = round(shift_mm, 3)
        hit = self._maps.get(key)
        if hit is None:
            colour, fluo = self.world.camera_model, self.camera

            def to_fluo(px: np.ndarray) -> np.ndarray:
                xy = colour.pixel_to_belt(px)
                xy[:, 0] += key
                return fluo.project_belt(xy)

            mx, my = interpolated_maps(colour.image_size, to_fluo)
            fw, fh = fluo.image_size
            coverage = (mx >= 0) & (mx <= fw - 1) & (my >= 0) & (my <= fh - 1)
            if len(self._maps) > 64:  # a belt changing speed gives a new shift per frame
                self._maps.clear()
            hit = self._maps[key] = (mx, my, coverage)
        return hit


def encoder_shift_mm(frame: FluorescenceFrame, world: SimWorld) -> float:
    """The belt's travel between the colour and the fluorescence exposure as the encoder
    tells it (what a line without the simulator's truth has), in mm."""
    return world.travel_from_encoder(frame.encoder) - world.travel_from_encoder(frame.colour_encoder)


__all__ = [
    "FluorescenceChannel",
    "FluorescenceFrame",
    "belt_homography",
    "encoder_shift_mm",
    "fluorescence_homography",
]
