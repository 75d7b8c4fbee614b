"""A model that takes the fluorescence channel (issue 22, docs/fluorescence.md "Model"): its
metadata, the runtime's refusal without the channel, the pipeline feeding the channel's crops
exactly as the colour crops, training on version 2 sets, and ``scallop detect`` on frame pairs.

A tiny model trained for a few steps says nothing about detection quality: these tests show
that the channel reaches the network, not that it finds uros."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from scallop.app.cli import main
from scallop.models.dataset import DatasetError, load_dataset
from scallop.models.runtime import MissingChannelError, ModelError, SegModel, parse_metadata
from scallop.models.train import Batcher, Prepared, TrainConfig, finder_target, prepare_dirs, prepare_one
from scallop.sim.dataset import DatasetSettings, write_dataset
from scallop.vision.detections import Detections
from scallop.vision.pipeline import Pipeline, PipelineConfig

UV = DatasetSettings(resolutions=[(640, 480)], scallops=(3, 5), fluorescence=True)
TINY = dict(seed=3, batch_parts=4, batch_finder=2, iters=6, warmup=2, threads=1, log_every=3)


@pytest.fixture(scope="module")
def uv_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("uvmodel") / "set"
    write_dataset(root, 2, seed=12, settings=UV)
    return root


@pytest.fixture(scope="module")
def uv_model(uv_set, tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from scallop.models.train import train

    cfg = TrainConfig(**TINY, uv_stages=("parts",))
    prep = prepare_dirs([uv_set], [], cfg)
    out = train(prep, tmp_path_factory.mktemp("uvm") / "uv4.onnx", cfg, log=lambda m: None)
    return out


def _meta(path: Path) -> dict:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def _sample(uv_set):
    """The set's sample with the largest uro."""
    ds = load_dataset(uv_set)
    return max(ds, key=lambda s: int((s.parts == 4).sum()))


# ------------------------------------------------------------------ metadata
def test_the_exported_model_says_its_parts_stage_takes_four_channels(uv_model):
    meta = _meta(uv_model)
    assert meta["scallop.version"] == "2"
    assert json.loads(meta["scallop.parts"])["channels"] == ["bgr", "uv"]
    assert json.loads(meta["scallop.finder"])["channels"] == ["bgr"]
    norm = json.loads(meta["scallop.normalize"])
    assert norm["mean"] == [0.5, 0.5, 0.5, 0.08] and norm["std"] == [0.25, 0.25, 0.25, 0.25]
    assert json.loads(meta["scallop.train_config"])["uv_stages"] == ["parts"]
    model = SegModel(str(uv_model), threads=1)
    assert model.channels == 4 and model.takes_uv
    assert (model.info.finder.planes, model.info.parts.planes) == (3, 4)
    shapes = {i.name: i.shape for i in model.session.get_inputs()}
    assert shapes["crops"][1] == 4 and shapes["frame"][1] == 3


