"""``scallop bench accuracy``: the vision figures on held-out labelled scenes."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HELD_OUT_SEED = 424242  # never used for training (training uses seed, seed + 1000)


def register(sub) -> None:
    p = sub.add_parser(
        "accuracy",
        help="scallop recall/precision, grasp-on-uro, adductor hits, no-uro reporting",
        description=(
            "Score the model on held-out scenes (simulator frames from a seed never used in\n"
            "training, or labelled data-set folders). Counts scallops at least 90 % visible.\n\n"
            "example:\n  scallop bench accuracy --frames 300 --json --out bench/accuracy.json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", help="ONNX model (default: shipped)")
    p.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="DIR",
        help="labelled data set(s) (folders or COCO files) instead of fresh simulator frames",
    )
    p.add_argument("--frames", type=int, default=300, help="simulator frames when no --data (default 300)")
    p.add_argument("--seed", type=int, default=HELD_OUT_SEED)
    p.add_argument("--mm-per-px", type=float, default=0.5, help="scale of the simulator frames (default 0.5)")
    p.add_argument("--out", default="bench/accuracy.json", help="where the figures are written")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def evaluate_model(model, data_dirs, threads: int = 2, failures_out: list | None = None) -> dict:
    """The figures of ``model`` on labelled sets (folders or COCO files), by the scorer that
    ``scallop eval`` uses (scallop.app.evaluation)."""
    from scallop.app.evaluation import evaluate

    ev = evaluate(model, list(data_dirs), threads=threads, keep_worst=0)
    if failures_out is not None:
        failures_out.extend(ev.failures)
    return ev.summary


def write_metrics_into_model(path, summary: dict) -> None:
    import onnx

    m = onnx.load(str(path))
    for p in m.metadata_props:
        if p.key == "scallop.app.metrics":
            p.value = json.dumps(summary)
            break
    else:
        p = m.metadata_props.add()
        p.key, p.value = "scallop.app.metrics", json.dumps(summary)
    onnx.save_model(m, str(path), save_as_external_data=False)


def run(args) -> int:
    from scallop.errors import check_seed

    check_seed("--seed", args.seed)  # numpy's seeding refuses a negative one
    import tempfile

    from scallop.sim.dataset import DatasetSettings, write_dataset

    t0 = time.time()
    dirs = [Path(d) for d in args.data]
    tmp = None
    if not dirs:
        from scallop.models.runtime import read_model_info

        # A four-channel model is scored on frames rendered with their fluorescence images (the
        # colour frames are the same either way), as the line feeds it.
        uv = bool(args.model) and read_model_info(args.model).takes_uv
        tmp = tempfile.TemporaryDirectory(prefix="scallop-acc-")
        write_dataset(
            Path(tmp.name),
            n=args.frames,
            seed=args.seed,
            overwrite=True,
            settings=DatasetSettings(mm_per_px=(args.mm_per_px, args.mm_per_px), fluorescence=uv),
            workers=2,
        )
        dirs = [Path(tmp.name)]
    failures: list = []
    summary = evaluate_model(args.model, dirs, failures_out=failures)
    summary["seconds"] = round(time.time() - t0, 1)
    summary["source"] = [
        str(d) for d in args.data
    ] or f"simulator seed {args.seed}, {args.frames} frames at {args.mm_per_px} mm/px"
    summary["failures_sample"] = failures[:50]
    if tmp:
        tmp.cleanup()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"frames {summary['frames']}, scallops ≥90% visible {summary['scallops']}")
        for k in (
            "recall",
            "precision",
            "grasp_on_uro",
            "grasp_on_adductor",
            "grasp_near_adductor",
            "grasp_adductor_min_mm",
            "no_uro_reported",
        ):
            print(f"  {k:20s} {summary[k]}")
        u = summary["uro_confidence"]
        print(
            f"  uro confidence of pickable grasps: on a uro ({u['pickable_on_uro']}) min {u['on_uro_min']}, "
            f"1st percentile {u['on_uro_p1']}; off a uro {u['off_uro']}"
        )
        print(f"written to {out}")
    return 0
