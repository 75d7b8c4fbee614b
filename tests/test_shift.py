"""The shift's lot on every record row, and the start-of-shift check with test pieces
(scallop/app/line/shift.py, docs/shift-check.md): unit rules, then the simulated line with
test pieces laid on its belt, the screen's API and the report per lot."""

from __future__ import annotations

import csv
import json
import math
import sqlite3

import pytest
from fastapi.testclient import TestClient

from scallop.app.alarms import Alarms
from scallop.app.cli import main
from scallop.app.config import ShiftCheckSection, load_config
from scallop.app.line.shift import ShiftCheck
from scallop.app.line.states import LineState
from scallop.app.web import create_app
from scallop.errors import ConfigError, StateError
from scallop.sim.clock import VirtualClock
from tests.helpers import make_line

CHECK = {"required": True, "with_uro": 2, "without_uro": 1, "clear_s": 2.0, "timeout_s": 60.0, "valid_h": 8.0}


# ---------------------------------------------------------------------------- the rules
@pytest.mark.parametrize(
    "bad, key",
    [
        ({"with_uro": 0}, "with_uro"),
        ({"clear_s": 0.0}, "clear_s"),
        ({"clear_s": 500.0}, "clear_s"),
        ({"with_uro": 2.5}, "with_uro"),
        ({"without_uro": 21}, "without_uro"),
        ({"timeout_s": math.nan}, "timeout_s"),
        ({"timeout_s": 0.0}, "timeout_s"),
        ({"valid_h": math.inf}, "valid_h"),
        ({"required": "yes"}, "required"),
    ],
)
def test_a_required_check_names_each_missing_or_absurd_value(bad, key):
    with pytest.raises((ConfigError, ValueError), match=key):
        ShiftCheckSection(**{**CHECK, **bad})
    with pytest.raises((ConfigError, ValueError), match=f"shift_check.*{key}|{key}"):
        load_config(overrides={"shift_check": {**CHECK, **bad}})


def test_a_missing_key_is_named_as_not_set_and_a_value_is_checked_even_when_not_required():
    with pytest.raises(ConfigError, match="clear_s, timeout_s, valid_h not set"):
        ShiftCheckSection(required=True, with_uro=2)
    with pytest.raises(ConfigError, match="with_uro=50 is out of range"):
        ShiftCheckSection(with_uro=50)
    with pytest.raises(ConfigError, match="timeout_s=nan"):
        ShiftCheckSection(timeout_s=math.nan)


def test_a_real_line_needs_a_plc_for_a_required_check():
    with pytest.raises(ConfigError, match="needs a line PLC"):
        load_config(overrides={"shift_check": CHECK, "camera": {"source": "folder:/nonexistent"}})


class Events(list):
    def __call__(self, kind, user, detail):
        self.append((kind, user, detail))


def rig(now=1000.0, last=None):
    clock = VirtualClock(start=0.0, auto_advance=False)
    wall = [now]
    events, alarms = Events(), Alarms()
    check = ShiftCheck(ShiftCheckSection(**CHECK), alarms, events, clock, lambda: wall[0], last=last)
    return check, clock, wall, events, alarms


def test_the_pieces_must_each_end_as_expected_compared_as_counts():
    check, _, wall, events, alarms = rig()
    assert check.due() and check.status()["state"] == "due"
    check.begin("tanaka")
    assert check.running and check.state == "clearing" and alarms.is_active("shift.check_clearing")
    assert check.offer(["picked"]) is None  # product going through while the belt clears: not a piece
    check.clock.advance(1.0)
    check.saw(1)  # still a scallop in view
    check.clock.advance(1.5)
    assert check.tick(next_track_id=40) is None and check.state == "clearing"
    check.clock.advance(0.6)
    check.tick(next_track_id=41)
    assert check.state == "running" and check.first_piece_id == 41 and alarms.is_active("shift.check_running")
    assert not alarms.is_active("shift.check_clearing")
    assert check.offer(["passed", "picked"]) is None  # two of three
    assert check.offer(["picked", "picked"]) is True  # the third piece; the fourth is production
    assert check.pieces == ["passed", "picked", "picked"] and not check.due()
    assert events[-1] == (
        "shift_check",
        "tanaka",
        {
            "result": "pass",
            "expected": {"picked": 2, "passed": 1},
            "got": {"passed": 1, "picked": 2},
            "pieces": ["passed", "picked", "picked"],
        },
    )
    assert check.status()["valid_until"] == pytest.approx(1000.0 + 8 * 3600)
    wall[0] += 8 * 3600 + 1  # the next shift
    assert check.due() and check.status()["state"] == "due"


def asked(check, clock):
    check.begin("tanaka")
    clock.advance(CHECK["clear_s"])
    check.tick(next_track_id=1)
    assert check.state == "running"