def test_a_colour_only_export_keeps_version_1_metadata(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from scallop.models.net import ScallopNet
    from scallop.models.onnx_io import export_onnx

    cfg = TrainConfig()
    out = tmp_path / "c.onnx"
    export_onnx(ScallopNet(cfg.finder_widths, cfg.parts_widths), out, cfg, {})
    meta = _meta(out)
    assert meta["scallop.version"] == "1"
    assert "channels" not in json.loads(meta["scallop.parts"]) and "channels" not in json.loads(meta["scallop.finder"])
    assert json.loads(meta["scallop.normalize"])["mean"] == [0.5, 0.5, 0.5]
    assert "uv_stages" not in json.loads(meta["scallop.train_config"])
    assert SegModel(str(out), threads=1).channels == 3
    shipped = SegModel(None, threads=1)
    assert shipped.channels == 3 and not shipped.takes_uv and shipped.info.version == 1


def test_channel_metadata_is_checked(uv_model):
    good = _meta(uv_model)

    def refused(**changes):
        meta = dict(good, **changes)
        with pytest.raises(ModelError) as e:
            parse_metadata(meta, "m.onnx")
        return str(e.value)

    parts = json.loads(good["scallop.parts"])
    assert "need model format version 2" in refused(**{"scallop.version": "1"})
    no_ch = json.dumps({k: v for k, v in parts.items() if k != "channels"})
    assert 'lacks "channels"' in refused(**{"scallop.parts": no_ch})
    assert "must be ['bgr'] or ['bgr', 'uv']" in refused(**{"scallop.parts": json.dumps(dict(parts, channels=["uv"]))})
    three = json.dumps({"mean": [0.5] * 3, "std": [0.25] * 3})
    assert "4 means and 4 positive stds" in refused(**{"scallop.normalize": three})
    assert "version 3 is not supported" in refused(**{"scallop.version": "3"})


def test_to_input_adds_the_fluorescence_plane_after_the_colour_ones(uv_model):
    model = SegModel(str(uv_model), threads=1)
    rng = np.random.default_rng(4)
    bgr = rng.integers(0, 256, (3, 16, 16, 3), np.uint8)
    uv = rng.integers(0, 256, (3, 16, 16), np.uint8)
    x = model.to_input(bgr, uv)
    assert x.shape == (3, 4, 16, 16) and x.dtype == np.float32
    assert np.array_equal(x[:, :3], model.to_input(bgr))
    assert np.allclose(x[:, 3], (uv / 255.0 - 0.08) / 0.25, atol=1e-5)


# ------------------------------------------------------------------ the pipeline
def test_a_four_channel_model_without_the_channel_is_refused(uv_model, uv_set):
    pipe = Pipeline(str(uv_model), PipelineConfig(threads=1))
    s = _sample(uv_set)
    with pytest.raises(MissingChannelError) as e:
        pipe.detect(s.image, mm_per_px=s.mm_per_px)
    msg = str(e.value)
    assert isinstance(e.value, ModelError)
    assert str(uv_model) in msg and "parts stage takes 4 channels" in msg and "no uv image" in msg
    with pytest.raises(MissingChannelError):
        pipe.model.run_parts(np.zeros((1, 128, 128, 3), np.uint8))
    with pytest.raises(ValueError, match="fluorescence image as"):
        pipe.detect(s.image, mm_per_px=s.mm_per_px, uv=s.uv[:-1])


def _oracle_finder(s, pipe, mm_per_px=None):
    """The finder's logits drawn from the truth, so every scallop reaches the parts stage
    whatever a 6-step finder makes of the frame (``mm_per_px``: the scale detect is told)."""
    H, W = s.image.shape[:2]

    def run_finder(coarse, uv=None):
        h, w = coarse.shape[:2]
        g = (mm_per_px or s.mm_per_px) / pipe.coarse_mm
        inst = cv2.resize(s.instances, (int(round(W * g)), int(round(H * g))), interpolation=cv2.INTER_NEAREST)
        tgt = np.zeros((h, w), np.uint8)
        tgt[: inst.shape[0], : inst.shape[1]] = finder_target(inst, 1)
        return np.stack([np.where(tgt == c, 8.0, -8.0) for c in range(3)]).astype(np.float32)

    return run_finder


def _spy_parts(model, seen: list):
    orig = model.run_parts

    def run_parts(crops, crops_uv=None):
        out = orig(crops, crops_uv)
        seen.append((crops.copy(), None if crops_uv is None else crops_uv.copy(), out))
        return out

    return run_parts


@pytest.mark.parametrize("scale", [1.0, 0.75])  # the crop enlarged (bilinear), shrunk (area)
def test_the_uv_crops_are_cut_and_resampled_exactly_as_the_colour_crops(uv_model, uv_set, monkeypatch, scale):
    pipe = Pipeline(str(uv_model), PipelineConfig(threads=1))
    s = _sample(uv_set)
    mm = s.mm_per_px * scale
    seen: list = []
    monkeypatch.setattr(pipe.model, "run_finder", _oracle_finder(s, pipe, mm))
    monkeypatch.setattr(pipe.model, "run_parts", _spy_parts(pipe.model, seen))
    grey = np.dstack([s.uv] * 3)  # a colour frame whose planes are the uv image
    pipe.detect(grey, mm_per_px=mm, uv=s.uv)
    crops, uv_crops, logits = seen[0]
    n = len(s.scallops)
    assert crops.shape == (n, 128, 128, 3) and uv_crops.shape == (n, 128, 128) and logits.shape == (n, 4, 128, 128)
    assert np.array_equal(uv_crops, crops[..., 0])


def test_with_the_channel_it_returns_detections_of_the_documented_shapes(uv_model, uv_set, monkeypatch):
    pipe = Pipeline(str(uv_model), PipelineConfig(threads=1))
    s = _sample(uv_set)
    dets = pipe.detect(s.image, mm_per_px=s.mm_per_px, uv=s.uv)  # the model's own finder
    assert isinstance(dets, Detections)
    monkeypatch.setattr(pipe.model, "run_finder", _oracle_finder(s, pipe))
    dets = pipe.detect(s.image, mm_per_px=s.mm_per_px, uv=s.uv)
    n = len(dets)
    assert n == len(s.scallops) == 5
    for name, shape in (
        ("xyxy", (n, 4)),
        ("center_px", (n, 2)),
        ("grasp_px", (n, 2)),
        ("pull_dir", (n, 2)),
        ("uro_center_px", (n, 2)),
        ("area_mm2", (n,)),
        ("confidence", (n,)),
        ("uro_found", (n,)),
        ("uro_confidence", (n,)),
        ("pickable", (n,)),
        ("reason", (n,)),
    ):
        assert getattr(dets, name).shape == shape, name
    assert len(dets.contours) == n


def test_a_uro_seen_only_in_fluorescence_reaches_the_parts_stage(uv_model, uv_set, monkeypatch):
    """The uro's colour painted over with its scallop's meat colour: only the fluorescence
    image still shows it. Darkening the uro in the fluorescence image as well changes the
    4-channel model's parts logits there, and changes nothing for the colour-only model."""
    s = _sample(uv_set)
    uro = s.parts == 4
    k = int(np.bincount(s.instances[uro]).argmax())
    meat = (s.instances == k) & np.isin(s.parts, (1, 2))
    painted = s.image.copy()
    painted[uro] = np.median(s.image[meat], axis=0).astype(np.uint8)
    dark = s.uv.copy()
    dark[uro] = np.uint8(np.median(s.uv[meat]))
    assert float(s.uv[uro].mean()) - float(dark[uro].mean()) > 80  # the glow that was there

    def parts_logits(pipe, uv):
        seen: list = []
        monkeypatch.setattr(pipe.model, "run_finder", _oracle_finder(s, pipe))
        monkeypatch.setattr(pipe.model, "run_parts", _spy_parts(pipe.model, seen))
        pipe.detect(painted, mm_per_px=s.mm_per_px, uv=uv)
        return seen[0]

    pipe = Pipeline(str(uv_model), PipelineConfig(threads=1))
    _, uv_a, glow = parts_logits(pipe, s.uv)
    _, uv_b, flat = parts_logits(pipe, dark)
    where = uv_a != uv_b  # the uros' pixels in the crops (every uro was painted over)
    assert where.sum((1, 2)).tolist() == [201, 182, 230, 400, 349]
    diff = np.abs(glow - flat).max(1)  # (n, S, S): the largest change over the classes
    # 20 px (15 mm) and more from any changed pixel: outside what the change can reach there.
    far = cv2.dilate(where.astype(np.uint8).reshape(-1, 128), np.ones((41, 41), np.uint8)).reshape(where.shape) == 0
    # Measured: 0.028 on the uros (the logits' spread is 0.14 after 6 steps), 1e-7 far off.
    assert float(diff[where].mean()) > 0.01
    assert float(diff[far].mean()) < 1e-5
    colour = Pipeline(None, PipelineConfig(threads=1))
    _, none_a, c_glow = parts_logits(colour, s.uv)
    _, none_b, c_flat = parts_logits(colour, dark)
    assert none_a is None and none_b is None  # a colour-only model is never handed the channel
    assert np.array_equal(c_glow, c_flat)


# ------------------------------------------------------------------ training
def test_a_four_channel_training_refuses_a_version_1_set(tmp_path):
    root = tmp_path / "v1"
    write_dataset(root, 1, seed=2, settings=DatasetSettings(resolutions=[(640, 480)], scallops=(1, 2)))
    cfg = TrainConfig(**TINY, uv_stages=("parts",))
    with pytest.raises(DatasetError) as e:
        prepare_dirs([root], [], cfg)
    msg = str(e.value)
    assert str(root) in msg and "version 1" in msg and "no fluorescence images" in msg and "--fluorescence" in msg
    s = next(iter(load_dataset(root)))
    with pytest.raises(DatasetError, match="no fluorescence image"):
        prepare_one(s, cfg)
    # From the command line: refused before any simulator frame is drawn (an outside try waited
    # minutes of drawing for this refusal).
    import scallop.app.commands.train as train_cmd
    from scallop.app.cli import main

    def never(*a, **k):
        raise AssertionError("drew simulator frames before checking --sim-data")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_cmd, "sim_material", never)
        assert (
            main(
                [
                    "train",
                    "--channels",
                    "4",
                    "--sim-data",
                    str(root),
                    "--frames",
                    "20",
                    "--out",
                    str(tmp_path / "m.onnx"),
                ]
            )
            == 3
        )
    with pytest.raises(ValueError, match="allowed stage names"):
        TrainConfig(uv_stages=("crops",))


