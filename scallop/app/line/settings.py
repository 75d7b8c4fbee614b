"""What may be changed while the line runs, and how: the recipe (stopped or paused only) and
the vision thresholds (the engineer panel, at once); the rest of the configuration needs a
restart. Functions of :class:`~scallop.app.line.line.Line`, which exposes them (LineAPI).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from scallop.app.line.states import LineState
from scallop.app.line_api import Recipe
from scallop.errors import StateError

if TYPE_CHECKING:
    from scallop.app.line.line import Line


def recipes(line: Line) -> list[Recipe]:
    return [Recipe(r.name, tuple(r.product_size_mm), r.belt_speed_mm_s, r.description) for r in line.config.recipes]


def select_recipe(line: Line, name: str, user: str) -> None:
    names = [r.name for r in line.config.recipes]
    if name not in names:
        raise KeyError(f"unknown recipe {name!r}; choose one of {', '.join(names)}")
    with line.control.lock:
        if line.state in (LineState.RUNNING, LineState.WAITING_CAMERA):
            raise StateError("pause or stop the line before changing the recipe")
        line.recipe = name
        line.publisher.event("recipe", user, {"recipe": name})


def config_view(line: Line) -> dict:
    from scallop.app.config import to_dict

    cam = line.backend.camera_model
    d = to_dict(line.config)
    d["calibration"] = {
        "image_size": list(cam.image_size),
        "mm_per_px_center": round(cam.mm_per_px_center(), 4),
        "counts_per_mm": line.backend.belt.counts_per_mm,
    }
    return d


def update_config(line: Line, changes: dict, user: str) -> dict:
    """Engineer changes to the vision thresholds, validated and applied at once. Keys as the
    screen's panel takes them, ``{"vision.min_uro_confidence": 0.6}``, or as a table,
    ``{"vision": {"min_uro_confidence": 0.6}}``. Anything else needs a restart (the
    configuration file) or is not the line's to change (the belt's speed is the recipe's)."""
    from scallop.app.config import build, to_dict, vision_changes
    from scallop.vision.pipeline import PipelineConfig

    vision = vision_changes(changes)
    new = build(PipelineConfig, {**to_dict(line.config.vision), **vision}, "vision")
    with line.control.lock:
        line.config = replace(line.config, vision=new)
        line.pipeline.config = new
        line.models.apply_config(new)
        line.publisher.event("config", user, {"vision": vision})
    check_food_safety_rules(line)
    return to_dict(new)


# At or above this the hidden-uro rule lets nearly every glimpsed uro pass (1 turns it off; the
# hard scenes were measured at 0.1–0.5, models/README.md).
HIDDEN_URO_OFF = 0.9


def hidden_uro_default() -> str:
    """The value to set the rule back to: the shipped one (it moved, 0.3 → 0.15, in stop 36)."""
    from scallop.vision.pipeline import PipelineConfig

    return f"{PipelineConfig.hidden_uro_probability:g}"


def check_food_safety_rules(line: Line) -> None:
    """A vision threshold that switches a food-safety rule off is allowed (an engineer may need
    it to diagnose), but never silently: an alarm stays while it is set."""
    p = line.config.vision.hidden_uro_probability
    if p >= HIDDEN_URO_OFF:
        back = hidden_uro_default()
        line.alarms.raise_(
            "vision.hidden_uro_off",
            "warning",
            "vision",
            f"vision.hidden_uro_probability = {p:g}: scallops whose uro is seen too little to grip pass on "
            f"as clean; set it back to {back}",
            code="vision.hidden_uro_off",
            params={"value": f"{p:g}", "default": back},
        )
    else:
        line.alarms.clear("vision.hidden_uro_off")


def check_model_scale(line: Line) -> None:
    """The camera's scale against the scales the live model was measured at (its own figures'
    bins, 0.3–1.0 mm/px for the shipped ones): outside them its figures say nothing, and a uro
    shrinks to a few pixels on a coarser camera. Not refused (a plant may measure the model there
    with ``scallop eval``, which then writes that bin), never silent: a warning alarm while it
    lasts. Run at the start and whenever another model goes live."""
    from scallop.app.evaluation import scale_outside_measured

    s = line._scale
    span = scale_outside_measured(line.pipeline.model.info.meta, s)
    if span is not None:
        lo, hi = (f"{v:g}" for v in span)
        line.alarms.raise_(
            "vision.scale_untested",
            "warning",
            "vision",
            f"the camera sees the belt at {s:.2f} mm per pixel, outside the {lo}–{hi} mm/px the model "
            f"{line.models.model.get('name', '')} was measured at: its accuracy is unknown there; set the "
            "camera back (docs/cameras.md, Resolution) or measure the model at this scale ('scallop eval')",
            code="vision.scale_untested",
            params={"scale": f"{s:.2f}", "low": lo, "high": hi},
        )
    else:
        line.alarms.clear("vision.scale_untested")
