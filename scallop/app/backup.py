"""Backup and restore of a line: what a new PC needs to carry on where the old one stopped.

A backup is one ``.tar.gz`` file holding:

* the configuration file, the line calibration, the users file, the model in use;
* a consistent copy of the production record, taken with SQLite's online backup while the line
  may be writing (a plain file copy of a live database can be torn);
* ``manifest.json``: the product version, when and where it was taken, and for each member its
  role, the path the configuration named, its size and SHA-256.

Restoring checks every member against the manifest first, then writes each to the path the
*restoring* configuration names for its role (the configuration file itself to ``--config``),
refusing to overwrite an existing file unless asked to (``force``). Files are written next to
their target and renamed into place, so a failed restore leaves no half-written file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import socket
import sqlite3
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from scallop.app.config import LineConfig, load_config
from scallop.app.version import program_version
from scallop.errors import ConfigError, DataError

FORMAT = "scallop-backup"
FORMAT_VERSION = 1
DIST = "scallop-uro-line"

# role -> member name in the archive
MEMBERS = {
    "config": "config.toml",
    "calibration": "calibration.json",
    "users": "users.json",
    "model": "model.onnx",
    "record": "record.sqlite",
}


@dataclass
class Planned:
    role: str
    member: str
    path: Path  # where the configuration says it lives


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _model_path(cfg: LineConfig) -> Path:
    from scallop.models.runtime import default_model_path

    return Path(cfg.vision.model) if cfg.vision.model else Path(default_model_path())


def _record_path(cfg: LineConfig) -> Path:
    from scallop.app.record import default_db_path

    return Path(cfg.record.path) if cfg.record.path else Path(default_db_path())


def plan(cfg: LineConfig, config_path: Path) -> list[Planned]:
    """What a backup of this line holds, and where each part lives."""
    out = [Planned("config", MEMBERS["config"], config_path)]
    if cfg.runtime.calibration:
        out.append(Planned("calibration", MEMBERS["calibration"], Path(cfg.runtime.calibration)))
    if cfg.ui.users_file:
        out.append(Planned("users", MEMBERS["users"], Path(cfg.ui.users_file)))
    out.append(Planned("model", MEMBERS["model"], _model_path(cfg)))
    out.append(Planned("record", MEMBERS["record"], _record_path(cfg)))
    return out


def _record_copy(path: Path) -> bytes:
    """A consistent copy of a live SQLite database (the online backup API)."""
    if not path.is_file():
        raise DataError(f"{path}: the production record is not there (nothing has run with this configuration?)")
    with tempfile.TemporaryDirectory(prefix="scallop-backup-") as tmp:
        dst_path = Path(tmp) / "record.sqlite"
        try:
            src = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
            dst = sqlite3.connect(dst_path)
            try:
                src.backup(dst)
            finally:
                dst.close()
                src.close()
        except sqlite3.Error as e:
            raise DataError(f"{path}: the production record could not be read: {e}") from None
        return dst_path.read_bytes()


def backup(config_path: str | Path, out: str | Path) -> dict:
    """Write the backup of the line that ``config_path`` describes to ``out``; returns the manifest."""
    config_path = Path(config_path)
    cfg = load_config(config_path)
    parts = plan(cfg, config_path)
    members: dict[str, bytes] = {}
    entries = []
    for p in parts:
        if p.role == "record":
            data = _record_copy(p.path)
        else:
            try:
                data = p.path.read_bytes()
            except FileNotFoundError:
                raise DataError(f"{p.path}: the {p.role} file the configuration names is not there") from None
        members[p.member] = data
        entries.append(
            {"role": p.role, "member": p.member, "path": str(p.path), "bytes": len(data), "sha256": _sha256(data)}
        )
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "product": DIST,
        "version": program_version(),
        "taken": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "members": entries,
    }
    out = Path(out)
    if out.is_dir():
        raise DataError(f"{out}: is a folder; name the backup file in it (e.g. {out / 'line-backup.tar.gz'})")
    if not out.parent.is_dir():
        # Never made here: a USB stick not mounted at /media/usb would get the backup on the line
        # PC's own disk, reported as written (an outside try).
        raise DataError(f"{out.parent}: no such folder (is the USB stick or share mounted?); nothing written")
    tmp = out.with_name(out.name + ".partial")
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for name, data in [("manifest.json", json.dumps(manifest, indent=2).encode()), *members.items()]:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
                tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, out)
    except OSError as e:
        tmp.unlink(missing_ok=True)  # no half backup left to be mistaken for one
        raise DataError(f"{out}: the backup could not be written ({e.strerror or e}); nothing written") from None
    return manifest


def read_backup(path: str | Path) -> tuple[dict, dict[str, bytes]]:
    """The manifest and the members of a backup, every checksum verified."""
    path = Path(path)
    try:
        with tarfile.open(path, "r:gz") as tar:
            files = {}
            for m in tar.getmembers():
                if not m.isfile() or "/" in m.name or m.name.startswith("."):
                    raise DataError(f"{path}: unexpected member {m.name!r}: not a backup made by scallop backup")
                files[m.name] = tar.extractfile(m).read()
    except FileNotFoundError:
        raise DataError(f"{path}: no such backup file") from None
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable backup ({getattr(e, 'strerror', None) or e})") from None
    try:
        manifest = json.loads(files.pop("manifest.json"))
    except (KeyError, ValueError):
        raise DataError(f"{path}: no readable manifest.json: not a backup made by scallop backup") from None
    if manifest.get("format") != FORMAT:
        raise DataError(f"{path}: not a scallop backup (format {manifest.get('format')!r})")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise DataError(
            f"{path}: backup format {manifest['format_version']} is newer than this version reads "
            f"({FORMAT_VERSION}): restore it with version {manifest.get('version')} or later"
        )
    for e in manifest["members"]:
        data = files.get(e["member"])
        if data is None or len(data) != e["bytes"] or _sha256(data) != e["sha256"]:
            raise DataError(f"{path}: member {e['member']} ({e['role']}) is damaged or missing: checksum differs")
    return manifest, files


def restore(path: str | Path, config_path: str | Path, force: bool = False) -> list[tuple[str, Path]]:
    """Restore the backup at ``path``; returns (role, path) for each file written.

    The paths are those the configuration at ``config_path`` names when it exists (the new PC's
    own), else those of the configuration in the backup, which is then written there. Nothing is
    written before every member has been checked."""
    manifest, files = read_backup(path)
    by_role = {e["role"]: e for e in manifest["members"]}
    config_path = Path(config_path)
    if config_path.exists():
        cfg = load_config(config_path)
    else:
        with tempfile.TemporaryDirectory(prefix="scallop-restore-") as tmp:
            probe = Path(tmp) / "config.toml"
            probe.write_bytes(files[by_role["config"]["member"]])
            try:
                cfg = load_config(probe)
            except ConfigError as e:
                raise DataError(f"{path}: the configuration in the backup cannot be used here: {e}") from None
    targets = {p.role: p.path for p in plan(cfg, config_path)}
    if config_path.exists():
        # The new PC's configuration names where things go, so it stays as it is: written over
        # by the backup's, it would point the line at files other than those just restored.
        targets.pop("config", None)
    # The shipped model comes with the installed version: it is only written where a config names one.
    if not cfg.vision.model:
        targets.pop("model", None)
    writes = [(role, targets[role], files[by_role[role]["member"]]) for role in by_role if role in targets]
    clash = [str(t) for _, t, _ in writes if t.exists()]
    if clash and not force:
        raise ConfigError(f"restore would overwrite {', '.join(clash)}: move them away or pass --force")
    done = []
    for role, target, data in writes:
        tmp = target.with_name(target.name + ".restoring")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            if role in ("users", "record"):
                tmp.chmod(0o600)
            if role == "record":
                # The old database's write-ahead log would be replayed onto the restored one.
                for side in ("-wal", "-shm"):
                    Path(str(target) + side).unlink(missing_ok=True)
            os.replace(tmp, target)
        except OSError as e:
            tmp.unlink(missing_ok=True)  # a full disk left record.sqlite.restoring behind (outside try)
            so_far = ", ".join(f"{r} ({t})" for r, t in done) or "nothing"
            raise DataError(
                f"{target}: the {role} could not be restored ({e.strerror or e}); restored so far: {so_far}. "
                "Free space and run the restore again with --force"
            ) from None
        done.append((role, target))
    return done
