"""Read labelled data sets (simulator output or real labelled photos) for training,
evaluation and the label tools: the one reader, strict about every file. The format is documented in docs/dataset-format.md; the simulator writes it
(scallop.sim.dataset) and an engineer can produce it from real photos.

Minimal folder::

    dataset.json            {"format": "scallop-dataset", "version": 1, "mm_per_px": 0.5, ...}
    images/<name>.png|jpg   colour photo
    parts/<name>.png        uint8 part labels (0 bg, 1 mantle, 2 gonad, 3 adductor, 4 uro, 5 gill)
    instances/<name>.png    optional uint16 instance ids (derived from parts when absent)
    labels/<name>.json      optional per-image facts; "mm_per_px" here overrides dataset.json
                            (a --mm-per-px on the command line only fills in where neither says)

Version 2 names its channels (``"channels": ["bgr", "uv"]``); with ``"uv"`` every image has its
fluorescence frame ``images/<name>.uv.png`` (8-bit, single channel, the image's size, registered
to its pixels) and :attr:`Sample.uv` holds it. Version 1 is colour only: a ``*.uv.png`` beside
its images is left alone (``uv`` is None).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from scallop.errors import ConfigError, DataError, check_number
from scallop.imagefiles import (
    COMPANION_SUFFIX,
    EMPTY_FILE,
    IMAGE_SUFFIXES,
    companion_path,
    decode_color,
    file_bytes,
    fluorescence_file_problem,
    frame_files,
    image_size,
    is_companion,
    is_frame,
    no_frames_message,
    png_damage,
    too_large,
)

DATASET_FORMAT = "scallop-dataset"
#: 1: colour only; 2: names its channels (``"channels"``), the colour and optionally the
#: fluorescence frame ``images/<name>.uv.png``.
DATASET_VERSIONS = (1, 2)
#: The channels a version 2 set may name, in this order: the colour image always comes first.
CHANNELS = ("bgr", "uv")
PART_NAMES = ("background", "mantle", "gonad", "adductor", "uro", "gill")


class DatasetError(DataError):
    """A data set that cannot be read; the message names the file and the problem."""


# Present while a set is being written: an interrupted writer leaves it, so the folder is known
# to hold only a writer's files and --overwrite may clear it.
PARTIAL_MARK = ".scallop-dataset-partial"
SET_SUBFOLDERS = ("images", "parts", "instances", "labels")


def prepare_set_folder(
    root: str | os.PathLike, overwrite: bool, source: str, may_replace=None, keep: tuple[Path, ...] = ()
) -> Path:
    """Make ``root`` ready for a new set written by ``source`` (the simulator's and the COCO
    import's writers).

    A new or empty folder is used as it is. ``overwrite`` replaces only a data set (a manifest
    of this format, or a set a writer left unfinished, that ``may_replace(manifest)`` does not
    object to; an unfinished set is judged by the source its marker names): the files in its
    four folders are removed, anything else is kept. A folder of photos, a capture session or any
    other non-empty folder is refused, with or without ``overwrite``; so is a set whose four
    folders are not plain folders, or one holding a file of ``keep`` (the writer's own input).
    Every check runs before anything is changed. Call :func:`finish_set_folder` once the
    manifest is written."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DatasetError(f"{root}: is a file, not a folder; name a new folder for the set")
    above = next((p for p in root.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise DatasetError(f"{root}: cannot write the data set there: {above} is a file, not a folder")
    manifest, mark = root / "dataset.json", root / PARTIAL_MARK

    def refuse(why: str) -> DatasetError:
        return DatasetError(f"{root}: {why}; choose another folder (nothing in it was changed)")

    if manifest.exists() or mark.exists():
        if not overwrite:
            what = "a data set is already there" if manifest.exists() else "an unfinished data set is there"
            raise DatasetError(f"{root}: {what} (use --overwrite to replace it)")
        try:
            man = json.loads((manifest if manifest.exists() else mark).read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            man = None
        if manifest.exists() and (not isinstance(man, dict) or man.get("format") != DATASET_FORMAT):
            raise refuse(f"{manifest.name} is not a data set's manifest; --overwrite replaces data sets only")
        if may_replace is not None and (why := may_replace(man if isinstance(man, dict) else {})):
            raise refuse(why)
        for sub in SET_SUBFOLDERS:
            d = root / sub
            if d.is_symlink() or (d.exists() and not d.is_dir()):
                raise refuse(f"{sub} is not a plain folder of the set's own")
        inside = [
            p for p in keep if any(Path(p).resolve().is_relative_to((root / s).resolve()) for s in SET_SUBFOLDERS)
        ]
        if inside:
            raise refuse(f"{inside[0]} lies in the set's own folders and would be removed")
    elif root.is_dir() and any(root.iterdir()):
        raise DatasetError(
            f"{root}: the folder is not empty and holds no data set; choose a new or empty folder "
            "(nothing in it was changed)"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
        # The marker names who writes: an interrupted overwrite is judged as that writer's set.
        mark.write_text(json.dumps({"source": source}), encoding="utf-8")
        manifest.unlink(missing_ok=True)  # an interrupted overwrite must not look finished
        for sub in SET_SUBFOLDERS:
            d = root / sub
            d.mkdir(exist_ok=True)
            if overwrite:
                for p in d.iterdir():
                    if p.is_file() or p.is_symlink():
                        p.unlink()
    except OSError as e:
        raise DatasetError(f"{root}: cannot write the data set there: {e.strerror or e}") from None
    return root


def finish_set_folder(root: str | os.PathLike) -> None:
    """The set in ``root`` is whole: its manifest is written."""
    (Path(root) / PARTIAL_MARK).unlink(missing_ok=True)


@dataclass
class Sample:
    """One labelled image from a data set.

    image:      (H, W, 3) uint8 BGR.
    parts:      (H, W) uint8 part labels (PART_NAMES).
    instances:  (H, W) uint16 instance values, 0 = none (derived from parts when absent).
    mm_per_px:  scale on the belt.
    labels:     the per-image record as stored (labels/<name>.json; {} when absent).
    scallops:   the per-scallop facts: the record's ``scallops``, else derived from the maps.
    image_path: the image file (None for a sample made in memory).
    uv:         (H, W) uint8 fluorescence frame registered to ``image``, or None when the set
                has no such channel (version 1, or version 2 without "uv").
    """

    name: str
    image: np.ndarray
    parts: np.ndarray
    instances: np.ndarray
    mm_per_px: float
    labels: dict = field(default_factory=dict)
    scallops: list[dict] = field(default_factory=list)
    image_path: Path | None = None
    uv: np.ndarray | None = None


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


def _not_there(path: Path, what: str = "an image file") -> str:
    """Why ``path`` is not a file (``what`` it should be), in words."""
    if path.is_dir():
        return f"a folder, not {what}"
    return "a link to nothing (its target is gone)" if path.is_symlink() else "missing"


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object")
    return data


def _read_labels(path: Path) -> dict:
    """A sample's ``labels/<name>.json``, its shape checked; {} when there is none. Something
    else under that name (a folder, a link to nothing) is an error, not a missing file."""
    if not path.is_file():
        if path.exists() or path.is_symlink():
            what = "a folder" if path.is_dir() else "not a readable file (a link to nothing?)"
            raise DatasetError(f"{path}: {what}, not a label file")
        return {}
    labels = _read_json(path)
    facts = labels.get("scallops")
    if facts is not None and not (isinstance(facts, list) and all(isinstance(f, dict) for f in facts)):
        raise DatasetError(f"{path}: scallops must be a list of objects, one a scallop")
    return labels


def _scale(mm: object, where: Path) -> float:
    return float(check_number(f"{where}: mm_per_px", mm, 0.05, 5.0, error=DatasetError))


#: How far a --mm-per-px may lie from a set's own scale and still agree with it (a share).
SCALE_AGREEMENT = 0.01


def check_scale_option(given: float | None, own: float, where: str) -> float:
    """A set's own scale ``own`` (read from ``where``) against the command line's --mm-per-px
    ``given``: the set's scale wins, and the option, a fallback for images without one, is
    refused when it says otherwise (more than 1 % off): one of the two is wrong, and sizes in
    mm are what tell a uro from an eye dot."""
    if given is not None and not abs(given - own) <= SCALE_AGREEMENT * own:  # a NaN never agrees
        raise ConfigError(
            f"--mm-per-px {given:g} conflicts with the set's own scale {own:g} mm/px ({where}): --mm-per-px "
            "only gives a scale to images without one; leave it out, or correct the set if its scale is wrong"
        )
    return own


def check_manifest(path: Path) -> dict:
    """The ``dataset.json`` at ``path``, checked: format, a version this software reads, the
    classes, the scale (:class:`DatasetError` naming the file otherwise)."""
    m = _read_json(path)
    if m.get("format") != DATASET_FORMAT:
        raise DatasetError(f"{path}: format is {m.get('format')!r}, expected {DATASET_FORMAT!r}")
    known = " and ".join(map(str, DATASET_VERSIONS))
    if "version" not in m:
        raise DatasetError(f'{path}: "version" is missing (this software reads versions {known})')
    if isinstance(m.get("version"), bool) or m.get("version") not in DATASET_VERSIONS:
        raise DatasetError(f"{path}: version {m.get('version')!r} is unknown (this software reads versions {known})")
    if "classes" in m and list(m["classes"]) != list(PART_NAMES):
        raise DatasetError(f"{path}: classes {m['classes']!r} differ from {list(PART_NAMES)!r}")
    if m.get("mm_per_px") is not None:
        _scale(m["mm_per_px"], path)
    return m


def manifest_channels(m: dict, path: Path) -> tuple[str, ...]:
    """The channels every sample of the set with checked manifest ``m`` carries: ("bgr",)
    or ("bgr", "uv")."""
    channels = m.get("channels")
    if m["version"] == 1:
        if channels is not None:
            raise DatasetError(
                f"{path}: channels {channels!r} need version 2 (version 1 is colour only): "
                'write "version": 2 to carry them'
            )
        return ("bgr",)
    if channels is None:
        raise DatasetError(f'{path}: version 2 names its channels: "channels" is missing (e.g. ["bgr", "uv"])')
    if (
        not isinstance(channels, list)
        or not channels
        or channels[0] != "bgr"
        or len(set(map(str, channels))) != len(channels)
        or any(c not in CHANNELS for c in channels)
    ):
        raise DatasetError(
            f"{path}: channels {channels!r} are not allowed: the colour image first, then the "
            f"fluorescence frame if any: {list(CHANNELS[:1])!r} or {list(CHANNELS)!r}"
        )
    return tuple(channels)


def _manifest_of_image(image: str | os.PathLike) -> tuple[Path, dict, tuple[str, ...]] | None:
    """(the path, the checked manifest, the channels) of the data set an image belongs to."""
    p = Path(os.path.abspath(image))  # "x.png" run from inside images/ is still in its set
    path = p.parent.parent / "dataset.json"
    if p.parent.name != "images" or not (path.exists() or path.is_symlink()):
        return None
    if not path.is_file():
        # The set is there but its manifest cannot be read: not an image in no data set.
        what = "a folder" if path.is_dir() else "a link to nothing (its target is gone)"
        raise DatasetError(f"{path}: {what}, not a data set's manifest")
    m = check_manifest(path)
    return path, m, manifest_channels(m, path)


def set_of_image(image: str | os.PathLike) -> tuple[Path, tuple[str, ...]] | None:
    """(its checked ``dataset.json``, the set's channels) for an image of a data set
    (``ROOT/images/NAME.*``), None for an image in no data set. A manifest this software
    cannot read is refused (:class:`DatasetError`) as every data-set reader refuses it."""
    found = _manifest_of_image(image)
    return None if found is None else (found[0], found[2])


def scale_source_of_image(image: str | os.PathLike) -> tuple[float, Path] | None:
    """(scale in mm per pixel, the file that gives it) for the image at ``image``
    (``ROOT/images/NAME.*``): its ``labels/NAME.json``, else ``dataset.json``; None when the
    image is in no data set or the data set does not say. The manifest is checked first."""
    found = _manifest_of_image(image)
    if found is None:
        return None
    manifest_path, manifest, _ = found
    p = Path(os.path.abspath(image))
    labels = p.parent.parent / "labels" / f"{p.stem}.json"
    mm = _read_labels(labels).get("mm_per_px")  # a folder or a dead link there is an error
    if mm is not None:
        return _scale(mm, labels), labels
    # Else the manifest, already read and checked above.
    mm = manifest.get("mm_per_px")
    return None if mm is None else (_scale(mm, manifest_path), manifest_path)


def scale_of_image(image: str | os.PathLike) -> float | None:
    """The scale (mm per pixel) a data set gives the image at ``image``; None when it gives
    none (:func:`scale_source_of_image`)."""
    found = scale_source_of_image(image)
    return None if found is None else found[0]


def _read_image(path: Path, flags: int, uv: bool = False) -> np.ndarray:
    # By its header, before reading: a file claiming a vast picture would take gigabytes decoded.
    why = too_large(image_size(path))
    if why:
        raise DatasetError(f"{path}: {why}")
    data, why = file_bytes(path)
    if data is None:  # there, but not readable (permissions, a disk error): named, as a label file is
        raise DatasetError(why)
    if not data.size:
        raise DatasetError(EMPTY_FILE.format(path))
    # (decode_color checks a colour PNG itself: once is enough on the training's path.)
    why = fluorescence_file_problem(path, data) if uv else "" if flags == cv2.IMREAD_COLOR else png_damage(data)
    if why:
        raise DatasetError(why if uv else f"{path}: {why}")
    img, damage = decode_color(data) if flags == cv2.IMREAD_COLOR else (cv2.imdecode(data, flags), "")
    if damage:
        raise DatasetError(f"{path}: {damage}")
    if img is None:
        raise DatasetError(f"{path}: not a readable image (corrupt or unsupported)")
    return img


class Dataset:
    """A validated data-set folder; iterate it for :class:`Sample` (read lazily)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: no such data-set folder")
        self.manifest = self._manifest()
        #: The channels every sample carries: ("bgr",) or ("bgr", "uv").
        self.channels: tuple[str, ...] = self._channels(self.manifest)
        self.names, self._images = self._index()

    def _manifest(self) -> dict:
        path = self.root / "dataset.json"
        if not path.is_file():
            raise DatasetError(
                f"{path}: {_not_there(path, 'a manifest')} (a data set starts with a dataset.json manifest)"
            )
        return check_manifest(path)

    def _channels(self, m: dict) -> tuple[str, ...]:
        return manifest_channels(m, self.root / "dataset.json")

    def _uv_path(self, image: Path) -> Path:
        return companion_path(image)

    def _index(self) -> tuple[list[str], dict[str, Path]]:
        img_dir = self.root / "images"
        if not img_dir.is_dir():
            raise DatasetError(f"{img_dir}: missing (images go in an images/ folder)")
        # A frame's name on something that is no file (a folder, a link whose target is gone):
        # an image lost from the set, said, not left out of the figures without a word.
        lost = sorted(p for p in img_dir.iterdir() if is_frame(p) and not p.is_file())
        if lost:
            more = f" (and {len(lost) - 1} more)" if len(lost) > 1 else ""
            raise DatasetError(f"{lost[0]}: {_not_there(lost[0])}{more}: every image of a set must be readable")
        images: dict[str, Path] = {}
        for p in frame_files(img_dir, IMAGE_SUFFIXES):
            if p.stem in images:
                raise DatasetError(f"{p}: two images named {p.stem!r} ({images[p.stem].name} too)")
            images[p.stem] = p
        if not images:
            raise DatasetError(no_frames_message(img_dir, IMAGE_SUFFIXES))
        for name in images:
            parts = self.root / "parts" / f"{name}.png"
            if not parts.is_file():
                raise DatasetError(f"{parts}: {_not_there(parts)} (every image needs its part labels)")
        # Part labels without their image: an image gone from the set (the count in dataset.json
        # is optional, and would otherwise be what tells).
        parts_dir = self.root / "parts"
        orphans = sorted(p for p in parts_dir.glob("*.png") if p.stem not in images) if parts_dir.is_dir() else []
        if orphans:
            more = f" (and {len(orphans) - 1} more)" if len(orphans) > 1 else ""
            raise DatasetError(
                f"{orphans[0]}: part labels without their image (images/{orphans[0].stem}.*){more}: "
                "an image is missing from the set; put it back, or remove its labels too"
            )
        if "uv" in self.channels:
            # A fluorescence frame without its image: an image gone from the set, as above.
            n = len(COMPANION_SUFFIX)
            strays = sorted(p for p in img_dir.iterdir() if is_companion(p) and p.name[:-n] not in images)
            if strays:
                more = f" (and {len(strays) - 1} more)" if len(strays) > 1 else ""
                raise DatasetError(
                    f"{strays[0]}: a fluorescence frame without its image (images/{strays[0].name[:-n]}.*){more}: "
                    "an image is missing from the set; put it back, or remove its fluorescence frame too"
                )
            for path in images.values():
                uv = self._uv_path(path)
                if not uv.is_file():
                    raise DatasetError(
                        f"{uv}: {_not_there(uv)} (dataset.json's channels name 'uv': every image needs its "
                        "fluorescence frame)"
                    )
        count = self.manifest.get("count")
        if count is not None and count != len(images):
            raise DatasetError(f"{self.root / 'dataset.json'}: count is {count} but images/ holds {len(images)}")
        return sorted(images), images

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[Sample]:
        for name in self.names:
            yield self.load(name)

    def __getitem__(self, i: int) -> Sample:
        return self.load(self.names[i])

    def own_scale(self, name: str, labels: dict | None = None) -> tuple[float, Path] | None:
        """(the scale the set gives sample ``name``, the file that gives it): its
        ``labels/<name>.json`` (``labels``: that file, when already read), else ``dataset.json``;
        None when neither does."""
        labels_path = self.root / "labels" / f"{name}.json"
        if labels is None:
            labels = _read_labels(labels_path)
        for mm, where in ((labels.get("mm_per_px"), labels_path), (self.manifest.get("mm_per_px"), None)):
            if mm is not None:
                where = where or self.root / "dataset.json"
                return _scale(mm, where), where
        return None

    def check_labels(self, most: int = 5) -> None:
        """Every ``labels/<name>.json`` read and its scale checked before any image is: the files
        that cannot be used are named together in one error (the first ``most`` of them and how
        many more), not one a run."""
        bad = []
        for name in self.names:
            path = self.root / "labels" / f"{name}.json"
            try:
                self.own_scale(name, _read_labels(path))
            except DatasetError as e:
                bad.append(str(e))
            except OSError as e:
                bad.append(f"{path}: cannot be read ({e.strerror})")
        if bad:
            more = f"; and {len(bad) - most} more" if len(bad) > most else ""
            raise DatasetError(
                f"{len(bad)} label file{'' if len(bad) == 1 else 's'} of {self.root} cannot be used: "
                + "; ".join(bad[:most])
                + more
            )

    def check_scale_option(self, mm_per_px: float | None) -> None:
        """Refuse, before any image is read, a --mm-per-px that conflicts with a scale the set
        gives (:func:`check_scale_option`)."""
        if mm_per_px is None:
            return
        for name in self.names:
            own = self.own_scale(name)
            if own is not None:
                check_scale_option(mm_per_px, own[0], f"{own[1]}: mm_per_px")

    def load(self, name: str, mm_per_px: float | None = None) -> Sample:
        """Read and check one sample; errors name the offending file. ``mm_per_px`` (given on
        the command line) is the scale of a sample the set gives none; one that conflicts with
        the set's own is refused (:func:`check_scale_option`)."""
        img_path = self._images.get(name)
        if img_path is None:
            raise DatasetError(f"{self.root / 'images'}: no image named {name!r}")
        image = _read_image(img_path, cv2.IMREAD_COLOR)
        h, w = image.shape[:2]
        parts_path = self.root / "parts" / f"{name}.png"
        parts = _read_image(parts_path, cv2.IMREAD_UNCHANGED)
        if parts.ndim != 2 or parts.dtype != np.uint8:
            raise DatasetError(
                f"{parts_path}: must be single-channel 8-bit labels, got shape {parts.shape} {parts.dtype}"
            )
        if parts.shape != (h, w):
            raise DatasetError(f"{parts_path}: size {parts.shape[1]}x{parts.shape[0]} differs from its image {w}x{h}")
        if int(parts.max()) >= len(PART_NAMES):
            raise DatasetError(f"{parts_path}: label {int(parts.max())} is unknown (allowed 0..{len(PART_NAMES) - 1})")
        inst_path = self.root / "instances" / f"{name}.png"
        if not inst_path.is_file() and (inst_path.exists() or inst_path.is_symlink()):
            # Not a missing file (instances are optional): one that cannot be read.
            raise DatasetError(f"{inst_path}: {_not_there(inst_path)}")
        if inst_path.is_file():
            inst = _read_image(inst_path, cv2.IMREAD_UNCHANGED)
            if inst.ndim != 2 or inst.dtype not in (np.uint8, np.uint16):
                raise DatasetError(
                    f"{inst_path}: must be single-channel 16-bit instance values, got {inst.shape} {inst.dtype}"
                )
            if inst.shape != (h, w):
                raise DatasetError(f"{inst_path}: size {inst.shape[1]}x{inst.shape[0]} differs from its image {w}x{h}")
            inst = inst.astype(np.uint16)
            if np.any((inst > 0) & (parts == 0)):
                raise DatasetError(f"{inst_path}: instance pixels on background (parts label 0)")
        else:
            inst = derive_instances(parts)
        uv = self._load_uv(img_path, (h, w)) if "uv" in self.channels else None
        labels_path = self.root / "labels" / f"{name}.json"
        labels = _read_labels(labels_path)
        own = self.own_scale(name, labels)
        if own is not None:
            mm = check_scale_option(mm_per_px, own[0], f"{own[1]}: mm_per_px")
        elif mm_per_px is not None:
            mm = _scale(mm_per_px, labels_path)
        else:
            raise DatasetError(f"{labels_path}: mm_per_px missing (give it here or in dataset.json)")
        scallops = labels.get("scallops")
        if scallops is None:
            scallops = derive_facts(parts, inst)
        else:
            present = set(np.unique(inst).tolist())
            for f in scallops:
                v = f.get("instance", f.get("id"))
                if v not in present:
                    raise DatasetError(f"{labels_path}: scallop {f.get('id')!r} has no pixels in {inst_path.name}")
        return Sample(
            name=name,
            image=image,
            parts=parts,
            instances=inst,
            mm_per_px=float(mm),
            scallops=list(scallops),
            labels=labels,
            image_path=img_path,
            uv=uv,
        )

    def _load_uv(self, image: Path, shape: tuple[int, int]) -> np.ndarray:
        """The image's fluorescence frame, checked: 8-bit, one channel, the image's size."""
        path = self._uv_path(image)
        if not path.is_file():
            raise DatasetError(f"{path}: {_not_there(path)} (dataset.json's channels name 'uv')")
        uv = _read_image(path, cv2.IMREAD_UNCHANGED, uv=True)
        if uv.ndim != 2 or uv.dtype != np.uint8:
            raise DatasetError(
                f"{path}: must be an 8-bit single-channel fluorescence frame, got shape {uv.shape} {uv.dtype}"
            )
        if uv.shape != shape:
            h, w = shape
            raise DatasetError(f"{path}: size {uv.shape[1]}x{uv.shape[0]} differs from its image {w}x{h}")
        return uv


def load_dataset(root: str | os.PathLike) -> Dataset:
    """Open and check a data-set folder (manifest, version, every image has its parts);
    samples are read and checked as they are iterated."""
    return Dataset(root)


def read_manifest(root: str | os.PathLike) -> dict:
    """The checked ``dataset.json`` of the set at ``root``."""
    return Dataset(root).manifest


def list_names(root: str | os.PathLike) -> list[str]:
    """The set's sample names, sorted (every image checked to have its part labels)."""
    return list(Dataset(root).names)


def iter_dataset(root: str | os.PathLike, limit: int | None = None, mm_per_px: float | None = None) -> Iterator[Sample]:
    """The first ``limit`` samples (all when None), read and checked one at a time.
    ``mm_per_px``: the scale of samples the set gives none (one that conflicts with the set's
    own is refused before the first sample)."""
    ds = Dataset(root)
    ds.check_scale_option(mm_per_px)  # now, not at the first sample: this is no generator
    return (ds.load(name, mm_per_px) for name in ds.names[:limit])