def test_geometry_moves_the_uv_plane_with_the_colour_and_colour_jitter_does_not_touch_it(uv_set, monkeypatch):
    import scallop.models.train as T

    cfg4 = TrainConfig(**TINY, uv_stages=("finder", "parts"))
    cfg3 = TrainConfig(**TINY)
    prep4, prep3 = Prepared(), Prepared()
    for s in load_dataset(uv_set):
        prepare_one(s, cfg3, into=prep3)
        s.uv = s.image[..., 1].copy()  # the uv plane a copy of the green one: geometry shows
        prepare_one(s, cfg4, into=prep4)
    assert prep4.parts_imgs[0].shape[2] == 4 and prep4.finder_imgs[0].shape[2] == 4
    assert all(np.array_equal(a, b[..., :3]) for a, b in zip(prep3.parts_imgs, prep4.parts_imgs))
    assert all(np.array_equal(a[..., 1], a[..., 3]) for a in prep4.parts_imgs + prep4.finder_imgs)

    # The colour planes are the batches a colour-only run draws from the same seed.
    b3, b4 = Batcher(prep3, cfg3)[5], Batcher(prep4, cfg4)[5]
    assert np.array_equal(b3[0], b4[0][..., :3]) and np.array_equal(b3[2], b4[2][..., :3])
    assert np.array_equal(b3[1], b4[1]) and np.array_equal(b3[3], b4[3])

    # Without any jitter the uv plane is the green plane, moved by the same warps; with a
    # colour jitter that inverts the colour the uv plane is still what the warp gave.
    monkeypatch.setattr(T, "fluorescence", lambda uv, rng: uv)
    monkeypatch.setattr(T, "recolour_background", lambda im, mask, rng: im)
    monkeypatch.setattr(T, "photometric", lambda im, rng: im)
    for xp, _, xf, _ in [Batcher(prep4, cfg4)[i] for i in (1, 2)]:
        assert np.array_equal(xp[..., 3], xp[..., 1]) and np.array_equal(xf[..., 3], xf[..., 1])
    monkeypatch.setattr(T, "photometric", lambda im, rng: 255 - im)
    xp, _, xf, _ = Batcher(prep4, cfg4)[1]
    assert np.array_equal(xp[..., 3], 255 - xp[..., 1]) and np.array_equal(xf[..., 3], 255 - xf[..., 1])


