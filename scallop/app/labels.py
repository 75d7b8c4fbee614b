"""Labelled photos in COCO 1.0 JSON: written for labelling tools, read back for training and
evaluation (docs/dataset-format.md, "COCO for labelling tools").

CVAT, Label Studio and Roboflow all read and write COCO instance segmentation. A scallop is one
``scallop`` annotation (its visible outline); its parts are ``uro``, ``adductor`` and,
optionally, ``gonad``, ``mantle`` and ``gill`` annotations. COCO has no link between a part and
its scallop: a part belongs to the scallop whose mask holds most of its pixels. Each image entry
may carry ``mm_per_px``; a tool that drops custom fields loses it, and then the scale must be
given again (``--mm-per-px``): it is never guessed.

Masks are turned into polygons and back with pycocotools, the reference implementation the
tools' own COCO readers follow, so a polygon means the same pixels here as in the tool. The
polygons written here trace the pixel edges (on a doubled grid), so a mask survives the round
trip exactly; a mask with a hole, which COCO polygons cannot hold, is written as RLE.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from scallop.errors import DataError, check_number
from scallop.imagefiles import COMPANION_SUFFIX, companion_of, is_companion
from scallop.models.dataset import (
    DATASET_FORMAT,
    PART_NAMES,
    Sample,
    check_scale_option,
    finish_set_folder,
    prepare_set_folder,
)

# Category ids as this software writes them; reading goes by name (a tool may renumber).
CATEGORIES = ("scallop", "uro", "adductor", "gonad", "mantle", "gill")
PART_LABEL = {"mantle": 1, "gonad": 2, "adductor": 3, "uro": 4, "gill": 5}
# Paint order: what lies on top last (the uro is labelled where it shows, over the rest).
PAINT_ORDER = ("mantle", "gill", "gonad", "adductor", "uro")
CONTAINED = 0.5  # share of a part's pixels that must lie in its scallop


class CocoError(DataError):
    """A COCO file that cannot be used; the message names the file, the image and the annotation."""


# ---------------------------------------------------------------------------- masks ↔ COCO


def _mask_api():
    from pycocotools import mask as mask_api

    return mask_api


def mask_segmentation(mask: np.ndarray) -> list[list[float]] | dict:
    """A binary mask as COCO polygons (pixel edges, exact) or, with a hole, uncompressed RLE."""
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    # On a doubled grid a boundary pixel's centre lies a quarter pixel inside the true edge:
    # pycocotools then gives back exactly the mask's pixels (checked in tests/test_labels.py).
    up = cv2.resize(m, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    contours, hier = cv2.findContours(up, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hier is not None and (hier[0][:, 3] >= 0).any():
        return rle_of(m)
    return [[round(float(v), 2) for v in ((c.reshape(-1, 2) + 0.5) / 2.0).ravel()] for c in contours if len(c) >= 3]


def rle_of(mask: np.ndarray) -> dict:
    """Uncompressed COCO RLE (column-major run lengths, starting with background), JSON-ready."""
    flat = np.asarray(mask, bool).ravel(order="F")
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]]))
    counts = runs.tolist() if flat.size and not flat[0] else [0, *runs.tolist()]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def contour_polygon(contour: np.ndarray, width: int, height: int) -> list[float]:
    """A model outline (pixel centres) as a COCO polygon (pixel (x, y) covers [x, x+1)), kept
    inside the image (a crop reaching past the frame's edge may draw past it)."""
    xy = np.asarray(contour, np.float64).reshape(-1, 2) + 0.5
    xy = np.clip(xy, 0.0, (width, height))
    return [round(float(v), 2) for v in xy.ravel()]


def decode_segmentation(seg, h: int, w: int, where: str) -> np.ndarray:
    """Polygons or RLE (uncompressed or compressed) → (h, w) bool mask; errors name ``where``."""
    api = _mask_api()
    if isinstance(seg, list):
        if not seg:
            raise CocoError(f"{where}: segmentation is an empty list (no polygon)")
        polys = []
        for k, poly in enumerate(seg):
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                raise CocoError(
                    f"{where}: polygon {k} must be a list of x, y numbers with at least 3 points, got {str(poly)[:60]}"
                )
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in poly):
                raise CocoError(f"{where}: polygon {k} holds a value that is not a finite number")
            xs, ys = poly[0::2], poly[1::2]
            if min(xs) < -1 or min(ys) < -1 or max(xs) > w + 1 or max(ys) > h + 1:
                raise CocoError(f"{where}: polygon {k} reaches outside the {w}x{h} image")
            polys.append([float(v) for v in poly])
        rle = api.merge(api.frPyObjects(polys, h, w))
    elif isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if size != [h, w]:
            raise CocoError(f"{where}: RLE size {size} differs from the image's [height, width] [{h}, {w}]")
        if isinstance(counts, list):
            if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
                raise CocoError(f"{where}: RLE counts must be whole numbers ≥ 0")
            if sum(counts) != h * w:
                raise CocoError(f"{where}: RLE counts add up to {sum(counts)} pixels, the image has {h * w}")
            rle = api.frPyObjects(seg, h, w)
        elif isinstance(counts, str):
            rle = {"size": [h, w], "counts": counts.encode("ascii", "replace")}
        else:
            raise CocoError(f"{where}: RLE counts must be a list of run lengths or a compressed string")
    else:
        raise CocoError(f"{where}: segmentation missing (polygons or RLE expected, got {type(seg).__name__})")
    try:
        with warnings.catch_warnings():
            # pycocotools 2.0 on numpy 2 warns about its own __array__; the masks are right.
            warnings.simplefilter("ignore", DeprecationWarning)
            mask = api.decode(rle)
    except Exception as e:  # pycocotools raises plain errors on a corrupt compressed string
        raise CocoError(f"{where}: RLE cannot be decoded ({e})") from None
    if mask.ndim == 3:
        mask = mask[..., 0]
    return mask.astype(bool)


