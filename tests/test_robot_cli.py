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
