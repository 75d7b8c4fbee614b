"""``scallop sim preview``: a few simulated frames with their ground truth drawn over them."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

EXAMPLE = "  scallop sim preview --out preview/ --n 6 --seed 2\n  scallop sim preview --random --n 8"


def register(sub) -> None:
    p = sub.add_parser(
        "preview",
        help="write simulated frames with their ground truth drawn over them",
        description=textwrap.fill(
            "Run the simulated line's camera for K frames (or, with --random, draw K data-set frames "
            "across the appearance envelope) and write each frame and an overlay of its ground truth: "
            "part outlines (mantle orange, gonad magenta, adductor cyan, uro red, gill green), "
            "scallop ids, uro centroids (yellow cross), CUT for scallops cut by the border and UD for "
            "upside-down ones.",
            88,
        )
        + "\n\nexamples:\n"
        + EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="preview", help="folder to write (default: preview)")
    p.add_argument("--n", type=int, default=4, help="number of frames (default 4)")
    p.add_argument("--seed", type=int, default=0, help="world / data-set seed (default 0)")
    p.add_argument("--random", action="store_true", help="randomised data-set frames instead of the line")
    p.set_defaults(func=run)


def run(args) -> int:
    from scallop.errors import check_seed

    check_seed("--seed", args.seed)  # numpy's seeding refuses a negative one
    import cv2

    from scallop.app.config import ConfigError
    from scallop.sim.scene import draw_truth

    if not (1 <= args.n <= 1000):
        raise ConfigError(f"--n {args.n} is out of range: allowed 1..1000")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frames = _random_frames(args) if args.random else _line_frames(args)
    for i, (image, truth, label) in enumerate(frames):
        cv2.imwrite(str(out / f"frame_{i:03d}.png"), image)
        cv2.imwrite(str(out / f"truth_{i:03d}.png"), draw_truth(image, truth))
        n_uro = sum(s.uro_present for s in truth.scallops)
        print(
            f"{out / f'truth_{i:03d}.png'}: {label}, {len(truth.scallops)} scallops, {n_uro} uros visible, "
            f"{truth.mm_per_px:.3f} mm/px"
        )
    return 0


def _line_frames(args):
    from scallop.sim.camera import SimCamera
    from scallop.sim.world import SimWorld

    world = SimWorld(seed=args.seed)
    with SimCamera(world) as cam:
        for _ in range(args.n):
            f = cam.read()
            yield f.image, f.extra["truth"], f"t={f.timestamp:.3f} s encoder={f.encoder}"


def _random_frames(args):
    from scallop.sim.dataset import random_sample
    from scallop.sim.scene import jpeg_roundtrip

    for i in range(args.n):
        s = random_sample(i, args.seed)
        w, h = s.camera.image_size
        if s.jpeg_quality < 100:  # show the frame as the data set stores it
            yield jpeg_roundtrip(s.image, s.jpeg_quality), s.truth, f"{w}x{h} JPEG q{s.jpeg_quality}"
        else:
            yield s.image, s.truth, f"{w}x{h}"
