"""``scallop train``: train the model from a seed (models/README.md has the shipped files' commands), or adapt it to a line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train the segmentation model (simulator data and/or real labelled photos) and export ONNX",
        description=(
            "Train the two-stage segmentation model and export one self-contained ONNX file.\n"
            "Needs the optional extra: pip install -e '.[train]'\n\n"
            "examples:\n"
            "  scallop train --out runs/model.onnx                 # a model from seed 0 (the shipped files' runs:\n"
            "                                                      # models/README.md, Training)\n"
            "  scallop train --real data/line3 --init live.onnx --frames 400 --iters 1500 --warmup 100 \\\n"
            "      --lr 5e-4 --out runs/line3.onnx            # fine-tune the live model on a line's photos\n\n"
            "Simulator frames are drawn from the seed in memory by --workers processes (frame i\n"
            "depends only on the seed and i); --real sets are COCO files or data-set folders,\n"
            "--sim-data folders (docs/dataset-format.md). Real photos make --real-share of each\n"
            "batch; --holdout-share of them (chosen by the seed) are kept out of training and\n"
            "scored afterwards. The validation set (seed + 1000) is written to WORKDIR and reused\n"
            "by later runs. --init takes a .pt checkpoint or an exported .onnx model (the shipped\n"
            "one, a registry's): its batch norms, folded into the convolutions, stay fixed.\n\n"
            "--channels 4 trains a model whose parts stage (with --uv-finder the finder too) also takes\n"
            "the fluorescence channel (docs/fluorescence.md): simulator frames are drawn with it, and\n"
            "every --sim-data set must be version 2 with channels [bgr, uv]."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--out", default="runs/scallop-seg.onnx", help="output ONNX path (a .pt checkpoint is written beside it)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, default=800, help="simulator training frames to draw (0: none)")
    p.add_argument("--val-frames", type=int, default=300, help="held-out simulator frames for validation")
    p.add_argument("--iters", type=int, default=5400, help="training steps (with --time-budget: the most)")
    p.add_argument(
        "--time-budget",
        type=float,
        default=0.0,
        metavar="S",
        help="fit the number of steps to S seconds of training (the count is recorded in the model)",
    )
    p.add_argument(
        "--real", action="append", default=[], metavar="SET", help="real labelled set: COCO file or folder (repeatable)"
    )
    p.add_argument("--real-share", type=float, default=0.5, help="share of each batch from real photos (default 0.5)")
    p.add_argument(
        "--holdout-share",
        type=float,
        default=0.2,
        help="share of the real photos kept out for evaluation (default 0.2)",
    )
    p.add_argument("--warmup", type=int, default=300, help="linear warm-up steps (default 300)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default 3e-3; fine-tuning: lower)")
    p.add_argument(
        "--sim-data", action="append", default=[], metavar="DIR", help="existing simulator data set (repeatable)"
    )
    p.add_argument("--init", help="checkpoint (.pt) or exported model (.onnx) to fine-tune from")
    p.add_argument("--workdir", default="runs/train-data", help="where the validation data set goes")
    p.add_argument("--threads", type=int, default=2, help="torch threads (CPU training)")
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes drawing frames and augmenting batches (default: one per core)",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda when torch sees one)")
    p.add_argument(
        "--channels",
        type=int,
        choices=(3, 4),
        default=3,
        help="3: colour only (the shipped model); 4: the parts stage also takes the fluorescence image",
    )
    p.add_argument("--uv-finder", action="store_true", help="with --channels 4: the finder takes it too")
    for stage, default in (("finder", "16,16,32,48"), ("parts", "16,16,32,48")):
        p.add_argument(
            f"--{stage}-widths",
            metavar="C1,C2,C3,C4",
            help=f"channels of the {stage} network at 1/2, 1/4, 1/8 and 1/16 of its input, each 4..256 (default "
            f"{default}; with --init a model's own): narrower networks are faster (scallop bench vision --model), "
            "down to 16 channels (the CPU runtime pads fewer back to 16), and must be trained, and checked, anew",
        )
    p.add_argument(
        "--hard-share",
        type=float,
        default=0.0,
        help="share of simulator frames drawn with a random mix of the hard conditions "
        "(mantle flaps, glare, debris, tight touching, lighting extremes; default 0)",
    )
    p.add_argument(
        "--no-uro-share",
        type=float,
        default=None,
        help="share of simulator scallops drawn without a uro (default: the data sets' 0.05; the line sees "
        "5-10 %%): more of them teaches the model what is not a uro (gills, dark debris, shadows)",
    )
    p.add_argument(
        "--gill-weight",
        type=float,
        default=1.0,
        help="weight of gill pixels in the parts loss, against 1 for other meat (default 1): the gills' striated "
        "band is what the model most often takes for a uro on a scallop without one",
    )
    p.set_defaults(func=run)


def _sim_material(job):
    """Frame ``index`` of the seed's simulator data set → its training material."""
    index, seed, cfg, hard_share, no_uro_share = job
    from scallop.models.dataset import Sample
    from scallop.models.train import prepare_one
    from scallop.sim.dataset import random_sample

    s = random_sample(index, seed, sim_settings(bool(cfg.uv_stages), hard_share, no_uro_share))
    return prepare_one(
        Sample(f"{index:06d}", s.stored_image(), s.truth.parts, s.truth.instances, float(s.truth.mm_per_px), uv=s.uv),
        cfg,
    )


