"""``scallop train``: reproduce the shipped model from a seed, or adapt it to a line."""

from __future__ import annotations

import argparse
import json
import os
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
            "  scallop train --out runs/model.onnx                 # reproduce the shipped model (seed 0)\n"
            "  scallop train --real data/line3 --out runs/line3.onnx --init runs/model.pt\n"
            "                                                      # adapt to a line's labelled photos\n\n"
            "Simulator frames are drawn from the seed in memory by --workers processes (frame i\n"
            "depends only on the seed and i); --real and --sim-data folders are in the documented\n"
            "data-set format (docs/dataset-format.md). The validation set (seed + 1000) is written\n"
            "to WORKDIR and reused by later runs."
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
    p.add_argument("--real", action="append", default=[], metavar="DIR", help="real labelled data set (repeatable)")
    p.add_argument(
        "--sim-data", action="append", default=[], metavar="DIR", help="existing simulator data set (repeatable)"
    )
    p.add_argument("--init", help="checkpoint (.pt) to fine-tune from")
    p.add_argument("--workdir", default="runs/train-data", help="where the validation data set goes")
    p.add_argument("--threads", type=int, default=2, help="torch threads (CPU training)")
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes drawing frames and augmenting batches (default: one per core)",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda when torch sees one)")
    p.set_defaults(func=run)


def _sim_material(job):
    """Frame ``index`` of the seed's simulator data set → its training material."""
    index, seed, cfg = job
    from scallop.models.dataset import Sample
    from scallop.models.train import prepare_one
    from scallop.sim.dataset import random_sample

    s = random_sample(index, seed)
    return prepare_one(
        Sample(f"{index:06d}", s.stored_image(), s.truth.parts, s.truth.instances, float(s.truth.mm_per_px)), cfg
    )


def sim_material(n: int, seed: int, cfg, workers: int, log=print):
    """The training material of ``n`` simulator frames, drawn by ``workers`` processes."""
    from scallop.models.train import Prepared
    from scallop.sim.dataset import process_map

    prep = Prepared()
    t0 = time.time()
    jobs = [(i, seed, cfg) for i in range(n)]
    for k, part in enumerate(process_map(_sim_material, jobs, workers, chunksize=4), start=1):
        prep.extend(part)
        if k % 500 == 0 or k == n:
            log(f"drew {k}/{n} simulator frames ({time.time() - t0:.0f} s)")
    return prep


def run(args) -> int:
    try:
        import torch
    except ImportError:
        print("scallop train: error: torch is not installed; install the train extra: pip install -e '.[train]'")
        return 2
    from scallop.models.train import TrainConfig, prepare_dirs, train
    from scallop.sim.dataset import write_dataset

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.frames < 0 or args.iters < 1 or args.workers < 0:
        print("scallop train: error: --frames, --workers must be ≥ 0 and --iters ≥ 1")
        return 2
    work = Path(args.workdir)
    desc = {
        "sim": ([f"seed {args.seed}, {args.frames} frames drawn in memory"] if args.frames else [])
        + [str(Path(d).name) for d in args.sim_data],
        "real": [str(Path(d).name) for d in args.real],
        "generator": "scallop sim dataset (whole appearance envelope, randomised per frame)",
    }
    cfg = TrainConfig(
        seed=args.seed,
        iters=args.iters,
        threads=args.threads,
        workers=args.workers,
        device=device,
        time_budget_s=args.time_budget,
        data_description=json.dumps(desc),
    )
    t0 = time.time()
    prep = sim_material(args.frames, args.seed, cfg, args.workers) if args.frames else None
    prep = prepare_dirs([Path(d) for d in args.sim_data], [Path(d) for d in args.real], cfg, prep)
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
        print(f"scallop train: error: {e}")
        return 2
    except BaseException:
        bar.close(failed=True)
        raise
    bar.close()
    del prep
    if args.val_frames > 0:
        from scallop.app.commands.bench_accuracy import evaluate_model, write_metrics_into_model

        vd = work / f"sim-val-seed{args.seed + 1000}-n{args.val_frames}"
        if not (vd / "dataset.json").is_file():
            write_dataset(vd, n=args.val_frames, seed=args.seed + 1000, workers=max(1, args.workers), overwrite=True)
        summary = evaluate_model(out, [vd])
        write_metrics_into_model(out, summary)
        print(json.dumps(summary))
    return 0
