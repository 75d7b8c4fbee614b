"""Helpers shared by the tests that run the whole line on the simulator (virtual clock)."""

from __future__ import annotations

import sqlite3

from scallop.app.commands.run import build_line
from scallop.app.config import load_config
from scallop.robot.arm import PICK_TYPES
from scallop.sim.clock import VirtualClock


def make_line(tmp_path, seed=1, arms=1, overrides=None, **kw):
    """An opened simulated line recording to ``tmp_path/record.sqlite``; ``arms`` > 1 stands
    that many arms one after another downstream (the line's default is one)."""
    from scallop.app.backends import default_sim_arms
    from scallop.app.config import to_dict

    ov = {"runtime": {"tick_s": 0.02}}
    if arms > 1:
        ov["arms"] = [to_dict(a) for a in default_sim_arms(arms)]
    ov.update(overrides or {})
    cfg = load_config(overrides=ov)
    line = build_line(cfg, tmp_path / "record.sqlite", seed=seed, clock=VirtualClock(), **kw)
    line.open()
    return line


def executed_picks(line) -> dict[str, list]:
    """Per simulated arm (by name), the pick commands it carried out down to the grip: the
    arms' own records, the ground truth of what was picked."""
    return {
        sim.config.name: [r for r in sim.records if r.cmd_type in PICK_TYPES and r.t_grip is not None]
        for sim in line.backend.sim_arms
    }


def executed_targets(line):
    return [r.target_id for recs in executed_picks(line).values() for r in recs]


def rows(tmp_path):
    con = sqlite3.connect(tmp_path / "record.sqlite")
    try:
        return con.execute("SELECT track_id, result, skip_reason FROM scallops").fetchall()
    finally:
        con.close()