def sim_settings(fluorescence: bool, hard_share: float, no_uro_share: float | None):
    """How the training's simulator frames are drawn: the data sets' settings, with the hard
    conditions on ``hard_share`` of the frames and ``no_uro_share`` of the scallops without a
    uro (None: the data sets' own share)."""
    from dataclasses import replace

    from scallop.sim.dataset import DatasetSettings

    # The colour frame is the same with the channel on (its own generator): only uv is added.
    settings = DatasetSettings(fluorescence=fluorescence, hard_share=hard_share)
    if no_uro_share is not None:
        settings.product = replace(settings.product, no_uro_share=no_uro_share)
    return settings


def sim_material(
    n: int, seed: int, cfg, workers: int, log=print, hard_share: float = 0.0, no_uro_share: float | None = None
):
    """The training material of ``n`` simulator frames, drawn by ``workers`` processes
    (``hard_share`` of them with a random mix of the hard conditions; ``no_uro_share`` of the
    scallops without a uro, None: the data sets' own share)."""
    from scallop.models.train import Prepared
    from scallop.sim.dataset import process_map

    prep = Prepared()
    t0 = time.time()
    jobs = [(i, seed, cfg, hard_share, no_uro_share) for i in range(n)]
    for k, part in enumerate(process_map(_sim_material, jobs, workers, chunksize=4), start=1):
        prep.extend(part)
        if k % 500 == 0 or k == n:
            log(f"drew {k}/{n} simulator frames ({time.time() - t0:.0f} s)")
    return prep


def split_real(sources: list[str], share: float, seed: int) -> list[tuple[str, set[int]]]:
    """Per real set, the indices of its images held out for evaluation: ``share`` of them
    (at least one of a set of two or more), chosen by the seed."""
    import numpy as np

    from scallop.app.evaluation import labelled_samples

    out = []
    for k, src in enumerate(sources):
        n, _ = labelled_samples(src)
        held = int(round(share * n))
        if share > 0 and n >= 2:
            held = min(max(held, 1), n - 1)
        perm = np.random.default_rng([seed, k, 0x401D]).permutation(n)
        out.append((src, {int(i) for i in perm[:held]}))
    return out


def parse_widths(key: str, text: str) -> tuple[int, int, int, int]:
    """``C1,C2,C3,C4`` → four channel counts, each a whole number from 4 to 256."""
    from scallop.errors import ConfigError, check_number

    try:
        widths = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(
            f"{key}={text!r}: expected four whole numbers C1,C2,C3,C4, each 4..256 (e.g. 16,16,32,48)"
        ) from None
    if len(widths) != 4:
        raise ConfigError(f"{key}={text!r}: expected four channel counts C1,C2,C3,C4, each 4..256, got {len(widths)}")
    for i, w in enumerate(widths, start=1):
        check_number(f"{key} C{i}", w, 4, 256, integer=True)
    return widths  # type: ignore[return-value]


