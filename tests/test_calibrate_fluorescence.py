"""``scallop calibrate fluorescence``: the fluorescence camera registered to the colour camera
from pairs of board photos rendered through two simulated cameras whose models are known.

The colour camera is the calibration tests' (1280×720, 0.5 mm/px, barrel distortion, tilted
5°); the fluorescence camera is a second simulated camera of its own (1024×768 at 0.6 mm/px,
beside it, tilted the other way, turned 1.5°, its own barrel distortion). The colour camera's
calibration file is the simulator's true one, so what is measured here is this step alone.
"""

from __future__ import annotations

import json
import math
import re

import cv2
import numpy as np
import pytest

from scallop.app.cli import main
from scallop.calibration.boards import parse_board
from scallop.calibration.camera_model import CameraModel
from scallop.calibration.errors import (
    BoardNotFoundError,
    BoardSpecError,
    CalibrationFileError,
    DegenerateGeometryError,
    ImageError,
    MissingPartError,
    RedoVerdictError,
    StalePartError,
)
from scallop.calibration.fluorescence import POSE_FIT_LIMITS, Registration, plane_homography, register_fluorescence
from scallop.calibration.store import RUNTIME_PARTS, LineCalibration
from scallop.sim.boards import flat_pose, render_board
from scallop.sim.commission import true_calibration
from scallop.sim.config import FluorescenceConfig, SimCameraConfig, SimConfig
from scallop.sim.fluorescence import fluorescence_homography
from scallop.sim.world import camera_model_from_config

BOARD = "charuco:8x6:25:18:DICT_5X5_100"
THICK = 3.0  # the board's plate: the registration holds on its face
SIM_CAMERA = SimCameraConfig(distortion=(-0.08, 0.03, 0.0, 0.0, 0.0), tilt_deg=5.0, yaw_deg=2.0)
SECOND = dict(
    setup="second_camera",
    exposure_ratio=3.0,
    noise_sigma=5.0,
    width=1024,
    height=768,
    mm_per_px=0.6,
    center_x_mm=12.0,
    center_y_mm=-30.0,
    tilt_deg=-6.0,
    yaw_deg=1.5,
    distortion=(-0.05, 0.01, 0.0, 0.0, 0.0),
)
# Board centres (belt mm): the middle and the four corners of the area both cameras see.
PLACES = [(0.0, 0.0), (-190.0, 80.0), (190.0, 80.0), (-190.0, -80.0), (190.0, -80.0)]

# What the fit must reach against the true cameras, over the whole overlap: measured 0.10 px
# (0.05 mm) with five pairs; the limits leave twice that for other noise draws.
TRUTH_PX = 0.25
TRUTH_MM = 0.12


def sim_config(**fluo) -> SimConfig:
    return SimConfig(camera=SIM_CAMERA, fluorescence=FluorescenceConfig(**(SECOND | fluo)))


COLOUR = camera_model_from_config(SIM_CAMERA)
FLUO = camera_model_from_config(sim_config().fluorescence)


def pose_at(board: str, centre) -> tuple:
    b = parse_board(board)
    nx, ny = b.corner_grid
    # Corner 0 lies at the board's upstream end on its +y side.
    return flat_pose((centre[0] - (nx - 1) * b.square_mm / 2, centre[1] + (ny - 1) * b.square_mm / 2), 0.0, THICK)


_RENDERS: dict = {}


def photo(camera, board: str, centre, seed: int) -> np.ndarray:
    """The camera's photo of the board lying at ``centre``; a fluorescence photo is one channel."""
    key = (id(camera), board, tuple(centre), seed)
    if key not in _RENDERS:
        img = render_board(camera, board, pose_at(board, centre), seed=seed)
        _RENDERS[key] = img if camera is COLOUR else img[:, :, 0].copy()
    return _RENDERS[key]


def pairs(places=PLACES, fluo=FLUO, board=BOARD):
    colour = [photo(COLOUR, board, c, 2 * k + 1) for k, c in enumerate(places)]
    fl = [photo(fluo, board, c, 2 * k + 2) for k, c in enumerate(places)]
    return colour, fl


@pytest.fixture(scope="module")
def colour_cal() -> LineCalibration:
    """The colour camera's true intrinsics and belt (the fluorescence part left out)."""
    cal = true_calibration(SimConfig(camera=SIM_CAMERA), [])
    assert not cal.has("fluorescence")
    return cal


