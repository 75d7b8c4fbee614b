"""Board specs, geometry and detection (calibration/boards.py)."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from scallop.calibration.boards import BoardSpec, detect, edge_width_px, parse_board
from scallop.calibration.errors import BoardSpecError, CalibrationError


# ------------------------------------------------------------------ spec parsing
def test_parse_chessboard_counts_inner_corners():
    b = parse_board("chessboard:9x6:25")
    assert (b.kind, b.cols, b.rows, b.square_mm) == ("chessboard", 9, 6, 25.0)
    assert b.corner_grid == (9, 6)
    assert b.squares == (10, 7)
    assert b.n_corners == 54
    assert str(b) == "chessboard:9x6:25"


def test_parse_charuco_counts_squares():
    b = parse_board("charuco:7x5:30:22:DICT_5X5_100")
    assert b.corner_grid == (6, 4)
    assert b.marker_mm == 22.0 and b.dictionary == "DICT_5X5_100"
    assert str(b) == "charuco:7x5:30:22:DICT_5X5_100"
    # The ids follow OpenCV's own numbering: same corners as the CharucoBoard, relative to corner 0.
    cv_corners = b.cv_board().getChessboardCorners()
    np.testing.assert_allclose(b.object_points(), cv_corners - cv_corners[0], atol=1e-9)


@pytest.mark.parametrize(
    "spec, words",
    [
        ("chess:9x6:25", "unknown kind"),
        ("chessboard:9x6", "2 fields, chessboard needs 3"),
        ("chessboard:9by6:25", "not COLSxROWS"),
        ("chessboard:9x6:abc", "not a number"),
        ("chessboard:9x6:-5", "square_mm=-5.0 is out of range"),
        ("chessboard:1x6:25", "cols=1 is out of range"),
        ("charuco:7x5:30:35:DICT_5X5_100", "marker_mm=35.0 is out of range"),
        ("charuco:7x5:30:22:DICT_9X9_1", "dictionary 'DICT_9X9_1' is unknown"),
        ("charuco:12x12:30:22:DICT_4X4_50", "need 72 markers"),
    ],
)
def test_bad_specs_name_the_problem(spec, words):
    with pytest.raises(BoardSpecError, match=words) as ei:
        parse_board(spec)
    assert isinstance(ei.value, CalibrationError)
    assert "\n" not in str(ei.value)


def test_object_points_and_relabelings():
    b = parse_board("chessboard:4x3:10")
    pts = b.object_points()
    assert pts.shape == (12, 3)
    np.testing.assert_allclose(pts[5], [10.0, 10.0, 0.0])  # id 5 = (i=1, j=1)
    perms = b.relabelings()
    assert len(perms) == 2  # identity and the 180° turn; 4x3 is not square
    turned = b.object_points(perms[1])
    # A 180° turn maps every corner to the one mirrored through the board centre.
    np.testing.assert_allclose(pts[:, :2] + turned[:, :2], [[30.0, 20.0]] * 12)
    assert len(parse_board("chessboard:5x5:10").relabelings()) == 4
    assert len(parse_board("charuco:5x4:20:15:DICT_4X4_50").relabelings()) == 1
    with pytest.raises(BoardSpecError, match="corner id out of range"):
        b.object_points([12])


# ------------------------------------------------------------------ detection
@pytest.mark.parametrize("spec", ["chessboard:9x6:20", "charuco:7x5:20:15:DICT_5X5_100"])
def test_detect_on_flat_render_finds_exact_corners(spec):
    board = parse_board(spec)
    img, ppm, origin = board.render(px_per_mm=3.0)
    det = detect(img, board)
    assert det is not None
    assert len(det) == board.n_corners
    assert det.image_points.shape == (board.n_corners, 2) and det.object_points.shape == (board.n_corners, 3)
    expected = origin + det.object_points[:, :2] * ppm
    # A plain chessboard may be numbered from either end.
    if board.kind == "chessboard" and np.linalg.norm(det.image_points[0] - expected[0]) > 5:
        expected = expected[::-1]
    err = np.linalg.norm(det.image_points - expected, axis=1)
    assert err.max() < 0.05, err.max()
    # A crisp print: edges about one pixel wide.
    assert 0.5 < det.edge_width_px < 1.5


def test_charuco_partly_hidden_still_detected_with_ids():
    board = parse_board("charuco:7x5:20:15:DICT_5X5_100")
    img, ppm, origin = board.render(px_per_mm=3.0)
    img = img.copy()
    img[:, : img.shape[1] // 2] = 255  # cover the left half of the board
    det = detect(img, board)
    assert det is not None
    assert 6 <= len(det) < board.n_corners
    expected = origin + det.object_points[:, :2] * ppm
    assert np.abs(det.image_points - expected).max() < 0.1


def test_blur_measure_follows_gaussian_blur():
    board = parse_board("chessboard:9x6:20")
    img, _, _ = board.render(px_per_mm=4.0)
    widths = []
    for sigma in (1.0, 2.0, 3.0):
        det = detect(cv2.GaussianBlur(img, (0, 0), sigma), board)
        widths.append(det.edge_width_px)
    # A Gaussian edge rises 10 %→90 % over 2.56 sigma.
    np.testing.assert_allclose(widths, [2.56, 5.13, 7.69], rtol=0.1)


def test_no_board_returns_none():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (240, 320), dtype=np.uint8)
    assert detect(noise, "chessboard:9x6:25") is None
    assert detect(noise, "charuco:7x5:30:22:DICT_5X5_100") is None


def test_edge_width_without_neighbours_is_nan():
    assert np.isnan(edge_width_px(np.zeros((10, 10), np.uint8), np.zeros((1, 2)), np.array([0]), 9))


def test_board_spec_is_frozen_and_comparable():
    assert parse_board("chessboard:9x6:25") == BoardSpec("chessboard", 9, 6, 25.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        parse_board("chessboard:9x6:25").cols = 3
