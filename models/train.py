"""Train the two-stage segmentation model and export it to ONNX with its metadata.

Needs the optional ``train`` extra (torch). Data sets are folders in the documented
format (docs/dataset-format.md): simulator output from ``scallop sim dataset`` and/or real
labelled photos; every folder is read the same way.

With ``TrainConfig.uv_stages`` a stage also takes the fluorescence channel (``Sample.uv``, from
version 2 data sets, docs/fluorescence.md) as a fourth plane. The plane travels stacked with the
colour ones through every resampling, so a rotation, scale, flip or crop moves it exactly as the
colour image; the colour jitter (``photometric``, ``recolour_background``) sees only the colour
planes and the channel gets its own (``augment.fluorescence``) from a generator of its own, so
the colour batches are the ones a colour-only run draws.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from scallop.models.augment import fluorescence, photometric, recolour_background, rotate_scale_crop
from scallop.models.dataset import DatasetError, Sample, load_dataset

FINDER_CLASSES = ("background", "core", "edge")
PARTS_CLASSES = ("background", "meat", "adductor", "uro")
# Data-set part labels (0 bg, 1 mantle, 2 gonad, 3 adductor, 4 uro, 5 gill) → parts targets: the
# classes, and GILL_MEAT for gill. Gills are meat to the network, but the striated band is what it
# most often took for a uro on a scallop without one (models/README.md), so the target keeps them
# apart for the loss to weigh (TrainConfig.gill_weight).
MEAT = 1
GILL_MEAT = 4
PART_TO_CLASS = np.array([0, MEAT, MEAT, 2, 3, GILL_MEAT] + [0] * 250, np.uint8)
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
# The fluorescence plane is mostly dark (belt 0–10, meat 5–45 grey levels) with the uro at
# 110–240 (the appearance spec): these put the belt near −0.3 and a uro at 1.3–3.4, about the
# spread the colour planes get from MEAN and STD.
UV_MEAN = 0.08
UV_STD = 0.25
#: The stages that may take the fluorescence channel.
STAGES = ("finder", "parts")


@dataclass
class TrainConfig:
    seed: int = 0
    finder_mm_per_px: float = 2.0
    parts_mm_per_px: float = 0.75
    crop: int = 128  # parts crop side (px) → 96 mm at 0.75 mm/px
    finder_patch: int = 160  # finder training patch side (coarse px)
    edge_px: int = 2  # edge band width at the finder scale (4 mm)
    iters: int = 5400  # total steps (with time_budget_s: the most allowed)
    warmup: int = 300  # linear warm-up steps, then cosine decay to 2 % of lr
    time_budget_s: float = 0.0  # > 0: fit the step count to this much training time
    batch_parts: int = 24
    batch_finder: int = 12
    lr: float = 3e-3
    weight_decay: float = 1e-4
    threads: int = 2  # torch intra-op threads
    workers: int = 0  # processes augmenting batches (0: in the training process)
    device: str = "cpu"
    real_share: float = 0.5  # share of each batch drawn from real labelled photos (when there are sim frames too)
    freeze_bn: bool = False  # keep batch-norm statistics (fine-tuning from an ONNX model, whose are folded)
    finder_widths: tuple[int, int, int, int] = (16, 16, 32, 48)
    parts_widths: tuple[int, int, int, int] = (16, 16, 32, 48)
    data_description: str = ""
    log_every: int = 100
    # Stages fed the fluorescence channel as a fourth plane: () colour only (the shipped
    # model), ("parts",), or ("finder", "parts"). Needs samples with ``uv`` (version 2 sets).
    uv_stages: tuple[str, ...] = ()
    # Weight of gill pixels in the parts loss, against 1 for the rest of the meat.
    gill_weight: float = 1.0

    def __post_init__(self) -> None:
        stages = tuple(self.uv_stages)  # a list when read back from a model's train_config
        if any(st not in STAGES for st in stages) or len(set(stages)) != len(stages):
            raise ValueError(f"uv_stages={list(stages)!r}: allowed stage names are {list(STAGES)!r}, each once")
        self.uv_stages = tuple(st for st in STAGES if st in stages)

    def planes(self, stage: str) -> int:
        """Input planes of ``stage``: 3 colour, 4 with the fluorescence channel."""
        return 4 if stage in self.uv_stages else 3


@dataclass
class Prepared:
    """Training material extracted once from the data sets (so each step only augments)."""

    finder_imgs: list = field(default_factory=list)  # coarse images (h, w, 3|4) uint8 (4: fluorescence last)
    finder_tgts: list = field(default_factory=list)  # (h, w) uint8 finder classes
    finder_real: list = field(default_factory=list)  # per image: a real labelled photo (else a sim frame)
    parts_imgs: list = field(default_factory=list)  # fine patches (P, P, 3|4) uint8
    parts_tgts: list = field(default_factory=list)  # (P, P) uint8 parts classes, GILL_MEAT for gill
    parts_real: list = field(default_factory=list)

    def extend(self, other: Prepared) -> None:
        for k in ("finder_imgs", "finder_tgts", "finder_real", "parts_imgs", "parts_tgts", "parts_real"):
            getattr(self, k).extend(getattr(other, k))


def finder_target(instances: np.ndarray, edge_px: int) -> np.ndarray:
    """Instance map at the finder scale → 0 bg, 1 core, 2 edge (a band along every boundary,
    including between touching scallops, which is what lets the runtime split them)."""
    inst = instances.astype(np.uint16)
    k = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * edge_px + 1, 2 * edge_px + 1))
    hi = cv2.dilate(inst, k)
    lo = cv2.erode(inst, k, borderType=cv2.BORDER_REPLICATE)
    fg = inst > 0
    tgt = np.zeros(inst.shape, np.uint8)
    tgt[fg] = 1
    tgt[fg & ((hi != inst) | (lo != inst))] = 2
    return tgt


def _resize(img, factor, interp):
    h, w = img.shape[:2]
    return cv2.resize(img, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=interp)


def prepare_one(s: Sample, cfg: TrainConfig, real: bool = False, into: Prepared | None = None) -> Prepared:
    """Training material from one labelled image: its frame at the finder scale with the
    finder target, and one fine patch per scallop (1.5× the crop, so rotations stay filled).
    With ``cfg.uv_stages`` the fluorescence image is stacked as a fourth plane before any
    resampling, so it is resampled exactly as the colour image."""
    out = into if into is not None else Prepared()
    P = int(cfg.crop * 1.5)
    image = s.image
    if cfg.uv_stages:
        if s.uv is None:
            raise DatasetError(
                f"{s.image_path or s.name}: no fluorescence image, and this training feeds it to the "
                f"{' and '.join(cfg.uv_stages)} stage: train a 4-channel model on version 2 data sets "
                'whose channels are ["bgr", "uv"] (scallop sim dataset --fluorescence)'
            )
        image = np.dstack([s.image, s.uv])
    f = s.mm_per_px / cfg.parts_mm_per_px
    fine = _resize(image, f, cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    parts = _resize(s.parts, f, cv2.INTER_NEAREST)
    inst = _resize(s.instances, f, cv2.INTER_NEAREST)
    g = cfg.parts_mm_per_px / cfg.finder_mm_per_px
    coarse = _resize(fine, g, cv2.INTER_AREA)
    cinst = _resize(inst, g, cv2.INTER_NEAREST)
    if cfg.uv_stages and "parts" not in cfg.uv_stages:
        fine = np.ascontiguousarray(fine[..., :3])
    if cfg.uv_stages and "finder" not in cfg.uv_stages:
        coarse = np.ascontiguousarray(coarse[..., :3])
    out.finder_imgs.append(coarse)
    out.finder_tgts.append(finder_target(cinst, cfg.edge_px))
    out.finder_real.append(bool(real))
    cls = PART_TO_CLASS[parts]
    pad = P
    fpad = cv2.copyMakeBorder(fine, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    cpad = cv2.copyMakeBorder(cls, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    for i in (i for i in np.unique(inst) if i):
        ys, xs = np.nonzero(inst == i)
        if len(xs) * cfg.parts_mm_per_px**2 < 200:
            continue
        cx, cy = int(xs.mean()) + pad, int(ys.mean()) + pad
        x0, y0 = cx - P // 2, cy - P // 2
        out.parts_imgs.append(fpad[y0 : y0 + P, x0 : x0 + P].copy())
        out.parts_tgts.append(cpad[y0 : y0 + P, x0 : x0 + P].copy())
        out.parts_real.append(bool(real))
    return out


def prepare(samples: Iterable[Sample], cfg: TrainConfig, real: bool = False, into: Prepared | None = None) -> Prepared:
    out = into if into is not None else Prepared()
    for s in samples:
        prepare_one(s, cfg, real, out)
    return out


def mix(real: list, share: float) -> np.ndarray:
    """Sampling probabilities: ``share`` of the draws from the real items, the rest from the
    simulator's, evenly within each (one source alone: evenly over it)."""
    r = np.asarray(real, bool)
    n_r, n_s = int(r.sum()), int((~r).sum())
    if n_r == 0 or n_s == 0:
        return np.full(len(r), 1.0 / len(r))
    return np.where(r, share / n_r, (1.0 - share) / n_s)


