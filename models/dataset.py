"""Read labelled data sets (simulator output or real labelled photos) for training and
evaluation. The format is documented in docs/dataset-format.md; the simulator writes it
(scallop.sim.dataset) and an engineer can produce it from real photos.

Minimal folder::

    dataset.json            {"format": "scallop-dataset", "version": 1, "mm_per_px": 0.5, ...}
    images/<name>.png|jpg   colour photo
    parts/<name>.png        uint8 part labels (0 bg, 1 mantle, 2 gonad, 3 adductor, 4 uro, 5 gill)
    instances/<name>.png    optional uint16 instance ids (derived from parts when absent)
    labels/<name>.json      optional per-image facts; "mm_per_px" here overrides dataset.json
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from scallop.errors import DataError
from scallop.imagefiles import IMAGE_SUFFIXES, frame_files

DATASET_FORMAT = "scallop-dataset"
DATASET_VERSIONS = (1,)
PART_NAMES = ("background", "mantle", "gonad", "adductor", "uro", "gill")


class DatasetError(DataError):
    """A data set that cannot be read; the message names the file and the problem."""


@dataclass
class Sample:
    """One labelled image.

    image:     (H, W, 3) uint8 BGR.
    parts:     (H, W) uint8 part labels (see PART_NAMES).
    instances: (H, W) uint16 instance ids, 0 = none.
    mm_per_px: scale on the belt.
    labels:    the per-image facts (labels/<name>.json), {} when absent.
    """

    name: str
    image: np.ndarray
    parts: np.ndarray
    instances: np.ndarray
    mm_per_px: float
    labels: dict = field(default_factory=dict)


def read_manifest(root: Path) -> dict:
    mf = root / "dataset.json"
    if not mf.is_file():
        raise DatasetError(f"{mf}: missing (every data set starts with a dataset.json manifest)")
    try:
        manifest = json.loads(mf.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{mf}: not valid JSON ({e})") from None
    if manifest.get("format") != DATASET_FORMAT:
        raise DatasetError(f"{mf}: format is {manifest.get('format')!r}, expected {DATASET_FORMAT!r}")
    if manifest.get("version") not in DATASET_VERSIONS:
        raise DatasetError(
            f"{mf}: version {manifest.get('version')!r} is not supported "
            f"(this software reads {', '.join(map(str, DATASET_VERSIONS))})"
        )
    return manifest


def _read(path: Path, flags: int) -> np.ndarray:
    data = np.fromfile(str(path), np.uint8) if path.is_file() else None
    img = cv2.imdecode(data, flags) if data is not None and data.size else None
    if img is None:
        raise DatasetError(f"{path}: missing or not a readable image")
    return img


def derive_instances(parts: np.ndarray) -> np.ndarray:
    """Connected components of the labelled meat, for data sets without instance maps
    (touching scallops then count as one: label instances to teach splitting)."""
    _, lab = cv2.connectedComponents((parts > 0).astype(np.uint8), connectivity=8)
    return lab.astype(np.uint16)


def derive_facts(parts: np.ndarray, instances: np.ndarray) -> list[dict]:
    """Per-scallop facts derivable from the maps alone (for a set without labels/ files): what
    the frame scorer needs to know which scallops count and which carry a visible uro."""
    h, w = parts.shape
    out = []
    for v in np.unique(instances):
        if v == 0:
            continue
        ys, xs = np.nonzero(instances == v)
        uro = parts[ys, xs] == PART_NAMES.index("uro")
        bbox = [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
        out.append(
            {
                "id": int(v),
                "instance": int(v),
                "bbox_px": bbox,
                "visible_px": len(xs),
                "cut_by_border": bool(bbox[0] == 0 or bbox[1] == 0 or bbox[2] == w - 1 or bbox[3] == h - 1),
                "uro_present": bool(uro.any()),
                "uro_px": int(uro.sum()),
                "uro_centroid_px": [float(xs[uro].mean()), float(ys[uro].mean())] if uro.any() else None,
            }
        )
    return out


def list_names(root: Path) -> list[str]:
    images = root / "images"
    if not images.is_dir():
        raise DatasetError(f"{images}: missing (images go in an images/ folder)")
    return [p.stem for p in frame_files(images)]


def load_sample(root: Path, name: str, manifest: dict, mm_per_px: float | None = None) -> Sample:
    """One labelled image; ``mm_per_px`` (given on the command line) replaces the set's scale."""
    img_path = next(
        (root / "images" / (name + s) for s in IMAGE_SUFFIXES if (root / "images" / (name + s)).is_file()), None
    )
    if img_path is None:
        raise DatasetError(f"{root / 'images' / name}.*: image missing")
    image = _read(img_path, cv2.IMREAD_COLOR)
    parts = _read(root / "parts" / f"{name}.png", cv2.IMREAD_UNCHANGED)
    if parts.ndim != 2 or parts.dtype != np.uint8:
        raise DatasetError(
            f"{root / 'parts' / name}.png: must be single-channel 8-bit labels, got {parts.shape} {parts.dtype}"
        )
    if parts.shape != image.shape[:2]:
        raise DatasetError(
            f"{root / 'parts' / name}.png: size {parts.shape[::-1]} differs from its image {image.shape[1::-1]}"
        )
    if parts.max() >= len(PART_NAMES):
        raise DatasetError(
            f"{root / 'parts' / name}.png: label {int(parts.max())} is unknown (0..{len(PART_NAMES) - 1})"
        )
    inst_path = root / "instances" / f"{name}.png"
    if inst_path.is_file():
        inst = _read(inst_path, cv2.IMREAD_UNCHANGED)
        if inst.shape != parts.shape:
            raise DatasetError(f"{inst_path}: size {inst.shape[::-1]} differs from its image")
        inst = inst.astype(np.uint16)
    else:
        inst = derive_instances(parts)
    labels = {}
    lab_path = root / "labels" / f"{name}.json"
    if lab_path.is_file():
        try:
            labels = json.loads(lab_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DatasetError(f"{lab_path}: not valid JSON ({e})") from None
    mm = mm_per_px if mm_per_px is not None else labels.get("mm_per_px", manifest.get("mm_per_px"))
    if "scallops" not in labels:
        labels = {**labels, "scallops": derive_facts(parts, inst)}
    if not isinstance(mm, (int, float)) or not (0.05 <= mm <= 5):
        raise DatasetError(
            f"{lab_path if 'mm_per_px' in labels else root / 'dataset.json'}: "
            f"mm_per_px={mm!r} missing or out of range 0.05..5 (the scale is needed to train)"
        )
    return Sample(name=name, image=image, parts=parts, instances=inst, mm_per_px=float(mm), labels=labels)


def iter_dataset(root: str | Path, limit: int | None = None, mm_per_px: float | None = None) -> Iterator[Sample]:
    root = Path(root)
    manifest = read_manifest(root)
    names = list_names(root)
    if not names:
        raise DatasetError(f"{root / 'images'}: no images")
    for name in names[:limit]:
        yield load_sample(root, name, manifest, mm_per_px)