# ------------------------------------------------------------------ scallop detect
def test_detect_uses_the_companion_with_a_four_channel_model_and_names_a_missing_one(
    uv_model, uv_set, tmp_path, capsys
):
    s = _sample(uv_set)
    src = tmp_path / "pair"
    src.mkdir()
    frame = src / f"x{s.image_path.suffix}"
    shutil.copy(s.image_path, frame)
    shutil.copy(s.image_path.with_name(s.image_path.stem + ".uv.png"), src / "x.uv.png")
    mm = f"{s.mm_per_px:.6f}"
    assert main(["detect", "--model", str(uv_model), "--mm-per-px", mm, "--json", str(frame)]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["channels"] == ["bgr", "uv"] and rec["image"] == str(frame)

    # Without --model: the pair goes to the shipped four-channel model, a lone frame to the
    # colour-only one, each saying which it had.
    alone0 = tmp_path / "lone"
    alone0.mkdir()
    shutil.copy(frame, alone0 / "y.png")
    assert main(["detect", "--mm-per-px", mm, "--json", str(frame), str(alone0 / "y.png")]) == 0
    recs = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert [r["channels"] for r in recs] == [["bgr", "uv"], ["bgr"]]
    # The colour-only model named for a pair: the companion is not read.
    from scallop.models.runtime import default_model_path

    assert main(["detect", "--model", str(default_model_path()), "--mm-per-px", mm, "--json", str(frame)]) == 0
    assert json.loads(capsys.readouterr().out)["channels"] == ["bgr"]

    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(frame, alone / frame.name)
    assert main(["detect", "--model", str(uv_model), "--mm-per-px", mm, str(alone / frame.name)]) == 1
    err = capsys.readouterr().err
    assert f"{alone / 'x.uv.png'} is missing" in err and "takes 4 channels" in err and "Traceback" not in err

    cv2.imwrite(str(alone / "x.uv.png"), np.zeros((10, 10), np.uint8))
    assert main(["detect", "--model", str(uv_model), "--mm-per-px", mm, str(alone / frame.name)]) == 1
    assert "registered to the colour frame's pixels" in capsys.readouterr().err


# ------------------------------------------------------------------ the shipped four-channel model
def _found_on(dets, uro_px: np.ndarray, mm_per_px: float) -> bool:
    """A grasp of ``dets`` within 1 mm of one of the uro's pixels (the scorer's rule)."""
    ys, xs = np.nonzero(uro_px)
    for j in np.nonzero(dets.uro_found)[0]:
        gx, gy = dets.grasp_px[j]
        if np.sqrt(((xs - gx) ** 2 + (ys - gy) ** 2).min()) * mm_per_px <= 1.0:
            return True
    return False


def test_the_shipped_four_channel_model_finds_uros_seen_only_in_fluorescence(tmp_path, capsys):
    """Every uro painted over with its scallop's mantle colour: the colour-only model finds
    none of them, the shipped four-channel model finds them from their glow."""
    root = tmp_path / "set"
    write_dataset(
        root,
        5,
        seed=77,
        settings=DatasetSettings(resolutions=[(640, 480)], mm_per_px=(0.5, 0.5), scallops=(3, 5), fluorescence=True),
    )
    from scallop.models.runtime import default_uv_model_path

    four = Pipeline(str(default_uv_model_path()), PipelineConfig(threads=1))
    colour = Pipeline(None, PipelineConfig(threads=1))
    assert four.takes_uv and not colour.takes_uv
    found = {"four": 0, "colour": 0}
    uros = 0
    pair = None
    for s in load_dataset(root):
        uro = s.parts == 4
        painted = s.image.copy()
        ids = [int(k) for k in np.unique(s.instances[uro]) if k]
        for k in ids:
            mantle = (s.instances == k) & (s.parts == 1)
            painted[uro & (s.instances == k)] = np.median(s.image[mantle], axis=0).astype(np.uint8)
        d4 = four.detect(painted, mm_per_px=s.mm_per_px, uv=s.uv)
        dc = colour.detect(painted, mm_per_px=s.mm_per_px)
        for k in ids:
            mine = uro & (s.instances == k)
            uros += 1
            hit = _found_on(d4, mine, s.mm_per_px)
            found["four"] += hit
            found["colour"] += _found_on(dc, mine, s.mm_per_px)
            if hit and pair is None:
                pair = (s, painted)
    # Measured: 5 of 11 with the channel, 0 without.
    assert uros == 11 and found["colour"] == 0 and found["four"] >= 4, found

    # scallop detect on the frame pair, without --model: the four-channel model is chosen.
    s, painted = pair
    cv2.imwrite(str(tmp_path / "x.png"), painted)
    cv2.imwrite(str(tmp_path / "x.uv.png"), s.uv)
    assert main(["detect", "--mm-per-px", "0.5", "--json", str(tmp_path / "x.png")]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["channels"] == ["bgr", "uv"] and any(r["uro"] is not None for r in rec["scallops"])
    # The colour-only model on the colour frame alone sees no uro on it.
    (tmp_path / "x.uv.png").unlink()
    assert main(["detect", "--mm-per-px", "0.5", "--json", str(tmp_path / "x.png")]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["channels"] == ["bgr"] and all(r["uro"] is None for r in rec["scallops"])


def test_no_uro_where_the_fluorescence_camera_did_not_see_is_outside_channel_never_clean(tmp_path):
    """The channel registered onto the colour frame is 0 where the fluorescence camera did not
    see. A scallop found without a uro that reaches there is ``outside_channel`` (diverted),
    never ``no_uro`` (passed on as clean); every other verdict, and every scallop the camera
    saw whole, is as without the mask. A colour-only model ignores the mask."""
    from scallop.models.runtime import default_uv_model_path
    from scallop.vision.detections import REASON_NO_URO, REASON_OUTSIDE_CHANNEL

    root = tmp_path / "set"
    product = {"no_uro_share": 0.5, "hidden_uro_share": 0.0}
    settings = DatasetSettings(
        resolutions=[(640, 480)], mm_per_px=(0.5, 0.5), scallops=(5, 7), fluorescence=True, touch_share=0.0
    )
    settings.product = dataclasses.replace(settings.product, **product)
    write_dataset(root, 4, seed=41, settings=settings)
    four = Pipeline(str(default_uv_model_path()), PipelineConfig(threads=1))
    colour = Pipeline(None, PipelineConfig(threads=1))
    kinds = {"outside": 0, "reaching_other": 0, "seen_whole": 0}
    for s in load_dataset(root):
        h, w = s.uv.shape
        seen = np.ones((h, w), bool)
        seen[:, : w // 2] = False  # the left half unseen: registration left 0 there
        uv = np.where(seen, s.uv, 0).astype(np.uint8)
        plain = four.detect(s.image, mm_per_px=s.mm_per_px, uv=uv)
        masked = four.detect(s.image, mm_per_px=s.mm_per_px, uv=uv, uv_seen=seen)
        assert len(plain) == len(masked)  # the finder reads colour only: the same scallops
        for i in range(len(plain)):
            reaches = bool((plain.contours[i][:, 0] < w // 2).any())
            if reaches and not plain.cut_by_border[i] and plain.reason[i] == REASON_NO_URO:
                assert masked.reason[i] == REASON_OUTSIDE_CHANNEL and not masked.pickable[i]
                kinds["outside"] += 1
            else:
                assert masked.reason[i] == plain.reason[i] and masked.pickable[i] == plain.pickable[i]
                np.testing.assert_array_equal(masked.grasp_px[i], plain.grasp_px[i])
                kinds["reaching_other" if reaches else "seen_whole"] += 1
        # Seen everywhere: nothing changes.
        every = four.detect(s.image, mm_per_px=s.mm_per_px, uv=s.uv, uv_seen=np.ones((h, w), bool))
        assert list(every.reason) == list(four.detect(s.image, mm_per_px=s.mm_per_px, uv=s.uv).reason)
        c = colour.detect(s.image, mm_per_px=s.mm_per_px, uv=uv, uv_seen=seen)
        assert REASON_OUTSIDE_CHANNEL not in set(c.reason)
    print(kinds)
    assert kinds["outside"] >= 3 and kinds["reaching_other"] >= 1 and kinds["seen_whole"] >= 3, kinds
    with pytest.raises(ValueError, match=r"fluorescence camera's view as \(H, W\) bool"):
        four.detect(s.image, mm_per_px=s.mm_per_px, uv=s.uv, uv_seen=seen.astype(np.uint8))
    with pytest.raises(ValueError, match=r"fluorescence camera's view as \(H, W\) bool"):
        four.detect(s.image, mm_per_px=s.mm_per_px, uv=s.uv, uv_seen=seen[:10])
