"""Detections: one dataclass that every consumer of vision takes.

All arrays have the number of scallops N as their first dimension, and index together:
``d[d.pickable]`` is a Detections of the pickable scallops only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np


class VisionReason(StrEnum):
    """Why vision finds a scallop not pickable (the empty string means it is)."""

    NO_URO = "no_uro"  # no uro visible: passed on, nothing to remove
    # Some uro seen, too little to grip (a sliver beside a mantle flap, or only a hint of one):
    # it still carries its uro, so it goes to rework, never on as clean.
    HIDDEN_URO = "hidden_uro"
    CUT_BY_BORDER = "cut_by_border"  # partly outside the image: its grasp would be a guess
    TOO_CLOSE = "too_close"  # a touching neighbour lies where the jaws would close
    AMBIGUOUS = "ambiguous"  # a uro, but no grasp far enough from the adductor
    # No uro found, but partly or wholly where the fluorescence camera does not see, by a model
    # that reads the channel: with no glow to go by, "no uro" cannot be told, so it goes to rework.
    OUTSIDE_CHANNEL = "outside_channel"


REASON_NO_URO = VisionReason.NO_URO.value
REASON_HIDDEN_URO = VisionReason.HIDDEN_URO.value
REASON_CUT = VisionReason.CUT_BY_BORDER.value
REASON_TOO_CLOSE = VisionReason.TOO_CLOSE.value
REASON_AMBIGUOUS = VisionReason.AMBIGUOUS.value
REASON_OUTSIDE_CHANNEL = VisionReason.OUTSIDE_CHANNEL.value
REASONS = tuple(r.value for r in VisionReason)


@dataclass
class Detections:
    """Scallops found in one frame.

    xyxy:        (N, 4) float64 bounding box in image pixels (x0, y0, x1, y1).
    center_px:   (N, 2) float64 centroid of the scallop's visible mask, pixels.
    area_mm2:    (N,)   float64 visible area.
    confidence:  (N,)   float64 mean probability that the mask is scallop, 0..1.
    uro_found:   (N,)   bool.
    grasp_px:    (N, 2) float64 grasp point well inside the uro (its most interior point);
                 NaN where no uro was found.
    pull_dir:    (N, 2) float64 unit vector in image pixels pointing away from the adductor;
                 NaN where unknown.
    uro_confidence: (N,) float64 mean uro probability over the uro's mask, 0 where none.
    uro_area_mm2:   (N,) float64.
    cut_by_border:  (N,) bool — part of the scallop lies outside the image.
    pickable:    (N,)   bool.
    reason:      (N,)   object (str) — why not pickable, "" when pickable (see REASONS).
    contours:    list of N (K, 2) float32 arrays — outline of each visible mask, pixels.
    uro_center_px: (N, 2) float64 centroid of the uro's mask, NaN where no uro was found
                 (None from a producer that does not measure it).
    uro_evidence: (N,) float64 the highest uro probability over the scallop's mask where no
                 uro big enough to grip was found (``hidden_uro`` when above
                 ``PipelineConfig.hidden_uro_probability``), NaN where one was (None from a
                 producer that does not measure it).
    center_mm, grasp_mm, pull_dir_mm, uro_center_mm: (N, 2) float64 in the belt frame (mm)
                 when a pixel→belt mapping was given, else None.
    part_contours: when asked for (``Pipeline.detect(outlines=True)``), list of N dicts
                 ``{"uro": [(K, 2) float32, ...], "adductor": [...]}``: the outlines of each
                 scallop's uro and adductor masks in pixels; else None.
    """

    xyxy: np.ndarray
    center_px: np.ndarray
    area_mm2: np.ndarray
    confidence: np.ndarray
    uro_found: np.ndarray
    grasp_px: np.ndarray
    pull_dir: np.ndarray
    uro_confidence: np.ndarray
    uro_area_mm2: np.ndarray
    cut_by_border: np.ndarray
    pickable: np.ndarray
    reason: np.ndarray
    contours: list = field(default_factory=list)
    uro_center_px: np.ndarray | None = None
    uro_evidence: np.ndarray | None = None
    center_mm: np.ndarray | None = None
    grasp_mm: np.ndarray | None = None
    pull_dir_mm: np.ndarray | None = None
    uro_center_mm: np.ndarray | None = None
    part_contours: list | None = None

    _ARRAYS = (
        "xyxy",
        "center_px",
        "area_mm2",
        "confidence",
        "uro_found",
        "grasp_px",
        "pull_dir",
        "uro_confidence",
        "uro_area_mm2",
        "cut_by_border",
        "pickable",
        "reason",
    )

    def __len__(self) -> int:
        return len(self.xyxy)

    def __post_init__(self) -> None:
        n = len(self.xyxy)
        for name in self._ARRAYS:
            if len(getattr(self, name)) != n:
                raise ValueError(f"Detections.{name} has {len(getattr(self, name))} rows, expected {n}")

    @classmethod
    def empty(cls) -> Detections:
        z2 = np.zeros((0, 2))
        return cls(
            xyxy=np.zeros((0, 4)),
            center_px=z2,
            area_mm2=np.zeros(0),
            confidence=np.zeros(0),
            uro_found=np.zeros(0, bool),
            grasp_px=z2.copy(),
            pull_dir=z2.copy(),
            uro_confidence=np.zeros(0),
            uro_area_mm2=np.zeros(0),
            cut_by_border=np.zeros(0, bool),
            pickable=np.zeros(0, bool),
            reason=np.zeros(0, object),
            contours=[],
        )

    def __getitem__(self, idx) -> Detections:
        if isinstance(idx, (int, np.integer)):
            idx = [int(idx)]
        idx = np.arange(len(self))[idx]
        kw = {name: getattr(self, name)[idx] for name in self._ARRAYS}
        kw["contours"] = [self.contours[i] for i in idx]
        if self.part_contours is not None:
            kw["part_contours"] = [self.part_contours[i] for i in idx]
        for name in ("uro_center_px", "uro_evidence", "center_mm", "grasp_mm", "pull_dir_mm", "uro_center_mm"):
            v = getattr(self, name)
            kw[name] = None if v is None else v[idx]
        return Detections(**kw)

    def with_belt_mapping(self, to_belt: Callable[[np.ndarray], np.ndarray], step_px: float = 4.0) -> Detections:
        """Fill the *_mm fields with ``to_belt`` ((N,2) pixels → (N,2) belt mm).

        The pull direction is mapped by moving ``step_px`` along it, so it stays right under
        perspective and lens distortion."""
        n = len(self)
        self.center_mm = to_belt(self.center_px) if n else np.zeros((0, 2))
        self.grasp_mm = np.full((n, 2), np.nan)
        self.pull_dir_mm = np.full((n, 2), np.nan)
        ok = np.isfinite(self.grasp_px).all(1) & np.isfinite(self.pull_dir).all(1)
        if ok.any():
            g = to_belt(self.grasp_px[ok])
            g2 = to_belt(self.grasp_px[ok] + step_px * self.pull_dir[ok])
            d = g2 - g
            d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
            self.grasp_mm[ok] = g
            self.pull_dir_mm[ok] = d
        if self.uro_center_px is not None:
            self.uro_center_mm = np.full((n, 2), np.nan)
            has = np.isfinite(self.uro_center_px).all(1)
            if has.any():
                self.uro_center_mm[has] = to_belt(self.uro_center_px[has])
        return self

    def to_json(self, image: str, width: int, height: int) -> dict:
        """The ``scallop detect --json`` object for one image."""
        out = []
        for i in range(len(self)):
            uro = None
            if self.uro_found[i]:
                uro = {
                    "grasp_px": [round(float(v), 2) for v in self.grasp_px[i]],
                    "pull_dir": [round(float(v), 4) if np.isfinite(v) else None for v in self.pull_dir[i]],
                    "confidence": round(float(self.uro_confidence[i]), 4),
                }
                if self.grasp_mm is not None and np.isfinite(self.grasp_mm[i]).all():
                    uro["grasp_mm"] = [round(float(v), 2) for v in self.grasp_mm[i]]
                    uro["pull_dir_mm"] = [round(float(v), 4) for v in self.pull_dir_mm[i]]
            item = {
                "center_px": [round(float(v), 2) for v in self.center_px[i]],
                "bbox_px": [round(float(v), 1) for v in self.xyxy[i]],
                "uro": uro,
                "pickable": bool(self.pickable[i]),
                "reason": str(self.reason[i]),
            }
            if self.center_mm is not None:
                item["center_mm"] = [round(float(v), 2) for v in self.center_mm[i]]
            out.append(item)
        return {"image": image, "width": int(width), "height": int(height), "scallops": out}
