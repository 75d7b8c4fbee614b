"""Checking a record: is the file sound, which runs crashed, which picks have no known outcome,
which rows are waiting in spill files (``scallop record check``)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from scallop.app.record.schema import JOURNAL_SUFFIXES, RecordError, damage_words, open_db
from scallop.app.record.writer import run_is_live, spill_folders, spill_tag


@dataclass
class RecordCheck:
    path: str
    schema_version: int
    integrity: str  # "ok", or what SQLite's integrity check found
    runs: int = 0
    running: list[int] = field(default_factory=list)  # runs whose program is alive now
    crashed: list[dict] = field(default_factory=list)  # {"run", "started", "ended", "marked"}
    unknown_picks: list[dict] = field(default_factory=list)  # {"run", "track_id", "arm", "time"}
    spill_files: list[dict] = field(default_factory=list)  # {"file", "rows"}
    set_aside: list[str] = field(default_factory=list)  # damaged records the line moved beside it

    @property
    def findings(self) -> bool:
        """Something an engineer should look at (a crash, a pick of unknown outcome, rows not
        in the record, a damaged record the line set aside)."""
        return bool(self.crashed or self.unknown_picks or self.spill_files or self.set_aside)

    def to_dict(self) -> dict:
        return asdict(self) | {"findings": self.findings}

    def format(self) -> str:
        def t(v: float | None) -> str:
            return "-" if v is None else datetime.fromtimestamp(v).strftime("%Y-%m-%d %H:%M:%S")

        lines = [f"record {self.path}: schema version {self.schema_version}, integrity {self.integrity}"]
        lines.append(
            f"  runs {self.runs}: {len(self.crashed)} crashed"
            + (f", running now: {', '.join(map(str, self.running))}" if self.running else "")
        )
        for c in self.crashed:
            note = "" if c["marked"] else " (will be marked at the next start)"
            lines.append(f"    run {c['run']} started {t(c['started'])}, last row {t(c['ended'])}{note}")
        lines.append(f"  picks with outcome unknown (sent, then the run crashed): {len(self.unknown_picks)}")
        for p in self.unknown_picks:
            lines.append(f"    run {p['run']} scallop {p['track_id']} on arm {p['arm']} at {t(p['time'])}")
        for f in self.spill_files:
            lines.append(
                f"  {f['rows']} row(s) not in the record, kept in {f['file']}: "
                f"add them with 'scallop record import {f['file']}'"
            )
        for f in self.set_aside:
            lines.append(
                f"  a damaged record set aside beside it by the line: {f} (restore the last backup for its rows; "
                "delete it once it is no longer wanted)"
            )
        lines.append("  findings: " + ("yes" if self.findings else "none"))
        return "\n".join(lines)


def check_record(path: str | Path) -> RecordCheck:
    """Read-only: nothing in the file is changed (crashed runs are marked by the next start)."""
    p = Path(path)
    con = open_db(p, create=False)
    try:
        version = con.execute("PRAGMA user_version").fetchone()[0]
        problems = [r[0] for r in con.execute("PRAGMA integrity_check").fetchall()]
        integrity = "ok" if problems == ["ok"] else _damage_summary(problems)
        out = RecordCheck(str(p), version, integrity)
        if integrity != "ok":
            # (An outside try got SQLite's hundred lines of page numbers, on one line.)
            raise RecordError(damaged_message(p, integrity))
        out.runs = con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        has_v2 = version >= 2
        cols = "id, started, ended, crashed" if has_v2 else "id, started, ended, 0"
        for rid, started, ended, crashed in con.execute(f"SELECT {cols} FROM runs ORDER BY id"):
            if ended is None and run_is_live(p, rid):
                out.running.append(rid)
            elif crashed or ended is None:
                out.crashed.append({"run": rid, "started": started, "ended": ended, "marked": bool(crashed)})
        if has_v2:
            # 'sending' in a run that is not running now was never closed by its scallop's row:
            # a crash, or a run that ended without it (an outside try found one nobody reported).
            for rid, tid, arm, tm, state in con.execute(
                "SELECT run_id, track_id, arm, time, state FROM picks WHERE state IN ('unknown', 'sending') ORDER BY id"
            ):
                if state == "unknown" or rid not in out.running:
                    out.unknown_picks.append({"run": rid, "track_id": tid, "arm": arm, "time": tm})
    except sqlite3.DatabaseError as e:
        if damage_words(e, first_page_too=False) is not None:
            raise RecordError(damaged_message(p, str(e))) from None
        raise RecordError(f"{p}: cannot be read as a production record ({e})") from None
    finally:
        con.close()
    # Beside the record, and where the writer puts them when that folder refuses them too (their
    # names carry this record's tag: another record's are not listed).
    tag = spill_tag(p)
    found = sorted(p.parent.glob(f"{p.name}.unwritten-run*.jsonl"))
    for d in spill_folders():
        found += sorted(d.glob(f"{p.name}.unwritten-run*-{tag}-pid*.jsonl"))
    for f in found:
        with f.open(encoding="utf-8", errors="replace") as fh:
            # Rows, as the line counts them: not the mark of the run's end that a spill may carry.
            rows = sum(1 for line in fh if line.strip() and _spilled_table(line) != "run_end")
            out.spill_files.append({"file": str(f), "rows": rows})
    # (After a set-aside the new record is sound: an outside try saw "findings: none" the next
    # morning, the damaged file and its alarm told nowhere else.)
    out.set_aside = sorted(
        str(f) for f in p.parent.glob(f"{p.name}.damaged-*") if not f.name.endswith(JOURNAL_SUFFIXES)
    )
    return out


def damaged_message(p: Path, why: str) -> str:
    return (
        f"{p}: the record is damaged ({why}); restore the last backup ('scallop restore') or move the file "
        "aside for the line to start a new one (a running line does so by itself, under another name, when its "
        "writes meet the damage)"
    )


def _damage_summary(problems: list[str]) -> str:
    """SQLite's integrity report in a few words: its first finding and how many there are."""
    lines = [ln.strip() for row in problems for ln in str(row).splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("***")]
    if not lines:
        return "damaged"
    more = f", and {len(lines) - 1} more finding(s)" if len(lines) > 1 else ""
    return f"{lines[0]}{more}"


def _spilled_table(line: str) -> str | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None  # a line cut short: a row all the same, which the import names
    return row.get("table") if isinstance(row, dict) else None
