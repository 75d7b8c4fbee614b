"""The writer: a bounded queue drained into SQLite by one thread, and the snapshot frames."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import queue
import socket
import sqlite3
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scallop.app.record.retention import RetentionPolicy, apply_retention, free_mb
from scallop.app.record.rows import ScallopRecord, check_lot
from scallop.app.record.schema import (
    _SCALLOP_COLS,
    JOURNAL_SUFFIXES,
    SHADOW_COLS,
    RecordError,
    _connect,
    damage_words,
    open_db,
)
from scallop.app.version import program_version

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
    """Thread-safe writer of one run's record (see the module doc).

    Rows go through a queue drained by one thread, except a pick's intent
    (:meth:`pick_intent`), which is committed before the call returns: the arm is sent
    nothing the record does not hold.

    ``on_alarm(key, severity, text, active)`` is called from whichever thread hit the condition
    (the caller for a full queue or a refused pick intent, the writer thread otherwise); keys
    are ``record.queue_full``, ``record.database``, ``record.picks`` and
    ``record.snapshot_disk``. Without a callback the writer puts those alarms in its own
    alarms table (negative alarm ids).
    """

    SIDE_MAX = 10_000  # alarms and events waiting; past it they are dropped (and counted)
    CLOSE_RETRIES = 3  # database failures tolerated after close() before the rest goes to the spill file
    SNAPSHOT_BACKLOG = 256  # rows waiting past which new rows keep no frame (the memory is the rows')
    # A pick intent waits this long for the database before the pick is refused: the arm's
    # thread waits on it, and its heartbeat must reach the arm within the arm's watchdog (1 s by
    # default). A disk that hangs (an outside try froze it) no longer stops the heartbeat.
    INTENT_TIMEOUT_S = 0.5
    # The writer thread busy on one batch this long: its disk is not answering (alarmed).
    STALL_ALARM_S = 5.0
    # Damaged records set aside in one run at most: a disk that damages every new one too is
    # failing, and gets the database alarm and the spill file, not a folder of set-aside files.
    MAX_SET_ASIDE = 3

    def __init__(
        self,
        path: str | Path,
        *,
        snapshot_dir: str | Path | None = None,
        snapshot_budget_bytes: int = 500_000_000,
        queue_size: int = 100_000,
        batch: int = 500,
        on_alarm: AlarmCallback | None = None,
        wall_clock: Callable[[], float] = time.time,
        retry_s: float = 0.5,
        note: str = "",
        retention: RetentionPolicy | None = None,
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
            spilled=0,
            picks_recorded=0,
            picks_refused=0,
            snapshots_written=0,
            snapshots_deleted=0,
            snapshot_failures=0,
            snapshot_bytes=0,
            lost_with_file=0,
            in_damaged_file=0,
        )
        self._alarm_state: dict[str, bool] = {}
        self._failed_at: dict[str, float] = {}  # monotonic: the last failure behind a quiet-cleared alarm
        self._side: deque[Any] = deque()
        self._side_lock = threading.Lock()
        self._own_alarm_id = 0
        self._own_alarms: dict[str, Alarm] = {}
        self._closed = False
        self._intent_con: sqlite3.Connection | None = None  # used by the intent worker only
        self._intent_lock = threading.Lock()
        self._intent_worker: _Worker | None = None  # started with the first pick intent
        self._intent_late: Future | None = None  # a write given up on, still running
        self._intent_stale = False  # the intent connection is on a file since replaced
        # (why, file id): the intent worker found the record damaged; the writer thread sets it aside
        self._damage_seen: tuple[str, tuple[int, int] | None] | None = None
        self._busy_since: float | None = None  # monotonic: the writer thread's current batch began
        self.spill_path: Path | None = None  # where rows the database refused at close went
        self.retention = retention
        self._next_maintenance = 0.0  # monotonic; retention and the disk check run in the writer thread
        self._next_disk_check = 0.0
        self._lock_fd: int | None = None  # held while the run lives: a start that finds it free saw a crash
        self._file_id: tuple[int, int] | None = None  # the record's file as opened (a replaced one is found)
        self._written_to_file = 0  # rows written before the file now in use (one replaced mid-run)
        self.last_events: dict[str, dict] = {}

        self.set_aside: list[str] = []  # damaged records moved out of the way during this run
        try:
            # SQLite takes an empty file for a new database: a record truncated to nothing (a
            # disk's doing) started over, run ids from 1, without a word (an outside try).
            emptied = self.path.is_file() and self.path.stat().st_size == 0
        except OSError:
            emptied = False
        try:
            self._start_run(note)
        except RecordError as e:
            # Not "not a database": at start a wrong [record] path to somebody's file says it too.
            why = damage_words(e.__context__, first_page_too=False)
            if why is None:
                raise
            # A damaged record let the line start and then spilled every row, with advice to
            # import them into a file that could never take them (an outside try).
            try:
                self._set_aside_damaged(why, mid_run=False)
            except OSError as e2:
                raise RecordError(
                    f"{self.path}: the production record is damaged ({why}) and cannot be moved aside to start "
                    f"a new one: {e2.strerror or e2}"
                ) from None
            self._start_run(note)

        if emptied:
            self._raise(
                "record.emptied",
                "critical",
                f"the production record {self.path} was an empty file: a new record was started in it; if it held "
                "production rows, they are gone from this disk and the last backup has them",
            )
        lot = self.last_events.get("lot", {}).get("detail", {}).get("lot", "")
        self.lot = lot if isinstance(lot, str) else ""  # stamped on every row from now on
        self._snap_files: deque[tuple[str, int]] = deque()  # (name, bytes), oldest first
        if self.snapshot_dir is not None:
            try:
                self.snapshot_dir.mkdir(parents=True, exist_ok=True)
                for p in sorted(self.snapshot_dir.glob("*.jpg")):
                    try:
                        self._snap_files.append((p.name, p.stat().st_size))
                    except OSError:
                        pass
            except OSError as e:
                # As a full snapshot disk mid-run: a warning, the line carries on without frames (an
                # outside try's start ended in "internal error", a crashed run left each time).
                self._raise(
                    "record.snapshot_disk",
                    "warning",
                    f"snapshot frames are not being kept ({self.snapshot_dir} cannot be used: {e.strerror or e}); "
                    "the line carries on",
                )
            self._stats["snapshot_bytes"] = sum(s for _, s in self._snap_files)

        self._thread = threading.Thread(target=self._run, name="record-writer", daemon=True)
        self._thread.start()

    def _start_run(self, note: str) -> None:
        con = open_db(self.path, create=True)
        try:
            # One transaction: no other start sees this run before its lock is held.
            con.execute("BEGIN IMMEDIATE")
            self.crashed_runs = mark_crashed_runs(con, self.path)
            self.previous_run = _last_run(con)
            # What the line carries over a restart: the lot in production, the last shift check.
            self.last_events = _last_events(con, CARRIED_EVENTS)
            self._started = self.wall_clock()
            cur = con.execute(
                "INSERT INTO runs (started, host, note, pid, version) VALUES (?, ?, ?, ?, ?)",
                (self._started, socket.gethostname(), note, os.getpid(), program_version()),
            )
            self.run_id = int(cur.lastrowid)
            self._lock_fd = _try_lock(_run_lock_path(self.path, self.run_id))
            con.execute("COMMIT")
            self._file_id = _file_id(self.path)
        except (sqlite3.Error, OSError) as e:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise RecordError(f"{self.path}: cannot write the production record ({_why(e)})") from None
        finally:
            con.close()

    def _set_aside_damaged(self, why: str, mid_run: bool) -> None:
        """Move a damaged record (SQLite's own verdict: pages that do not hold together) out of
        the way, with its journal files, and name it in a critical alarm; the caller starts a new
        one in its place. Nothing is deleted: what is still readable in it stays there for an
        engineer (``scallop record check``, a backup to restore)."""
        stamp = time.strftime("%Y%m%dT%H%M%S")  # the computer's time: a replay's virtual clock names no file
        aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}-{n}")
        # The journal goes with its database: a new record beside an old -wal would read it as its own.
        for suffix in ("", *JOURNAL_SUFFIXES):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                os.replace(src, f"{aside}{suffix}")
        self.set_aside.append(str(aside))
        when = "during the run" if mid_run else "at start"
        self._raise(
            "record.damaged",
            "critical",
            f"the production record {self.path} is damaged ({why}): it is kept as {aside.name} and a new "
            f"record is started in its place {when}; its older rows are in the last backup",
        )

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
        if snapshot_jpeg is not None and self._q.qsize() > self.SNAPSHOT_BACKLOG:
            # The database is behind (or failing): rows are kept until it takes them again,
            # their frames are not (a frame is a hundred times a row).
            self._count("snapshot_failures")
            snapshot_jpeg = None
        if not rec.lot:
            rec.lot = self.lot
        return self._put(("scallop", rec, snapshot_jpeg))

    def pick_intent(self, track_id: int, arm: str, grasp_xy: tuple[float, float] | None = None) -> int:
        """Commit "``arm`` is about to be sent the pick of ``track_id``" and return the row's id;
        called before the arm's commit, which must not go out if this raises
        :class:`RecordError` (the record is not writable: alarmed as ``record.picks``). The
        scallop's row, when it comes, closes the intent; one left ``sending`` by a crash is
        marked ``unknown`` at the next start."""
        if self._closed:
            raise RecordError("the record writer is closed")
        gx, gy = (None, None) if grasp_xy is None else (float(grasp_xy[0]), float(grasp_xy[1]))
        limit = self.INTENT_TIMEOUT_S
        with self._intent_lock:
            late = self._intent_late
            if late is not None and not late.done():
                self._refuse_intent(track_id, f"its disk has not answered for more than {limit:g} s")
            if self._intent_worker is None:
                self._intent_worker = _Worker("record-intent")
            fut = self._intent_worker.submit(self._insert_intent, track_id, arm, gx, gy)
            try:
                row_id = fut.result(timeout=limit)
            except FutureTimeout:
                # Its row may still land: marked as never sent once it does (same worker, in order).
                self._intent_late = fut
                self._intent_worker.submit(self._withdraw_late_intent, fut)
                self._refuse_intent(track_id, f"its disk did not answer within {limit:g} s")
            except (sqlite3.Error, OSError) as e:
                self._refuse_intent(track_id, _why(e))
        self._count("picks_recorded")
        self._clear_quiet("record.picks")
        return row_id

    def _refuse_intent(self, track_id: int, why: str) -> None:
        self._count("picks_refused")
        self._raise(
            "record.picks",
            "critical",
            f"production record cannot be written ({why}): no picks are sent until it can",
        )
        raise RecordError(f"{self.path}: the pick of scallop {track_id} could not be recorded ({why})") from None

    def _insert_intent(self, track_id: int, arm: str, gx: float | None, gy: float | None) -> int:
        """The intent worker: one synced row. Its connection lives and dies in that thread."""
        try:
            if self._intent_stale:  # the record's file was replaced: this connection writes into the old one
                self._intent_stale = False
                self._close_intent_con()
            if self._intent_con is None:
                con = _connect(self.path)
                # The one row a crash or power cut must not lose: synced at each commit.
                con.execute("PRAGMA synchronous=FULL")
                con.execute(f"PRAGMA busy_timeout={int(self.INTENT_TIMEOUT_S * 1000)}")
                self._intent_con = con
            cur = self._intent_con.execute(
                "INSERT INTO picks (run_id, track_id, arm, time, grasp_x_mm, grasp_y_mm, state, lot)"
                " VALUES (?, ?, ?, ?, ?, ?, 'sending', ?)",
                (self.run_id, int(track_id), str(arm), self.wall_clock(), gx, gy, self.lot),
            )
            return int(cur.lastrowid)
        except (sqlite3.Error, OSError) as e:
            self._close_intent_con()
            why = damage_words(e)
            if why is not None:
                # The writer thread sets it aside (one thread moves files); woken for it.
                self._damage_seen = (why, self._file_id)
                try:
                    self._q.put_nowait(_WAKE)
                except queue.Full:
                    pass
            raise

    def withdraw_intent(self, row_id: int) -> None:
        """A recorded intent whose commit never went out: closed as ``not_sent`` (by the intent
        worker, in order after the intent itself; nothing waits on it)."""
        with self._intent_lock:
            if self._intent_worker is None or self._closed:
                return
            self._intent_worker.submit(self._mark_not_sent, int(row_id))

    def _withdraw_late_intent(self, fut: Future) -> None:
        """An intent written after its pick was refused: never sent, closed as such (left
        'sending' it would read as a pick of unknown outcome)."""
        if fut.exception() is None:
            self._mark_not_sent(fut.result())

    def _mark_not_sent(self, row_id: int) -> None:
        """The intent worker: close an intent whose commit never went out."""
        if self._intent_con is None:
            return
        try:
            self._intent_con.execute(
                "UPDATE picks SET state='done', result='not_sent', ended=? WHERE id=? AND state='sending'",
                (self.wall_clock(), row_id),
            )
        except (sqlite3.Error, OSError):
            self._close_intent_con()

    def _file_gone(self, con: sqlite3.Connection | None) -> sqlite3.Connection:
        """The record's file was deleted or replaced under the running line (an outside try
        deleted its folder: every row went on into a file no longer there, no alarm, exit 0).
        A new record is started at the same place with this run's row, the loss is alarmed for
        the rest of the run and named at its end (non-zero exit)."""
        _close_quietly(con)
        with self._stats_lock:
            rows = self._rows_of_run()
            gone, self._written_to_file = rows - self._written_to_file, rows
            self._stats["lost_with_file"] += gone
        self._raise(
            "record.file_gone",
            "critical",
            f"the production record {self.path} was deleted or replaced while the line ran: the {gone} "
            "row(s) of this run written to it before are gone with it; a new record is started there",
        )
        return self._new_record_in_place("record file replaced mid-run")

    def _rows_of_run(self) -> int:
        """Rows this run has put in the record so far, of every kind (the stats lock held):
        an outside try's damaged record held the run's start event and two pick intents, and
        the run, counting scallops only, exited 0."""
        s = self._stats
        return s["written"] + s["alarms_written"] + s["events_written"] + s["picks_recorded"]

    def _damaged_mid_run(self, con: sqlite3.Connection | None, why: str) -> sqlite3.Connection:
        """SQLite found the record's pages damaged under the running line: set aside (its rows
        of this run are named at the end: they may still be read there) and a new record started."""
        _close_quietly(con)
        self._damage_seen = None
        with self._stats_lock:
            rows = self._rows_of_run()
            self._stats["in_damaged_file"] += rows - self._written_to_file
            self._written_to_file = rows
        self._set_aside_damaged(why, mid_run=True)
        return self._new_record_in_place(f"record damaged mid-run, set aside as {Path(self.set_aside[-1]).name}")

    def _new_record_in_place(self, note: str) -> sqlite3.Connection:
        """A new record at the record's path holding this run (same id) from now on."""
        new = open_db(self.path, create=True)  # its folder again too; raises what stands in the way
        new.execute(
            "INSERT OR IGNORE INTO runs (id, started, host, note, pid, version) VALUES (?, ?, ?, ?, ?, ?)",
            (self.run_id, self._started, socket.gethostname(), note, os.getpid(), program_version()),
        )
        if self._lock_fd is not None:
            os.close(self._lock_fd)
        self._lock_fd = _try_lock(_run_lock_path(self.path, self.run_id))
        self._file_id = _file_id(self.path)
        self._intent_stale = True  # pick intents too go to the new file from now on
        return new

    def stalled(self) -> None:
        """Called often from any thread: a batch the writer thread has been on for more than
        STALL_ALARM_S is a disk that does not answer (hung, a dead network share): alarmed
        (an outside try froze the disk and the screen said nothing). Clears with the next batch
        written."""
        since = self._busy_since
        if since is not None and time.monotonic() - since > self.STALL_ALARM_S:
            self._raise(
                "record.database",
                "critical",
                f"production record: its disk has not answered for {self.STALL_ALARM_S:g} s ({self.path})",
            )

    def _close_intent_con(self) -> None:
        _close_quietly(self._intent_con)
        self._intent_con = None

    def problems(self) -> list[str]:
        """What this run's record could not keep, in words (empty when everything was written)."""
        s = self.stats()
        out = []
        if s["dropped"]:
            out.append(f"{s['dropped']} row(s) dropped because the record's queue was full")
        if s["spilled"]:
            out.append(
                f"{s['spilled']} row(s) could not be written to {self.path} and were saved to {self.spill_path} "
                f"(add them with 'scallop record import {self.spill_path}' once the record can be written)"
            )
        if s["lost"]:
            out.append(f"{s['lost']} row(s) could not be written to {self.path} nor saved anywhere")
        if s["lost_with_file"]:
            out.append(
                f"{self.path} was deleted or replaced during the run: {s['lost_with_file']} row(s) written to it "
                "before are gone with it (a backup may hold them)"
            )
        if s["in_damaged_file"]:
            out.append(
                f"{self.path} was found damaged during the run and set aside as {Path(self.set_aside[-1]).name}: "
                f"{s['in_damaged_file']} row(s) of this run went into it before and may not all be readable "
                "there (keep that file for an engineer)"
            )
        if s["queued"] and self._closed:
            out.append(f"{s['queued']} row(s) were still waiting when the writer stopped")
        return out

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

    def set_lot(self, lot: str) -> str:
        """The production lot stamped on every row queued from now on (checked; '' = none)."""
        self.lot = check_lot(lot)
        return self.lot

    def alarm(self, alarm: Alarm) -> bool:
        """Record an alarm; call again with the same ``alarm.id`` when it is acked or cleared."""
        return self._put_side(("alarm", alarm, self.wall_clock(), self.lot))

    def event(self, kind: str, user: str = "", detail: dict | None = None) -> bool:
        """An operator action or line event (start, stop, estop, recipe, login, config...)."""
        return self._put_side(
            ("event", (self.wall_clock(), str(kind), str(user), json.dumps(detail or {}, default=str), self.lot))
        )

    def shadow(self, row: dict) -> bool:
        """One interval of shadow mode (the ``shadow`` table; keys are its columns but ``run_id``)."""
        missing = [c for c in SHADOW_COLS[1:] if c not in row]
        if missing:
            raise RecordError(f"shadow row lacks {', '.join(missing)}")
        return self._put_side(("shadow", tuple(row[c] for c in SHADOW_COLS[1:])))

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
        with self._intent_lock:
            if self._intent_worker is not None:
                done = self._intent_worker.submit(self._close_intent_con)
                try:
                    done.result(timeout=max(0.1, deadline - time.monotonic()))
                except FutureTimeout:
                    pass  # stuck on a hung disk: its thread is a daemon, the process may still end
                self._intent_worker.stop()

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

    # A database alarm clears only after this long without the failure: a nearly full disk lets
    # some batches through, and each one cleared the alarm (an outside try: 8 raised and cleared
    # in 30 s, 8 entries on the screen).
    ALARM_QUIET_S = 10.0
    _QUIET_KEYS = ("record.database", "record.picks")

    def _raise(self, key: str, severity: str, text: str) -> None:
        if key in self._QUIET_KEYS:
            self._failed_at[key] = time.monotonic()
        if self._alarm_state.get(key):
            return
        self._alarm_state[key] = True
        self._notify(key, severity, text, True)

    def _clear_quiet(self, key: str) -> None:
        """Clear ``key`` once its failure has not come back for ALARM_QUIET_S."""
        if self._alarm_state.get(key) and time.monotonic() - self._failed_at.get(key, -1e18) >= self.ALARM_QUIET_S:
            self._clear(key)

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
            self._side.append(("alarm", alarm, self.wall_clock(), self.lot))

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
            self._busy_since = time.monotonic()
            try:
                if self._file_id is not None and _file_id(self.path) != self._file_id:
                    con = self._file_gone(con)
                seen = self._damage_seen
                if seen is not None and seen[1] == self._file_id and len(self.set_aside) < self.MAX_SET_ASIDE:
                    con = self._damaged_mid_run(con, seen[0])
                try:
                    if con is None:
                        con = open_db(self.path, create=True)
                    self._write_batch(con, pending)
                except (sqlite3.Error, RecordError) as e:
                    why = damage_words(e if isinstance(e, sqlite3.Error) else e.__context__)
                    if why is None or len(self.set_aside) >= self.MAX_SET_ASIDE:
                        raise
                    con = self._damaged_mid_run(con, why)
                    self._write_batch(con, pending)  # the same batch, into the new record
                self._maintain()  # never raises: a failure here must not make the batch written twice
                self._busy_since = None
                self._clear_quiet("record.database")
                if self._alarm_state.get("record.queue_full") and self._q.qsize() < self._q.maxsize // 2:
                    self._clear("record.queue_full")
            except (sqlite3.Error, RecordError, OSError) as e:
                self._busy_since = None
                self._count("db_errors")
                self._raise("record.database", "critical", f"production record cannot be written: {e}")
                _close_quietly(con)
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
                        self._spill([it for it in pending if isinstance(it, tuple)], run_end=True)
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
            self._end_run(con)

    def _end_run(self, con: sqlite3.Connection) -> None:
        """Mark the run ended, then read the record back with a fresh connection: damage that
        came in the run's last moments hid behind this connection's cached pages, and the run
        ended 0 on a record the next start refused, its rows inside (an outside try)."""
        try:
            con.execute("UPDATE runs SET ended=? WHERE id=?", (self.wall_clock(), self.run_id))
            con.close()
            why = self._unreadable()
            if why is not None and len(self.set_aside) < self.MAX_SET_ASIDE:
                new = self._damaged_mid_run(None, why)
                # The alarm has no writer left to record it (an outside try found the new record
                # silent): the event says it in the record itself.
                detail = {
                    "set_aside": Path(self.set_aside[-1]).name,
                    "why": why,
                    "rows": self.stats()["in_damaged_file"],
                }
                new.execute(
                    _SQL["events"],
                    (self.run_id, self.wall_clock(), "record_damaged", "system", json.dumps(detail), self.lot),
                )
                new.execute("UPDATE runs SET ended=? WHERE id=?", (self.wall_clock(), self.run_id))
                new.close()
        except (sqlite3.Error, RecordError, OSError):
            self._spill([], run_end=True)  # the import ends the run, or it reads "crashed" for good
        else:
            self._release_run_lock()

    def _unreadable(self) -> str | None:
        """SQLite's words if the record no longer reads as this run's (damaged), else None."""
        if _file_id(self.path) != self._file_id:
            return None  # deleted or replaced since the last batch: not damage to this run's file
        try:
            c = _connect(self.path)  # not read-only: the last one out removes the -wal and -shm
            try:
                row = c.execute("SELECT id FROM runs WHERE id=?", (self.run_id,)).fetchone()
            finally:
                c.close()
        except sqlite3.Error as e:
            return damage_words(e)
        return None if row is not None else "this run's row no longer reads back"

    MAINTENANCE_EVERY_S = 6 * 3600.0
    DISK_CHECK_EVERY_S = 60.0

    def _maintain(self) -> None:
        """Retention (at the first batch, then every few hours) and the free-disk check, between
        batches in the writer thread: never in the way of a pick's intent."""
        if self.retention is None:
            return
        now = time.monotonic()
        if now >= self._next_disk_check:
            self._next_disk_check = now + self.DISK_CHECK_EVERY_S
            try:
                left = free_mb(self.path)
            except OSError:
                left = float("inf")  # the database's own errors say what is wrong with the disk
            if left < self.retention.min_free_mb:
                self._raise(
                    "record.disk_low",
                    "critical",
                    f"the disk of the production record has {left:.0f} MB free (limit {self.retention.min_free_mb:g} MB)",
                )
            else:
                self._clear("record.disk_low")
        if now < self._next_maintenance:
            return
        self._next_maintenance = now + self.MAINTENANCE_EVERY_S
        try:
            rep = apply_retention(self.path, self.retention, self.snapshot_dir, now=self.wall_clock())
        except Exception as e:  # noqa: BLE001 - archiving must never cost the rows being written
            self._raise("record.retention", "warning", f"old rows could not be archived: {_why(e)}")
            return
        self._clear("record.retention")
        if rep.snapshots_deleted and self.snapshot_dir is not None:
            present = {p.name for p in self.snapshot_dir.glob("*.jpg")}
            kept = deque((n, size) for n, size in self._snap_files if n in present)
            with self._stats_lock:
                self._stats["snapshot_bytes"] = sum(size for _, size in kept)
                self._stats["snapshots_deleted"] += rep.snapshots_deleted
            self._snap_files = kept
        if rep.changed:
            self.event(
                "retention",
                "system",
                {
                    "archived": rep.archived,
                    "archives": rep.archives,
                    "archives_deleted": rep.archives_deleted,
                    "snapshots_deleted": rep.snapshots_deleted,
                },
            )

    def _release_run_lock(self) -> None:
        if self._lock_fd is not None:
            _run_lock_path(self.path, self.run_id).unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _spill(self, items: list[tuple], run_end: bool = False) -> None:
        """Rows the database still refuses at close, as JSON lines beside it (or, when that
        disk refuses too, in the temporary folder), for ``scallop record import``; with
        ``run_end`` the run's end too (an outside try's run stopped in order on a full disk read
        "crashed" for good after its rows were imported)."""
        if not items and not run_end:
            return
        lines = [json.dumps(_spill_row(self.run_id, it), default=str) for it in items]
        if run_end:
            lines.append(json.dumps({"table": "run_end", "params": [self.run_id, self.wall_clock()]}))
        name = f"{self.path.name}.unwritten-run{self.run_id}.jsonl"
        # In the shared temporary folder the name also says which record and which process:
        # another line's (or an earlier database's) rows must never be appended to these.
        tag = spill_tag(self.path)
        elsewhere = f"{self.path.name}.unwritten-run{self.run_id}-{tag}-pid{os.getpid()}.jsonl"
        for path in (self.path.parent / name, *(d / elsewhere for d in spill_folders())):
            try:
                with open(path, "a", encoding="utf-8") as f:
                    f.write("\n".join(lines) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
            except OSError:
                try:
                    path.unlink()  # a half-written file would be imported as half the rows
                except OSError:
                    pass
                continue
            self.spill_path = path
            self._count("spilled", len(items))
            return
        self._count("lost", len(items))

    def _write_batch(self, con: sqlite3.Connection, items: list[Any]) -> None:
        written = alarms = events = dup = 0
        con.execute("BEGIN")
        try:
            for idx, it in enumerate(items):
                if not isinstance(it, tuple):
                    continue
                if it[0] == "scallop" and len(it) < 4 and it[2] is not None:
                    # Remember the file so a retried batch does not write it again.
                    items[idx] = it = ("scallop", it[1], None, self._save_snapshot(it[1], it[2]) or "")
                table, params = _row(self.run_id, it)
                if table == "scallops":
                    if insert_scallop(con, params):
                        written += 1
                    else:
                        dup += 1
                else:
                    con.execute(_SQL[table], params)
                    alarms += table == "alarms"
                    events += table == "events"
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


_SQL = {
    "scallops": f"INSERT INTO scallops ({', '.join(_SCALLOP_COLS)}) VALUES ({', '.join('?' * len(_SCALLOP_COLS))})",
    "alarms": "INSERT INTO alarms"
    " (run_id, alarm_id, time, severity, source, text, acked, acked_by, acked_time, active, cleared_time, lot)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (run_id, alarm_id) DO UPDATE SET"
    "  acked_time = CASE WHEN excluded.acked AND NOT alarms.acked THEN excluded.acked_time ELSE alarms.acked_time END,"
    "  cleared_time = CASE WHEN NOT excluded.active AND alarms.active THEN excluded.cleared_time ELSE alarms.cleared_time END,"
    "  acked = excluded.acked, acked_by = excluded.acked_by, active = excluded.active,"
    "  severity = excluded.severity, text = excluded.text",
    "events": "INSERT INTO events (run_id, time, kind, user, detail, lot) VALUES (?, ?, ?, ?, ?, ?)",
    "shadow": f"INSERT INTO shadow ({', '.join(SHADOW_COLS)}) VALUES ({', '.join('?' * len(SHADOW_COLS))})",
}

# A scallop's row closes its pick intents: the arm that held it gets the scallop's result, an
# arm that passed it on to another that picked it (late, refused) gets 'handed_on', and one
# whose pick no arm took up gets the scallop's reason ('arm_late' on a one-arm line; an outside
# try read 'handed_on' there, for an arm with nobody downstream).
_CLOSE_INTENTS = (
    "UPDATE picks SET state='done', result=CASE WHEN arm=?1 THEN ?2 WHEN ?1='' THEN ?6 ELSE 'handed_on' END,"
    " ended=?3 WHERE run_id=?4 AND track_id=?5 AND state='sending'"
)


def _row(run_id: int, it: tuple) -> tuple[str, tuple]:
    """A queued item as (table, the parameters of its ``_SQL`` statement)."""
    kind = it[0]
    if kind == "scallop":
        rec: ScallopRecord = it[1]
        snap_name = it[3] if len(it) > 3 else None
        return "scallops", (
            run_id,
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
            rec.disposition,
            rec.lot,
        )
    if kind == "alarm":
        a, t, lot = it[1], it[2], it[3]
        return "alarms", (
            run_id,
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
            lot,
        )
    if kind == "shadow":
        return "shadow", (run_id, *it[1])
    t, k, user, detail, lot = it[1]
    return "events", (run_id, t, k, user, detail, lot)


def spill_tag(path: Path) -> str:
    """The record's mark in the name of a spill file kept away from it."""
    return hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:8]


