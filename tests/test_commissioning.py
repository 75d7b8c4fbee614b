"""The commissioning rehearsal of docs/calibration.md, end to end and without hardware: the
simulator writes what an engineer collects on the line (``scallop sim commission``), every
command of the procedure runs on it as documented, and the camera dry run replays a recording of
the line's camera through the line calibrated that way."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import cv2
import numpy as np
import pytest

from scallop.app.cli import main
from scallop.calibration.store import LineCalibration
from scallop.sim.config import SimConfig
from scallop.sim.world import camera_model_from_config

DOCS = Path(__file__).resolve().parents[1] / "docs" / "calibration.md"


def scallop(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.slow
def test_documented_commissioning_on_the_simulator(capsys, tmp_path, monkeypatch):
    from scallop.app.backends import default_sim_arms
    from scallop.app.commands.replay import replay
    from scallop.app.config import load_config
    from scallop.sim.clock import VirtualClock
    from scallop.sim.rig import PickReferee
    from scallop.sim.world import SimWorld
    from scallop.vision.recording import read_index

    rc, out, _ = scallop(capsys, "sim", "commission", "--out", tmp_path, "--dryrun-s", 20)
    assert rc == 0 and "README.md" in out
    monkeypatch.chdir(tmp_path)  # the README's paths are relative to its folder
    readme = (tmp_path / "README.md").read_text()
    commands = [shlex.split(m) for m in re.findall(r"^    scallop (.+)$", readme, re.M)]
    # The rehearsal is the documented procedure: every step it runs is the one the guide gives.
    guide = DOCS.read_text()
    assert "scallop sim commission" in guide
    for cmd in commands:
        assert "scallop " + " ".join(cmd) in guide, f"not in docs/calibration.md: scallop {' '.join(cmd)}"

    said = {}
    for cmd in commands[:-1]:  # every calibrate step, in order
        rc, out, err = scallop(capsys, *cmd)
        assert rc == 0, f"scallop {' '.join(cmd)} failed: {err}"
        said[cmd[1]] = out
        if cmd[1] in ("intrinsics", "belt", "encoder", "robot", "check"):
            assert "verdict: GOOD" in out, f"scallop {' '.join(cmd)}:\n{out}"
    assert "the belt origin (-100, 60) is the first photo's board corner 0" in said["belt"]
    for picture in ("line.coverage.png", "line.belt.png", "line.encoder.png", "line.robot-arm1.png", "line.plan.png"):
        img = cv2.imread(str(tmp_path / picture))
        assert img is not None and img.size, picture

    # The calibration the steps wrote is the simulator's truth, to what a line needs.
    sim = SimConfig()
    truth = camera_model_from_config(sim.camera)
    cal = LineCalibration.load(tmp_path / "line.json", image_size=truth.image_size)
    w, h = truth.image_size
    px = np.array([[u, v] for u in np.linspace(0, w - 1, 9) for v in np.linspace(0, h - 1, 5)])
    assert np.linalg.norm(cal.pixel_to_belt(px) - truth.pixel_to_belt(px), axis=1).max() <= 0.5
    arm = default_sim_arms(1)[0]
    belt = np.column_stack([truth.pixel_to_belt(px) + [800.0, 0.0], np.zeros(len(px))])
    assert np.linalg.norm(cal.belt_to_robot("arm1", belt) - arm.robot_from_belt.apply(belt), axis=1).max() <= 1.0
    assert cal.counts_per_mm == pytest.approx(sim.encoder.counts_per_mm, rel=0.002)

    # The camera dry run, as documented, and once more with the truth grading the picks.
    rc, out, err = scallop(capsys, *commands[-1], "--json")
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["seen"] >= 6 and summary["picked"] >= 3 and summary["uro_removed"] is None
    meta, _ = read_index(tmp_path / "dryrun")
    clock = VirtualClock(start=meta["t0"])
    world = SimWorld(sim, seed=1, clock=clock)
    world.t0 = 0.0  # the recorded world started at time 0 of its virtual clock
    referee = PickReferee(world)
    graded = replay(load_config("line.toml"), "dryrun", tmp_path / "graded.sqlite", grader=referee, clock=clock)
    assert graded["picked"] == summary["picked"]
    assert referee.picks and all(p.uro_mm <= 5.0 for p in referee.picks), [(p.uro_mm, p.grade) for p in referee.picks]
    assert sum(p.grade == "uro_removed" for p in referee.picks) >= len(referee.picks) - 1


def test_commissioning_with_a_second_fluorescence_camera(capsys, tmp_path, monkeypatch):
    """``scallop sim commission --fluorescence``: the second camera's own board photos and five
    pairs seen by both cameras, with the two steps that calibrate it (docs/fluorescence.md); the
    steps run as the README lists them and register the cameras as the simulator built them."""
    from scallop.app.commands.sim_commission import SECOND_CAMERA
    from scallop.calibration.fluorescence import Registration
    from scallop.sim.config import FluorescenceConfig

    rc, out, _ = scallop(capsys, "sim", "commission", "--out", tmp_path, "--dryrun-s", 5, "--fluorescence")
    assert rc == 0
    monkeypatch.chdir(tmp_path)
    readme = (tmp_path / "README.md").read_text()
    commands = [shlex.split(m) for m in re.findall(r"^    scallop (.+)$", readme, re.M)]
    steps = [c[1] for c in commands]
    # The second camera's steps come after the colour camera's intrinsics and belt, which they need.
    assert steps.index("fluorescence") > steps.index("belt") and steps.count("intrinsics") == 2
    assert "fluorescence/colourN.png + uvN.png" in readme
    guide = (DOCS.parent / "fluorescence.md").read_text()
    assert "scallop sim commission --out rehearsal --fluorescence" in guide
    for cmd in commands[: steps.index("fluorescence") + 1]:
        rc, out, err = scallop(capsys, *cmd)
        assert rc == 0 and "verdict: GOOD" in out, f"scallop {' '.join(cmd)}:\n{out}{err}"
    uv = cv2.imread(str(tmp_path / "fluorescence" / "uv1.png"), cv2.IMREAD_UNCHANGED)
    assert uv.ndim == 2 and uv.shape == (SECOND_CAMERA["height"], SECOND_CAMERA["width"])

    # What the steps wrote against the two simulated cameras, over a grid of the colour frame.
    colour = camera_model_from_config(SimConfig().camera)
    fluo = camera_model_from_config(FluorescenceConfig(**SECOND_CAMERA))
    cal = LineCalibration.load(tmp_path / "line.json", require=("intrinsics", "belt", "fluorescence"))
    w, h = colour.image_size
    px = np.array([[u, v] for u in np.linspace(40, w - 41, 9) for v in np.linspace(40, h - 41, 5)])
    z = 3.0  # the board's face, where the registration holds
    xy = colour.pixel_to_belt(px, z_mm=z)
    truth = fluo.project(np.column_stack([xy, np.full(len(xy), z)]))
    err_px = np.linalg.norm(Registration.from_calibration(cal).to_fluorescence(px) - truth, axis=1)
    assert err_px.max() * SECOND_CAMERA["mm_per_px"] <= 0.3, err_px.max()

    # The rest as listed, and the dry run: the recording holds the second camera's frames, which
    # the line pairs and registers with the calibration just made, and the four-channel model reads.
    for cmd in commands[steps.index("fluorescence") + 1 : -1]:
        rc, out, err = scallop(capsys, *cmd)
        assert rc == 0, f"scallop {' '.join(cmd)}:\n{out}{err}"
    assert commands[-1][0] == "replay" and "[camera.fluorescence]" in (tmp_path / "line.toml").read_text()
    rc, out, err = scallop(capsys, *commands[-1], "--json")
    summary = json.loads(out)
    assert rc == 0 and summary["model"]["name"] == "scallop-seg-uv"
    assert summary["channel"] == {
        "setup": "second_camera",
        "pairs": summary["frames"],
        "dropped": {},
        "lost": False,
        "dark": False,
        "misregistered": False,
    }


def test_a_rehearsal_is_written_only_into_a_new_or_empty_folder(capsys, tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "line.json").write_text("{}")
    rc, _, err = scallop(capsys, "sim", "commission", "--out", tmp_path / "old", "--dryrun-s", 5)
    assert rc == 3 and "the folder is not empty; give a new or empty folder" in err
    assert [p.name for p in (tmp_path / "old").iterdir()] == ["line.json"]  # nothing written
    (tmp_path / "afile").write_text("x")
    rc, _, err = scallop(capsys, "sim", "commission", "--out", tmp_path / "afile")
    assert rc == 3 and "it is a file" in err and "Traceback" not in err
    rc, _, err = scallop(capsys, "sim", "commission", "--out", tmp_path / "new", "--arms", 2, "--dryrun-s", 2)
    assert rc == 2 and err.strip().endswith("--dryrun-s=2.0 is out of range: allowed 5..600")