def fluo_intrinsics(cam=FLUO):
    return cam.K, cam.dist, cam.image_size


def true_to_colour(fluo, px, z_mm: float = THICK) -> np.ndarray:
    """Where the colour camera sees the belt point (on the plane z_mm) a fluorescence pixel sees."""
    xy = fluo.pixel_to_belt(px, z_mm=z_mm)
    return COLOUR.project(np.column_stack([xy, np.full(len(xy), z_mm)]))


def overlap_grid(fluo=FLUO, step: float = 16.0, z_mm: float = THICK):
    """Fluorescence pixels every ``step`` px whose point on the plane ``z_mm`` the colour camera
    sees, and the colour pixels that see it."""
    w, h = fluo.image_size
    u, v = np.meshgrid(np.arange(0, w, step), np.arange(0, h, step))
    px = np.column_stack([u.ravel(), v.ravel()])
    c = true_to_colour(fluo, px, z_mm)
    cw, ch = COLOUR.image_size
    inside = (c[:, 0] >= 0) & (c[:, 0] <= cw - 1) & (c[:, 1] >= 0) & (c[:, 1] <= ch - 1)
    return px[inside], c[inside]


# ------------------------------------------------------------------ the fit against the truth
def test_five_pairs_register_the_cameras_as_the_simulator_built_them(colour_cal):
    colour, fl = pairs()
    res = register_fluorescence(colour, fl, BOARD, colour_cal, thickness_mm=THICK, fluo_intrinsics=fluo_intrinsics())
    # The mapping over the whole overlap, not only at the corners it was fitted on.
    f_px, c_true = overlap_grid()
    got = res.registration.to_colour(f_px)
    err_px = np.linalg.norm(got - c_true, axis=1)
    err_mm = np.linalg.norm(COLOUR.pixel_to_belt(got, z_mm=THICK) - FLUO.pixel_to_belt(f_px, z_mm=THICK), axis=1)
    assert len(f_px) > 2000
    assert err_px.max() <= TRUTH_PX, err_px.max()
    assert err_mm.max() <= TRUTH_MM, err_mm.max()
    # The way back, and the maps a line warps with.
    back = res.registration.to_fluorescence(c_true)
    assert np.max(np.linalg.norm(back - f_px, axis=1)) <= 2 * TRUTH_PX
    mx, my = res.registration.maps()
    ci = np.round(c_true[::37]).astype(int)
    f_of = np.column_stack([mx[ci[:, 1], ci[:, 0]], my[ci[:, 1], ci[:, 0]]])
    f_true = FLUO.project(np.column_stack([COLOUR.pixel_to_belt(ci, z_mm=THICK), np.full(len(ci), THICK)]))
    assert np.max(np.linalg.norm(f_of - f_true, axis=1)) <= 2 * TRUTH_PX
    # Its figures: the corners fit to a fraction of a millimetre, all five pairs, the overlap.
    assert res.verdict == "good"
    assert res.pairs == 5 and len(res.residuals_mm) >= 150
    assert res.residual_median_mm <= 0.1 and res.residual_p95_mm <= 0.2 and res.residual_max_mm <= 0.3
    assert res.board_coverage >= 0.5
    cw, ch = COLOUR.image_size
    u, v = np.meshgrid(np.arange(4, cw, 8.0), np.arange(4, ch, 8.0))
    fp = FLUO.project(
        np.column_stack([COLOUR.pixel_to_belt(np.column_stack([u.ravel(), v.ravel()])), np.zeros(u.size)])
    )
    fw, fh = FLUO.image_size
    true_overlap = np.mean((fp[:, 0] >= 0) & (fp[:, 0] <= fw - 1) & (fp[:, 1] >= 0) & (fp[:, 1] <= fh - 1))
    assert res.overlap_share == pytest.approx(true_overlap, abs=0.01)
    assert res.mm_per_px == pytest.approx(0.6, rel=0.01)
    # The colour lens bends a plain perspective warp far off: the step says so.
    assert res.plain_warp_max_mm > 2.0
    assert any("plain perspective warp" in n for n in res.notes)


