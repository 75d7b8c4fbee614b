"""The record stays within bounds: yearly archives, old archives and snapshots deleted, a low
disk alarmed (scallop/app/record/retention.py)."""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime

from scallop.app.cli import main
from scallop.app.record import Record, RecordWriter, ScallopRecord
from scallop.app.record.retention import RetentionPolicy, apply_retention

DAY = 86400.0
NOW = datetime(2026, 6, 1, tzinfo=UTC).timestamp()


def _row(track: int, t: float) -> ScallopRecord:
    return ScallopRecord(track_id=track, time=t, encoder_mm=1.0, result="picked", arm="arm1", uro_found=True)


def _count(db, table="scallops") -> int:
    con = sqlite3.connect(db)
    try:
        return con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    finally:
        con.close()


def _write(db, rows: list[tuple[int, float]], snaps=None):
    with RecordWriter(db, snapshot_dir=snaps) as w:
        for track, t in rows:
            w.scallop(_row(track, t))
            w.event("probe", "test")


def test_old_rows_move_to_yearly_archives_that_the_report_reads(tmp_path, capsys):
    db = tmp_path / "record.sqlite"
    ages = {1: 900, 2: 800, 3: 400, 4: 100, 5: 10, 6: 1}  # days before NOW
    _write(db, [(k, NOW - d * DAY) for k, d in ages.items()])
    before = _count(db)
    rep = apply_retention(db, RetentionPolicy(keep_days=365), now=NOW)
    archive = tmp_path / "archive"
    # 900 and 800 days ago fall in 2023 and 2024; 400 days ago in 2025; the rest stay live.
    assert sorted(p.name for p in archive.glob("*.sqlite")) == [
        "record-2023.sqlite",
        "record-2024.sqlite",
        "record-2025.sqlite",
    ]
    assert rep.archived["scallops"] == 3 and _count(db) == before - 3 == 3
    assert sum(_count(p) for p in archive.glob("*.sqlite")) == 3
    with Record(archive / "record-2024.sqlite") as r:
        assert [row["track_id"] for row in r.scallops()] == [2]
    day = datetime.fromtimestamp(NOW - 800 * DAY).strftime("%Y-%m-%d")  # the report's days are local
    assert main(["report", "--db", str(archive / "record-2024.sqlite"), "--shift", day, "--json"]) == 0
    assert '"seen": 1' in capsys.readouterr().out
    assert apply_retention(db, RetentionPolicy(keep_days=365), now=NOW).changed is False  # nothing moves twice

    # Archives whose year is over: deleted only when asked (archive_keep_days > 0).
    rep = apply_retention(db, RetentionPolicy(keep_days=365, archive_keep_days=600), now=NOW)
    assert [os.path.basename(p) for p in rep.archives_deleted] == ["record-2023.sqlite"]
    assert not (archive / "record-2023.sqlite").exists() and (archive / "record-2024.sqlite").exists()


def test_old_snapshots_go_and_the_live_rows_forget_them(tmp_path):
    db, snaps = tmp_path / "record.sqlite", tmp_path / "snaps"
    _write(db, [(1, NOW - DAY)], snaps=snaps)
    old, new = snaps / "old.jpg", snaps / "new.jpg"
    for p, age in ((old, 40), (new, 1)):
        p.write_bytes(b"\xff\xd8jpeg")
        os.utime(p, (NOW - age * DAY, NOW - age * DAY))
    con = sqlite3.connect(db)
    con.execute("UPDATE scallops SET snapshot='old.jpg'")
    con.commit()
    con.close()
    rep = apply_retention(db, RetentionPolicy(snapshot_keep_days=30), snapshot_dir=snaps, now=NOW)
    assert rep.snapshots_deleted == 1 and not old.exists() and new.exists()
    with Record(db) as r:
        assert r.scallops()[0]["snapshot"] is None


def test_the_writer_archives_at_start_and_alarms_a_low_disk(tmp_path):
    db = tmp_path / "record.sqlite"
    _write(db, [(1, NOW - 900 * DAY), (2, NOW - 1 * DAY)])
    seen = []
    w = RecordWriter(
        db,
        wall_clock=lambda: NOW,
        on_alarm=lambda key, severity, text, active: seen.append((key, severity, active, text)),
        retention=RetentionPolicy(keep_days=365, min_free_mb=1e9),  # more than any disk here
    )
    try:
        w.event("start", "test")
        assert w.flush()
    finally:
        w.close()
    assert _count(db) == 1 and (tmp_path / "archive" / "record-2023.sqlite").exists()
    low = [s for s in seen if s[0] == "record.disk_low"]
    assert low and low[0][1:3] == ("critical", True) and "MB free (limit 1e+09 MB)" in low[0][3]
    with Record(db) as r:
        assert any(e["kind"] == "retention" for e in r.events())
