"""``scallop record``: check the production record, and add back rows a failing disk refused."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

DESCRIPTION = """\
check   verify the record's integrity and report crashed runs (the program killed or the power
        cut: nothing closed the run), picks whose outcome is unknown (sent to an arm, then the
        run crashed before its result) and rows kept in spill files beside it.
        Exit code: 0 nothing to report, 1 findings, 3 a damaged or unreadable record.
import  add the rows of a spill file (RECORD.unwritten-runN.jsonl, written when the disk
        refused them as the line stopped) to the record; importing twice adds nothing twice.

The record is $SCALLOP_RECORD_DIR/record.sqlite (default: scallop-record/record.sqlite in the
current folder) unless --db names one.

examples:
  scallop record check
  scallop record check --db line1/record.sqlite --json
  scallop record import scallop-record/record.sqlite.unwritten-run12.jsonl
"""


def register(sub) -> None:
    p = sub.add_parser(
        "record",
        help="check the production record; import rows a full disk refused",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rs = p.add_subparsers(dest="record", metavar="VERB")
    rs.required = True
    c = rs.add_parser("check", help="integrity, crashed runs, picks of unknown outcome, spilled rows")
    c.add_argument("--db", metavar="FILE", help="the production record (SQLite)")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(func=run_check)
    i = rs.add_parser("import", help="add the rows of a spill file to the record")
    i.add_argument("spill", metavar="SPILL_FILE")
    i.add_argument("--db", metavar="FILE", help="the record to add them to (default: the one the file sits beside)")
    i.set_defaults(func=run_import)


def run_check(args) -> int:
    from scallop.app.record import RecordError, default_db_path
    from scallop.app.record.check import check_record

    path = args.db or default_db_path()
    try:
        rep = check_record(path)
    except RecordError as e:
        if not args.json:
            raise
        # A program reading --json gets its object on a damaged record too (an outside try got
        # nothing on stdout), with the same exit code and the words on stderr.
        print(json.dumps({"path": str(path), "error": str(e), "findings": True}))
        raise
    print(json.dumps(rep.to_dict()) if args.json else rep.format())
    return 1 if rep.findings else 0


def run_import(args) -> int:
    from scallop.app.record import RecordError, open_db
    from scallop.app.record.writer import import_spill, spill_tag

    spill = Path(args.spill)
    if not spill.is_file():
        raise RecordError(f"{spill}: no such spill file")
    name = spill.name
    if args.db:
        db = Path(args.db)
    elif ".unwritten-run" in name:
        db = spill.with_name(name[: name.index(".unwritten-run")])
    else:
        raise RecordError(f"{spill}: not named like a spill file (RECORD.unwritten-runN.jsonl): pass --db")
    m = re.search(r"\.unwritten-run\d+-([0-9a-f]{8})-pid\d+\.jsonl$", name)
    if m and m.group(1) != spill_tag(db):
        # Kept away from its record, the file's name carries that record's mark (an outside try
        # imported another record's spill into one that also had a run 1).
        raise RecordError(
            f"{spill}: this spill belongs to another record (its mark {m.group(1)}, {db}'s is {spill_tag(db)}): "
            "pass --db with the record it was written for"
        )
    try:
        lines = spill.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise RecordError(f"{spill}: not a text file, so not a spill file") from None
    con = open_db(db, create=True)
    try:
        n = import_spill(con, lines, str(spill))
    finally:
        con.close()
    done = spill.with_name(name + ".imported")
    spill.rename(done)  # `record check` stops listing it; kept, not deleted
    print(
        f"added to {db}: {n['scallops']} scallops, {n['alarms']} alarm rows, {n['events']} events"
        + (f" ({n['duplicates']} scallops were already there)" if n["duplicates"] else "")
        + f"; the file is now {done.name}"
    )
    return 0
