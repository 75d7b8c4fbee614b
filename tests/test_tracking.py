"""Tracking across frames by belt position: one decision per scallop, best view wins."""

import numpy as np
import pytest

from scallop.app.tracking import Tracker
from scallop.vision.detections import Detections


def dets(centres_mm, grasp_mm=None, pickable=None, reasons=None, conf=None, centres_px=None):
    n = len(centres_mm)
    c = np.asarray(centres_mm, float).reshape(n, 2)
    g = np.full((n, 2), np.nan) if grasp_mm is None else np.asarray(grasp_mm, float).reshape(n, 2)
    pk = np.ones(n, bool) if pickable is None else np.asarray(pickable, bool)
    rs = np.array(reasons if reasons is not None else ["" if p else "no_uro" for p in pk], dtype=object)
    cf = np.full(n, 0.9) if conf is None else np.asarray(conf, float)
    px = np.full((n, 2), 640.0) if centres_px is None else np.asarray(centres_px, float)
    d = Detections(
        xyxy=np.zeros((n, 4)),
        center_px=px,
        area_mm2=np.full(n, 2000.0),
        confidence=np.ones(n),
        uro_found=np.isfinite(g).all(1),
        grasp_px=g.copy(),
        pull_dir=np.tile([1.0, 0.0], (n, 1)),
        uro_confidence=cf,
        uro_area_mm2=np.full(n, 40.0),
        cut_by_border=np.zeros(n, bool),
        pickable=pk,
        reason=rs,
        contours=[np.zeros((3, 2), np.float32)] * n,
    )
    d.center_mm, d.grasp_mm, d.pull_dir_mm = c, g, np.tile([1.0, 0.0], (n, 1))
    return d


def make(exit_x=300.0):
    # 10 counts per mm, direction +1: travel = count / 10.
    return Tracker(travel_of=lambda c: c / 10.0, exit_x=exit_x, commit_margin_mm=30.0)


def test_same_scallop_across_frames_is_one_track_and_one_decision():
    tr = make()
    out = []
    # A scallop at material u = -200: seen at x = -200, -50, 100, 250 as the belt moves 150 mm per frame.
    for k in range(6):
        travel = 150.0 * k
        x = -200.0 + travel
        d = dets([[x, 20.0]], grasp_mm=[[x + 10, 25.0]]) if x < 320 else dets([])
        out += tr.update(d, encoder=int(travel * 10), timestamp=k * 0.5, frame_index=k, image_size=(1280, 720))
    assert tr.total_tracks == 1
    assert len(out) == 1
    dec = out[0]
    assert dec.pick and dec.reason == ""
    assert len(dec.track.views) == 4
    # Grasp in material coordinates: x_B - travel at that view = -190 for every view.
    assert dec.grasp_uv == pytest.approx((-190.0, 25.0))


def test_two_scallops_close_together_stay_two_tracks():
    tr = make()
    tr.update(dets([[0.0, 0.0], [0.0, 60.0]]), 0, 0.0, 0, (1280, 720))
    out = tr.update(dets([[150.0, 0.5], [150.0, 59.0]]), 1500, 0.5, 1, (1280, 720))
    out += tr.flush()
    assert tr.total_tracks == 2
    assert sorted(len(d.track.views) for d in out) == [2, 2]


def test_best_view_prefers_pickable_and_confident_then_central():
    tr = make()
    out = tr.update(dets([[0.0, 0.0]], pickable=[False], reasons=["ambiguous"]), 0, 0.0, 0, (1280, 720))
    out += tr.update(dets([[100.0, 0.0]], grasp_mm=[[105.0, 1.0]], conf=[0.7]), 1000, 0.3, 1, (1280, 720))
    out += tr.update(dets([[200.0, 0.0]], grasp_mm=[[205.0, 2.0]], conf=[0.95]), 2000, 0.6, 2, (1280, 720))
    out += tr.update(dets([]), 3000, 0.9, 3, (1280, 720))
    (dec,) = out
    assert dec.pick
    assert dec.view.frame_index == 2 and dec.grasp_uv == pytest.approx((5.0, 2.0))


@pytest.mark.parametrize(
    "reasons, agreed",
    [
        (["no_uro", "no_uro", "no_uro"], "no_uro"),
        # A view that saw a uro outvotes any number that saw none: it goes to rework.
        (["no_uro", "no_uro", "ambiguous"], "ambiguous"),
        (["too_close", "no_uro"], "too_close"),
        # Among the views that saw one, the most common reason.
        (["ambiguous", "too_close", "too_close", "no_uro"], "too_close"),
        # "No uro" where the fluorescence camera did not see speaks only when no view saw more:
        # one it saw whole decides (passed on as clean only when it says so).
        (["outside_channel", "no_uro", "outside_channel"], "no_uro"),
        (["outside_channel", "outside_channel", "hidden_uro"], "hidden_uro"),
        (["outside_channel", "outside_channel"], "outside_channel"),
    ],
)
def test_no_pickable_view_gives_the_agreed_reason_and_no_uro_only_when_every_view_says_it(reasons, agreed):
    tr = make()
    out = []
    for k, r in enumerate(reasons):
        out += tr.update(dets([[100.0 * k, 0.0]], pickable=[False], reasons=[r]), 1000 * k, 0.3 * k, k, (1280, 720))
    out += tr.update(dets([]), 5000, 1.5, 5, (1280, 720))
    (dec,) = out
    assert not dec.pick and dec.reason == agreed


