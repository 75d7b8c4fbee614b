"""What an outside try of the fluorescence files found: a companion in capitals, a JPEG or a
cut-short PNG under a companion's name, a dangling link, a data set's manifest and channels as
``scallop detect`` reads them, and the refusals of eval, sim run and calibrate fluorescence
that came too late or named the wrong thing."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from scallop.app.cli import main
from scallop.imagefiles import companion_of
from scallop.models.runtime import default_model_path, default_uv_model_path
from scallop.sim.dataset import DatasetSettings, write_dataset


@pytest.fixture(scope="module")
def uv_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("uvset") / "set"
    st = DatasetSettings(resolutions=[(640, 480)], scallops=(2, 3), mm_per_px=(0.5, 0.5), fluorescence=True)
    write_dataset(root, 2, seed=11, settings=st, workers=1)
    return root


def _pair(uv_set, dst, uv_name="x.uv.png"):
    """The set's first frame and its companion copied to ``dst`` as x.png + ``uv_name``."""
    dst.mkdir(exist_ok=True)
    img = sorted(p for p in (uv_set / "images").iterdir() if not p.name.endswith(".uv.png"))[0]
    shutil.copy(img, dst / f"x{img.suffix}")
    shutil.copy(img.with_name(img.stem + ".uv.png"), dst / uv_name)
    return dst / f"x{img.suffix}"


def test_a_companion_named_in_capitals_is_the_frames_companion(uv_set, tmp_path, capsys):
    frame = _pair(uv_set, tmp_path / "caps", "x.UV.PNG")
    # (On a case-insensitive disk the lower-case name finds the same file.)
    assert companion_of(frame).name.lower() == "x.uv.png"
    # Given beside its frame, as a glob brings it: skipped as a frame, used as the channel.
    assert main(["detect", "--mm-per-px", "0.5", "--json", str(frame), str(tmp_path / "caps" / "x.UV.PNG")]) == 0
    recs = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert [r["channels"] for r in recs] == [["bgr", "uv"]]


@pytest.mark.parametrize(
    "content, said",
    [
        ("jpeg", "not a PNG file (it holds JPEG data): a fluorescence frame is stored lossless as PNG"),
        ("cut", "PNG file cut short (no end marker)"),
    ],
)
def test_a_companion_that_is_no_whole_png_is_refused_in_one_line(uv_set, tmp_path, capfd, content, said):
    frame = _pair(uv_set, tmp_path / "bad")
    uv = tmp_path / "bad" / "x.uv.png"
    if content == "jpeg":
        grey = cv2.imread(str(uv), cv2.IMREAD_UNCHANGED)
        uv.write_bytes(cv2.imencode(".jpg", grey)[1].tobytes())
    else:
        uv.write_bytes(uv.read_bytes()[:-400])
    assert main(["detect", "--mm-per-px", "0.5", str(frame)]) == 1
    err = capfd.readouterr().err  # the process's stderr: libpng's own complaints would land here
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"scallop detect: error: {uv}: {said}")
    assert "libpng" not in err and "Traceback" not in err


def test_a_companion_in_mixed_case_is_found_too(uv_set, tmp_path):
    frame = _pair(uv_set, tmp_path / "mixed", "x.Uv.pNg")
    assert companion_of(frame) is not None and companion_of(frame).name.lower() == "x.uv.png"


