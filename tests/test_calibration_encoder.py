"""Encoder: counts per mm and direction, from a tracked board and from robot touches."""

from __future__ import annotations

import numpy as np
import pytest

from scallop.calibration.belt import measure_belt
from scallop.calibration.encoder import (
    encoder_from_touches,
    encoder_from_track,
    fit_encoder,
)
from scallop.calibration.errors import BoardNotFoundError, DegenerateGeometryError
from scallop.calibration.intrinsics import calibrate_intrinsics
from scallop.calibration.store import LineCalibration
from scallop.sim.boards import flat_pose, intrinsics_views, render_board
from scallop.sim.config import EncoderConfig, SimCameraConfig
from scallop.sim.world import camera_model_from_config

BOARD = "chessboard:9x6:25"
SIM_CAMERA = SimCameraConfig(distortion=(-0.08, 0.03, 0.0, 0.0, 0.0), tilt_deg=5.0, yaw_deg=2.0)
# Counts fall as the belt moves forward (an encoder mounted the other way round).
SIM_ENCODER = EncoderConfig(counts_per_mm=10.0, direction=-1, offset=50000)


def sim_counts(travel_mm: float) -> int:
    """The simulator's encoder: count = round(direction · travel · counts_per_mm) + offset."""
    e = SIM_ENCODER
    return round(e.direction * travel_mm * e.counts_per_mm) + e.offset


def test_fit_exact_line_gives_scale_sign_and_direction():
    angle = np.radians(2.0)
    d = np.array([np.cos(angle), np.sin(angle)])
    travel = np.linspace(0, 400, 9)
    counts = 1000 - 12.5 * travel  # 12.5 counts/mm, falling
    xy = np.array([10.0, -5.0]) + travel[:, None] * d
    r = fit_encoder(counts, xy)
    assert r.counts_per_mm == pytest.approx(12.5, rel=1e-12)
    assert r.count_sign == -1
    np.testing.assert_allclose(r.travel_dir, d, atol=1e-12)
    assert r.angle_deg == pytest.approx(2.0, abs=1e-9)
    assert r.residuals_mm.max() < 1e-9
    assert r.travel_mm == pytest.approx(400.0)
    np.testing.assert_allclose(r.shift_mm([-1250]), [100 * d], atol=1e-9)


def test_noisy_positions_keep_the_scale_within_0_2_percent():
    rng = np.random.default_rng(0)
    travel = np.linspace(0, 400, 20)
    counts = np.round(10.0 * travel).astype(int)
    xy = np.column_stack([travel, np.zeros_like(travel)]) + rng.normal(0, 0.1, (20, 2))
    r = fit_encoder(counts, xy)
    assert abs(r.counts_per_mm / 10.0 - 1) < 0.002
    # The reported std dev is of the right size (0.1 mm over 400 mm of travel: ~0.01 %).
    assert 0.002 < r.scale_std_pct < 0.05
    assert r.residual_rms_mm == pytest.approx(0.1, rel=0.5)
    assert r.verdict == "good"


def test_two_touches_give_scale_and_an_assumed_uncertainty():
    r = encoder_from_touches([2000, 5000], [[0.0, 0.0, 0.0], [300.0, 0.0, 0.0]], touch_sigma_mm=0.2)
    assert r.counts_per_mm == pytest.approx(10.0) and r.count_sign == 1 and r.method == "touches"
    # No scatter to measure with two points: the std dev comes from the touch accuracy.
    assert r.scale_std_pct == pytest.approx(100 * 0.2 / (np.sqrt(2 * 1500.0**2)) * 10, rel=1e-6)
    assert [f.name for f in r.figures()] == ["travel covered", "counts/mm std dev"]


@pytest.mark.parametrize(
    "counts, xy, words",
    [
        ([5], [[0, 0]], "at least 2"),
        ([5, 5, 5], [[0, 0], [100, 0], [200, 0]], "never changed"),
        ([0, 10], [[0, 0], [1, 0]], "moved only 1.0 mm"),
        ([0, 10, 20], [[0, 0], [1, 0]], "must pair up"),
    ],
)
def test_unusable_observations_are_refused(counts, xy, words):
    with pytest.raises(DegenerateGeometryError, match=words):
        fit_encoder(counts, np.array(xy, dtype=float))


# ------------------------------------------------------------------ the simulator
@pytest.fixture(scope="module")
def sim_line():
    """Intrinsics and belt from the simulator's camera; the belt board lies 1.5° off the travel."""
    truth = camera_model_from_config(SIM_CAMERA)
    intr = calibrate_intrinsics(intrinsics_views(truth, BOARD, 15, seed=1), BOARD)
    origin, yaw = (-100.0, 60.0), 1.5
    photo = render_board(truth, BOARD, flat_pose(origin, yaw, 3.0), seed=5)
    belt = measure_belt(photo, BOARD, intr.K, intr.dist, intr.image_size, origin_mm=origin, thickness_mm=3.0)
    cal = LineCalibration.new(intr.image_size, "sim")
    cal.set_intrinsics(intr.section("sim"))
    cal.set_belt(belt.section())
    return truth, cal, origin, yaw


def test_board_riding_the_belt_gives_scale_within_0_2_percent(sim_line):
    truth, cal, origin, yaw = sim_line
    frames = []
    for k, travel in enumerate(np.linspace(0.0, 280.0, 8)):
        pose = flat_pose((origin[0] - 130.0 + travel, origin[1]), yaw, 3.0)  # the belt carries it along x
        frames.append((f"f{k}.png", render_board(truth, BOARD, pose, seed=40 + k), sim_counts(travel)))
    frames.insert(3, ("nothing.png", np.full_like(frames[0][1], 120), sim_counts(100.0)))
    r = encoder_from_track(cal.camera, frames, BOARD, thickness_mm=3.0)
    assert abs(r.counts_per_mm / SIM_ENCODER.counts_per_mm - 1) < 0.002
    assert r.count_sign == -1
    # The belt frame was set by the board, 1.5° off the travel: the travel is measured at -1.5°.
    assert r.angle_deg == pytest.approx(-yaw, abs=0.05)
    assert r.residual_rms_mm < 0.1
    assert r.skipped == ["nothing.png: board not found"]
    assert r.verdict == "good"

    # Storing it turns the belt frame onto the travel: the mapping then matches the truth.
    cal2 = LineCalibration.from_dict(__import__("copy").deepcopy(cal.data))
    turned = cal2.set_encoder(r.section())
    assert turned == pytest.approx(-yaw, abs=0.05)
    w, h = truth.image_size
    px = np.array([[u, v] for u in np.linspace(0, w - 1, 17) for v in np.linspace(0, h - 1, 9)])
    err = np.linalg.norm(cal2.pixel_to_belt(px) - truth.pixel_to_belt(px), axis=1)
    assert err.max() <= 0.5, f"worst {err.max():.3f} mm"
    # 1000 counts less = 100 mm further along the travel (+x).
    np.testing.assert_allclose(cal2.belt_shift_mm([-1000])[0], [100.0, 0.0], atol=0.2)


def test_track_without_board_is_refused(sim_line):
    _truth, cal, _, _ = sim_line
    blank = np.full((720, 1280, 3), 120, np.uint8)
    with pytest.raises(BoardNotFoundError, match="located in only 0 of 2 frames"):
        encoder_from_track(cal.camera, [("a", blank, 0), ("b", blank, 100)], BOARD)
