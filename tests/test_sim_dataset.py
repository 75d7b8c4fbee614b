"""Data-set writing and reading, and the ``scallop sim`` commands."""

from __future__ import annotations

import json
import os
import shutil

import cv2
import numpy as np
import pytest

from scallop.app.cli import main
from scallop.models.dataset import DatasetError, load_dataset
from scallop.sim.dataset import DatasetSettings, random_sample, write_dataset
from scallop.sim.scene import PART_NAMES, URO

# Small frames keep the tests fast; the envelope itself is exercised by random_sample.
SMALL = DatasetSettings(resolutions=[(640, 480)], scallops=(2, 6))


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds") / "set"
    rep = write_dataset(root, 4, seed=3, settings=SMALL)
    return root, rep


def test_written_set_has_the_documented_layout(small_set):
    root, rep = small_set
    assert rep.count == 4 and rep.frames_per_s > 0
    man = json.loads((root / "dataset.json").read_text())
    assert man["format"] == "scallop-dataset" and man["version"] == 1 and man["count"] == 4
    assert man["classes"] == list(PART_NAMES) and man["seed"] == 3 and man["source"] == "scallop-sim"
    assert man["generator"]["resolutions"] == [[640, 480]]
    for i in range(4):
        labels = json.loads((root / "labels" / f"{i:06d}.json").read_text())
        img = root / labels["image"]
        assert img.suffix == (".jpg" if labels["jpeg_quality"] < 100 else ".png") and img.is_file()
        parts = cv2.imread(str(root / "parts" / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED)
        inst = cv2.imread(str(root / "instances" / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED)
        assert parts.dtype == np.uint8 and inst.dtype == np.uint16 and parts.shape == inst.shape == (480, 640)
        assert 0.3 <= labels["mm_per_px"] <= 1.0


def test_reader_round_trips_the_facts(small_set):
    root, _ = small_set
    ds = load_dataset(root)
    assert len(ds) == 4 and ds.names == [f"{i:06d}" for i in range(4)]
    total = 0
    for sample in ds:
        assert sample.image.shape == (480, 640, 3) and sample.parts.max() < len(PART_NAMES)
        ids = set(np.unique(sample.instances)) - {0}
        assert ids == {f["instance"] for f in sample.scallops}
        for f in sample.scallops:
            mask = sample.instances == f["instance"]
            assert mask.sum() == f["visible_px"] and f["id"] == f["instance"]
            uro = mask & (sample.parts == URO)
            assert uro.sum() == f["uro_px"] and f["uro_present"] == bool(uro.any())
            assert 0.0 <= f["visible_fraction"] <= 1.0
        total += len(sample.scallops)
    assert total >= 4


def test_frames_are_reproducible_per_seed_and_index(small_set, tmp_path):
    root, _ = small_set
    again = tmp_path / "again"
    write_dataset(again, 2, seed=3, settings=SMALL)
    for i in range(2):
        a = json.loads((root / "labels" / f"{i:06d}.json").read_text())
        b = json.loads((again / "labels" / f"{i:06d}.json").read_text())
        assert (root / a["image"]).read_bytes() == (again / b["image"]).read_bytes()
        assert (root / a["parts"]).read_bytes() == (again / b["parts"]).read_bytes()
    other = random_sample(0, 4, SMALL)
    assert other.image.tobytes() != cv2.imread(str(root / a["image"])).tobytes()


def test_random_samples_cover_the_envelope():
    st = DatasetSettings()
    samples = [random_sample(i, 11, st) for i in range(24)]
    sizes = {s.camera.image_size for s in samples}
    scales = [s.truth.mm_per_px for s in samples]
    assert len(sizes) >= 4 and min(scales) < 0.45 and max(scales) > 0.85
    assert any(np.any(s.camera.dist != 0) for s in samples) and any(np.all(s.camera.dist == 0) for s in samples)
    facts = [f for s in samples for f in s.truth.scallops]
    assert any(f.cut_by_border for f in facts) and any(f.gonad == "male" for f in facts)
    assert any(not f.cut_by_border and f.visible_fraction < 0.98 for f in facts)  # touching / overlapping
    assert {s.jpeg_quality == 100 for s in samples} == {True, False}
    assert max(len(s.truth.scallops) for s in samples) >= 6
    # instance values are 1..n in every frame
    for s in samples:
        assert sorted(f.instance for f in s.truth.scallops) == list(range(1, len(s.truth.scallops) + 1))


def test_writer_refuses_to_overwrite_without_asking(small_set):
    root, _ = small_set
    with pytest.raises(DatasetError, match="a data set is already there"):
        write_dataset(root, 1, settings=SMALL)
    assert not (root / ".scallop-dataset-partial").exists()  # a finished set carries no marker


def test_overwrite_never_empties_what_the_simulator_did_not_write(small_set, tmp_path):
    # A folder of photos with an images/ subfolder: --overwrite used to delete every file in it.
    photos = tmp_path / "photos"
    (photos / "images").mkdir(parents=True)
    (photos / "images" / "line3-0001.jpg").write_bytes(b"a photo")
    with pytest.raises(DatasetError, match="not empty and holds no data set"):
        write_dataset(photos, 1, settings=SMALL, overwrite=True)
    assert (photos / "images" / "line3-0001.jpg").read_bytes() == b"a photo"
    assert sorted(p.name for p in photos.rglob("*")) == ["images", "line3-0001.jpg"]
    # A labelled real set (its manifest names another source) is refused too.
    real = _copy(small_set, tmp_path)
    man = json.loads((real / "dataset.json").read_text())
    (real / "dataset.json").write_text(json.dumps(man | {"source": "coco-import"}))
    with pytest.raises(DatasetError, match="did not write.*'coco-import'"):
        write_dataset(real, 1, settings=SMALL, overwrite=True)
    assert len(list((real / "images").iterdir())) == 4


def test_overwrite_replaces_a_simulated_set_and_an_interrupted_one(small_set, tmp_path):
    root = _copy(small_set, tmp_path)
    (root / "NOTES.txt").write_text("kept")
    write_dataset(root, 2, seed=3, settings=SMALL, overwrite=True)
    assert len(list((root / "images").iterdir())) == 2 and (root / "NOTES.txt").read_text() == "kept"
    assert json.loads((root / "dataset.json").read_text())["count"] == 2
    # An interrupted run leaves its marker and no manifest: asked again, it is cleared.
    (root / "dataset.json").unlink()
    (root / ".scallop-dataset-partial").write_text('{"source": "scallop-sim"}')
    with pytest.raises(DatasetError, match="unfinished data set"):
        write_dataset(root, 1, settings=SMALL)
    write_dataset(root, 1, seed=3, settings=SMALL, overwrite=True)
    assert len(list((root / "images").iterdir())) == 1 and not (root / ".scallop-dataset-partial").exists()


def test_a_set_that_cannot_be_cleared_safely_is_left_whole(small_set, tmp_path):
    root = _copy(small_set, tmp_path)
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "p.jpg").write_bytes(b"x")
    shutil.rmtree(root / "images")
    (root / "images").symlink_to(photos)
    with pytest.raises(DatasetError, match="images is not a plain folder"):
        write_dataset(root, 1, settings=SMALL, overwrite=True)
    assert (photos / "p.jpg").is_file() and (root / "dataset.json").is_file()
    assert not (root / ".scallop-dataset-partial").exists()
    # An import interrupted there is judged by its marker: not the simulator's to replace.
    (root / "images").unlink()
    (root / "dataset.json").unlink()
    (root / ".scallop-dataset-partial").write_text('{"source": "coco-import"}')
    with pytest.raises(DatasetError, match="did not write"):
        write_dataset(root, 1, settings=SMALL, overwrite=True)


def test_an_out_folder_below_a_file_is_named_in_words(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    assert main(["sim", "dataset", "--n", "1", "--out", str(tmp_path / "f" / "set")]) == 3
    err = capsys.readouterr().err
    assert f"cannot write the data set there: {tmp_path / 'f'} is a file, not a folder" in err
    assert "Traceback" not in err
    assert main(["sim", "dataset", "--n", "1", "--out", str(tmp_path / "f")]) == 3
    assert "is a file, not a folder; name a new folder for the set" in capsys.readouterr().err


# ------------------------------------------------------------------ reader errors
def _copy(small_set, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(small_set[0], dst)
    return dst


def test_missing_parts_file_is_named(small_set, tmp_path):
    root = _copy(small_set, tmp_path)
    (root / "parts" / "000002.png").unlink()
    with pytest.raises(DatasetError, match=r"parts/000002\.png: missing"):
        load_dataset(root)


def test_an_empty_image_is_called_empty(small_set, tmp_path):
    root = _copy(small_set, tmp_path)
    name = json.loads((root / "labels" / "000001.json").read_text())["image"]
    (root / name).write_bytes(b"")
    with pytest.raises(DatasetError, match=r"empty file \(0 bytes\)"):
        list(load_dataset(root))


def test_mismatched_sizes_are_named(small_set, tmp_path):
    root = _copy(small_set, tmp_path)
    cv2.imwrite(str(root / "parts" / "000001.png"), np.zeros((100, 100), np.uint8))
    ds = load_dataset(root)
    with pytest.raises(DatasetError, match=r"parts/000001\.png: size 100x100 differs from its image 640x480"):
        ds.load("000001")


def test_unknown_version_and_bad_manifest(small_set, tmp_path):
    root = _copy(small_set, tmp_path)
    man = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**man, "version": 3}))
    with pytest.raises(
        DatasetError, match=r"dataset\.json: version 3 is unknown \(this software reads versions 1 and 2\)"
    ):
        load_dataset(root)
    # Version 2 names its channels; version 1 carries none.
    (root / "dataset.json").write_text(json.dumps({**man, "version": 2}))
    with pytest.raises(DatasetError, match=r'dataset\.json: version 2 names its channels: "channels" is missing'):
        load_dataset(root)
    for bad in (["uv", "bgr"], ["bgr", "ir"], ["bgr", "bgr"], [], "bgr"):
        (root / "dataset.json").write_text(json.dumps({**man, "version": 2, "channels": bad}))
        with pytest.raises(DatasetError, match=r"dataset\.json: channels .* are not allowed"):
            load_dataset(root)
    (root / "dataset.json").write_text(json.dumps({**man, "channels": ["bgr", "uv"]}))
    with pytest.raises(DatasetError, match=r"channels \['bgr', 'uv'\] need version 2"):
        load_dataset(root)
    (root / "dataset.json").write_text(json.dumps({**man, "version": 2, "channels": ["bgr"]}))
    assert load_dataset(root).channels == ("bgr",) and load_dataset(root)[0].uv is None
    (root / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"dataset\.json: not valid JSON"):
        load_dataset(root)
    (root / "dataset.json").unlink()
    with pytest.raises(DatasetError, match=r"dataset\.json: missing"):
        load_dataset(root)


