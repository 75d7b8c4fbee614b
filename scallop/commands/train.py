"""``scallop train``: reproduce the shipped model from a seed, or adapt it to a line."""
from __future__ import annotations

import argparse
import json
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
            "Simulator data is generated from the seed into WORKDIR (kept, so reruns reuse it);\n"
            "--real folders are in the documented data-set format (docs/dataset-format.md)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="runs/scallop-seg.onnx", help="output ONNX path (a .pt checkpoint is written beside it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, default=2400, help="simulator training frames to generate (0: none)")
    p.add_argument("--val-frames", type=int, default=300, help="held-out simulator frames for validation")
    p.add_argument("--iters", type=int, default=1500)
    p.add_argument("--real", action="append", default=[], metavar="DIR", help="real labelled data set (repeatable)")
    p.add_argument("--sim-data", action="append", default=[], metavar="DIR", help="existing simulator data set (repeatable)")
    p.add_argument("--init", help="checkpoint (.pt) to fine-tune from")
    p.add_argument("--workdir", default="runs/train-data", help="where generated simulator data goes")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=run)


def run(args) -> int:
    try:
        import torch  # noqa: F401
    except ImportError:
        print("scallop train: error: torch is not installed; install the train extra: pip install -e '.[train]'")
        return 2
    from scallop.models.train import TrainConfig, train
    from scallop.sim.dataset import write_dataset

    work = Path(args.workdir)
    sim_dirs = [Path(d) for d in args.sim_data]
    if args.frames > 0:
        d = work / f"sim-train-seed{args.seed}-n{args.frames}"
        if not (d / "dataset.json").is_file():
            print(f"generating {args.frames} simulator frames into {d} …", flush=True)
            write_dataset(d, n=args.frames, seed=args.seed, workers=args.threads, overwrite=True)
        sim_dirs.append(d)
    desc = {
        "sim": [str(Path(d).name) for d in sim_dirs], "real": [str(Path(d).name) for d in args.real],
        "generator": "scallop sim dataset (whole appearance envelope, randomised per frame)",
    }
    cfg = TrainConfig(seed=args.seed, iters=args.iters, threads=args.threads, data_description=json.dumps(desc))
    out = train(sim_dirs, [Path(d) for d in args.real], Path(args.out), cfg,
                init=Path(args.init) if args.init else None)
    if args.val_frames > 0:
        from scallop.commands.bench_accuracy import evaluate_model, write_metrics_into_model

        vd = work / f"sim-val-seed{args.seed + 1000}-n{args.val_frames}"
        if not (vd / "dataset.json").is_file():
            write_dataset(vd, n=args.val_frames, seed=args.seed + 1000, workers=args.threads, overwrite=True)
        summary = evaluate_model(out, [vd])
        write_metrics_into_model(out, summary)
        print(json.dumps(summary))
    return 0
