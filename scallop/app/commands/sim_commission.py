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

example:
  scallop sim commission --out rehearsal/ && cat rehearsal/README.md
"""


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
    p.set_defaults(func=run)


def run(args) -> int:
    from scallop.errors import check_seed

    check_seed("--seed", args.seed)  # numpy's seeding refuses a negative one
    from scallop.app.backends import default_sim_arms
    from scallop.errors import ConfigError
    from scallop.sim.commission import write_commissioning
    from scallop.sim.config import SimConfig

    if not (1 <= args.arms <= 4) or not (5 <= args.dryrun_s <= 600):
        raise ConfigError("--arms is allowed 1..4 and --dryrun-s 5..600")
    cmds = write_commissioning(args.out, SimConfig(), default_sim_arms(args.arms), args.seed, args.dryrun_s)
    print(f"wrote {args.out}: {len(cmds)} commands to run are in {args.out}/README.md")
    return 0