def test_bad_labels_are_named(small_set, tmp_path):
    root = _copy(small_set, tmp_path)
    parts = cv2.imread(str(root / "parts" / "000000.png"), cv2.IMREAD_UNCHANGED)
    parts[0, 0] = 9
    cv2.imwrite(str(root / "parts" / "000000.png"), parts)
    with pytest.raises(DatasetError, match=r"parts/000000\.png: label 9 is unknown"):
        load_dataset(root).load("000000")
    lab = json.loads((root / "labels" / "000003.json").read_text())
    lab["scallops"].append({"id": 77, "instance": 77})
    (root / "labels" / "000003.json").write_text(json.dumps(lab))
    with pytest.raises(DatasetError, match=r"labels/000003\.json: scallop 77 has no pixels"):
        load_dataset(root).load("000003")


def test_minimal_real_photo_set(tmp_path):
    """images + parts + a scale are enough; instances and facts are derived."""
    root = tmp_path / "photos"
    (root / "images").mkdir(parents=True)
    (root / "parts").mkdir()
    (root / "dataset.json").write_text(json.dumps({"format": "scallop-dataset", "version": 1, "mm_per_px": 0.4}))
    img = np.full((120, 160, 3), 200, np.uint8)
    parts = np.zeros((120, 160), np.uint8)
    cv2.circle(parts, (40, 60), 25, 1, -1)
    cv2.circle(parts, (40, 60), 10, 3, -1)
    cv2.ellipse(parts, (55, 60), (5, 3), 0, 0, 360, 4, -1)
    cv2.circle(parts, (150, 60), 20, 1, -1)  # cut by the right border
    cv2.imwrite(str(root / "images" / "belt_a.jpg"), img)
    cv2.imwrite(str(root / "parts" / "belt_a.png"), parts)
    sample = next(iter(load_dataset(root)))
    assert sample.name == "belt_a" and sample.mm_per_px == 0.4 and sample.labels == {}
    assert sorted(np.unique(sample.instances)) == [0, 1, 2]
    facts = {f["instance"]: f for f in sample.scallops}
    assert facts[1]["uro_present"] and not facts[1]["cut_by_border"]
    assert facts[1]["uro_centroid_px"] == pytest.approx([55.0, 60.0], abs=0.6)
    assert facts[2]["cut_by_border"] and not facts[2]["uro_present"]
    (root / "dataset.json").write_text(json.dumps({"format": "scallop-dataset", "version": 1}))
    with pytest.raises(DatasetError, match="mm_per_px missing"):
        load_dataset(root).load("belt_a")