def spill_folders() -> list[Path]:
    """Where rows go when the record's own folder refuses them too, in order: the service's
    logs and state folders (systemd's LOGS_DIRECTORY, STATE_DIRECTORY: they outlive the
    service, where the unit's private /tmp is removed when it stops), then the temporary
    folder."""
    out: list[Path] = []
    for env in ("LOGS_DIRECTORY", "STATE_DIRECTORY"):
        for d in os.environ.get(env, "").split(":"):
            if d and Path(d) not in out:
                out.append(Path(d))
    # The shipped unit's folders, also when the one looking is an engineer's shell (no systemd
    # environment there: an outside try's `record check` missed a spill in /var/log/scallop).
    for d in (Path("/var/log/scallop"), Path("/var/lib/scallop")):
        if d not in out and d.is_dir():
            out.append(d)
    out.append(Path(tempfile.gettempdir()))
    return out


def _spill_row(run_id: int, it: tuple) -> dict:
    table, params = _row(run_id, it)
    return {"table": table, "params": list(params)}


def insert_scallop(con: sqlite3.Connection, params: tuple) -> bool:
    """Insert one scallop row (``_SCALLOP_COLS`` order) and close its pick intents; False when
    the scallop is already recorded."""
    try:
        con.execute(_SQL["scallops"], params)
    except sqlite3.IntegrityError:
        return False
    cols = dict(zip(_SCALLOP_COLS, params))
    con.execute(
        _CLOSE_INTENTS,
        (
            cols["arm"],
            cols["result"],
            cols["time"],
            cols["run_id"],
            cols["track_id"],
            cols["skip_reason"] or cols["result"],
        ),
    )
    return True


