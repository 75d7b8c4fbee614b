"""Soak: ten minutes of simulated time with two arms, faster than real time.

Every scallop is in the record exactly once, uros come off, no pick runs twice, and the
process does not grow (the line runs for days)."""

from __future__ import annotations

import sqlite3
import time

import pytest

from tests.helpers import executed_targets, make_line


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


@pytest.fixture(scope="module")
def soak(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("soak")
    line = make_line(tmp_path, seed=11, arms=2, overrides={"sim": {"arrivals": {"rate_per_s": 1.0}}})
    mem = []
    t0 = time.perf_counter()
    try:
        line.start("soak")
        for _ in range(10):
            line.run_stepped(60.0)
            mem.append(rss_mb())
    finally:
        line.close()
    wall = time.perf_counter() - t0
    s = line.summary()
    print(
        f"\nsoak: {s['seen']} seen, {s['truth']['passed_with_uro']} with uro passed, "
        f"{s['uro_removed']} removed, {s['adductor_hits']} adductor hits, wall {wall:.0f} s for 600 s "
        f"simulated ({600 / wall:.1f}x), RSS MB {[round(m) for m in mem]}"
    )
    return line, s, mem, tmp_path


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_soak_every_scallop_once_no_double_pick_memory_flat(soak):
    line, s, mem, tmp_path = soak
    con = sqlite3.connect(tmp_path / "record.sqlite")
    ids = [r[0] for r in con.execute("SELECT track_id FROM scallops")]
    con.close()
    assert len(ids) == len(set(ids)) == s["seen"]
    assert s["seen"] == s["picked"] + s["skipped"]
    ex = executed_targets(line)
    assert len(ex) == len(set(ex))
    assert s["truth"]["passed_with_uro"] > 400
    # Memory flat: after warm-up, the second half of the run adds less than 30 MB.
    assert mem[-1] - mem[4] < 30.0


@pytest.mark.slow
def test_soak_removes_99_percent_of_uros_without_adductor_hits(soak):
    _, s, _, _ = soak
    assert s["adductor_hits"] == 0
    assert s["uro_removed"] / s["truth"]["passed_with_uro"] >= 0.99