def test_settings_errors_name_the_field():
    with pytest.raises(ValueError, match=r"mm_per_px\[1\]=1\.5 is out of range: allowed 0\.3\.\.1"):
        DatasetSettings(mm_per_px=(0.3, 1.5))
    with pytest.raises(ValueError, match=r"resolutions\[0\]\.width=4000 is out of range"):
        DatasetSettings(resolutions=[(4000, 3000)])
    with pytest.raises(ValueError, match=r"fluorescence='yes': expected true or false"):
        DatasetSettings(fluorescence="yes")


# ------------------------------------------------------------------ commands
def test_sim_dataset_command(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["sim", "dataset", "--n", "2", "--out", str(out), "--seed", "5", "--workers", "1"]) == 0
    text = capsys.readouterr().out
    assert "wrote 2 frames" in text and "frames/s" in text
    assert len(load_dataset(out)) == 2
    assert main(["sim", "dataset", "--n", "1", "--out", str(out)]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already there" in err[0] and "Traceback" not in err[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n", "0"], "--n=0 is out of range: allowed 1..1000000"),
        (["--n", "1000001"], "--n=1000001 is out of range: allowed 1..1000000"),
        # numpy's seeding refuses a negative seed: a usage error, not an internal one.
        (["--n", "1", "--seed", "-1"], "--seed=-1 is out of range: allowed 0..4294967295"),
        (["--n", "1", "--seed", "4294967296"], "--seed=4294967296 is out of range: allowed 0..4294967295"),
        # 10000 processes hung the machine; the bound is 4 per CPU.
        (["--n", "1", "--workers", "10000"], "--workers=10000 is out of range: allowed 1..{max} (0: the default)"),
        (["--n", "1", "--workers", "-1"], "--workers=-1 is out of range: allowed 1..{max} (0: the default)"),
    ],
)
def test_sim_dataset_command_refuses_out_of_range_options(tmp_path, capsys, args, message):
    out = tmp_path / "never"
    assert main(["sim", "dataset", "--out", str(out), *args]) == 2
    bound = 4 * (os.cpu_count() or 1)
    assert capsys.readouterr().err.strip() == "scallop sim: error: " + message.format(max=bound)
    assert not out.exists()  # refused before anything is written