def import_spill(con: sqlite3.Connection, lines: list[str], where: str) -> dict[str, int]:
    """Rows of a spill file into the record (one transaction): counts per table, plus
    ``duplicates`` (scallops already there: an import run twice adds nothing)."""
    counts = {"scallops": 0, "alarms": 0, "events": 0, "shadow": 0, "duplicates": 0}
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            table, params = d["table"], tuple(d["params"])
        except (ValueError, KeyError, TypeError):
            raise RecordError(f"{where} line {n}: not a row of a spill file") from None
        want = (
            len(_SCALLOP_COLS)
            if table == "scallops"
            else {"alarms": 12, "events": 6, "shadow": len(SHADOW_COLS), "run_end": 2}.get(table)
        )
        # A spill written before schema 5 lacks the lot (and a scallop its disposition): ''.
        older = {"scallops": 2, "alarms": 1, "events": 1}.get(table, 0)
        if want is not None and older and len(params) == want - older:
            params = params + ("",) * older
        if want is None or len(params) != want:
            raise RecordError(f"{where} line {n}: not a row of a spill file (table {table!r})")
        rows.append((table, params))
    # Every row names its run (the first column): a run this record does not hold means the
    # spill came from another record (an outside try imported one and `record check` was silent).
    runs = {int(p[0]) for _, p in rows if isinstance(p[0], int)}
    have = {r[0] for r in con.execute("SELECT id FROM runs")}
    if runs - have or any(not isinstance(p[0], int) for _, p in rows):
        missing = ", ".join(str(r) for r in sorted(runs - have)) or "none named"
        raise RecordError(
            f"{where}: its rows are of run {missing}, which this record does not hold: the spill file belongs to "
            "another record (import it into the record named in its file name)"
        )
    con.execute("BEGIN")
    try:
        for table, params in rows:
            if table == "scallops":
                counts["scallops" if insert_scallop(con, params) else "duplicates"] += 1
            elif table == "run_end":
                # It stopped in order: not a crash, whatever a start meanwhile took it for.
                con.execute("UPDATE runs SET ended=?, crashed=0 WHERE id=?", (params[1], params[0]))
            else:
                con.execute(_SQL[table], params)
                counts[table] += 1
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return counts


