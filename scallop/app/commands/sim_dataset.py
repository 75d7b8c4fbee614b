"""``scallop sim dataset``: write a labelled, randomised training set from the simulator."""

from __future__ import annotations

import argparse
import os
import textwrap

from scallop.errors import SEED_MAX

EXAMPLE = "  scallop sim dataset --n 200 --out data/sim --seed 1"
# Frames are named with six digits (images/000123.png), so a set holds at most a million.
MAX_FRAMES = 1_000_000


def max_workers() -> int:
    """The most --workers this machine takes. Frames are CPU-bound and each worker is a spawned
    interpreter with numpy and OpenCV loaded (about 150 MB): past the cores more processes only
    add memory and start-up time, and thousands of them never all start (--workers 10000 hung).
    Four per core leaves room to oversubscribe on purpose (a container that reports fewer
    cores than it gets) and refuses the typo."""
    return 4 * (os.cpu_count() or 1)


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
    p.add_argument("--n", type=int, required=True, help=f"number of frames, 1..{MAX_FRAMES}")
    p.add_argument("--out", required=True, help="folder to write (created)")
    p.add_argument(
        "--seed", type=int, default=0, help=f"0..{SEED_MAX}; frame i of a seed is always the same (default 0)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help=f"processes, 1..{max_workers()} (4 per CPU of this machine; 0, the default: the CPU count, at most 4)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a simulated data set already in --out (a folder holding anything else is never emptied; docs/dataset-format.md)",
    )
    p.add_argument(
        "--fluorescence",
        action="store_true",
        help="also write each frame's fluorescence channel, images/<name>.uv.png (format version 2; docs/fluorescence.md)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from scallop.errors import check_number, check_seed
    from scallop.sim.dataset import DatasetSettings, write_dataset

    check_number("--n", args.n, 1, MAX_FRAMES, integer=True)
    check_seed("--seed", args.seed)
    if args.workers != 0:  # 0: the default below
        check_number("--workers", args.workers, 1, max_workers(), integer=True, note=" (0: the default)")
    workers = args.workers or min(4, os.cpu_count() or 1)

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