def test_sim_dataset_command_writes_the_channel_when_asked(tmp_path, capsys):
    out = tmp_path / "uv"
    assert main(["sim", "dataset", "--n", "1", "--out", str(out), "--workers", "1", "--fluorescence"]) == 0
    ds = load_dataset(out)
    assert ds.manifest["version"] == 2 and ds.manifest["channels"] == ["bgr", "uv"]
    s = ds[0]
    assert s.uv is not None and s.uv.dtype == np.uint8 and s.uv.shape == s.image.shape[:2]


def test_sim_dataset_command_in_parallel_matches_serial(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_dataset(a, 3, seed=9, settings=SMALL, workers=1)
    write_dataset(b, 3, seed=9, settings=SMALL, workers=2)
    for name in ("parts/000002.png", "labels/000001.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()


def test_sim_preview_command(tmp_path, capsys):
    out = tmp_path / "prev"
    assert main(["sim", "preview", "--random", "--n", "2", "--out", str(out), "--seed", "1"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["frame_000.png", "frame_001.png", "truth_000.png", "truth_001.png"]
    assert "scallops" in capsys.readouterr().out
    assert main(["sim", "preview", "--n", "0", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["scallop sim: error: --n 0 is out of range: allowed 1..1000"]


# ------------------------------------------------------------------ the fluorescence channel (version 2)
UV = DatasetSettings(resolutions=[(640, 480)], scallops=(2, 6), fluorescence=True)


@pytest.fixture(scope="module")
def uv_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("uv") / "set"
    write_dataset(root, 4, seed=3, settings=UV)
    return root


def test_a_set_with_the_channel_is_version_2_and_without_it_stays_version_1(uv_set, small_set):
    man = json.loads((uv_set / "dataset.json").read_text())
    assert man["version"] == 2 and man["channels"] == ["bgr", "uv"]
    assert man["generator"]["fluorescence"] is True and man["totals"]["uv"] == 4
    plain = json.loads((small_set[0] / "dataset.json").read_text())
    assert plain["version"] == 1 and "channels" not in plain
    assert "fluorescence" not in plain["generator"] and "uv" not in plain["totals"]
    for i in range(4):
        name = f"{i:06d}"
        labels = json.loads((uv_set / "labels" / f"{name}.json").read_text())
        assert labels["uv"] == f"images/{name}.uv.png"
        uv = cv2.imread(str(uv_set / labels["uv"]), cv2.IMREAD_UNCHANGED)
        assert uv.shape == (480, 640) and uv.dtype == np.uint8
        look = labels.pop("fluorescence")
        assert 3 <= look["noise_sigma"] <= 8 and 2 <= look["exposure_ratio"] <= 4 and 0 <= look["belt_level"] <= 10
        assert look["motion_blur_px"] == pytest.approx(
            look["exposure_ratio"] * labels["look"]["motion_blur_px"], abs=1e-3
        )
        # The colour frame is the one the set without the channel has, file for file.
        other = json.loads((small_set[0] / "labels" / f"{name}.json").read_text())
        del labels["uv"]
        assert labels == other
        for rel in (labels["image"], labels["parts"], labels["instances"]):
            assert (uv_set / rel).read_bytes() == (small_set[0] / rel).read_bytes()


def test_reader_gives_the_channel_registered_to_its_image(uv_set, small_set):
    ds = load_dataset(uv_set)
    assert ds.channels == ("bgr", "uv") and len(ds) == 4  # the companions are not frames
    uro_means, belt_means = [], []
    for sample in ds:
        assert sample.uv.shape == sample.parts.shape and sample.uv.dtype == np.uint8
        core = cv2.erode((sample.parts == URO).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        if core.sum() > 30:
            uro_means.append(sample.uv[core].mean())
        belt = cv2.erode((sample.parts == 0).astype(np.uint8), np.ones((17, 17), np.uint8)) > 0
        belt_means.append(sample.uv[belt].mean())
    assert uro_means and min(uro_means) >= 100 and max(belt_means) <= 10
    plain = load_dataset(small_set[0])
    assert plain.channels == ("bgr",) and plain[0].uv is None


def _uv_copy(uv_set, tmp_path):
    dst = tmp_path / "uvcopy"
    shutil.copytree(uv_set, dst)
    return dst


def test_reader_checks_the_channel_files(uv_set, tmp_path):
    root = _uv_copy(uv_set, tmp_path)
    (root / "images" / "000001.uv.png").unlink()
    with pytest.raises(DatasetError, match=r"images/000001\.uv\.png: missing \(dataset\.json's channels name 'uv'"):
        load_dataset(root)
    (root / "images" / "000001.uv.png").mkdir()
    with pytest.raises(DatasetError, match=r"000001\.uv\.png: a folder, not an image file \(dataset\.json's"):
        load_dataset(root)
    (root / "images" / "000001.uv.png").rmdir()
    shutil.copy(uv_set / "images" / "000001.uv.png", root / "images" / "000001.uv.png")
    for bad, why in (
        (
            np.zeros((480, 640, 3), np.uint8),
            r"a fluorescence frame is one channel of 8-bit grey levels, this PNG holds 8-bit colour \(RGB\) data",
        ),
        (
            np.zeros((480, 640), np.uint16),
            r"a fluorescence frame is one channel of 8-bit grey levels, this PNG holds 16-bit grey data",
        ),
        (
            np.zeros((480, 640, 4), np.uint8),
            r"a fluorescence frame is one channel of 8-bit grey levels, this PNG holds 8-bit colour with alpha data",
        ),
        (np.zeros((80, 100), np.uint8), r"size 100x80 differs from its image 640x480"),
    ):
        cv2.imwrite(str(root / "images" / "000002.uv.png"), bad)
        ds = load_dataset(root)
        with pytest.raises(DatasetError, match=r"000002\.uv\.png: " + why):
            ds.load("000002")
        assert ds.load("000003").uv is not None


def test_eval_names_every_bad_label_file_at_once(tmp_path, capsys):
    """A set with nine unusable label files (not JSON, a NaN scale, facts that are no list of
    objects, a folder in a label file's place): one error naming five and counting the rest,
    before any image is analysed (was: the first one, one run at a time, and an internal error
    for the facts)."""
    from scallop.app.cli import main
    from scallop.models.dataset import DatasetError, load_dataset
    from scallop.sim.dataset import DatasetSettings, write_dataset

    root = tmp_path / "set"
    write_dataset(root, 10, seed=5, settings=DatasetSettings(resolutions=[(640, 480)], scallops=(1, 2)))
    labels = sorted((root / "labels").iterdir())
    for p in labels[:6]:
        p.write_text("{not json")
    labels[6].write_text('{"mm_per_px": "nan"}')
    labels[7].write_text('{"mm_per_px": 0.5, "scallops": "lots"}')
    labels[8].unlink()
    labels[8].mkdir()
    assert main(["eval", str(root)]) == 3
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "9 label files of" in err and "cannot be used" in err and "; and 4 more" in err
    assert str(labels[0]) in err and "not valid JSON" in err
    ds = load_dataset(root)
    with pytest.raises(DatasetError, match="scallops must be a list of objects"):
        ds.load(labels[7].stem)
    with pytest.raises(DatasetError, match="a folder, not a label file"):
        ds.load(labels[8].stem)


def test_eval_names_every_unreadable_image_and_gives_no_figures(tmp_path, capsys, monkeypatch):
    """Three of eight images damaged (a JPEG cut short, a PNG mask whose checksum fails, an
    empty image): one error names all three and gives no figures, which would not be the whole
    set's (was: the first one, one run at a time). Once one image is unreadable the rest are only
    read, not analysed."""
    from scallop.app import evaluation
    from scallop.app.cli import main
    from scallop.sim.dataset import DatasetSettings, write_dataset
    from scallop.vision.pipeline import Pipeline

    root = tmp_path / "set"
    write_dataset(root, 8, seed=5, settings=DatasetSettings(resolutions=[(640, 480)], scallops=(1, 2)))
    images = sorted((root / "images").iterdir())
    images[1].write_bytes(images[1].read_bytes()[: images[1].stat().st_size // 2])
    mask = root / "parts" / f"{images[4].stem}.png"
    data = bytearray(mask.read_bytes())
    data[data.index(b"IDAT") + 20] ^= 0x04
    mask.write_bytes(bytes(data))
    images[6].write_bytes(b"")
    analysed = []
    real = Pipeline.detect

    def counting(self, image, *a, **k):
        analysed.append(image.shape)
        return real(self, image, *a, **k)

    monkeypatch.setattr(Pipeline, "detect", counting)
    assert main(["eval", str(root), "--report", str(tmp_path / "r" / "r.html")]) == 3
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert "3 of 8 images cannot be scored, so no figures are given" in err
    assert (
        f"{images[1]}: " in err and f"{mask}: PNG data damaged (chunk IDAT" in err and f"{images[6]}: empty file" in err
    )
    assert len(analysed) == 1  # the one image before the first unreadable one
    assert not (tmp_path / "r").exists()
    # The loaders are what evaluate() walks: one per image, each raising for its own image only.
    n, loaders = evaluation.labelled_loaders(root)
    assert n == 8 and loaders[0]().name == images[0].stem


def test_detect_over_a_sets_images_says_a_broken_label_file_at_its_turn_and_goes_on(tmp_path, capsys):
    """An image whose label file cannot be used (not JSON; a folder in its place, which was
    taken for a missing file and the set's scale used) is that image's error, said at its turn,
    exit 1: the other images are analysed (was: the whole run stopped before the first image)."""
    from scallop.app.cli import main
    from scallop.sim.dataset import DatasetSettings, write_dataset

    root = tmp_path / "set"
    write_dataset(root, 4, seed=5, settings=DatasetSettings(resolutions=[(640, 480)], scallops=(1, 2)))
    images = sorted(str(p) for p in (root / "images").iterdir())
    labels = sorted((root / "labels").iterdir())
    labels[1].write_text("{not json")
    labels[2].unlink()
    labels[2].mkdir()
    stray = tmp_path / "z.uv.png"
    stray.write_bytes(b"")
    assert main(["detect", "--json", images[0], images[1], images[2], str(stray), images[3]]) == 1
    out, err = capsys.readouterr()
    assert [json.loads(ln)["image"] for ln in out.splitlines()] == [images[0], images[3]]
    said = err.strip().splitlines()
    assert len(said) == 3 and all(ln.startswith("scallop detect: error: ") for ln in said)
    assert str(labels[1]) in said[0] and "not valid JSON" in said[0]
    assert said[1].endswith(f"{labels[2]}: a folder, not a label file")
    assert str(stray) in said[2] and "fluorescence companion" in said[2]
    # A usage error is still said up front: a --mm-per-px that conflicts with the set's scale.
    assert main(["detect", "--json", "--mm-per-px", "0.9", images[0], images[3]]) == 2
    assert "conflicts with the set's own scale" in capsys.readouterr().err


def _set_of(tmp_path, n=4, count=True):
    """A small simulated set; ``count`` False: its dataset.json without the optional count
    (the minimal set, where nothing else tells that an image went missing)."""
    from scallop.sim.dataset import DatasetSettings, write_dataset

    root = tmp_path / "set"
    write_dataset(root, n, seed=5, settings=DatasetSettings(resolutions=[(640, 480)], scallops=(1, 2)))
    if not count:
        man = json.loads((root / "dataset.json").read_text())
        man.pop("count")
        (root / "dataset.json").write_text(json.dumps(man))
    return root


@pytest.mark.parametrize("how", ["dead link", "folder"])
def test_an_image_that_is_no_file_is_named_not_left_out_of_the_figures(tmp_path, capsys, how):
    """With no count in dataset.json (the minimal set), an image replaced by a folder or a link
    whose target is gone was left out and the figures given over the rest, exit 0."""
    from scallop.app.cli import main

    root = _set_of(tmp_path, count=False)
    img = sorted((root / "images").iterdir())[1]
    img.unlink()
    img.symlink_to(tmp_path / "gone.jpg") if how == "dead link" else img.mkdir()
    assert main(["eval", str(root), "--report", str(tmp_path / "r.html")]) == 3
    err = capsys.readouterr().err
    want = "a link to nothing (its target is gone)" if how == "dead link" else "a folder, not an image file"
    assert f"{img}: {want}" in err and len(err.strip().splitlines()) == 1


def test_part_labels_without_their_image_say_an_image_is_gone(tmp_path):
    from scallop.models.dataset import DatasetError, load_dataset

    root = _set_of(tmp_path, count=False)
    img = sorted((root / "images").iterdir())[2]
    img.unlink()
    with pytest.raises(DatasetError, match=rf"parts/{img.stem}.png: part labels without their image"):
        load_dataset(root)


@pytest.mark.parametrize("how", ["dead link", "folder"])
def test_instances_or_parts_that_are_no_file_are_named(tmp_path, how):
    """Instance labels are optional, so a folder or dead link in their place was taken for
    none and the outlines made up from the part labels; part labels so were called missing."""
    from scallop.models.dataset import DatasetError, load_dataset

    root = _set_of(tmp_path)
    inst = sorted((root / "instances").iterdir())[1]
    inst.unlink()
    inst.symlink_to(tmp_path / "gone.png") if how == "dead link" else inst.mkdir()
    want = "a link to nothing" if how == "dead link" else "a folder"
    with pytest.raises(DatasetError, match=rf"instances/{inst.stem}.png: {want}"):
        load_dataset(root).load(inst.stem)
    parts = root / "parts" / f"{inst.stem}.png"
    parts.unlink()
    parts.symlink_to(tmp_path / "gone.png") if how == "dead link" else parts.mkdir()
    with pytest.raises(DatasetError, match=rf"parts/{inst.stem}.png: {want}.*every image needs its part labels"):
        load_dataset(root)


def test_a_mask_claiming_a_vast_picture_is_refused_by_its_header(tmp_path, capsys):
    """A PNG whose header (with a right checksum) claims 100000x100000 pixels: OpenCV's own
    assertion came out as an internal error, and 20000x20000 took about 900 MB before that."""
    import struct
    import zlib

    from scallop.app.cli import main

    root = _set_of(tmp_path)
    mask = sorted((root / "parts").iterdir())[0]
    b = bytearray(mask.read_bytes())
    body = b"IHDR" + struct.pack(">II", 100000, 100000) + bytes(b[24:29])
    b[12:33] = body + struct.pack(">I", zlib.crc32(body))
    mask.write_bytes(bytes(b))
    assert main(["eval", str(root), "--report", str(tmp_path / "r.html")]) == 3
    err = capsys.readouterr().err
    assert f"{mask}: image is 10000 megapixels, above the 50 megapixel limit" in err
    assert "internal error" not in err


@pytest.mark.parametrize("how", ["dead link", "folder"])
def test_detect_refuses_an_image_of_a_set_whose_manifest_is_no_file(tmp_path, capsys, how):
    """Was: taken for an image in no data set, its labels' scale ignored for --mm-per-px."""
    from scallop.app.cli import main

    root = _set_of(tmp_path, 2)
    (root / "dataset.json").unlink()
    (root / "dataset.json").symlink_to(tmp_path / "gone.json") if how == "dead link" else (
        root / "dataset.json"
    ).mkdir()
    img = sorted((root / "images").iterdir())[0]
    assert main(["detect", "--mm-per-px", "0.5", str(img)]) == 3
    err = capsys.readouterr().err
    assert f"{root / 'dataset.json'}: " in err and "not a data set's manifest" in err