def test_a_piece_with_a_uro_that_passes_fails_the_check_with_an_alarm_in_plain_words():
    check, clock, _, events, alarms = rig()
    asked(check, clock)
    assert check.offer(["picked", "passed", "passed"]) is False
    assert check.state == "failed" and check.due()
    assert events[-1][2]["why"] == "expected 1 passed, 2 picked, got 2 passed, 1 picked"
    a = alarms.get("shift.check")
    assert a.severity == "critical" and "production does not start" in a.text
    assert not alarms.is_active("shift.check_running")


def test_a_belt_that_does_not_clear_fails_the_check_naming_the_feeder():
    check, clock, _, events, _ = rig()
    check.begin("tanaka")
    for _ in range(61):
        clock.advance(1.0)
        check.saw(1)
        result = check.tick(next_track_id=1)
    assert (
        result is False and events[-1][2]["why"] == "the belt did not clear of scallops in 60 s (is the feeder held?)"
    )


def test_pieces_that_do_not_come_fail_the_check_at_its_timeout():
    check, clock, _, events, _ = rig()
    asked(check, clock)
    check.offer(["picked"])
    clock.advance(59.9)
    assert check.tick() is None
    clock.advance(0.2)
    assert check.tick() is False
    assert events[-1][2]["why"] == "only 1 of 3 test pieces came through in 60 s"


def test_an_override_needs_a_reason_and_is_recorded_with_the_engineer():
    check, _, _, events, _ = rig()
    for bad in ("", "   ", 3, "x" * 201, "bad\x00reason"):
        with pytest.raises(ConfigError, match="reason"):
            check.override("suzuki", bad)
    st = check.override("suzuki", "test pieces broken; new ones on order")
    assert st["state"] == "overridden" and st["user"] == "suzuki" and not check.due()
    assert events[-1] == ("shift_check_override", "suzuki", {"reason": "test pieces broken; new ones on order"})
    with pytest.raises(StateError):
        ShiftCheck(ShiftCheckSection(), Alarms(), Events(), VirtualClock()).override("suzuki", "why")


def test_a_pass_or_an_override_holds_across_a_restart_for_valid_h_only():
    passed = {"shift_check": {"time": 1000.0, "user": "tanaka", "detail": {"result": "pass"}}}
    assert not rig(now=1000.0 + 3600, last=passed)[0].due()
    assert rig(now=1000.0 + 9 * 3600, last=passed)[0].due()
    failed = {"shift_check": {"time": 1000.0, "user": "tanaka", "detail": {"result": "fail"}}}
    assert rig(now=1001.0, last=failed)[0].due()
    override = {"shift_check_override": {"time": 1000.0, "user": "suzuki", "detail": {"reason": "r"}}}
    check = rig(now=2000.0, last=override)[0]
    assert not check.due() and check.status()["state"] == "overridden"
    assert check.status()["result"] == {"reason": "r"}  # the same shape as a live override's


def test_a_running_line_is_warned_when_its_check_runs_out():
    check, clock, wall, _, alarms = rig()
    asked(check, clock)
    check.offer(["picked", "picked", "passed"])
    check.overdue()
    assert not alarms.is_active("shift.overdue")
    wall[0] += 8 * 3600 + 1
    check.overdue()
    assert alarms.get("shift.overdue").severity == "warning" and check.status()["state"] == "due"


# ---------------------------------------------------------------------------- on the line
def run_until(line, cond, limit_s=40.0, step_s=0.5):
    t = 0.0
    while not cond() and t < limit_s:
        line.run_stepped(step_s)
        t += step_s
    return cond()


def scallop_rows(tmp_path, cols="track_id, disposition, lot, detail"):
    con = sqlite3.connect(tmp_path / "record.sqlite")
    try:
        return con.execute(f"SELECT {cols} FROM scallops ORDER BY id").fetchall()
    finally:
        con.close()


def test_start_runs_the_check_with_the_feeder_held_then_production_follows(tmp_path):
    line = make_line(tmp_path, seed=5, overrides={"shift_check": CHECK})
    world = line.backend.world
    try:
        line.start("tanaka")
        assert line.shift.check.running and line.snapshot().shift_check["state"] == "clearing"
        line.run_stepped(1.0)
        assert line.reject.hold_infeed == "shift_check" and line.reject.client.outputs.infeed.name == "HOLD"
        assert run_until(line, lambda: line.shift.check.state == "running", limit_s=10.0)
        ids = world.place_test_pieces(2, 1)
        assert len(ids) == 3
        assert run_until(line, lambda: not line.shift.check.running)
        st = line.snapshot().shift_check
        assert st["state"] == "passed" and st["user"] == "tanaka", st
        assert sorted(st["result"]["pieces"]) == ["passed", "picked", "picked"]
        line.run_stepped(3.0)
        assert line.reject.client.outputs.infeed.name != "HOLD" and line.state == LineState.RUNNING
        line.run_stepped(10.0)
    finally:
        line.close()
    pieces = [r for r in scallop_rows(tmp_path) if json.loads(r[3]).get("test_piece")]
    assert len(pieces) == 3 and len(scallop_rows(tmp_path)) > 3  # then production
    # The next start of the day needs no check: the pass holds across a restart.
    again = make_line(tmp_path, seed=6, overrides={"shift_check": CHECK})
    try:
        assert again.snapshot().shift_check["state"] == "passed"
        again.start("tanaka")
        assert not again.shift.check.running
    finally:
        again.close()


