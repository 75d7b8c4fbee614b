"""Labelled data sets: the simulator writes them, training and evaluation read them.

The format (docs/dataset-format.md; :mod:`scallop.models.dataset` reads it) is simple enough to produce from real labelled photos:
a ``dataset.json`` manifest, ``images/``, ``parts/`` (uint8 part labels) and optionally
``instances/`` (uint16) and ``labels/`` (per-image facts, JSON). With the fluorescence channel
(``DatasetSettings.fluorescence``) each image has its registered ``images/<name>.uv.png`` and
the set is version 2 (``"channels": ["bgr", "uv"]``).

Simulated frames are randomised across the whole appearance envelope, one independent
draw per frame (camera resolution, scale, tilt and distortion; belt, lighting, blur, noise,
JPEG; 0–10 scallops with every hard case), so a model trained on them must not learn one
look. Frame ``i`` of seed ``s`` depends only on (s, i): a set is reproducible and can be
written by several processes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from scallop.calibration.camera_model import CameraModel
from scallop.errors import check_pair, check_range, check_share
from scallop.imagefiles import COMPANION_SUFFIX
from scallop.models.dataset import (
    CHANNELS,
    DATASET_FORMAT,
    DATASET_VERSIONS,
    DatasetError,
    finish_set_folder,
    prepare_set_folder,
)
from scallop.sim.arrivals import overlap_share
from scallop.sim.config import ProductConfig
from scallop.sim.scene import (
    PART_NAMES,
    FrameTruth,
    LookParams,
    Placed,
    ScallopModel,
    ScallopSpec,
    SceneRenderer,
    interpolated_belt_maps,
)
from scallop.sim.scene.fluorescence import FluorescenceLook, FluorescenceRenderer
from scallop.sim.scene.hard import HARD_CONDITIONS, check_conditions, draw_debris, hard_look, hard_scallop


# ============================================================================ settings
def _dataset_product() -> ProductConfig:
    # Hard cases a little more often than on the line, so the model sees enough of them.
    return ProductConfig(
        male_share=0.45, upside_down_share=0.1, no_uro_share=0.05, gill_share=0.4, hidden_uro_share=0.25
    )


@dataclass
class DatasetSettings:
    """How simulated data-set frames are drawn (every field is a range or a share).

    resolutions: camera sizes drawn uniformly. mm_per_px: scale at the image centre.
    tilt_deg / yaw_deg: largest camera pitch / turn (either sign). distortion_share: frames
    with lens distortion, k1 in ``k1`` and k2 up to ``max_k2``. focal_factor: focal length
    as a multiple of the width (wide to narrow lenses). scallops: how many are placed in
    and around the view; cut_margin: how far (share of a diameter) a centre may lie
    outside the view, so some are cut by the border. touch_share / max_overlap: touching
    and overlapping scallops. hard: named hard conditions applied to every frame
    (:data:`scallop.sim.scene.hard.HARD_CONDITIONS`), recorded in each frame's labels as
    ``conditions`` (``hard:<name>``) so the scorer reports figures per condition.
    hard_share: with ``hard`` empty, the share of frames that get a random non-empty subset of
    the hard conditions (training data that covers them; 0 leaves every frame as it was).
    fluorescence: also write each frame's fluorescence channel, registered to it
    (``images/<name>.uv.png``, docs/fluorescence.md); the set is then format version 2.
    """

    resolutions: list[tuple[int, int]] = field(
        default_factory=lambda: [
            (640, 480),
            (800, 600),
            (1024, 768),
            (1280, 720),
            (1280, 960),
            (1440, 1080),
            (1920, 1080),
        ]
    )
    mm_per_px: tuple[float, float] = (0.3, 1.0)
    tilt_deg: float = 15.0
    yaw_deg: float = 5.0
    distortion_share: float = 0.6
    k1: tuple[float, float] = (-0.3, 0.15)
    max_k2: float = 0.08
    focal_factor: tuple[float, float] = (0.8, 1.8)
    scallops: tuple[int, int] = (0, 10)
    cut_margin: float = 0.45
    touch_share: float = 0.3
    max_overlap: float = 0.1
    product: ProductConfig = field(default_factory=_dataset_product)
    hard: tuple[str, ...] = ()
    hard_share: float = 0.0
    fluorescence: bool = False

    def __post_init__(self) -> None:
        self.hard = check_conditions(self.hard)
        if not isinstance(self.fluorescence, bool):
            raise ValueError(f"fluorescence={self.fluorescence!r}: expected true or false")
        if not self.resolutions:
            raise ValueError("resolutions must name at least one (width, height)")
        for i, (w, h) in enumerate(self.resolutions):
            check_range(f"resolutions[{i}].width", w, 640, 1920)
            check_range(f"resolutions[{i}].height", h, 480, 1080)
        check_pair("mm_per_px", self.mm_per_px, 0.3, 1.0)
        check_range("tilt_deg", self.tilt_deg, 0.0, 20.0)
        check_range("yaw_deg", self.yaw_deg, 0.0, 10.0)
        check_share("distortion_share", self.distortion_share)
        check_pair("k1", self.k1, -0.5, 0.5)
        check_range("max_k2", self.max_k2, 0.0, 0.3)
        check_pair("focal_factor", self.focal_factor, 0.5, 3.0)
        check_pair("scallops", self.scallops, 0, 30)
        check_range("cut_margin", self.cut_margin, 0.0, 0.6)
        check_share("touch_share", self.touch_share)
        check_range("max_overlap", self.max_overlap, 0.0, 0.3)
        check_share("hard_share", self.hard_share)
        if self.hard and self.hard_share:
            raise ValueError(f"hard_share={self.hard_share}: give either named hard conditions or a share, not both")


# ============================================================================ one frame
@dataclass
class SimSample:
    """One simulated frame ready to write."""

    image: np.ndarray  # (H, W, 3) uint8 BGR, before JPEG
    truth: FrameTruth
    camera: CameraModel
    jpeg_quality: int  # 100 = write PNG
    conditions: tuple[str, ...] = ()  # hard conditions of the frame (labels' ``conditions``)
    uv: np.ndarray | None = None  # (H, W) uint8 fluorescence, registered to ``image``
    uv_look: FluorescenceLook | None = None  # the channel's noise, blur and belt level

    def jpeg(self) -> np.ndarray:
        """The image as the JPEG file's bytes (for ``jpeg_quality`` < 100)."""
        ok, buf = cv2.imencode(".jpg", self.image, [cv2.IMWRITE_JPEG_QUALITY, int(self.jpeg_quality)])
        if not ok:  # pragma: no cover
            raise DatasetError("JPEG encoding failed")
        return buf

    def stored_image(self) -> np.ndarray:
        """The image as a reader gets it back from the written file (JPEG losses included),
        so training straight from memory sees what training from the folder sees."""
        if self.jpeg_quality >= 100:
            return self.image
        return cv2.imdecode(self.jpeg(), cv2.IMREAD_COLOR)


