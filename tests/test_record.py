"""The production record: writer thread, snapshots under a byte budget, summaries, CSV, `scallop report`."""

from __future__ import annotations

import csv
import errno
import io
import json
import sqlite3
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

import scallop.app.record as record_mod
from scallop.app.cli import main
from scallop.app.line_api import Alarm
from scallop.app.record import (
    Record,
    RecordError,
    RecordWriter,
    ScallopRecord,
    open_db,
    shift_range,
)
from scallop.errors import ConfigError

T0 = datetime(2024, 5, 1, 9, 0, 0).timestamp()  # local time: summaries are by local day


def rec(track: int, t: float = T0, **kw) -> ScallopRecord:
    base = dict(
        track_id=track,
        time=t,
        encoder_mm=1000.0 + track * 80,
        result="picked",
        arm="left",
        x_mm=120.0,
        y_mm=-15.5,
        diameter_mm=58.0,
        score=0.97,
        uro_found=True,
        uro_x_mm=131.0,
        uro_y_mm=-2.0,
        uro_score=0.91,
        grasp_x_mm=130.0,
        grasp_y_mm=-3.0,
        pull_angle_deg=75.0,
        uro_removed=True,
        adductor_hit=False,
    )
    base.update(kw)
    return ScallopRecord(**base)


class Alarms:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, bool]] = []
        self.lock = threading.Lock()

    def __call__(self, key, severity, text, active):
        with self.lock:
            self.calls.append((key, severity, text, active))

    def keys(self, active=True):
        return [c[0] for c in self.calls if c[3] == active]


@pytest.fixture
def db(tmp_path):
    return tmp_path / "rec" / "record.sqlite"


# ---------------------------------------------------------------------------- rows


def test_scallop_row_round_trips_every_field(db):
    r = rec(7, detail={"model": "uro-v3", "best_view_frame": 1234}, views=4)
    with RecordWriter(db) as w:
        assert w.scallop(r)
    with Record(db) as rd:
        rows = rd.scallops()
    assert len(rows) == 1
    row = rows[0]
    assert row["run_id"] == w.run_id and row["track_id"] == 7
    for k in (
        "time",
        "encoder_mm",
        "x_mm",
        "y_mm",
        "diameter_mm",
        "score",
        "uro_x_mm",
        "uro_y_mm",
        "uro_score",
        "grasp_x_mm",
        "grasp_y_mm",
        "pull_angle_deg",
        "arm",
        "result",
        "skip_reason",
        "views",
    ):
        assert row[k] == getattr(r, k), k
    assert (row["uro_found"], row["uro_removed"], row["adductor_hit"], row["doubtful"]) == (1, 1, 0, 0)
    assert row["snapshot"] is None
    assert json.loads(row["detail"]) == {"model": "uro-v3", "best_view_frame": 1234}