def test_a_blind_line_fails_its_check_pauses_and_starts_only_after_an_override(tmp_path, capsys):
    line = make_line(tmp_path, seed=5, overrides={"shift_check": CHECK})
    try:
        # Vision that cannot see a uro any more: every piece would pass on with its uro. (With
        # only the uro area raised, the uros it still glimpses would go to rework as hidden_uro.)
        line.update_config({"vision.min_uro_area_mm2": 2000.0, "vision.hidden_uro_probability": 1.0}, "suzuki")
        line.start("tanaka")
        assert run_until(line, lambda: line.shift.check.state == "running", limit_s=10.0)
        line.backend.world.place_test_pieces(2, 1)
        assert run_until(line, lambda: not line.shift.check.running)
        st = line.snapshot().shift_check
        assert st["state"] == "failed" and st["result"]["got"] == {"passed": 3}, st
        assert line.state == LineState.PAUSED and line.alarms.is_active("shift.check")
        # Start again: a new check, not production; an override during it pauses the line,
        # and production begins at the operator's next Start.
        line.start("tanaka")
        assert line.shift.check.running
        line.run_stepped(1.0)
        line.override_check("suzuki", "camera lens cleaned; check repeated at 10:00 by hand")
        assert line.state == LineState.PAUSED and line.snapshot().shift_check["state"] == "overridden"
        line.start("tanaka")
        assert not line.shift.check.running and line.state in (LineState.RUNNING, LineState.WAITING_CAMERA)
    finally:
        line.close()
    con = sqlite3.connect(tmp_path / "record.sqlite")
    kinds = [r[0] for r in con.execute("SELECT kind FROM events ORDER BY id")]
    con.close()
    assert kinds.count("shift_check") == 1 and kinds.count("shift_check_start") == 2 and "shift_check_override" in kinds
    assert main(["report", "--db", str(tmp_path / "record.sqlite"), "--json"]) == 0
    checks = json.loads(capsys.readouterr().out)["shift_checks"]
    assert [(c["result"], c["user"]) for c in checks] == [("fail", "tanaka"), ("override", "suzuki")]
    assert checks[0]["why"] == "expected 1 passed, 2 picked, got 3 passed"
    assert kinds.index("shift_check_override") < len(kinds) - 1 - kinds[::-1].index("start")


def test_product_already_on_the_belt_is_never_taken_for_a_test_piece(tmp_path):
    line = make_line(tmp_path, seed=7, overrides={"shift_check": CHECK})
    try:
        line.override_check("suzuki", "first run of the day by hand")
        line.start("tanaka")
        line.run_stepped(8.0)  # production: scallops on the belt and in view
        assert line.snapshot().tracking > 0 or line.snapshot().seen > 0
        line.shift.check.valid_until = 0.0  # the override ran out
        line.run_stepped(0.5)
        assert line.alarms.is_active("shift.overdue") and line.state == LineState.RUNNING
        line.pause("tanaka")
        line.start("tanaka")  # a check now, with product still between the feeder and the camera
        assert line.shift.check.state == "clearing"
        seen_before = line.snapshot().seen
        assert run_until(line, lambda: line.shift.check.state == "running", limit_s=20.0)
        assert line.snapshot().seen > seen_before  # product went through while the belt cleared
        line.backend.world.place_test_pieces(2, 1)
        assert run_until(line, lambda: not line.shift.check.running)
        assert line.snapshot().shift_check["state"] == "passed"
    finally:
        line.close()
    pieces = [r for r in scallop_rows(tmp_path) if json.loads(r[3]).get("test_piece")]
    assert len(pieces) == 3


