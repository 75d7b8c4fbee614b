"""The fluorescence channel through the data loop: a line reading it captures each frame with
its registered fluorescence frame (x.uv.png), the export pre-annotates with the model that reads
it, the import carries the companions into a version-2 data set, and `scallop eval` scores the
four-channel model on the COCO file and the data set alike."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from scallop.app.cli import main
from scallop.app.labels import CocoError, CocoWriter, import_coco
from scallop.imagefiles import companion_of
from scallop.models.dataset import load_dataset
from scallop.models.runtime import default_uv_model_path
from tests.test_sim_fluorescence import ALTERNATE

LINE_CHANNEL = {
    "sim": {"fluorescence": ALTERNATE},
    "camera": {"fluorescence": {"setup": "alternate", "max_pair_ms": 25.0, "alarm_after": 4}},
    "capture": {"routine_share": 0.5},
}


def cli_json(capsys, *argv) -> dict:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 0, out + err
    return json.loads(out.strip().splitlines()[-1])


def test_capture_export_import_eval_carry_the_channel(tmp_path, capsys):
    from tests.helpers import capture_with_truth

    # A line reading the channel (the four-channel model, the simulator's alternate frames).
    cap, truths = capture_with_truth(tmp_path / "run", overrides=LINE_CHANNEL)
    (session,) = (tmp_path / "run" / "captures").glob("capture-*")
    jpgs = sorted((session / "frames").glob("*.jpg"))
    assert cap["kept"] == len(jpgs) >= 6
    # Every kept frame was analysed with its pair (the first frame, without one, is never analysed).
    for p in jpgs:
        uv = cv2.imread(str(companion_of(p)), cv2.IMREAD_UNCHANGED)
        assert uv.dtype == np.uint8 and uv.shape == cv2.imread(str(p)).shape[:2]
        assert json.loads(p.with_suffix(".json").read_text())["fluorescence"] is True

    # Export: pre-annotated by the shipped model that reads the channel.
    coco = tmp_path / "to-label" / "coco.json"
    out = cli_json(capsys, "labels", "export", session, "--out", coco)
    assert out["images"] == len(jpgs) and out["model"] == str(default_uv_model_path())
    doc = json.loads(coco.read_text())
    assert all(im["scallop"]["fluorescence"] is True for im in doc["images"])
    # An --out that cannot be written is refused before the frames go through the model.
    assert main(["labels", "export", str(session), "--out", str(coco.parent)]) == 3
    assert f"{coco.parent}: cannot write the COCO file: it is a folder" in capsys.readouterr().err
    # A companion broken since the capture (a folder in its place) is refused, not exported as colour.
    uv0 = companion_of(jpgs[0])
    uv0.rename(uv0.with_name("aside.png"))
    uv0.mkdir()
    assert main(["labels", "export", str(session), "--out", str(tmp_path / "other.json")]) == 3
    assert f"{uv0}: the fluorescence frame of" in capsys.readouterr().err
    uv0.rmdir()
    uv0.with_name("aside.png").rename(uv0)

    # The labeller's corrections (the simulator's truth); the companions stay beside the frames.
    labelled = CocoWriter("labelled")
    for im in doc["images"]:
        parts, inst, facts = truths[im["scallop"]["frame_index"]]
        iid = labelled.add_image("../to-label/" + im["file_name"], parts.shape[1], parts.shape[0], im["mm_per_px"])
        labelled.add_truth(iid, parts, inst, facts)
    labelled.write(tmp_path / "labelled" / "coco.json")

    ds = tmp_path / "line-set"
    summary = cli_json(capsys, "labels", "import", tmp_path / "labelled" / "coco.json", "--out", ds)
    manifest = json.loads((ds / "dataset.json").read_text())
    assert (manifest["version"], manifest["channels"]) == (2, ["bgr", "uv"])
    samples = list(load_dataset(ds))
    assert len(samples) == summary["images"] == len(jpgs)
    assert all(s.uv is not None and s.uv.shape == s.image.shape[:2] for s in samples)
    first = next(p for p in jpgs if p.stem == samples[0].name)
    assert np.array_equal(samples[0].uv, cv2.imread(str(companion_of(first)), cv2.IMREAD_UNCHANGED))

    # Eval with the four-channel model: the data set and the COCO file give the same figures.
    uvm = default_uv_model_path()
    ev = cli_json(capsys, "eval", ds, "--model", uvm, "--json", "--report", tmp_path / "e1.html")
    ev_coco = cli_json(
        capsys, "eval", tmp_path / "labelled" / "coco.json", "--model", uvm, "--json", "--report", tmp_path / "e2.html"
    )
    assert ev["scallops"] >= 10 and ev["recall"] >= 0.9 and ev["uro_success"] >= 0.85
    assert {k: ev_coco[k] for k in ("recall", "uro_success", "counts")} == {
        k: ev[k] for k in ("recall", "uro_success", "counts")
    }
    # Without --model, as scallop detect and the line: a set with the channel gets the model
    # that reads it, for the data set and the COCO file alike.
    for source in (ds, tmp_path / "labelled" / "coco.json"):
        auto = cli_json(capsys, "eval", source, "--json", "--report", tmp_path / "e3.html")
        assert auto["model"] == str(uvm) and auto["counts"] == ev["counts"]


def _tiny_coco(tmp_path, companions: list[bool], uv_shape=None, marked=None) -> str:
    """A COCO file of len(companions) 40×30 frames, each with one labelled scallop; a
    fluorescence frame beside those marked True (of ``uv_shape`` when given); ``marked``: the
    export's per-image mark that a fluorescence frame was kept with it."""
    w = CocoWriter("tiny")
    (tmp_path / "img").mkdir()
    for k, with_uv in enumerate(companions):
        img = np.full((30, 40, 3), 120, np.uint8)
        cv2.imwrite(str(tmp_path / "img" / f"f{k}.png"), img)
        if with_uv:
            cv2.imwrite(str(tmp_path / "img" / f"f{k}.uv.png"), np.full(uv_shape or (30, 40), 9, np.uint8))
        parts = np.zeros((30, 40), np.uint8)
        parts[5:25, 5:30] = 1
        inst = (parts > 0).astype(np.uint8)
        extra = {} if marked is None else {"scallop": {"fluorescence": marked[k]}}
        iid = w.add_image(f"../img/f{k}.png", 40, 30, 0.5, **extra)
        w.add_truth(iid, parts, inst, [{"id": 1, "uro_present": False}])
    path = tmp_path / "coco" / "c.json"
    w.write(path)
    return str(path)