def test_a_frame_never_takes_the_companion_of_a_name_in_other_letter_case(uv_set, tmp_path, capsys):
    """``a.jpg`` beside ``A.jpg`` + ``A.uv.png``: A's fluorescence is not a's (an outside try saw
    a.jpg analysed with it, silently); the stem is matched letter for letter, the suffix in any case."""
    frame = _pair(uv_set, tmp_path / "aA")
    big = frame.with_name("A" + frame.suffix)
    frame.rename(big)
    (tmp_path / "aA" / "x.uv.png").rename(tmp_path / "aA" / "A.uv.png")
    small = big.with_name("a" + big.suffix)
    shutil.copy(big, small)
    assert companion_of(small) is None and companion_of(big).name == "A.uv.png"
    assert main(["detect", "--mm-per-px", "0.5", "--json", str(big), str(small)]) == 0
    recs = {r["image"].rsplit("/", 1)[-1]: r["channels"] for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert recs == {big.name: ["bgr", "uv"], small.name: ["bgr"]}


def test_a_frame_with_its_suffix_in_mixed_case_keeps_its_companion_quietly(uv_set, tmp_path, capsys):
    frame = _pair(uv_set, tmp_path / "Jpg")
    odd = frame.with_name("x" + frame.suffix[:2] + frame.suffix[2:].upper())  # x.pNG / x.jPG
    frame.rename(odd)
    uv = tmp_path / "Jpg" / "x.uv.png"
    # Given beside its frame (a glob brings both): the frame analysed with it, the companion skipped.
    assert main(["detect", "--mm-per-px", "0.5", "--json", str(odd), str(uv)]) == 0
    out = capsys.readouterr()
    assert [json.loads(ln)["channels"] for ln in out.out.splitlines()] == [["bgr", "uv"]]
    assert "error" not in out.err


def test_a_png_with_bytes_after_its_end_is_whole_and_one_cut_in_its_last_bytes_is_not(tmp_path, capfd):
    from scallop.vision.camera import CorruptFrameError, read_image

    img = np.full((40, 60, 3), 90, np.uint8)
    whole = cv2.imencode(".png", img)[1].tobytes()
    (tmp_path / "trailer.png").write_bytes(whole + b"\0" * 70000)  # a copy tool's padding
    assert read_image(tmp_path / "trailer.png").shape == (40, 60, 3)
    (tmp_path / "cut.png").write_bytes(whole[:-2])  # the end marker's checksum cut off
    with pytest.raises(CorruptFrameError, match="PNG file cut short"):
        read_image(tmp_path / "cut.png")
    assert "libpng" not in capfd.readouterr().err


def test_a_link_to_something_that_is_no_file_is_called_that(tmp_path):
    from scallop.vision.camera import CameraNotFoundError, read_image

    (tmp_path / "dev.png").symlink_to("/dev/null")
    with pytest.raises(CameraNotFoundError, match="not a regular file"):
        read_image(tmp_path / "dev.png")


def test_a_dangling_link_as_companion_is_called_that(uv_set, tmp_path, capsys):
    frame = _pair(uv_set, tmp_path / "link")
    uv = tmp_path / "link" / "x.uv.png"
    uv.unlink()
    uv.symlink_to(tmp_path / "gone.png")
    assert main(["detect", "--mm-per-px", "0.5", str(frame)]) == 1
    err = capsys.readouterr().err
    assert f"is a link to {tmp_path / 'gone.png'}, which is not there: the pair cannot be analysed" in err


def _copy_set(uv_set, dst, **manifest):
    shutil.copytree(uv_set, dst)
    m = json.loads((dst / "dataset.json").read_text())
    for k, v in manifest.items():
        if v is None:
            m.pop(k, None)
        else:
            m[k] = v
    (dst / "dataset.json").write_text(json.dumps(m))
    return sorted(p for p in (dst / "images").iterdir() if not p.name.endswith(".uv.png"))


@pytest.mark.parametrize(
    "manifest, said",
    [
        ({"version": 3}, "version 3 is unknown (this software reads versions 1 and 2)"),
        ({"version": None}, '"version" is missing (this software reads versions 1 and 2)'),
        ({"format": "something-else"}, "format is 'something-else'"),
    ],
)
def test_detect_refuses_a_data_set_manifest_that_eval_refuses(uv_set, tmp_path, capsys, manifest, said):
    images = _copy_set(uv_set, tmp_path / "set", **manifest)
    assert main(["detect", str(images[0])]) == 3
    assert f"{tmp_path / 'set' / 'dataset.json'}: {said}" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "set"), "--report", str(tmp_path / "r.html")]) == 3
    assert said in capsys.readouterr().err


