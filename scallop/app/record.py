"""The production record: every scallop seen, every alarm, every operator action, in SQLite.

Writing (the runtime)::

    w = RecordWriter("scallop-record/record.sqlite", snapshot_dir="scallop-record/snapshots",
                     snapshot_budget_bytes=500_000_000, on_alarm=line_alarm)
    w.scallop(ScallopRecord(track_id=17, time=time.time(), encoder_mm=10234.5, result="picked",
                            arm="left", uro_found=True, uro_removed=True), snapshot_jpeg=None)
    w.alarm(alarm)                      # a scallop.app.line_api.Alarm, again on ack or clear
    w.event("start", "maria")
    w.close()                           # everything queued is written first

The writer never blocks its caller: records go into a bounded queue that one thread drains
into SQLite (WAL mode, one transaction per batch). A full queue drops the record, counts it and
raises an alarm; a failing database is retried; a full snapshot disk raises an alarm and the
scallop is still recorded without its frame. None of these stops the line.

Snapshots (JPEG frames of failed or doubtful picks, for retraining) are files next to the
database whose total size stays under a byte budget: past it the oldest are deleted (and their
rows' ``snapshot`` set to NULL).

Reading (``scallop report``, tests): :class:`Record` gives shift summaries and CSV export.
"""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import queue
import re
import socket
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from scallop.errors import DataError

if TYPE_CHECKING:
    from scallop.app.line_api import Alarm

