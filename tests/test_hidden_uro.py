"""A uro the camera sees too little of to grip (a sliver beside a mantle flap) is reported
``hidden_uro`` and goes to rework, never on as clean: the pipeline's verdict, and the scorer's
count of what the line would let go with its uro."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from scallop.vision.detections import Detections
from scallop.vision.evaluate import Tally, score_frame
from scallop.vision.pipeline import Pipeline, PipelineConfig


def _dets(rows):
    """Detections at the given (centre_px, grasp_px or None, pickable, reason) rows."""
    n = len(rows)
    g = np.array([r[1] if r[1] is not None else (np.nan, np.nan) for r in rows], float).reshape(n, 2)
    return Detections(
        xyxy=np.zeros((n, 4)),
        center_px=np.array([r[0] for r in rows], float).reshape(n, 2),
        area_mm2=np.full(n, 2000.0),
        confidence=np.ones(n),
        uro_found=np.isfinite(g).all(1),
        grasp_px=g,
        pull_dir=np.tile([1.0, 0.0], (n, 1)),
        uro_confidence=np.where(np.isfinite(g).all(1), 0.9, 0.0),
        uro_area_mm2=np.full(n, 40.0),
        cut_by_border=np.zeros(n, bool),
        pickable=np.array([r[2] for r in rows], bool),
        reason=np.array([r[3] for r in rows], dtype=object),
        contours=[np.zeros((3, 2), np.float32)] * n,
    )


def _truth():
    """Two scallops 40 px across on a 100×200 frame: 1 with a uro at (20..24, 20..24), 2 without."""
    parts = np.zeros((100, 200), np.uint8)
    inst = np.zeros((100, 200), np.uint8)
    inst[10:50, 10:50], parts[10:50, 10:50] = 1, 1
    parts[20:25, 20:25] = 4
    parts[30:40, 30:40] = 3
    inst[10:50, 110:150], parts[10:50, 110:150] = 2, 1
    parts[30:40, 130:140] = 3
    facts = [
        {"id": 1, "visible_fraction": 1.0, "uro_present": True, "cut_by_border": False},
        {"id": 2, "visible_fraction": 1.0, "uro_present": False, "cut_by_border": False},
    ]
    return parts, inst, facts


@pytest.mark.parametrize(
    "uro_row, clean_row, passed, rework, clean_rework",
    [
        # Gripped on the uro; the clean one passed on: nothing lost, nothing reworked.
        (((30, 30), (22, 22), True, ""), ((130, 30), None, False, "no_uro"), 0, 0, 0),
        # The uro reported absent: it would leave the line with its uro.
        (((30, 30), None, False, "no_uro"), ((130, 30), None, False, "no_uro"), 1, 0, 0),
        # A sliver seen, too little to grip: to rework; so is the clean one with a hint.
        (((30, 30), None, False, "hidden_uro"), ((130, 30), None, False, "hidden_uro"), 0, 1, 1),
        # A pickable grasp off the uro: the arm picks meat and the uro goes on.
        (((30, 30), (45, 45), True, ""), ((130, 30), (120, 20), False, "ambiguous"), 1, 0, 1),
        # An unsure grasp off the uro is diverted.
        (((30, 30), (45, 45), False, "ambiguous"), ((130, 30), None, False, "no_uro"), 0, 1, 0),
    ],
)
def test_scorer_counts_what_the_line_would_let_go_and_what_it_would_rework(
    uro_row, clean_row, passed, rework, clean_rework
):
    parts, inst, facts = _truth()
    t = score_frame(_dets([uro_row, clean_row]), parts, inst, facts, mm_per_px=0.5)
    assert (t.with_uro, t.without_uro) == (1, 1)
    assert (t.uro_passed, t.uro_to_rework, t.no_uro_to_rework) == (passed, rework, clean_rework)
    s = t.summary()
    assert (s["uro_passed"], s["uro_to_rework"], s["no_uro_to_rework"]) == (passed, rework, clean_rework)
    # Each scallop with a uro is exactly one of: grasped on it, let go, reworked.
    assert t.grasp_on_uro + t.uro_passed + t.uro_to_rework == t.with_uro


def test_a_scallop_with_a_uro_that_is_not_found_at_all_is_let_go():
    parts, inst, facts = _truth()
    t = score_frame(_dets([((130, 30), None, False, "no_uro")]), parts, inst, facts, mm_per_px=0.5)
    assert (t.found, t.with_uro, t.uro_passed, t.uro_to_rework) == (1, 1, 1, 0)


@pytest.mark.parametrize(
    "mm_per_px, small, jaw_size_success",
    # 25 px of uro: 6.25 mm² at 0.5 mm/px (under the jaws' 12.6 mm² disk), 25 mm² at 1 mm/px.
    [(0.5, 1, None), (1.0, 0, 0.0)],
)
def test_uros_smaller_than_the_jaws_are_counted_apart(mm_per_px, small, jaw_size_success):
    parts, inst, facts = _truth()
    sliver = ((30, 30), None, False, "hidden_uro")
    t = score_frame(_dets([sliver]), parts, inst, facts, mm_per_px=mm_per_px)
    assert (t.with_uro, t.small_uro, t.small_uro_on, t.small_uro_passed) == (1, small, 0, 0)
    s = t.summary()
    assert s["small_uro_share"] == small and s["uro_success_jaw_size"] == jaw_size_success
    # Gripped on it: counted on the small uros too; let go: counted as passed there too.
    t = score_frame(_dets([((30, 30), (22, 22), True, "")]), parts, inst, facts, mm_per_px=mm_per_px)
    assert (t.grasp_on_uro, t.small_uro_on) == (1, small)
    t = score_frame(_dets([((30, 30), None, False, "no_uro")]), parts, inst, facts, mm_per_px=mm_per_px)
    assert (t.uro_passed, t.small_uro_passed) == (1, small)


@pytest.mark.parametrize(
    "grasp, pickable, reason, counts",
    [
        # (on the uro, picked on it, diverted with jaws that would reach the adductor)
        ((21, 21), True, "", (1, 1, 0)),
        ((21, 21), False, "ambiguous", (1, 0, 0)),
        # 1.4 mm from the adductor's corner: the jaws' 2 mm disk would reach it.
        ((28, 28), False, "ambiguous", (1, 0, 1)),
        ((28, 28), False, "too_close", (1, 0, 1)),
        ((45, 45), False, "ambiguous", (0, 0, 0)),
    ],
)
def test_uro_success_splits_into_picked_and_diverted_near_the_adductor(grasp, pickable, reason, counts):
    parts, inst, facts = _truth()
    parts[20:30, 20:30] = 4  # a uro reaching the adductor at (30, 30)
    t = score_frame(_dets([((30, 30), grasp, pickable, reason)]), parts, inst, facts, mm_per_px=0.5)
    assert (t.grasp_on_uro, t.uro_on_picked, t.uro_on_diverted_near_adductor) == counts
    s = t.summary()
    assert (s["uro_picked"], s["uro_diverted_near_adductor"]) == counts[1:]
    assert s["counts"]["uro_on_picked"] == counts[1]


@pytest.mark.parametrize(
    "grasp, mm_per_px, near",
    [
        # The adductor spans rows and columns 30..39: a grasp at column 28 is 2 px from it.
        ((28, 35), 1.0, 0),  # exactly the jaws' 2 mm: not inside them
        ((28, 35), 0.99, 1),  # 1.98 mm
        ((27, 35), 0.5, 1),  # 3 px at 0.5 mm/px: 1.5 mm
        ((29, 35), 1.0, 1),  # 1 mm
        ((26, 32), 0.5, 0),  # 4 px: 2.0 mm exactly
    ],
)
def test_near_the_adductor_is_strictly_inside_the_jaws_radius(grasp, mm_per_px, near):
    """A grasp exactly the jaws' radius from the labelled adductor is not within it (the
    transform's root of a perfect square is exact in float32)."""
    parts, inst, facts = _truth()
    parts[20:25, 20:25] = 1
    parts[32:36, 22:30] = 4  # the uro, beside the adductor, under the grasps
    t = score_frame(_dets([((30, 30), grasp, True, "")]), parts, inst, facts, mm_per_px=mm_per_px)
    assert t.grasp_near_adductor == near
    assert t.adductor_mm[0] == pytest.approx((30 - grasp[0]) * mm_per_px, abs=1e-5)


