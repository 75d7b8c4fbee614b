"""The ``scallop`` command.

Examples::

    scallop run                         # the whole line on the built-in simulator
    scallop sim preview --out preview/  # a few simulated frames with their ground truth
    scallop detect --json photo.jpg     # find scallops and uros in images
    scallop calibrate intrinsics --board chessboard:9x6:25 photos/
    scallop bench vision --json         # pipeline speed on this machine

Each subcommand lives in ``scallop/app/commands/<name>.py`` and exposes
``register(subparsers)``; heavy imports happen inside the command, so ``--help`` is fast.
Set SCALLOP_DEBUG=1 to see tracebacks for errors that are reported as one line.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

# Order is the order shown in --help.
COMMANDS = ("run", "sim", "detect", "calibrate", "capture", "replay", "robot", "bench", "train", "report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scallop",
        description="Vision controller for a scallop uro-removal line.",
        epilog=(
            "examples:\n"
            "  scallop run                         run the line on the built-in simulator\n"
            "  scallop sim dataset --n 200 --out data/sim   write a labelled training set\n"
            "  scallop detect --json img.jpg       detections as JSON lines\n"
            "\nrun 'scallop COMMAND --help' for each command's options and an example."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"scallop.app.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"scallop.app.commands.{name}":
                continue  # command not built yet
            raise
        mod.register(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input or a missing device: one line, no traceback. Every
    error of the product derives from :class:`scallop.errors.ScallopError`; a missing or
    unreadable file the user named is the operating system's own error."""
    from scallop.errors import ScallopError

    return (ScallopError, FileNotFoundError, PermissionError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except _user_errors() as e:
        if os.environ.get("SCALLOP_DEBUG"):
            traceback.print_exc()
        print(f"scallop {args.command}: error: {e}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
