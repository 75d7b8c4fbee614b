"""Training material, batches and schedule (numpy only), plus a short real training run
when torch is installed (the ``train`` extra)."""

from __future__ import annotations

import numpy as np
import pytest

from scallop.models.dataset import Sample
from scallop.models.train import (
    GILL_MEAT,
    MEAT,
    PART_TO_CLASS,
    Batcher,
    Prepared,
    TrainConfig,
    finder_target,
    lr_factor,
    prepare,
    prepare_one,
)
from scallop.sim.dataset import random_sample


@pytest.fixture(scope="module")
def material():
    cfg = TrainConfig(seed=3, batch_parts=4, batch_finder=2)
    prep = Prepared()
    for i in range(3):
        s = random_sample(i, 5)
        prepare_one(
            Sample(str(i), s.stored_image(), s.truth.parts, s.truth.instances, s.truth.mm_per_px), cfg, 1.0, prep
        )
    return cfg, prep


def test_finder_target_marks_the_boundary_between_touching_instances():
    inst = np.zeros((20, 30), np.uint16)
    inst[2:18, 2:15] = 1
    inst[2:18, 15:28] = 2  # touching along column 15
    t = finder_target(inst, edge_px=1)
    assert set(np.unique(t)) == {0, 1, 2}
    assert (t[10, 14:16] == 2).all()  # the shared boundary is edge on both sides
    assert t[10, 8] == 1 and t[10, 21] == 1  # interiors are core
    assert t[0, 0] == 0


def test_prepare_one_extracts_one_patch_per_scallop(material):
    cfg, prep = material
    assert len(prep.finder_imgs) == len(prep.finder_tgts) == 3
    P = int(cfg.crop * 1.5)
    assert len(prep.parts_imgs) >= 3
    assert all(p.shape == (P, P, 3) for p in prep.parts_imgs)
    assert all(t.shape == (P, P) and t.max() <= GILL_MEAT for t in prep.parts_tgts)
    # Finder images are at the finder scale: 1280-wide 0.5 mm/px frame → 320 px at 2 mm/px.
    s = random_sample(0, 5)
    h, w = s.image.shape[:2]
    fh, fw = prep.finder_imgs[0].shape[:2]
    assert abs(fw - w * s.truth.mm_per_px / cfg.finder_mm_per_px) <= 1.5


def test_prepare_and_extend_agree(material):
    cfg, prep = material
    other = Prepared()
    s = random_sample(0, 5)
    prepare([Sample("0", s.stored_image(), s.truth.parts, s.truth.instances, s.truth.mm_per_px)], cfg, 1.0, other)
    merged = Prepared()
    merged.extend(other)
    merged.extend(other)
    assert len(merged.finder_imgs) == 2 and len(merged.parts_imgs) == 2 * len(other.parts_imgs)
    assert np.array_equal(other.finder_tgts[0], prep.finder_tgts[0])


def test_batch_i_depends_only_on_seed_and_i(material):
    cfg, prep = material
    a, b = Batcher(prep, cfg), Batcher(prep, cfg)
    xa = a[7]
    b[3]  # drawing other batches first changes nothing
    xb = b[7]
    for u, v in zip(xa, xb):
        assert np.array_equal(u, v)
    assert not np.array_equal(a[8][0], xa[0])
    xp, yp, xf, yf = xa
    assert xp.shape == (4, cfg.crop, cfg.crop, 3) and xp.dtype == np.uint8
    assert yp.shape == (4, cfg.crop, cfg.crop) and yp.max() <= GILL_MEAT
    assert xf.shape == (2, cfg.finder_patch, cfg.finder_patch, 3)
    assert yf.shape == (2, cfg.finder_patch, cfg.finder_patch) and yf.max() <= 2


def test_lr_schedule_warms_up_then_decays_to_two_percent():
    f = [lr_factor(i, 10, 110) for i in range(111)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0)
    assert all(x >= y for x, y in zip(f[10:], f[11:]))  # monotone decay after warm-up
    assert f[110] == pytest.approx(0.02)
    assert f[60] == pytest.approx(0.02 + 0.98 * 0.5)