def test_scorer_shares_are_unknown_without_scallops_to_divide_by():
    s = Tally().summary()
    assert s["uro_passed"] is None and s["uro_to_rework"] is None and s["no_uro_to_rework"] is None
    assert s["uro_picked"] is None and s["uro_diverted_near_adductor"] is None


def test_the_threshold_is_range_checked():
    for bad in (float("nan"), -0.1, 1.5):
        with pytest.raises(ValueError, match="hidden_uro_probability"):
            PipelineConfig(hidden_uro_probability=bad)


@pytest.fixture(scope="module")
def flap_frames():
    from scallop.sim.dataset import DatasetSettings, random_sample

    # 1.0 mm/px, a fold over 50–80 % of every uro's width: slivers of a few pixels.
    st = replace(
        DatasetSettings(), resolutions=[(960, 600)], mm_per_px=(1.0, 1.0), scallops=(6, 9), hard=("mantle_flap",)
    )
    return [random_sample(i, 5, st) for i in range(10)]


def _score(pipe, frames):
    total = Tally()
    reasons = []
    for s in frames:
        d = pipe.detect(s.image, mm_per_px=s.truth.mm_per_px)
        # Evidence is measured exactly where no uro was found to grip.
        assert np.array_equal(np.isnan(d.uro_evidence), d.uro_found)
        ev = d.uro_evidence[~d.uro_found]
        assert np.all((ev >= 0) & (ev <= 1))
        hid = d.reason == "hidden_uro"
        assert not d.pickable[hid].any() and not d.uro_found[hid].any()
        assert np.all(d.uro_evidence[hid] > pipe.config.hidden_uro_probability)
        reasons += list(d.reason)
        facts = [f.to_dict() for f in s.truth.scallops]
        total.add(score_frame(d, s.truth.parts, s.truth.instances, facts, s.truth.mm_per_px))
    return total, reasons


