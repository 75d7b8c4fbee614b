"""From the line back to the model, end to end on the simulator: capture from a running line →
export COCO → the simulator's truth as the labeller → import → eval → fine-tune a few steps →
shadow → promote → rollback, each step checked by its numbers. And ``scallop eval`` on a COCO set
made from the simulator's truth gives the figures of ``scallop bench accuracy`` on the same frames.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from scallop.app.cli import main
from scallop.app.labels import CocoWriter
from scallop.models.runtime import default_model_path
from tests.helpers import capture_with_truth, make_line

pytestmark = pytest.mark.slow


def cli(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def cli_json(capsys, *argv) -> dict:
    rc, out, err = cli(capsys, *argv)
    assert rc == 0, err
    return json.loads(out.strip().splitlines()[-1])


def truth_coco(writer: CocoWriter, image_rel: str, truth_parts, truth_instances, facts, mm_per_px, conditions=()):
    iid = writer.add_image(
        image_rel, truth_parts.shape[1], truth_parts.shape[0], mm_per_px, conditions=list(conditions)
    )
    writer.add_truth(iid, truth_parts, truth_instances, facts)


def test_eval_on_a_coco_set_of_the_simulators_truth_gives_the_figures_of_bench_accuracy(tmp_path, capsys):
    from scallop.models.dataset import load_dataset
    from scallop.sim.dataset import DatasetSettings, write_dataset

    data = tmp_path / "sim"
    write_dataset(data, n=8, seed=424242, settings=DatasetSettings(mm_per_px=(0.5, 0.5)), overwrite=True)
    w = CocoWriter("truth")
    for s in load_dataset(data):
        conditions = [f"belt:{s.labels['look']['belt_colour']}"]
        truth_coco(w, f"../sim/images/{s.image_path.name}", s.parts, s.instances, s.scallops, s.mm_per_px, conditions)
    w.write(tmp_path / "coco" / "truth.json")

    ev = cli_json(capsys, "eval", tmp_path / "coco" / "truth.json", "--json", "--report", tmp_path / "r.html")
    bench = cli_json(capsys, "bench", "accuracy", "--data", data, "--json", "--out", tmp_path / "b.json")
    assert ev["scallops"] >= 15 and ev["counts"]["with_uro"] >= 10
    for key in ("recall", "precision", "uro_success", "adductor_hits", "no_uro_picked"):
        assert 0.0 <= ev[key] <= 1.0
    # per_gonad: the simulator's labels say each scallop's gonad, a COCO file does not.
    shared = {k: v for k, v in bench.items() if k not in ("seconds", "source", "failures_sample", "per_gonad")}
    assert {k: ev[k] for k in shared} == shared
    assert (tmp_path / "r.html").read_text().count("<h2>") >= 3


def test_capture_label_eval_finetune_shadow_promote_rollback(tmp_path, capsys):
    pytest.importorskip("torch")  # the train extra: CI installs it
    import onnx

    # ---- capture from a running line (the simulator's truth kept aside for the "labeller")
    cap, truths = capture_with_truth(tmp_path / "run1", overrides={"capture": {"routine_share": 0.5}})
    assert cap["kept"] >= 8 and cap["kept_unsure"] >= 1 and not cap["dropped"]
    sessions = list((tmp_path / "run1" / "captures").glob("capture-*"))
    assert len(sessions) == 1
    assert len(list((sessions[0] / "frames").glob("*.jpg"))) == cap["kept"]
    assert (sessions[0] / "outcomes.jsonl").read_text().count("\n") >= 3

    # ---- export COCO with the model's masks as pre-annotations
    coco_path = tmp_path / "to-label" / "coco.json"
    exported = cli_json(capsys, "labels", "export", sessions[0], "--out", coco_path)
    doc = json.loads(coco_path.read_text())
    assert exported["images"] == len(doc["images"]) == cap["kept"]
    cats = {c["id"]: c["name"] for c in doc["categories"]}
    pre = [cats[a["category_id"]] for a in doc["annotations"]]
    assert pre.count("scallop") >= 10 and pre.count("uro") >= 5 and pre.count("adductor") >= 5
    assert any(a["attributes"].get("outcome") == "picked" for a in doc["annotations"])
    assert all(im["mm_per_px"] == 0.5 for im in doc["images"])

    # ---- the labeller corrects: every annotation replaced by the simulator's truth
    labelled = CocoWriter("labelled")
    for im in doc["images"]:
        parts, inst, facts = truths[im["scallop"]["frame_index"]]
        truth_coco(labelled, "../to-label/" + im["file_name"], parts, inst, facts, im["mm_per_px"])
    labelled.write(tmp_path / "labelled" / "coco.json")

    # ---- import into the data-set format
    ds = tmp_path / "line-set"
    summary = cli_json(capsys, "labels", "import", tmp_path / "labelled" / "coco.json", "--out", ds)
    assert summary["images"] == cap["kept"]
    assert summary["counted"] >= 8 and summary["with_uro"] >= 5

    # ---- eval: the shipped model on the line's labelled frames, COCO and folder alike
    ev = cli_json(capsys, "eval", ds, "--json", "--report", tmp_path / "eval.html")
    assert ev["scallops"] == summary["counted"]
    assert ev["recall"] >= 0.9 and ev["uro_success"] >= 0.85 and ev["adductor_hits"] == 0.0
    ev_coco = cli_json(capsys, "eval", tmp_path / "labelled" / "coco.json", "--json", "--report", tmp_path / "e2.html")
    assert {k: ev_coco[k] for k in ("recall", "uro_success", "counts")} == {
        k: ev[k] for k in ("recall", "uro_success", "counts")
    }

    # ---- fine-tune a few steps from the shipped model, real frames held out by the seed
    tuned = tmp_path / "runs" / "line.onnx"
    rc, out, err = cli(
        capsys, "train", "--real", ds, "--init", default_model_path(), "--frames", 2, "--val-frames", 0,
        "--iters", 3, "--warmup", 1, "--lr", "1e-5", "--workers", 0, "--threads", 2, "--holdout-share", 0.3,
        "--seed", 7, "--out", tuned,
    )  # fmt: skip
    assert rc == 0, out + err
    meta = {p.key: p.value for p in onnx.load(str(tuned)).metadata_props}
    held = json.loads(meta["scallop.data"])["real_held_out"]["line-set"]
    assert len(held) == round(0.3 * summary["images"])
    assert json.loads(meta["scallop.app.metrics"])["real_holdout"]["frames"] == len(held)
    assert json.loads(meta["scallop.train_config"])["iters"] == 3

    # ---- registry: the candidate beside the shipped model
    reg = tmp_path / "registry"
    cli_json(capsys, "model", "--registry", reg, "add", tuned, "--name", "line-v1")
    listed = cli_json(capsys, "model", "--registry", reg, "list", "--json")
    assert [m["name"] for m in listed["models"] if m["live"]] == [listed["live"]]
    assert {m["name"] for m in listed["models"]} == {"line-v1", listed["live"]}
    shipped = listed["live"]

    # ---- shadow: the candidate beside the live model on a running line
    ov = {
        "models": {"registry": str(reg), "reference_set": str(ds), "poll_s": 60.0},
        "vision": {"shadow_model": "line-v1", "shadow_share": 1.0},
    }
    line = make_line(tmp_path / "run2", seed=3, overrides=ov)
    try:
        line.start("test")
        line.run_stepped(6.0, on_frame=lambda ln, f: ln.shadow.wait_idle())
        sh = line.snapshot().shadow
        assert sh["model"] == "line-v1" and sh["frames"] >= 8 and sh["scallops"] >= 5
        # Three steps at a tiny learning rate barely move the model: it agrees with the live one.
        assert sh["verdict_agreement"] >= 0.9 and sh["grasp_agreement"] >= 0.9
        metrics = line.metrics_text()
        assert 'scallop_shadow_verdict_agreement_ratio{model="line-v1"}' in metrics
        assert f'scallop_model_info{{model="{shipped}"' in metrics

        # ---- promote: gated on the reference set, taken at the next frame without stopping
        promoted = cli_json(
            capsys, "model", "--registry", reg, "--reference", ds, "promote", "line-v1", "--user", "eng"
        )
        assert promoted["action"] == "promote" and not any(v["worse"] for v in promoted["gate"].values())
        assert promoted["gate"]["uro_success"]["n"] == ev["counts"]["with_uro"]
        frames_before = line.frames
        assert line.poll_models()
        line.run_stepped(2.0)
        assert line.model["name"] == "line-v1" and line.frames > frames_before
        assert line.state.value == "running"

        # ---- rollback: the shipped model again, the same way
        back = cli_json(capsys, "model", "--registry", reg, "rollback", "--user", "eng")
        assert back["model"] == shipped and back["from"] == "line-v1"
        assert line.poll_models()
        line.run_stepped(1.0)
        assert line.model["name"] == shipped
    finally:
        line.close()
    con = sqlite3.connect(tmp_path / "run2" / "record.sqlite")
    try:
        events = [(k, json.loads(d)) for k, d in con.execute("SELECT kind, detail FROM events WHERE kind='model'")]
        rows = con.execute("SELECT SUM(frames), SUM(scallops), SUM(verdicts_agree) FROM shadow").fetchone()
    finally:
        con.close()
    assert [(d["model"], d["action"]) for _, d in events] == [("line-v1", "promote"), (shipped, "rollback")]
    final = line.snapshot().shadow
    assert rows == (final["frames"], final["scallops"], final["verdicts_agree"])  # the record holds every interval

    # ---- a model that cannot find scallops is refused, and the refusal is kept
    bad = tmp_path / "runs" / "bad.onnx"
    rc, out, err = cli(capsys, "train", "--frames", 1, "--val-frames", 0, "--iters", 2, "--warmup", 1,
                       "--workers", 0, "--out", bad)  # fmt: skip
    assert rc == 0, out + err
    cli_json(capsys, "model", "--registry", reg, "add", bad, "--name", "untrained")
    rc, out, err = cli(capsys, "model", "--registry", reg, "--reference", ds, "promote", "untrained")
    assert rc == 5 and "worse than the live model" in err and "uro_success" in err
    history = json.loads((reg / "registry.json").read_text())["history"]
    assert history[-1]["action"] == "promote_refused" and history[-1]["model"] == "untrained"
    assert json.loads((reg / "registry.json").read_text())["live"] == shipped
    assert Path(reg / "models" / "untrained.onnx").is_file()


def test_a_capture_disk_that_takes_every_other_write_is_one_alarm(tmp_path, monkeypatch):
    """A nearly full capture disk: each write it took cleared the alarm, the next raised it (an
    outside try: 10 alarm rows in 22 s). It clears after DISK_QUIET_S without a failure."""
    import errno
    import threading

    import scallop.app.capture as cap_mod
    from scallop.app.alarms import Alarms
    from scallop.app.capture import CaptureSettings, FrameCapture

    class HalfFull:
        n = 0

        def write(self, text):
            HalfFull.n += 1
            if HalfFull.n % 2:
                raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            pass

    alarms = Alarms()
    monkeypatch.setattr(cap_mod, "DISK_QUIET_S", 0.3)
    cap = FrameCapture(
        CaptureSettings(
            folder=tmp_path / "cap", budget_bytes=10**6, routine_share=0.1, low_margin=0.05, min_uro_confidence=0.8
        ),
        alarms,
        lambda: {"name": "m", "sha256": "x"},
        lambda raw: float(raw),
    )
    cap._outcomes = HalfFull()
    worker = threading.Thread(target=cap._run)
    worker.start()
    try:
        for _ in range(8):
            cap._q.put(("outcomes", [{"track": 1}]))
        while not cap._q.empty():
            time.sleep(0.01)
        time.sleep(0.05)
        raised = [a for a in alarms.visible() if a.code == "capture.disk" or "captured frames" in a.text]
        assert len(raised) == 1 and raised[0].active and cap.dropped["disk"] == 4
        HalfFull.n = 1  # the disk takes everything from now on
        time.sleep(0.35)
        cap._q.put(("outcomes", [{"track": 2}]))
        while not cap._q.empty():
            time.sleep(0.01)
        time.sleep(0.05)
        assert not alarms.is_active("capture.disk")
    finally:
        cap._q.put(None)
        worker.join(5)
