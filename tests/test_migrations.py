"""Files written by an earlier version are read or brought up to date; a newer one is refused.

``tests/fixtures/v0.1.0`` holds a record and a configuration exactly as version 0.1.0 wrote them.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from scallop.app.record import SCHEMA_VERSION, Record, RecordError, RecordWriter
from scallop.app.version import program_version

FIXTURES = Path(__file__).parent / "fixtures" / "v0.1.0"


def test_a_0_1_0_record_is_read_as_it_is_and_migrated_when_the_line_writes_to_it(tmp_path):
    db = tmp_path / "record.sqlite"
    shutil.copy(FIXTURES / "record.sqlite", db)
    con = sqlite3.connect(db)
    before = con.execute("SELECT * FROM scallops ORDER BY id").fetchall()
    events = con.execute("SELECT kind, user FROM events ORDER BY id").fetchall()
    assert con.execute("PRAGMA user_version").fetchone()[0] == 1
    con.close()

    with Record(db) as r:  # a reader takes it as it is: nothing is written
        assert len(r.scallops()) == len(before) == 16
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == 1

    with RecordWriter(db, snapshot_dir=tmp_path / "snaps"):
        pass
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        # Rows unchanged; the columns added since (disposition, lot) are '' for them.
        assert con.execute("SELECT * FROM scallops ORDER BY id").fetchall() == [r + ("", "") for r in before]
        assert con.execute("SELECT kind, user FROM events ORDER BY id").fetchall()[: len(events)] == events
        runs = con.execute("SELECT id, crashed, version FROM runs ORDER BY id").fetchall()
    finally:
        con.close()
    assert runs[0] == (1, 0, "") and runs[-1][2] == program_version()


def test_a_record_before_lots_reports_its_dispositions_as_unknown_and_refuses_a_lot(tmp_path):
    db = tmp_path / "record.sqlite"
    shutil.copy(FIXTURES / "record.sqlite", db)
    with Record(db) as r:
        s = r.summary(0.0, 4e9)
        assert s.seen == 16 and s.lots == [] and s.dispositions["unknown"] == 16
        assert sum(s.dispositions.values()) == s.seen
        with pytest.raises(RecordError, match="written before lots were recorded"):
            r.summary(0.0, 4e9, lot="L-1")


def test_a_spill_written_before_lots_is_imported_with_empty_lots(tmp_path):
    import json

    from scallop.app.record.schema import open_db
    from scallop.app.record.writer import import_spill

    db = tmp_path / "record.sqlite"
    with RecordWriter(db):
        pass
    old_scallop = [
        1,
        7,
        1000.0,
        5.0,
        1.0,
        2.0,
        50.0,
        0.9,
        2,
        1,
        None,
        None,
        0.8,
        None,
        None,
        None,
        "arm1",
        "skipped",
        "no_capacity",
        None,
        None,
        0,
        None,
        "{}",
    ]  # 24 columns: schema 4
    old_event = [1, 1000.0, "start", "op", "{}"]
    lines = [
        json.dumps({"table": "scallops", "params": old_scallop}),
        json.dumps({"table": "events", "params": old_event}),
    ]
    con = open_db(db, create=True)
    try:
        assert import_spill(con, lines, "spill.jsonl") == {
            "scallops": 1,
            "alarms": 0,
            "events": 1,
            "shadow": 0,
            "duplicates": 0,
        }
        assert con.execute("SELECT disposition, lot FROM scallops").fetchall() == [("", "")]
        assert con.execute("SELECT lot FROM events WHERE kind='start' AND user='op'").fetchall() == [("",)]
        with pytest.raises(RecordError, match="not a row of a spill file"):
            import_spill(con, [json.dumps({"table": "events", "params": old_event[:3]})], "spill.jsonl")
        # Another record's spill (its run 2 is not here): refused, nothing added (an outside try
        # imported one and record check said nothing).
        foreign = [json.dumps({"table": "events", "params": [2, *old_event[1:]]})]
        with pytest.raises(RecordError, match=r"spill.jsonl: its rows are of run 2, which this record does not hold"):
            import_spill(con, foreign, "spill.jsonl")
        assert con.execute("SELECT COUNT(*) FROM events WHERE run_id = 2").fetchone() == (0,)
    finally:
        con.close()


def test_a_newer_record_is_refused_naming_both_versions(tmp_path):
    db = tmp_path / "record.sqlite"
    with RecordWriter(db, snapshot_dir=tmp_path / "snaps"):
        pass
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    with pytest.raises(RecordError, match=rf"schema version {SCHEMA_VERSION + 1}, written by a newer version"):
        RecordWriter(db, snapshot_dir=tmp_path / "snaps")


def test_a_0_1_0_configuration_loads_and_means_what_it_meant():
    from scallop.app.config import CONFIG_VERSION, load_config, migrate
    from scallop.errors import ConfigError

    cfg = load_config(FIXTURES / "line.toml")
    assert cfg.config_version == CONFIG_VERSION
    assert [a.transport.describe() for a in cfg.arms] == ["tcp 192.168.10.21:502 unit 1"]
    # 0.1.0 reached an arm without [arms.transport] at the transport's defaults; so does the migrated file.
    old = {"camera": {"source": "0"}, "arms": [{"name": "arm1"}]}
    assert migrate(old)["arms"] == [{"name": "arm1", "transport": {}}]
    assert migrate({"arms": [{"name": "arm1"}]})["arms"] == [{"name": "arm1"}]  # simulated: it stays simulated
    with pytest.raises(ConfigError, match=rf"config_version={CONFIG_VERSION + 1} was written for a newer version"):
        load_config(overrides={"config_version": CONFIG_VERSION + 1})
    with pytest.raises(ConfigError, match="config_version='2': expected a whole number"):
        migrate({"config_version": "2"})
