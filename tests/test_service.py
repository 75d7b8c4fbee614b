"""The line on a plant PC: an offline bundle installed with the network off, the systemd unit,
versions side by side (scallop/app/commands/service.py, scallop/app/deploy/)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scallop.app.cli import main
from scallop.app.commands.service import installed_versions, switch, unit_text
from scallop.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _no_network_prefix() -> list[str]:
    """Run a command in a network namespace of its own (no interface but a down loopback) when
    the kernel lets us; the installer is also told never to use an index either way."""
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-n"]
    return []


@pytest.mark.slow
def test_a_bundle_installs_with_no_network_and_versions_switch(tmp_path):
    bundle = tmp_path / "bundle"
    r = subprocess.run(
        [sys.executable, "-m", "scallop.app.cli", "service", "bundle", "-o", str(bundle), "--source", str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if r.returncode != 0 and "package index reachable" in r.stderr:
        pytest.skip(f"no package index here to build the bundle from: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    assert (bundle / "install.sh").is_file() and (bundle / "MANIFEST.json").is_file()
    wheels = sorted(p.name for p in (bundle / "wheels").glob("*.whl"))
    assert any(w.startswith("scallop_uro_line-") for w in wheels) and any(w.startswith("onnxruntime-") for w in wheels)

    prefix = tmp_path / "opt"
    env = dict(os.environ, PIP_INDEX_URL="http://127.0.0.1:9/simple", PIP_FIND_LINKS="")
    r = subprocess.run(
        [*_no_network_prefix(), "bash", str(bundle / "install.sh"), "--prefix", str(prefix)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    version = r.stdout.split("version ")[-1].split()[0]
    assert "packages import, model scallop-seg.onnx sha256" in r.stdout
    assert installed_versions(prefix) == ([version], version)
    out = subprocess.run([str(prefix / "current" / "bin" / "scallop"), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "service" in out.stdout

    # Installing again changes nothing; a damaged bundle is refused before anything is touched.
    again = subprocess.run(
        ["bash", str(bundle / "install.sh"), "--prefix", str(prefix)], capture_output=True, text=True
    )
    assert again.returncode == 0 and "already installed" in again.stdout
    victim = next((bundle / "wheels").glob("tqdm-*.whl"))
    victim.write_bytes(victim.read_bytes()[:-10])
    bad = subprocess.run(
        ["bash", str(bundle / "install.sh"), "--prefix", str(tmp_path / "x")], capture_output=True, text=True
    )
    assert bad.returncode == 3 and "the bundle is damaged" in bad.stderr and not (tmp_path / "x").exists()

    # The unit for this install passes systemd's own check.
    unit = tmp_path / "scallop.service"
    unit.write_text(unit_text(str(prefix), "/etc/scallop/line.toml", "scallop"))
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed here: the unit file was not verified")
    v = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert v.returncode == 0, v.stderr


def test_switch_between_versions_side_by_side(tmp_path, capsys):
    for v in ("0.1.0", "0.2.0"):
        b = tmp_path / "versions" / v / "bin"
        b.mkdir(parents=True)
        (b / "scallop").write_text("#!/bin/sh\n")
    assert installed_versions(tmp_path) == (["0.1.0", "0.2.0"], None)
    switch(tmp_path, "0.2.0")
    assert installed_versions(tmp_path)[1] == "0.2.0"
    assert main(["service", "switch", "0.1.0", "--prefix", str(tmp_path)]) == 0
    assert os.readlink(tmp_path / "current") == "versions/0.1.0"
    assert main(["service", "versions", "--prefix", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == ["* 0.1.0", "  0.2.0"]
    assert main(["service", "switch", "9.9.9", "--prefix", str(tmp_path)]) == 2
    assert "version '9.9.9' is not installed" in capsys.readouterr().err


def test_the_unit_is_filled_and_refuses_relative_paths():
    text = unit_text("/opt/scallop", "/etc/scallop/line.toml", "scallop")
    assert "ExecStart=/opt/scallop/current/bin/scallop run --config /etc/scallop/line.toml --no-browser" in text
    assert "Type=notify" in text and "WatchdogSec=" in text and "Restart=on-failure" in text and "User=scallop" in text
    assert "@" not in text
    with pytest.raises(ConfigError, match="--config line.toml: give an absolute path"):
        unit_text("/opt/scallop", "line.toml", "scallop")


def test_notify_reaches_systemds_socket_and_is_silent_without_it(tmp_path, monkeypatch):
    import socket

    from scallop.app.systemd import notify, watchdog_interval_s

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(path)
        s.settimeout(2.0)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert notify("READY=1", "STATUS=line stopped, waiting for Start") is True
        assert s.recv(4096) == b"READY=1\nSTATUS=line stopped, waiting for Start"
    assert notify("WATCHDOG=1") is False  # the socket went away: no error, the line goes on
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval_s() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert watchdog_interval_s() is None


@pytest.mark.slow
def test_scallop_run_tells_systemd_it_is_ready_and_alive_and_stopping(tmp_path):
    import socket
    import time

    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.5)
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="1000000", SCALLOP_RECORD_DIR=str(tmp_path))
    env.pop("WATCHDOG_PID", None)
    cmd = [sys.executable, "-m", "scallop.app.cli", "run", "--duration", "4", "--no-browser", "--port", "0"]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    got: list[str] = []
    deadline = time.monotonic() + 60
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                got.append(sock.recv(4096).decode())
            except TimeoutError:
                pass
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    assert proc.returncode == 0, err
    kinds = [m.split("\n")[0] for m in got]
    assert kinds[0] == "READY=1" and kinds[-1] == "STOPPING=1", kinds
    assert kinds.count("WATCHDOG=1") >= 4  # every half second for 4 s, while the loops went round
