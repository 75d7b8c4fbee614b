"""The parts of the model loop on their own: the promotion gate's arithmetic and the registry's
history, the shadow's comparison and its never-waiting hand-over, the capture's queue and disk
budget, the record's shadow table and its migration, the engineer's capture switch."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from scallop.app.capture import CaptureSettings, FrameCapture
from scallop.app.config import load_config
from scallop.app.line.channel import Registered
from scallop.app.registry import PromotionRefused, Registry, gate, wilson
from scallop.app.shadow import Shadow, compare
from scallop.errors import ConfigError, StateError
from scallop.models.runtime import default_model_path
from scallop.vision.detections import Detections

# ---------------------------------------------------------------------------- the gate


def test_wilson_interval_matches_the_textbook_values():
    lo, hi = wilson(95, 100)
    assert (lo, hi) == pytest.approx((0.88825, 0.97846), abs=1e-4)  # p 0.95, n 100, z 1.96
    assert wilson(0, 50)[0] == 0.0 and round(wilson(0, 50)[1], 4) == 0.0713


def _summary(uro, n_uro, no_uro, n_no, add, n_grasps):
    return {
        "uro_success": uro,
        "no_uro_picked": no_uro,
        "adductor_hits": add,
        "near_adductor": add,
        "counts": {"with_uro": n_uro, "without_uro": n_no, "grasps": n_grasps, "pickable_grasps": n_grasps},
    }


def test_gate_refuses_only_what_is_worse_beyond_the_candidates_interval():
    live = _summary(0.99, 300, 0.0, 20, 0.0, 300)
    same_ish = gate(live, _summary(0.98, 300, 0.0, 20, 0.0, 300))  # 98 % of 300: interval reaches 99 %
    assert not any(v["worse"] for v in same_ish.values())
    worse = gate(live, _summary(0.93, 300, 0.0, 20, 0.0, 300))
    assert worse["uro_success"]["worse"] and worse["uro_success"]["interval"][1] < 0.99
    one_hit = gate(live, _summary(0.99, 300, 0.0, 20, 1 / 300, 300))  # one grasp on the adductor
    assert one_hit["adductor_hits"]["worse"]
    no_uro = gate(live, _summary(0.99, 300, 3 / 20, 20, 0.0, 300))
    assert no_uro["no_uro_picked"]["worse"] and not no_uro["uro_success"]["worse"]


def test_registry_history_rolls_back_promotion_by_promotion(tmp_path):
    reg = Registry(tmp_path / "reg")
    shipped = reg.ensure_live()
    assert reg.ensure_live().name == shipped.name and len(reg.entries()) == 1
    with pytest.raises(StateError, match="nothing to roll back to"):
        reg.rollback()
    with pytest.raises(PromotionRefused, match="models.reference_set: no labelled reference set"):
        reg.promote(shipped.name, "")
    # Promotions without the gate's work, as the registry records them (the gate is tested above).
    index = reg.index()
    for name in ("a", "b"):
        index["history"].append({"action": "promote", "model": name, "from": index["live"]})
        index["live"] = name
    reg._save(index)
    (tmp_path / "reg" / "models" / "a.json").write_text(json.dumps({"sha256": "a" * 64, "added": 1}))
    assert reg.live_stack() == [shipped.name, "a", "b"]
    assert reg.rollback(user="eng")["model"] == "a"
    assert reg.rollback()["model"] == shipped.name
    with pytest.raises(StateError):
        reg.rollback()
    with pytest.raises(KeyError, match="no model 'zz' in the registry"):
        reg.get("zz")


def test_registry_add_checks_the_model_and_names(tmp_path):
    reg = Registry(tmp_path / "reg")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(Exception, match="not a loadable ONNX model"):
        reg.add(bad)
    with pytest.raises(ConfigError, match="use letters, digits"):
        reg.add(default_model_path(), name="../x")
    e = reg.add(default_model_path(), name="same")
    assert reg.add(default_model_path(), name="other").name == "same"  # the same file is the same entry
    assert e.card["seed"] == "0" or e.card["seed"] == 0
    assert e.card["metrics"]["recall"] > 0.99


def test_a_registry_and_a_model_file_together_are_refused():
    with pytest.raises(ConfigError, match="give one"):
        load_config(overrides={"vision": {"model": "x.onnx"}, "models": {"registry": "reg"}})
    with pytest.raises(ConfigError, match=r"shadow_cpu_share=0.0 is out of range"):
        load_config(overrides={"vision": {"shadow_cpu_share": 0.0}})


# ---------------------------------------------------------------------------- the shadow


def dets(rows):
    """Detections from (x, y, pickable, reason, grasp_x) rows."""
    d = Detections.empty()
    if not rows:
        return d
    n = len(rows)
    return Detections(
        xyxy=np.zeros((n, 4)),
        center_px=np.array([[r[0], r[1]] for r in rows], float),
        area_mm2=np.ones(n),
        confidence=np.ones(n),
        uro_found=np.array([r[2] for r in rows]),
        grasp_px=np.array([[r[4], r[1]] for r in rows], float),
        pull_dir=np.zeros((n, 2)),
        uro_confidence=np.ones(n),
        uro_area_mm2=np.ones(n),
        cut_by_border=np.zeros(n, bool),
        pickable=np.array([r[2] for r in rows]),
        reason=np.array([r[3] for r in rows], dtype=object),
        contours=[np.zeros((3, 2), np.float32)] * n,
    )


def test_compare_counts_verdicts_grasps_and_scallops_one_model_missed():
    live = dets([(100, 100, True, "", 100), (300, 100, False, "no_uro", 0), (500, 100, True, "", 500)])
    cand = dets([(101, 100, True, "", 101), (300, 102, True, "", 300), (900, 100, True, "", 900)])
    a = compare(live, cand, mm_per_px=0.5)
    assert (a.scallops, a.verdicts_agree, a.verdict_differs, a.live_only, a.shadow_only) == (4, 1, 1, 1, 1)
    assert (a.grasps_compared, a.grasps_agree) == (1, 1) and a.disagrees
    far = compare(dets([(100, 100, True, "", 100)]), dets([(100, 100, True, "", 104)]), 0.5)
    assert (far.grasps_compared, far.grasps_agree, far.verdicts_agree) == (1, 0, 1)


class SlowPipeline:
    def __init__(self, result):
        self.result = result
        self.go = threading.Event()
        self.calls = 0

    def detect(self, image, mm_per_px=None, uv=None, uv_seen=None):
        self.calls += 1
        self.uv, self.uv_seen = uv, uv_seen
        self.go.wait(5.0)
        return self.result


def test_the_shadow_never_waits_it_skips_frames_while_busy_and_out_of_its_share():
    d = dets([(100, 100, True, "", 100)])
    pipe = SlowPipeline(d)
    sh = Shadow(pipe, {"name": "cand", "sha256": "0"}, share=1.0, cpu_share=1.0)
    try:
        frame = SimpleNamespace(image=None, index=0)
        assert sh.offer(frame, d, 0.5)
        for _ in range(5):
            assert not sh.offer(frame, d, 0.5)  # at once, while the candidate is still working
        pipe.go.set()
        assert sh.wait_idle()
        f = sh.figures()
        assert (f["frames"], f["skipped_busy"], f["verdict_agreement"]) == (1, 5, 1.0)
        sh.share = 0.25
        taken = sum(sh.offer(frame, d, 0.5) and sh.wait_idle() for _ in range(8))
        assert taken == 2 and sh.figures()["skipped_sample"] == 6
        # The fluorescence image the live model read reaches the candidate with its frame, and
        # so does the part of the frame it covers.
        sh.share = 1.0
        uv, seen = np.zeros((4, 4), np.uint8), np.ones((4, 4), bool)
        assert (
            sh.offer(frame, d, 0.5, Registered(uv, seen)) and sh.wait_idle() and pipe.uv is uv and pipe.uv_seen is seen
        )
        # A candidate that reads the channel skips a frame without it (never a failure).
        pipe.takes_uv = True
        assert not sh.offer(frame, d, 0.5) and sh.figures()["skipped_no_channel"] == 1
        assert sh.figures()["failures"] == 0
    finally:
        pipe.go.set()
        sh.stop()


def test_the_shadow_rests_in_proportion_to_its_work():
    rests = []
    t = iter(np.arange(0, 100, 0.5))  # each frame takes 0.5 s of its clock
    sh = Shadow(
        SlowPipeline(dets([])),
        {"name": "c"},
        share=1.0,
        cpu_share=0.25,
        clock=lambda: next(t),
        sleep=rests.append,
    )
    try:
        sh.pipeline.go.set()
        sh.offer(SimpleNamespace(image=None, index=0), dets([]), 0.5)
        sh.wait_idle()
        for _ in range(100):
            if rests:
                break
            threading.Event().wait(0.01)
    finally:
        sh.stop()
    assert rests and rests[0] == pytest.approx(1.5)  # 0.5 s of work, 1.5 s of rest: a quarter of a core


# ---------------------------------------------------------------------------- the capture


class Alarms:
    def __init__(self):
        self.raised = {}

    def raise_(self, key, severity, source, text, params=None):
        self.raised[key] = text

    def clear(self, key):
        self.raised.pop(key, None)


def frame(i):
    return SimpleNamespace(image=np.full((48, 64, 3), i % 255, np.uint8), index=i, timestamp=float(i), encoder=10 * i)


def capture(tmp_path, budget=10**9, routine=1.0):
    s = CaptureSettings(tmp_path / "cap", budget, routine, 0.1, 0.55)
    return FrameCapture(s, Alarms(), lambda: {"name": "m", "sha256": "0"}, lambda raw: raw / 10.0)


def test_a_full_queue_drops_the_capture_never_the_frame_loop(tmp_path):
    cap = capture(tmp_path)
    cap.start()
    block = threading.Event()
    real = cap._write_frame
    cap._write_frame = lambda *a: (block.wait(5.0), real(*a))
    try:
        kept = [cap.on_analysed(frame(i), dets([]), 0.5) for i in range(20)]
        assert kept.count(False) >= 20 - 9 and cap.status()["dropped"]["queue"] == kept.count(False)
    finally:
        block.set()
        cap.stop()
    assert cap.kept == kept.count(True)


def test_past_the_budget_unsure_frames_replace_routine_ones(tmp_path):
    cap = capture(tmp_path, budget=3000)
    cap.start()
    sure, unsure = dets([(10, 10, True, "", 10)]), dets([(10, 10, False, "ambiguous", 10)])
    for i in range(12):
        cap.on_analysed(frame(i), sure, 0.5)
        threading.Event().wait(0.02)  # one at a time: this test is about the budget, not the queue
    routine = cap.kept
    assert cap.dropped["budget"] > 0 and cap.bytes <= 3000
    cap.on_analysed(frame(100), unsure, 0.5)
    cap.stop()
    assert cap.dropped["replaced"] >= 1 and cap.kept_unsure == 1 and cap.kept == routine + 1
    names = {p.name for p in (tmp_path / "cap").glob("*/frames/*.json")}
    assert "00000100.json" in names
    meta = json.loads(next((tmp_path / "cap").glob("*/frames/00000100.json")).read_text())
    assert meta["why"] == ["ambiguous"] and meta["encoder"] == 1000 and meta["detections"][0]["reason"] == "ambiguous"


def test_a_frame_read_with_the_fluorescence_channel_is_kept_with_its_companion(tmp_path):
    """The registered fluorescence image the model read goes beside the frame, losslessly, as
    the spec's x.uv.png; a replaced frame takes its companion with it."""
    from scallop.app.capture import read_capture
    from scallop.imagefiles import companion_of

    cap = capture(tmp_path, budget=12000)
    cap.start()
    uv = np.tile(np.arange(64, dtype=np.uint8), (48, 1))  # every grey level kept as it was
    sure, unsure = dets([(10, 10, True, "", 10)]), dets([(10, 10, False, "hidden_uro", 10)])
    cap.on_analysed(frame(0), sure, 0.5, channel=Registered(uv))
    cap.on_analysed(frame(1), unsure, 0.5)  # a colour-only frame (the pair was dropped)
    # The fluorescence camera saw three quarters of frame 2: its JSON says so, and a scallop
    # found there without a uro makes it worth a labeller's look.
    seen = np.ones((48, 64), bool)
    seen[:, 48:] = False
    cap.on_analysed(frame(2), dets([(10, 10, False, "outside_channel", 10)]), 0.5, channel=Registered(uv, seen, 0.75))
    threading.Event().wait(0.1)
    session = cap.session
    _, frames, _ = read_capture(session)
    (img0, meta0), (img1, meta1), (_, meta2) = frames
    assert meta0["fluorescence"] is True and meta1["fluorescence"] is False and meta1["why"] == ["hidden_uro"]
    assert (meta0["fluorescence_seen_share"], meta1["fluorescence_seen_share"]) == (1.0, None)
    assert meta2["fluorescence_seen_share"] == 0.75 and meta2["why"] == ["outside_channel"]
    assert np.array_equal(cv2.imread(str(companion_of(img0)), cv2.IMREAD_UNCHANGED), uv)
    assert companion_of(img1) is None
    assert cap.bytes == sum(p.stat().st_size for p in (session / "frames").iterdir())
    # Past the budget, an unsure frame replaces the routine frame 0, companion and all.
    for i in range(2, 40):
        cap.on_analysed(frame(i), unsure, 0.5, channel=Registered(uv))
        threading.Event().wait(0.02)
    cap.stop()
    assert cap.dropped["replaced"] >= 1 and not (session / "frames" / "00000000.uv.png").exists()
    assert not list((session / "frames").glob("*.part"))


