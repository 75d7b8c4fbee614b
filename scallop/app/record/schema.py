"""The record's database: its schema, where it lives by default, and opening (or creating) it."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from scallop.errors import DataError

SCHEMA_VERSION = 5

# Version 2: every pick's intent, committed before the arm is sent it (see writer.pick_intent).
_PICKS = """
CREATE TABLE IF NOT EXISTS picks (
    id        INTEGER PRIMARY KEY,
    run_id    INTEGER NOT NULL REFERENCES runs(id),
    track_id  INTEGER NOT NULL,
    arm       TEXT NOT NULL,
    time      REAL NOT NULL,              -- when the commit was about to go to the arm
    grasp_x_mm REAL, grasp_y_mm REAL,
    state     TEXT NOT NULL CHECK (state IN ('sending', 'done', 'unknown')),
    result    TEXT NOT NULL DEFAULT '',   -- the scallop's result once known; 'handed_on' for another arm's
    ended     REAL
);
CREATE INDEX IF NOT EXISTS picks_track ON picks(run_id, track_id);
"""
# Version 3: how a shadow model agreed with the live one, one row per interval (shadow mode).
_SHADOW = """
CREATE TABLE IF NOT EXISTS shadow (
    id              INTEGER PRIMARY KEY,
    run_id          INTEGER NOT NULL REFERENCES runs(id),
    time            REAL NOT NULL,            -- end of the interval
    model           TEXT NOT NULL,            -- the candidate's name
    model_sha256    TEXT NOT NULL,
    live_model      TEXT NOT NULL,
    frames          INTEGER NOT NULL,         -- frames the candidate analysed in the interval
    skipped         INTEGER NOT NULL,         -- frames offered but not taken (busy, or not their turn)
    scallops        INTEGER NOT NULL,
    verdicts_agree  INTEGER NOT NULL,
    grasps_compared INTEGER NOT NULL,
    grasps_agree    INTEGER NOT NULL,
    live_only       INTEGER NOT NULL,
    shadow_only     INTEGER NOT NULL,
    shadow_ms_p50   REAL
);
CREATE INDEX IF NOT EXISTS shadow_time ON shadow(time);
"""
# Version 5: each scallop's disposition (where it left the belt: docs/plc-interface.md) and the
# production lot on every row (set on the screen; '' before a lot was set).
_LOTS = """
ALTER TABLE scallops ADD COLUMN disposition TEXT NOT NULL DEFAULT '';
ALTER TABLE scallops ADD COLUMN lot TEXT NOT NULL DEFAULT '';
ALTER TABLE alarms ADD COLUMN lot TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN lot TEXT NOT NULL DEFAULT '';
ALTER TABLE picks ADD COLUMN lot TEXT NOT NULL DEFAULT '';
CREATE INDEX IF NOT EXISTS scallops_lot ON scallops(lot, time);
"""
_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS runs (
    id       INTEGER PRIMARY KEY,
    started  REAL NOT NULL,           -- wall clock, epoch seconds
    ended    REAL,
    host     TEXT NOT NULL DEFAULT '',
    note     TEXT NOT NULL DEFAULT '',
    pid      INTEGER NOT NULL DEFAULT 0,  -- the line program's process on ``host``
    crashed  INTEGER NOT NULL DEFAULT 0,  -- 1: found unfinished by a later start
    version  TEXT NOT NULL DEFAULT ''     -- the line program's version ('' before version 3)
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
    + _PICKS
    + _SHADOW
    + _LOTS
)

# Migrations, each from the version before it: an older record is brought up to date when the
# line opens it for writing (inside one transaction); readers read any version up to this one.
MIGRATIONS = {
    2: "ALTER TABLE runs ADD COLUMN pid INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE runs ADD COLUMN crashed INTEGER NOT NULL DEFAULT 0;" + _PICKS,
    3: "ALTER TABLE runs ADD COLUMN version TEXT NOT NULL DEFAULT '';",
    4: _SHADOW,
    5: _LOTS,
}

# The shadow table's columns in the order the writer inserts them.
SHADOW_COLS = (
    "run_id",
    "time",
    "model",
    "model_sha256",
    "live_model",
    "frames",
    "skipped",
    "scallops",
    "verdicts_agree",
    "grasps_compared",
    "grasps_agree",
    "live_only",
    "shadow_only",
    "shadow_ms_p50",
)

# The scallops table's columns in the order the writer inserts them.
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
    "disposition",
    "lot",
)


class RecordError(DataError):
    """A record that cannot be opened or a value that cannot be recorded; the message names it."""


def default_record_dir() -> Path:
    """Where the line keeps its record unless configured: ``$SCALLOP_RECORD_DIR`` or ./scallop-record."""
    return Path(os.environ.get("SCALLOP_RECORD_DIR", "scallop-record"))


def default_db_path() -> Path:
    return default_record_dir() / "record.sqlite"


def _connect(path: Path, write: bool = True) -> sqlite3.Connection:
    if not write:
        # A reader never writes: a record on a read-only disk (or a copy handed in for a
        # report) is still read.
        return sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=10.0, isolation_level=None)
    con = sqlite3.connect(str(path), timeout=10.0, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    # NORMAL is durable across application crashes in WAL mode; only a power cut may lose the
    # last transactions, which is the price of not fsyncing every scallop.
    con.execute("PRAGMA synchronous=NORMAL")
    return con


def _unwritable(p: Path) -> str | None:
    """Why the line could not write a record at ``p`` (None: nothing found against it). SQLite
    in WAL mode writes two files beside the database, so its folder must be writable too."""
    folder = p.parent
    if p.is_dir():
        return "it is a folder; name the record's file, e.g. FOLDER/record.sqlite"
    if p.exists() and not os.access(p, os.W_OK):
        return "the file is read-only (check its owner and permissions, or a disk mounted read-only)"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"its folder {folder} is not writable (check its owner and permissions, or a disk mounted read-only)"
    return None


# The files SQLite keeps beside a database in WAL mode: they go (or move) with it.
JOURNAL_SUFFIXES = ("-wal", "-shm")


def damage_words(e: BaseException | None, first_page_too: bool = True) -> str | None:
    """SQLite's words when ``e`` says a database's pages are damaged (SQLITE_CORRUPT and its
    kinds, and, with ``first_page_too``, "not a database": its first page gone), else None."""
    name = str(getattr(e, "sqlite_errorname", "")) if isinstance(e, sqlite3.DatabaseError) else ""
    if name.startswith("SQLITE_CORRUPT") or (first_page_too and name == "SQLITE_NOTADB"):
        return str(e)
    return None


def _open_failed(p: Path, e: sqlite3.Error, create: bool) -> RecordError:
    why = _unwritable(p) if create else None
    if why:
        return RecordError(f"{p}: cannot write the production record: {why}")
    if isinstance(e, sqlite3.OperationalError):
        # Locked, unreadable, a disk error: the file may be a fine record that cannot be used now.
        return RecordError(f"{p}: cannot open the production record ({e})")
    if damage_words(e) is not None:
        # Not moved aside by itself, as a damaged record is (the writer does that): a wrong
        # [record] path may name somebody's other file. Its owner decides.
        return RecordError(
            f"{p}: not a production record ({e}); if it was the line's record, its disk damaged it: restore the "
            "last backup ('scallop restore'), or move the file aside for the line to start a new one"
        )
    return RecordError(f"{p}: not a production record ({e})")


def open_db(path: str | Path, *, create: bool) -> sqlite3.Connection:
    """A connection to the record at ``path`` with the schema checked (and created if ``create``,
    the writer's case: then a record that cannot be written is refused here, naming why)."""
    p = Path(path)
    if not create and not p.is_file():
        raise FileNotFoundError(f"{p}: no production record here (run the line first, or pass --db)")
    if create:
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RecordError(f"{p}: cannot create the record's folder {p.parent}: {e.strerror or e}") from None
        why = _unwritable(p)
        if why:
            raise RecordError(f"{p}: cannot write the production record: {why}")
    con = None
    new = create and not p.exists()
    try:
        con = _connect(p, write=create)
        version = con.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if version == 0 and not tables:
            if not create:
                raise RecordError(f"{p}: empty database, not a production record")
            con.executescript(_SCHEMA)
            con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif version > SCHEMA_VERSION:
            raise RecordError(
                f"{p}: this record is schema version {version}, written by a newer version of the line "
                f"program; this one reads up to version {SCHEMA_VERSION}: use the newer version "
                "('scallop service versions'), or give this one a record of its own ([record] path)"
            )
        elif version < 1:
            raise RecordError(f"{p}: not a production record (schema version {version})")
        elif version < SCHEMA_VERSION and create:
            steps = "".join(MIGRATIONS[v] for v in range(version + 1, SCHEMA_VERSION + 1))
            con.executescript(f"BEGIN;{steps}PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
    except sqlite3.Error as e:
        if con is not None:
            con.close()
        if new:
            # Made here and left empty (a full disk): the next start would take it for a record.
            for side in ("", *JOURNAL_SUFFIXES):
                Path(f"{p}{side}").unlink(missing_ok=True)
        raise _open_failed(p, e, create) from None
    except RecordError:
        con.close()
        raise
    return con
