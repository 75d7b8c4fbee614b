"""The program when its reader goes away (``scallop ... | head``): it stops quietly with the
exit status a shell gives SIGPIPE, and a broken pipe that is not standard output's is still an
error with its one line."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys

import pytest

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


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EIO, errno.EDQUOT])
def test_a_disk_that_refuses_is_the_users_error_not_the_programs(capsys, code):
    """A full or read-only disk under any command was "internal error", exit 1 (an outside try:
    report --csv, users add, sim run --report); it is the plant's disk: exit 3, in its words."""
    from types import SimpleNamespace

    e = OSError(code, os.strerror(code), "/media/usb/x.csv")
    assert cli.exit_code(e) == 3
    assert cli._failed(SimpleNamespace(command="report"), e, debug=False) == 3
    err = capsys.readouterr().err
    assert err.startswith("scallop report: error: ") and os.strerror(code) in err and "internal" not in err
    assert cli.exit_code(OSError(errno.EBADF, "Bad file descriptor")) == 1  # that one is the program's


def test_a_full_disk_under_report_csv_names_the_file_and_leaves_no_half_csv(tmp_path, monkeypatch, capsys):
    """A write() on a full disk names no file ("[Errno 28] No space left on device", an outside
    try could not tell which); the message says which, and the CSV is not left half written."""
    from scallop.app.record import RecordWriter
    from scallop.app.record.reader import Record

    db = tmp_path / "record.sqlite"
    RecordWriter(db).close()

    def full(self, f, *a):
        f.write("time,track_id\n")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Record, "_write_csv", full)
    out = tmp_path / "day.csv"
    assert cli.main(["report", "--db", str(db), "--csv", str(out)]) == 3
    assert capsys.readouterr().err.strip() == f"scallop report: error: {out}: No space left on device"
    assert sorted(p.name for p in tmp_path.iterdir() if "csv" in p.name) == []


def test_naming_file_names_only_errors_that_name_nothing():
    from scallop.errors import naming_file

    with pytest.raises(OSError) as ei, naming_file("/x/users.json"):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert (ei.value.errno, ei.value.filename) == (errno.ENOSPC, "/x/users.json")
    with pytest.raises(FileNotFoundError) as ei, naming_file("/x/users.json"):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/y/other")
    assert ei.value.filename == "/y/other"  # its own file kept
    with pytest.raises(ValueError), naming_file("/x"):
        raise ValueError("not a disk error")
    assert cli._words(OSError(errno.EROFS, "Read-only file system", "/x/a.csv")) == "/x/a.csv: Read-only file system"