def test_the_cameras_poses_register_any_plane_and_tell_the_parallax(colour_cal):
    """The homography holds on the board's face, 3 mm up. A point above that plane is seen by the
    two cameras from places 128 mm apart and lands off (parallax); with the fluorescence camera's
    intrinsics the step also measures its pose, which registers any plane: the belt itself (the
    simulator's own homography) or the scallops' tops."""
    res = register_fluorescence(*pairs(), BOARD, colour_cal, thickness_mm=THICK, fluo_intrinsics=fluo_intrinsics())
    assert res.baseline_mm == pytest.approx(np.linalg.norm(FLUO.centre_B - COLOUR.centre_B), abs=0.5)
    mid = COLOUR.pixel_to_belt([639.5, 359.5], z_mm=THICK)[0]
    up = np.array([[mid[0], mid[1], THICK + 10.0]])
    on_face = Registration(
        plane_homography(COLOUR, FLUO, THICK),
        COLOUR.K,
        COLOUR.dist,
        COLOUR.image_size,
        FLUO.image_size,
        FLUO.K,
        FLUO.dist,
    )
    landed = on_face.to_colour(FLUO.project(up))
    true_parallax = np.linalg.norm(
        COLOUR.pixel_to_belt(landed, THICK) - COLOUR.pixel_to_belt(COLOUR.project(up), THICK)
    )
    assert res.parallax_mm_per_10mm == pytest.approx(true_parallax, rel=0.1)
    assert res.parallax_mm_per_10mm > 1.5  # mm: why a registration on the belt is not one on a scallop

    cal = LineCalibration.from_dict(json.loads(colour_cal.to_json_text()))
    cal.set_fluorescence(res.section())
    for z in (0.0, 20.0):
        f_px, c_true = overlap_grid(z_mm=z)
        at_z = Registration.from_calibration(cal, z_mm=z).to_colour(f_px)
        assert np.max(np.linalg.norm(at_z - c_true, axis=1)) <= TRUTH_PX, z
        board_plane = Registration.from_calibration(cal).to_colour(f_px)
        off = np.max(np.linalg.norm(board_plane - c_true, axis=1))
        assert off > (5.0 if z == 20.0 else 0.8), off  # px: the parallax the height would cost
    # On the belt: the simulator's own homography (what true_calibration stores).
    H0 = true_calibration(sim_config(), []).fluorescence_homography
    f_px, _ = overlap_grid(z_mm=0.0)
    ideal = cv2.undistortPoints(f_px.reshape(-1, 1, 2), FLUO.K, FLUO.dist, P=FLUO.K)
    a = cv2.perspectiveTransform(ideal, Registration.from_calibration(cal, z_mm=0.0).homography).reshape(-1, 2)
    b = cv2.perspectiveTransform(ideal, H0).reshape(-1, 2)
    assert np.max(np.linalg.norm(a - b, axis=1)) <= TRUTH_PX


def test_another_cameras_intrinsics_are_redo_not_a_wrong_parallax(colour_cal):
    """The mapping on the board's plane fits whatever lens file is given, so a file of another
    camera went through as GOOD with a baseline and parallax far off (an outside try: 538 mm
    and 12.6 mm per 10 mm for a true 172 and 1.3). The pose fitted with the given intrinsics
    does not fit the corners then: that figure makes it REDO and says why."""
    right = register_fluorescence(*pairs(), BOARD, colour_cal, thickness_mm=THICK, fluo_intrinsics=fluo_intrinsics())
    assert right.pose_fit_px is not None and right.pose_fit_px <= 0.5 and right.verdict == "good"
    K, dist, size = fluo_intrinsics()
    stretched = K.copy()
    stretched[1, 1] *= 4 / 3  # the focal lengths of a camera whose picture was 3/4 as tall
    stretched[1, 2] *= 4 / 3
    wrong = register_fluorescence(
        *pairs(), BOARD, colour_cal, thickness_mm=THICK, fluo_intrinsics=(stretched, dist, size)
    )
    # The plane's own figures would not have refused it: only the pose does.
    assert [f for f in wrong.figures()[1:] if f.verdict == "redo"] == []
    assert wrong.pose_fit_px > POSE_FIT_LIMITS[1] and wrong.verdict == "redo"
    assert any("intrinsics do not fit its photos" in n for n in wrong.notes)
    assert wrong.to_json()["pose_fit_max_px"] == pytest.approx(wrong.pose_fit_px, abs=1e-3)
    assert wrong.section()["pose_fit_max_px"] == wrong.pose_fit_px


