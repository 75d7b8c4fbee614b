"""``scallop eval``: a model's figures on a labelled set (COCO file or data-set folder)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

KEYS = (
    "recall",
    "precision",
    "uro_success",
    "adductor_hits",
    "near_adductor",
    "no_uro_picked",
    "uro_passed",
    "uro_to_rework",
    "no_uro_to_rework",
)


def register(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="score a model on labelled photos (COCO or the data-set format), with an HTML report",
        description=(
            "Score a model on a labelled set with the frame scorer of 'scallop bench accuracy'\n"
            "(docs/evaluation.md has the definitions). DATASET is a COCO JSON file (images\n"
            "relative to it) or a data-set folder. The scale comes from the set (COCO images'\n"
            "mm_per_px, labels/ or dataset.json); --mm-per-px gives it to images the set gives none,\n"
            "and is refused (exit 2) where it is more than 1 % off the set's own; an image without\n"
            "any scale is refused.\n"
            "A --report that cannot be written (a folder in its place, a file where its folder\n"
            "should be, a read-only place) is refused before the scoring starts, exit 3.\n\n"
            "examples:\n"
            "  scallop eval labelled/line3.json --report eval/line3.html\n"
            "  scallop eval data/line3 --model runs/line3.onnx --json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dataset", metavar="DATASET", help="COCO .json file or data-set folder")
    p.add_argument(
        "--model",
        help="ONNX model (default: the shipped model; the four-channel one for a set with the fluorescence channel)",
    )
    p.add_argument(
        "--mm-per-px",
        type=float,
        help="the scale of images the set gives none (its labelling tool dropped it); never replaces the set's own",
    )
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    p.add_argument(
        "--report", default="eval/report.html", help="HTML report with the worst frames (default %(default)s)"
    )
    p.add_argument("--worst", type=int, default=12, help="worst frames shown in the report (default 12)")
    p.add_argument("--threads", type=int, default=2, help="onnxruntime threads (default 2)")
    p.set_defaults(func=run)


def run(args) -> int:
    from scallop.app.evaluation import carries_channel, check_report_path, evaluate, write_report
    from scallop.app.progress import Progress
    from scallop.errors import check_number
    from scallop.models.runtime import default_uv_model_path

    check_number("--threads", args.threads, 1, 64, integer=True)
    check_number("--worst", args.worst, 0, 1000, integer=True)
    if args.mm_per_px is not None:
        check_number("--mm-per-px", args.mm_per_px, 0.05, 5.0)
    report = Path(args.report)
    check_report_path(report)  # before the scoring, which takes minutes
    # Without --model, as scallop detect and the line do: a set with the fluorescence channel
    # is scored with the shipped model that reads it.
    has_uv = carries_channel(args.dataset, args.mm_per_px)
    model = args.model or (str(default_uv_model_path()) if has_uv else None)
    if args.model:
        from scallop.models.runtime import MissingChannelError
        from scallop.vision.pipeline import Pipeline, PipelineConfig

        # Loaded once, here, so it can be asked what it reads; evaluate() takes it as it is.
        model = Pipeline(args.model, PipelineConfig(threads=args.threads))
        if model.takes_uv and not has_uv and Path(args.dataset).exists():
            # Said of the set, before the scoring: no frame of it will bring the channel.
            what = (
                "not every image has its x.uv.png beside it"
                if Path(args.dataset).is_file()
                else 'its dataset.json does not name the channel ("channels": ["bgr", "uv"], version 2)'
            )
            raise MissingChannelError(
                f"{args.dataset}: the set has no fluorescence channel ({what}), and the model {args.model} "
                "takes 4 channels (colour and fluorescence): score it on a set with the channel, or give a "
                "colour-only model"
            )
    bar = Progress(None, "scoring", unit="frames")
    try:
        ev = evaluate(
            model,
            [args.dataset],
            mm_per_px=args.mm_per_px,
            threads=args.threads,
            keep_worst=args.worst,
            progress=lambda i, n: (bar.set_total(n), bar.advance_to(i)),
        )
    except BaseException:
        bar.close(failed=True)
        raise
    bar.close()
    s = ev.summary | {"model": ev.model}
    # The figures first: a report that fails to write at the end (a full disk) loses no scoring.
    if args.json:
        print(json.dumps(s))
        write_report(ev, report, f"scallop eval: {Path(args.dataset).name}")
        return 0
    print(
        f"{Path(args.dataset).name}: {s['frames']} frame(s), {s['scallops']} scallops counted (at least 90 % "
        f"visible, not cut by the border); model {ev.model}"
    )
    for k in KEYS:
        print(f"  {k:16s} {s[k] if s[k] is not None else '–'}")
    print(f"  jaw margin to the adductor: min {s['jaw_margin_min_mm']} mm, 1st percentile {s['jaw_margin_p1_mm']} mm")
    for k, v in s["per_scale"].items():
        print(
            f"  {k} mm/px: {v['frames']} frame(s), uro success {_shown(v['uro_success'])}, recall {_shown(v['recall'])}"
        )
    for k, v in s.get("per_condition", {}).items():
        print(f"  {k}: {v['frames']} frame(s), uro success {_shown(v['uro_success'])}, recall {_shown(v['recall'])}")
    write_report(ev, report, f"scallop eval: {Path(args.dataset).name}")
    print(f"report: {report}")
    return 0


def _shown(v) -> str:
    """A share for the text output: unknown (nothing to divide by) is shown as such."""
    return "n/a" if v is None else str(v)
