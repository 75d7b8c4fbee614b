"""COCO for labelling tools (scallop.app.labels): masks survive the round trip exactly, and every
malformed annotation is refused with a message naming the image and the annotation."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from scallop.app.cli import main
from scallop.app.labels import CocoError, CocoSet, CocoWriter, decode_segmentation, import_coco, mask_segmentation
from scallop.models.dataset import DatasetError


def blob_masks():
    rng = np.random.default_rng(4)
    for _ in range(20):
        m = np.zeros((60, 80), np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            c = (int(rng.integers(5, 75)), int(rng.integers(5, 55)))
            axes = (int(rng.integers(1, 20)), int(rng.integers(1, 15)))
            cv2.ellipse(m, c, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        yield m.astype(bool)


def test_masks_survive_the_round_trip_exactly_as_polygons_or_rle():
    kinds = set()
    for m in [*blob_masks(), np.pad(np.ones((3, 3), bool), 2), np.eye(9, dtype=bool)]:
        seg = mask_segmentation(m)
        kinds.add(type(seg).__name__)
        assert np.array_equal(decode_segmentation(seg, *m.shape, "t"), m)
    ring = np.zeros((40, 40), bool)
    ring[5:35, 5:35] = True
    ring[15:25, 15:25] = False  # a hole: COCO polygons cannot hold it, RLE can
    seg = mask_segmentation(ring)
    assert isinstance(seg, dict) and np.array_equal(decode_segmentation(seg, 40, 40, "t"), ring)
    assert "list" in kinds  # most outlines have no hole


@pytest.fixture
def coco_file(tmp_path):
    """One 80x60 image with a scallop (uro and adductor inside) and a second one at the edge."""
    img = np.full((60, 80, 3), 200, np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    inst = np.zeros((60, 80), np.uint16)
    cv2.circle(inst, (30, 30), 15, 1, -1)
    inst[20:40, 70:80] = 2
    parts = np.where(inst > 0, 1, 0).astype(np.uint8)
    cv2.circle(parts, (25, 30), 4, 4, -1)  # uro
    cv2.circle(parts, (36, 30), 5, 3, -1)  # adductor
    w = CocoWriter("t")
    iid = w.add_image("a.png", 80, 60, 0.5)
    w.add_truth(iid, parts, inst, [{"id": 1, "instance": 1}, {"id": 2, "instance": 2}])
    path = tmp_path / "coco.json"
    w.write(path)
    return path, parts, inst


def test_a_coco_file_reads_back_into_the_same_maps_and_facts(coco_file, tmp_path):
    path, parts, inst = coco_file
    (s,) = CocoSet(path).samples()
    assert np.array_equal(s.parts, parts) and np.array_equal(s.instances, inst)
    facts = {f["id"]: f for f in s.labels["scallops"]}
    assert facts[1]["uro_present"] and not facts[1]["cut_by_border"]
    assert facts[2]["cut_by_border"] and not facts[2]["uro_present"]
    summary = import_coco(path, tmp_path / "set")
    assert summary["images"] == 1 and summary["scallops"] == 2
    assert summary["counted"] == 1 and summary["with_uro"] == 1 and summary["cut"] == 1
    assert cv2.imread(str(tmp_path / "set" / "parts" / "a.png"), cv2.IMREAD_UNCHANGED).tolist() == parts.tolist()


def test_import_never_clears_or_mixes_into_a_folder_that_is_not_a_data_set(coco_file, tmp_path):
    path, _, _ = coco_file
    # Into the folder being labelled: --overwrite would have removed the photos themselves.
    with pytest.raises(CocoError, match="the labelled images lie in this folder"):
        import_coco(path, tmp_path, overwrite=True)
    assert (tmp_path / "a.png").is_file()
    other = tmp_path / "photos"
    (other / "images").mkdir(parents=True)
    (other / "images" / "keep.jpg").write_bytes(b"x")
    with pytest.raises(DatasetError, match="not empty and holds no data set"):
        import_coco(path, other, overwrite=True)
    assert (other / "images" / "keep.jpg").read_bytes() == b"x"
    # A set imported before is replaced when asked, and only then.
    import_coco(path, tmp_path / "set")
    with pytest.raises(CocoError, match="already there"):
        import_coco(path, tmp_path / "set")
    assert import_coco(path, tmp_path / "set", overwrite=True)["images"] == 1
    assert not (tmp_path / "set" / ".scallop-dataset-partial").exists()
    # The labeller's corrected file kept inside the set: replacing the set would remove it.
    mine = tmp_path / "set" / "labels" / "corrected.json"
    mine.write_bytes(path.read_bytes())
    (tmp_path / "set" / "labels" / "a.png").write_bytes((tmp_path / "a.png").read_bytes())
    with pytest.raises(CocoError):  # its image beside it lies inside the set too
        import_coco(mine, tmp_path / "set", overwrite=True)
    (tmp_path / "set" / "labels" / "a.png").unlink()
    doc = json.loads(mine.read_text())
    doc["images"][0]["file_name"] = str(tmp_path / "a.png")
    mine.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match="corrected.json lies in the set's own folders"):
        import_coco(mine, tmp_path / "set", overwrite=True)
    assert mine.is_file() and (tmp_path / "set" / "dataset.json").is_file()


def test_a_missing_image_is_found_before_the_set_it_would_replace_is_touched(coco_file, tmp_path):
    path, _, _ = coco_file
    import_coco(path, tmp_path / "set")
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "set").rglob("*"))
    (tmp_path / "a.png").unlink()
    with pytest.raises(CocoError, match="no such file"):
        import_coco(path, tmp_path / "set", overwrite=True)
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "set").rglob("*")) == before


def _broken(path, change):
    doc = json.loads(path.read_text())
    change(doc)
    bad = path.with_name("bad.json")
    bad.write_text(json.dumps(doc))
    return bad


def _ann(doc, cat):
    cid = next(c["id"] for c in doc["categories"] if c["name"] == cat)
    return next(a for a in doc["annotations"] if a["category_id"] == cid)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: _ann(d, "uro").update(segmentation=[[1, 2, 3]]), r"annotation 2: polygon 0 must be a list of x, y"),
        (
            lambda d: _ann(d, "uro").update(segmentation=[[1, 2, 3, 4, 5, float("nan")]]),
            r"annotation 2: polygon 0 holds a value",
        ),
        (
            lambda d: _ann(d, "uro").update(segmentation=[[1, 2, 300, 4, 5, 6]]),
            r"annotation 2: polygon 0 reaches outside",
        ),
        (
            lambda d: _ann(d, "uro").update(segmentation={"size": [10, 10], "counts": [100]}),
            r"annotation 2: RLE size \[10, 10\]",
        ),
        (
            lambda d: _ann(d, "uro").update(segmentation={"size": [60, 80], "counts": [10, 5]}),
            r"annotation 2: RLE counts add up to 15",
        ),
        (lambda d: _ann(d, "uro").update(segmentation=None), r"annotation 2: segmentation missing"),
        (
            lambda d: _ann(d, "uro").update(segmentation=[[60, 2, 64, 2, 64, 6, 60, 6]]),
            r"annotation 2: this uro lies in no scallop",
        ),
        (lambda d: _ann(d, "uro").update(category_id=99), r"annotation 2: category_id 99"),
        (lambda d: _ann(d, "uro").update(image_id=7), r"annotation 2: image_id 7 is no image"),
        (lambda d: _ann(d, "uro").update(id=1), r"annotation 1 appears twice"),
        (
            lambda d: d["images"][0].pop("mm_per_px"),
            r"image 'a.png' has no mm_per_px .*give the scale with --mm-per-px",
        ),
        (lambda d: d["images"][0].update(mm_per_px=float("inf")), r"mm_per_px=inf"),
        (lambda d: d["categories"].append({"id": 9, "name": "shell"}), r"category .*shell.* is not one of"),
    ],
)
def test_every_malformed_annotation_is_refused_naming_image_and_annotation(coco_file, tmp_path, change, message):
    path, _, _ = coco_file
    bad = _broken(path, change)
    with pytest.raises(CocoError, match=message):
        import_coco(bad, tmp_path / "out")
    assert not (tmp_path / "out" / "dataset.json").exists()  # nothing half-written


def test_a_set_without_its_scale_takes_it_from_the_command_line_never_a_default(coco_file, tmp_path, capsys):
    path, _, _ = coco_file
    bad = _broken(path, lambda d: d["images"][0].pop("mm_per_px"))
    assert main(["labels", "import", str(bad), "--out", str(tmp_path / "x")]) == 3
    assert "no mm_per_px" in capsys.readouterr().err
    assert main(["labels", "import", str(bad), "--out", str(tmp_path / "x"), "--mm-per-px", "0.6"]) == 0
    assert json.loads((tmp_path / "x" / "labels" / "a.json").read_text())["mm_per_px"] == 0.6
    assert main(["eval", str(bad), "--json", "--report", str(tmp_path / "r.html")]) == 3


@pytest.mark.parametrize(
    "where, why",
    [
        ("afile/r.html", "{tmp}/afile is a file, not a folder"),
        ("afile/sub/r.html", "{tmp}/afile is a file, not a folder"),
        ("folder", "it is a folder (give a file name, e.g. report.html)"),
    ],
)
def test_eval_refuses_a_report_it_cannot_write_before_scoring(coco_file, tmp_path, capsys, monkeypatch, where, why):
    """An unwritable --report was an internal error, or an error after the whole (slow) scoring:
    now a data error (exit 3) naming the path and why, before any frame is scored."""
    import scallop.app.evaluation as evaluation

    path, _, _ = coco_file
    (tmp_path / "afile").write_text("a file where a folder should be")
    (tmp_path / "folder").mkdir()

    def never(*_a, **_k):
        raise AssertionError("scored although the report could not be written")

    monkeypatch.setattr(evaluation, "evaluate", never)
    report = tmp_path / where
    assert main(["eval", str(path), "--json", "--report", str(report)]) == 3
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip() == f"scallop eval: error: {report}: cannot write the report: {why.format(tmp=tmp_path)}"


def test_eval_makes_the_reports_folders_and_prints_the_figures_before_writing_it(coco_file, tmp_path, capsys):
    path, _, _ = coco_file
    report = tmp_path / "new" / "sub" / "r.html"
    assert main(["eval", str(path), "--json", "--report", str(report)]) == 0
    assert json.loads(capsys.readouterr().out)["frames"] == 1
    assert report.read_text(encoding="utf-8").startswith("<!doctype html>")


def test_a_failed_eval_leaves_no_empty_report_folder(tmp_path, capsys):
    """The up-front check made the report's folders, and a run that then failed (here: no such
    set) left them behind, empty. The folders the check makes for its probe are removed again
    (only if still empty), and the report's writer makes them when it writes."""
    report = tmp_path / "new" / "sub" / "r.html"
    assert main(["eval", str(tmp_path / "no-such-set"), "--report", str(report)]) == 3
    assert "no such labelled set" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "keep.txt").write_text("someone's file")
    assert main(["eval", str(tmp_path / "no-such-set"), "--report", str(report)]) == 3
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["keep.txt"]