class Batcher:
    """Augmented training batches drawn from prepared material. Batch ``i`` depends only on
    the seed and ``i``, so any number of worker processes yields the same batches."""

    def __init__(self, prep: Prepared, cfg: TrainConfig):
        self.p, self.cfg = prep, cfg
        self.pw = mix(prep.parts_real, cfg.real_share)
        self.fw = mix(prep.finder_real, cfg.real_share)

    def __len__(self) -> int:  # the sampler decides; a DataLoader only needs the method
        return 1 << 62

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.cfg.seed, int(i), 0xBA7C])
        # The fluorescence channel's jitter from a generator of its own: ``rng`` draws the same
        # numbers with or without the channel.
        urng = np.random.default_rng([self.cfg.seed, int(i), 0xF1A0]) if self.cfg.uv_stages else None
        xp, yp = self.parts(rng, urng)
        xf, yf = self.finder(rng, urng)
        return xp, yp, xf, yf

    @staticmethod
    def _jitter(im: np.ndarray, lb: np.ndarray, rng, urng, out: np.ndarray) -> None:
        """Colour jitter on the colour planes only; the fluorescence plane, if any, gets its own."""
        col = im[..., :3] if im.shape[2] == 4 else im
        if rng.random() < 0.25:
            col = recolour_background(col, lb == 0, rng)
        out[..., :3] = photometric(col, rng)
        if im.shape[2] == 4:
            out[..., 3] = fluorescence(np.ascontiguousarray(im[..., 3]), urng)

    def parts(self, rng: np.random.Generator, urng: np.random.Generator | None = None):
        cfg, S = self.cfg, self.cfg.crop
        xs = np.empty((cfg.batch_parts, S, S, cfg.planes("parts")), np.uint8)
        ys = np.empty((cfg.batch_parts, S, S), np.uint8)
        for b, i in enumerate(rng.choice(len(self.pw), cfg.batch_parts, p=self.pw)):
            img, tgt = self.p.parts_imgs[i], self.p.parts_tgts[i]
            c = img.shape[0] / 2 + rng.uniform(-10, 10, size=2)
            im, lb = rotate_scale_crop(
                img,
                tgt,
                (float(c[0]), float(c[1])),
                S,
                rng.uniform(0.85, 1.15),
                rng.uniform(0, 360),
                bool(rng.random() < 0.5),
            )
            self._jitter(im, lb, rng, urng, xs[b])
            ys[b] = lb
        return xs, ys

    def finder(self, rng: np.random.Generator, urng: np.random.Generator | None = None):
        cfg, T = self.cfg, self.cfg.finder_patch
        xs = np.empty((cfg.batch_finder, T, T, cfg.planes("finder")), np.uint8)
        ys = np.empty((cfg.batch_finder, T, T), np.uint8)
        for b, i in enumerate(rng.choice(len(self.fw), cfg.batch_finder, p=self.fw)):
            img, tgt = self.p.finder_imgs[i], self.p.finder_tgts[i]
            h, w = img.shape[:2]
            c = (rng.uniform(0, w), rng.uniform(0, h))
            k = int(rng.integers(0, 4))
            im, lb = rotate_scale_crop(img, tgt, c, T, rng.uniform(0.85, 1.15), 90.0 * k, bool(rng.random() < 0.5))
            self._jitter(im, lb, rng, urng, xs[b])
            ys[b] = lb
        return xs, ys