def test_another_height_needs_the_fluorescence_cameras_pose(colour_cal):
    res = register_fluorescence(*pairs(PLACES[:3]), BOARD, colour_cal, thickness_mm=THICK)
    assert res.fluo_camera is None and res.parallax_mm_per_10mm is None
    cal = LineCalibration.from_dict(json.loads(colour_cal.to_json_text()))
    cal.set_fluorescence(res.section())
    assert cal.fluorescence_camera is None and cal.fluorescence_intrinsics is None
    with pytest.raises(MissingPartError, match="holds no pose of the fluorescence camera"):
        Registration.from_calibration(cal, z_mm=20.0)


def test_too_few_pairs_or_too_little_of_the_overlap_is_not_good(colour_cal):
    one = register_fluorescence(
        *pairs(PLACES[:1]), BOARD, colour_cal, thickness_mm=THICK, fluo_intrinsics=fluo_intrinsics()
    )
    # One board fits itself well, and says nothing of the rest of the overlap.
    assert one.residual_max_mm <= 0.3
    assert one.verdict == "redo"
    figs = {f.name: f.verdict for f in one.figures()}
    assert figs["pairs of photos"] == "redo" and figs["board coverage of the overlap"] == "redo"
    two = register_fluorescence(
        *pairs([PLACES[1], PLACES[4]]), BOARD, colour_cal, thickness_mm=THICK, fluo_intrinsics=fluo_intrinsics()
    )
    assert two.verdict == "marginal"


def test_the_fluorescence_lens_shows_in_the_residuals_without_its_intrinsics(colour_cal):
    res = register_fluorescence(*pairs(), BOARD, colour_cal, thickness_mm=THICK)
    assert res.residual_max_mm > 1.0 and res.verdict == "redo"
    assert any("--fluorescence-intrinsics" in n for n in res.notes)


def test_without_distortion_no_intrinsics_are_needed_and_a_plain_warp_is_exact():
    colour_cam = camera_model_from_config(SimCameraConfig(tilt_deg=5.0))
    cal = true_calibration(SimConfig(camera=SimCameraConfig(tilt_deg=5.0)), [])
    fluo = camera_model_from_config(sim_config(distortion=(0.0, 0.0, 0.0, 0.0, 0.0)).fluorescence)
    places = PLACES
    colour = [render_board(colour_cam, BOARD, pose_at(BOARD, c), seed=k) for k, c in enumerate(places)]
    fl = [render_board(fluo, BOARD, pose_at(BOARD, c), seed=10 + k)[:, :, 0] for k, c in enumerate(places)]
    res = register_fluorescence(colour, fl, BOARD, cal, thickness_mm=THICK)
    assert res.registration.exact_as_homography and res.plain_warp_max_mm < 1e-9
    assert res.verdict == "good" and res.residual_max_mm <= 0.3
    img = fl[0]
    warped = cv2.warpPerspective(img, res.homography, colour_cam.image_size)
    assert np.array_equal(res.registration.warp(img), warped)


def test_a_chessboard_numbered_from_the_other_end_is_matched_by_the_other_pairs(colour_cal):
    """A plain chessboard has no marked corner 0; a fluorescence camera mounted turned half round
    numbers it from the other end. Three pairs agree only on the right matching."""
    board = "chessboard:7x5:25"
    turned = CameraModel.looking_down(
        FLUO.image_size, 0.6, tilt_deg=-6.0, dist=tuple(FLUO.dist), center_xy_mm=(12.0, -30.0), yaw_deg=180.0
    )
    places = [(-170.0, 60.0), (170.0, 60.0), (0.0, -80.0)]
    colour = [photo(COLOUR, board, c, 40 + k) for k, c in enumerate(places)]
    fl = [photo(turned, board, c, 50 + k) for k, c in enumerate(places)]
    res = register_fluorescence(
        colour, fl, board, colour_cal, thickness_mm=THICK, fluo_intrinsics=fluo_intrinsics(turned)
    )
    f_px, c_true = overlap_grid(turned)
    assert np.max(np.linalg.norm(res.registration.to_colour(f_px) - c_true, axis=1)) <= 2 * TRUTH_PX
    assert res.residual_max_mm <= 0.3


