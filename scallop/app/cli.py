"""The ``scallop`` command.

Examples::

    scallop run                         # the whole line on the built-in simulator
    scallop sim preview --out preview/  # a few simulated frames with their ground truth
    scallop detect --json photo.jpg     # find scallops and uros in images
    scallop calibrate intrinsics --board chessboard:9x6:25 photos/
    scallop bench vision --json         # pipeline speed on this machine

Each subcommand lives in ``scallop/app/commands/<name>.py`` and exposes
``register(subparsers)``; heavy imports happen inside the command, so ``--help`` is fast.
Errors are one line on stderr, never a traceback (``--debug`` or SCALLOP_DEBUG=1 adds it), and
the exit code tells the kind (``scallop.errors``): 2 a bad option, value or configuration key,
3 a file or data that cannot be used, 4 a device (camera, encoder, arm) missing or failing,
5 not allowed in the line's present state, 1 anything else (a fault of the program itself).
``scallop`` alone prints the commands (as ``--help`` does) and exits 0; ``scallop --version``
prints the installed package's version.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import signal
import sys
import threading
import traceback

from scallop.app.version import program_version

# Order is the order shown in --help.
COMMANDS = (
    "run",
    "sim",
    "detect",
    "calibrate",
    "capture",
    "replay",
    "robot",
    "bench",
    "train",
    "eval",
    "labels",
    "model",
    "report",
    "record",
    "backup",
    "restore",
    "service",
    "doctor",
    "users",
)


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
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback behind an error (also SCALLOP_DEBUG=1)"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {program_version()}")
    # No command: the list of commands, not an error.
    parser.set_defaults(func=lambda args: parser.print_help() or 0)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"scallop.app.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"scallop.app.commands.{name}":
                continue  # command not built yet
            raise
        mod.register(sub)
    return parser


def exit_code(e: BaseException) -> int:
    """The exit code of an error's kind: the product's errors carry theirs; a file the user
    named that is missing or unreadable is a data error; anything else is the program's own
    fault (1)."""
    from scallop.errors import DataError, ScallopError

    if isinstance(e, ScallopError):
        return e.exit_code
    if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return DataError.exit_code
    if isinstance(e, OSError) and e.errno in _DISK_ERRNOS:
        # The disk, not the program: full, read-only, failing (an outside try saw "internal
        # error" for a full disk under backup, report, users and sim run --report).
        return DataError.exit_code
    return 1


_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM, errno.EFBIG})


def main(argv: list[str] | None = None) -> int:
    """The ``scallop`` program (``argv`` None: the command line) or a call from Python."""
    rc = _main(argv)
    if argv is None and threading.current_thread() is threading.main_thread():
        # The program is about to exit, its work done and recorded: a late SIGTERM from an
        # impatient service manager must not turn that into a kill. The interpreter's shutdown
        # puts Python-level handlers back to the default (which dies with -15) but leaves an
        # ignore. Only for the program: a process calling main() keeps its own handlers (and
        # the children it spawns would inherit an ignore).
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
    return rc


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get("SCALLOP_DEBUG", "") not in ("", "0")
    try:
        rc = args.func(args)
        sys.stdout.flush()  # output still buffered for a pipe fails here, not at the interpreter's exit
    except KeyboardInterrupt:
        if argv is None and threading.current_thread() is threading.main_thread():
            # Stopping already: a second Ctrl-C (two quick presses) would cut this short with
            # a traceback. main() leaves it ignored to the end, as it does after any command.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError as e:
        if not _stdout_closed():
            return _failed(args, e, debug)  # a socket or a child's pipe: not the reader going away
        # The reader of our output went away (``scallop eval ... | head``): stop quietly, as
        # the tools beside us do on SIGPIPE, with the exit status a shell gives those (128 + 13).
        return 141
    except Exception as e:
        return _failed(args, e, debug)
    return int(rc or 0)


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone (poll says so: an error on the
    write end); if so it is pointed at the null device, so that the interpreter's own flush at
    exit does not fail again."""
    import select

    try:
        fd = sys.stdout.fileno()
        poll = select.poll()
        poll.register(fd, select.POLLOUT)
        if not any(ev & select.POLLERR for _, ev in poll.poll(0)):
            return False
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
    except (OSError, ValueError, AttributeError):  # no real stdout (replaced or closed): not ours to judge
        return False
    return True


def _failed(args, e: BaseException, debug: bool) -> int:
    from scallop.errors import one_line

    code = exit_code(e)
    if debug:
        traceback.print_exc()
    if code == 1:
        # Not the user's input: a fault of the program. One line still, with where to look.
        hint = "" if debug else " (run again with --debug to see where)"
        print(one_line(f"scallop {args.command}: internal error: {type(e).__name__}: {e}{hint}"), file=sys.stderr)
    else:
        print(one_line(f"scallop {args.command}: error: {_words(e)}"), file=sys.stderr)
    return code


def _words(e: BaseException) -> str:
    """An OSError as "FILE: what" (the disk's words after the file, as the shell's tools say it),
    not Python's "[Errno 28] No space left on device: 'FILE'"."""
    if isinstance(e, OSError) and e.strerror and e.filename is not None and type(e).__str__ is OSError.__str__:
        other = f" → {e.filename2}" if e.filename2 is not None else ""
        return f"{e.filename}{other}: {e.strerror}"
    return str(e)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
