"""``scallop calibrate …``: the JSON contract, one-line errors, and the whole procedure run
through the command line on simulator photos."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from scallop.app.cli import main
from scallop.calibration.boards import detect
from scallop.calibration.robot import RigidTransform
from scallop.calibration.store import LineCalibration
from scallop.sim.boards import (
    board_corners_B,
    flat_pose,
    intrinsics_views,
    render_board,
)
from scallop.sim.config import SimCameraConfig
from scallop.sim.world import camera_model_from_config

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "calib-real-640x512"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real calibration photos not present at {REAL}")
BOARD = "chessboard:9x6:25"
SIM_CAMERA = SimCameraConfig(distortion=(-0.08, 0.03, 0.0, 0.0, 0.0), tilt_deg=5.0, yaw_deg=2.0)


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


# ------------------------------------------------------------------ the intrinsics contract
@needs_real
def test_intrinsics_json_is_one_object_and_writes_the_file(capsys, tmp_path):
    out_file = tmp_path / "line.json"
    rc, out, err = run(capsys, "intrinsics", "--board", BOARD, "--json", "--out", out_file, REAL)
    assert rc == 0
    assert out.count("\n") == 1  # one JSON object, one line, nothing else
    obj = json.loads(out)
    for key in ("rms_px", "fx", "fy", "cx", "cy", "dist", "image_size", "views_used", "views_rejected"):
        assert key in obj
    assert obj["image_size"] == [640, 512] and obj["views_used"] == 25 and obj["views_rejected"] == []
    assert obj["rms_px"] <= 0.2 and abs(obj["fx"] / 519.5 - 1) < 0.01
    assert len(obj["per_view_rms_px"]) == 25 and "fx" in obj["std"]
    assert obj["verdict"] == "good" and err == ""
    cal = LineCalibration.load(out_file, require=("intrinsics",), image_size=(640, 512))
    assert cal.K[0, 0] == pytest.approx(obj["fx"])
    cov = cv2.imread(str(tmp_path / "line.coverage.png"))
    assert cov is not None and cov.shape == (512, 640, 3)


@needs_real
def test_intrinsics_text_output_states_figures_and_thresholds(capsys, tmp_path):
    rc, out, err = run(
        capsys,
        "intrinsics",
        "--board",
        BOARD,
        "--coverage",
        tmp_path / "c.png",
        REAL / "left01.jpg",
        REAL / "left02.jpg",
        REAL / "left03.jpg",
        REAL / "left04.jpg",
        REAL / "left05.jpg",
        REAL / "left06.jpg",
    )
    assert rc == 0 and err == ""
    assert "RMS reprojection error:" in out and "(good <= 0.5, marginal <= 1, else redo)" in out
    assert "views used: 6 -> marginal (good >= 10, marginal >= 6, else redo)" in out
    assert "verdict: MARGINAL" in out
    assert (tmp_path / "c.png").is_file()


@needs_real
def test_skip_bad_turns_stops_into_rejections(capsys, tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    for name in ("left01.jpg", "left02.jpg", "left03.jpg", "left04.jpg"):
        (d / name).write_bytes((REAL / name).read_bytes())
    (d / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    rc, out, err = run(capsys, "intrinsics", "--board", BOARD, "--json", d)
    assert rc == 3 and out == ""
    assert "zz_broken.jpg: not a readable image" in one_line_error(err)
    rc, out, err = run(capsys, "intrinsics", "--board", BOARD, "--json", "--skip-bad", d)
    assert rc == 3 and json.loads(out)["verdict"] == "redo"  # four views: a REDO step exits non-zero
    assert json.loads(out)["views_rejected"] == [
        {
            "image": "zz_broken.jpg",
            "reason": "unreadable image",
            "detail": "not a readable image (corrupt or unsupported format)",
        }
    ]


# ------------------------------------------------------------------ bad input: one line, exit != 0
def test_folder_without_a_board(capsys, tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"p{i}.png"), np.full((480, 640, 3), 90 + i, np.uint8))
    rc, out, err = run(capsys, "intrinsics", "--board", BOARD, "--json", tmp_path)
    assert rc == 3 and out == ""
    assert "no chessboard:9x6:25 found in any of the 3 photos" in one_line_error(err)


def test_mixed_resolutions(capsys, tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.full((480, 640, 3), 90, np.uint8))
    cv2.imwrite(str(tmp_path / "b.png"), np.full((480, 640, 3), 90, np.uint8))
    cv2.imwrite(str(tmp_path / "c.png"), np.full((720, 1280, 3), 90, np.uint8))
    rc, _out, err = run(capsys, "intrinsics", "--board", BOARD, tmp_path)
    assert rc == 3
    assert "mixed resolutions: 2 are 640x480, 1 are 1280x720 (e.g. c.png)" in one_line_error(err)


def test_corrupt_single_image(capsys, tmp_path):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"not an image at all")
    rc, _out, err = run(capsys, "intrinsics", "--board", BOARD, bad)
    assert rc == 3 and "x.png: not a readable image" in one_line_error(err)


def test_bad_board_spec_and_missing_photos(capsys, tmp_path):
    rc, _, err = run(capsys, "intrinsics", "--board", "chessboard:9x6", tmp_path)
    assert rc == 2 and "2 fields, chessboard needs 3" in one_line_error(err)
    rc, _, err = run(capsys, "intrinsics", "--board", BOARD)
    assert rc == 3 and "no photos" in one_line_error(err)
    rc, _, err = run(capsys, "show", tmp_path / "missing.json")
    assert rc == 3 and "no such calibration file" in one_line_error(err)


# ------------------------------------------------------------------ the whole procedure on the simulator
TRUE_ROBOT = RigidTransform(np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), [300.0, 450.0, -320.0])


@pytest.fixture(scope="module")
def sim_files(tmp_path_factory):
    """Photos an engineer would take on the simulated line, written as files."""
    root = tmp_path_factory.mktemp("simline")
    truth = camera_model_from_config(SIM_CAMERA)
    views = root / "views"
    views.mkdir()
    for name, img in intrinsics_views(truth, BOARD, 15, seed=1):
        cv2.imwrite(str(views / name), img)
    origin, yaw = (-100.0, 60.0), 1.0
    flat = render_board(truth, BOARD, flat_pose(origin, yaw, 3.0), seed=5)
    cv2.imwrite(str(root / "flat.png"), flat)
    # Robot touches of the board's four outer inner-corners (sigma 0.2 mm per axis).
    rng = np.random.default_rng(3)
    true_B = board_corners_B(BOARD, flat_pose(origin, yaw, 3.0))
    lines = ["corner,robot_x,robot_y,robot_z"]
    for cid in (0, 8, 45, 53):
        x, y, z = TRUE_ROBOT.apply(true_B[cid])[0] + rng.normal(0, 0.2, 3)
        lines.append(f"{cid},{x:.3f},{y:.3f},{z:.3f}")
    (root / "touches.csv").write_text("\n".join(lines) + "\n")
    # An arm 300 mm downstream: the same corners touched after the belt ran 3000 counts.
    lines = ["corner,robot_x,robot_y,robot_z"]
    for cid in (0, 8, 45, 53):
        x, y, z = TRUE_ROBOT.apply(true_B[cid] + [300.0, 0.0, 0.0])[0] + rng.normal(0, 0.2, 3)
        lines.append(f"{cid},{x:.3f},{y:.3f},{z:.3f}")
    (root / "touches_downstream.csv").write_text("\n".join(lines) + "\n")
    # The board riding the belt: frames and their encoder counts (10 counts/mm).
    run_dir = root / "run"
    run_dir.mkdir()
    rows = ["image,counts"]
    for k, travel in enumerate(np.linspace(0.0, 260.0, 6)):
        img = render_board(truth, BOARD, flat_pose((origin[0] - 120 + travel, origin[1]), yaw, 3.0), seed=60 + k)
        cv2.imwrite(str(run_dir / f"f{k}.png"), img)
        rows.append(f"f{k}.png,{round(10.0 * travel) + 7000}")
    (run_dir / "counts.csv").write_text("\n".join(rows) + "\n")
    collinear = root / "collinear.csv"
    collinear.write_text(
        "belt_x,belt_y,robot_x,robot_y,robot_z\n0,0,1,1,0\n50,0,51,1,0\n100,0,101,1,0\n150,0.2,151,1,0\n"
    )
    return root, truth, origin, yaw


def test_whole_procedure_through_the_cli(capsys, sim_files):
    root, truth, origin, yaw = sim_files
    line = root / "line.json"
    rc, out, _ = run(capsys, "intrinsics", "--board", BOARD, "--out", line, "--camera-name", "sim", root / "views")
    assert rc == 0 and "verdict: GOOD" in out

    rc, out, _ = run(
        capsys, "belt", "--calib", line, "--board", BOARD, "--origin", *origin, "--thickness-mm", 3, root / "flat.png"
    )
    assert rc == 0 and "worst corner residual on the belt" in out and "verdict: GOOD" in out

    rc, out, _ = run(
        capsys,
        "robot",
        "--calib",
        line,
        "--arm",
        "left",
        "--points",
        root / "touches.csv",
        "--image",
        root / "flat.png",
        "--board",
        BOARD,
        "--json",
    )
    fit = json.loads(out)
    assert rc == 0 and fit["rms_mm"] <= 0.5 and len(fit["residuals_mm"]) == 4

    rc, out, _ = run(
        capsys, "encoder", "--calib", line, "--board", BOARD, "--counts", root / "run" / "counts.csv", "--json"
    )
    enc = json.loads(out)
    assert rc == 0 and abs(enc["counts_per_mm"] / 10.0 - 1) < 0.002 and enc["count_sign"] == 1
    assert enc["travel_angle_deg"] == pytest.approx(-yaw, abs=0.05)
    assert enc["frame_turned_deg"] == pytest.approx(-yaw, abs=0.05)

    rc, out, _ = run(
        capsys,
        "robot",
        "--calib",
        line,
        "--arm",
        "down",
        "--points",
        root / "touches_downstream.csv",
        "--image",
        root / "flat.png",
        "--board",
        BOARD,
        "--moved-counts",
        3000,
        "--json",
    )
    assert rc == 0 and json.loads(out)["rms_mm"] <= 0.5

    rc, out, _ = run(capsys, "show", line, "--json")
    show = json.loads(out)
    assert rc == 0 and show["ready"] is True and show["missing"] == [] and show["stale"] == []

    # The runtime's view: every part, current; pixels land on the robot where the truth says.
    cal = LineCalibration.load(line, image_size=truth.image_size, camera_name="sim")
    w, h = truth.image_size
    px = np.array([[u, v] for u in np.linspace(0, w - 1, 9) for v in np.linspace(0, h - 1, 5)])
    err_belt = np.linalg.norm(cal.pixel_to_belt(px) - truth.pixel_to_belt(px), axis=1)
    assert err_belt.max() <= 0.5
    got = cal.belt_to_robot("left", cal.pixel_to_belt(px))
    want = TRUE_ROBOT.apply(np.column_stack([truth.pixel_to_belt(px), np.zeros(len(px))]))
    assert np.linalg.norm(got - want, axis=1).max() <= 1.0  # 4 touches on one board, extrapolated to the field
    # Downstream arm: a scallop seen at pixel p is picked after the belt ran 3000 counts.
    got = cal.belt_to_robot("down", cal.pixel_to_belt(px) + cal.belt_shift_mm([3000])[0])
    want = TRUE_ROBOT.apply(np.column_stack([truth.pixel_to_belt(px) + [300.0, 0.0], np.zeros(len(px))]))
    assert np.linalg.norm(got - want, axis=1).max() <= 1.0

    rc, out, _ = run(capsys, "check", "--calib", line, "--same-place", root / "flat.png", "--json")
    rep = json.loads(out)
    assert rc == 0 and rep["verdict"] == "good" and rep["field_drift_mm"] < 0.05

    # A photo from another camera is refused by name, not mis-measured.
    small = root / "small.png"
    cv2.imwrite(str(small), cv2.resize(cv2.imread(str(root / "flat.png")), (640, 360)))
    rc, out, err = run(capsys, "check", "--calib", line, small)
    assert rc == 3 and "photo is 640x360 but the calibration is for 1280x720" in one_line_error(err)
    rc, out, err = run(capsys, "belt", "--calib", line, "--board", BOARD, "--dry-run", small)
    assert rc == 3 and "photo 1 is 640x360 but the intrinsics are for 1280x720" in one_line_error(err)

    # Collinear robot points are refused with the reason.
    rc, out, err = run(capsys, "robot", "--calib", line, "--arm", "right", "--points", root / "collinear.csv")
    assert rc == 3 and "collinear" in one_line_error(err)


def test_check_exit_codes_follow_the_verdict(capsys, sim_files, tmp_path):
    root, _truth, _origin, _yaw = sim_files
    line = tmp_path / "line.json"
    assert run(capsys, "intrinsics", "--board", BOARD, "--out", line, root / "views")[0] == 0
    assert run(capsys, "belt", "--calib", line, "--board", BOARD, "--thickness-mm", 3, root / "flat.png")[0] == 0
    bumped = camera_model_from_config(
        SimCameraConfig(distortion=(-0.08, 0.03, 0.0, 0.0, 0.0), tilt_deg=6.0, yaw_deg=2.0)
    )
    photo = tmp_path / "bumped.png"
    cv2.imwrite(str(photo), render_board(bumped, BOARD, flat_pose((0.0, 80.0), 0.0, 3.0), seed=9))
    rc, out, _ = run(capsys, "check", "--calib", line, photo)
    assert rc == 3 and "verdict: REDO" in out and "call an engineer" in out


def test_board_writes_a_printable_board_of_the_right_size(capsys, tmp_path):
    png = tmp_path / "board.png"
    rc, out, _ = run(capsys, "board", "--board", "charuco:7x5:30:22:DICT_5X5_100", "--dpi", 254, "--out", png, "--json")
    assert rc == 0
    info = json.loads(out)
    img = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
    # 254 dpi = 10 px/mm: 7x5 squares of 30 mm plus a 30 mm margin each side = 270 x 210 mm.
    assert img.shape == (2100, 2700) and info["width_mm"] == pytest.approx(270.0)
    det = detect(img, "charuco:7x5:30:22:DICT_5X5_100")
    assert det is not None and len(det) == 24


def test_live_capture_from_a_camera_source(capsys, sim_files, tmp_path):
    """--camera takes any OpenCVCamera source; an image folder stands in for the device."""
    root, truth, _, _ = sim_files
    line = tmp_path / "live.json"
    rc, out, err = run(
        capsys, "intrinsics", "--board", BOARD, "--camera", root / "views", "--views", 12, "--json", "--out", line
    )
    obj = json.loads(out)
    assert rc == 0 and obj["views_used"] == 12 and abs(obj["fx"] / truth.K[0, 0] - 1) < 0.005
    assert "view 12/12 captured" in err  # prompts for the person holding the board
    rc, out, _ = run(
        capsys, "belt", "--calib", line, "--board", BOARD, "--thickness-mm", 3, "--camera", root / "flat.png", "--json"
    )
    assert rc == 0 and json.loads(out)["residual_max_mm"] < 0.5
    rc, _, err = run(capsys, "intrinsics", "--board", BOARD, "--camera", tmp_path / "no_such_device")
    assert rc == 4 and "no such device, file or folder" in one_line_error(err)