def _checkpoint_config(torch, path: str) -> dict:
    """The config a ``scallop train`` checkpoint (.pt) records; :class:`DataError` for a file
    that is none (torch's own errors run to several lines of its internals)."""
    from scallop.errors import DataError

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        saved = torch.load(path, map_location="cpu")
    except Exception:
        saved = None
    if not isinstance(saved, dict) or "state_dict" not in saved:
        raise DataError(f"{path}: not a checkpoint written by scallop train (a .pt file with its weights and config)")
    return saved.get("config", {})


def _subset(src: str, indices: set[int], keep: bool) -> list:
    """The loaders (:func:`scallop.app.evaluation.labelled_loaders`) of the images of ``src``
    whose index is in ``indices`` (``keep``) or not: only those images are read."""
    from scallop.app.evaluation import labelled_loaders

    _, loaders = labelled_loaders(src)
    return [load for i, load in enumerate(loaders) if (i in indices) == keep]


def run(args) -> int:
    from scallop.errors import check_seed

    check_seed("--seed", args.seed)  # numpy's seeding refuses a negative one
    try:
        import torch
    except ImportError:
        print(
            "scallop train: error: torch is not installed; install the train extra: pip install -e '.[train]'",
            file=sys.stderr,
        )
        return 2
    from scallop.app.evaluation import evaluate
    from scallop.errors import check_number
    from scallop.models.onnx_io import onnx_train_config
    from scallop.models.train import TrainConfig, open_sets, prepare, prepare_dirs, train
    from scallop.sim.dataset import write_dataset

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.frames < 0 or args.iters < 1 or args.workers < 0:
        print("scallop train: error: --frames, --workers must be ≥ 0 and --iters ≥ 1", file=sys.stderr)
        return 2
    check_number("--real-share", args.real_share, 0.0, 1.0)
    check_number("--holdout-share", args.holdout_share, 0.0, 0.9)
    check_number("--warmup", args.warmup, 1, 1_000_000, integer=True)
    if args.warmup >= args.iters:  # said now, not after minutes of drawing frames
        print(f"scallop train: error: --warmup {args.warmup} must be below --iters {args.iters}", file=sys.stderr)
        return 2
    check_number("--lr", args.lr, 1e-7, 1.0)
    check_number("--hard-share", args.hard_share, 0.0, 1.0)
    if args.no_uro_share is not None:
        check_number("--no-uro-share", args.no_uro_share, 0.0, 0.5)
    check_number("--gill-weight", args.gill_weight, 1.0, 20.0)
    if args.uv_finder and args.channels != 4:
        print(
            "scallop train: error: --uv-finder feeds the fluorescence channel to the finder: it needs --channels 4",
            file=sys.stderr,
        )
        return 2
    uv_stages = (("finder", "parts") if args.uv_finder else ("parts",)) if args.channels == 4 else ()
    work = Path(args.workdir)
    split = split_real(args.real, args.holdout_share, args.seed)
    desc = {
        "sim": (
            [
                f"seed {args.seed}, {args.frames} frames drawn in memory"
                + (f", {args.hard_share:.0%} with hard conditions" if args.hard_share else "")
                + (f", {args.no_uro_share:.0%} of scallops without a uro" if args.no_uro_share is not None else "")
            ]
            if args.frames
            else []
        )
        + [str(Path(d).name) for d in args.sim_data],
        "real": [str(Path(d).name) for d in args.real],
        "real_held_out": {Path(src).name: sorted(held) for src, held in split},
        "real_share": args.real_share,
        "init": Path(args.init).name if args.init else "",
        "generator": "scallop sim dataset (whole appearance envelope, randomised per frame)",
    }
    shape = {}
    from_onnx = bool(args.init) and Path(args.init).suffix.lower() == ".onnx"
    if args.init:
        # The network's shape and scales are the model's own, whatever the defaults say now: an
        # exported model's metadata or the config a checkpoint was trained with (models.train
        # writes it beside the weights).
        if from_onnx:
            saved = onnx_train_config(Path(args.init))
        else:
            saved = _checkpoint_config(torch, args.init)
        keys = ("finder_mm_per_px", "parts_mm_per_px", "crop", "edge_px", "finder_widths", "parts_widths")
        shape = {k: (tuple(v) if isinstance(v, list) else v) for k, v in saved.items() if k in keys}
    if from_onnx:
        # Which stages take the fluorescence channel is the model's too (a colour-only model's
        # config does not name it): asking a 4-channel model for other channels is refused.
        # A colour-only model may seed a 4-channel one (the fluorescence weights start at zero).
        theirs = tuple(saved.get("uv_stages", ()))
        if theirs != uv_stages and theirs:
            print(
                f"scallop train: error: {args.init} takes the fluorescence channel in {list(theirs) or 'no'} stage(s), "
                f"this run asks for {list(uv_stages) or 'none'}: give the matching --channels / --uv-finder",
                file=sys.stderr,
            )
            return 2
    for stage in ("finder", "parts"):
        text = getattr(args, f"{stage}_widths")
        if text is None:
            continue
        widths = parse_widths(f"--{stage}-widths", text)
        if f"{stage}_widths" in shape and tuple(shape[f"{stage}_widths"]) != widths:
            print(
                f"scallop train: error: --{stage}-widths {text}: {args.init} is a {stage} network of widths "
                f"{','.join(map(str, shape[f'{stage}_widths']))}; fine-tuning keeps a model's widths (train a network of "
                "other widths without --init)",
                file=sys.stderr,
            )
            return 2
        shape[f"{stage}_widths"] = widths
    cfg = TrainConfig(
        seed=args.seed,
        iters=args.iters,
        warmup=args.warmup,
        lr=args.lr,
        threads=args.threads,
        workers=args.workers,
        device=device,
        time_budget_s=args.time_budget,
        real_share=args.real_share,
        data_description=json.dumps(desc),
        uv_stages=uv_stages,
        gill_weight=args.gill_weight,
        **shape,
    )
    # The given sets first: one that cannot be used is refused before minutes of drawing.
    opened = open_sets([Path(d) for d in args.sim_data], [], cfg)
    t0 = time.time()
    prep = (
        sim_material(
            args.frames, args.seed, cfg, args.workers, hard_share=args.hard_share, no_uro_share=args.no_uro_share
        )
        if args.frames
        else None
    )
    prep = prepare_dirs([], [], cfg, prep, opened=opened)
    for src, held in split:
        prepare((load() for load in _subset(src, held, keep=False)), cfg, True, prep)
    print(
        f"prepared {len(prep.finder_imgs)} frames, {len(prep.parts_imgs)} scallop crops in {time.time() - t0:.0f} s",
        flush=True,
    )
    from scallop.app.progress import Progress

    bar = Progress(cfg.iters, "training", unit="steps")

    def step(it: int, total: int) -> None:
        bar.set_total(total)  # a time budget fixes the step count after the warm-up
        bar.advance_to(it)

    try:
        out = train(
            prep,
            Path(args.out),
            cfg,
            init=Path(args.init) if args.init else None,
            log=bar.write,
            progress=step,
        )
    except ValueError as e:
        bar.close(failed=True)
        print(f"scallop train: error: {e}", file=sys.stderr)
        return 2
    except BaseException:
        bar.close(failed=True)
        raise
    bar.close()
    del prep
    from scallop.app.commands.bench_accuracy import evaluate_model, write_metrics_into_model

    summary: dict = {}
    if args.val_frames > 0:
        from scallop.sim.dataset import DatasetSettings

        # A 4-channel model is scored on a set with the channel (the colour frames are the same).
        uv = bool(cfg.uv_stages)
        vd = work / f"sim-val-seed{args.seed + 1000}-n{args.val_frames}{'-uv' if uv else ''}"
        if not (vd / "dataset.json").is_file():
            write_dataset(
                vd,
                n=args.val_frames,
                seed=args.seed + 1000,
                settings=DatasetSettings(fluorescence=uv),
                workers=max(1, args.workers),
                overwrite=True,
            )
        summary = evaluate_model(out, [vd])
    held_sets = [(f"{Path(src).name} (held out)", len(h), _subset(src, h, keep=True)) for src, h in split if h]
    if held_sets:
        ev = evaluate(out, held_sets, threads=args.threads, keep_worst=0)
        summary["real_holdout"] = {k: v for k, v in ev.summary.items() if k not in ("uro_confidence",)}
    if summary:
        write_metrics_into_model(out, summary)
        print(json.dumps(summary))
    return 0