def test_the_lot_is_stamped_on_every_row_and_reported_per_lot(tmp_path, capsys):
    line = make_line(tmp_path, seed=2)
    try:
        for bad in ("x" * 41, "L\n1", 7, "=1+1", "-L1", "L;1", "L  1", "L\u200b1"):
            with pytest.raises(ConfigError, match="lot="):
                line.set_lot(bad, "tanaka")
        assert line.set_lot("  L-0412 ", "tanaka") == "L-0412"
        line.start("tanaka")
        line.run_stepped(12.0)
        line.set_lot("ホタテ-0413", "tanaka")
        line.run_stepped(12.0)
        assert line.snapshot().lot == "ホタテ-0413"
    finally:
        line.close()
    rows = scallop_rows(tmp_path, "lot, disposition")
    lots = [r[0] for r in rows]
    assert lots[0] == "L-0412" and lots[-1] == "ホタテ-0413" and set(lots) == {"L-0412", "ホタテ-0413"}
    assert all(r[1] in ("picked", "passed", "diverted", "not_diverted") for r in rows)
    con = sqlite3.connect(tmp_path / "record.sqlite")
    for table in ("alarms", "events", "picks"):
        got = {r[0] for r in con.execute(f"SELECT lot FROM {table} WHERE time > (SELECT MIN(time) FROM scallops)")}
        assert got <= {"L-0412", "ホタテ-0413"}, (table, got)
    con.close()
    db = str(tmp_path / "record.sqlite")
    assert main(["report", "--db", db, "--lot", "L-0412", "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["lot"] == "L-0412" and one["seen"] == lots.count("L-0412")
    assert sum(one["dispositions"].values()) == one["seen"] and one["dispositions"]["unknown"] == 0
    assert main(["report", "--db", db, "--by-lot", "--json"]) == 0
    both = json.loads(capsys.readouterr().out)
    assert [s["lot"] for s in both] == ["L-0412", "ホタテ-0413"] and sum(s["seen"] for s in both) == len(rows)
    out = tmp_path / "lot.csv"
    assert main(["report", "--db", db, "--lot", "ホタテ-0413", "--csv", str(out)]) == 0
    got = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(got) == lots.count("ホタテ-0413") and {r["lot"] for r in got} == {"ホタテ-0413"}
    capsys.readouterr()
    assert main(["report", "--db", db, "--lot", "NOPE"]) == 3
    assert "no rows of lot 'NOPE' (the lots here: 'L-0412', 'ホタテ-0413')" in capsys.readouterr().err
    # A restarted line carries on with the last lot set.
    again = make_line(tmp_path, seed=3)
    try:
        assert again.snapshot().lot == "ホタテ-0413"
    finally:
        again.close()


def test_the_screen_sets_the_lot_as_operator_and_overrides_the_check_as_engineer(tmp_path, fast_users):
    line = make_line(tmp_path, seed=2, overrides={"shift_check": CHECK})
    try:
        with TestClient(create_app(line, fast_users), client=("127.0.0.1", 50000)) as c:
            assert c.post("/api/lot", json={"lot": "L-1"}).status_code == 401
            assert c.post("/api/login", json={"pin": "1111"}).status_code == 200
            r = c.post("/api/lot", json={"lot": "L\x07"})
            assert r.status_code == 422 and "lot=" in r.json()["error"]
            assert c.post("/api/lot", json={"lot": "L-1", "x": 1}).status_code == 422
            r = c.post("/api/lot", json={"lot": "L-1"})
            assert r.status_code == 200 and r.json() == {"ok": True, "lot": "L-1"}
            assert c.get("/api/state").json()["lot"] == "L-1"
            r = c.post("/api/shift_check/override", json={"reason": "pieces lost"})
            assert r.status_code == 403
            assert c.post("/api/login", json={"pin": "2222"}).status_code == 200
            assert c.post("/api/shift_check/override", json={"reason": ""}).status_code == 422
            r = c.post("/api/shift_check/override", json={"reason": "pieces lost"})
            assert r.status_code == 200 and r.json()["shift_check"]["state"] == "overridden"
            assert c.get("/api/state").json()["shift_check"]["user"] == "engineer"
    finally:
        line.close()


def test_a_lot_set_on_the_plc_becomes_the_lines_lot_and_the_screen_can_set_another(tmp_path):
    line = make_line(tmp_path, seed=2)
    try:
        line.start("tanaka")
        line.run_stepped(1.0)
        assert line.snapshot().lot == ""
        line.backend.sim_plc.set_lot_number(412)
        line.run_stepped(0.5)
        assert line.snapshot().lot == "412"
        line.set_lot("L-0413", "tanaka")  # the last to set it wins
        line.run_stepped(0.5)
        assert line.snapshot().lot == "L-0413"
        line.backend.sim_plc.set_lot_number(414)
        line.run_stepped(0.5)
        assert line.snapshot().lot == "414"
    finally:
        line.close()
    con = sqlite3.connect(tmp_path / "record.sqlite")
    lots = con.execute("SELECT user, detail FROM events WHERE kind='lot' ORDER BY id").fetchall()
    con.close()
    assert [(u, json.loads(d)["lot"]) for u, d in lots] == [("plc", "412"), ("tanaka", "L-0413"), ("plc", "414")]
