"""``scallop sim commission``: what commissioning the simulated line needs, as files."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Write what each 'scallop calibrate' step and a camera dry run need for the simulated line, as
an engineer would collect them on a real one: board photos for the intrinsics, the board flat
on the stopped belt, a recording of the board riding the belt (frames with their counts), each
arm's touches of board corners, a later photo for the drift check, a recording of the line's
camera, and a line configuration. DIR/README.md lists the commands to run, in order
(docs/calibration.md, "Commissioning rehearsal").

With --fluorescence the simulated line has a second, fluorescence camera (the second-camera
example of docs/fluorescence.md): that camera's board photos and five pairs of photos of the
board seen by both cameras are added, with the two steps that calibrate it, and the dry run's
recording and line.toml carry the channel (the replay pairs and registers it).

example:
  scallop sim commission --out rehearsal/ && cat rehearsal/README.md
"""


# The second camera of docs/fluorescence.md's example: 1280x960 at 0.6 mm/px (the colour camera's
# 0.5), its axis 12 mm downstream and 30 mm aside of the colour camera's, tilted 6 degrees.
SECOND_CAMERA = dict(
    setup="second_camera",
    exposure_ratio=3.0,
    noise_sigma=5.0,
    width=1280,
    height=960,
    mm_per_px=0.6,
    center_x_mm=12.0,
    center_y_mm=-30.0,
    tilt_deg=6.0,
)


def register(sub) -> None:
    p = sub.add_parser(
        "commission",
        help="board photos, counts and a camera recording for a hardware-free commissioning rehearsal",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write into")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--arms", type=int, default=1, help="arms along the belt (default 1)")
    p.add_argument("--dryrun-s", type=float, default=30.0, help="seconds of the line's camera recorded (default 30)")
    p.add_argument(
        "--fluorescence",
        action="store_true",
        help="a second, fluorescence camera too: its photos and the steps that calibrate it",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from scallop.errors import check_seed

    check_seed("--seed", args.seed)  # numpy's seeding refuses a negative one
    from pathlib import Path

    from scallop.app.backends import default_sim_arms
    from scallop.app.outputs import check_output_dir
    from scallop.errors import DataError, check_number
    from scallop.sim.commission import write_commissioning
    from scallop.sim.config import FluorescenceConfig, SimConfig

    check_number("--arms", args.arms, 1, 4, integer=True)
    check_number("--dryrun-s", args.dryrun_s, 5, 600)
    out = Path(args.out)
    # A rehearsal is written whole into an empty folder: rewritten over an older one it would mix
    # two seeds' photos with the older line.json, README and recordings without a word.
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        why = "it is a file" if not out.is_dir() else "the folder is not empty"
        raise DataError(f"{out}: cannot write the rehearsal there: {why}; give a new or empty folder")
    check_output_dir(out, "the rehearsal")
    config = SimConfig()
    if args.fluorescence:
        config = SimConfig(fluorescence=FluorescenceConfig(**SECOND_CAMERA))
    cmds = write_commissioning(args.out, config, default_sim_arms(args.arms), args.seed, args.dryrun_s)
    print(f"wrote {args.out}: {len(cmds)} commands to run are in {args.out}/README.md")
    return 0
