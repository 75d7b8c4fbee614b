"""The program when its reader goes away (``scallop ... | head``): it stops quietly with the
exit status a shell gives SIGPIPE, and a broken pipe that is not standard output's is still an
error with its one line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from scallop.app import cli


def _scallop() -> list[str]:
    exe = shutil.which("scallop")
    return [exe] if exe else [sys.executable, "-m", "scallop.app.cli"]


def test_a_reader_that_goes_away_stops_the_program_quietly():
    # The read end is closed before the program writes: its first write meets no reader.
    p = subprocess.Popen([*_scallop(), "sim", "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    try:
        err = p.stderr.read().decode()
        rc = p.wait(timeout=60)
    finally:
        p.stderr.close()
    assert rc == 141 and err == ""


def test_a_broken_pipe_elsewhere_is_still_an_error(monkeypatch, capsys):
    def fails(args):
        raise BrokenPipeError(32, "Broken pipe")  # a socket's peer gone, say: stdout is fine

    real = cli.build_parser

    def parser():
        p = real()
        parse = p.parse_args

        def parse_args(argv=None):
            args = parse(argv)
            args.func = fails
            return args

        p.parse_args = parse_args
        return p

    monkeypatch.setattr(cli, "build_parser", parser)
    r, w = os.pipe()  # a real stdout whose reader is still there
    try:
        with os.fdopen(w, "w") as out:
            monkeypatch.setattr(sys, "stdout", out)
            code = cli.main(["sim", "list"])
    finally:
        os.close(r)
    assert code == 1
    assert "internal error: BrokenPipeError" in capsys.readouterr().err


def test_output_to_a_reader_that_stays_is_unchanged(capsys):
    assert cli.main(["sim", "list"]) == 0 and "nominal" in capsys.readouterr().out