# ------------------------------------------------------------------ bad pairs
def test_a_pair_of_another_board_placement_is_redo_and_named(colour_cal):
    colour, fl = pairs()
    fl = list(fl)
    # Pair 3's fluorescence photo shows the board after it was nudged 40 mm and turned 3°.
    b = parse_board(BOARD)
    _, o = pose_at(BOARD, PLACES[2])
    moved = flat_pose((o[0] + 40.0, o[1] - 10.0), 3.0, THICK)
    fl[2] = render_board(FLUO, b, moved, seed=99)[:, :, 0]
    res = register_fluorescence(colour, fl, BOARD, colour_cal, thickness_mm=THICK, fluo_intrinsics=fluo_intrinsics())
    assert res.verdict == "redo" and res.residual_max_mm > 5.0
    assert any(
        n.startswith("pair 3 (colour photo 3 + fluorescence photo 3) disagrees with the others") for n in res.notes
    )


def test_pairs_given_in_another_order_are_redo_or_refused(colour_cal):
    colour, fl = pairs()
    swapped = register_fluorescence(
        colour, [fl[1], fl[0], *fl[2:]], BOARD, colour_cal, thickness_mm=THICK, fluo_intrinsics=fluo_intrinsics()
    )
    assert swapped.verdict == "redo" and swapped.residual_max_mm > 10.0
    assert any("given in the same order" in n for n in swapped.notes)
    # Every pair wrong: the fit cannot even keep the corners in the colour camera's sight.
    with pytest.raises(DegenerateGeometryError, match="given in another order"):
        register_fluorescence(colour, fl[1:] + fl[:1], BOARD, colour_cal, thickness_mm=THICK)


def test_inputs_that_cannot_be_used_are_named(colour_cal):
    colour, fl = pairs(PLACES[:3])
    with pytest.raises(ImageError, match="3 colour photo.* but 2 fluorescence"):
        register_fluorescence(colour, fl[:2], BOARD, colour_cal, thickness_mm=THICK)
    with pytest.raises(ImageError, match="is 1024x768 but the colour camera is calibrated for 1280x720"):
        register_fluorescence(fl, colour, BOARD, colour_cal, thickness_mm=THICK)
    blank = np.full_like(fl[1], 7)
    with pytest.raises(BoardNotFoundError, match="pair 2: no charuco.* found in fluorescence photo 2"):
        register_fluorescence(colour, [fl[0], blank, fl[2]], BOARD, colour_cal, thickness_mm=THICK)
    with pytest.raises(ImageError, match="fluorescence camera's intrinsics are for 800x600"):
        register_fluorescence(
            colour, fl, BOARD, colour_cal, thickness_mm=THICK, fluo_intrinsics=(FLUO.K, FLUO.dist, (800, 600))
        )
    with pytest.raises(BoardSpecError, match="thickness_mm=nan"):
        register_fluorescence(colour, fl, BOARD, colour_cal, thickness_mm=math.nan)


# ------------------------------------------------------------------ the calibration file
def fluorescence_section(**over) -> dict:
    H = fluorescence_homography(FLUO, COLOUR)
    sec = {
        "when": "2025-01-01T00:30:00+00:00",
        "board": BOARD,
        "image_size": list(FLUO.image_size),
        "homography": H.tolist(),
        "K": FLUO.K.tolist(),
        "dist": FLUO.dist.tolist(),
        "plane_z_mm": THICK,
        "pairs": 5,
        "corners": 170,
        "residual_median_mm": 0.07,
        "residual_p95_mm": 0.13,
        "residual_max_mm": 0.16,
        "overlap_share": 0.92,
        "verdict": "good",
    }
    return sec | over


def test_the_part_round_trips_through_the_file(tmp_path, colour_cal):
    cal = LineCalibration.from_dict(json.loads(colour_cal.to_json_text()))
    assert cal.fluorescence_homography is None and cal.fluorescence_size is None
    cal.set_fluorescence(fluorescence_section())
    cal.save(tmp_path / "line.json")
    back = LineCalibration.load(tmp_path / "line.json", require=("intrinsics", "belt", "fluorescence"))
    H = back.fluorescence_homography
    assert H.dtype == np.float64 and H.shape == (3, 3)
    assert np.array_equal(H, fluorescence_homography(FLUO, COLOUR))
    assert back.fluorescence_size == (1024, 768)
    K, dist = back.fluorescence_intrinsics
    assert np.array_equal(K, FLUO.K) and np.array_equal(dist, FLUO.dist)
    part = back.data["fluorescence"]
    assert part["intrinsics_id"] == back.data["intrinsics"]["id"] and len(part["id"]) == 12
    assert back.summary()["parts"]["fluorescence"]["verdict"] == "good"
    # One matrix row per line, as the other parts.
    assert re.search(r'"homography": \[\n(\s+\[[^\]\n]+\],?\n){3}', (tmp_path / "line.json").read_text())
    # Through Registration: the file maps raw pixels exactly as the two camera models do.
    reg = Registration.from_calibration(back)
    f_px, _ = overlap_grid()
    assert np.max(np.linalg.norm(reg.to_colour(f_px) - true_to_colour(FLUO, f_px, 0.0), axis=1)) < 1e-3