def _loader_init(_worker: int) -> None:
    import torch

    cv2.setNumThreads(1)  # processes share the cores; OpenCV's own pool would oversubscribe
    torch.set_num_threads(1)


def _batches(batcher: Batcher, cfg: TrainConfig, start: int):
    """Batches start, start+1, … (endless; the caller stops), from worker processes when
    ``cfg.workers`` > 0."""
    import itertools

    if cfg.workers <= 0:
        for i in itertools.count(start):
            yield batcher[i]
        return
    from torch.utils.data import DataLoader

    # fork: the workers share the prepared material instead of each unpickling a copy.
    loader = DataLoader(
        batcher,
        batch_size=None,
        sampler=itertools.count(start),
        num_workers=cfg.workers,
        prefetch_factor=4,
        worker_init_fn=_loader_init,
        multiprocessing_context="fork",
    )
    for b in loader:
        yield tuple(t.numpy() for t in b)


def norm_of(planes: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std per input plane (x / 255 − mean) / std: the colour planes', then the
    fluorescence plane's."""
    if planes == 4:
        return MEAN + (UV_MEAN,), STD + (UV_STD,)
    return MEAN, STD


def to_tensor(x: np.ndarray, device: str = "cpu"):
    """(N, H, W, 3|4) uint8 → (N, 3|4, H, W) float, normalised as the runtime does."""
    import torch

    n = x.shape[-1]
    m, s = norm_of(n)
    t = torch.from_numpy(x).to(device, non_blocking=True).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(m, device=device).view(1, n, 1, 1)
    std = torch.tensor(s, device=device).view(1, n, 1, 1)
    return (t - mean) / std


def _loss(logits, target, weights, dice_class: int | None, gill_weight: float = 1.0):
    """Weighted cross-entropy (the weighted mean, as torch takes it), plus a soft Dice term on
    ``dice_class``. In parts targets GILL_MEAT is meat whose pixels weigh ``gill_weight`` times
    as much (finder targets never hold it)."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(target).to(logits.device, non_blocking=True).long()
    w = torch.tensor(weights, device=logits.device)
    gill = t == GILL_MEAT
    t = torch.where(gill, MEAT, t)
    if gill_weight == 1.0:
        loss = F.cross_entropy(logits, t, weight=w)
    else:
        scale = torch.where(gill, float(gill_weight), 1.0)
        each = F.cross_entropy(logits, t, weight=w, reduction="none")  # w[t] · −log p[t]
        loss = (each * scale).sum() / (w[t] * scale).sum()
    if dice_class is not None:
        p = logits.softmax(1)[:, dice_class]
        g = (t == dice_class).float()
        inter = (p * g).sum()
        loss = loss + 1.0 - (2 * inter + 1.0) / (p.sum() + g.sum() + 1.0)
    return loss


def set_train_mode(net, freeze_bn: bool) -> None:
    import torch.nn as nn

    net.train()
    if freeze_bn:
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()


def lr_factor(it: int, warmup: int, total: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 2 % at ``total``."""
    if it < warmup:
        return (it + 1) / warmup
    t = min(1.0, (it - warmup) / max(1, total - warmup))
    return 0.02 + 0.98 * 0.5 * (1.0 + np.cos(np.pi * t))


def open_sets(sim_dirs: list[Path], real_dirs: list[Path], cfg: TrainConfig) -> list:
    """The data-set folders opened and checked, each with whether it is real photos: with
    ``cfg.uv_stages`` every set must carry the fluorescence channel (version 2). Called before
    anything is drawn, so a set that cannot be used is refused in a second, not after minutes
    of simulator frames."""
    sets = [(load_dataset(d), False) for d in sim_dirs] + [(load_dataset(d), True) for d in real_dirs]
    if cfg.uv_stages:
        for ds, _ in sets:
            if "uv" not in ds.channels:
                raise DatasetError(
                    f"{ds.root}: a version {ds.manifest['version']} data set with channels {list(ds.channels)!r}: "
                    f"it has no fluorescence images, and a 4-channel model (its {' and '.join(cfg.uv_stages)} "
                    'stage takes them) trains only on version 2 sets with channels ["bgr", "uv"] '
                    "(scallop sim dataset --fluorescence)"
                )
    return sets


def prepare_dirs(
    sim_dirs: list[Path], real_dirs: list[Path], cfg: TrainConfig, into: Prepared | None = None, opened=None
) -> Prepared:
    """Material from data-set folders; real photos make ``cfg.real_share`` of each batch.
    Streamed: full-resolution frames are large, only the extracted material is kept. The sets
    are those of :func:`open_sets` (``opened``, when the caller opened them first)."""
    prep = into if into is not None else Prepared()
    for ds, real in opened if opened is not None else open_sets(sim_dirs, real_dirs, cfg):
        prepare(ds, cfg, real, prep)
    return prep


def train(
    prep: Prepared,
    out: Path,
    cfg: TrainConfig,
    init: Path | None = None,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Train on prepared material and write ``out`` (.onnx) plus ``out``.pt (a checkpoint to
    fine-tune from). Returns the ONNX path. With ``cfg.time_budget_s`` the number of steps is
    chosen after the warm-up from the measured speed and written into the config, so
    ``iters`` in the model's metadata reproduces the same schedule."""
    import torch

    from scallop.models.net import ScallopNet
    from scallop.models.onnx_io import export_onnx, init_from_onnx  # it imports this module

    if not prep.parts_imgs or not prep.finder_imgs:
        raise ValueError("no training material: the data sets hold no labelled scallops")
    got = (prep.finder_imgs[0].shape[2], prep.parts_imgs[0].shape[2])
    if got != (cfg.planes("finder"), cfg.planes("parts")):
        raise ValueError(
            f"the training material has {got[0]} + {got[1]} planes (finder + parts) but uv_stages="
            f"{list(cfg.uv_stages)!r} needs {cfg.planes('finder')} + {cfg.planes('parts')}: prepare it with the same config"
        )
    if cfg.warmup >= cfg.iters:
        raise ValueError(f"warmup={cfg.warmup} must be below iters={cfg.iters}")
    device = cfg.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}: no CUDA device is available to torch")
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    log(
        f"training on {len(prep.finder_imgs)} frames, {len(prep.parts_imgs)} scallop crops, device {device}, "
        f"{cfg.workers} data workers"
        + (f", fluorescence channel in the {' and '.join(cfg.uv_stages)} stage" if cfg.uv_stages else "")
    )
    net = ScallopNet(
        cfg.finder_widths,
        cfg.parts_widths,
        len(FINDER_CLASSES),
        len(PARTS_CLASSES),
        cfg.planes("finder"),
        cfg.planes("parts"),
    )
    if init is not None and Path(init).suffix.lower() == ".onnx":
        init_from_onnx(net, Path(init), cfg.crop)
        cfg.freeze_bn = True
        log(f"initialised from {init} (its folded batch norms are kept fixed)")
    elif init is not None:
        net.load_state_dict(torch.load(init, map_location="cpu")["state_dict"])
        log(f"initialised from {init}")
    net.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.iters
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: lr_factor(it, cfg.warmup, total))
    wf = [1.0, 1.0, 3.0]  # the edge class is what splits touching scallops: weigh it up
    wp = [1.0, 1.0, 1.5, 3.0]
    set_train_mode(net, cfg.freeze_bn)
    sums = torch.zeros(2, device=device)
    t0 = time.time()
    # The speed for the time budget is measured over the warm-up, past its first steps
    # (start-up, cuDNN autotuning).
    mark = max(1, cfg.warmup // 6)
    t_mark = time.time()
    prev_cv_threads = cv2.getNumThreads()
    if cfg.workers > 0:
        cv2.setNumThreads(1)  # a forked worker must not inherit a busy OpenCV thread pool
    batches = _batches(Batcher(prep, cfg), cfg, 1)
    try:
        it = 0
        while it < total:
            it += 1
            xp, yp, xf, yf = next(batches)
            lf, lp = net(to_tensor(xf, device), to_tensor(xp, device))
            loss_f = _loss(lf, yf, wf, None)
            loss_p = _loss(lp, yp, wp, 3, cfg.gill_weight)
            opt.zero_grad(set_to_none=True)
            (loss_f + loss_p).backward()
            opt.step()
            sched.step()
            sums += torch.stack([loss_f.detach(), loss_p.detach()])
            if progress is not None:
                progress(it, total)
            if it == mark:
                t_mark = time.time()
            if cfg.time_budget_s > 0 and it == cfg.warmup:
                rate = (it - mark) / max(1e-6, time.time() - t_mark)
                fit = cfg.warmup + rate * max(0.0, cfg.time_budget_s - (time.time() - t0))
                total = int(max(cfg.warmup + 100, min(cfg.iters, fit)) // 100 * 100)
                cfg.iters, cfg.time_budget_s = total, 0.0
                log(f"{rate:.1f} steps/s: training for {total} steps")
            if it % cfg.log_every == 0 or it == total:
                n = cfg.log_every if it % cfg.log_every == 0 else it % cfg.log_every
                lf_m, lp_m = (sums / n).tolist()
                sums.zero_()
                log(
                    f"iter {it}/{total} finder loss {lf_m:.3f} parts loss {lp_m:.3f} "
                    f"lr {sched.get_last_lr()[0]:.2e} ({time.time() - t0:.0f} s)"
                )
    finally:
        batches.close()
        cv2.setNumThreads(prev_cv_threads)
    net.to("cpu")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": net.state_dict(), "config": asdict(cfg)}, out.with_suffix(".pt"))
    export_onnx(net, out, cfg, {})
    log(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB) in {time.time() - t0:.0f} s")
    return out