SCHEMA_VERSION = 1
RESULTS = ("picked", "failed", "skipped")
_REASON_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id       INTEGER PRIMARY KEY,
    started  REAL NOT NULL,           -- wall clock, epoch seconds
    ended    REAL,
    host     TEXT NOT NULL DEFAULT '',
    note     TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS scallops (
    id             INTEGER PRIMARY KEY,
    run_id         INTEGER NOT NULL REFERENCES runs(id),
    track_id       INTEGER NOT NULL,
    time           REAL NOT NULL,
    encoder_mm     REAL NOT NULL,
    x_mm           REAL, y_mm REAL, diameter_mm REAL, score REAL,
    views          INTEGER NOT NULL DEFAULT 1,
    uro_found      INTEGER NOT NULL,
    uro_x_mm       REAL, uro_y_mm REAL, uro_score REAL,
    grasp_x_mm     REAL, grasp_y_mm REAL, pull_angle_deg REAL,
    arm            TEXT NOT NULL DEFAULT '',
    result         TEXT NOT NULL CHECK (result IN ('picked', 'failed', 'skipped')),
    skip_reason    TEXT NOT NULL DEFAULT '',
    uro_removed    INTEGER,               -- NULL: not known
    adductor_hit   INTEGER,
    doubtful       INTEGER NOT NULL DEFAULT 0,
    snapshot       TEXT,                  -- file name under the snapshot folder, NULL if none kept
    detail         TEXT NOT NULL DEFAULT '{}',
    UNIQUE (run_id, track_id)             -- each scallop once
);
CREATE INDEX IF NOT EXISTS scallops_time ON scallops(time);
CREATE TABLE IF NOT EXISTS alarms (
    id           INTEGER PRIMARY KEY,
    run_id       INTEGER NOT NULL REFERENCES runs(id),
    alarm_id     INTEGER NOT NULL,
    time         REAL NOT NULL,
    severity     TEXT NOT NULL,
    source       TEXT NOT NULL,
    text         TEXT NOT NULL,
    acked        INTEGER NOT NULL DEFAULT 0,
    acked_by     TEXT NOT NULL DEFAULT '',
    acked_time   REAL,
    active       INTEGER NOT NULL DEFAULT 1,
    cleared_time REAL,
    UNIQUE (run_id, alarm_id)
);
CREATE INDEX IF NOT EXISTS alarms_time ON alarms(time);
CREATE TABLE IF NOT EXISTS events (
    id      INTEGER PRIMARY KEY,
    run_id  INTEGER NOT NULL REFERENCES runs(id),
    time    REAL NOT NULL,
    kind    TEXT NOT NULL,
    user    TEXT NOT NULL DEFAULT '',
    detail  TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_time ON events(time);
"""


class RecordError(DataError):
    """A record that cannot be opened or a value that cannot be recorded; the message names it."""


def default_record_dir() -> Path:
    """Where the line keeps its record unless configured: ``$SCALLOP_RECORD_DIR`` or ./scallop-record."""
    return Path(os.environ.get("SCALLOP_RECORD_DIR", "scallop-record"))


def default_db_path() -> Path:
    return default_record_dir() / "record.sqlite"


# ---------------------------------------------------------------------------- the scallop row


def _opt_float(name: str, v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise RecordError(f"{name}={v!r}: expected a finite number or None")
    return float(v)


@dataclass
class ScallopRecord:
    """One scallop's row. Belt-frame coordinates in mm (x along travel, y across) at ``encoder_mm``."""

    track_id: int  # the runtime's id for this scallop, unique within a run
    time: float  # wall clock (epoch s) of the pick/skip decision
    encoder_mm: float  # belt position (encoder, mm) of the view that decided
    result: str  # "picked" (pick executed), "failed" (pick aborted/errored), "skipped"
    skip_reason: str = ""  # required for "skipped": e.g. "no_uro", "border", "no_arm_free"
    arm: str = ""  # the arm that picked; required for picked/failed
    x_mm: float | None = None  # scallop centre
    y_mm: float | None = None
    diameter_mm: float | None = None
    score: float | None = None  # detection confidence 0..1
    views: int = 1  # frames the scallop was seen in
    uro_found: bool = False
    uro_x_mm: float | None = None  # uro centre
    uro_y_mm: float | None = None
    uro_score: float | None = None  # uro confidence 0..1
    grasp_x_mm: float | None = None  # where the gripper closes
    grasp_y_mm: float | None = None
    pull_angle_deg: float | None = None  # pull direction, degrees from +x toward +y
    uro_removed: bool | None = None  # None: not known (no grading, no sensor)
    adductor_hit: bool | None = None
    doubtful: bool = False  # low confidence, or the runtime is unsure of the result
    detail: dict = field(default_factory=dict)  # anything else, JSON-serialisable

    def __post_init__(self) -> None:
        if isinstance(self.track_id, bool) or not isinstance(self.track_id, int):
            raise RecordError(f"track_id={self.track_id!r}: expected an integer")
        for name in ("time", "encoder_mm"):
            if _opt_float(name, getattr(self, name)) is None:
                raise RecordError(f"{name}=None: a scallop row needs it")
        for name in (
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
        ):
            _opt_float(name, getattr(self, name))
        if self.result not in RESULTS:
            raise RecordError(f"result={self.result!r} is not allowed: choose one of {', '.join(RESULTS)}")
        if self.result == "skipped":
            if not _REASON_RE.match(self.skip_reason or ""):
                raise RecordError(
                    f"skip_reason={self.skip_reason!r}: a skipped scallop needs a reason "
                    "like 'no_uro' (lowercase letters, digits, '_', up to 40)"
                )
        elif self.skip_reason:
            raise RecordError(
                f"skip_reason={self.skip_reason!r} given for result={self.result!r}: only skipped scallops have one"
            )
        if self.result in ("picked", "failed") and not self.arm:
            raise RecordError(f"arm='': a {self.result} scallop names the arm that picked it")
        if isinstance(self.views, bool) or not isinstance(self.views, int) or self.views < 1:
            raise RecordError(f"views={self.views!r} is out of range: allowed 1 or more")
        try:
            json.dumps(self.detail)
        except (TypeError, ValueError) as e:
            raise RecordError(f"detail: not JSON-serialisable: {e}") from None

    @property
    def wants_snapshot(self) -> bool:
        """Whether its frame is worth keeping for retraining: failed, doubtful or a bad grade."""
        return self.result == "failed" or self.doubtful or self.uro_removed is False or bool(self.adductor_hit)


_SCALLOP_COLS = (
    "run_id",
    "track_id",
    "time",
    "encoder_mm",
    "x_mm",
    "y_mm",
    "diameter_mm",
    "score",
    "views",
    "uro_found",
    "uro_x_mm",
    "uro_y_mm",
    "uro_score",
    "grasp_x_mm",
    "grasp_y_mm",
    "pull_angle_deg",
    "arm",
    "result",
    "skip_reason",
    "uro_removed",
    "adductor_hit",
    "doubtful",
    "snapshot",
    "detail",
)


def _b(v: bool | None) -> int | None:
    return None if v is None else int(bool(v))


# ---------------------------------------------------------------------------- writer


class _Flush:
    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()
_WAKE = object()


def _connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(str(path), timeout=10.0, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    # NORMAL is durable across application crashes in WAL mode; only a power cut may lose the
    # last transactions, which is the price of not fsyncing every scallop.
    con.execute("PRAGMA synchronous=NORMAL")
    return con


def open_db(path: str | Path, *, create: bool) -> sqlite3.Connection:
    """A connection to the record at ``path`` with the schema checked (and created if ``create``)."""
    p = Path(path)
    if not create and not p.is_file():
        raise FileNotFoundError(f"{p}: no production record here (run the line first, or pass --db)")
    if create:
        p.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = _connect(p)
        version = con.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as e:
        raise RecordError(f"{p}: not a production record ({e})") from None
    if version == 0 and not tables:
        if not create:
            con.close()
            raise RecordError(f"{p}: empty database, not a production record")
        con.executescript(_SCHEMA)
        con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    elif version != SCHEMA_VERSION:
        con.close()
        raise RecordError(f"{p}: record schema version {version}, this program reads version {SCHEMA_VERSION}")
    return con


AlarmCallback = Callable[[str, str, str, bool], None]
"""``on_alarm(key, severity, text, active)``: a writer condition raised (active) or cleared."""


class RecordWriter:
    """Thread-safe, non-blocking writer of one run's record (see the module doc).

    ``on_alarm(key, severity, text, active)`` is called from whichever thread hit the condition
    (the caller for a full queue, the writer thread otherwise); keys are ``record.queue_full``,
    ``record.database`` and ``record.snapshot_disk``. Without a callback the writer puts those
    alarms in its own alarms table (negative alarm ids).
    """

    SIDE_MAX = 10_000  # alarms and events waiting; past it they are dropped (and counted)
    CLOSE_RETRIES = 3  # database failures tolerated after close() before the rest is counted as lost

    def __init__(
        self,
        path: str | Path,
        *,
        snapshot_dir: str | Path | None = None,
        snapshot_budget_bytes: int = 500_000_000,
        queue_size: int = 10_000,
        batch: int = 500,
        on_alarm: AlarmCallback | None = None,
        wall_clock: Callable[[], float] = time.time,
        retry_s: float = 0.5,
        note: str = "",
    ) -> None:
        if snapshot_budget_bytes < 0:
            raise RecordError(f"snapshot_budget_bytes={snapshot_budget_bytes} is out of range: allowed 0 or more")
        if queue_size < 1:
            raise RecordError(f"queue_size={queue_size} is out of range: allowed 1 or more")
        self.path = Path(path)
        self.snapshot_dir = Path(snapshot_dir) if snapshot_dir is not None else None
        self.snapshot_budget_bytes = int(snapshot_budget_bytes)
        self.on_alarm = on_alarm
        self.wall_clock = wall_clock
        self.retry_s = retry_s
        self._batch = max(1, batch)
        self._q: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stats_lock = threading.Lock()
        self._stats = dict(
            written=0,
            alarms_written=0,
            events_written=0,
            dropped=0,
            duplicates=0,
            db_errors=0,
            lost=0,
            snapshots_written=0,
            snapshots_deleted=0,
            snapshot_failures=0,
            snapshot_bytes=0,
        )
        self._alarm_state: dict[str, bool] = {}
        self._side: deque[Any] = deque()
        self._side_lock = threading.Lock()
        self._own_alarm_id = 0
        self._own_alarms: dict[str, Alarm] = {}
        self._closed = False

        con = open_db(self.path, create=True)
        try:
            cur = con.execute(
                "INSERT INTO runs (started, host, note) VALUES (?, ?, ?)",
                (self.wall_clock(), socket.gethostname(), note),
            )
            self.run_id = int(cur.lastrowid)
        finally:
            con.close()

        self._snap_files: deque[tuple[str, int]] = deque()  # (name, bytes), oldest first
        if self.snapshot_dir is not None:
            self.snapshot_dir.mkdir(parents=True, exist_ok=True)
            for p in sorted(self.snapshot_dir.glob("*.jpg")):
                try:
                    self._snap_files.append((p.name, p.stat().st_size))
                except OSError:
                    pass
            self._stats["snapshot_bytes"] = sum(s for _, s in self._snap_files)

        self._thread = threading.Thread(target=self._run, name="record-writer", daemon=True)
        self._thread.start()

    # -- producer side (any thread, never blocks)

    def _put(self, item: Any) -> bool:
        if self._closed:
            raise RecordError("the record writer is closed")
        try:
            self._q.put_nowait(item)
        except queue.Full:
            self._count("dropped")
            self._raise(
                "record.queue_full",
                "warning",
                f"production record is behind: {self._q.maxsize} rows waiting, rows are being dropped",
            )
            return False
        if self._alarm_state.get("record.queue_full") and self._q.qsize() < self._q.maxsize // 2:
            self._clear("record.queue_full")
        return True

    def scallop(self, rec: ScallopRecord, snapshot_jpeg: bytes | None = None) -> bool:
        """Queue one scallop (and its frame to keep, if any). False if dropped (queue full)."""
        if not isinstance(rec, ScallopRecord):
            raise RecordError(f"expected a ScallopRecord, got {type(rec).__name__}")
        return self._put(("scallop", rec, snapshot_jpeg))

    def _put_side(self, item: Any) -> bool:
        # Alarms and operator actions are few and matter most when the line is in trouble,
        # which is when the scallop queue may be full: they get their own lane.
        if self._closed:
            raise RecordError("the record writer is closed")
        with self._side_lock:
            if len(self._side) >= self.SIDE_MAX:
                self._count("dropped")
                return False
            self._side.append(item)
        try:
            self._q.put_nowait(_WAKE)
        except queue.Full:
            pass  # the writer is busy with a full queue and drains the side lane with each batch
        return True

    def alarm(self, alarm: Alarm) -> bool:
        """Record an alarm; call again with the same ``alarm.id`` when it is acked or cleared."""
        return self._put_side(("alarm", alarm, self.wall_clock()))

    def event(self, kind: str, user: str = "", detail: dict | None = None) -> bool:
        """An operator action or line event (start, stop, estop, recipe, login, config...)."""
        return self._put_side(
            ("event", (self.wall_clock(), str(kind), str(user), json.dumps(detail or {}, default=str)))
        )

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued before this call is committed. False on timeout."""
        f = _Flush()
        try:
            self._q.put(f, timeout=timeout)
        except queue.Full:
            return False
        return f.done.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, mark the run ended, stop the thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._q.put(_STOP, timeout=0.1)
                break
            except queue.Full:
                if not self._thread.is_alive() or time.monotonic() > deadline:
                    break
        self._thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, int]:
        with self._stats_lock:
            s = dict(self._stats)
        s["queued"] = self._q.qsize()
        return s

    def metrics_text(self, prefix: str = "scallop_record") -> str:
        """Prometheus exposition text of :meth:`stats` (the names are in docs/interfaces.md)."""
        from scallop.app.metrics import RecordCollector, render

        return render(RecordCollector(self.stats, prefix))

    # -- alarms

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self._stats[key] += n

    def _raise(self, key: str, severity: str, text: str) -> None:
        if self._alarm_state.get(key):
            return
        self._alarm_state[key] = True
        self._notify(key, severity, text, True)

    def _clear(self, key: str) -> None:
        if not self._alarm_state.get(key):
            return
        self._alarm_state[key] = False
        self._notify(key, "info", "", False)

    def _notify(self, key: str, severity: str, text: str, active: bool) -> None:
        if self.on_alarm is not None:
            try:
                self.on_alarm(key, severity, text, active)
            except Exception as e:  # a broken callback must not take the record down
                print(f"record: alarm callback failed: {e}", file=sys.stderr)
            return
        from scallop.app.line_api import Alarm

        if active:
            self._own_alarm_id -= 1
            alarm = Alarm(self._own_alarm_id, self.wall_clock(), severity, "record", text)  # type: ignore[arg-type]
            self._own_alarms[key] = alarm
        else:
            alarm = self._own_alarms.pop(key, None)
            if alarm is None:
                return
            alarm = replace(alarm, active=False)  # a copy: the raised one may still be queued
        with self._side_lock:
            self._side.append(("alarm", alarm, self.wall_clock()))

    # -- writer thread

    def _run(self) -> None:
        con: sqlite3.Connection | None = None
        stop = False
        closing_failures = 0
        pending: list[Any] = []
        while True:
            if not pending:
                item = self._q.get()
                pending.append(item)
                while len(pending) < self._batch:
                    try:
                        pending.append(self._q.get_nowait())
                    except queue.Empty:
                        break
                with self._side_lock:
                    # Everything in the side lane was appended before this batch's flush
                    # markers were taken, so writing it in this batch keeps flush() honest.
                    pending[:0] = self._side
                    self._side.clear()
            try:
                if con is None:
                    con = open_db(self.path, create=True)
                self._write_batch(con, pending)
                self._clear("record.database")
                if self._alarm_state.get("record.queue_full") and self._q.qsize() < self._q.maxsize // 2:
                    self._clear("record.queue_full")
            except (sqlite3.Error, RecordError, OSError) as e:
                self._count("db_errors")
                self._raise("record.database", "critical", f"production record cannot be written: {e}")
                if con is not None:
                    try:
                        con.close()
                    except sqlite3.Error:
                        pass
                    con = None
                if self._closed:
                    closing_failures += 1
                    if closing_failures >= self.CLOSE_RETRIES:
                        # Closing and the database still refuses: say how much is lost rather than hang.
                        while True:
                            try:
                                pending.append(self._q.get_nowait())
                            except queue.Empty:
                                break
                        with self._side_lock:
                            pending.extend(self._side)
                            self._side.clear()
                        self._count("lost", sum(1 for it in pending if isinstance(it, tuple)))
                        for it in pending:
                            if isinstance(it, _Flush):
                                it.done.set()
                        break
                time.sleep(self.retry_s)
                continue
            for it in pending:
                if isinstance(it, _Flush):
                    it.done.set()
                elif it is _STOP:
                    stop = True
            pending = []
            if stop:
                break
        if con is not None:
            try:
                con.execute("UPDATE runs SET ended=? WHERE id=?", (self.wall_clock(), self.run_id))
                con.close()
            except sqlite3.Error:
                pass

    def _write_batch(self, con: sqlite3.Connection, items: list[Any]) -> None:
        written = alarms = events = dup = 0
        con.execute("BEGIN")
        try:
            for idx, it in enumerate(items):
                if not isinstance(it, tuple):
                    continue
                kind = it[0]
                if kind == "scallop":
                    rec: ScallopRecord = it[1]
                    snap_name = it[3] if len(it) > 3 else None
                    if snap_name is None and it[2] is not None:
                        snap_name = self._save_snapshot(rec, it[2])
                        # Remember the file so a retried batch does not write it again.
                        items[idx] = ("scallop", rec, None, snap_name or "")
                    try:
                        con.execute(
                            f"INSERT INTO scallops ({', '.join(_SCALLOP_COLS)}) VALUES ({', '.join('?' * len(_SCALLOP_COLS))})",
                            (
                                self.run_id,
                                rec.track_id,
                                rec.time,
                                rec.encoder_mm,
                                rec.x_mm,
                                rec.y_mm,
                                rec.diameter_mm,
                                rec.score,
                                rec.views,
                                int(bool(rec.uro_found)),
                                rec.uro_x_mm,
                                rec.uro_y_mm,
                                rec.uro_score,
                                rec.grasp_x_mm,
                                rec.grasp_y_mm,
                                rec.pull_angle_deg,
                                rec.arm,
                                rec.result,
                                rec.skip_reason,
                                _b(rec.uro_removed),
                                _b(rec.adductor_hit),
                                int(bool(rec.doubtful)),
                                snap_name or None,
                                json.dumps(rec.detail, default=str),
                            ),
                        )
                        written += 1
                    except sqlite3.IntegrityError:
                        dup += 1
                elif kind == "alarm":
                    a, t = it[1], it[2]
                    con.execute(
                        "INSERT INTO alarms (run_id, alarm_id, time, severity, source, text, acked, acked_by, acked_time, active, cleared_time)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                        " ON CONFLICT (run_id, alarm_id) DO UPDATE SET"
                        "  acked_time = CASE WHEN excluded.acked AND NOT alarms.acked THEN excluded.acked_time ELSE alarms.acked_time END,"
                        "  cleared_time = CASE WHEN NOT excluded.active AND alarms.active THEN excluded.cleared_time ELSE alarms.cleared_time END,"
                        "  acked = excluded.acked, acked_by = excluded.acked_by, active = excluded.active,"
                        "  severity = excluded.severity, text = excluded.text",
                        (
                            self.run_id,
                            int(a.id),
                            float(a.time),
                            a.severity,
                            a.source,
                            a.text,
                            int(bool(a.acked)),
                            a.acked_by,
                            t if a.acked else None,
                            int(bool(a.active)),
                            t if not a.active else None,
                        ),
                    )
                    alarms += 1
                elif kind == "event":
                    t, k, user, detail = it[1]
                    con.execute(
                        "INSERT INTO events (run_id, time, kind, user, detail) VALUES (?, ?, ?, ?, ?)",
                        (self.run_id, t, k, user, detail),
                    )
                    events += 1
            con.execute("COMMIT")
        except BaseException:
            try:
                con.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise
        with self._stats_lock:
            self._stats["written"] += written
            self._stats["alarms_written"] += alarms
            self._stats["events_written"] += events
            self._stats["duplicates"] += dup
        if dup:
            self._notify(
                "record.duplicate",
                "warning",
                f"{dup} scallop(s) were recorded twice; the second record was refused",
                True,
            )
        self._enforce_budget(con)

    # -- snapshots

    def _save_snapshot(self, rec: ScallopRecord, jpeg: bytes) -> str | None:
        if self.snapshot_dir is None or not jpeg:
            return None
        if len(jpeg) > self.snapshot_budget_bytes:
            self._count("snapshot_failures")
            return None
        stamp = datetime.fromtimestamp(rec.time).strftime("%Y%m%d-%H%M%S-%f")
        name = f"{stamp}_r{self.run_id}_t{rec.track_id}_{rec.result}.jpg"
        path = self.snapshot_dir / name
        try:
            write_snapshot_file(path, jpeg)
        except OSError as e:
            self._count("snapshot_failures")
            try:
                path.unlink()
            except OSError:
                pass
            what = "disk full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else (e.strerror or str(e))
            self._raise(
                "record.snapshot_disk",
                "warning",
                f"snapshot frames are not being kept ({what} in {self.snapshot_dir}); the line carries on",
            )
            return None
        self._clear("record.snapshot_disk")
        self._snap_files.append((name, len(jpeg)))
        with self._stats_lock:
            self._stats["snapshots_written"] += 1
            self._stats["snapshot_bytes"] += len(jpeg)
        return name

    def _enforce_budget(self, con: sqlite3.Connection) -> None:
        if self.snapshot_dir is None:
            return
        removed = []
        while self._snap_files and self._stats["snapshot_bytes"] > self.snapshot_budget_bytes:
            name, size = self._snap_files.popleft()
            try:
                (self.snapshot_dir / name).unlink()
            except FileNotFoundError:
                pass
            except OSError:
                self._snap_files.appendleft((name, size))
                break
            removed.append(name)
            with self._stats_lock:
                self._stats["snapshot_bytes"] -= size
                self._stats["snapshots_deleted"] += 1
        if removed:
            con.executemany("UPDATE scallops SET snapshot=NULL WHERE snapshot=?", [(n,) for n in removed])


def write_snapshot_file(path: Path, data: bytes) -> None:
    """Write one snapshot (a module function so tests can make the disk "full")."""
    with open(path, "xb") as f:
        f.write(data)


# ---------------------------------------------------------------------------- reading


@dataclass
class ShiftSummary:
    label: str  # "2024-05-01" or the range
    start: float  # epoch s, inclusive
    end: float  # epoch s, exclusive
    seen: int = 0
    picked: int = 0  # picks executed
    failed: int = 0  # picks aborted or errored
    skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    uro_found: int = 0
    uro_removed: int = 0
    missed: int = 0  # picked without removing the uro, plus failed
    adductor_hits: int = 0
    removal_rate: float | None = None  # uro_removed / uro_found; None with no uro found
    by_arm: dict[str, dict[str, int]] = field(default_factory=dict)  # arm -> picked, failed, uro_removed, adductor_hits
    per_hour: list[dict] = field(default_factory=list)  # {"hour": "06:00", "seen", "uro_removed"}
    first: float | None = None
    last: float | None = None
    per_minute: float = 0.0  # seen per minute between the first and last scallop
    alarms: int = 0
    critical_alarms: int = 0
    unacked_alarms: int = 0
    snapshots: int = 0  # frames still kept
    runs: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        """The summary as the shift leader reads it."""

        def fmt_t(t: float | None) -> str:
            return datetime.fromtimestamp(t).strftime("%H:%M:%S") if t is not None else "-"

        rate = f"{self.removal_rate * 100:.1f} %" if self.removal_rate is not None else "-"
        lines = [
            f"shift {self.label}  ({datetime.fromtimestamp(self.start):%Y-%m-%d %H:%M} .. {datetime.fromtimestamp(self.end):%Y-%m-%d %H:%M})",
            f"  scallops seen     {self.seen:8d}   first {fmt_t(self.first)}  last {fmt_t(self.last)}  ({self.per_minute:.1f}/min)",
            f"  picked            {self.picked:8d}   failed {self.failed}",
            f"  uro removed       {self.uro_removed:8d}   {rate} of {self.uro_found} with a uro found",
            f"  missed            {self.missed:8d}",
            f"  adductor hits     {self.adductor_hits:8d}",
            f"  skipped           {self.skipped:8d}",
        ]
        for reason, n in sorted(self.skipped_by_reason.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"    {reason:<20s}{n:6d}")
        for arm, d in sorted(self.by_arm.items()):
            lines.append(
                f"  arm {arm:<14s}{d['picked']:8d} picks, {d['uro_removed']} uro removed, "
                f"{d['failed']} failed, {d['adductor_hits']} adductor hits"
            )
        lines.append(
            f"  alarms            {self.alarms:8d}   critical {self.critical_alarms}, not acknowledged {self.unacked_alarms}"
        )
        lines.append(f"  snapshots kept    {self.snapshots:8d}")
        return "\n".join(lines)


CSV_COLUMNS = (
    "time_iso",
    "time",
    "run_id",
    "track_id",
    "encoder_mm",
    "x_mm",
    "y_mm",
    "diameter_mm",
    "score",
    "views",
    "uro_found",
    "uro_x_mm",
    "uro_y_mm",
    "uro_score",
    "grasp_x_mm",
    "grasp_y_mm",
    "pull_angle_deg",
    "arm",
    "result",
    "skip_reason",
    "uro_removed",
    "adductor_hit",
    "doubtful",
    "snapshot",
    "detail",
)


class Record:
    """Read access to a production record (its own connection; safe while the line writes)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._con = open_db(self.path, create=False)

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Record:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def scallops(self, start: float = -math.inf, end: float = math.inf) -> list[dict]:
        cur = self._con.execute("SELECT * FROM scallops WHERE time >= ? AND time < ? ORDER BY time, id", (start, end))
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row)) for row in cur]

    def alarms(self, start: float = -math.inf, end: float = math.inf) -> list[dict]:
        cur = self._con.execute("SELECT * FROM alarms WHERE time >= ? AND time < ? ORDER BY time, id", (start, end))
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row)) for row in cur]

    def events(self, start: float = -math.inf, end: float = math.inf) -> list[dict]:
        cur = self._con.execute("SELECT * FROM events WHERE time >= ? AND time < ? ORDER BY time, id", (start, end))
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row)) for row in cur]

    def summary(self, start: float, end: float, label: str = "") -> ShiftSummary:
        c = self._con
        s = ShiftSummary(
            label=label or f"{datetime.fromtimestamp(start):%Y-%m-%d %H:%M}..{datetime.fromtimestamp(end):%H:%M}",
            start=start,
            end=end,
        )
        row = c.execute(
            "SELECT COUNT(*), SUM(result='picked'), SUM(result='failed'), SUM(result='skipped'), SUM(uro_found),"
            " SUM(uro_removed=1), SUM(result='picked' AND uro_removed=0) + SUM(result='failed'), SUM(adductor_hit=1),"
            " MIN(time), MAX(time), SUM(snapshot IS NOT NULL), COUNT(DISTINCT run_id)"
            " FROM scallops WHERE time >= ? AND time < ?",
            (start, end),
        ).fetchone()
        (
            s.seen,
            s.picked,
            s.failed,
            s.skipped,
            s.uro_found,
            s.uro_removed,
            s.missed,
            s.adductor_hits,
            s.first,
            s.last,
            s.snapshots,
            s.runs,
        ) = (row[0],) + tuple(int(v or 0) for v in row[1:8]) + (row[8], row[9], int(row[10] or 0), row[11])
        s.removal_rate = s.uro_removed / s.uro_found if s.uro_found else None
        if s.first is not None and s.last is not None and s.last > s.first:
            s.per_minute = s.seen / ((s.last - s.first) / 60.0)
        s.skipped_by_reason = dict(
            c.execute(
                "SELECT skip_reason, COUNT(*) FROM scallops WHERE result='skipped' AND time >= ? AND time < ?"
                " GROUP BY skip_reason",
                (start, end),
            ).fetchall()
        )
        for arm, picked, failed, removed, hits in c.execute(
            "SELECT arm, SUM(result='picked'), SUM(result='failed'), SUM(uro_removed=1), SUM(adductor_hit=1)"
            " FROM scallops WHERE arm != '' AND time >= ? AND time < ? GROUP BY arm",
            (start, end),
        ):
            s.by_arm[arm] = dict(
                picked=int(picked or 0),
                failed=int(failed or 0),
                uro_removed=int(removed or 0),
                adductor_hits=int(hits or 0),
            )
        hours: dict[str, dict] = {}
        for t, removed in c.execute(
            "SELECT time, uro_removed FROM scallops WHERE time >= ? AND time < ? ORDER BY time", (start, end)
        ):
            h = datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:00")
            d = hours.setdefault(h, {"hour": h, "seen": 0, "uro_removed": 0})
            d["seen"] += 1
            d["uro_removed"] += 1 if removed == 1 else 0
        s.per_hour = list(hours.values())
        a = c.execute(
            "SELECT COUNT(*), SUM(severity='critical'), SUM(acked=0) FROM alarms WHERE time >= ? AND time < ?",
            (start, end),
        ).fetchone()
        s.alarms, s.critical_alarms, s.unacked_alarms = a[0], int(a[1] or 0), int(a[2] or 0)
        return s

    def export_csv(self, out: str | Path | TextIO, start: float = -math.inf, end: float = math.inf) -> int:
        """Write the scallop rows in [start, end) as CSV (``-`` = stdout); returns the row count."""
        if isinstance(out, (str, Path)) and str(out) == "-":
            return self._write_csv(sys.stdout, start, end)
        if isinstance(out, (str, Path)):
            p = Path(out)
            if p.parent and not p.parent.is_dir():
                raise FileNotFoundError(f"{p.parent}: no such folder for the CSV file")
            with p.open("w", newline="", encoding="utf-8") as f:
                return self._write_csv(f, start, end)
        return self._write_csv(out, start, end)

    def _write_csv(self, f: TextIO, start: float, end: float) -> int:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        n = 0
        for r in self.scallops(start, end):
            r["time_iso"] = datetime.fromtimestamp(r["time"]).astimezone().isoformat(timespec="milliseconds")
            w.writerow(["" if r.get(c) is None else r.get(c) for c in CSV_COLUMNS])
            n += 1
        return n