def test_detect_follows_the_data_sets_channels(uv_set, tmp_path, capsys):
    # Version 1: colour only, a x.uv.png lying there is left alone (eval does the same).
    images = _copy_set(uv_set, tmp_path / "v1", version=1, channels=None)
    assert main(["detect", "--json", str(images[0])]) == 0
    assert json.loads(capsys.readouterr().out)["channels"] == ["bgr"]
    # ... and a four-channel model asked for by name says why it cannot run there.
    assert main(["detect", "--model", str(default_uv_model_path()), str(images[0])]) == 1
    assert "its data set is colour only" in capsys.readouterr().err
    # Version 2 with the channel: the companion is used; without it the image is an error.
    images = _copy_set(uv_set, tmp_path / "v2", version=2)
    assert main(["detect", "--json", str(images[0])]) == 0
    assert json.loads(capsys.readouterr().out)["channels"] == ["bgr", "uv"]
    images[0].with_name(images[0].stem + ".uv.png").unlink()
    assert main(["detect", str(images[0])]) == 1
    err = capsys.readouterr().err
    assert "is missing (its data set" in err and "carries the channel" in err


def test_an_image_named_from_inside_its_sets_images_folder_is_still_in_the_set(uv_set, tmp_path, capsys, monkeypatch):
    images = _copy_set(uv_set, tmp_path / "v1", version=1, channels=None)
    monkeypatch.chdir(images[0].parent)
    assert main(["detect", "--json", images[0].name]) == 0  # the set's scale, no --mm-per-px
    assert json.loads(capsys.readouterr().out)["channels"] == ["bgr"]


def test_detect_names_a_folder_and_a_missing_file_before_asking_for_a_scale(tmp_path, capsys):
    (tmp_path / "pairs").mkdir()
    assert main(["detect", str(tmp_path / "pairs"), str(tmp_path / "nothere.jpg")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"scallop detect: error: {tmp_path / 'pairs'}: a folder, not an image file: name the image files in it",
        f"scallop detect: error: {tmp_path / 'nothere.jpg'}: no such image file",
    ]


def test_eval_of_a_four_channel_model_on_a_colour_only_set_names_the_set(uv_set, tmp_path, capsys):
    _copy_set(uv_set, tmp_path / "v1", version=1, channels=None)
    rc = main(
        ["eval", str(tmp_path / "v1"), "--model", str(default_uv_model_path()), "--report", str(tmp_path / "r.html")]
    )
    assert rc == 3
    err = capsys.readouterr().err
    assert f"{tmp_path / 'v1'}: the set has no fluorescence channel" in err and "detect()" not in err


def test_the_fluorescence_scenario_refuses_a_colour_only_model(capsys):
    rc = main(["sim", "run", "--scenario", "fluorescence", "--model", str(default_model_path()), "--duration", "1"])
    assert rc == 2
    assert "reads colour only: this scenario compares" in capsys.readouterr().err
    # The same model named in the scenario's own [line.vision] is refused too.
    from scallop.app.scenario import load_scenario, run_scenario
    from scallop.app.scenario.spec import ScenarioError

    sc = load_scenario("fluorescence")
    sc.line.setdefault("vision", {})["model"] = str(default_model_path())
    with pytest.raises(ScenarioError, match="line.vision.model = .* reads colour only"):
        run_scenario(sc, duration_s=1.0)


def test_eval_of_a_set_that_is_not_there_says_so_whatever_the_model(tmp_path, capsys):
    rc = main(
        [
            "eval",
            str(tmp_path / "nothere"),
            "--model",
            str(default_uv_model_path()),
            "--report",
            str(tmp_path / "r.html"),
        ]
    )
    assert rc == 3 and "no such labelled set" in capsys.readouterr().err


def test_calibrate_fluorescence_checks_the_thickness_before_the_photos(tmp_path, capsys):
    rc = main(
        [
            "calibrate",
            "fluorescence",
            "--calib",
            str(tmp_path / "none.json"),
            "--board",
            "charuco:8x6:25:18:DICT_5X5_100",
            "--thickness-mm",
            "nan",
            "--colour",
            str(tmp_path / "c.png"),
            "--fluorescence",
            str(tmp_path / "f.png"),
        ]
    )
    assert rc == 2
    assert "--thickness-mm" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("mode", "said"),
    [("LA", "8-bit grey with an alpha channel"), ("1", "1-bit grey"), ("P", r"\d-bit palette colour")],
)
def test_a_companion_that_is_no_8_bit_grey_png_is_named_for_what_it_holds(tmp_path, mode, said):
    """Grey with alpha was called "4 channel(s)" (OpenCV's reading of it), and a 1-bit PNG was
    taken: a fluorescence frame is one channel of 8-bit grey levels (the spec's "Files")."""
    from PIL import Image

    from scallop.vision.camera import CorruptFrameError, read_fluorescence

    p = tmp_path / "x.uv.png"
    Image.new(mode, (40, 30)).save(p)
    with pytest.raises(CorruptFrameError, match=f"this PNG holds {said} data: save it as 8-bit greyscale"):
        read_fluorescence(p, (30, 40))
    Image.new("L", (40, 30), 7).save(p)
    assert read_fluorescence(p, (30, 40)).max() == 7


