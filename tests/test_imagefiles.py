"""A frame's fluorescence companion (``x.uv.png``) is never a frame of its own, in every reader."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from scallop.app.cli import main
from scallop.calibration.intrinsics import ImageError, list_images
from scallop.imagefiles import companion_of, frame_files, frame_of, is_companion, is_frame
from scallop.models.dataset import list_names, load_dataset
from scallop.sim.dataset import DatasetSettings, write_dataset
from scallop.vision.camera import CameraNotFoundError, OpenCVCamera, OpenCVCameraConfig


def _png(path, grey: bool = False):
    img = np.full((48, 64) if grey else (48, 64, 3), 40, np.uint8)
    assert cv2.imwrite(str(path), img)


@pytest.fixture
def pair_folder(tmp_path):
    for name in ("a.jpg", "a.uv.png", "b.png", "b.uv.png", "c.PNG", "notes.txt"):
        if name.endswith(".txt"):
            (tmp_path / name).write_text("x")
        else:
            _png(tmp_path / name, grey="uv" in name)
    return tmp_path


def test_names():
    assert is_companion("x.uv.png") and is_companion("dir/X.UV.PNG")
    assert not is_companion("x.png") and not is_companion("uv.png") and not is_companion("x.uv.jpg")
    assert is_frame("x.jpg") and is_frame("x.PNG") and is_frame("x.uv.jpg")
    assert not is_frame("x.uv.png") and not is_frame("x.txt")


def test_frames_and_companions_find_each_other(pair_folder):
    assert [p.name for p in frame_files(pair_folder)] == ["a.jpg", "b.png", "c.PNG"]
    assert companion_of(pair_folder / "a.jpg") == pair_folder / "a.uv.png"
    assert companion_of(pair_folder / "c.PNG") is None
    assert frame_of(pair_folder / "b.uv.png") == pair_folder / "b.png"
    (pair_folder / "a.jpg").unlink()
    assert frame_of(pair_folder / "a.uv.png") is None


def test_image_folder_camera_plays_frames_only(pair_folder):
    cam = OpenCVCamera(OpenCVCameraConfig(source=str(pair_folder)))
    cam.connect()
    try:
        assert [p.name for p in cam._files] == ["a.jpg", "b.png", "c.PNG"]
    finally:
        cam.disconnect()


def test_a_folder_of_companions_only_says_so(tmp_path):
    _png(tmp_path / "a.uv.png", grey=True)
    with pytest.raises(CameraNotFoundError, match=r"fluorescence companions of frames, never frames"):
        OpenCVCamera(OpenCVCameraConfig(source=str(tmp_path))).connect()
    with pytest.raises(ImageError, match=r"fluorescence companions"):
        list_images([tmp_path])


def test_calibration_photos_leave_companions_out(pair_folder):
    assert [p.name for p in list_images([pair_folder])] == ["a.jpg", "b.png", "c.PNG"]


def test_data_set_readers_leave_companions_out(tmp_path):
    root = tmp_path / "set"
    write_dataset(root, 2, seed=5, settings=DatasetSettings(resolutions=[(640, 480)], scallops=(1, 2)))
    names = list_names(root)
    for name in names:
        _png(root / "images" / f"{name}.uv.png", grey=True)
    assert list_names(root) == names
    assert len(load_dataset(root)) == 2


def test_detect_skips_a_companion_given_beside_its_frame_and_refuses_one_alone(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    _png(src / "a.png")
    _png(src / "a.uv.png", grey=True)
    assert main(["detect", "--mm-per-px", "0.5", str(src / "a.png"), str(src / "a.uv.png")]) == 0
    out = capsys.readouterr().out
    assert "a.png:" in out and "a.uv.png" not in out
    shutil.copy(src / "a.uv.png", tmp_path / "lonely.uv.png")
    assert main(["detect", "--mm-per-px", "0.5", str(tmp_path / "lonely.uv.png")]) == 1
    err = capsys.readouterr().err
    assert "fluorescence companion" in err and "Traceback" not in err


def test_detect_over_a_folder_reports_an_orphan_companion_and_goes_on(tmp_path, capsys):
    """``scallop detect dir/*`` with an x.uv.png whose frame is gone: that file is reported, the
    other images are analysed, and the exit code is 1 at the end, as --help says."""
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.png", "b.png"):
        _png(src / name)
    _png(src / "a.uv.png", grey=True)
    _png(src / "x.uv.png", grey=True)  # its x.jpg was deleted
    given = [str(p) for p in sorted(src.iterdir())]
    assert main(["detect", "--mm-per-px", "0.5", *given]) == 1
    cap = capsys.readouterr()
    assert "a.png:" in cap.out and "b.png:" in cap.out and "x.uv.png" not in cap.out
    err = cap.err.strip().splitlines()
    assert err == [
        f"scallop detect: error: {src / 'x.uv.png'}: a fluorescence companion (*.uv.png), not a frame: "
        "give its colour frame (x.jpg or .png) instead"
    ]


def test_detect_reports_a_companion_that_is_a_folder(tmp_path, capsys):
    """An x.uv.png that is a folder is a pair that cannot be read, reported as such (it was
    silently taken for a lone frame); the other images go on and the exit code is 1."""
    src = tmp_path / "in"
    src.mkdir()
    _png(src / "a.png")
    (src / "a.uv.png").mkdir()
    _png(src / "b.png")
    given = [str(p) for p in sorted(src.iterdir())]  # the folder comes along with a glob
    assert main(["detect", "--mm-per-px", "0.5", *given]) == 1
    cap = capsys.readouterr()
    assert "b.png:" in cap.out and "a.png:" not in cap.out
    err = cap.err.strip().splitlines()
    assert err == [
        f"scallop detect: error: {src / 'a.uv.png'}: the fluorescence frame of {src / 'a.png'} is a folder: "
        "the pair cannot be analysed"
    ]


def test_detect_refuses_an_annotate_folder_that_is_a_file_before_reading_images(tmp_path, capsys):
    _png(tmp_path / "a.png")
    (tmp_path / "taken").write_text("")
    for given in ("taken", "taken/sub"):
        code = main(["detect", "--mm-per-px", "0.5", "--annotate", str(tmp_path / given), str(tmp_path / "a.png")])
        err = capsys.readouterr().err
        assert code == 3 and "cannot write the annotated images" in err and "internal error" not in err
        assert f"{tmp_path / 'taken'} is a file, not a folder" in err


def test_detect_counts_an_annotated_image_it_could_not_write(tmp_path, capsys):
    """An annotated image that cannot be written (here a folder stands where it goes) is an
    error with the system's reason, and the exit code says so; the other images are written."""
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png")
    out = tmp_path / "out"
    (out / "a_det.png").mkdir(parents=True)
    code = main(
        ["detect", "--mm-per-px", "0.5", "--annotate", str(out), str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    )
    assert code == 1
    assert f"{out / 'a_det.png'}: the annotated image could not be written: Is a directory" in capsys.readouterr().err
    assert (out / "b_det.png").is_file()


def test_detect_annotates_images_of_one_name_from_two_folders_without_overwriting(tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        _png(tmp_path / d / "x.png")
    out = tmp_path / "out"
    assert (
        main(
            [
                "detect",
                "--mm-per-px",
                "0.5",
                "--annotate",
                str(out),
                str(tmp_path / "a" / "x.png"),
                str(tmp_path / "b" / "x.png"),
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["x-2_det.png", "x_det.png"]


def test_an_empty_file_is_called_empty_not_corrupt(tmp_path):
    import pytest

    from scallop.vision.camera import CorruptFrameError, read_fluorescence, read_image

    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "a.uv.png").write_bytes(b"")
    with pytest.raises(CorruptFrameError, match=r"a.jpg: empty file \(0 bytes\)"):
        read_image(tmp_path / "a.jpg")
    with pytest.raises(CorruptFrameError, match=r"a.uv.png: empty file \(0 bytes\)"):
        read_fluorescence(tmp_path / "a.uv.png", (480, 640))
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(CorruptFrameError, match="corrupt or unsupported format"):
        read_image(tmp_path / "b.jpg")
