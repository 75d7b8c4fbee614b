"""Belt plane: pixel → belt mm against the simulator's known camera."""

from __future__ import annotations

import numpy as np
import pytest

from scallop.calibration.belt import measure_belt, rotate_frame
from scallop.calibration.errors import BoardNotFoundError, ImageError
from scallop.calibration.intrinsics import calibrate_intrinsics
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
ORIGIN = (-100.0, 60.0)
THICK = 3.0


@pytest.fixture(scope="module")
def truth():
    return camera_model_from_config(SIM_CAMERA)


@pytest.fixture(scope="module")
def intr(truth):
    return calibrate_intrinsics(intrinsics_views(truth, BOARD, 15, seed=1), BOARD)


@pytest.fixture(scope="module")
def flat_photo(truth):
    return render_board(truth, BOARD, flat_pose(ORIGIN, 0.0, THICK), seed=5)


def field_grid(cam, n=(33, 19)):
    """Pixels over the whole image, corners included."""
    w, h = cam.image_size
    u, v = np.meshgrid(np.linspace(0, w - 1, n[0]), np.linspace(0, h - 1, n[1]))
    return np.column_stack([u.ravel(), v.ravel()])


def test_belt_mapping_within_half_a_millimetre_across_the_field(truth, intr, flat_photo):
    res = measure_belt(flat_photo, BOARD, intr.K, intr.dist, intr.image_size, origin_mm=ORIGIN, thickness_mm=THICK)
    px = field_grid(truth)
    err = np.linalg.norm(res.camera.pixel_to_belt(px) - truth.pixel_to_belt(px), axis=1)
    assert err.max() <= 0.5, f"worst {err.max():.3f} mm"
    assert np.sqrt(np.mean(err**2)) <= 0.2
    assert res.residual_max_mm <= 0.3 and res.residual_rms_mm <= 0.15
    assert res.reproj_rms_px <= 0.2
    assert res.camera_height_mm == pytest.approx(truth.centre_B[2], abs=2.0)
    assert res.tilt_deg == pytest.approx(5.0, abs=0.1)
    assert res.mm_per_px == pytest.approx(0.5, rel=0.01)
    assert res.verdict == "good"
    assert len(res.residuals_mm) == 54


def test_several_photos_recover_where_each_board_lay(truth, intr, flat_photo):
    places = [(ORIGIN, 0.0), ((-250.0, 140.0), 3.0), ((50.0, -20.0), -4.0)]
    photos = [flat_photo] + [
        render_board(truth, BOARD, flat_pose(o, yaw, THICK), seed=20 + k) for k, (o, yaw) in enumerate(places[1:])
    ]
    res = measure_belt(photos, BOARD, truth.K, truth.dist, truth.image_size, origin_mm=ORIGIN, thickness_mm=THICK)
    assert len(res.residuals_mm) == 3 * 54 and res.placement["photos"] == 3
    true_corners = np.vstack([board_corners_B(BOARD, flat_pose(o, yaw, THICK)) for o, yaw in places])
    # The corners' solved belt positions (boards 2 and 3 placed by the joint solve) match where
    # the boards really lay.
    assert np.abs(res.corners_B - true_corners).max() < 0.3
    px = field_grid(truth)
    err = np.linalg.norm(res.camera.pixel_to_belt(px) - truth.pixel_to_belt(px), axis=1)
    assert err.max() <= 0.2


def test_turned_chessboard_is_renumbered_along_the_travel(truth, intr):
    # The board lies turned round (180°): OpenCV may number it from the other end, but belt
    # +x must still follow the travel (image right), with corner 0 at the board's far end.
    photo = render_board(truth, BOARD, flat_pose((100.0, -60.0), 180.0, THICK), seed=7)
    res = measure_belt(photo, BOARD, intr.K, intr.dist, intr.image_size, origin_mm=(0.0, 0.0), thickness_mm=THICK)
    px = field_grid(truth, (9, 5))
    diff = res.camera.pixel_to_belt(px) - truth.pixel_to_belt(px)
    # The far corner (after the turn) of the physical board is at (100 - 200, -60 + 125).
    np.testing.assert_allclose(diff, np.tile([[0.0 - (100.0 - 200.0), 0.0 - (-60.0 + 125.0)]], (len(px), 1)), atol=0.5)
    left = measure_belt(photo, BOARD, intr.K, intr.dist, intr.image_size, travel="left", thickness_mm=THICK)
    a, b = left.camera.pixel_to_belt([[600.0, 360.0], [700.0, 360.0]])
    assert b[0] < a[0]  # moving right in the image is moving backwards along the travel


def test_thickness_moves_the_plane_down_to_the_belt(truth, intr, flat_photo):
    thin = measure_belt(flat_photo, BOARD, intr.K, intr.dist, intr.image_size, origin_mm=ORIGIN, thickness_mm=0.0)
    px = field_grid(truth)
    err = np.linalg.norm(thin.camera.pixel_to_belt(px) - truth.pixel_to_belt(px), axis=1)
    # Ignoring a 3 mm plate puts the belt 3 mm too high: about 0.4 % of scale, > 0.5 mm at the edges.
    assert err.max() > 0.8
    assert thin.camera_height_mm == pytest.approx(truth.centre_B[2] - THICK, abs=2.0)


def test_rotate_frame_keeps_the_pivot_and_turns_the_axes(truth):
    turned = rotate_frame(truth, np.radians(10.0), pivot_xy=(20.0, -5.0))
    px = truth.project_belt([[20.0, -5.0], [120.0, -5.0]])
    new = turned.pixel_to_belt(px)
    np.testing.assert_allclose(new[0], [20.0, -5.0], atol=1e-6)
    # A step of 100 mm along old x is, in the turned frame, 10° clockwise of new x.
    np.testing.assert_allclose(
        new[1] - new[0], [100 * np.cos(np.radians(10)), -100 * np.sin(np.radians(10))], atol=1e-6
    )


def test_bad_photos_are_refused(truth, intr, flat_photo):
    with pytest.raises(ImageError, match="photo 1 is 640x360 but the intrinsics are for 1280x720"):
        measure_belt(flat_photo[::2, ::2], BOARD, intr.K, intr.dist, intr.image_size)
    with pytest.raises(BoardNotFoundError, match="no chessboard:9x6:25 found in photo 1"):
        measure_belt(np.full_like(flat_photo, 120), BOARD, intr.K, intr.dist, intr.image_size)
    with pytest.raises(ImageError, match="travel='sideways' is unknown"):
        measure_belt(flat_photo, BOARD, intr.K, intr.dist, intr.image_size, travel="sideways")