@pytest.mark.parametrize("which", ["frame", "companion"])
def test_a_file_there_but_unreadable_is_that_images_error_and_the_others_are_analysed(
    uv_set, tmp_path, capsys, monkeypatch, which
):
    """No permission to read it (an outside try as a user without root's override): that image's
    error, named, exit 1 after the others, as the help says; it stopped the whole run before."""
    frame = _pair(uv_set, tmp_path / "perm")
    other = sorted(p for p in (uv_set / "images").iterdir() if not p.name.endswith(".uv.png"))[1]
    shutil.copy(other, tmp_path / "perm" / f"y{other.suffix}")
    locked = frame if which == "frame" else tmp_path / "perm" / "x.uv.png"
    real = np.fromfile

    def fromfile(path, *a, **k):
        if str(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(np, "fromfile", fromfile)
    y = tmp_path / "perm" / f"y{other.suffix}"
    assert main(["detect", "--mm-per-px", "0.5", "--jobs", "1", "--json", str(frame), str(y)]) == 1
    out = capsys.readouterr()
    assert [json.loads(ln)["image"] for ln in out.out.splitlines()] == [str(y)]
    assert out.err.strip() == f"scallop detect: error: {locked}: cannot be read (Permission denied)"


def test_a_fluorescence_frame_without_its_image_in_a_set_with_the_channel_is_refused(uv_set, tmp_path, capsys):
    root = tmp_path / "stray"
    shutil.copytree(uv_set, root)
    shutil.copy(next((root / "images").glob("*.uv.png")), root / "images" / "orphan.uv.png")
    assert main(["eval", str(root)]) == 3
    err = capsys.readouterr().err
    assert f"{root / 'images' / 'orphan.uv.png'}: a fluorescence frame without its image (images/orphan.*)" in err


def test_a_folder_given_as_the_model_is_called_a_folder(uv_set, tmp_path, capsys):
    frame = _pair(uv_set, tmp_path / "m")
    assert main(["detect", "--mm-per-px", "0.5", "--model", str(tmp_path / "m"), str(frame)]) == 3
    assert "a folder, not a model file: give the .onnx file" in capsys.readouterr().err


def test_bench_accuracy_renders_the_channel_for_a_four_channel_model(tmp_path, capsys):
    out = tmp_path / "acc.json"
    assert main(["bench", "accuracy", "--frames", "2", "--model", str(default_uv_model_path()), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["frames"] == 2