# ---------------------------------------------------------------------------- writing


@dataclass
class CocoWriter:
    """A COCO 1.0 instance-segmentation file being put together."""

    description: str = ""
    images: list = field(default_factory=list)
    annotations: list = field(default_factory=list)

    def add_image(self, file_name: str, width: int, height: int, mm_per_px: float, **extra) -> int:
        iid = len(self.images) + 1
        self.images.append(
            {"id": iid, "file_name": file_name, "width": int(width), "height": int(height), "mm_per_px": mm_per_px}
            | extra
        )
        return iid

    def add(self, image_id: int, category: str, segmentation, attributes: dict | None = None, **extra) -> int:
        """One annotation; bbox and area are computed from the segmentation."""
        img = self.images[image_id - 1]
        mask = decode_segmentation(segmentation, img["height"], img["width"], f"image {image_id}")
        ys, xs = np.nonzero(mask)
        if not len(xs):
            return 0
        aid = len(self.annotations) + 1
        self.annotations.append(
            {
                "id": aid,
                "image_id": image_id,
                "category_id": CATEGORIES.index(category) + 1,
                "segmentation": segmentation,
                "area": int(len(xs)),
                "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
                "iscrowd": 0,
                "attributes": {"occluded": False} | (attributes or {}),
            }
            | extra
        )
        return aid

    def add_truth(self, image_id: int, parts: np.ndarray, instances: np.ndarray, facts: list[dict]) -> None:
        """A frame's labels from part and instance maps (the simulator's truth, an imported set):
        what a labeller hands back. ``occluded`` marks scallops less than 90 % visible."""
        by_inst = {int(f.get("instance", f.get("id"))): f for f in facts}
        for v in (int(v) for v in np.unique(instances) if v):
            mine = instances == v
            f = by_inst.get(v, {})
            occluded = bool(f.get("occluded", False) or f.get("visible_fraction", 1.0) < 0.9)
            self.add(image_id, "scallop", mask_segmentation(mine), {"occluded": occluded})
            for name in ("uro", "adductor", "gonad", "gill"):
                part = mine & (parts == PART_LABEL[name])
                if part.any():
                    self.add(image_id, name, mask_segmentation(part))

    def add_detections(self, image_id: int, dets, outcomes: list[dict] | None = None) -> None:
        """The model's masks as pre-annotations (``dets`` from ``Pipeline.detect(outlines=True)``):
        the labeller corrects them. Each scallop carries the model's verdict and, when the line
        knew it, the pick's outcome, as attributes."""
        img = self.images[image_id - 1]
        w, h = img["width"], img["height"]
        for i in range(len(dets)):
            attrs = {
                "verdict": "pick" if dets.pickable[i] else str(dets.reason[i]),
                "uro_confidence": round(float(dets.uro_confidence[i]), 4),
            }
            if outcomes and i < len(outcomes) and outcomes[i]:
                attrs |= outcomes[i]
            self.add(
                image_id,
                "scallop",
                [contour_polygon(dets.contours[i], w, h)],
                attrs,
                score=round(float(dets.confidence[i]), 4),
            )
            for name, contours in (dets.part_contours[i] if dets.part_contours else {}).items():
                polys = [contour_polygon(c, w, h) for c in contours if len(c) >= 3]
                if polys:
                    self.add(image_id, name, polys)

    def to_dict(self) -> dict:
        return {
            "info": {"description": self.description, "version": "1.0", "contributor": "scallop"},
            "licenses": [],
            "images": self.images,
            "annotations": self.annotations,
            "categories": [
                {"id": i + 1, "name": n, "supercategory": "scallop" if i else ""} for i, n in enumerate(CATEGORIES)
            ],
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict()))
        os.replace(tmp, path)