def test_a_file_without_the_part_loads_as_before(tmp_path, colour_cal):
    colour_cal.save(tmp_path / "line.json")
    cal = LineCalibration.load(tmp_path / "line.json", require=("intrinsics", "belt", "encoder"))
    assert "fluorescence" not in RUNTIME_PARTS
    assert cal.fluorescence_homography is None and cal.fluorescence_size is None
    assert cal.fluorescence_intrinsics is None
    assert cal.summary()["parts"]["fluorescence"] is None
    with pytest.raises(
        CalibrationFileError, match="has no fluorescence calibration; run 'scallop calibrate fluorescence"
    ):
        cal.check(require=("fluorescence",))


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        (
            "homography",
            [[1.0, 0.0, float("nan")], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            "fluorescence.homography holds a non-finite value",
        ),
        (
            "homography",
            [[1.0, 0.0, float("inf")], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            "fluorescence.homography holds a non-finite value",
        ),
        ("homography", [[1.0, 0.0], [0.0, 1.0]], r"fluorescence.homography has shape \(2, 2\), expected \(3, 3\)"),
        ("homography", [[1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 1.0]], "fluorescence.homography is singular"),
        ("homography", "a matrix", "fluorescence.homography is missing or not numbers"),
        ("image_size", [1024], r"fluorescence.image_size must be \[width, height\]"),
        ("image_size", [1024.5, 768], r"fluorescence.image_size must be \[width, height\]"),
        ("K", [[float("nan"), 0, 500], [0, 1000, 400], [0, 0, 1]], "fluorescence.K holds a non-finite value"),
        ("dist", [0.1, float("nan"), 0.0, 0.0, 0.0], "fluorescence.dist holds a non-finite value"),
        ("plane_z_mm", float("nan"), "fluorescence.plane_z_mm=nan is not a finite number"),
    ],
)
def test_numbers_that_cannot_be_a_registration_are_refused_naming_the_key(tmp_path, colour_cal, key, value, words):
    cal = LineCalibration.from_dict(json.loads(colour_cal.to_json_text()))
    cal.set_fluorescence(fluorescence_section())
    data = json.loads(cal.to_json_text())
    data["fluorescence"][key] = value
    path = tmp_path / "line.json"
    path.write_text(json.dumps(data))  # NaN and Infinity as JSON writes them
    with pytest.raises(CalibrationFileError, match=words):
        LineCalibration.load(path, require=())
    with pytest.raises(CalibrationFileError, match=words):
        LineCalibration.from_dict(data)


def test_new_colour_intrinsics_make_it_stale_and_a_redo_verdict_needs_the_override(colour_cal):
    cal = LineCalibration.from_dict(json.loads(colour_cal.to_json_text()))
    cal.set_fluorescence(fluorescence_section())
    cal.check(require=("intrinsics", "belt", "fluorescence"))
    intr = dict(cal.data["intrinsics"])
    K = np.asarray(intr["K"], dtype=float)
    K[0, 0] *= 1.001
    cal.set_intrinsics(intr | {"K": K.tolist()})
    assert "fluorescence" in cal.stale_parts()
    with pytest.raises(
        StalePartError, match="registered through earlier colour intrinsics; rerun 'scallop calibrate fluorescence"
    ):
        cal.check(require=("intrinsics", "fluorescence"))
    cal.check(require=("intrinsics",))  # a colour-only line does not care
    cal.set_fluorescence(fluorescence_section(verdict="redo"))
    with pytest.raises(RedoVerdictError, match="the fluorescence calibration has verdict REDO"):
        cal.check(require=("intrinsics", "fluorescence"))
    cal.check(require=("intrinsics", "fluorescence"), accept_redo=("fluorescence",))
    assert cal.accepted_redo == ["fluorescence"]