def _usable(camera: CameraModel) -> bool:
    """Every border pixel sees the belt and maps back onto itself: strong barrel distortion
    with a wide lens can fold the image edge, which no real lens in the envelope does."""
    w, h = camera.image_size
    u = np.linspace(0, w - 1, 17)
    v = np.linspace(0, h - 1, 11)
    border = np.concatenate(
        [
            np.column_stack([u, np.zeros_like(u)]),
            np.column_stack([u, np.full_like(u, h - 1)]),
            np.column_stack([np.zeros_like(v), v]),
            np.column_stack([np.full_like(v, w - 1), v]),
        ]
    )
    try:
        back = camera.project_belt(camera.pixel_to_belt(border))
    except ValueError:
        return False
    return bool(np.all(np.isfinite(back)) and np.abs(back - border).max() < 0.5)


def random_camera(rng: np.random.Generator, st: DatasetSettings) -> CameraModel:
    while True:
        camera = _draw_camera(rng, st)
        if _usable(camera):
            return camera


def _draw_camera(rng: np.random.Generator, st: DatasetSettings) -> CameraModel:
    w, h = st.resolutions[int(rng.integers(len(st.resolutions)))]
    dist = (0.0,) * 5
    if rng.random() < st.distortion_share:
        dist = (
            float(rng.uniform(*st.k1)),
            float(rng.uniform(-st.max_k2, st.max_k2)),
            float(rng.uniform(-0.002, 0.002)),
            float(rng.uniform(-0.002, 0.002)),
            0.0,
        )
    tilt = float(rng.uniform(-st.tilt_deg, st.tilt_deg)) if rng.random() < 0.6 else 0.0
    return CameraModel.looking_down(
        image_size=(int(w), int(h)),
        mm_per_px=float(rng.uniform(*st.mm_per_px)),
        tilt_deg=tilt,
        dist=dist,
        focal_px=float(rng.uniform(*st.focal_factor)) * w,
        yaw_deg=float(rng.uniform(-st.yaw_deg, st.yaw_deg)),
    )


