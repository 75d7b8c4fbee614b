"""The line calibration file: round trip, mappings, and every refusal with its advice."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest

from scallop.calibration.camera_model import CameraModel
from scallop.calibration.errors import (
    CalibrationError,
    CalibrationFileError,
    CameraMismatchError,
    FormatVersionError,
    MissingPartError,
    StalePartError,
)
from scallop.calibration.robot import RigidTransform
from scallop.calibration.store import LineCalibration, load_calibration

CAM = CameraModel.looking_down(image_size=(1280, 720), mm_per_px=0.5, tilt_deg=3.0, dist=(-0.05, 0.01, 0, 0, 0))
ARM = RigidTransform(np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), [500.0, 100.0, -300.0])


def intrinsics_section(K=None, size=(1280, 720)):
    return {
        "when": "2025-01-01T00:00:00+00:00",
        "camera": "top",
        "image_size": list(size),
        "board": "chessboard:9x6:25",
        "K": (CAM.K if K is None else K).tolist(),
        "dist": CAM.dist.tolist(),
        "rms_px": 0.12,
        "views_used": 20,
        "verdict": "good",
    }


def belt_section(R=CAM.R, t=CAM.t):
    return {
        "when": "2025-01-01T00:10:00+00:00",
        "board": "chessboard:9x6:25",
        "placement": {"origin_mm": [0.0, 0.0], "yaw_deg": 0.0, "thickness_mm": 0.0, "travel": "right"},
        "R": np.asarray(R).tolist(),
        "t": np.asarray(t).tolist(),
        "residual_max_mm": 0.1,
        "verdict": "good",
    }


def encoder_section(direction=(1.0, 0.0)):
    return {
        "when": "2025-01-01T00:20:00+00:00",
        "method": "track",
        "counts_per_mm": 10.0,
        "count_sign": -1,
        "travel_dir": list(direction),
        "residual_rms_mm": 0.05,
        "verdict": "good",
    }


def arm_section(tf=ARM):
    return {
        "when": "2025-01-01T00:30:00+00:00",
        "robot_from_belt": tf.matrix().tolist(),
        "residuals_mm": [0.1, 0.2, 0.1, 0.15],
        "rms_mm": 0.14,
        "verdict": "good",
    }


@pytest.fixture
def full(tmp_path):
    cal = LineCalibration.new((1280, 720), "top")
    cal.set_intrinsics(intrinsics_section())
    cal.set_belt(belt_section())
    cal.set_arm("left", arm_section())
    cal.set_encoder(encoder_section())
    path = cal.save(tmp_path / "line.json")
    return path


def test_round_trip_and_mappings(full):
    cal = LineCalibration.load(full, image_size=(1280, 720), camera_name="top")
    px = np.array([[0.0, 0.0], [640.0, 360.0], [1279.0, 719.0]])
    np.testing.assert_allclose(cal.pixel_to_belt(px), CAM.pixel_to_belt(px), atol=1e-9)
    np.testing.assert_allclose(cal.belt_to_pixel(CAM.pixel_to_belt(px)), px, atol=1e-6)
    xy = np.array([[10.0, 20.0], [-100.0, 50.0]])
    np.testing.assert_allclose(cal.belt_to_robot("left", xy), ARM.apply(np.column_stack([xy, [0, 0]])), atol=1e-9)
    np.testing.assert_allclose(
        cal.robot_to_belt("left", cal.belt_to_robot("left", xy, z_mm=5.0)), np.column_stack([xy, [5.0, 5.0]]), atol=1e-9
    )
    # counts fall as the belt moves forward (+x)
    np.testing.assert_allclose(cal.belt_shift_mm([-250, 100]), [[25.0, 0.0], [-10.0, 0.0]])
    assert cal.counts_per_mm == 10.0 and cal.count_sign == -1
    assert cal.mm_per_px_center() == pytest.approx(0.5, rel=1e-3)
    assert cal.image_size == (1280, 720) and cal.camera_name == "top"
    assert cal.summary()["parts"]["arms"]["left"]["stale"] is None


def test_file_is_human_readable_with_provenance(full):
    text = full.read_text()
    data = json.loads(text)
    assert data["format"] == "scallop-line-calibration" and data["version"] == 1
    assert set(data) >= {"written", "camera", "intrinsics", "belt", "encoder", "arms"}
    assert data["camera"] == {"name": "top", "image_size": [1280, 720]}
    assert data["intrinsics"]["rms_px"] == 0.12 and data["intrinsics"]["when"].startswith("2025")
    # A 3x3 matrix reads as three lines of three numbers.
    assert re.search(
        r'"K": \[\n\s+\[1408\.0, 0\.0, 639\.5\],\n\s+\[0\.0, 1408\.0, 359\.5\],\n\s+\[0\.0, 0\.0, 1\.0\]\n', text
    )
    assert text.count("\n") > 40


def test_other_resolution_is_refused_with_what_to_do(full):
    with pytest.raises(
        CameraMismatchError,
        match=r"made for 1280x720 images but the camera delivers 640x480: "
        r"set the camera back to 1280x720, or calibrate this camera",
    ):
        LineCalibration.load(full, image_size=(640, 480))
    with pytest.raises(CameraMismatchError, match="made for camera 'top', not 'side'"):
        LineCalibration.load(full, camera_name="side")


@pytest.mark.parametrize(
    "drop, words",
    [
        ("encoder", r"has no encoder calibration; run 'scallop calibrate encoder --calib .*line.json"),
        ("belt", r"has no belt calibration; run 'scallop calibrate belt --calib"),
        ("arms", r"has no robot arm calibration; run 'scallop calibrate robot"),
        ("intrinsics", r"has no intrinsics calibration; run 'scallop calibrate intrinsics"),
    ],
)
def test_missing_part_is_refused(full, drop, words):
    data = json.loads(full.read_text())
    del data[drop]
    full.write_text(json.dumps(data))
    with pytest.raises(MissingPartError, match=words):
        LineCalibration.load(full)
    LineCalibration.load(full, require=())  # the steps themselves can still read it


def test_missing_arm_names_the_calibrated_ones(full):
    with pytest.raises(MissingPartError, match=r"no calibration for arm 'right' \(calibrated arms: left\)"):
        LineCalibration.load(full, arms=("right",))
    cal = LineCalibration.load(full)
    with pytest.raises(MissingPartError, match="arm 'right'"):
        cal.belt_to_robot("right", [[0.0, 0.0]])


@pytest.mark.parametrize(
    "version, words",
    [
        (2, "format version 2 is newer than this program reads \\(it reads version 1\\): update scallop"),
        (0, "format version 0 is not one this program reads"),
        ("1", "format version '1' is not a number"),
    ],
)
def test_unknown_format_version_is_refused(full, version, words):
    data = json.loads(full.read_text())
    data["version"] = version
    full.write_text(json.dumps(data))
    with pytest.raises(FormatVersionError, match=words):
        LineCalibration.load(full)


def test_damaged_or_foreign_files_are_refused(tmp_path, full):
    with pytest.raises(
        CalibrationFileError, match="no such calibration file; create it with 'scallop calibrate intrinsics"
    ):
        LineCalibration.load(tmp_path / "none.json")
    with pytest.raises(CalibrationFileError, match="is a folder, not a calibration file"):
        LineCalibration.load(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "scallop-line-calibration", "version": 1,')
    with pytest.raises(CalibrationFileError, match=r"not valid JSON \(line 1"):
        LineCalibration.load(bad)
    bad.write_text('{"hello": 1}')
    with pytest.raises(CalibrationFileError, match="not a scallop line calibration file"):
        LineCalibration.load(bad)
    bad.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(CalibrationFileError, match="not a text file"):
        LineCalibration.load(bad)
    data = json.loads(full.read_text())
    data["intrinsics"]["K"] = [[1, 0], [0, 1]]
    bad.write_text(json.dumps(data))
    with pytest.raises(CalibrationFileError, match=r"intrinsics.K has shape \(2, 2\), expected \(3, 3\)"):
        LineCalibration.load(bad)
    data = json.loads(full.read_text())
    data["arms"]["left"]["robot_from_belt"][0][0] = 2.0
    bad.write_text(json.dumps(data))
    with pytest.raises(CalibrationFileError, match="arms.left.robot_from_belt is not a 4x4 rigid transform"):
        LineCalibration.load(bad)
    assert issubclass(CalibrationFileError, CalibrationError)


def test_redone_intrinsics_make_the_belt_stale(full):
    cal = LineCalibration.load(full)
    K2 = CAM.K.copy()
    K2[0, 0] += 3.0
    cal.set_intrinsics(intrinsics_section(K2))
    cal.save()
    assert "belt" in cal.stale_parts()
    with pytest.raises(
        StalePartError, match="belt pose was measured with earlier intrinsics; rerun 'scallop calibrate belt"
    ):
        LineCalibration.load(full)
    cal.set_belt(belt_section())
    cal.save()
    # The belt is current again; now the encoder and the arm hang on the old belt pose.
    with pytest.raises(StalePartError, match="earlier belt pose"):
        LineCalibration.load(full)
    assert set(cal.stale_parts()) == {"encoder", "arm left"}


def test_new_resolution_drops_the_parts_measured_through_the_old_one(full):
    cal = LineCalibration.load(full)
    K = CAM.K / 2
    K[2, 2] = 1.0
    cal.set_intrinsics(intrinsics_section(K, size=(640, 360)))
    assert cal.image_size == (640, 360)
    assert not cal.has("belt") and not cal.has("encoder") and not cal.has("arms")


def test_aligning_to_the_travel_keeps_every_physical_mapping(tmp_path):
    """The encoder turns the belt frame about the board origin; arm transforms follow, so a
    pixel still maps to the same robot position."""
    cal = LineCalibration.new((1280, 720), "top")
    cal.set_intrinsics(intrinsics_section())
    sec = belt_section()
    sec["placement"]["origin_mm"] = [-80.0, 40.0]
    cal.set_belt(sec)
    cal.set_arm("left", arm_section())
    px = np.array([[100.0, 100.0], [900.0, 600.0]])
    robot_before = cal.belt_to_robot("left", cal.pixel_to_belt(px))
    ang = np.radians(1.2)
    turned = cal.set_encoder(encoder_section((np.cos(ang), np.sin(ang))))
    assert turned == pytest.approx(1.2)
    cal.save(tmp_path / "a.json")
    cal = LineCalibration.load(tmp_path / "a.json")
    np.testing.assert_allclose(cal.belt_to_robot("left", cal.pixel_to_belt(px)), robot_before, atol=1e-9)
    np.testing.assert_allclose(cal.travel_dir, [1.0, 0.0])
    # The board origin keeps its coordinates; a step along the old travel direction is now along +x.
    o = CAM.project_belt([[-80.0, 40.0], [-80.0 + 100 * np.cos(ang), 40.0 + 100 * np.sin(ang)]])
    np.testing.assert_allclose(cal.pixel_to_belt(o), [[-80.0, 40.0], [20.0, 40.0]], atol=1e-6)


def test_load_calibration_needs_only_the_mapping_parts(full):
    data = json.loads(full.read_text())
    del data["encoder"], data["arms"]
    full.write_text(json.dumps(data))
    cal = load_calibration(full, image_size=(1280, 720))
    assert cal.pixel_to_belt([[640.0, 360.0]]).shape == (1, 2)
    with pytest.raises(MissingPartError):
        load_calibration(full, require=("intrinsics", "belt", "encoder"))


def test_steps_in_the_wrong_order_are_refused():
    cal = LineCalibration.new((1280, 720))
    with pytest.raises(MissingPartError, match="no intrinsics yet"):
        cal.set_belt(belt_section())
    cal.set_intrinsics(intrinsics_section())
    with pytest.raises(MissingPartError, match="no belt calibration yet"):
        cal.set_arm("left", arm_section())
    with pytest.raises(MissingPartError, match="no belt calibration yet"):
        cal.set_encoder(encoder_section())
    cal.set_belt(belt_section())
    with pytest.raises(CalibrationFileError, match="arm name 'a b'"):
        cal.set_arm("a b", arm_section())
    data = copy.deepcopy(cal.data)
    assert LineCalibration.from_dict(data).has("belt")
