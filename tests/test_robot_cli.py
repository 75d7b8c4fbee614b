"""``scallop robot sim-arm``, ``scallop robot status`` and ``scallop bench modbus``."""

from __future__ import annotations

import json
import threading
import time

import pytest

from scallop.app.cli import build_parser, main
from scallop.robot.clock import SystemClock
from scallop.robot.config import ArmConfig
from scallop.sim.arm import SimArm
from tests.helpers import free_port


@pytest.fixture
def sim_arm():
    arm = SimArm(ArmConfig(), SystemClock()).start()
    yield arm
    arm.close()


def test_status_reads_the_arm(sim_arm, capsys):
    assert main(["robot", "status", "--port", str(sim_arm.port)]) == 0
    out = capsys.readouterr().out
    assert "state              IDLE" in out and "interface_version  2" in out and "cmd_seq            0" in out
    assert main(["robot", "status", "--port", str(sim_arm.port), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["state"] == "IDLE" and d["profile"] == "generic" and d["tcp_mm"] == [300.0, 0.0, 100.0]
    assert sim_arm.write_log == []  # status only reads


def test_status_errors_are_one_line(sim_arm, capsys):
    port = free_port()
    assert main(["robot", "status", "--port", str(port), "--timeout", "0.2"]) == 4
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith(f"scallop robot: error: arm 'status' (tcp 127.0.0.1:{port} unit 1): cannot connect")
    # The UR map starts at 128: the generic simulated arm answers with a named exception.
    assert main(["robot", "status", "--port", str(sim_arm.port), "--profile", "ur"]) == 4
    assert "Modbus exception 2 (ILLEGAL DATA ADDRESS)" in capsys.readouterr().err
    assert main(["robot", "status", "--port", str(sim_arm.port), "--profile", "fanuc"]) == 2
    assert "unknown robot profile 'fanuc'" in capsys.readouterr().err


def test_sim_arm_serves_until_its_duration(capsys):
    port = free_port()
    rc: list[int] = []
    th = threading.Thread(
        target=lambda: rc.append(
            main(["robot", "sim-arm", "--port", str(port), "--profile", "ur", "--duration", "0.8"])
        )
    )
    th.start()
    try:
        for _ in range(50):
            time.sleep(0.05)
            if f"127.0.0.1:{port}" in capsys.readouterr().out:
                break
        assert main(["robot", "status", "--port", str(port), "--profile", "ur", "--json"]) == 0
        d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert d["state"] == "IDLE" and d["interface_version"] == 2
    finally:
        th.join(10)
    assert rc == [0] and not th.is_alive()


def test_bench_modbus_json_and_file(tmp_path, capsys):
    out = tmp_path / "b" / "modbus.json"
    assert main(["bench", "modbus", "--json", "--n", "40", "--out", str(out)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == d
    for k in ("roundtrip_median_ms", "roundtrip_p99_ms", "pick_median_ms", "pick_p99_ms"):
        assert d[k] > 0
    assert d["roundtrip_p99_ms"] >= d["roundtrip_median_ms"]
    # A pick handshake is at least three round trips (block, commit, status).
    assert d["pick_median_ms"] > 2 * d["roundtrip_median_ms"]
    assert d["n"] == 40 and d["transport"] == "tcp"


def test_every_robot_command_has_a_runnable_example():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    robot = sub["robot"]
    inner = next(a for a in robot._actions if a.dest == "robot").choices
    for name in ("sim-arm", "status"):
        assert f"scallop robot {name}" in inner[name].description
    bench = next(a for a in sub["bench"]._actions if a.dest == "bench").choices
    assert "scallop bench modbus --json" in bench["modbus"].description


def test_bench_modbus_measures_a_real_arm_by_reading_only(sim_arm, tmp_path, capsys):
    out = tmp_path / "arm.json"
    argv = ["bench", "modbus", "--host", "127.0.0.1", "--port", str(sim_arm.port), "--n", "30", "--out", str(out)]
    assert main([*argv, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["transport"] == f"tcp 127.0.0.1:{sim_arm.port} unit 1" and d["arm_state"] == "IDLE"
    assert 0 < d["roundtrip_median_ms"] <= d["roundtrip_p99_ms"] and d["pick_median_ms"] is None
    assert sim_arm.write_log == []  # a real arm gets no heartbeat and no command from a benchmark
    assert json.loads(out.read_text()) == d


def test_bench_resume_reports_time_to_resume_and_attempts(tmp_path, capsys):
    out = tmp_path / "resume.json"
    argv = ["bench", "resume", "--n", "1", "--away-s", "0.3", "--attempts-s", "0.6", "--out", str(out), "--json"]
    assert main(argv) == 0
    d = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == d
    assert set(d["resume"]) == {
        "restart_registers_kept",
        "restart_registers_cleared",
        "power_cycle_0.3s",
        "link_lost_0.3s",
    }
    assert all(0 < r["median_ms"] <= 2000 for r in d["resume"].values()), d["resume"]
    # 0.1 + 0.2 s in 0.6 s: three attempts, or four with the jitter (never one per poll).
    assert all(2 <= v * 0.6 / 60 <= 4 for v in d["attempts_per_min"].values()), d["attempts_per_min"]


# ---------------------------------------------------------------------------- safe start


@pytest.fixture
def real_arm_config(tmp_path, sim_arm):
    """A dry-run configuration: the simulated camera and a real arm (here a simulated one the
    test started, standing in for it), with its own users file."""
    from scallop.app.auth import UserStore

    users = UserStore(tmp_path / "users.json", scrypt_n=2**8)
    users.add("maria", "operator", "4711")
    users.save()

    def write(users_file: bool = True) -> str:
        p = tmp_path / ("line.toml" if users_file else "line-no-users.toml")
        p.write_text(
            '[[arms]]\nname = "arm1"\n[arms.transport]\n'
            f'host = "127.0.0.1"\nport = {sim_arm.port}\n'
            + (f'[ui]\nusers_file = "{tmp_path / "users.json"}"\n' if users_file else "")
        )
        return str(p)

    return write


def record_starts(path) -> list[tuple[str, dict]]:
    import sqlite3

    con = sqlite3.connect(path)
    try:
        return [(u, json.loads(d)) for u, d in con.execute("SELECT user, detail FROM events WHERE kind = 'start'")]
    finally:
        con.close()


def test_with_a_real_arm_the_line_waits_for_an_operator_and_start_is_refused_beyond_loopback(
    real_arm_config, tmp_path, capsys
):
    base = ["run", "--no-browser", "--port", "0", "--duration", "0.5"]
    # --start with the screen on the plant network: refused before anything moves.
    assert main([*base, "--config", real_arm_config(), "--start", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--start" in err and "beyond loopback" in err
    # A real arm and no users file: the simulator's PINs are never accepted; on the plant
    # network the screen refuses to start (on loopback nobody can log in: E-STOP only).
    assert main([*base, "--config", real_arm_config(users_file=False), "--host", "0.0.0.0"]) == 2
    assert "[ui] users_file is not set, so only the simulator's published PINs" in capsys.readouterr().err
    # Launched without --start: it waits for an operator; nothing started.
    rec = tmp_path / "wait.sqlite"
    assert main([*base, "--config", real_arm_config(), "--record", str(rec)]) == 0
    assert "waits for an operator's Start" in capsys.readouterr().err
    assert record_starts(rec) == []
    # --start on loopback: started at launch, and the record says so.
    rec = tmp_path / "start.sqlite"
    assert main([*base, "--config", real_arm_config(), "--record", str(rec), "--start"]) == 0
    capsys.readouterr()
    assert record_starts(rec) == [("system", {"how": "--start"})]


def test_the_documented_dry_run_configuration_loads():
    from pathlib import Path

    from scallop.app.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "docs" / "examples" / "dry-run-real-arm.toml")
    assert cfg.is_simulated and cfg.real_devices() == ["arm 'arm1' (tcp 192.168.10.21:502 unit 1)"]
    assert cfg.ui.users_file and cfg.ui.host == "127.0.0.1"
    assert (cfg.arms[0].motion.accel_mm_s2, cfg.arms[0].motion.gripper_open_s) == (3000.0, 0.06)


def _documented_truth_keys() -> set[str]:
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "operator-screen.md").read_text(encoding="utf-8")
    section = doc.split("## The summary of a timed run")[1].split("\n## ")[0]
    return set(re.findall(r"^\| `(\w+)` \|", section, re.M))


def test_the_run_summarys_truth_block_is_the_documented_one(real_arm_config, tmp_path, capsys):
    """`scallop run --duration` on the simulator adds `truth`, which docs/operator-screen.md
    explains key by key: every key it prints is there, and a dry run with a real arm adds
    `not_graded_arms` and does not know the uros left on."""
    documented = _documented_truth_keys()
    base = ["run", "--no-browser", "--port", "0", "--duration", "0.5"]
    assert main([*base, "--record", str(tmp_path / "sim.sqlite")]) == 0
    truth = json.loads(capsys.readouterr().out)["truth"]
    assert set(truth) == documented - {"not_graded_arms"}
    assert isinstance(truth["uro_left_on_past_arms"], int) and isinstance(truth["grades"], dict)
    assert main([*base, "--config", real_arm_config(), "--start", "--record", str(tmp_path / "dry.sqlite")]) == 0
    truth = json.loads(capsys.readouterr().out)["truth"]
    assert set(truth) == documented
    assert truth["not_graded_arms"] == ["arm1"] and truth["uro_left_on_past_arms"] is None


def test_a_seed_for_a_line_of_real_devices_is_refused_not_ignored(tmp_path, capsys):
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "docs" / "examples" / "genicam-fake" / "line.toml"
    rec = tmp_path / "r.sqlite"
    args = ["run", "--no-browser", "--port", "0", "--duration", "0.5", "--record", str(rec)]
    assert main([*args, "--config", str(example), "--seed", "3"]) == 2
    err = capsys.readouterr().err
    assert "--seed 3" in err and "simulator only" in err and "'genicam'" in err
    assert not rec.exists()  # refused before anything opened


def test_a_folder_given_for_a_file_is_called_a_folder(tmp_path, capsys):
    args = ["run", "--no-browser", "--port", "0", "--duration", "0.5"]
    assert main([*args, "--config", str(tmp_path)]) == 3
    assert "is a folder, not a configuration file" in capsys.readouterr().err
    assert main([*args, "--record", str(tmp_path)]) == 3
    err = capsys.readouterr().err
    assert "cannot write the production record: it is a folder" in err and "Traceback" not in err