def _parse_hhmm(s: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", s or "")
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise RecordError(f"day start {s!r}: expected a time like 06:00")
    return int(m.group(1)), int(m.group(2))


def shift_range(spec: str, day_start: str = "00:00", now: datetime | None = None) -> tuple[float, float, str]:
    """``(start, end, label)`` in epoch seconds for a production day: ``today``, ``yesterday``
    or a date ``YYYY-MM-DD``, in local time. With ``day_start="06:00"`` a day runs from 06:00 to
    06:00 the next morning, and "today" at 03:00 is still the day that began yesterday 06:00."""
    hh, mm = _parse_hhmm(day_start)
    now = now or datetime.now()
    today_start = datetime.combine(now.date(), datetime.min.time()).replace(hour=hh, minute=mm)
    current = now.date() if now >= today_start else now.date() - timedelta(days=1)
    if spec == "today":
        d = current
    elif spec == "yesterday":
        d = current - timedelta(days=1)
    else:
        try:
            d = date.fromisoformat(spec)
        except (TypeError, ValueError):
            raise RecordError(f"shift {spec!r}: expected today, yesterday or a date like 2024-05-01") from None
    start = datetime.combine(d, datetime.min.time()).replace(hour=hh, minute=mm)
    end = datetime.combine(d + timedelta(days=1), datetime.min.time()).replace(hour=hh, minute=mm)
    return start.timestamp(), end.timestamp(), d.isoformat()
