"""Drift check: a bumped, raised or turned camera is caught; an untouched one passes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from scallop.calibration.belt import measure_belt
from scallop.calibration.check import Figure, check_drift, overall
from scallop.calibration.errors import BoardNotFoundError, CameraMismatchError
from scallop.calibration.intrinsics import calibrate_intrinsics
from scallop.calibration.store import LineCalibration
from scallop.sim.boards import flat_pose, intrinsics_views, render_board
from scallop.sim.config import SimCameraConfig
from scallop.sim.world import camera_model_from_config

BOARD = "chessboard:9x6:25"
SIM_CAMERA = SimCameraConfig(distortion=(-0.08, 0.03, 0.0, 0.0, 0.0), tilt_deg=5.0, yaw_deg=2.0)
PLACE = ((-100.0, 60.0), 0.0, 3.0)


@pytest.fixture(scope="module")
def saved():
    truth = camera_model_from_config(SIM_CAMERA)
    intr = calibrate_intrinsics(intrinsics_views(truth, BOARD, 15, seed=1), BOARD)
    photo = render_board(truth, BOARD, flat_pose(*PLACE), seed=5)
    belt = measure_belt(photo, BOARD, intr.K, intr.dist, intr.image_size, origin_mm=PLACE[0], thickness_mm=3.0)
    cal = LineCalibration.new(intr.image_size, "sim")
    cal.set_intrinsics(intr.section("sim"))
    cal.set_belt(belt.section())
    return cal


def moved(**change):
    return camera_model_from_config(dataclasses.replace(SIM_CAMERA, **change))


def test_untouched_camera_holds_with_the_board_anywhere(saved):
    cam = moved()
    photo = render_board(cam, BOARD, flat_pose((40.0, 100.0), 7.0, 3.0), seed=11)
    rep = check_drift(saved, photo)
    assert rep.field_drift_mm < 0.3
    assert rep.board_residual_mm < 0.3
    assert rep.position_drift_mm is None
    assert abs(rep.height_change_mm) < 1.0 and abs(rep.tilt_change_deg) < 0.05
    assert rep.verdict == "good"
    assert rep.to_json()["advice"].startswith("the calibration holds")


def test_same_place_untouched_is_good(saved):
    photo = render_board(moved(), BOARD, flat_pose(*PLACE), seed=12)
    rep = check_drift(saved, photo, same_place=True)
    assert rep.position_drift_mm < 0.3 and rep.verdict == "good"


@pytest.mark.parametrize(
    "change, what",
    [
        ({"tilt_deg": 5.6}, "tilted 0.6°"),
        ({"mm_per_px": 0.5 + 5.0 / 1408.0}, "raised 5 mm"),
    ],
)
def test_bumped_camera_is_caught_wherever_the_board_lies(saved, change, what):
    photo = render_board(moved(**change), BOARD, flat_pose((40.0, 100.0), 7.0, 3.0), seed=13)
    rep = check_drift(saved, photo)
    assert rep.field_drift_mm > 1.0, what
    assert rep.verdict == "redo"
    assert rep.advice.startswith("the calibration no longer holds")


def test_turned_camera_needs_the_board_at_its_place(saved):
    cam = moved(yaw_deg=2.4)  # turned 0.4° about the vertical: picks land ~2 mm off at the edges
    anywhere = check_drift(saved, render_board(cam, BOARD, flat_pose((40.0, 100.0), 7.0, 3.0), seed=14))
    assert anywhere.verdict == "good"  # a pure turn looks like another board placement …
    assert any("--same-place" in n for n in anywhere.notes)
    there = check_drift(saved, render_board(cam, BOARD, flat_pose(*PLACE), seed=15), same_place=True)
    assert there.position_drift_mm > 1.0  # … but not when the board lies where it lay
    assert there.verdict in ("marginal", "redo")


def test_check_refuses_what_it_cannot_use(saved):
    with pytest.raises(BoardNotFoundError):
        check_drift(saved, np.full((720, 1280, 3), 120, np.uint8))
    with pytest.raises(CameraMismatchError, match="photo is 640x360 but the calibration is for 1280x720"):
        check_drift(saved, np.full((360, 640, 3), 120, np.uint8))


def test_figures_and_verdicts():
    f = Figure("RMS", 0.7, "px", 0.5, 1.0)
    assert f.verdict == "marginal"
    assert f.describe() == "RMS: 0.7 px -> marginal (good <= 0.5, marginal <= 1, else redo)"
    g = Figure("views", 12, "", 10, 6, higher_is_better=True)
    assert g.verdict == "good" and "good >= 10" in g.describe()
    assert Figure("x", float("nan"), "", 1, 2).verdict == "redo"
    assert overall([f, g]) == "marginal" and overall([]) == "redo"