def _place_scallops(
    rng: np.random.Generator, st: DatasetSettings, box: tuple[float, float, float, float], travel: float
) -> list[ScallopSpec]:
    """Up to the drawn count of scallops in and around the view ``box`` (belt frame x0 x1 y0 y1),
    some touching or overlapping (≤ max_overlap of the smaller one's area), none deeper."""
    x0, x1, y0, y1 = box
    lo_d, hi_d = st.product.diameter_mm
    room = (x1 - x0) * (y1 - y0) / (math.pi * ((lo_d + hi_d) / 4) ** 2 * 2.2)
    n = int(min(rng.integers(st.scallops[0], st.scallops[1] + 1), max(1, room)))
    placed: list[tuple[float, float, float]] = []  # x, y (belt frame), diameter
    specs: list[ScallopSpec] = []

    def fits(x, y, d, touching):
        for px, py, pd in placed:
            share = overlap_share(math.hypot(px - x, py - y), d / 2 * 1.04, pd / 2 * 1.04)
            if share > st.max_overlap or (not touching and share > 0):
                return False
        return True

    for _ in range(n):
        d = float(rng.uniform(lo_d, hi_d))
        m = st.cut_margin * d
        for _try in range(40):
            touching = bool(placed) and rng.random() < st.touch_share
            if touching:
                px, py, pd = placed[int(rng.integers(len(placed)))]
                ang, dist = rng.uniform(0, 2 * np.pi), (pd + d) / 2 * rng.uniform(0.8, 1.0)
                x, y = px + dist * math.cos(ang), py + dist * math.sin(ang)
            else:
                x, y = rng.uniform(x0 - m, x1 + m), rng.uniform(y0 - m, y1 + m)
            if fits(x, y, d, touching):
                break
        else:
            continue
        placed.append((x, y, d))
        sid = len(specs) + 1
        specs.append(ScallopSpec.random(rng, sid, x - travel, y, st.product, diameter_mm=d))
    return specs


def drawn_conditions(index: int, seed: int, share: float) -> tuple[str, ...]:
    """The hard conditions frame ``index`` gets when ``share`` of frames get some: each
    condition with even odds, at least one. A generator of its own, so a frame that gets
    none is the frame it always was."""
    if share <= 0.0:
        return ()
    rng = np.random.default_rng([int(seed), int(index), 0x4A5E])
    if rng.random() >= share:
        return ()
    pick = rng.random(len(HARD_CONDITIONS)) < 0.5
    if not pick.any():
        pick[int(rng.integers(len(HARD_CONDITIONS)))] = True
    return tuple(c for c, k in zip(HARD_CONDITIONS, pick) if k)