def test_routine_frames_are_kept_at_their_share_evenly(tmp_path):
    cap = capture(tmp_path, routine=0.25)
    cap.start()
    kept = [cap.on_analysed(frame(i), dets([]), 0.5) for i in range(16)]
    cap.stop()
    assert [i for i, k in enumerate(kept) if k] == [3, 7, 11, 15]


# ---------------------------------------------------------------------------- the record


def test_shadow_rows_go_into_the_record_and_old_records_are_migrated(tmp_path):
    from scallop.app.record import RecordWriter

    row = {
        "time": 1.0,
        "model": "cand",
        "model_sha256": "0" * 64,
        "live_model": "shipped",
        "frames": 10,
        "skipped": 3,
        "scallops": 20,
        "verdicts_agree": 19,
        "grasps_compared": 15,
        "grasps_agree": 15,
        "live_only": 0,
        "shadow_only": 1,
        "shadow_ms_p50": 12.5,
    }
    with RecordWriter(tmp_path / "r.sqlite") as w:
        w.shadow(row)
        with pytest.raises(Exception, match="shadow row lacks frames"):
            w.shadow({k: v for k, v in row.items() if k != "frames"})
    con = sqlite3.connect(tmp_path / "r.sqlite")
    assert con.execute("SELECT model, frames, verdicts_agree, shadow_ms_p50 FROM shadow").fetchall() == [
        ("cand", 10, 19, 12.5)
    ]
    con.close()
    # A version-3 record (no shadow table yet) and one that version 0.1.0 wrote come to this version.
    import shutil

    from scallop.app.record import SCHEMA_VERSION

    v3 = tmp_path / "v3.sqlite"
    RecordWriter(v3).close()
    con = sqlite3.connect(v3)
    # As version 3 wrote it: no shadow table, nor the lots and dispositions of version 5.
    con.executescript(
        "DROP TABLE shadow; DROP INDEX scallops_lot;"
        " ALTER TABLE scallops DROP COLUMN disposition; ALTER TABLE scallops DROP COLUMN lot;"
        " ALTER TABLE alarms DROP COLUMN lot; ALTER TABLE events DROP COLUMN lot; ALTER TABLE picks DROP COLUMN lot;"
        " PRAGMA user_version=3;"
    )
    con.close()
    v1 = tmp_path / "v1.sqlite"
    shutil.copy(Path(__file__).parent / "fixtures" / "v0.1.0" / "record.sqlite", v1)
    for path in (v3, v1):
        with RecordWriter(path) as w:
            w.shadow(row)
        con = sqlite3.connect(path)
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert con.execute("SELECT COUNT(*) FROM shadow").fetchone()[0] == 1
        assert "pid" in [r[1] for r in con.execute("PRAGMA table_info(runs)")]
        con.close()


# ---------------------------------------------------------------------------- the screen


def test_the_capture_switch_is_the_engineers(fake_line, fast_users):
    from fastapi.testclient import TestClient

    from scallop.app.web import create_app

    with TestClient(create_app(fake_line, fast_users)) as c:
        assert c.post("/api/capture", json={"on": True}).status_code == 401
        c.post("/api/login", json={"pin": "1111"})
        assert c.post("/api/capture", json={"on": True}).status_code == 403
        c.post("/api/login", json={"pin": "2222"})
        assert c.post("/api/capture", json={"on": "yes"}).status_code == 422
        r = c.post("/api/capture", json={"on": True})
        assert r.status_code == 200 and r.json()["capture"]["active"] is True
    assert fake_line.calls[-1][0] == "capture_on"