def test_a_colour_only_import_stays_version_1(tmp_path):
    import_coco(_tiny_coco(tmp_path, [False, False]), tmp_path / "ds")
    m = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert m["version"] == 1 and "channels" not in m
    assert not list((tmp_path / "ds" / "images").glob("*.uv.png"))


def test_an_import_where_only_some_frames_have_the_channel_is_refused_naming_them(tmp_path):
    coco = _tiny_coco(tmp_path, [True, False, False])
    with pytest.raises(CocoError, match=r"1 of 3 images have a fluorescence frame .* 2 do not \('../img/f1.png'"):
        import_coco(coco, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()
    # The labeller's way out: the colour images alone (a capture whose pairs were sometimes dropped).
    import_coco(coco, tmp_path / "ds", colour_only=True)
    m = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert m["version"] == 1 and not list((tmp_path / "ds" / "images").glob("*.uv.png"))


def test_fluorescence_frames_a_labelling_tool_left_behind_are_named(tmp_path):
    """The export marks the frames kept with their fluorescence frame; a tool that re-exported
    the images elsewhere leaves the x.uv.png files behind: refused, not a silent colour set."""
    coco = _tiny_coco(tmp_path, [False, False], marked=[True, False])
    with pytest.raises(CocoError, match=r"1 image\(s\) were kept with their fluorescence frame .*'../img/f0.png'"):
        import_coco(coco, tmp_path / "ds")
    import_coco(coco, tmp_path / "ds", colour_only=True)
    assert json.loads((tmp_path / "ds" / "dataset.json").read_text())["version"] == 1


def test_a_companion_listed_as_an_image_of_its_own_is_refused(tmp_path):
    """A labelling tool given a whole capture folder lists the x.uv.png files too: refused,
    never imported or scored as colour frames."""
    coco = json.loads(open(_tiny_coco(tmp_path, [True])).read())
    coco["images"].append(dict(coco["images"][0], id=99, file_name="../img/f0.uv.png"))
    path = tmp_path / "coco" / "with-uv.json"
    path.write_text(json.dumps(coco))
    for colour_only in (False, True):
        with pytest.raises(CocoError, match=r"image '../img/f0.uv.png' is a fluorescence companion .*not a frame"):
            import_coco(path, tmp_path / "ds", colour_only=colour_only)
    assert not (tmp_path / "ds").exists()


def test_a_companion_of_the_wrong_size_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(CocoError, match=r"f0.png'.*fluorescence image is 20x10 but its colour frame is 40x30"):
        import_coco(_tiny_coco(tmp_path, [True], uv_shape=(10, 20)), tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_a_model_that_reads_the_channel_is_refused_on_a_line_without_it(tmp_path):
    """As the live model at the start (channel.py), as the shadow candidate at the start, and
    when a registry shared with other lines makes it live: the line keeps its model, alarmed."""
    from scallop.app.registry import Registry
    from scallop.errors import ConfigError
    from scallop.sim.dataset import DatasetSettings, write_dataset
    from tests.helpers import make_line

    uvm = str(default_uv_model_path())
    with pytest.raises(ConfigError, match="vision.shadow_model=.*reads the fluorescence channel, which this line"):
        make_line(tmp_path / "a", overrides={"vision": {"shadow_model": uvm}})

    reg = Registry(tmp_path / "reg")
    line = make_line(tmp_path / "b", overrides={"models": {"registry": str(tmp_path / "reg")}})
    try:
        before = dict(line.models.model)
        ref = tmp_path / "ref"
        write_dataset(ref, 3, seed=5, settings=DatasetSettings(mm_per_px=(0.5, 0.5), fluorescence=True))
        reg.add(uvm, name="uv")
        reg.promote("uv", str(ref))  # judged on frame pairs, where it is at home
        assert not line.models.poll()
        a = line.alarms.get("vision.model")
        assert a.active and "model uv was made live but cannot be used (it reads the fluorescence channel" in a.text
        assert line.models.model == before and line.pipeline.takes_uv is False
    finally:
        line.close()
