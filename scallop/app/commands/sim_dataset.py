"""``scallop sim dataset``: write a labelled, randomised training set from the simulator."""

from __future__ import annotations

import argparse
import os
import textwrap

EXAMPLE = "  scallop sim dataset --n 200 --out data/sim --seed 1"


def register(sub) -> None:
    p = sub.add_parser(
        "dataset",
        help="write a labelled data set of simulated frames",
        description=textwrap.fill(
            "Write N simulated frames, each drawn across the whole appearance envelope (camera "
            "resolution, scale 0.3–1.0 mm/px, tilt, distortion, belt, lighting, blur, noise, JPEG, "
            "0–10 scallops with every hard case), with part and instance maps and per-scallop facts. "
            "The format is described in docs/dataset-format.md.",
            88,
        )
        + "\n\nexample:\n"
        + EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--n", type=int, required=True, help="number of frames")
    p.add_argument("--out", required=True, help="folder to write (created)")
    p.add_argument("--seed", type=int, default=0, help="frame i of a seed is always the same (default 0)")
    p.add_argument("--workers", type=int, default=0, help="processes (default: the CPU count, at most 4)")
    p.add_argument("--overwrite", action="store_true", help="replace a data set already in --out")
    p.add_argument(
        "--fluorescence",
        action="store_true",
        help="also write each frame's fluorescence channel, images/<name>.uv.png (format version 2; docs/fluorescence.md)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from scallop.sim.dataset import DatasetError, DatasetSettings, write_dataset

    if args.n < 1:
        raise DatasetError(f"--n {args.n}: need at least one frame")
    workers = args.workers or min(4, os.cpu_count() or 1)
    if workers < 1:
        raise DatasetError(f"--workers {args.workers}: need at least one process")

    from scallop.app.progress import Progress

    with Progress(args.n, "sim dataset", unit="frames") as bar:
        rep = write_dataset(
            args.out,
            args.n,
            seed=args.seed,
            workers=workers,
            overwrite=args.overwrite,
            settings=DatasetSettings(fluorescence=args.fluorescence),
            progress=lambda done, _total: bar.advance_to(done),
        )
    t = rep.totals
    print(
        f"wrote {rep.count} frames to {args.out} in {rep.seconds:.1f} s ({rep.frames_per_s:.2f} frames/s, "
        f"{workers} process{'es' if workers > 1 else ''})"
    )
    print(
        f"  {t.get('scallops', 0)} scallops: {t.get('uro_visible', 0)} with a visible uro, "
        f"{t.get('upside_down', 0)} upside down, {t.get('male', 0)} male, {t.get('hidden_uro', 0)} with the uro "
        f"partly under the mantle, {t.get('gills', 0)} with gills, {t.get('cut', 0)} cut by the border, "
        f"{t.get('touching', 0)} partly covered; {t.get('jpeg', 0)} frames JPEG"
    )
    return 0
