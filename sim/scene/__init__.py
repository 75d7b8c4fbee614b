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

One module per thing drawn: ``look`` (part labels, colours, LookParams), ``spec`` (a
scallop's parameters), ``model`` (its geometry and sprite), ``belt``, ``effects`` (the
camera in image space), ``truth`` (ground truth and its overlay) and ``renderer`` (the
compositor), ``hard`` (named hard conditions at the envelope's edges), ``fluorescence`` (the
second channel: the same scene as a fluorescence camera sees it, docs/fluorescence.md). The names below are the scene's public surface, importable from here.
"""

from scallop.sim.scene.belt import BeltTexture
from scallop.sim.scene.effects import (
    CameraEffects,
    field_gain,
    jpeg_roundtrip,
    motion_kernel,
    white_balance_gains,
)
from scallop.sim.scene.fluorescence import (
    LEVELS,
    FluorescenceLook,
    FluorescenceRenderer,
    FluorescenceResult,
    ScallopGlow,
)
from scallop.sim.scene.hard import HARD_CONDITIONS, Debris, draw_debris, hard_look, hard_scallop, paint_debris
from scallop.sim.scene.look import (
    ADDUCTOR,
    BACKGROUND,
    BELT_BGR,
    GILL,
    GONAD,
    LAB_RANGES,
    MANTLE,
    PART_NAMES,
    URO,
    LookParams,
    bgr_to_lab,
    lab_to_bgr,
)
from scallop.sim.scene.model import ScallopModel, Sprite
from scallop.sim.scene.renderer import (
    Placed,
    RenderResult,
    SceneRenderer,
    interpolated_belt_maps,
    interpolated_maps,
)
from scallop.sim.scene.spec import ScallopSpec
from scallop.sim.scene.truth import PART_COLOURS_BGR, FrameTruth, ScallopTruth, draw_truth

__all__ = [
    "ADDUCTOR",
    "BACKGROUND",
    "HARD_CONDITIONS",
    "BELT_BGR",
    "GILL",
    "GONAD",
    "LAB_RANGES",
    "LEVELS",
    "MANTLE",
    "PART_COLOURS_BGR",
    "PART_NAMES",
    "URO",
    "BeltTexture",
    "CameraEffects",
    "Debris",
    "FluorescenceLook",
    "FluorescenceRenderer",
    "FluorescenceResult",
    "FrameTruth",
    "LookParams",
    "Placed",
    "RenderResult",
    "ScallopModel",
    "ScallopGlow",
    "ScallopSpec",
    "ScallopTruth",
    "SceneRenderer",
    "Sprite",
    "bgr_to_lab",
    "draw_debris",
    "draw_truth",
    "field_gain",
    "hard_look",
    "hard_scallop",
    "interpolated_belt_maps",
    "interpolated_maps",
    "jpeg_roundtrip",
    "lab_to_bgr",
    "motion_kernel",
    "paint_debris",
    "white_balance_gains",
]
