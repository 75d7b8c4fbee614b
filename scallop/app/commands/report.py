"""``scallop report``: a production day's summary from the record, and its scallops as CSV."""

from __future__ import annotations

import argparse
import json
import sys

DESCRIPTION = """\
Summarise one production day from the line's record (SQLite): scallops seen, picked, uros
removed, misses, adductor hits, skips by reason, per arm, alarms. With --csv, also write that
day's scallops, one row each, for a spreadsheet.

The record is $SCALLOP_RECORD_DIR/record.sqlite (default: scallop-record/record.sqlite in the
current folder) unless --db names one. Days are in local time.

examples:
  scallop report                                   today so far
  scallop report --shift yesterday --csv yesterday.csv
  scallop report --db line1/record.sqlite --shift 2024-05-01 --day-start 06:00 --json
"""


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="shift summary and CSV export of the production record",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--db", metavar="FILE", help="the production record (SQLite)")
    p.add_argument("--shift", default="today", metavar="DAY", help="today (default), yesterday, or a date YYYY-MM-DD")
    p.add_argument(
        "--day-start",
        default="00:00",
        metavar="HH:MM",
        help="when a production day begins (default 00:00); e.g. 06:00 for a day shift at 6",
    )
    p.add_argument("--csv", metavar="OUT", help="write the day's scallops as CSV to OUT ('-' for stdout)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from scallop.app.record import Record, default_db_path, shift_range

    db = args.db or default_db_path()
    # The CSV may own stdout; the summary then goes to stderr so the CSV stays clean.
    out = sys.stderr if args.csv == "-" else sys.stdout
    start, end, label = shift_range(args.shift, args.day_start)
    with Record(db) as rec:
        summary = rec.summary(start, end, label)
        n = rec.export_csv(args.csv, start, end) if args.csv else None
    if args.json:
        print(json.dumps(summary.to_dict()), file=out)
    else:
        print(summary.format(), file=out)
    if n is not None and args.csv != "-":
        print(f"wrote {n} scallops to {args.csv}", file=out)
    return 0
