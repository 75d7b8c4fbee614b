"""``scallop replay``: a recorded shift through the line, offline, as fast as the machine allows."""

from __future__ import annotations

import argparse
import json
import sys

DESCRIPTION = """\
Play a recording ('scallop capture') through the line on a virtual clock, as fast as the
machine allows, with simulated arms standing in for the configured ones (same poses,
workspaces and motion): vision, tracking, the belt check, planning and the picks happen as
they did on the shift, each frame at its recorded time with its recorded count. Prints the
line's summary as at the end of 'scallop run' and writes a record (--record) to compare with
the shift's. What the picks did to the uros is not known offline and shows as unknown. A line
that stops on a fault part-way (a stage crashed) ends the replay with exit 1, naming the fault.

examples:
  scallop replay shift-0612/ --config line.toml
  scallop replay shift-0612/ --config line.toml --record replay.sqlite --json
"""


def register(sub) -> None:
    p = sub.add_parser(
        "replay",
        help="play a recording through the line offline (virtual time, simulated arms)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("recording", metavar="DIR", help="a recording folder")
    p.add_argument("--config", required=True, help="the line configuration (calibration, arms, vision)")
    p.add_argument("--record", metavar="FILE", help="production record to write (default: a temporary one)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=run)


def replay(config, recording, record_path, grader=None, clock=None, on_line=None) -> dict:
    """Run ``recording`` through a line built from ``config``; returns the line's summary.
    ``on_line(line)`` is called once the line is open (the benchmark attaches its checks)."""
    from dataclasses import replace

    from scallop.app.backends import ReplayBackend
    from scallop.app.build import build_line
    from scallop.vision.recording import read_index

    _, frames = read_index(recording)
    cfg = replace(config, camera=replace(config.camera, source=str(recording)))
    backend = ReplayBackend(cfg, clock=clock, grader=grader)
    line = build_line(cfg, record_path, clock=backend.clock, backend=backend)
    try:
        line.open()
        if on_line is not None:
            on_line(line)
        line.start("replay")
        line.run_stepped(frames[-1].time_s - frames[0].time_s + 1.0)
    finally:
        line.close()
    summary = line.summary()
    # What the operator's screen would have shown, oldest first: the words of a lost channel or a
    # stalled camera are otherwise only in the record (a temporary one without --record).
    summary["alarms"] = [
        {"severity": a.severity, "source": a.source, "text": a.text} for a in reversed(line.alarms.visible())
    ]
    if line.control.crash:
        # A stage crashed and the line stopped there: the rest of the recording was never
        # decided, so the replay is not a result (the record keeps what it did up to then).
        raise ReplayError(f"the line stopped on a fault part-way: {line.control.crash}")
    return summary


class ReplayError(Exception):
    """The replay ended before its recording did (a stage of the line crashed)."""


def run(args) -> int:
    import tempfile
    from pathlib import Path

    from scallop.app.config import load_config

    cfg = load_config(args.config)
    with tempfile.TemporaryDirectory(prefix="scallop-replay-") as tmp:
        record = args.record or str(Path(tmp) / "record.sqlite")
        try:
            summary = replay(cfg, args.recording, record)
        except ReplayError as e:
            # The line's own fault (its alarm and log say which stage and why), not this program's.
            print(f"scallop replay: {e}" + (f"; record: {args.record}" if args.record else ""), file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(summary))
    else:
        shown = ", ".join(f"{k} {v}" for k, v in summary.items() if k not in ("truth", "alarms"))
        print(f"replayed {args.recording}: {shown}")
        for a in summary["alarms"]:
            print(f"  alarm ({a['severity']}): {a['text']}")
        if args.record:
            print(f"record: {args.record}")
    return 0
