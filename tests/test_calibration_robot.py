"""Belt → robot rigid fit: exactness, noise, refusal of degenerate points, and the whole
pixel → belt → robot chain against the simulator's known camera."""

from __future__ import annotations

import numpy as np
import pytest

from scallop.calibration.belt import measure_belt
from scallop.calibration.boards import detect
from scallop.calibration.errors import DegenerateGeometryError
from scallop.calibration.intrinsics import calibrate_intrinsics
from scallop.calibration.robot import RigidTransform, check_spread, fit_robot, umeyama
from scallop.sim.boards import (
    board_corners_B,
    flat_pose,
    intrinsics_views,
    render_board,
)
from scallop.sim.config import SimCameraConfig
from scallop.sim.world import camera_model_from_config

BOARD = "chessboard:9x6:25"
SIM_CAMERA = SimCameraConfig(distortion=(-0.08, 0.03, 0.0, 0.0, 0.0), tilt_deg=5.0, yaw_deg=2.0)
TOUCH_SIGMA_MM = 0.2  # per axis, each touch


def rot(axis, deg):
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    return {
        "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
        "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
        "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }[axis]


# A robot mounted beside the belt, turned and slightly tipped, its base 350 mm below the belt.
TRUE_ROBOT = RigidTransform(rot("z", 120.0) @ rot("x", 0.7), [420.0, -180.0, -350.0])


def test_umeyama_recovers_an_exact_transform_from_coplanar_points():
    rng = np.random.default_rng(0)
    src = np.column_stack([rng.uniform(-200, 200, (6, 2)), np.zeros(6)])  # marks on the belt
    dst = TRUE_ROBOT.apply(src)
    R, t, s = umeyama(src, dst, with_scale=True)
    np.testing.assert_allclose(R, TRUE_ROBOT.R, atol=1e-12)
    np.testing.assert_allclose(t, TRUE_ROBOT.t, atol=1e-9)
    assert s == pytest.approx(1.0, abs=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)


def test_umeyama_never_returns_a_reflection():
    src = np.array([[0, 0, 0], [100, 0, 0], [0, 100, 0], [100, 100, 0.0]])
    mirrored = src * np.array([1, -1, 1])  # the same marks seen in a mirror
    R, _, _ = umeyama(src, mirrored)
    assert np.linalg.det(R) == pytest.approx(1.0)


def test_noisy_touches_residual_and_true_error_below_half_a_millimetre():
    rng = np.random.default_rng(1)
    marks = np.array([[-250, -120, 0], [-250, 130, 0], [0, 0, 0], [240, -140, 0], [260, 120, 0], [20, 160, 0.0]])
    touches = TRUE_ROBOT.apply(marks) + rng.normal(0, TOUCH_SIGMA_MM, marks.shape)
    fit = fit_robot(marks, touches, "left")
    assert fit.residuals_mm.shape == (6,)
    assert fit.rms_mm <= 0.5 and fit.max_mm <= 0.75
    # Against the truth over the whole field, not only at the marks.
    grid = np.array([[x, y, 0.0] for x in np.linspace(-320, 320, 9) for y in np.linspace(-180, 180, 5)])
    err = np.linalg.norm(fit.transform.apply(grid) - TRUE_ROBOT.apply(grid), axis=1)
    assert err.max() <= 0.5
    assert fit.scale == pytest.approx(1.0, abs=0.003)
    assert fit.verdict == "good"
    assert fit.notes == []


def test_one_bad_touch_is_pointed_out():
    marks = np.array([[-250, -120, 0], [-250, 130, 0], [0, 0, 0], [240, -140, 0], [260, 120, 0.0]])
    touches = TRUE_ROBOT.apply(marks)
    touches[3] += [4.0, 0.0, 0.0]  # the tool slipped on mark 4
    fit = fit_robot(marks, touches)
    assert int(np.argmax(fit.residuals_mm)) == 3
    assert any("point 4" in n for n in fit.notes)
    assert fit.verdict == "redo"


def test_wrong_units_show_as_scale():
    marks = np.array([[-250, -120, 0], [-250, 130, 0], [240, -140, 0], [260, 120, 0.0]])
    touches = TRUE_ROBOT.apply(marks * 1.02)  # board printed 2 % too large
    fit = fit_robot(marks, touches)
    assert fit.scale == pytest.approx(1.02, abs=1e-3)
    assert any("+2.00 %" in n for n in fit.notes)
    assert fit.verdict == "redo"


@pytest.mark.parametrize(
    "points, words",
    [
        ([[0, 0, 0], [100, 0, 0]], "2 point\\(s\\) given, at least 3"),
        ([[0, 0, 0], [100, 0, 0], [200, 0.5, 0], [300, -0.5, 0]], "collinear"),
        ([[0, 0, 0], [100, 0, 0], [100, 4, 0], [0, 100, 0]], "points 2 and 3 are only 4.0 mm apart"),
        ([[0, 0, 0], [20, 0, 0], [0, 20, 0], [20, 20, 0]], "within 28.3 mm"),
        ([[0, 0, 0], [100, 0, 0], [np.nan, 10, 0]], "non-finite"),
    ],
)
def test_degenerate_points_are_refused(points, words):
    with pytest.raises(DegenerateGeometryError, match=words):
        check_spread(np.array(points, dtype=float), "belt points")
    pts = np.array(points, dtype=float)
    with pytest.raises(DegenerateGeometryError):
        fit_robot(pts, TRUE_ROBOT.apply(np.nan_to_num(pts)))


def test_mismatched_counts_are_refused():
    with pytest.raises(DegenerateGeometryError, match="4 belt points but 3 robot touches"):
        fit_robot(np.zeros((4, 2)), np.zeros((3, 3)))


def test_rigid_transform_round_trip():
    m = TRUE_ROBOT.matrix()
    back = RigidTransform.from_matrix(m)
    p = np.array([[1.0, 2.0, 3.0], [-50, 20, 0]])
    np.testing.assert_allclose(back.inverse().apply(back.apply(p)), p, atol=1e-9)
    with pytest.raises(ValueError, match="not a rotation"):
        RigidTransform.from_matrix(np.diag([1.0, 1.0, -1.0, 1.0]))


# ------------------------------------------------------------------ the whole chain on the simulator
def test_pixels_to_robot_through_the_calibrated_chain():
    """Marks are board corners seen by the camera (two board placements, left and right of
    the field); the robot touches their true positions with sigma 0.2 mm per axis."""
    truth = camera_model_from_config(SIM_CAMERA)
    intr = calibrate_intrinsics(intrinsics_views(truth, BOARD, 15, seed=1), BOARD)
    places = [((-250.0, 140.0), 0.0), ((50.0, -20.0), 0.0)]
    photos = [render_board(truth, BOARD, flat_pose(o, yaw, 3.0), seed=30 + k) for k, (o, yaw) in enumerate(places)]
    belt = measure_belt(photos, BOARD, intr.K, intr.dist, intr.image_size, origin_mm=places[0][0], thickness_mm=3.0)
    rng = np.random.default_rng(2)
    belt_pts, touches = [], []
    for (o, yaw), photo in zip(places, photos):
        det = detect(photo, BOARD)
        true_B = board_corners_B(BOARD, flat_pose(o, yaw, 3.0))
        for cid in (0, 8, 45, 53):  # the four outer inner-corners of each board
            px = det.image_points[np.argmin(np.linalg.norm(det.image_points - truth.project(true_B[cid]), axis=1))]
            belt_pts.append([*belt.camera.pixel_to_belt(px, z_mm=3.0)[0], 3.0])
            touches.append(TRUE_ROBOT.apply(true_B[cid])[0] + rng.normal(0, TOUCH_SIGMA_MM, 3))
    fit = fit_robot(np.array(belt_pts), np.array(touches), "left")
    assert fit.rms_mm <= 0.5
    # Any pixel of the field → robot mm, against the truth.
    w, h = truth.image_size
    px = np.array([[u, v] for u in np.linspace(0, w - 1, 9) for v in np.linspace(0, h - 1, 5)])
    xy = belt.camera.pixel_to_belt(px)
    got = fit.transform.apply(np.column_stack([xy, np.zeros(len(xy))]))
    want = TRUE_ROBOT.apply(np.column_stack([truth.pixel_to_belt(px), np.zeros(len(px))]))
    err = np.linalg.norm(got - want, axis=1)
    assert err.max() <= 0.5, f"worst {err.max():.3f} mm"
