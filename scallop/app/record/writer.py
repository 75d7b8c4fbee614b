"""The writer: a bounded queue drained into SQLite by one thread, and the snapshot frames."""

from __future__ import annotations

import errno
import json
import queue
import socket
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scallop.app.record.rows import ScallopRecord
from scallop.app.record.schema import _SCALLOP_COLS, RecordError, open_db

if TYPE_CHECKING:
    from scallop.app.line_api import Alarm


def _b(v: bool | None) -> int | None:
    return None if v is None else int(bool(v))


class _Flush:
    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()
_WAKE = object()


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
            # Called through the package: scallop.app.record.write_snapshot_file is the name tests
            # replace to make the disk "full", and it must keep working after the split.
            from scallop.app import record

            record.write_snapshot_file(path, jpeg)
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