# ---------------------------------------------------------------------------- reading


@dataclass
class CocoImage:
    id: int
    file_name: str
    path: Path
    width: int
    height: int
    mm_per_px: float
    annotations: list
    conditions: list
    # The export's mark that the frame was kept with its fluorescence frame (None: not said).
    fluorescence: bool | None = None


class CocoSet:
    """A COCO file opened and checked (every image entry and annotation, without decoding the
    images); iterate :meth:`samples` for the labelled images in the data-set form."""

    def __init__(self, path: str | os.PathLike, mm_per_px: float | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise CocoError(f"{self.path}: no such COCO file")
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CocoError(f"{self.path}: not valid JSON ({e})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
            raise CocoError(f"{self.path}: not a COCO file (no 'images' list)")
        if mm_per_px is not None:
            check_number("--mm-per-px", mm_per_px, 0.05, 5.0, error=CocoError)
        self.categories = self._categories(doc.get("categories"))
        self.images = self._images(doc["images"], mm_per_px)
        by_id = {im.id: im for im in self.images}
        seen: set = set()
        anns = doc.get("annotations", [])
        if not isinstance(anns, list):
            raise CocoError(f"{self.path}: 'annotations' must be a list")
        for k, a in enumerate(anns):
            aid = a.get("id") if isinstance(a, dict) else None
            if not isinstance(aid, int) or isinstance(aid, bool):
                raise CocoError(f"{self.path}: annotation #{k} has no integer id")
            if aid in seen:
                raise CocoError(f"{self.path}: annotation {aid} appears twice")
            seen.add(aid)
            im = by_id.get(a.get("image_id"))
            if im is None:
                raise CocoError(
                    f"{self.path}: annotation {aid}: image_id {a.get('image_id')!r} is no image of the file"
                )
            if a.get("category_id") not in self.categories:
                raise CocoError(
                    f"{self.path}: image {im.file_name!r}, annotation {aid}: category_id {a.get('category_id')!r} "
                    f"is not in the file's categories"
                )
            im.annotations.append(a)

    def _categories(self, cats) -> dict[int, str]:
        if not isinstance(cats, list) or not cats:
            raise CocoError(f"{self.path}: no 'categories' list")
        out = {}
        for c in cats:
            name = str(c.get("name", "")).strip().lower() if isinstance(c, dict) else ""
            if name not in CATEGORIES:
                raise CocoError(
                    f"{self.path}: category {c!r} is not one of {', '.join(CATEGORIES)} (rename it in the tool's project)"
                )
            out[c.get("id")] = name
        if "scallop" not in out.values():
            raise CocoError(f"{self.path}: the categories have no 'scallop'")
        return out

    def _images(self, entries: list, mm_default: float | None) -> list[CocoImage]:
        out, ids = [], set()
        for k, e in enumerate(entries):
            if not isinstance(e, dict):
                raise CocoError(f"{self.path}: image #{k} is not an object")
            iid, name = e.get("id"), e.get("file_name")
            if not isinstance(iid, int) or isinstance(iid, bool) or iid in ids:
                raise CocoError(f"{self.path}: image #{k} ({name!r}) has no id or a repeated one ({iid!r})")
            ids.add(iid)
            if not isinstance(name, str) or not name:
                raise CocoError(f"{self.path}: image {iid} has no file_name")
            if is_companion(name):
                # A labelling tool given a whole capture folder lists the companions too.
                raise CocoError(
                    f"{self.path}: image {name!r} is a fluorescence companion (*{COMPANION_SUFFIX}), not a frame: "
                    "remove its entry from the COCO file (it stays beside its frame, which brings it along)"
                )
            w, h = e.get("width"), e.get("height")
            if not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 20000 for v in (w, h)):
                raise CocoError(f"{self.path}: image {name!r}: width and height must be whole pixels, got {w!r}x{h!r}")
            # The image's own scale wins; --mm-per-px (mm_default) is the fallback for an image
            # whose tool dropped it, and is refused where it says otherwise.
            mm = e.get("mm_per_px")
            if mm is None:
                if mm_default is None:
                    raise CocoError(
                        f"{self.path}: image {name!r} has no mm_per_px (labelling tools may drop this field): "
                        "give the scale with --mm-per-px; it is never guessed"
                    )
                mm = mm_default
            else:
                mm = float(check_number(f"{self.path}: image {name!r}: mm_per_px", mm, 0.05, 5.0, error=CocoError))
                check_scale_option(mm_default, mm, f"{self.path}, image {name!r}: mm_per_px")
            cond = e.get("conditions", e.get("condition", []))
            cond = [cond] if isinstance(cond, str) else [str(c) for c in cond] if isinstance(cond, list) else []
            ours = e.get("scallop")
            fl = ours.get("fluorescence") if isinstance(ours, dict) else None
            out.append(
                CocoImage(iid, name, self.path.parent / name, w, h, mm, [], cond, fl if isinstance(fl, bool) else None)
            )
        if not out:
            raise CocoError(f"{self.path}: no images")
        return out

    def __len__(self) -> int:
        return len(self.images)

    def rasterise(self, im: CocoImage) -> tuple[np.ndarray, np.ndarray, list[dict]]:
        """(parts uint8, instances uint16, per-scallop facts) of one image. A later scallop lies
        on top of an earlier one where they overlap; each part is painted inside its scallop."""
        h, w = im.height, im.width
        where = f"{self.path}: image {im.file_name!r}"
        scallops, parts_anns = [], []
        for a in im.annotations:
            at = f"{where}, annotation {a['id']}"
            mask = decode_segmentation(a.get("segmentation"), h, w, at)
            if not mask.any():
                raise CocoError(f"{at}: its segmentation covers no pixel")
            cat = self.categories[a["category_id"]]
            attrs = a.get("attributes") if isinstance(a.get("attributes"), dict) else {}
            (scallops if cat == "scallop" else parts_anns).append((a["id"], cat, mask, attrs))
        instances = np.zeros((h, w), np.uint16)
        for k, (_, _, mask, _) in enumerate(scallops, start=1):
            instances[mask] = k
        parts = np.zeros((h, w), np.uint8)
        parts[instances > 0] = PART_LABEL["mantle"]
        owned = []
        for aid, cat, mask, _ in parts_anns:
            inside = instances[mask]
            ids, counts = np.unique(inside[inside > 0], return_counts=True)
            if not len(ids) or counts.max() < CONTAINED * mask.sum():
                raise CocoError(
                    f"{where}, annotation {aid}: this {cat} lies in no scallop "
                    f"(a part belongs to the scallop whose mask holds it; draw the scallop around it)"
                )
            owned.append((cat, mask, int(ids[counts.argmax()])))
        for cat in PAINT_ORDER:
            for c, mask, owner in owned:
                if c == cat:
                    parts[mask & (instances == owner)] = PART_LABEL[cat]
        facts = []
        for k, (aid, _, _, attrs) in enumerate(scallops, start=1):
            mine = instances == k
            ys, xs = np.nonzero(mine)
            if not len(xs):
                continue  # wholly covered by later scallops
            uro = parts[ys, xs] == PART_LABEL["uro"]
            facts.append(
                {
                    "id": k,
                    "instance": k,
                    "annotation_id": aid,
                    "bbox_px": [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())],
                    "visible_px": int(len(xs)),
                    # COCO cannot know what the border hides: a scallop touching it is cut.
                    "cut_by_border": bool(xs.min() == 0 or ys.min() == 0 or xs.max() == w - 1 or ys.max() == h - 1),
                    "occluded": bool(attrs.get("occluded", False)),
                    "uro_present": bool(uro.any()),
                    "uro_px": int(uro.sum()),
                    "uro_centroid_px": [float(xs[uro].mean()), float(ys[uro].mean())] if uro.any() else None,
                }
            )
        return parts, instances, facts

    def companion(self, im: CocoImage) -> np.ndarray | None:
        """The image's fluorescence frame (``x.uv.png`` beside it, the spec's convention),
        checked; None when there is none."""
        from scallop.vision.camera import read_fluorescence

        path = companion_of(im.path)
        if path is None:
            return None
        try:
            return read_fluorescence(path, (im.height, im.width))
        except Exception as e:
            raise CocoError(f"{self.path}: image {im.file_name!r}: {e}") from None

    def load(self, im: CocoImage) -> Sample:
        from scallop.vision.camera import read_image

        if not im.path.is_file():
            raise CocoError(f"{self.path}: image {im.file_name!r}: no such file {im.path}")
        try:
            image = read_image(im.path)
        except Exception as e:
            raise CocoError(f"{self.path}: image {im.file_name!r}: {e}") from None
        if image.shape[:2] != (im.height, im.width):
            raise CocoError(
                f"{self.path}: image {im.file_name!r} is {image.shape[1]}x{image.shape[0]} "
                f"but its entry says {im.width}x{im.height}"
            )
        parts, instances, facts = self.rasterise(im)
        labels = {"mm_per_px": im.mm_per_px, "scallops": facts, "conditions": im.conditions, "coco_image_id": im.id}
        return Sample(
            Path(im.file_name).stem, image, parts, instances, im.mm_per_px, labels, facts, im.path, self.companion(im)
        )

    def samples(self) -> Iterator[Sample]:
        for im in self.images:
            yield self.load(im)