def test_a_new_colour_resolution_drops_the_part(colour_cal):
    cal = LineCalibration.from_dict(json.loads(colour_cal.to_json_text()))
    cal.set_fluorescence(fluorescence_section())
    intr = dict(cal.data["intrinsics"])
    cal.set_intrinsics(intr | {"image_size": [640, 480]})
    assert not cal.has("fluorescence")


def test_true_calibration_has_the_part_for_a_second_camera_only():
    assert not true_calibration(SimConfig(camera=SIM_CAMERA), []).has("fluorescence")
    alternate = SimConfig(
        camera=SIM_CAMERA,
        fluorescence=FluorescenceConfig(setup="alternate", exposure_ratio=3.0, noise_sigma=5.0, frame_interval_ms=20.0),
    )
    assert not true_calibration(alternate, []).has("fluorescence")
    cal = true_calibration(sim_config(), [])
    assert cal.fluorescence_size == (1024, 768)
    assert np.array_equal(cal.fluorescence_homography, fluorescence_homography(FLUO, COLOUR))
    K, dist = cal.fluorescence_intrinsics
    assert np.array_equal(K, FLUO.K) and np.array_equal(dist, FLUO.dist)
    # Exact for both lenses: raw fluorescence pixels onto the raw colour pixels of the same belt point.
    f_px, _ = overlap_grid()
    reg = Registration.from_calibration(cal)
    assert np.max(np.linalg.norm(reg.to_colour(f_px) - true_to_colour(FLUO, f_px, 0.0), axis=1)) < 1e-3
    cal.check(require=("intrinsics", "belt", "encoder", "fluorescence"))


