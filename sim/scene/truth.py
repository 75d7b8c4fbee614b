"""Ground truth of a frame (part and instance maps, facts per scallop) and its overlay."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from scallop.sim.scene.look import ADDUCTOR, GILL, GONAD, MANTLE, URO, LookParams


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