# ---------------------------------------------------------------------------- import


def import_coco(
    src: str | os.PathLike,
    out: str | os.PathLike,
    mm_per_px: float | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    colour_only: bool = False,
) -> dict:
    """A COCO file into a data-set folder (docs/dataset-format.md); returns the summary. Every
    image and annotation is checked before anything is written. ``colour_only``: leave the
    fluorescence frames out (a version-1 set), for a file where only some images have one."""
    coco = CocoSet(src, mm_per_px)
    root = Path(out)
    if (root / "dataset.json").exists() and not overwrite:
        raise CocoError(f"{root / 'dataset.json'}: a data set is already there (use --overwrite to replace it)")
    inside = [im for im in coco.images if im.path.resolve().is_relative_to(root.resolve())]
    if inside:
        # Importing into the folder being labelled would clear or mix with the photos themselves.
        raise CocoError(
            f"{root}: the labelled images lie in this folder ({inside[0].file_name!r}…): import into a new folder"
        )
    checked = [(im, coco.rasterise(im)) for im in coco.images]  # every error before any file
    # The fluorescence channel comes along when every image has its x.uv.png; a set where only
    # some have one cannot train or score a four-channel model, and is refused naming them.
    beside = {} if colour_only else {im.id: companion_of(im.path) for im in coco.images}
    uv = [im for im in coco.images if beside.get(im.id) is not None]

    def named(ims) -> str:
        return ", ".join(repr(im.file_name) for im in ims[:3]) + (", …" if len(ims) > 3 else "")

    lost = [im for im in coco.images if im.fluorescence and beside.get(im.id) is None]
    if lost and not colour_only:
        raise CocoError(
            f"{coco.path}: {len(lost)} image(s) were kept with their fluorescence frame but it is not beside them "
            f"({named(lost)}; a labelling tool's re-export may have left the *{COMPANION_SUFFIX} files behind): "
            "put them back, or import with --colour-only"
        )
    if uv and len(uv) != len(coco.images):
        bare = [im for im in coco.images if beside[im.id] is None]
        raise CocoError(
            f"{coco.path}: {len(uv)} of {len(coco.images)} images have a fluorescence frame (*{COMPANION_SUFFIX}) "
            f"beside them, {len(bare)} do not ({named(bare)}): a data set carries the channel for every image or "
            "for none; import with --colour-only to leave it out"
        )
    for im in uv:
        coco.companion(im)  # readable, one 8-bit channel, the image's size
    gone = [im for im in coco.images if not im.path.is_file()]
    if gone:
        raise CocoError(f"{coco.path}: image {gone[0].file_name!r}: no such file {gone[0].path}")
    prepare_set_folder(root, overwrite, "coco-import", keep=(coco.path,))
    names: set[str] = set()
    summary = {"images": 0, "scallops": 0, "counted": 0, "with_uro": 0, "without_uro": 0, "cut": 0, "occluded": 0}
    summary |= {f"{c}_annotations": 0 for c in CATEGORIES}
    for n, (im, (parts, instances, facts)) in enumerate(checked, start=1):
        src_name = Path(im.file_name)
        name = src_name.stem
        if name in names:  # the same file name in two folders: the folder tells them apart
            name = f"{src_name.parent.name}_{name}"
        if name in names:
            name = f"{name}_{im.id}"
        names.add(name)
        shutil.copyfile(im.path, root / "images" / (name + im.path.suffix.lower()))
        if uv:
            shutil.copyfile(beside[im.id], root / "images" / (name + COMPANION_SUFFIX))
        cv2.imencode(".png", parts)[1].tofile(str(root / "parts" / f"{name}.png"))
        cv2.imencode(".png", instances)[1].tofile(str(root / "instances" / f"{name}.png"))
        labels = {
            "image": f"images/{name}{im.path.suffix.lower()}",
            "parts": f"parts/{name}.png",
            "instances": f"instances/{name}.png",
            "width": im.width,
            "height": im.height,
            "mm_per_px": im.mm_per_px,
            "conditions": im.conditions,
            "coco": {"file": coco.path.name, "image_id": im.id, "file_name": im.file_name},
            "scallops": facts,
        }
        (root / "labels" / f"{name}.json").write_text(json.dumps(labels, indent=1))
        summary["images"] += 1
        for f in facts:
            summary["scallops"] += 1
            summary["cut"] += f["cut_by_border"]
            summary["occluded"] += f["occluded"]
            if not f["cut_by_border"] and not f["occluded"]:
                summary["counted"] += 1
                summary["with_uro" if f["uro_present"] else "without_uro"] += 1
        for a in im.annotations:
            summary[f"{coco.categories[a['category_id']]}_annotations"] += 1
        if progress:
            progress(n, len(checked))
    manifest = {
        "format": DATASET_FORMAT,
        # Colour only stays version 1, which older software reads too.
        **({"version": 2, "channels": ["bgr", "uv"]} if uv else {"version": 1}),
        "classes": list(PART_NAMES),
        "count": summary["images"],
        "source": "coco-import",
        "note": f"imported from {coco.path.name} by scallop labels import; per-image scale in labels/<name>.json",
        "totals": summary,
    }
    (root / "dataset.json").write_text(json.dumps(manifest, indent=1))
    finish_set_folder(root)
    return summary
