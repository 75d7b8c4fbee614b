"""Backup → wipe → restore gives the same line back (scallop/app/backup.py)."""

from __future__ import annotations

import shutil
import sqlite3
import tarfile
import threading
from pathlib import Path

import pytest

from scallop.app.auth import UserStore
from scallop.app.backup import backup, read_backup, restore
from scallop.app.build import build_line
from scallop.app.cli import main
from scallop.app.config import load_config
from scallop.errors import ConfigError, DataError
from scallop.sim.clock import VirtualClock
from tests.helpers import write_line_calibration


def _rows(path):
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT * FROM scallops ORDER BY id").fetchall()
    finally:
        con.close()


@pytest.fixture
def line_files(tmp_path):
    etc, var = tmp_path / "etc", tmp_path / "var"
    etc.mkdir()
    cfg_path = etc / "line.toml"
    cfg_path.write_text(
        f'[runtime]\ncalibration = "{etc / "calibration.json"}"\ntick_s = 0.02\n'
        f'[ui]\nusers_file = "{etc / "users.json"}"\n'
        f'[record]\npath = "{var / "record.sqlite"}"\nsnapshot_budget_mb = 0.0\n'
    )
    from scallop.sim.config import SimConfig
    from scallop.sim.world import camera_model_from_config

    write_line_calibration(etc / "calibration.json", camera_model_from_config(SimConfig().camera))
    users = UserStore(scrypt_n=2**4)
    users.add("sato", "operator", "135790")
    users.save(etc / "users.json")
    cfg = load_config(cfg_path)
    line = build_line(cfg, cfg.record.path, seed=4, clock=VirtualClock())
    line.open()
    try:
        line.start("sato")
        line.run_stepped(20.0)
    finally:
        line.close()
    return cfg_path, etc, var


def test_backup_wipe_restore_round_trip(line_files, tmp_path):
    cfg_path, etc, var = line_files
    before = {p.name: p.read_bytes() for p in etc.iterdir()}
    rows = _rows(var / "record.sqlite")
    assert len(rows) >= 5
    out = tmp_path / "backup.tar.gz"
    m = backup(cfg_path, out)
    assert [e["role"] for e in m["members"]] == ["config", "calibration", "users", "model", "record"]
    assert m["version"] and all(len(e["sha256"]) == 64 for e in m["members"])

    shutil.rmtree(etc)
    shutil.rmtree(var)
    done = restore(out, cfg_path)
    assert [r for r, _ in done] == [
        "config",
        "calibration",
        "users",
        "record",
    ]  # the shipped model comes with the version
    assert {p.name: p.read_bytes() for p in etc.iterdir()} == before
    assert _rows(var / "record.sqlite") == rows
    assert (var / "record.sqlite").stat().st_mode & 0o777 == 0o600
    assert UserStore.load(etc / "users.json").verify("135790", "sato").name == "sato"

    with pytest.raises(ConfigError, match="restore would overwrite .*record.sqlite.*--force"):
        restore(out, cfg_path)
    # A configuration already there is the new PC's: kept, and its paths are where things go.
    moved = cfg_path.read_text().replace(str(var / "record.sqlite"), str(var / "moved.sqlite"))
    cfg_path.write_text(moved)
    assert main(["restore", str(out), "--config", str(cfg_path), "--force"]) == 0
    assert cfg_path.read_text() == moved and _rows(var / "moved.sqlite") == rows


def test_the_record_copy_is_consistent_while_the_line_writes(line_files, tmp_path):
    cfg_path, _, var = line_files
    db = var / "record.sqlite"
    stop = threading.Event()

    def writer():
        con = sqlite3.connect(db, timeout=5.0)
        con.execute("PRAGMA journal_mode=WAL")
        n = 0
        while not stop.is_set():
            con.execute("INSERT INTO events (run_id, time, kind, user, detail) VALUES (1, ?, 'probe', '', '{}')", (n,))
            con.commit()
            n += 1
        con.close()

    t = threading.Thread(target=writer)
    t.start()
    try:
        for k in range(3):
            backup(cfg_path, tmp_path / f"b{k}.tar.gz")
    finally:
        stop.set()
        t.join()
    for k in range(3):
        _, files = read_backup(tmp_path / f"b{k}.tar.gz")
        copy = tmp_path / f"r{k}.sqlite"
        copy.write_bytes(files["record.sqlite"])
        con = sqlite3.connect(copy)
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        con.close()


def test_a_damaged_or_foreign_file_is_refused_before_anything_is_written(line_files, tmp_path):
    cfg_path, etc, _ = line_files
    out = tmp_path / "backup.tar.gz"
    backup(cfg_path, out)
    manifest, files = read_backup(out)
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        import io
        import json

        for name, data in [("manifest.json", json.dumps(manifest).encode()), *files.items()]:
            if name == "users.json":
                data = data.replace(b"sato", b"tanaka")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    target = tmp_path / "new" / "line.toml"
    with pytest.raises(DataError, match="member users.json \\(users\\) is damaged or missing"):
        restore(bad, target)
    assert not target.parent.exists()
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar at all")
    with pytest.raises(DataError, match="not a readable backup"):
        read_backup(tmp_path / "junk.tar.gz")
    with pytest.raises(DataError, match="calibration file the configuration names is not there"):
        (etc / "calibration.json").unlink()
        backup(cfg_path, tmp_path / "again.tar.gz")


def test_a_backup_goes_only_where_a_folder_is_and_never_leaves_half_a_file(line_files, tmp_path, monkeypatch):
    """Outside try: a backup to an unmounted USB stick's folder was made on the PC's own disk
    and reported written; one that filled the disk left a .partial behind, with "internal error"."""
    import errno

    from scallop.errors import DataError

    cfg_path, _, _ = line_files
    with pytest.raises(DataError, match=r"no such folder \(is the USB stick or share mounted\?\); nothing written"):
        backup(cfg_path, tmp_path / "usb" / "b.tar.gz")
    assert not (tmp_path / "usb").exists()
    with pytest.raises(DataError, match=r"is a folder; name the backup file in it"):
        backup(cfg_path, tmp_path)
    real = tarfile.TarFile.addfile

    def full(self, info, f=None):
        if info.name == "record.sqlite":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, info, f)

    monkeypatch.setattr(tarfile.TarFile, "addfile", full)
    out = tmp_path / "b.tar.gz"
    with pytest.raises(DataError, match=r"b.tar.gz: the backup could not be written \(No space left on device\)"):
        backup(cfg_path, out)
    assert sorted(p.name for p in tmp_path.glob("b.tar.gz*")) == []


def test_a_restore_that_runs_out_of_disk_names_what_it_restored_and_leaves_no_half_file(
    line_files, tmp_path, monkeypatch
):
    import errno
    import os

    from scallop.errors import DataError

    cfg_path, etc, var = line_files
    out = tmp_path / "backup.tar.gz"
    backup(cfg_path, out)
    shutil.rmtree(var)
    real = Path.write_bytes

    def full_for_the_record(self, data):
        if self.name.startswith("record.sqlite"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_for_the_record)
    with pytest.raises(
        DataError, match=r"the record could not be restored \(No space left on device\); restored so far: "
    ):
        restore(out, cfg_path, force=True)
    assert not list(var.glob("*.restoring"))
    monkeypatch.undo()
    assert [r for r, _ in restore(out, cfg_path, force=True)][-1] == "record"
    assert os.path.getsize(var / "record.sqlite") > 0
