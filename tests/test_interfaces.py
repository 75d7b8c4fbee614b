"""docs/interfaces.md against the code: metric families, record tables and configuration keys.

Each test takes the live names from the code (a /metrics scrape of a snapshot with every field
populated plus the record writer's metrics, a freshly created record database, the LineConfig
dataclass tree), parses the matching tables of docs/interfaces.md and fails naming every name that
is on one side only, or whose type, labels, nullability or default differ.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from scallop.app.config import LineConfig
from scallop.app.line_api import Alarm, ArmStatus, LineSnapshot
from scallop.app.record import RecordWriter, open_db
from scallop.app.web import create_app

DOC = Path(__file__).resolve().parents[1] / "docs" / "interfaces.md"
WHERE = "docs/interfaces.md"


# ---------------------------------------------------------------------------- the document


def doc_tables() -> list[tuple[str, str, list[dict[str, str]]]]:
    """Every table of the document as ``(section, subsection, rows)``: the ``##`` and ``###``
    headings above it and its rows as ``{column: cell}``, cells without backticks."""
    out: list[tuple[str, str, list[dict[str, str]]]] = []
    section = subsection = ""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section, subsection = line[3:].strip(), ""
        elif line.startswith("### "):
            subsection = line[4:].strip().replace("`", "")
        elif line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            header, body = _cells(block[0]), block[2:]  # block[1] is the |---| line
            out.append((section, subsection, [dict(zip(header, _cells(r))) for r in body]))
            continue
        i += 1
    return out


def _cells(row: str) -> list[str]:
    # "\|" is a pipe inside a cell (|latency_s|), not a column border.
    cells = row.strip().strip("|").replace("\\|", "\0").split("|")
    return [c.replace("\0", "|").replace("`", "").strip() for c in cells]


def doc_rows(section: str) -> list[tuple[str, dict[str, str]]]:
    rows = [(sub, r) for sec, sub, table in doc_tables() if sec == section for r in table]
    assert rows, f"{WHERE} has no tables under '## {section}'"
    return rows


def compare(kind: str, live: dict[str, Any], documented: dict[str, Any], what: str, done: str) -> None:
    """Fail with one line per name on one side only (``done``: what the code does with it), or
    whose ``what`` differs."""
    problems = [f"{kind} {n} is {done} but not in {WHERE}" for n in sorted(live.keys() - documented.keys())]
    problems += [f"{kind} {n} is documented but no longer {done}" for n in sorted(documented.keys() - live.keys())]
    problems += [
        f"{kind} {n}: {what} is {live[n]} in the code but {documented[n]} in {WHERE}"
        for n in sorted(live.keys() & documented.keys())
        if live[n] != documented[n]
    ]
    if problems:
        pytest.fail(f"{len(problems)} difference(s) with {WHERE}:\n  " + "\n  ".join(problems), pytrace=False)


# ---------------------------------------------------------------------------- metrics


def full_snapshot() -> LineSnapshot:
    """A snapshot in which every field carries something, so every family has samples."""
    return LineSnapshot(
        state="running",
        recipe="standard",
        uptime_s=3600.0,
        seen=1200,
        tracking=3,
        picked=1000,
        uro_removed=950,
        missed=50,
        adductor_hits=3,
        skipped=200,
        skipped_by_reason={"no_uro": 150, "no_capacity": 50},
        dispositions={"picked": 600, "passed": 150, "diverted": 48, "not_diverted": 2},
        per_minute=61.5,
        removal_rate=0.95,
        belt_scale=1.012,
        all_to_rework={"why": "waiting_camera", "for_s": 75.0},
        frames=36000,
        frames_dropped=12,
        latency_ms={"inference": {"p50": 11.5, "p99": 19.0}, "modbus": {"p50": 1.2, "p99": 3.4}},
        arms=[ArmStatus("left", "picking", True, 500, 480, "picked", 0.8), ArmStatus("right", "idle", False)],
        alarms=[Alarm(1, 0.0, "critical", "arm:right", "arm not answering")],
        model={"name": "line3-v2", "sha256": "ab" * 32},
        shadow={
            "model": "line3-v3",
            "frames": 100,
            "skipped_busy": 5,
            "skipped_sample": 100,
            "scallops": 300,
            "verdict_agreement": 0.99,
            "grasp_agreement": 0.98,
            "grasps_compared": 250,
            "grasps_agree": 245,
            "live_only": 1,
            "shadow_only": 2,
            "verdict_differs": 1,
        },
        capture={"active": True, "kept": 10, "bytes": 2_000_000, "dropped": {"queue": 1}},
        lot="L-0412",
        shift_check={"required": True, "state": "passed", "user": "tanaka", "seen": 3, "of": 3},
        channel={
            "setup": "alternate",
            "pairs": 3500,
            "dropped": {"missing": 3, "apart": 1},
            "lost": False,
            "dark": False,
            "misregistered": False,
            "registration_offset_mm": [0.3, -0.4],
            "belt_level": 4.0,
            "glow_level": 212.0,
        },
    )


def test_the_test_snapshot_populates_every_field():
    # A field added to LineSnapshot must be filled in here, or its metrics would go unchecked.
    empty = [f.name for f in dataclasses.fields(LineSnapshot) if getattr(full_snapshot(), f.name) in (0, "", {}, [])]
    assert not empty, f"full_snapshot() leaves {empty} empty: give them a value"


def live_metrics(fake_line, fast_users, tmp_path) -> dict[str, tuple[str, tuple[str, ...]]]:
    snap = full_snapshot()
    fake_line.snapshot = lambda: snap
    with TestClient(create_app(fake_line, fast_users)) as c:
        c.post("/api/login", json={"pin": "1111"})  # every labelled web family gets a series
        text = c.get("/metrics").text
    with RecordWriter(tmp_path / "record.sqlite") as w:
        text += w.metrics_text()
    parsed = list(text_string_to_metric_families(text))
    names = [f.name for f in parsed]
    assert len(names) == len(set(names)), f"a family is exposed twice: {sorted(n for n in names if names.count(n) > 1)}"
    out = {}
    for f in parsed:
        # The parser drops a counter's _total; dashboards query the name with it.
        name = f.name + "_total" if f.type == "counter" else f.name
        labels = {k for s in f.samples for k in s.labels} - {"le"}
        out[name] = (f.type, tuple(sorted(labels)))
    return out


def test_metrics_match_the_document(fake_line, fast_users, tmp_path):
    documented = {}
    for _, r in doc_rows("Metrics"):
        labels = () if r["labels"] == "—" else tuple(sorted(l.strip() for l in r["labels"].split(",")))
        documented[r["metric"]] = (r["type"], labels)
    compare("metric", live_metrics(fake_line, fast_users, tmp_path), documented, "(type, labels)", "emitted")


# ---------------------------------------------------------------------------- production record


def test_record_tables_match_the_document(tmp_path):
    con = open_db(tmp_path / "record.sqlite", create=True)
    try:
        live = {}
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            for _, col, ctype, notnull, _, pk in con.execute(f"PRAGMA table_info({table})"):
                # An INTEGER PRIMARY KEY is the rowid: never NULL, whatever notnull says.
                live[f"{table}.{col}"] = (ctype, "no" if notnull or pk else "yes")
    except sqlite3.Error as e:
        pytest.fail(f"reading the record's schema: {e}")
    finally:
        con.close()
    documented = {f"{table}.{r['column']}": (r["type"], r["nullable"]) for table, r in doc_rows("Production record")}
    compare("column", live, documented, "(type, nullable)", "created")


# ---------------------------------------------------------------------------- configuration


def _literal(v: Any) -> str:
    """A default as the document writes it: TOML literals, ``required``, ``unset``."""
    if v is dataclasses.MISSING:
        return "required"
    if v is None:
        return "unset"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        if v and dataclasses.is_dataclass(v[0]):
            return f"{len(v)} tables"
        return "[" + ", ".join(_literal(x) for x in v) + "]"
    return repr(v)


def _optional_table(tp: Any) -> type | None:
    """The dataclass of an optional table (``TransportConfig | None``), else None."""
    args = [a for a in get_args(tp) if a is not type(None)]
    if len(args) == 1 and len(get_args(tp)) == 2 and dataclasses.is_dataclass(args[0]):
        return args[0]
    return None


def _table_item(tp: Any) -> type | None:
    """The dataclass of an array of tables (``list[ArmConfig]``), else None."""
    args = get_args(tp)
    if get_origin(tp) is list and len(args) == 1 and dataclasses.is_dataclass(args[0]):
        return args[0]
    return None


def config_keys(cls: type, defaults: Any = None, prefix: str = "") -> dict[str, str]:
    """``{key: default}`` for every key under dataclass ``cls``, as :func:`scallop.app.config.build`
    reads them; ``defaults`` is an instance whose values are the defaults (nested tables have their
    own), else the fields' own defaults apply."""
    hints = get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if not f.init or f.name.startswith("_"):
            continue
        if defaults is not None:
            value = getattr(defaults, f.name)
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            value = f.default
        key, tp = prefix + f.name, hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.update(config_keys(tp, None if value is dataclasses.MISSING else value, key + "."))
            continue
        out[key] = _literal(value)
        if (table := _optional_table(tp)) is not None:
            # Unset by default; when given, its keys have their own defaults.
            out.update(config_keys(table, None, key + "."))
        if (item := _table_item(tp)) is not None:
            out.update(config_keys(item, None, key + "[]."))
    return out


def test_config_keys_match_the_document():
    documented = {r["key"]: r["default"] for _, r in doc_rows("Configuration keys")}
    compare("config key", config_keys(LineConfig, LineConfig()), documented, "the default", "read")
