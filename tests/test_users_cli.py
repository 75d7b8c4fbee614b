"""`scallop users`, who may log in on a line with real devices, and the bare `scallop` command."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading

import pytest

from scallop.app.auth import AuthError, UserStore, screen_users
from scallop.app.cli import main
from scallop.errors import ConfigError

REAL = ["arm 'arm1' (tcp 127.0.0.1:15020)"]


def users(tmp_path, *args: str, pin: str | None = None) -> tuple[int, str, str]:
    """`scallop users ...` in a subprocess (the PIN on standard input)."""
    cmd = [sys.executable, "-m", "scallop", "users", *args]
    if pin is not None:
        cmd.append("--pin-stdin")
    p = subprocess.run(cmd, input=(pin or "") + "\n", capture_output=True, text=True, cwd=tmp_path, timeout=60)
    return p.returncode, p.stdout, p.stderr


def test_add_passwd_list_remove(tmp_path):
    f = str(tmp_path / "etc" / "users.json")
    assert users(tmp_path, "add", "maria", "--role", "operator", "--file", f, pin="4711")[0] == 0
    assert users(tmp_path, "add", "ken", "--role", "engineer", "--file", f, pin="480912")[0] == 0
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    text = open(f).read()
    assert "4711" not in text and "480912" not in text and json.loads(text)["users"][0]["pin"]["kdf"] == "scrypt"
    rc, out, _ = users(tmp_path, "list", "--file", f)
    assert rc == 0 and out.split() == ["name", "role", "maria", "operator", "ken", "engineer"]
    assert users(tmp_path, "passwd", "maria", "--file", f, pin="5822")[0] == 0
    store = UserStore.load(f)
    assert store.verify("5822").name == "maria"
    with pytest.raises(AuthError):
        store.verify("4711")
    assert users(tmp_path, "remove", "maria", "--file", f)[0] == 0
    assert [u.name for u in UserStore.load(f).users()] == ["ken"]
    # The temporary file of the atomic write is gone.
    assert sorted(p.name for p in (tmp_path / "etc").iterdir()) == ["users.json", "users.json.lock"]


@pytest.mark.parametrize(
    "args, pin, words",
    [
        (("add", "ken", "--role", "engineer"), "12345", "an engineer's PIN is 6 to 8 digits"),
        (("add", "x", "--role", "operator"), "1111", "the simulator's, published in the manual"),
        (("add", "x", "--role", "operator"), "12a4", "a PIN is 4 to 8 digits"),
        (("add", "x", "--role", "chef"), "4711", "invalid choice: 'chef'"),
        (("passwd", "nobody"), "4711", "no user 'nobody'"),
        (("remove", "nobody"), None, "no user 'nobody'"),
        (("add", "x", "--role", "operator"), None, "no terminal to ask the PIN on"),
    ],
)
def test_users_refuses_bad_input_in_one_line(tmp_path, args, pin, words):
    f = tmp_path / "users.json"
    UserStore(f, scrypt_n=2**8).save()
    rc, _, err = users(tmp_path, *args, "--file", str(f), pin=pin)
    assert rc == 2 and words in err and "Traceback" not in err, err


def test_the_users_file_comes_from_the_config(tmp_path):
    f = tmp_path / "users.json"
    (tmp_path / "line.toml").write_text(f'[ui]\nusers_file = "{f}"\n')
    assert users(tmp_path, "add", "maria", "--role", "operator", "--config", "line.toml", pin="4711")[0] == 0
    assert [u.name for u in UserStore.load(f).users()] == ["maria"]
    rc, _, err = users(tmp_path, "list")
    assert rc == 2 and "give --file PATH or --config" in err


def test_a_running_screen_rereads_the_users_file(tmp_path):
    f = tmp_path / "users.json"
    a = UserStore(f, scrypt_n=2**8)
    a.add("maria", "operator", "4711")
    a.save()
    running = UserStore.load(f)
    b = UserStore.load(f)
    b.add("ken", "engineer", "480912")
    b.save()
    assert running.verify("480912").name == "ken"
    f.write_text("{broken")  # a hand edit gone wrong keeps the users read before
    assert running.verify("480912").name == "ken"


def test_real_devices_never_take_the_simulator_users(tmp_path):
    assert {u.name for u in screen_users("", [], "0.0.0.0").users()} == {"operator", "engineer"}
    with pytest.raises(ConfigError, match=r"listen on 0.0.0.0 for a line with real devices .* users_file is not set"):
        screen_users("", REAL, "0.0.0.0")
    assert screen_users("", REAL, "127.0.0.1").users() == []  # E-STOP only
    f = tmp_path / "users.json"
    sim = UserStore.simulator_defaults(scrypt_n=2**8)
    sim.save(f)  # a users file made from the simulator's users
    with pytest.raises(ConfigError, match="has the simulator's published PIN"):
        screen_users(str(f), REAL, "0.0.0.0")
    assert len(screen_users(str(f), [], "0.0.0.0").users()) == 2


def test_scallop_run_with_a_real_arm_refuses_a_screen_on_the_network_without_users(tmp_path):
    (tmp_path / "line.toml").write_text(
        '[[arms]]\nname = "arm1"\n[arms.transport]\nkind = "tcp"\nhost = "127.0.0.1"\nport = 15020\n'
        '[ui]\nhost = "0.0.0.0"\n'
    )
    p = subprocess.run(
        [sys.executable, "-m", "scallop", "run", "--config", "line.toml", "--no-browser", "--duration", "1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert "users_file is not set" in p.stderr and "arm 'arm1'" in p.stderr, p.stderr
    assert not (tmp_path / "scallop-record").exists()  # refused before anything opened


def test_scallop_alone_lists_the_commands_and_version_is_the_packages(capsys):
    from importlib.metadata import version

    assert main([]) == 0
    out = capsys.readouterr().out
    assert "usage: scallop" in out and all(c in out for c in ("run", "sim", "users", "calibrate"))
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"scallop {version('scallop-uro-line')}"


def test_two_users_commands_at_once_lose_no_change(tmp_path):
    f = str(tmp_path / "users.json")
    names = ["a", "b", "c", "d"]
    results = {}

    def add(i: int) -> None:
        results[i] = users(tmp_path, "add", names[i], "--role", "operator", "--file", f, pin=f"{5000 + i}")

    threads = [threading.Thread(target=add, args=(i,)) for i in range(len(names))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r[0] == 0 for r in results.values()), results
    assert sorted(u.name for u in UserStore.load(f).users()) == names
