"""Keeping the record within bounds: rows move to yearly archives, old files go, the disk is watched.

Traceability wants pick rows for years and far less of images. :func:`apply_retention`:

* moves rows older than ``keep_days`` (scallops, picks, alarms, events) from the live record to
  ``archive_dir/record-YYYY.sqlite`` by the year of their time — a record of the same schema,
  so ``scallop report --db archive/record-2025.sqlite`` reads it — in one transaction per year
  (a crash leaves a row in one place, never in none or both);
* deletes a yearly archive once its whole year is older than ``archive_keep_days`` (0: never);
* deletes snapshot frames older than ``snapshot_keep_days`` (and forgets them in the live rows).

:func:`free_mb` tells how much room is left where the record lives; the writer raises an alarm
below ``min_free_mb`` so that our own files never fill the disk unnoticed.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from scallop.app.record.schema import JOURNAL_SUFFIXES, open_db

DAY_S = 86400.0
TABLES = ("scallops", "picks", "alarms", "events")


@dataclass(frozen=True)
class RetentionPolicy:
    keep_days: float = 1095.0  # pick rows in the live record
    archive_dir: str = ""  # "" = "archive" beside the record
    archive_keep_days: float = 0.0  # 0 = archives are kept for ever
    snapshot_keep_days: float = 30.0
    min_free_mb: float = 1000.0


@dataclass
class RetentionReport:
    archived: dict[str, int] = field(default_factory=dict)  # table -> rows moved
    archives: list[str] = field(default_factory=list)  # archive files written to
    archives_deleted: list[str] = field(default_factory=list)
    snapshots_deleted: int = 0

    @property
    def changed(self) -> bool:
        return bool(sum(self.archived.values()) or self.archives_deleted or self.snapshots_deleted)


def archive_dir(db: Path, policy: RetentionPolicy) -> Path:
    return Path(policy.archive_dir) if policy.archive_dir else db.parent / "archive"


def _year_bounds(year: int) -> tuple[float, float]:
    start = datetime(year, 1, 1, tzinfo=UTC).timestamp()
    end = datetime(year + 1, 1, 1, tzinfo=UTC).timestamp()
    return start, end


def _columns(con: sqlite3.Connection, schema: str, table: str) -> list[str]:
    return [r[1] for r in con.execute(f"PRAGMA {schema}.table_info({table})")]


def archive_old_rows(db: Path, policy: RetentionPolicy, now: float, report: RetentionReport) -> None:
    cutoff = now - policy.keep_days * DAY_S
    con = sqlite3.connect(db, timeout=10.0)
    try:
        oldest = min(
            (
                v
                for t in TABLES
                for (v,) in con.execute(f"SELECT MIN(time) FROM {t} WHERE time < ?", (cutoff,))
                if v is not None
            ),
            default=None,
        )
        if oldest is None:
            return
        adir = archive_dir(db, policy)
        adir.mkdir(parents=True, exist_ok=True)
        first = datetime.fromtimestamp(oldest, UTC).year
        last = datetime.fromtimestamp(cutoff, UTC).year
        for year in range(first, last + 1):
            lo, hi = _year_bounds(year)
            hi = min(hi, cutoff)
            if lo >= hi:
                continue
            target = adir / f"record-{year}.sqlite"
            open_db(target, create=True).close()  # the archive gets the schema of this version
            con.execute("ATTACH DATABASE ? AS a", (str(target),))
            try:
                con.execute("BEGIN IMMEDIATE")
                run_cols = ", ".join(_columns(con, "main", "runs"))
                ids = "SELECT run_id FROM {t} WHERE time >= ? AND time < ?"
                run_ids = " UNION ".join(ids.format(t=t) for t in TABLES)
                con.execute(
                    f"INSERT OR IGNORE INTO a.runs ({run_cols}) SELECT {run_cols} FROM main.runs WHERE id IN ({run_ids})",
                    [v for _ in TABLES for v in (lo, hi)],
                )
                moved = {}
                for t in TABLES:
                    cols = ", ".join(c for c in _columns(con, "main", t) if c != "id")
                    cur = con.execute(
                        f"INSERT OR IGNORE INTO a.{t} ({cols}) SELECT {cols} FROM main.{t} WHERE time >= ? AND time < ?",
                        (lo, hi),
                    )
                    con.execute(f"DELETE FROM main.{t} WHERE time >= ? AND time < ?", (lo, hi))
                    moved[t] = cur.rowcount
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
            finally:
                con.execute("DETACH DATABASE a")
            if sum(moved.values()):
                report.archives.append(str(target))
                for t, n in moved.items():
                    report.archived[t] = report.archived.get(t, 0) + n
    finally:
        con.close()


def delete_old_archives(db: Path, policy: RetentionPolicy, now: float, report: RetentionReport) -> None:
    if policy.archive_keep_days <= 0:
        return
    adir = archive_dir(db, policy)
    for p in sorted(adir.glob("record-*.sqlite")):
        try:
            year = int(p.stem.split("-", 1)[1])
        except ValueError:
            continue
        if _year_bounds(year)[1] < now - policy.archive_keep_days * DAY_S:
            for side in ("", *JOURNAL_SUFFIXES):
                Path(str(p) + side).unlink(missing_ok=True)
            report.archives_deleted.append(str(p))


def delete_old_snapshots(
    db: Path, snapshot_dir: Path | None, policy: RetentionPolicy, now: float, report: RetentionReport
) -> list[str]:
    """Snapshot files older than the policy allows, deleted; returns their names."""
    if snapshot_dir is None or not snapshot_dir.is_dir():
        return []
    cutoff = now - policy.snapshot_keep_days * DAY_S
    gone = []
    for p in snapshot_dir.glob("*.jpg"):
        try:
            if p.stat().st_mtime < cutoff:
                p.unlink()
                gone.append(p.name)
        except OSError:
            continue
    if gone:
        con = sqlite3.connect(db, timeout=10.0)
        try:
            with con:
                con.executemany("UPDATE scallops SET snapshot=NULL WHERE snapshot=?", [(n,) for n in gone])
        finally:
            con.close()
    report.snapshots_deleted += len(gone)
    return gone


def apply_retention(
    db: str | Path, policy: RetentionPolicy, snapshot_dir: str | Path | None = None, now: float | None = None
) -> RetentionReport:
    db = Path(db)
    now = time.time() if now is None else now
    report = RetentionReport()
    archive_old_rows(db, policy, now, report)
    delete_old_archives(db, policy, now, report)
    delete_old_snapshots(db, Path(snapshot_dir) if snapshot_dir else None, policy, now, report)
    return report


def free_mb(path: str | Path) -> float:
    """Free space (MB) on the file system holding ``path`` (or its nearest existing parent)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free / 1e6
