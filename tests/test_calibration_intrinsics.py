"""Camera intrinsics: real photos against plain OpenCV, simulator views against the truth,
and every way a photo can be rejected."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from scallop.calibration.errors import BoardNotFoundError, CalibrationError, ImageError
from scallop.calibration.intrinsics import (
    REASON_BLURRED,
    REASON_NOT_FOUND,
    REASON_OUTLIER,
    REASON_RESOLUTION,
    REASON_UNREADABLE,
    calibrate_intrinsics,
    coverage_image,
    read_views,
)
from scallop.sim.boards import intrinsics_views
from scallop.sim.config import SimCameraConfig
from scallop.sim.world import camera_model_from_config

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "calib-real-640x512"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real calibration photos not present at {REAL}")

# The simulator's camera with a real lens's barrel distortion, slightly tilted and turned.
SIM_CAMERA = SimCameraConfig(distortion=(-0.08, 0.03, 0.0, 0.0, 0.0), tilt_deg=5.0, yaw_deg=2.0)


@pytest.fixture(scope="module")
def real_views():
    return read_views([REAL])


@pytest.fixture(scope="module")
def real_result(real_views):
    return calibrate_intrinsics(real_views, "chessboard:9x6:25")


@pytest.fixture(scope="module")
def plain_opencv(real_views):
    """The README's reference procedure, run here on the same photos."""
    objp = np.zeros((54, 3), np.float32)
    objp[:, :2] = np.mgrid[0:9, 0:6].T.reshape(-1, 2)
    obj, img = [], []
    for _, im in real_views:
        g = cv2.cvtColor(im, cv2.COLOR_BGR2GRAY)
        ok, c = cv2.findChessboardCorners(g, (9, 6))
        assert ok
        c = cv2.cornerSubPix(
            g, c.reshape(-1, 1, 2), (11, 11), (-1, -1), (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 0.001)
        )
        obj.append(objp)
        img.append(c.reshape(-1, 1, 2).astype(np.float32))
    rms, K, _dist, _, _ = cv2.calibrateCamera(obj, img, (640, 512), None, None)
    return rms, K


# ------------------------------------------------------------------ real photos
@needs_real
def test_real_photos_match_plain_opencv(real_result, plain_opencv):
    r = real_result
    _rms_ref, K_ref = plain_opencv
    assert r.image_size == (640, 512)
    assert len(r.views) == 25 and r.rejected == []
    assert r.rms_px <= 0.2
    assert abs(r.fx / K_ref[0, 0] - 1) < 0.01
    assert abs(r.fy / K_ref[1, 1] - 1) < 0.01
    assert abs(r.cx - K_ref[0, 2]) < 2.0
    assert abs(r.cy - K_ref[1, 2]) < 2.0
    # …and the README's published figures.
    assert abs(r.fx / 519.5 - 1) < 0.01 and abs(r.fy / 519.5 - 1) < 0.01
    assert abs(r.cx - 316) < 2.0 and abs(r.cy - 250) < 2.0
    assert r.verdict == "good"


@needs_real
def test_real_photos_report_std_per_view_and_coverage(real_result):
    r = real_result
    assert set(r.std) >= {"fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3"}
    assert 0 < r.std["fx"] < 3.0 and 0 < r.std["cx"] < 3.0
    assert len(r.views) == 25
    per_view = np.array([v.rms_px for v in r.views])
    assert np.all(per_view > 0) and per_view.max() < 0.3
    # The overall RMS is the corner-weighted mean of the per-view errors (54 corners each).
    assert np.sqrt(np.mean(per_view**2)) == pytest.approx(r.rms_px, rel=1e-3)
    assert 0.5 < r.coverage < 1.0
    j = r.to_json()
    for key in ("rms_px", "fx", "fy", "cx", "cy", "dist", "image_size", "views_used", "views_rejected"):
        assert key in j
    assert j["image_size"] == [640, 512] and len(j["dist"]) == 5 and j["views_used"] == 25
    pic = coverage_image(r)
    assert pic.shape == (512, 640, 3) and pic.dtype == np.uint8