@pytest.mark.parametrize("where", [0, 1, 2])
def test_one_view_that_glimpsed_a_uro_outvotes_the_views_that_saw_none(where):
    """Two views without a uro and one with a sliver of one: the scallop goes to rework
    (hidden_uro), never on as clean, whichever frame saw the sliver."""
    tr = make()
    out = []
    for k in range(3):
        r = "hidden_uro" if k == where else "no_uro"
        out += tr.update(dets([[100.0 * k, 0.0]], pickable=[False], reasons=[r]), 1000 * k, 0.3 * k, k, (1280, 720))
    out += tr.update(dets([]), 4000, 1.2, 4, (1280, 720))
    (dec,) = out
    assert not dec.pick and dec.reason == "hidden_uro" and dec.view.frame_index == where


def test_flush_commits_everything_open():
    tr = make()
    tr.update(dets([[-100.0, 0.0], [0.0, 80.0]]), 0, 0.0, 0, (1280, 720))
    out = tr.flush()
    assert len(out) == 2 and not tr.tracks


def test_detections_without_belt_coordinates_are_refused():
    tr = make()
    d = dets([[0.0, 0.0]])
    d.center_mm = None
    with pytest.raises(ValueError, match="belt coordinates"):
        tr.update(d, 0, 0.0, 0, (1280, 720))


def test_a_second_track_of_a_decided_scallop_is_dropped_not_picked_again():
    tr = make()
    out = tr.update(dets([[0.0, 0.0]], grasp_mm=[[5.0, 0.0]]), 0, 0.0, 0, (1280, 720))
    # The scallop shows up twice in one frame, 20 mm apart (say a split outline): the first
    # detection continues its track, the second starts another. One decision may come out.
    out += tr.update(
        dets([[150.0, 0.0], [170.0, 0.0]], grasp_mm=[[155.0, 0.0], [175.0, 0.0]]), 1500, 0.5, 1, (1280, 720)
    )
    out += tr.update(dets([]), 4000, 1.5, 2, (1280, 720))
    assert tr.total_tracks == 2
    assert len(out) == 1 and tr.duplicates == 1


def test_cut_views_do_not_move_the_track_once_a_whole_view_exists():
    tr = make()
    d0 = dets([[-290.0, 0.0]], pickable=[False], reasons=["cut_by_border"])
    d0.cut_by_border[:] = True
    tr.update(d0, 0, 0.0, 0, (1280, 720))  # entering: centre biased by +10 mm
    tr.update(dets([[-150.0 + 0.0, 0.0]], grasp_mm=[[-145.0, 0.0]]), 1500, 0.5, 1, (1280, 720))
    (t,) = tr.tracks
    assert t.u == pytest.approx(-300.0)  # the whole view alone decides


def cut(d):
    d.cut_by_border[:] = True
    d.pickable[:] = False
    d.reason[:] = "cut_by_border"
    return d


def test_a_scallop_only_ever_seen_cut_is_never_passed_on_as_clean():
    """Riding along the side of the field: every view cut by the image's edge, none with a
    uro in its visible part. What the edge hid may carry the uro: cut_by_border, to rework."""
    tr = make()
    out = []
    for k in range(3):
        d = dets([[100.0 * k, 0.0]], pickable=[False], reasons=["no_uro"])
        d.cut_by_border[:] = True
        out += tr.update(d, 1000 * k, 0.3 * k, k, (1280, 720))
    out += tr.update(dets([]), 4000, 1.2, 4, (1280, 720))
    (dec,) = out
    assert not dec.pick and dec.reason == "cut_by_border"


def test_decided_at_the_last_frame_that_shows_it_whole_not_after():
    # 150 mm between exposures, view ends at x=300, scallop radius ~25 mm (area 2000 mm²).
    tr = make()
    got = {}
    for k in range(5):
        x = -150.0 + 150.0 * k  # -150, 0, 150, 300, 450
        d = (
            dets([[x, 0.0]], grasp_mm=[[x + 10, 0.0]])
            if x < 250
            else (cut(dets([[x - 20, 0.0]])) if x < 330 else dets([]))
        )
        for dec in tr.update(d, int(150.0 * k * 10), 0.5 * k, k, (1280, 720)):
            got[k] = dec
    # At x=150 the next exposure would find it at 300, on the edge: decide now, with the
    # three whole views, one frame before it leaves.
    assert list(got) == [2]
    assert len(got[2].track.views) == 3 and got[2].pick
    # Its edge seen leaving after the decision is the same scallop: no second track.
    assert tr.total_tracks == 1 and tr.late_views == 1