def test_database_is_in_wal_mode(db):
    RecordWriter(db).close()
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA user_version").fetchone()[0] == record_mod.SCHEMA_VERSION
    con.close()


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(result="skipped", arm=""), "skip_reason='': a skipped scallop needs a reason"),
        (dict(result="skipped", arm="", skip_reason="No Uro"), "skip_reason='No Uro'"),
        (dict(skip_reason="border"), "skip_reason='border' given for result='picked'"),
        (dict(arm=""), "arm='': a picked scallop names the arm"),
        (dict(result="done"), "result='done' is not allowed: choose one of picked, failed, skipped"),
        (dict(x_mm=float("nan")), "x_mm=nan: expected a finite number or None"),
        (dict(encoder_mm=None), "encoder_mm=None: a scallop row needs it"),
        (dict(track_id=True), "track_id=True: expected an integer"),
        (dict(views=0), "views=0 is out of range: allowed 1 or more"),
        (dict(detail={"f": object()}), "detail: not JSON-serialisable"),
    ],
)
def test_scallop_record_refuses_bad_values(kw, msg):
    with pytest.raises(RecordError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        rec(1, **kw)


def test_wants_snapshot_for_failed_or_doubtful_picks():
    assert not rec(1).wants_snapshot
    assert rec(1, result="failed").wants_snapshot
    assert rec(1, doubtful=True).wants_snapshot
    assert rec(1, uro_removed=False).wants_snapshot
    assert rec(1, adductor_hit=True).wants_snapshot
    assert not rec(1, uro_removed=None).wants_snapshot


def test_each_scallop_once_per_run(db):
    alarms = Alarms()
    with RecordWriter(db, on_alarm=alarms) as w:
        w.scallop(rec(1))
        w.scallop(rec(1, encoder_mm=5.0))
        w.scallop(rec(2))
        w.flush()
        assert w.stats()["duplicates"] == 1 and w.stats()["written"] == 2
    assert "record.duplicate" in alarms.keys()
    with Record(db) as rd:
        assert [r["track_id"] for r in rd.scallops()] == [1, 2]
    # A new run may reuse track ids.
    with RecordWriter(db) as w2:
        w2.scallop(rec(1))
    with Record(db) as rd:
        assert len(rd.scallops()) == 3


def test_many_threads_write_every_row_exactly_once(db):
    with RecordWriter(db, batch=64) as w:

        def produce(k):
            for i in range(400):
                assert w.scallop(rec(k * 1000 + i, t=T0 + i))

        threads = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    with Record(db) as rd:
        ids = [r["track_id"] for r in rd.scallops()]
    assert len(ids) == 1600 and len(set(ids)) == 1600
    assert w.stats()["written"] == 1600 and w.stats()["dropped"] == 0


def test_close_writes_everything_queued_and_ends_the_run(db):
    w = RecordWriter(db, wall_clock=lambda: 1234.5)
    for i in range(2000):
        w.scallop(rec(i))
    w.close()
    w.close()  # idempotent
    with pytest.raises(RecordError, match="closed"):
        w.scallop(rec(99999))
    with Record(db) as rd:
        assert len(rd.scallops()) == 2000
    con = sqlite3.connect(db)
    assert con.execute("SELECT started, ended FROM runs").fetchall() == [(1234.5, 1234.5)]
    con.close()


def test_full_queue_drops_counts_and_alarms_without_blocking(db, monkeypatch):
    gate, entered = threading.Event(), threading.Event()
    real = RecordWriter._write_batch

    def slow(self, con, items):
        entered.set()
        gate.wait(5)
        return real(self, con, items)

    monkeypatch.setattr(RecordWriter, "_write_batch", slow)
    alarms = Alarms()
    w = RecordWriter(db, queue_size=5, on_alarm=alarms)
    try:
        assert w.scallop(rec(0))
        assert entered.wait(5)  # the writer is stuck on its first batch
        accepted = [w.scallop(rec(i)) for i in range(1, 21)]
        assert accepted == [True] * 5 + [False] * 15
        assert w.stats()["dropped"] == 15 and w.stats()["queued"] == 5
        assert alarms.keys().count("record.queue_full") == 1
        # Alarms and operator actions have their own lane: a full scallop queue does not lose them.
        assert w.alarm(Alarm(1, 5.0, "critical", "camera", "camera stalled"))
        assert w.event("estop", "screen")
        gate.set()
        assert w.flush(5)
        assert alarms.keys(False) == ["record.queue_full"]  # cleared once the writer caught up
    finally:
        gate.set()
        w.close()
    with Record(db) as rd:
        assert [r["track_id"] for r in rd.scallops()] == [0, 1, 2, 3, 4, 5]
        assert [a["text"] for a in rd.alarms()] == ["camera stalled"]
        assert [e["kind"] for e in rd.events()] == ["estop"]


def test_database_errors_are_retried_and_alarmed(db, monkeypatch):
    monkeypatch.setattr(RecordWriter, "ALARM_QUIET_S", 0.0)  # cleared at the first good write
    fails = {"n": 2}
    real = RecordWriter._write_batch

    def flaky(self, con, items):
        if fails["n"] > 0:
            fails["n"] -= 1
            raise sqlite3.OperationalError("disk I/O error")
        return real(self, con, items)

    monkeypatch.setattr(RecordWriter, "_write_batch", flaky)
    alarms = Alarms()
    with RecordWriter(db, on_alarm=alarms, retry_s=0.01) as w:
        for i in range(10):
            w.scallop(rec(i))
        assert w.flush(5)
        assert w.stats()["db_errors"] == 2
    assert alarms.keys(True) == ["record.database"] and alarms.keys(False) == ["record.database"]
    assert "disk I/O error" in alarms.calls[0][2] and alarms.calls[0][1] == "critical"
    with Record(db) as rd:
        assert len(rd.scallops()) == 10


def test_close_does_not_hang_on_a_dead_database(db, monkeypatch):
    def dead(self, con, items):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(RecordWriter, "_write_batch", dead)
    alarms = Alarms()
    w = RecordWriter(db, on_alarm=alarms, retry_s=0.01)
    for i in range(5):
        w.scallop(rec(i))
    t0 = time.monotonic()
    w.close(timeout=10)
    assert time.monotonic() - t0 < 2.0
    assert not w._thread.is_alive()
    # Nothing is lost without a word: the rows the database refused are beside it, and said so.
    assert w.stats()["spilled"] == 5 and w.stats()["lost"] == 0
    assert w.spill_path == db.with_name(f"{db.name}.unwritten-run{w.run_id}.jsonl")
    lines = w.spill_path.read_text().splitlines()
    assert len(lines) == 6 and json.loads(lines[-1])["table"] == "run_end"  # the rows, then the run's end
    # Imported once the disk takes it again: the rows, and the run ended in order (it read
    # "crashed" for good in an outside try).
    monkeypatch.undo()
    from scallop.app.record.schema import open_db
    from scallop.app.record.writer import import_spill

    con = open_db(db, create=True)
    try:
        assert import_spill(con, lines, str(w.spill_path))["scallops"] == 5
        assert con.execute("SELECT ended IS NOT NULL, crashed FROM runs WHERE id=?", (w.run_id,)).fetchone() == (1, 0)
    finally:
        con.close()
    assert "5 row(s) could not be written" in w.problems()[0] and "scallop record import" in w.problems()[0]
    assert alarms.keys() == ["record.database"] and "disk is full" in alarms.calls[0][2]


# ---------------------------------------------------------------------------- alarms and events


def test_alarm_raise_ack_clear_is_one_row(db):
    t = {"now": 100.0}
    with RecordWriter(db, wall_clock=lambda: t["now"]) as w:
        a = Alarm(3, 99.0, "critical", "arm:left", "arm left disconnected")
        w.alarm(a)
        t["now"] = 110.0
        w.alarm(Alarm(3, 99.0, "critical", "arm:left", "arm left disconnected", acked=True, acked_by="maria"))
        t["now"] = 125.0
        w.alarm(
            Alarm(3, 99.0, "critical", "arm:left", "arm left disconnected", acked=True, acked_by="maria", active=False)
        )
        w.event("estop", "screen", {"why": "test"})
    with Record(db) as rd:
        rows = rd.alarms()
        events = rd.events()
    assert len(rows) == 1
    r = rows[0]
    assert (r["alarm_id"], r["time"], r["severity"], r["source"]) == (3, 99.0, "critical", "arm:left")
    assert (r["acked"], r["acked_by"], r["acked_time"], r["active"], r["cleared_time"]) == (1, "maria", 110.0, 0, 125.0)
    assert [(e["kind"], e["user"], json.loads(e["detail"])) for e in events] == [("estop", "screen", {"why": "test"})]


# ---------------------------------------------------------------------------- snapshots


def test_snapshots_stay_within_the_byte_budget_oldest_deleted_first(db, tmp_path):
    snaps = tmp_path / "snaps"
    jpeg = b"\xff\xd8" + b"x" * 998  # 1000 bytes
    with RecordWriter(db, snapshot_dir=snaps, snapshot_budget_bytes=3500, batch=1) as w:
        for i in range(10):
            w.scallop(rec(i, t=T0 + i, result="failed"), snapshot_jpeg=jpeg)
            w.flush()
        st = w.stats()
    files = sorted(p.name for p in snaps.iterdir())
    assert len(files) == 3 and st["snapshot_bytes"] == 3000 <= 3500
    assert st["snapshots_written"] == 10 and st["snapshots_deleted"] == 7
    assert [f.split("_t")[1].split("_")[0] for f in files] == ["7", "8", "9"]  # the newest kept
    with Record(db) as rd:
        rows = rd.scallops()
    kept = {r["track_id"]: r["snapshot"] for r in rows}
    assert all(kept[i] is None for i in range(7))
    assert sorted(kept[i] for i in (7, 8, 9)) == files
    # A new run counts what is already on disk against the same budget.
    with RecordWriter(db, snapshot_dir=snaps, snapshot_budget_bytes=3500, batch=1) as w2:
        assert w2.stats()["snapshot_bytes"] == 3000
        w2.scallop(rec(50, t=T0 + 50, result="failed"), snapshot_jpeg=jpeg)
        w2.flush()
        assert w2.stats()["snapshot_bytes"] == 3000 and w2.stats()["snapshots_deleted"] == 1
    assert len(list(snaps.iterdir())) == 3


def test_full_snapshot_disk_raises_an_alarm_and_keeps_recording(db, tmp_path, monkeypatch):
    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(record_mod, "write_snapshot_file", full)
    alarms = Alarms()
    snaps = tmp_path / "snaps"
    with RecordWriter(db, snapshot_dir=snaps, on_alarm=alarms) as w:
        for i in range(5):
            assert w.scallop(rec(i, result="failed"), snapshot_jpeg=b"\xff\xd8jpeg")
        w.flush()
        assert w.stats()["snapshot_failures"] == 5 and w.stats()["written"] == 5
        assert alarms.keys() == ["record.snapshot_disk"]  # once, not per frame
        assert "disk full" in alarms.calls[0][2] and "the line carries on" in alarms.calls[0][2]
        monkeypatch.undo()
        w.scallop(rec(10, result="failed"), snapshot_jpeg=b"\xff\xd8jpeg")
        w.flush()
    assert alarms.keys(False) == ["record.snapshot_disk"]  # cleared once frames are kept again
    assert list(snaps.iterdir()) != []
    with Record(db) as rd:
        rows = rd.scallops()
    assert len(rows) == 6 and [r["snapshot"] is None for r in rows] == [True] * 5 + [False]


def test_without_a_callback_the_writer_records_its_own_alarms(db, tmp_path, monkeypatch):
    monkeypatch.setattr(
        record_mod,
        "write_snapshot_file",
        lambda p, d: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")),
    )
    with RecordWriter(db, snapshot_dir=tmp_path / "s") as w:
        w.scallop(rec(1, result="failed"), snapshot_jpeg=b"jpeg")
        w.flush()
    with Record(db) as rd:
        rows = rd.alarms()
    assert len(rows) == 1
    assert rows[0]["alarm_id"] < 0 and rows[0]["source"] == "record" and "disk full" in rows[0]["text"]


# ---------------------------------------------------------------------------- reading


def _fill_day(db):
    """A known day: 10 picked (8 removed, 1 adductor hit), 2 failed, 3 skipped, 1 row the next day."""
    with RecordWriter(db) as w:
        for i in range(10):
            w.scallop(rec(i, t=T0 + 60 * i, arm="left" if i < 6 else "right", uro_removed=i < 8, adductor_hit=(i == 9)))
        w.scallop(rec(20, t=T0 + 3600, result="failed", arm="right", uro_removed=None))
        w.scallop(rec(21, t=T0 + 3660, result="failed", arm="left", uro_removed=None))
        w.scallop(
            rec(30, t=T0 + 3700, result="skipped", arm="", skip_reason="no_uro", uro_found=False, uro_removed=None)
        )
        w.scallop(
            rec(31, t=T0 + 3720, result="skipped", arm="", skip_reason="no_uro", uro_found=False, uro_removed=None)
        )
        w.scallop(rec(32, t=T0 + 3740, result="skipped", arm="", skip_reason="border", uro_removed=None))
        w.scallop(rec(40, t=T0 + 86400, arm="left"))
        w.alarm(Alarm(1, T0 + 100, "critical", "camera", "camera stalled"))
        w.alarm(Alarm(2, T0 + 200, "warning", "line", "belt slow", acked=True, acked_by="maria"))


def test_shift_summary_figures(db):
    _fill_day(db)
    start, end, label = shift_range("2024-05-01")
    with Record(db) as rd:
        s = rd.summary(start, end, label)
    assert s.label == "2024-05-01"
    assert (s.seen, s.picked, s.failed, s.skipped) == (15, 10, 2, 3)
    assert s.skipped_by_reason == {"no_uro": 2, "border": 1}
    assert (s.uro_found, s.uro_removed, s.missed, s.adductor_hits) == (13, 8, 4, 1)
    assert s.removal_rate == pytest.approx(8 / 13)
    assert s.by_arm == {
        "left": {"picked": 6, "failed": 1, "uro_removed": 6, "adductor_hits": 0},
        "right": {"picked": 4, "failed": 1, "uro_removed": 2, "adductor_hits": 1},
    }
    assert s.per_hour == [
        {"hour": "2024-05-01 09:00", "seen": 10, "uro_removed": 8},
        {"hour": "2024-05-01 10:00", "seen": 5, "uro_removed": 0},
    ]
    assert (s.first, s.last) == (T0, T0 + 3740)
    assert s.per_minute == pytest.approx(15 / (3740 / 60))
    assert (s.alarms, s.critical_alarms, s.unacked_alarms, s.runs) == (2, 1, 1, 1)
    text = s.format()
    assert "scallops seen           15" in text and "8   61.5 % of 13 with a uro found" in text
    assert "no_uro" in text and "arm left" in text


def test_empty_shift_summary(db):
    _fill_day(db)
    start, end, _ = shift_range("2024-04-01")
    with Record(db) as rd:
        s = rd.summary(start, end)
    assert (s.seen, s.picked, s.removal_rate, s.first, s.per_minute) == (0, 0, None, None, 0.0)
    assert "uro removed              0   - of 0 with a uro found" in s.format()


def test_csv_export(db, tmp_path):
    _fill_day(db)
    start, end, _ = shift_range("2024-05-01")
    out = tmp_path / "day.csv"
    with Record(db) as rd:
        n = rd.export_csv(out, start, end)
    rows = list(csv.DictReader(out.open(newline="")))
    assert n == 15 and len(rows) == 15
    assert list(rows[0]) == list(record_mod.CSV_COLUMNS)
    assert rows[0]["track_id"] == "0" and float(rows[0]["time"]) == T0 and rows[0]["result"] == "picked"
    assert rows[0]["time_iso"].startswith("2024-05-01T09:00:00.000")
    skipped = [r for r in rows if r["result"] == "skipped"]
    assert [r["skip_reason"] for r in skipped] == ["no_uro", "no_uro", "border"]
    assert skipped[0]["uro_removed"] == "" and skipped[0]["arm"] == ""


def test_shift_ranges_in_local_time():
    now = datetime(2024, 5, 2, 3, 0)
    s, e, label = shift_range("today", now=now)
    assert (datetime.fromtimestamp(s), datetime.fromtimestamp(e), label) == (
        datetime(2024, 5, 2),
        datetime(2024, 5, 3),
        "2024-05-02",
    )
    # At 03:00 with days starting at 06:00, "today" began yesterday morning.
    s, e, label = shift_range("today", "06:00", now=now)
    assert (datetime.fromtimestamp(s), datetime.fromtimestamp(e), label) == (
        datetime(2024, 5, 1, 6),
        datetime(2024, 5, 2, 6),
        "2024-05-01",
    )
    s, _, label = shift_range("yesterday", "06:00", now=now)
    assert datetime.fromtimestamp(s) == datetime(2024, 4, 30, 6) and label == "2024-04-30"
    with pytest.raises(ConfigError, match="shift 'last week': expected today, yesterday or a date like 2024-05-01"):
        shift_range("last week")
    with pytest.raises(ConfigError, match="day start '25:00': expected a time like 06:00"):
        shift_range("today", "25:00")


def test_opening_something_that_is_not_a_record(tmp_path):
    with pytest.raises(FileNotFoundError, match="no production record here"):
        Record(tmp_path / "none.sqlite")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(RecordError, match="not a production record"):
        Record(junk)
    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("PRAGMA user_version=7")
    con.execute("CREATE TABLE t (x)")
    con.close()
    with pytest.raises(RecordError, match="schema version 7, written by a newer version .* reads up to version 5"):
        open_db(other, create=True)


# ---------------------------------------------------------------------------- scallop report


def test_report_command_prints_the_summary_and_writes_csv(db, tmp_path, capsys):
    _fill_day(db)
    out = tmp_path / "day.csv"
    assert main(["report", "--db", str(db), "--shift", "2024-05-01", "--csv", str(out)]) == 0
    text = capsys.readouterr().out
    assert "shift 2024-05-01" in text and "picked                  10" in text
    assert "wrote 15 scallops to" in text
    assert len(list(csv.DictReader(out.open(newline="")))) == 15


def test_report_json_and_csv_to_stdout(db, capsys):
    _fill_day(db)
    assert main(["report", "--db", str(db), "--shift", "2024-05-01", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (d["seen"], d["uro_removed"], d["skipped_by_reason"]) == (15, 8, {"no_uro": 2, "border": 1})
    assert main(["report", "--db", str(db), "--shift", "2024-05-02", "--csv", "-"]) == 0
    cap = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(cap.out)))
    assert [r["track_id"] for r in rows] == ["40"]  # stdout is pure CSV
    assert "shift 2024-05-02" in cap.err


@pytest.mark.parametrize(
    "argv, msg, rc",
    [
        (["--shift", "someday"], "shift 'someday': expected today, yesterday or a date like 2024-05-01", 2),
        (["--day-start", "6"], "day start '6': expected a time like 06:00", 2),
        (["--csv", "/nonexistent-folder/x.csv"], "/nonexistent-folder: no such folder for the CSV file", 3),
    ],
)
def test_report_bad_input_is_one_line(db, capsys, argv, msg, rc):
    _fill_day(db)
    assert main(["report", "--db", str(db)] + argv) == rc
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1 and "Traceback" not in err


def test_report_without_a_record_is_one_line(tmp_path, capsys):
    assert main(["report", "--db", str(tmp_path / "missing.sqlite")]) == 3
    err = capsys.readouterr().err
    assert "no production record here" in err and err.count("\n") == 1


def test_report_help_has_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    assert "scallop report --shift yesterday --csv yesterday.csv" in capsys.readouterr().out


@pytest.mark.parametrize(
    "calibration, code, message",
    [
        ("missing.json", 3, "missing.json: no such calibration file; create it with 'scallop calibrate intrinsics"),
        (None, 2, "runtime.calibration: a real camera needs the line calibration file"),
    ],
)
def test_a_start_refused_for_its_calibration_leaves_no_run_in_the_record(tmp_path, capsys, calibration, code, message):
    """A refused start is no run: the refusal comes before the record's runs row is written
    (it left a row of a run that never ran)."""
    from scallop.app.auth import UserStore

    db = tmp_path / "record.sqlite"
    RecordWriter(db).close()  # a run that ran
    users = UserStore(scrypt_n=2**4)
    users.add("sato", "operator", "135790")
    users.save(tmp_path / "users.json")
    cfg = tmp_path / "line.toml"
    cfg.write_text(
        '[camera]\nsource = "0"\n'  # a camera device: not opened, the refusal comes first
        + (f'[runtime]\ncalibration = "{tmp_path / calibration}"\n' if calibration else "")
        + '[[arms]]\nname = "arm1"\n[arms.transport]\nkind = "tcp"\nhost = "127.0.0.1"\nport = 1\n'
        + f'[ui]\nusers_file = "{tmp_path / "users.json"}"\n[record]\npath = "{db}"\n'
    )
    assert main(["run", "--config", str(cfg), "--no-browser", "--duration", "1"]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scallop run: error: ") and message in err[0], err
    con = sqlite3.connect(db)
    try:
        runs = con.execute("SELECT id, ended, crashed FROM runs").fetchall()
    finally:
        con.close()
    assert len(runs) == 1 and runs[0][1] is not None and runs[0][2] == 0  # only the run that ran


def test_a_start_refused_for_its_model_file_leaves_no_run_in_the_record(tmp_path, capsys):
    db = tmp_path / "record.sqlite"
    RecordWriter(db).close()  # a run that ran
    cfg = tmp_path / "line.toml"
    cfg.write_text(f'[vision]\nmodel = "{tmp_path / "missing.onnx"}"\n[record]\npath = "{db}"\n')
    assert main(["run", "--config", str(cfg), "--no-browser", "--duration", "1"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{tmp_path / 'missing.onnx'}: no such model file" in err[0], err
    con = sqlite3.connect(db)
    try:
        assert len(con.execute("SELECT id FROM runs").fetchall()) == 1
    finally:
        con.close()


@pytest.mark.parametrize("kind", ["four-channel model, no channel", "not a model"])
def test_a_start_refused_for_what_its_model_file_holds_leaves_no_run_in_the_record(tmp_path, capsys, kind):
    """The model's own metadata is read before the run opens: a four-channel model on a line
    without the channel, or a file that is no model, is refused with no runs row (the first
    left a run of a line that never ran, and its snapshots folder)."""
    from scallop.models.runtime import default_uv_model_path

    db = tmp_path / "rec" / "record.sqlite"
    model = default_uv_model_path()
    if kind == "not a model":
        model = tmp_path / "junk.onnx"
        model.write_bytes(b"\x00not a model\xff" * 10)
    cfg = tmp_path / "line.toml"
    cfg.write_text(f'[vision]\nmodel = "{model}"\n[record]\npath = "{db}"\n')
    code = main(["run", "--config", str(cfg), "--no-browser", "--duration", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    if kind == "not a model":
        assert code == 3 and len(err) == 1 and "junk.onnx: not a loadable ONNX model" in err[0], err
    else:
        assert code == 2 and len(err) == 1 and "the model needs the fluorescence channel" in err[0], err
    assert not (tmp_path / "rec").exists()  # no record, no snapshots: nothing of a run


def test_a_hung_disk_refuses_a_pick_within_the_intent_limit_and_withdraws_its_late_row(db, monkeypatch):
    """The pick intent is written in the arm's thread before its commit; a disk that hangs (an
    outside try froze it) held that thread, so the arm's heartbeat stopped and its watchdog
    faulted it. Now the pick is refused within INTENT_TIMEOUT_S, alarmed, and the row that lands
    when the disk answers again is closed as never sent."""
    monkeypatch.setattr(RecordWriter, "ALARM_QUIET_S", 0.0)  # cleared at the first good write
    disk = threading.Event()
    real = RecordWriter._insert_intent

    def hung(self, *a):
        disk.wait(10.0)
        return real(self, *a)

    monkeypatch.setattr(RecordWriter, "_insert_intent", hung)
    alarms = Alarms()
    with RecordWriter(db, on_alarm=alarms) as w:
        t0 = time.monotonic()
        with pytest.raises(RecordError, match="did not answer within 0.5 s"):
            w.pick_intent(1, "arm1")
        assert time.monotonic() - t0 < 1.0  # inside the arm's 1 s watchdog
        # Still hung: the next one is refused at once, not queued behind it.
        t0 = time.monotonic()
        with pytest.raises(RecordError, match="has not answered for more than 0.5 s"):
            w.pick_intent(2, "arm1")
        assert time.monotonic() - t0 < 0.1
        assert alarms.keys() == ["record.picks"] and w.stats()["picks_refused"] == 2
        disk.set()
        time.sleep(0.2)
        row = w.pick_intent(3, "arm1")  # answering again
        assert row and alarms.keys(False) == ["record.picks"]
    with sqlite3.connect(db) as con:
        got = con.execute("SELECT track_id, state, result FROM picks ORDER BY id").fetchall()
    # 1's row landed late, closed as never sent; 2 never reached the disk; 3 closed at the run's end.
    assert got[0] == (1, "done", "not_sent") and [g[0] for g in got] == [1, 3]


def test_a_writer_stuck_on_its_disk_is_alarmed_while_it_lasts(db, monkeypatch):
    monkeypatch.setattr(RecordWriter, "ALARM_QUIET_S", 0.0)  # cleared at the first good write
    disk = threading.Event()
    real = RecordWriter._write_batch

    def hung(self, con, items):
        disk.wait(10.0)
        return real(self, con, items)

    monkeypatch.setattr(RecordWriter, "_write_batch", hung)
    monkeypatch.setattr(RecordWriter, "STALL_ALARM_S", 0.2)
    alarms = Alarms()
    with RecordWriter(db, on_alarm=alarms) as w:
        w.scallop(rec(1))
        time.sleep(0.1)
        w.stalled()
        assert alarms.keys() == []
        time.sleep(0.2)
        w.stalled()
        assert alarms.keys() == ["record.database"] and "has not answered for 0.2 s" in alarms.calls[0][2]
        disk.set()
        assert w.flush(5)
        assert alarms.keys(False) == ["record.database"]


def test_a_record_file_deleted_under_the_running_line_is_alarmed_started_again_and_named(tmp_path):
    """An outside try deleted the record's folder mid-run: every row went on into a file no
    longer there, no alarm, exit 0. Now the loss is a critical alarm for the rest of the run, a
    new record holds the run from then on, and problems() names it (the line exits non-zero)."""
    import shutil

    db = tmp_path / "rec" / "record.sqlite"
    alarms = Alarms()
    with RecordWriter(db, on_alarm=alarms) as w:
        for i in range(5):
            w.scallop(rec(i))
        w.pick_intent(4, "left")  # the intents' own connection is open on the file about to go
        assert w.flush(5)
        shutil.rmtree(db.parent)
        for i in range(5, 8):
            w.scallop(rec(i))
        assert w.flush(5)
        w.pick_intent(8, "left")  # and this one to the new file
        assert alarms.keys() == ["record.file_gone"] and "6 row(s) of this run" in alarms.calls[0][2]
        assert w.stats()["lost_with_file"] == 6  # 5 scallops and a pick's intent
        assert "deleted or replaced during the run: 6 row(s)" in w.problems()[0]
        run_id = w.run_id
    with Record(db) as rd:
        assert [r["track_id"] for r in rd.scallops()] == [5, 6, 7]
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT id, ended IS NOT NULL FROM runs").fetchall() == [(run_id, 1)]
        assert con.execute("SELECT track_id FROM picks").fetchall() == [(8,)]


def _damage(db: Path, table: str = "scallops") -> None:
    """Real damage SQLite itself detects: the table's root page pointed at an index's page (as
    a torn write of the schema page would), the schema cookie bumped so an open writer sees it."""
    con = sqlite3.connect(db, isolation_level=None)
    try:
        idx = con.execute("SELECT rootpage FROM sqlite_master WHERE type='index' ORDER BY rootpage").fetchone()[0]
        version = con.execute("PRAGMA schema_version").fetchone()[0]
        con.execute("PRAGMA writable_schema=ON")
        con.execute("UPDATE sqlite_master SET rootpage=? WHERE name=?", (idx, table))
        con.execute(f"PRAGMA schema_version={version + 1}")
    finally:
        con.close()


def test_a_record_found_damaged_mid_run_is_set_aside_and_the_batch_goes_to_a_new_one(tmp_path):
    """An outside try: a record with damaged pages took the line's start, then every row went to
    a spill file with advice to import it into the same damaged record."""
    db = tmp_path / "rec" / "record.sqlite"
    alarms = Alarms()
    with RecordWriter(db, on_alarm=alarms) as w:
        for i in range(5):
            w.scallop(rec(i))
        w.event("start", "system")  # every row of the run counts, not only scallops (an outside
        w.pick_intent(4, "left")  # try's run left its start and two intents there, and exited 0)
        assert w.flush(5)
        _damage(db)
        for i in range(5, 8):
            w.scallop(rec(i))
        assert w.flush(5)
        run_id = w.run_id
    aside = sorted(p.name for p in db.parent.glob("record.sqlite.damaged-*") if not p.name.endswith(("-wal", "-shm")))
    assert aside == [Path(w.set_aside[0]).name] and aside[0].startswith("record.sqlite.damaged-20")
    assert alarms.keys() == ["record.damaged"] and aside[0] in alarms.calls[0][2]
    assert "malformed" in alarms.calls[0][2]
    s = w.stats()
    assert (s["written"], s["in_damaged_file"], s["spilled"], s["lost"]) == (8, 7, 0, 0)
    assert w.problems() == [
        f"{db} was found damaged during the run and set aside as {aside[0]}: 7 row(s) of this run went into it "
        "before and may not all be readable there (keep that file for an engineer)"
    ]
    with Record(db) as rd:
        assert [r["track_id"] for r in rd.scallops()] == [5, 6, 7]
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT id, ended IS NOT NULL FROM runs").fetchall() == [(run_id, 1)]


def test_a_disk_that_damages_every_new_record_gets_the_database_alarm_not_a_folder_of_them(tmp_path, monkeypatch):
    monkeypatch.setattr(RecordWriter, "MAX_SET_ASIDE", 1)
    db = tmp_path / "record.sqlite"
    alarms = Alarms()
    w = RecordWriter(db, on_alarm=alarms, retry_s=0.05)
    w.scallop(rec(1))
    assert w.flush(5)
    _damage(db)
    w.scallop(rec(2))
    assert w.flush(5)  # the first: set aside, a new record
    _damage(db)
    w.scallop(rec(3))
    assert not w.flush(0.5)  # the second: refused, retried, alarmed
    w.close(5)
    assert len(w.set_aside) == 1 and len(list(tmp_path.glob("record.sqlite.damaged-*"))) == 1
    assert alarms.keys() == ["record.damaged", "record.database"] and w.stats()["spilled"] == 1


def test_a_record_damaged_before_the_start_is_set_aside_and_the_run_loses_nothing(tmp_path, capsys):
    db = tmp_path / "record.sqlite"
    with RecordWriter(db) as w:
        w.scallop(rec(1))
    _damage(db, "runs")  # the start's own insert meets it
    alarms = Alarms()
    with RecordWriter(db, on_alarm=alarms) as w:
        w.scallop(rec(2))
        assert w.flush(5)
    assert alarms.keys() == ["record.damaged"] and "at start" in alarms.calls[0][2]
    assert w.problems() == [] and len(w.set_aside) == 1 and Path(w.set_aside[0]).is_file()
    with Record(db) as rd:
        assert [r["track_id"] for r in rd.scallops()] == [2]
    # The new record is sound; the check still tells of the one set aside (findings: exit 1).
    capsys.readouterr()
    assert main(["record", "check", "--db", str(db)]) == 1
    out = capsys.readouterr().out
    assert f"a damaged record set aside beside it by the line: {w.set_aside[0]}" in out and "findings: yes" in out


def test_a_record_whose_first_page_is_gone_is_refused_with_what_to_do_and_left_where_it_is(tmp_path):
    """Not set aside: "not a database" is also what a wrong [record] path to another file gives."""
    db = tmp_path / "record.sqlite"
    RecordWriter(db).close()
    with db.open("r+b") as f:
        f.write(bytes(range(256)) * 16)
    with pytest.raises(RecordError, match=r"not a database\); if it was the line's record, its disk damaged it"):
        RecordWriter(db)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.sqlite"]


def test_a_first_page_lost_under_the_running_line_is_damage_to_its_own_record_set_aside(tmp_path):
    """An outside try: page 1 overwritten mid-run stopped every pick for the rest of the run
    ("file is not a database"), nothing set aside. The file was this run's own a moment ago."""
    db = tmp_path / "record.sqlite"
    alarms = Alarms()
    with RecordWriter(db, on_alarm=alarms) as w:
        w.scallop(rec(1))
        assert w.flush(5)
        with db.open("r+b") as f:
            f.write(bytes(range(256)) * 16)
        with pytest.raises(RecordError, match="could not be recorded"):
            w.pick_intent(2, "left")  # a fresh connection reads page 1
        w.scallop(rec(3))
        assert w.flush(5)
        assert w.pick_intent(4, "left") > 0
    damaged = [c for c in alarms.calls if c[0] == "record.damaged"]
    assert len(damaged) == 1 and "(file is not a database)" in damaged[0][2]
    assert len(w.set_aside) == 1
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT track_id FROM picks").fetchall() == [(4,)]
        assert con.execute("SELECT track_id FROM scallops").fetchall() == [(3,)]


def test_a_record_truncated_to_nothing_is_told_not_silently_started_over(tmp_path):
    db = tmp_path / "record.sqlite"
    db.write_bytes(b"")
    alarms = Alarms()
    with RecordWriter(db, on_alarm=alarms) as w:
        assert w.run_id == 1
    assert alarms.keys() == ["record.emptied"] and "was an empty file" in alarms.calls[0][2]


def test_a_start_that_cannot_make_the_record_leaves_no_empty_file_for_the_next(tmp_path, monkeypatch):
    """A full disk left a 0-byte record.sqlite, which the next start took for a new record."""
    import scallop.app.record.schema as schema

    real = schema._connect

    def full(path, write=True):
        real(path, write).close()  # the file is made, then the disk refuses
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(schema, "_connect", full)
    db = tmp_path / "record.sqlite"
    with pytest.raises(RecordError, match="database or disk is full"):
        RecordWriter(db)
    assert list(tmp_path.iterdir()) == []


def test_damage_in_the_runs_last_moments_is_found_as_it_ends_not_by_the_next_start(tmp_path):
    """An outside try: page 1 overwritten 0.05 s before the stop; the writer's cached pages hid
    it, the run ended 0, and the next start refused the record holding that run's rows."""
    db = tmp_path / "record.sqlite"
    alarms = Alarms()
    w = RecordWriter(db, on_alarm=alarms)
    for i in range(4):
        w.scallop(rec(i))
    assert w.flush(5)
    with db.open("r+b") as f:
        f.write(bytes(range(256)) * 16)
    w.close()
    assert alarms.keys() == ["record.damaged"] and "(file is not a database)" in alarms.calls[0][2]
    assert w.stats()["in_damaged_file"] == 4 and "4 row(s) of this run" in w.problems()[0]
    with sqlite3.connect(db) as con:  # the new record: the run, ended, and what the line can still say
        assert con.execute("SELECT ended IS NOT NULL, started > 0 FROM runs").fetchall() == [(1, 1)]
        kind, detail = con.execute("SELECT kind, detail FROM events").fetchone()
        assert kind == "record_damaged" and json.loads(detail)["rows"] == 4
    with RecordWriter(db) as w2:  # the next start takes it
        assert w2.run_id == w.run_id + 1


def test_a_pick_intent_meeting_a_damaged_record_has_it_set_aside_and_the_next_pick_recorded(tmp_path):
    """The picks table alone damaged: scallop rows still go in, so only the intent sees it."""
    db = tmp_path / "record.sqlite"
    alarms = Alarms()
    with RecordWriter(db, on_alarm=alarms) as w:
        w.pick_intent(1, "left")
        _damage(db, "picks")
        with pytest.raises(RecordError, match="pick of scallop 2 could not be recorded"):
            w.pick_intent(2, "left")
        w.scallop(rec(3))
        assert w.flush(5)  # the writer moved it aside before this batch
        assert w.pick_intent(4, "left") > 0
    assert sorted(alarms.keys()) == ["record.damaged", "record.picks"]  # the writer may be first
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT track_id FROM picks").fetchall() == [(4,)]


def test_record_check_names_the_damage_in_a_line_not_sqlites_hundred(tmp_path, capsys):
    db = tmp_path / "record.sqlite"
    with RecordWriter(db) as w:
        for i in range(300):
            w.scallop(rec(i))
    _damage(db)
    assert main(["record", "check", "--db", str(db)]) == 3
    err = capsys.readouterr().err
    assert "the record is damaged (database disk image is malformed); restore the last backup" in err
    assert len(err) < 600
    assert main(["record", "check", "--db", str(db), "--json"]) == 3  # a program gets its object too
    out = json.loads(capsys.readouterr().out)
    assert out["findings"] is True and "damaged" in out["error"] and out["path"] == str(db)


def test_report_on_a_damaged_record_says_so_not_internal_error(tmp_path, capsys):
    db = tmp_path / "record.sqlite"
    with RecordWriter(db) as w:
        for i in range(300):
            w.scallop(rec(i))
    with sqlite3.connect(db) as con:  # the scallops' leaf pages: the schema still reads, the rows do not
        leaves = [r[0] for r in con.execute("SELECT pageno FROM dbstat WHERE name='scallops' AND pagetype='leaf'")]
    con.close()
    with db.open("r+b") as f:
        for page in leaves:
            f.seek((page - 1) * 4096 + 8)
            f.write(bytes((page * 7 + k) % 256 for k in range(512)))
    day = datetime.fromtimestamp(T0).strftime("%Y-%m-%d")  # the rows' day: the read meets the damage
    assert main(["report", "--db", str(db), "--shift", day]) == 3
    err = capsys.readouterr().err
    assert "damaged" in err and "restore the last backup" in err and "internal error" not in err


def test_sqlites_integrity_report_is_told_as_its_first_finding_and_a_count():
    from scallop.app.record.check import _damage_summary

    report = ["*** in database main ***\nOn tree page 106 cell 44: Rowid 118 out of order\nPage 7: never used", "x"]
    assert _damage_summary(report) == "On tree page 106 cell 44: Rowid 118 out of order, and 2 more finding(s)"
    assert _damage_summary(["*** in database main ***"]) == "damaged"


def test_a_snapshot_folder_that_cannot_be_made_is_a_warning_not_a_failed_start(db, tmp_path):
    """An outside try's start stopped on "internal error" (a read-only or blocked snapshot
    folder) and left a crashed run in the record at every try."""
    blocker = tmp_path / "snaps"
    blocker.write_text("a file where the folder should be")
    alarms = Alarms()
    with RecordWriter(db, snapshot_dir=blocker / "frames", on_alarm=alarms) as w:
        assert alarms.keys() == ["record.snapshot_disk"] and "cannot be used" in alarms.calls[0][2]
        assert w.scallop(rec(1), snapshot_jpeg=b"\xff\xd8jpeg")
        assert w.flush(5)
        assert w.stats()["snapshot_failures"] == 1
    with Record(db) as rd:
        assert [r["track_id"] for r in rd.scallops()] == [1]
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT crashed, ended IS NOT NULL FROM runs").fetchall() == [(0, 1)]


def test_a_pick_intent_is_closed_with_what_became_of_its_scallop(db):
    """The arm that picked it: the result; one that passed it to an arm that picked it:
    handed_on; one whose pick no arm took up (LATE on a one-arm line): the scallop's reason
    (an outside try read handed_on there, for an arm with nobody downstream)."""
    with RecordWriter(db) as w:
        w.pick_intent(1, "left")
        w.pick_intent(1, "right")
        w.scallop(rec(1, arm="right"))
        w.pick_intent(2, "left")
        w.scallop(rec(2, result="skipped", skip_reason="arm_late", arm="", uro_removed=None))
        row = w.pick_intent(3, "left")
        w.withdraw_intent(row)
        assert w.flush(5)
        time.sleep(0.1)
    with sqlite3.connect(db) as con:
        got = con.execute("SELECT track_id, arm, state, result FROM picks ORDER BY id").fetchall()
    assert got == [
        (1, "left", "done", "handed_on"),
        (1, "right", "done", "picked"),
        (2, "left", "done", "arm_late"),
        (3, "left", "done", "not_sent"),
    ]


def test_a_disk_that_fails_every_other_write_is_one_alarm_until_it_has_been_quiet(db, monkeypatch):
    """A nearly full disk lets some batches through: each cleared the alarm and the next failure
    raised it again (an outside try: 8 in 30 s). It now clears after ALARM_QUIET_S of success."""
    real = RecordWriter._write_batch
    n = {"i": 0}

    def every_other(self, con, items):
        n["i"] += 1
        if n["i"] % 2:
            raise sqlite3.OperationalError("database or disk is full")
        return real(self, con, items)

    monkeypatch.setattr(RecordWriter, "_write_batch", every_other)
    monkeypatch.setattr(RecordWriter, "ALARM_QUIET_S", 0.5)
    alarms = Alarms()
    with RecordWriter(db, on_alarm=alarms, retry_s=0.01) as w:
        for i in range(6):
            w.scallop(rec(i))
            assert w.flush(5)
        assert alarms.keys(True) == ["record.database"] and alarms.keys(False) == []
        monkeypatch.setattr(RecordWriter, "_write_batch", real)
        time.sleep(0.6)
        w.scallop(rec(99))
        assert w.flush(5)
        assert alarms.keys(False) == ["record.database"]


def test_record_check_finds_its_spills_kept_away_and_picks_left_sending(db, tmp_path, monkeypatch):
    """Spills the record's folder refused go to the service's logs folder (its private /tmp is
    removed when the service stops); record check lists them, and a pick left 'sending' in a run
    that ended (outside try: "findings: none" for both)."""
    from scallop.app.record.check import check_record
    from scallop.app.record.writer import spill_folders, spill_tag

    logs = tmp_path / "logs"
    logs.mkdir()
    monkeypatch.setenv("LOGS_DIRECTORY", str(logs))
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    assert spill_folders()[0] == logs
    with RecordWriter(db) as w:
        w.pick_intent(5, "arm1")  # its scallop's row never comes
        run = w.run_id
    mine = logs / f"{db.name}.unwritten-run{run}-{spill_tag(db)}-pid1.jsonl"
    mine.write_text('{"table": "events", "params": []}\n{"table": "run_end", "params": [1, 0]}\n')
    (logs / f"{db.name}.unwritten-run{run}-deadbeef-pid1.jsonl").write_text("{}\n")  # another record's
    c = check_record(db)
    assert [(f["file"], f["rows"]) for f in c.spill_files] == [(str(mine), 1)]  # the run's end is no row
    assert [p["track_id"] for p in c.unknown_picks] == [5] and c.findings


def test_record_import_refuses_a_spill_marked_for_another_record(tmp_path, capsys):
    """Both records had a run 1: the run check let another record's spill in (outside try)."""
    from scallop.app.cli import main
    from scallop.app.record.writer import spill_tag

    a, b = tmp_path / "a" / "record.sqlite", tmp_path / "b" / "record.sqlite"
    for db in (a, b):
        with RecordWriter(db):
            pass
    spill = tmp_path / f"record.sqlite.unwritten-run1-{spill_tag(a)}-pid7.jsonl"
    spill.write_text(json.dumps({"table": "events", "params": [1, T0, "start", "op", "{}", ""]}) + "\n")
    assert main(["record", "import", str(spill), "--db", str(b)]) == 3
    assert f"belongs to another record (its mark {spill_tag(a)}" in capsys.readouterr().err
    assert main(["record", "import", str(spill), "--db", str(a)]) == 0


def test_a_warning_the_record_gave_before_the_line_was_there_reaches_the_line(tmp_path):
    """The unwritable snapshot folder's warning was given while the line was being built, to
    nobody (outside try)."""
    from tests.helpers import make_line

    (tmp_path / "blocked").write_text("a file where the snapshot folder should be")
    line = make_line(tmp_path / "run", overrides={"record": {"snapshot_dir": str(tmp_path / "blocked" / "snaps")}})
    try:
        a = line.alarms.get("record.snapshot_disk")
        assert a is not None and a.active and a.severity == "warning" and "cannot be used" in a.text
    finally:
        line.close()