def random_sample(index: int, seed: int, settings: DatasetSettings | None = None) -> SimSample:
    """Frame ``index`` of the data set with ``seed``: a fresh camera, look and scene."""
    st = settings or DatasetSettings()
    rng = np.random.default_rng([int(seed), int(index), 0x5CA1])
    camera = random_camera(rng, st)
    look = LookParams.random(rng)
    renderer = SceneRenderer(camera, maps=interpolated_belt_maps(camera))
    travel = float(rng.uniform(0.0, 500.0))  # the belt's hinges fall anywhere in the view
    box = (renderer.x_lo, renderer.x_hi, renderer.y_lo, renderer.y_hi)
    hard = st.hard or drawn_conditions(index, seed, st.hard_share)
    if "tight_touching" in hard:
        # Appearance spec, Cases: touching or overlapping by up to ~10 % of their area.
        st = dataclasses.replace(st, touch_share=0.85, max_overlap=max(st.max_overlap, 0.1), hard=())
    specs = _place_scallops(rng, st, box, travel)
    debris = []
    if hard:
        # A generator of its own: the scene without hard conditions stays what it was.
        hrng = np.random.default_rng([int(seed), int(index), 0x4A4D])
        look = hard_look(look, hard, hrng)
        specs = [hard_scallop(sp, hard, hrng) for sp in specs]
        if "debris" in hard:
            debris = draw_debris(hrng, (box[0] - travel, box[1] - travel, box[2], box[3]))
    models = [ScallopModel(s) for s in specs]
    placed = [Placed(m, m.spec.id, m.spec.id) for m in models if renderer.in_canvas(m, travel)]
    res = renderer.render(placed, travel, look, rng, debris=debris)
    uv = uv_look = None
    if st.fluorescence:
        # Through the colour frame's own renderer (same maps, same canvas): registered pixel for
        # pixel. A generator of its own, so the colour frame is the same with or without it.
        frng = np.random.default_rng([int(seed), int(index), 0xF1A0])
        uv_look = FluorescenceLook.random(frng, look.motion_blur_px)
        uv = FluorescenceRenderer(renderer).render(placed, travel, uv_look, frng, debris=debris).image
    facts = res.scallops
    # Number the visible scallops 1..k in drawing order (ids double as instance values).
    lut = np.zeros(len(specs) + 2, np.uint16)
    for k, f in enumerate(facts, start=1):
        lut[f.instance] = k
        f.id = f.instance = k
    instances = lut[res.instances]
    truth = FrameTruth(
        parts=res.parts,
        instances=instances,
        scallops=facts,
        travel_mm=travel,
        encoder=None,
        timestamp=0.0,
        mm_per_px=renderer.mm_per_px,
        look=look,
    )
    return SimSample(
        image=res.image,
        truth=truth,
        camera=camera,
        jpeg_quality=look.jpeg_quality,
        conditions=tuple(hard),
        uv=uv,
        uv_look=uv_look,
    )


# ============================================================================ writing
# Noisy photos gain little from PNG's adaptive filters and long matches, label maps are
# long runs: these settings encode several times faster at a similar size.
PNG_PHOTO = [
    cv2.IMWRITE_PNG_COMPRESSION,
    1,
    cv2.IMWRITE_PNG_FILTER,
    cv2.IMWRITE_PNG_FILTER_SUB,
    cv2.IMWRITE_PNG_STRATEGY,
    cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY,
]
PNG_LABELS = [
    cv2.IMWRITE_PNG_COMPRESSION,
    1,
    cv2.IMWRITE_PNG_FILTER,
    cv2.IMWRITE_PNG_FILTER_NONE,
    cv2.IMWRITE_PNG_STRATEGY,
    cv2.IMWRITE_PNG_STRATEGY_RLE,
]


def _write_png(path: Path, img: np.ndarray, params: list[int]) -> None:
    ok, buf = cv2.imencode(".png", img, params)
    if not ok:  # pragma: no cover
        raise DatasetError(f"{path}: PNG encoding failed")
    buf.tofile(str(path))


def write_sample(root: Path, name: str, sample: SimSample) -> dict:
    """Write one frame's files; returns its labels record."""
    if sample.jpeg_quality < 100:
        img_rel = f"images/{name}.jpg"
        sample.jpeg().tofile(str(root / img_rel))
    else:
        img_rel = f"images/{name}.png"
        _write_png(root / img_rel, sample.image, PNG_PHOTO)
    _write_png(root / "parts" / f"{name}.png", sample.truth.parts, PNG_LABELS)
    _write_png(root / "instances" / f"{name}.png", sample.truth.instances, PNG_LABELS)
    h, w = sample.truth.parts.shape
    labels = {
        "image": img_rel,
        "parts": f"parts/{name}.png",
        "instances": f"instances/{name}.png",
        "width": int(w),
        "height": int(h),
        "mm_per_px": round(float(sample.truth.mm_per_px), 6),
        "jpeg_quality": int(sample.jpeg_quality),
        "camera": sample.camera.to_dict(),
        "look": sample.truth.look.to_dict() if sample.truth.look else None,
        "travel_mm": round(float(sample.truth.travel_mm), 4),
        "scallops": [f.to_dict() for f in sample.truth.scallops],
    }
    if sample.conditions:
        labels["conditions"] = [f"hard:{c}" for c in sample.conditions]
    if sample.uv is not None:
        # Always PNG: the channel is never JPEG-compressed (spec, "Files": x.uv.png).
        uv_rel = f"images/{name}{COMPANION_SUFFIX}"
        _write_png(root / uv_rel, sample.uv, PNG_PHOTO)
        labels["uv"] = uv_rel
        labels["fluorescence"] = sample.uv_look.to_dict()
    (root / "labels" / f"{name}.json").write_text(json.dumps(labels, indent=1))
    return labels