def test_short_training_run_exports_a_model_the_runtime_accepts(material, tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from scallop.models.runtime import SegModel
    from scallop.models.train import train

    cfg, prep = material
    cfg = TrainConfig(seed=3, batch_parts=4, batch_finder=2, iters=6, warmup=2, threads=1, log_every=3)
    lines = []
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = train(prep, tmp_path / "m.onnx", cfg, log=lines.append)
    # The export's tracing warning about the upsampling check is not shown to the user.
    assert not [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    assert out.is_file() and out.with_suffix(".pt").is_file()
    assert any(line.startswith("iter 6/6") for line in lines)
    model = SegModel(str(out), threads=1)
    assert model.info.parts.size == cfg.crop
    assert torch.load(out.with_suffix(".pt"))["config"]["iters"] == 6


def test_warmup_longer_than_training_is_refused(material, tmp_path):
    pytest.importorskip("torch")
    from scallop.models.train import train

    cfg, prep = material
    with pytest.raises(ValueError, match="warmup=300 must be below iters=100"):
        train(prep, tmp_path / "m.onnx", TrainConfig(iters=100), log=lambda m: None)


def test_time_budget_fixes_the_step_count_and_records_it(material, tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from scallop.models.train import train

    _, prep = material
    cfg = TrainConfig(
        seed=3, batch_parts=4, batch_finder=2, iters=400, warmup=6, time_budget_s=0.01, threads=1, log_every=50
    )
    lines = []
    out = train(prep, tmp_path / "m.onnx", cfg, log=lines.append)
    # A budget this small leaves the least the rule allows: warm-up + 100, in whole hundreds.
    assert any(line.endswith("training for 100 steps") for line in lines), lines
    saved = torch.load(out.with_suffix(".pt"))["config"]
    assert saved["iters"] == 100 and saved["time_budget_s"] == 0.0  # reruns with --iters 100 match


def test_no_uro_share_sets_the_share_of_training_scallops_without_a_uro():
    from scallop.app.commands.train import sim_settings
    from scallop.sim.dataset import random_sample

    def without(share):
        st = sim_settings(False, 0.0, share)
        facts = [f for i in range(12) for f in random_sample(i, 7, st).truth.scallops]
        # Upside-down scallops show none whatever the share: counted among those right way up.
        up = [f for f in facts if not f.upside_down]
        return sum(not f.has_uro for f in up), len(up)

    none, n = without(0.0)
    assert none == 0 and n > 15
    half, n = without(0.5)
    assert 0.25 * n < half < 0.75 * n
    # The data sets' own share when not given.
    assert sim_settings(False, 0.0, None).product.no_uro_share == 0.05


def test_a_warmup_as_long_as_training_is_refused_before_drawing(capsys):
    from scallop.app.cli import main

    assert main(["train", "--iters", "5", "--warmup", "10", "--frames", "2400", "--workers", "0"]) == 2
    assert "--warmup 10 must be below --iters 5" in capsys.readouterr().err


def test_gill_is_meat_kept_apart_in_the_parts_targets():
    # bg, mantle, gonad, adductor, uro, gill
    assert PART_TO_CLASS[:6].tolist() == [0, MEAT, MEAT, 2, 3, GILL_MEAT]


def test_gill_pixels_are_meat_to_the_loss_and_weigh_gill_weight():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    from scallop.models.train import _loss

    rng = np.random.default_rng(7)
    logits = torch.from_numpy(rng.normal(size=(2, 4, 6, 6)).astype(np.float32))
    target = rng.integers(0, 4, size=(2, 6, 6)).astype(np.uint8)
    target[0, :2] = GILL_MEAT
    weights = [1.0, 1.0, 1.5, 3.0]
    as_meat = torch.from_numpy(np.where(target == GILL_MEAT, MEAT, target)).long()
    plain = F.cross_entropy(logits, as_meat, weight=torch.tensor(weights))
    # Weight 1: exactly torch's weighted cross-entropy with gill taken as meat.
    assert float(_loss(logits, target, weights, None)) == pytest.approx(float(plain), rel=1e-6)
    # Weight 4: the weighted mean with gill pixels counted four times.
    nll = -torch.log_softmax(logits, 1).gather(1, as_meat[:, None])[:, 0].numpy()
    w = np.asarray(weights)[as_meat.numpy()] * np.where(target == GILL_MEAT, 4.0, 1.0)
    want = float((w * nll).sum() / w.sum())
    assert float(_loss(logits, target, weights, None, 4.0)) == pytest.approx(want, rel=1e-5)
    # The Dice term sees gill as meat too: adding it changes nothing about which pixels are uro.
    with_dice = float(_loss(logits, target, weights, 3, 4.0))
    p = torch.softmax(logits, 1)[:, 3]
    g = (as_meat == 3).float()
    dice = 1.0 - (2 * (p * g).sum() + 1.0) / (p.sum() + g.sum() + 1.0)
    assert with_dice == pytest.approx(want + float(dice), rel=1e-5)


@pytest.mark.parametrize("value", ["0.5", "nan", "21"])
def test_gill_weight_is_range_checked(capsys, value):
    from scallop.app.cli import main

    assert main(["train", "--gill-weight", value, "--frames", "0"]) == 2
    assert f"--gill-weight={value}" in capsys.readouterr().err


def test_no_uro_share_is_range_checked(capsys):
    from scallop.app.cli import main

    assert main(["train", "--no-uro-share", "0.9", "--frames", "0"]) == 2
    assert "--no-uro-share=0.9 is out of range" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, want",
    [
        ("16,16,32", "expected four channel counts"),
        ("16,16,32,x", "expected four whole numbers"),
        ("16,16,32,3", "--parts-widths C4=3 is out of range"),
        ("16,16,32,nan", "expected four whole numbers"),
    ],
)
def test_widths_are_four_whole_channel_counts(capsys, text, want):
    from scallop.app.cli import main

    assert main(["train", "--parts-widths", text, "--frames", "0"]) == 2
    assert want in capsys.readouterr().err


def test_a_narrower_network_trains_exports_and_runs(material, tmp_path, capsys):
    """The widths reach the network, its checkpoint and the exported graph, which the runtime
    (rewrite included) runs; fine-tuning keeps a model's widths and refuses others."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from scallop.app.cli import main
    from scallop.models.runtime import SegModel
    from scallop.models.train import train

    _, prep = material
    cfg = TrainConfig(
        seed=3, batch_parts=4, batch_finder=2, iters=3, warmup=1, threads=1, log_every=3,
        finder_widths=(16, 16, 32, 48), parts_widths=(8, 16, 16, 32),
    )  # fmt: skip
    out = train(prep, tmp_path / "narrow.onnx", cfg, log=lambda m: None)
    saved = torch.load(out.with_suffix(".pt"))
    assert tuple(saved["config"]["parts_widths"]) == (8, 16, 16, 32)
    assert saved["state_dict"]["parts.stem.0.weight"].shape[0] == 8
    model = SegModel(str(out), threads=1)
    logits = model.run_parts(np.zeros((2, cfg.crop, cfg.crop, 3), np.uint8))
    assert logits.shape == (2, 4, cfg.crop, cfg.crop) and np.isfinite(logits).all()
    for init in (out, out.with_suffix(".pt")):
        rc = main(["train", "--init", str(init), "--parts-widths", "16,24,32,48", "--frames", "0"])
        assert rc == 2 and "is a parts network of widths 8,16,16,32" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"garbage\x00\xff", None])
def test_a_file_that_is_no_checkpoint_is_refused_in_one_line(tmp_path, capsys, content):
    torch = pytest.importorskip("torch")
    from scallop.app.cli import main

    bad = tmp_path / "bad.pt"
    if content is None:
        torch.save(torch.zeros(3), bad)  # a torch file, but no weights and config of ours
    else:
        bad.write_bytes(content)
    assert main(["train", "--init", str(bad), "--frames", "0"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"scallop train: error: {bad}: not a checkpoint written by scallop train (a .pt file with its weights and config)"
    ]