# ------------------------------------------------------------------ the command line
def run(capsys, *argv):
    rc = main(["calibrate", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("scallop calibrate: error: ")
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture()
def photos(tmp_path, colour_cal):
    """The colour camera's calibration file, the fluorescence camera's intrinsics file and the
    five pairs, as files."""
    colour, fl = pairs()
    cs, fs = [], []
    for k, (c, f) in enumerate(zip(colour, fl)):
        cs.append(tmp_path / f"c{k + 1}.png")
        fs.append(tmp_path / f"f{k + 1}.png")
        cv2.imwrite(str(cs[-1]), c)
        cv2.imwrite(str(fs[-1]), f)
    colour_cal.save(tmp_path / "line.json")
    uv = LineCalibration.new(FLUO.image_size, "uv")
    uv.set_intrinsics(
        {"image_size": list(FLUO.image_size), "K": FLUO.K.tolist(), "dist": FLUO.dist.tolist(), "verdict": "good"}
    )
    uv.save(tmp_path / "uv.json")
    return tmp_path, cs, fs


def test_command_writes_the_part_and_prints_its_figures(capsys, photos):
    d, cs, fs = photos
    calib = d / "line.json"
    args = ["fluorescence", "--calib", calib, "--board", BOARD, "--thickness-mm", THICK]
    args += ["--fluorescence-intrinsics", d / "uv.json", "--colour", *cs, "--fluorescence", *fs]
    rc, out, err = run(capsys, *args)
    assert rc == 0 and err == "", err
    print(out)  # the figures, for the record (pytest -s)
    assert "170 corners from 5 pair(s): residual on the belt median" in out or "corners from 5 pair(s)" in out
    assert "worst corner residual on the belt:" in out and "(good <= 0.5, marginal <= 1, else redo)" in out
    assert "pairs of photos: 5 -> good (good >= 3, marginal >= 2, else redo)" in out
    assert "board coverage of the overlap:" in out
    assert "verdict: GOOD" in out and f"wrote {calib} (fluorescence)" in out
    cal = LineCalibration.load(calib, require=("intrinsics", "belt", "encoder", "fluorescence"))
    assert cal.fluorescence_size == (1024, 768) and cal.data["fluorescence"]["pairs"] == 5
    pic = cv2.imread(str(d / "line.fluorescence.png"))
    assert pic is not None and pic.shape == (720, 1280, 3)
    rc, out, err = run(capsys, "show", calib)
    assert rc == 0 and "fluorescence 20" in out and "1024x768 camera" in out and "good" in out
    assert "missing: fluorescence" not in out
    # --json: one object, the contract's keys.
    rc, out, err = run(capsys, *args, "--json", "--dry-run")
    assert rc == 0 and out.count("\n") == 1
    obj = json.loads(out)
    for key in ("homography", "image_size", "pairs", "corners", "residual_median_mm", "residual_p95_mm"):
        assert key in obj
    assert obj["verdict"] == "good" and obj["residual_max_mm"] <= 0.3 and "file" not in obj


def test_command_without_the_part_shows_it_is_optional(capsys, photos):
    d, _, _ = photos
    rc, out, _ = run(capsys, "show", d / "line.json")
    assert rc == 0 and "fluorescence: none (needed only on a line with a second, fluorescence camera)" in out
    assert "missing: fluorescence" not in out


def test_command_redo_writes_the_part_and_exits_3(capsys, photos):
    d, cs, fs = photos
    rc, out, err = run(
        capsys,
        "fluorescence",
        "--calib",
        d / "line.json",
        "--board",
        BOARD,
        "--thickness-mm",
        THICK,
        "--colour",
        *cs,
        "--fluorescence",
        fs[1],
        fs[0],
        *fs[2:],
    )
    assert rc == 3 and err == ""
    assert "verdict: REDO" in out and "given in the same order" in out
    cal = LineCalibration.load(d / "line.json", require=())
    assert cal.data["fluorescence"]["verdict"] == "redo"
    with pytest.raises(RedoVerdictError):
        cal.check(require=("fluorescence",))


@pytest.mark.parametrize(
    ("change", "code", "words"),
    [
        (lambda a, d, cs, fs: a[: a.index("--fluorescence") + 2], 3, "5 colour photo(s) but 1 fluorescence photo(s)"),
        (
            lambda a, d, cs, fs: [str(d / "nothing.png") if x == str(fs[0]) else x for x in a],
            3,
            "nothing.png: no such photo",
        ),
        (lambda a, d, cs, fs: [x.replace("charuco:8x6", "charuco:8y6") for x in a], 2, "size '8y6' is not COLSxROWS"),
        (
            lambda a, d, cs, fs: [str(d / "none.json") if x == str(d / "line.json") else x for x in a],
            3,
            "no such calibration file",
        ),
        (
            lambda a, d, cs, fs: [str(cs[0]) if x == str(fs[2]) else x for x in a],
            3,
            "f1.png is 1024x768|c1.png is 1280x720",
        ),
        # A bad argument is a usage error (2), like a bad board, not a bad photo (3).
        (
            lambda a, d, cs, fs: [("nan" if x == str(THICK) else x) for x in a],
            2,
            "--thickness-mm=nan is not a finite number",
        ),
        (lambda a, d, cs, fs: [("-1" if x == str(THICK) else x) for x in a], 2, "--thickness-mm=-1.0 is out of range"),
    ],
)
def test_command_errors_are_one_line_with_an_exit_code(capsys, photos, change, code, words):
    d, cs, fs = photos
    args = ["fluorescence", "--calib", d / "line.json", "--board", BOARD, "--thickness-mm", THICK]
    args = [str(a) for a in args + ["--colour", *cs, "--fluorescence", *fs]]
    rc, out, err = run(capsys, *change(args, d, cs, fs))
    assert rc == code and "verdict" not in out and "wrote" not in out
    line = one_line_error(err)
    assert any(w in line for w in words.split("|")), line


def test_command_needs_the_belt_step_first(capsys, photos):
    d, cs, fs = photos
    cal = LineCalibration.load(d / "line.json", require=())
    del cal.data["belt"]
    cal.save()
    rc, out, err = run(
        capsys,
        "fluorescence",
        "--calib",
        d / "line.json",
        "--board",
        BOARD,
        "--thickness-mm",
        THICK,
        "--colour",
        *cs,
        "--fluorescence",
        *fs,
    )
    assert rc == 3 and "has no belt calibration; run 'scallop calibrate belt" in one_line_error(err)


def test_command_refuses_a_missing_thickness(capsys, photos):
    d, cs, fs = photos
    with pytest.raises(SystemExit) as e:
        main(
            [
                "calibrate",
                "fluorescence",
                "--calib",
                str(d / "line.json"),
                "--board",
                BOARD,
                "--colour",
                *map(str, cs),
                "--fluorescence",
                *map(str, fs),
            ]
        )
    assert e.value.code == 2
    assert "--thickness-mm" in capsys.readouterr().err
