"""``scallop report``: a production day's summary from the record, and its scallops as CSV."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

DESCRIPTION = """\
Summarise one production day, or one production lot, from the line's record (SQLite):
scallops seen, picked, uros removed, misses, adductor hits, skips by reason, where the scallops
left the belt (picked, passed, diverted to rework, NOT diverted), per arm, alarms. With --csv,
also write those scallops, one row each with their lot, for a spreadsheet.

The record is $SCALLOP_RECORD_DIR/record.sqlite (default: scallop-record/record.sqlite in the
current folder) unless --db names one. Days are in local time.

examples:
  scallop report                                   today so far
  scallop report --shift yesterday --csv yesterday.csv
  scallop report --db line1/record.sqlite --shift 2024-05-01 --day-start 06:00 --json
  scallop report --lot L-0412 --csv L-0412.csv     one lot, whenever it ran
  scallop report --shift yesterday --by-lot        yesterday, one summary per lot
"""


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="shift summary and CSV export of the production record",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--db", metavar="FILE", help="the production record (SQLite)")
    p.add_argument(
        "--shift",
        default=None,
        metavar="DAY",
        help="today (the default without --lot), yesterday, or a date YYYY-MM-DD; with --lot: all time unless given",
    )
    p.add_argument("--lot", metavar="LOT", help="only the rows of this production lot (as set on the screen)")
    p.add_argument("--by-lot", action="store_true", help="one summary per lot of the day (and per lot in the CSV)")
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
    whole_lot = args.shift is None and args.lot is not None
    if not whole_lot:
        start, end, label = shift_range(args.shift or "today", args.day_start)  # a bad day is a usage error first
    try:
        with Record(db) as rec:
            if whole_lot:
                start, end = rec.span(args.lot)  # the whole lot, whenever it ran
                label = f"lot {args.lot}"
            # Per lot; a day with no scallops still gets its one summary (its alarms, its checks).
            lots = [args.lot] if args.lot is not None or not args.by_lot else (rec.lots(start, end) or [None])
            summaries = [rec.summary(start, end, label, lot) for lot in lots]
            n = rec.export_csv(args.csv, start, end, args.lot) if args.csv else None
    except sqlite3.DatabaseError as e:
        from scallop.app.record import RecordError
        from scallop.app.record.check import damaged_message
        from scallop.app.record.schema import damage_words

        if damage_words(e) is None:
            raise

        # Damage met mid-read was "internal error", exit 1 (an outside try).
        raise RecordError(damaged_message(Path(db), str(e))) from None
    if args.json:
        body = [s.to_dict() for s in summaries] if args.by_lot else summaries[0].to_dict()
        print(json.dumps(body), file=out)
    else:
        print("\n\n".join(s.format() for s in summaries) if summaries else f"shift {label}: no scallops", file=out)
    if n is not None and args.csv != "-":
        print(f"wrote {n} scallops to {args.csv}", file=out)
    return 0