def test_slow_belt_keeps_the_track_open_while_whole_views_may_come():
    tr = make()
    out = []
    for k in range(6):
        x = 100.0 + 30.0 * k  # 30 mm between exposures
        out += tr.update(dets([[x, 0.0]], grasp_mm=[[x + 10, 0.0]]), int(30.0 * k * 10), 0.1 * k, k, (1280, 720))
        if x + 30.0 + 27.2 <= 300.0:  # the next view is still whole
            assert out == []
    assert len(out) == 1 and len(out[0].track.views) == 6


def test_sliver_seen_entering_is_absorbed_not_decided_instead_of_the_scallop():
    # A 72 mm scallop entering: only its downstream part shows, whose centroid lies 28 mm
    # downstream and 12 mm aside of the true centre, beyond the 25 mm match distance.
    tr = make()
    out = tr.update(cut(dets([[-280.0 + 28.0, 12.0]])), 0, 0.0, 0, (1280, 720))
    for k in range(1, 4):
        x = -280.0 + 150.0 * k
        d = dets([[x, 0.0]], grasp_mm=[[x + 10, 0.0]])
        d.area_mm2[:] = 4000.0  # radius 35.7 mm
        out += tr.update(d, int(150.0 * k * 10), 0.5 * k, k, (1280, 720))
    out += tr.update(dets([]), 6000, 2.0, 4, (1280, 720))
    assert len(out) == 1 and out[0].pick, out
    assert tr.absorbed == 1 and tr.duplicates == 0


def test_whole_views_decide_the_reason_over_cut_ones():
    tr = make()
    out = tr.update(cut(dets([[-280.0, 0.0]])), 0, 0.0, 0, (1280, 720))
    out += tr.update(dets([[-130.0, 0.0]], pickable=[False], reasons=["ambiguous"]), 1500, 0.5, 1, (1280, 720))
    out += tr.update(cut(dets([[20.0, 0.0]])), 3000, 1.0, 2, (1280, 720))
    out += tr.flush()
    (dec,) = out
    assert not dec.pick and dec.reason == "ambiguous"


def test_a_lone_pickable_view_contradicted_by_the_others_is_not_picked():
    # Two whole views find the uro 5 mm from where the third (the only pickable one) does and
    # call it ambiguous: where the uro is is uncertain, so no pick.
    def run(other_grasp_dy):
        tr = make()
        out = []
        for k, (pk, dy) in enumerate([(False, other_grasp_dy), (True, 0.0), (False, other_grasp_dy)]):
            x = -200.0 + 150.0 * k
            d = dets([[x, 0.0]], grasp_mm=[[x + 18.0, 2.0 + dy]], pickable=[pk], reasons=["" if pk else "ambiguous"])
            out += tr.update(d, int(150.0 * k * 10), 0.5 * k, k, (1280, 720))
        out += tr.flush()
        (dec,) = out
        return dec

    far = run(5.0)
    assert not far.pick and far.reason == "views_disagree"
    # The same views agreeing on the spot (1 mm apart): the pickable view decides.
    near = run(1.0)
    assert near.pick and near.view.frame_index == 1


def test_a_scallop_seen_only_cut_before_and_after_a_gap_in_the_frames_is_one_track():
    """A stalled encoder or a camera away for a few frames: the last view before the gap shows
    the scallop cut entering, the first after it cut leaving. Each cut view's centroid lies
    ~19 mm inside the field from the scallop's centre (radius 32 mm), on opposite sides, so
    the two are 38 mm apart: one scallop, one record row (it used to be two)."""
    tr = make(exit_x=300.0)
    u_true, bias = -1000.0, 19.0
    out = []
    for k, (travel, x) in enumerate([(700.0, u_true + 700.0 + bias), (1260.0, u_true + 1260.0 - bias)]):
        d = dets([[x, 5.0]], pickable=[False], reasons=["cut_by_border"])
        d.cut_by_border[:] = True
        out += tr.update(d, int(travel * 10), 0.2 * k, k, (1280, 720))
    out += tr.flush()
    assert tr.total_tracks == 1 and len(out) == 1
    (dec,) = out
    assert not dec.pick and dec.reason == "cut_by_border"
    assert dec.track.u == pytest.approx(u_true, abs=0.5)


def test_two_scallops_seen_only_cut_in_one_frame_stay_two_tracks():
    # Riding side by side along the field's edge, both cut in every view, 36 mm apart.
    tr = make()
    out = []
    for k in range(3):
        d = dets([[100.0 * k, 0.0], [100.0 * k + 36.0, 0.0]], pickable=[False, False], reasons=["no_uro"] * 2)
        d.cut_by_border[:] = True
        out += tr.update(d, 1000 * k, 0.3 * k, k, (1280, 720))
    out += tr.flush()
    assert tr.total_tracks == 2 and len(out) == 2