def _wavy(img: np.ndarray) -> np.ndarray:
    """A photo of a board that is not flat: its corners fit no pinhole view."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    mx = xx + 4 * np.sin(2 * np.pi * yy / 120)
    my = yy + 4 * np.sin(2 * np.pi * xx / 140)
    return cv2.remap(img, mx.astype(np.float32), my.astype(np.float32), cv2.INTER_LINEAR)


@needs_real
def test_each_rejection_reason(real_views):
    good = list(real_views[:12])
    base = real_views[0][1]
    views = good + [
        ("blurred.png", cv2.GaussianBlur(base, (0, 0), 2.0)),
        ("empty.png", np.full_like(base, 128)),
        ("wavy.png", _wavy(real_views[5][1])),
        ("broken.jpg", None),
        ("other_camera.png", cv2.resize(base, (800, 640))),
    ]
    r = calibrate_intrinsics(views, "chessboard:9x6:25", skip_bad=True)
    reasons = {x.image: x.reason for x in r.rejected}
    assert reasons == {
        "blurred.png": REASON_BLURRED,
        "empty.png": REASON_NOT_FOUND,
        "wavy.png": REASON_OUTLIER,
        "broken.jpg": REASON_UNREADABLE,
        "other_camera.png": REASON_RESOLUTION,
    }
    assert len(r.views) == 12
    detail = {x.image: x.detail for x in r.rejected}
    assert "edge width" in detail["blurred.png"] and "800x640" in detail["other_camera.png"]
    assert r.rms_px <= 0.2
    assert [d["reason"] for d in r.to_json()["views_rejected"]] == [x.reason for x in r.rejected]


@needs_real
def test_unreadable_or_mixed_photos_stop_without_skip_bad(real_views):
    base = real_views[0][1]
    with pytest.raises(ImageError, match=r"broken.jpg: not a readable image.*--skip-bad"):
        calibrate_intrinsics(list(real_views[:5]) + [("broken.jpg", None)], "chessboard:9x6:25")
    with pytest.raises(ImageError, match=r"mixed resolutions: 5 are 640x512, 1 are 800x640 \(e.g. big.png\)"):
        calibrate_intrinsics(list(real_views[:5]) + [("big.png", cv2.resize(base, (800, 640)))], "chessboard:9x6:25")


@needs_real
def test_wrong_board_spec_finds_nothing(real_views):
    with pytest.raises(BoardNotFoundError, match=r"no chessboard:10x7:25 found in any of the 4 photos.*inner corners"):
        calibrate_intrinsics(real_views[:4], "chessboard:10x7:25")


def test_no_board_anywhere_is_a_calibration_error():
    blank = [(f"b{i}.png", np.full((480, 640, 3), 100, np.uint8)) for i in range(3)]
    with pytest.raises(CalibrationError, match="no chessboard:9x6:25 found in any of the 3 photos"):
        calibrate_intrinsics(blank, "chessboard:9x6:25")


def test_corrupt_file_on_disk_is_named(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    views = read_views([tmp_path])
    assert views == [("a.png", None)]
    with pytest.raises(ImageError, match="a.png: not a readable image"):
        calibrate_intrinsics(views, "chessboard:9x6:25")
    with pytest.raises(ImageError, match="nope: no such file or folder"):
        read_views([tmp_path / "nope"])
    (tmp_path / "a.png").unlink()
    with pytest.raises(ImageError, match="folder holds no images"):
        read_views([tmp_path])


def _board_photos(folder, camera, n):
    """``n`` simulated photos of a 9x6 chessboard written as PNG files into ``folder``."""
    folder.mkdir(exist_ok=True)
    for name, img in intrinsics_views(camera, "chessboard:9x6:25", n, seed=1):
        cv2.imwrite(str(folder / name), img)
    return sorted(folder.glob("*.png"))


def test_photos_are_named_so_a_rejection_says_which_file(tmp_path, sim_camera):
    """By file name; by path where two folders hold the same name; control characters escaped
    (a rejection line printed with a newline in it read as two)."""
    for sub in ("left", "right"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "right" / "b\nc.png").write_bytes(b"")
    views = read_views([tmp_path / "left", tmp_path / "right"])
    assert views == [
        (str(tmp_path / "left" / "a.png"), None),
        (str(tmp_path / "right" / "a.png"), None),
        ("b\\nc.png", None),
    ]
    good = read_views([_board_photos(tmp_path / "good", sim_camera, 6)[0].parent])
    r = calibrate_intrinsics(views + good, "chessboard:9x6:25", skip_bad=True)
    assert [x.image for x in r.rejected[:3]] == [n for n, _ in views]


def test_an_unreadable_photo_is_rejected_with_its_readers_reason(tmp_path, capsys, sim_camera):
    """Every reader said why (a PNG's failed checksum, a cut, an empty file); calibration said
    only "cannot be decoded"."""
    from scallop.app.cli import main

    good = _board_photos(tmp_path, sim_camera, 8)
    png = bytearray(cv2.imencode(".png", np.full((40, 60, 3), 90, np.uint8))[1].tobytes())
    png[png.index(b"IDAT") + 8] ^= 0x20
    (tmp_path / "crc.png").write_bytes(bytes(png))
    (tmp_path / "empty.png").write_bytes(b"")
    jpg = cv2.imencode(".jpg", cv2.imread(str(good[0])))[1].tobytes()
    (tmp_path / "cut.jpg").write_bytes(jpg[: len(jpg) // 2])
    reasons: dict[str, str] = {}
    views = read_views([tmp_path], reasons)
    assert sorted(reasons) == ["crc.png", "cut.jpg", "empty.png"]
    assert reasons["crc.png"].startswith("PNG data damaged (chunk IDAT")
    assert reasons["empty.png"].startswith("empty file (0 bytes)") and reasons["cut.jpg"].startswith(
        "JPEG file cut short"
    )
    r = calibrate_intrinsics(views, "chessboard:9x6:25", skip_bad=True, reasons=reasons)
    assert {x.image: x.detail for x in r.rejected if x.reason == REASON_UNREADABLE} == reasons
    with pytest.raises(ImageError, match=r"crc.png: PNG data damaged \(chunk IDAT.*and 2 more; remove it"):
        calibrate_intrinsics(views, "chessboard:9x6:25", reasons=reasons)
    assert main(["calibrate", "intrinsics", "--board", "chessboard:9x6:25", "--skip-bad", str(tmp_path)]) in (
        0,
        1,
        2,
        3,
    )
    out = capsys.readouterr().out
    assert "rejected cut.jpg: unreadable image (JPEG file cut short" in out and "libpng" not in out


def test_a_photo_given_twice_is_one_view(tmp_path, sim_camera):
    photos = _board_photos(tmp_path, sim_camera, 4)
    views = read_views([tmp_path, photos[0], tmp_path / ".." / tmp_path.name / photos[0].name])
    assert len(views) == 4


# ------------------------------------------------------------------ simulator truth
@pytest.fixture(scope="module")
def sim_camera():
    return camera_model_from_config(SIM_CAMERA)


@pytest.mark.parametrize("board, n", [("chessboard:9x6:25", 15), ("charuco:7x5:30:22:DICT_5X5_100", 12)])
def test_sim_views_recover_true_focal_lengths(sim_camera, board, n):
    r = calibrate_intrinsics(intrinsics_views(sim_camera, board, n, seed=1), board)
    K = sim_camera.K
    assert abs(r.fx / K[0, 0] - 1) < 0.005
    assert abs(r.fy / K[1, 1] - 1) < 0.005
    assert abs(r.cx - K[0, 2]) < 2.0 and abs(r.cy - K[1, 2]) < 2.0
    assert r.dist[0] == pytest.approx(-0.08, abs=0.01)
    assert len(r.views) == n and r.rms_px < 0.2
    # The reported uncertainty is honest: the true focal length lies within 4 std devs.
    assert abs(r.fx - K[0, 0]) < 4 * r.std["fx"] + 0.5