# ---------------------------------------------------------------- --mm-per-px is a fallback
CONFLICT = (
    "--mm-per-px 0.6 conflicts with the set's own scale 0.5 mm/px ({where}: mm_per_px): --mm-per-px only gives "
    "a scale to images without one; leave it out, or correct the set if its scale is wrong"
)


def test_labels_import_keeps_each_images_own_scale_and_refuses_a_conflicting_mm_per_px(coco_file, tmp_path, capsys):
    """--mm-per-px replaced the scale the COCO file carries, though the docs call it a fallback."""
    path, _, _ = coco_file
    out = tmp_path / "x"
    assert main(["labels", "import", str(path), "--out", str(out), "--mm-per-px", "0.6"]) == 2
    assert capsys.readouterr().err.strip() == "scallop labels: error: " + CONFLICT.format(
        where=f"{path}, image 'a.png'"
    )
    assert not (out / "dataset.json").exists()
    # Within 1 % it agrees, and the image's own scale is the one kept.
    assert main(["labels", "import", str(path), "--out", str(out), "--mm-per-px", "0.504"]) == 0
    assert json.loads((out / "labels" / "a.json").read_text())["mm_per_px"] == 0.5


def test_eval_and_detect_keep_a_data_sets_own_scale_and_refuse_a_conflicting_mm_per_px(
    coco_file, tmp_path, capsys, monkeypatch
):
    import scallop.app.evaluation as evaluation

    path, _, _ = coco_file
    ds = tmp_path / "set"
    import_coco(path, ds)  # labels/a.json carries mm_per_px 0.5
    where = ds / "labels" / "a.json"
    real = evaluation.evaluate
    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: pytest.fail("scored despite the conflict"))
    for source in (ds, path):  # a data-set folder and a COCO file, before any frame is scored
        assert main(["eval", str(source), "--json", "--mm-per-px", "0.6", "--report", str(tmp_path / "r.html")]) == 2
        named = where if source == ds else f"{path}, image 'a.png'"
        assert capsys.readouterr().err.strip() == "scallop eval: error: " + CONFLICT.format(where=named)
    monkeypatch.setattr(evaluation, "evaluate", real)
    assert main(["eval", str(ds), "--json", "--mm-per-px", "0.497", "--report", str(tmp_path / "r.html")]) == 0
    # Agreeing within 1 %: the set's own 0.5 is the scale used (0.497 would fall in the 0.4 bin).
    assert list(json.loads(capsys.readouterr().out)["per_scale"]) == ["0.5-0.6"]

    image = str(ds / "images" / "a.png")
    assert main(["detect", "--mm-per-px", "0.6", image]) == 2
    assert capsys.readouterr().err.strip() == "scallop detect: error: " + CONFLICT.format(where=where)
    assert main(["detect", "--mm-per-px", "0.5", "--json", image]) == 0
    assert main(["detect", "--json", image]) == 0  # the set's scale alone, as before