def _summary(labels: dict) -> dict:
    sc = labels["scallops"]
    return {
        "scallops": len(sc),
        "upside_down": sum(s["upside_down"] for s in sc),
        "male": sum(s["gonad"] == "male" for s in sc),
        "cut": sum(s["cut_by_border"] for s in sc),
        "uro_visible": sum(s["uro_present"] for s in sc),
        "hidden_uro": sum(s["uro_hidden"] for s in sc),
        "gills": sum(s["gills"] for s in sc),
        "jpeg": int(labels["jpeg_quality"] < 100),
        "touching": sum(s["visible_fraction"] < 0.999 and not s["cut_by_border"] for s in sc),
        **({"uv": 1} if "uv" in labels else {}),
    }


def _work(job: tuple[str, int, int, DatasetSettings]) -> dict:
    root, index, seed, st = job
    sample = random_sample(index, seed, st)
    return _summary(write_sample(Path(root), f"{index:06d}", sample))


def _worker_init() -> None:
    cv2.setNumThreads(1)  # processes, not threads, share the cores


def process_map(fn: Callable, jobs: list, workers: int, chunksize: int = 2) -> Iterator:
    """``fn`` over ``jobs``, results in order, by ``workers`` processes (in this one when
    ``workers`` <= 1). Frames are independent, so this is how they are drawn in parallel."""
    if workers <= 1:
        yield from map(fn, jobs)
        return
    # spawn, not fork: a forked child can inherit a locked OpenCV thread pool and hang.
    with mp.get_context("spawn").Pool(workers, initializer=_worker_init) as pool:
        yield from pool.imap(fn, jobs, chunksize=chunksize)


@dataclass
class DatasetReport:
    count: int
    seconds: float
    totals: dict

    @property
    def frames_per_s(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("inf")


def _not_simulated(manifest: dict) -> str | None:
    source = manifest.get("source")
    if source == "scallop-sim":
        return None
    return (
        f"holds a data set that the simulator did not write (source {source!r}); "
        "--overwrite only replaces simulated sets"
    )


def write_dataset(
    out: str | os.PathLike,
    n: int,
    seed: int = 0,
    settings: DatasetSettings | None = None,
    workers: int = 1,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> DatasetReport:
    """Write ``n`` simulated frames to ``out`` (created). Refuses a folder that already
    holds a data set unless ``overwrite``, and a folder with anything else in it always."""
    if n < 1:
        raise DatasetError(f"n={n} is out of range: allowed 1 or more frames")
    st = settings or DatasetSettings()
    root = Path(out)
    # Simulated frames never replace a set of real photos.
    prepare_set_folder(root, overwrite, "scallop-sim", _not_simulated)
    t0 = time.perf_counter()
    jobs = [(str(root), i, int(seed), st) for i in range(n)]
    totals: dict[str, int] = {}
    for done, summ in enumerate(process_map(_work, jobs, workers), start=1):
        for k, v in summ.items():
            totals[k] = totals.get(k, 0) + v
        if progress:
            progress(done, n)
    generator = dataclasses.asdict(st)
    if not st.fluorescence:  # a colour-only set's manifest stays what version 1 always wrote
        del generator["fluorescence"]
    if not st.hard_share:
        del generator["hard_share"]
    manifest = {
        "format": DATASET_FORMAT,
        # Version 1 stays the colour-only format; a set with the channel is version 2.
        "version": DATASET_VERSIONS[1] if st.fluorescence else DATASET_VERSIONS[0],
        **({"channels": list(CHANNELS)} if st.fluorescence else {}),
        "classes": list(PART_NAMES),
        "count": n,
        "source": "scallop-sim",
        "seed": int(seed),
        "generator": generator,
        "totals": totals,
        "note": "per-image scale, camera and facts in labels/<name>.json; see docs/dataset-format.md",
    }
    (root / "dataset.json").write_text(json.dumps(manifest, indent=1))
    finish_set_folder(root)
    return DatasetReport(count=n, seconds=time.perf_counter() - t0, totals=totals)