def _file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the record's file; None when it is not there."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _run_lock_path(db: Path, run_id: int) -> Path:
    return db.with_name(f"{db.name}.run{run_id}.lock")


def _try_lock(path: Path) -> int | None:
    """An exclusive lock on ``path`` (a descriptor to keep), or None when a live process holds
    it. The kernel drops the lock when its holder dies, however it dies."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def run_is_live(db: Path, run_id: int) -> bool:
    """Whether the program of run ``run_id`` still holds its lock (is running now)."""
    import fcntl

    try:
        fd = os.open(_run_lock_path(db, run_id), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _last_run(con: sqlite3.Connection) -> dict | None:
    """The run before the one starting (how it ended: the screen says why the line stopped)."""
    row = con.execute("SELECT id, ended, crashed FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    if row is None:
        return None
    unknown = con.execute("SELECT COUNT(*) FROM picks WHERE run_id=? AND state='unknown'", (row[0],)).fetchone()[0]
    return {"id": row[0], "ended": row[1], "crashed": bool(row[2]), "unknown_picks": unknown}


# Events whose last occurrence a new run carries over (RecordWriter.last_events).
CARRIED_EVENTS = ("lot", "shift_check", "shift_check_override", "belt_scale")


def _last_events(con: sqlite3.Connection, kinds: tuple[str, ...]) -> dict[str, dict]:
    """The newest event of each kind: ``{kind: {"time", "user", "detail"}}``."""
    out: dict[str, dict] = {}
    for kind in kinds:
        row = con.execute(
            "SELECT time, user, detail FROM events WHERE kind=? ORDER BY id DESC LIMIT 1", (kind,)
        ).fetchone()
        if row is not None:
            try:
                detail = json.loads(row[2])
            except ValueError:
                detail = {}
            out[kind] = {"time": row[0], "user": row[1], "detail": detail if isinstance(detail, dict) else {}}
    return out


def mark_crashed_runs(con: sqlite3.Connection, db: Path) -> list[int]:
    """Runs of this computer left without an end whose program no longer holds their lock
    file (a crash, a kill, a power cut) get an end (their last row's time) and
    ``crashed = 1``; their picks still ``sending`` become ``unknown``: the arm may or may not
    have made them. Returns the runs marked. Call inside a write transaction."""
    host = socket.gethostname()
    crashed = []
    for (rid,) in con.execute("SELECT id FROM runs WHERE ended IS NULL AND host = ?", (host,)).fetchall():
        if run_is_live(db, rid):
            continue
        _run_lock_path(db, rid).unlink(missing_ok=True)
        crashed.append(rid)
        last = con.execute(
            "SELECT MAX(t) FROM (SELECT MAX(time) AS t FROM scallops WHERE run_id=:r"
            " UNION ALL SELECT MAX(time) FROM events WHERE run_id=:r"
            " UNION ALL SELECT MAX(time) FROM alarms WHERE run_id=:r"
            " UNION ALL SELECT MAX(time) FROM picks WHERE run_id=:r"
            " UNION ALL SELECT started FROM runs WHERE id=:r)",
            {"r": rid},
        ).fetchone()[0]
        con.execute("UPDATE runs SET ended=?, crashed=1 WHERE id=?", (last, rid))
        con.execute("UPDATE picks SET state='unknown' WHERE run_id=? AND state='sending'", (rid,))
    return crashed


def _close_quietly(con: sqlite3.Connection | None) -> None:
    """Close a connection being given up on: its failure is already what is being handled."""
    if con is not None:
        try:
            con.close()
        except sqlite3.Error:
            pass


def _why(e: BaseException) -> str:
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk full"
    return str(e) or type(e).__name__


def write_snapshot_file(path: Path, data: bytes) -> None:
    """Write one snapshot (a module function so tests can make the disk "full")."""
    with open(path, "xb") as f:
        f.write(data)


class _Worker:
    """One daemon thread running what it is given, in order (a stdlib pool's threads are joined
    at exit: one stuck on a hung disk would keep the program from ending)."""

    def __init__(self, name: str) -> None:
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def submit(self, fn: Callable, *args: Any) -> Future:
        f: Future = Future()
        self._q.put((f, fn, args))
        return f

    def stop(self) -> None:
        self._q.put(None)

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            f, fn, args = item
            if not f.set_running_or_notify_cancel():
                continue
            try:
                f.set_result(fn(*args))
            except BaseException as e:
                f.set_exception(e)