def test_slivers_beside_a_mantle_flap_go_to_rework_instead_of_on_as_clean(flap_frames):
    pipe = Pipeline(None, PipelineConfig())
    off = Pipeline(pipe.model, PipelineConfig(hidden_uro_probability=1.0))
    on_t, on_r = _score(pipe, flap_frames)
    off_t, off_r = _score(off, flap_frames)
    # The same scallops and the same grips: only the verdict on the ones without a grip moves.
    assert on_t.with_uro == off_t.with_uro >= 40
    assert on_t.grasp_on_uro == off_t.grasp_on_uro
    assert on_r.count("hidden_uro") >= 10 and off_r.count("hidden_uro") == 0
    # Measured on these frames (seed 5, the shipped colour model): 25 of 51 flapped uros let go
    # without the verdict, 10 with it; the scallops without a uro are not sent to rework.
    assert off_t.uro_passed >= 2 * on_t.uro_passed
    assert on_t.uro_to_rework - off_t.uro_to_rework == off_t.uro_passed - on_t.uro_passed
    assert on_t.no_uro_to_rework == off_t.no_uro_to_rework


def test_switching_the_rule_off_is_allowed_but_never_silent(tmp_path):
    """An engineer may turn the rule off from the panel (to diagnose); an alarm stays while it
    is off, in the configuration file as from the panel, and clears when it is set back."""
    from tests.helpers import make_line

    line = make_line(tmp_path / "a", overrides={"vision": {"hidden_uro_probability": 1.0}})
    try:
        a = line.alarms.get("vision.hidden_uro_off")
        assert a.active and a.severity == "warning" and "hidden_uro_probability = 1" in a.text
        # Back to the shipped value, the one the alarm names (not stop 35's 0.3).
        assert a.text.endswith("set it back to 0.15") and a.params["default"] == "0.15"
        line.update_config({"vision.hidden_uro_probability": 0.15}, "suzuki")
        assert not line.alarms.is_active("vision.hidden_uro_off")
        line.update_config({"vision.hidden_uro_probability": 0.95}, "suzuki")
        assert line.alarms.is_active("vision.hidden_uro_off")
    finally:
        line.close()


def test_a_scale_the_model_was_not_measured_at_raises_a_warning_until_it_is_back(tmp_path):
    """The line knows the scales its model's figures cover (their bins in the model file): a
    camera outside them is not refused, never silent either."""
    from scallop.app.evaluation import measured_scales
    from scallop.app.line import settings
    from tests.helpers import make_line

    line = make_line(tmp_path / "a")
    try:
        assert measured_scales(line.pipeline.model.info.meta) == (0.3, 1.0)
        assert not line.alarms.is_active("vision.scale_untested")  # the simulator's 0.5 mm/px
        line._scale = 1.25
        settings.check_model_scale(line)
        a = line.alarms.get("vision.scale_untested")
        assert a.active and a.severity == "warning"
        assert a.params == {"scale": "1.25", "low": "0.3", "high": "1"}
        assert "1.25 mm per pixel, outside the 0.3–1 mm/px the model scallop-seg was measured at" in a.text
        line._scale = 0.5
        settings.check_model_scale(line)
        assert not line.alarms.is_active("vision.scale_untested")
    finally:
        line.close()


@pytest.mark.parametrize(
    "meta, span",
    [
        ({"scallop.app.metrics": '{"per_scale": {"0.4-0.5": {"frames": 3}, "0.9-1.0": {"frames": 1}}}'}, (0.4, 1.0)),
        ({"scallop.metrics": '{"per_scale": {"1.2-1.3": {"frames": 2}}}'}, (1.2, 1.3)),  # older files
        ({"scallop.app.metrics": '{"per_scale": {"0.4-0.5": {"frames": 0}}}'}, None),  # a bin with no frames
        ({}, None),
        ({"scallop.app.metrics": "not json"}, None),
        ({"scallop.app.metrics": '{"per_scale": {"a-b": {"frames": 1}}}'}, None),
        ({"scallop.app.metrics": '{"per_scale": {"0.5-nan": {"frames": 1}}}'}, None),
        ({"scallop.app.metrics": '{"per_scale": [1, 2]}'}, None),
    ],
)
def test_measured_scales_reads_the_bins_or_says_none(meta, span):
    from scallop.app.evaluation import measured_scales

    assert measured_scales(meta) == span
