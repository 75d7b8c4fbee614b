"""The line end to end on the simulator (virtual clock): accounting, faults, stop/e-stop."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from scallop.app.build import build_line
from scallop.app.config import load_config
from scallop.sim.clock import VirtualClock
from tests.helpers import executed_targets, make_line, rows


def test_every_scallop_is_decided_once_and_recorded(tmp_path):
    line = make_line(tmp_path)
    try:
        line.start("test")
        line.run_stepped(60.0)
    finally:
        line.close()
    s = line.summary()
    assert s["seen"] > 30
    assert s["seen"] == s["picked"] + s["skipped"]
    r = rows(tmp_path)
    ids = [t for t, _, _ in r]
    assert len(ids) == len(set(ids)) == s["seen"]
    assert all(reason for _, res, reason in r if res == "skipped")
    # No pick executed twice, and every executed pick is a recorded pick.
    ex = executed_targets(line)
    assert len(ex) == len(set(ex))
    picked = {t for t, res, _ in r if res in ("picked", "failed")}
    assert set(ex) <= picked
    truth = s["truth"]
    assert truth["passed_with_uro"] > 20
    assert s["adductor_hits"] == 0
    # The shipped model and one arm at this load remove nearly every uro that passed: none is
    # lost for lack of capacity; at most two (a vision miss, one still in the window when the
    # line stopped) are left on.
    assert not any(reason == "no_capacity" for _, _, reason in r)
    assert truth["passed_with_uro"] - s["uro_removed"] <= 2


def test_same_seed_same_result(tmp_path):
    out = []
    for k in range(2):
        d = tmp_path / str(k)
        d.mkdir()
        line = make_line(d, seed=5)
        try:
            line.start("t")
            line.run_stepped(20.0)
        finally:
            line.close()
        s = line.summary()
        out.append(
            {k: s[k] for k in ("seen", "picked", "uro_removed", "skipped", "adductor_hits", "skipped_by_reason")}
        )
    assert out[0] == out[1]


def test_estop_stops_commands_and_accounts_for_everything(tmp_path):
    line = make_line(tmp_path)
    try:
        line.start("t")
        line.run_stepped(15.0)
        before = len(executed_targets(line))
        line.estop("operator")
        assert line.state == "estop"
        assert any("emergency stop" in a.text for a in line.alarms.visible())
        line.run_stepped(5.0)  # frames still come, nothing is sent
        assert len(executed_targets(line)) <= before + 1  # at most the pick already under way
        with pytest.raises(RuntimeError):
            line.start("t")
        line.reset("t")
        line.start("t")
        line.run_stepped(15.0)
        assert line.summary()["picked"] > 0
    finally:
        line.close()
    s = line.summary()
    assert s["seen"] == s["picked"] + s["skipped"]
    ex = executed_targets(line)
    assert len(ex) == len(set(ex))


def test_camera_stall_raises_alarm_and_line_recovers(tmp_path):
    line = make_line(tmp_path)
    try:
        line.start("t")
        line.run_stepped(5.0)
        line.backend.camera.stall(4.0)
        line.run_stepped(3.0)
        # No frame for longer than stall_alarm_s (2 s): picking stops, and the state says so.
        assert line.alarms.is_active("camera.silent") and line.state == "waiting_camera"
        assert line.snapshot().state == "waiting_camera"
        frames = line.frames
        line.run_stepped(5.0)
        assert line.frames > frames
        assert not line.alarms.is_active("camera.silent") and line.state == "running"
    finally:
        line.close()


def test_arm_heartbeat_stall_alarms_and_stops_new_picks(tmp_path):
    line = make_line(tmp_path)
    try:
        line.start("t")
        line.run_stepped(10.0)
        arm = line.backend.sim_arms[0]
        arm.stall_heartbeat(True)
        line.run_stepped(3.0)
        assert line.alarms.is_active("arm:arm1")
        n = len(executed_targets(line))
        line.run_stepped(5.0)
        assert len(executed_targets(line)) <= n + 1
        arm.stall_heartbeat(False)
        line.run_stepped(10.0)
        assert not line.alarms.is_active("arm:arm1")
        assert len(executed_targets(line)) > n + 1
    finally:
        line.close()
    ex = executed_targets(line)
    assert len(ex) == len(set(ex))


def test_arm_disconnect_and_return(tmp_path):
    line = make_line(tmp_path)
    try:
        line.start("t")
        line.run_stepped(10.0)
        arm = line.backend.sim_arms[0]
        for _ in range(5):
            arm.drop_connections()
            line.run_stepped(0.2)
        line.run_stepped(10.0)
    finally:
        line.close()
    s = line.summary()
    assert s["seen"] == s["picked"] + s["skipped"]
    ex = executed_targets(line)
    assert len(ex) == len(set(ex))
    assert s["picked"] > 5


def test_snapshot_disk_full_alarms_but_line_goes_on(tmp_path, monkeypatch):
    import errno

    import scallop.app.record

    def full_disk(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(scallop.app.record, "write_snapshot_file", full_disk)
    # Every uro is "ambiguous" at this threshold, so every scallop is doubtful and wants a snapshot.
    line = make_line(tmp_path, overrides={"vision": {"min_uro_confidence": 0.999}})
    try:
        line.start("t")
        line.run_stepped(20.0)
        line.record.flush(5.0)
        assert any(a.source == "record" and "disk full" in a.text for a in line.alarms.visible())
    finally:
        line.close()
    s = line.summary()
    assert s["seen"] > 5
    # Every scallop is still in the record, without its frame.
    assert len(rows(tmp_path)) == s["seen"]


def test_bad_config_is_refused_with_the_key(tmp_path):
    from scallop.app.config import ConfigError

    p = tmp_path / "line.toml"
    p.write_text("[runtime]\ntick_s = 5\n")
    with pytest.raises(ConfigError, match=r"tick_s=5"):
        load_config(p)
    p.write_text("[camera]\nsorce = 'x'\n")
    with pytest.raises(ConfigError, match=r"camera.sorce: unknown key"):
        load_config(p)


@pytest.mark.parametrize("text", ["", "\n\n", "# the line's settings\n"])
def test_a_configuration_file_that_holds_nothing_is_refused_not_run_as_the_simulator(tmp_path, text):
    """An emptied line.toml (a power cut mid-save) brought up the simulator behind a screen
    saying "running" in an outside try."""
    from scallop.app.config import ConfigError

    p = tmp_path / "line.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=r"line.toml: the file holds no settings \(empty, or comments only\)"):
        load_config(p)


def test_corrupt_frame_is_skipped_with_an_alarm_and_the_loop_goes_on(tmp_path):
    line = make_line(tmp_path)
    try:
        line.start("t")
        line.run_stepped(3.0)
        frames = line.frames
        line.backend.camera.corrupt_next()
        line.run_stepped(5.0)
        assert line.frames_bad == 1
        assert line.frames > frames + 3
        assert line.state == "running"
        assert any(a.source == "camera" and "corrupt" in a.text for a in line.alarms.visible())
    finally:
        line.close()


def test_vision_crash_on_a_frame_does_not_stop_the_line(tmp_path, monkeypatch):
    line = make_line(tmp_path)
    real = line.pipeline.detect
    calls = {"n": 0}

    def flaky(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("onnxruntime hiccup")
        return real(*a, **kw)

    monkeypatch.setattr(line.pipeline, "detect", flaky)
    try:
        line.start("t")
        line.run_stepped(8.0)
        assert line.frames_bad == 1 and line.state == "running"
        assert any(a.source == "vision" for a in line.alarms.visible())
    finally:
        line.close()


def test_arms_polled_within_the_heartbeat_period_not_every_tick(tmp_path, monkeypatch):
    line = make_line(tmp_path, seed=3)
    polls = []
    client = line.clients[0]
    real_poll = client.poll
    monkeypatch.setattr(client, "poll", lambda *a: polls.append(line.clock.now()) or real_poll(*a))
    sent = []
    real_submit = client.submit
    monkeypatch.setattr(client, "submit", lambda plan: sent.append((line.clock.now(), plan)) or real_submit(plan))
    try:
        line.start("test")
        line.run_stepped(30.0)
        snap = line.snapshot()
    finally:
        line.close()
    gaps = np.diff(polls)
    # Within the 0.1 s heartbeat period every time (half of it plus a tick or a frame) ...
    assert gaps.max() < client.config.heartbeat_period_s
    # ... and far fewer than one Modbus round trip per 20 ms tick.
    assert len(polls) < 0.6 * 30.0 / 0.02
    assert len(sent) >= 10
    # The busy share of the arm is shown (it was reset on every collect).
    assert snap.arms[0].utilisation > 0.3


def test_metrics_carry_the_line_and_its_record(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    line = make_line(tmp_path)
    try:
        line.start("test")
        line.run_stepped(20.0)
        line.record.flush()
        fams = {f.name: f for f in text_string_to_metric_families(line.metrics_text())}
        seen = line.summary()["seen"]
    finally:
        line.close()
    assert fams["scallop_seen"].samples[0].value == seen > 0
    assert fams["scallop_record_written"].samples[0].value >= 1
    assert fams["scallop_record_dropped"].samples[0].value == 0


def test_an_arm_given_a_transport_is_driven_over_it_while_the_camera_is_simulated(tmp_path):
    """A dry run with a real arm: simulated scallops, the arm reached over the configured
    transport (here a robot simulator the test starts itself, standing in for the vendor's)."""
    from scallop.app.backends import default_sim_arms
    from scallop.app.config import to_dict
    from scallop.sim.arm import SimArm

    clock = VirtualClock()
    arm_cfg = default_sim_arms(1)[0]
    external = SimArm(arm_cfg, clock=clock).start()
    try:
        arm = to_dict(arm_cfg) | {"transport": to_dict(external.transport_config())}
        cfg = load_config(overrides={"runtime": {"tick_s": 0.02}, "arms": [arm]})
        assert cfg.real_devices() == [f"arm 'arm1' (tcp 127.0.0.1:{external.port} unit 1)"]
        line = build_line(cfg, tmp_path / "record.sqlite", seed=1, clock=clock)
        line.open()
        try:
            assert line.backend.sim_arms == []  # the line started no arm of its own
            line.start("test")
            line.run_stepped(40.0)
        finally:
            line.close()
        s = line.summary()
        picks = [r for r in external.records if r.cmd_type in (1, 4) and r.t_grip is not None]
        assert s["picked"] >= 10 and len(picks) >= s["picked"]
        # Nobody on this line can see what a pick did to the uro: unknown, not zero.
        assert s["uro_removed"] == 0 and s["adductor_hits"] == 0 and s["missed"] == 0
        assert {r for _, r, _ in rows(tmp_path)} >= {"picked"}
    finally:
        external.close()


def test_real_devices_are_named():
    assert load_config().real_devices() == []
    cfg = load_config(overrides={"camera": {"source": "0", "encoder": {"source": "modbus", "host": "plc"}}})
    assert cfg.real_devices() == ["camera '0'", "belt encoder modbus plc:502"]


def test_after_estop_the_arms_show_it_and_reset_leaves_no_second_alarm(tmp_path):
    line = make_line(tmp_path)
    try:
        line.start("t")
        line.run_stepped(8.0)
        line.estop("maria")
        line.run_stepped(3.0)  # the arm's watchdog faults it meanwhile: nothing is polled
        snap = line.snapshot()
        assert [a.state for a in snap.arms] == ["estop"]  # not a stale green "picking"
        [a] = snap.alarms
        assert (a.code, a.params["user"]) == ("line.estop", "maria")
        line.ack_alarm(a.id, "maria")
        line.reset("maria")
        line.run_stepped(3.0)
        # The arm still read "fault" for a poll after RESET: that is not a new alarm.
        assert line.snapshot().alarms == []
        assert [a.state for a in line.snapshot().arms] == ["idle"]
    finally:
        line.close()


def test_arm_alarms_name_their_cause_for_the_catalogue(tmp_path):
    from scallop.app import i18n

    line = make_line(tmp_path)
    try:
        line.start("t")
        line.run_stepped(5.0)
        line.backend.sim_arms[0].stall_heartbeat(True)
        line.run_stepped(3.0)
        [a] = [a for a in line.alarms.visible() if a.source == "arm:arm1"]
        assert (a.code, a.params["arm"]) == ("arm.stalled", "arm1")
        assert "heartbeat stopped" in a.text  # the record keeps the engineer's words
        assert i18n.t("ja", f"alarm.{a.code}", **a.params).startswith("アーム arm1 が応答しません")
    finally:
        line.close()


def test_after_a_crash_the_screen_says_the_line_came_back_and_why(tmp_path):
    import socket

    from scallop.app.record import RecordWriter

    RecordWriter(tmp_path / "record.sqlite", snapshot_dir=tmp_path / "snaps").close()
    con = sqlite3.connect(tmp_path / "record.sqlite")
    # A run nobody closed, whose program is gone (no lock held): a power cut.
    con.execute("INSERT INTO runs (started, host, note, pid) VALUES (1.7e9, ?, '', 1)", (socket.gethostname(),))
    con.commit()
    con.close()
    line = make_line(tmp_path)
    try:
        alarm = next(a for a in line.alarms.visible() if a.code == "line.restarted")
        assert alarm.severity == "warning" and "stopped without closing" in alarm.text
        assert line.state == "stopped"  # it waits for an operator's Start
    finally:
        line.close()


def test_an_arm_whose_state_file_cannot_be_written_stops_picking_with_an_alarm_and_resumes(tmp_path):
    """The command counter must be on disk before a commit (a restart may not reuse it). A disk
    that refuses it (full, read-only; here a file where its folder should be) stopped the whole
    line for good with a traceback in an outside try; now only that arm stops taking picks,
    named in an alarm, the scallops meanwhile go to rework, and it picks again once it can write."""
    from scallop.app.backends import default_sim_arms
    from scallop.app.config import to_dict

    arm = to_dict(default_sim_arms(1)[0]) | {"state_file": str(tmp_path / "state" / "arm1.seq")}
    line = make_line(tmp_path, overrides={"arms": [arm]})
    try:
        line.start("t")
        line.run_stepped(14.0)
        before = line.summary()["picked"]
        assert before > 2
        import shutil

        shutil.rmtree(tmp_path / "state")
        (tmp_path / "state").write_text("not a folder")  # every write of the counter now fails
        line.run_stepped(8.0)
        a = line.alarms.get("arm:arm1")
        assert a is not None and a.active and a.code == "arm.state_file" and a.severity == "critical"
        assert "cannot write its state file" in a.text and "arm1.seq" in a.text
        assert line.state.value == "running"
        stalled = line.summary()
        assert stalled["picked"] <= before + 1  # at most the pick already committed
        (tmp_path / "state").unlink()
        line.run_stepped(8.0)
        assert not line.alarms.is_active("arm:arm1")
        assert line.summary()["picked"] > stalled["picked"]
        assert (tmp_path / "state" / "arm1.seq").exists()
    finally:
        line.close()
    s = line.summary()
    assert s["seen"] == s["picked"] + s["skipped"] + s.get("failed", 0)
    assert s["dispositions"]["not_diverted"] == 0
    kinds = [r[0] for r in sqlite3.connect(tmp_path / "record.sqlite").execute("SELECT kind FROM events")]
    assert kinds.count("arm_state_file_error") == 1 and kinds.count("arm_state_file_back") == 1
    ex = executed_targets(line)
    assert len(ex) == len(set(ex))


def test_an_arm_stuck_busy_with_its_heartbeat_running_is_alarmed_and_given_nothing(tmp_path):
    """An outside try's arm reported BUSY for 9 s, heartbeat running, taking nothing: the tile
    said "picking", no alarm, a pick committed behind the stuck one ended LATE and its scallop
    went on undiverted. Now the arm is alarmed once its pick is 3 s past its planned end, gets
    nothing new, and every scallop meanwhile goes to rework."""
    line = make_line(tmp_path)
    arm = line.backend.sim_arms[0]
    try:
        line.start("t")
        line.run_stepped(14.0)
        arm.hold_busy(True)
        line.run_stepped(10.0)
        a = line.alarms.get("arm:arm1")
        assert a is not None and a.active and a.code == "arm.stuck" and a.severity == "critical"
        assert "is not done" in a.text and "after it should have ended" in a.text
        assert line.snapshot().arms[0].state == "stuck"
        taken = len(arm.executed_seqs())
        line.run_stepped(4.0)
        assert len(arm.executed_seqs()) == taken  # nothing new while it is stuck
        arm.hold_busy(False)
        line.run_stepped(8.0)
        assert not line.alarms.is_active("arm:arm1")
        assert len(arm.executed_seqs()) > taken
    finally:
        line.close()
    s = line.summary()
    assert s["dispositions"]["not_diverted"] == 0
    assert s["seen"] == s["picked"] + s["skipped"] + s.get("failed", 0)
    kinds = [r[0] for r in sqlite3.connect(tmp_path / "record.sqlite").execute("SELECT kind FROM events")]
    assert kinds.count("arm_stuck") == 1 and kinds.count("arm_stuck_cleared") == 1


def test_an_error_the_arm_repeats_at_every_poll_is_recorded_once_per_ten_seconds(tmp_path):
    """An outside try's arm answered every status read wrongly for 75 s: 6 967 identical
    arm_error rows. Now one, then one per 10 s with how many it stands for."""
    line = make_line(tmp_path)
    arm = line.backend.sim_arms[0]
    try:
        line.start("t")
        line.run_stepped(5.0)
        arm.exception_replies(4, n=10_000)  # SERVER_DEVICE_FAILURE to every request
        line.run_stepped(12.0)
        arm.exception_replies(4, n=0)
        line.run_stepped(3.0)
        line.record.flush(5.0)
    finally:
        line.close()
    con = sqlite3.connect(tmp_path / "record.sqlite")
    errors = [json.loads(d) for (d,) in con.execute("SELECT detail FROM events WHERE kind = 'arm_error'")]
    assert 2 <= len(errors) <= 4, len(errors)
    assert any(e.get("repeats_before", 0) > 50 for e in errors)


def test_a_registry_not_found_is_started_afresh_with_a_warning_never_silently(tmp_path):
    """Right on a first start; after a lost disk it means the plant's promoted models are gone
    and the shipped one runs (an outside try: no alarm, no event)."""
    reg = tmp_path / "registry"
    line = make_line(tmp_path / "a", overrides={"models": {"registry": str(reg)}})
    try:
        a = line.alarms.get("vision.registry_new")
        assert a is not None and a.active and a.severity == "warning"
        assert f"models.registry = {reg}: no registry there" in a.text and "scallop restore" in a.text
        line.record.flush(5.0)
    finally:
        line.close()
    con = sqlite3.connect(tmp_path / "a" / "record.sqlite")
    actions = [json.loads(d)["action"] for (d,) in con.execute("SELECT detail FROM events WHERE kind = 'model'")]
    assert actions == ["new_registry"]
    again = make_line(tmp_path / "b", overrides={"models": {"registry": str(reg)}})
    try:
        assert again.alarms.get("vision.registry_new") is None  # the registry is there now
    finally:
        again.close()


def test_a_pick_whose_commit_never_went_out_is_one_row_not_two(tmp_path):
    """Its intent is recorded before the commit; the commit failing (the arm refused the block),
    the scallop went out again with a second intent, and both rows read 'picked' at the end (an
    outside try: 41 picked rows for 39 picks). The first is now closed as not sent."""
    from scallop.robot.arm import ArmClient
    from scallop.robot.errors import ModbusExceptionError

    line = make_line(tmp_path)
    client = line.arms.clients[0]
    real = ArmClient.submit
    failed = []

    def refuse_once(plan):
        if not failed:
            failed.append(plan.target.id)
            raise ModbusExceptionError(4, 16, 24, 59, "arm1")  # the block write refused
        return real(client, plan)

    client.submit = refuse_once
    try:
        line.start("t")
        line.run_stepped(20.0)
        line.record.flush(5.0)
    finally:
        line.close()
    con = sqlite3.connect(tmp_path / "record.sqlite")
    rows = con.execute("SELECT track_id, state, result FROM picks ORDER BY id").fetchall()
    mine = [r for r in rows if r[0] == failed[0]]
    assert mine[0] == (failed[0], "done", "not_sent") and len(mine) == 2 and mine[1][2] != "not_sent"
    picked = con.execute("SELECT COUNT(*) FROM picks WHERE result = 'picked'").fetchone()[0]
    assert picked == len(executed_targets(line))
