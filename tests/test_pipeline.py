"""Vision pipeline: the fast paths give the same numbers as the plain formulations they
replace, crops sit where the geometry says, and detections on rendered frames match truth."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from scallop.vision.grasp import grasp_point, neighbour_px, not_first, softmax_rows, wins
from scallop.vision.pipeline import Pipeline, PipelineConfig


@pytest.fixture(scope="module")
def pipe():
    return Pipeline(None, PipelineConfig(threads=1))


# ------------------------------------------------------------------ class masks without argmax
@pytest.mark.parametrize("C", [2, 3, 4, 6])
def test_class_masks_equal_argmax_including_ties(C):
    rng = np.random.default_rng(C)
    # Small integers make many exact ties: argmax keeps the first of equal values.
    lg = rng.integers(-2, 3, size=(C, 40, 50)).astype(np.float32)
    ch = [lg[c] for c in range(C)]
    ref = lg.argmax(0)
    assert np.array_equal(not_first(ch), ref != 0)
    for c in range(1, C):
        assert np.array_equal(wins(ch, c), ref == c), c


def test_class_masks_batched_axis():
    rng = np.random.default_rng(1)
    lg = rng.normal(size=(3, 4, 16, 16)).astype(np.float32)
    ch = [lg[:, c] for c in range(4)]
    assert wins(ch, 3).shape == (3, 16, 16)
    assert np.array_equal(wins(ch, 2), lg.argmax(1) == 2)


@pytest.mark.parametrize("shape", [(4, 1, 1), (4, 7, 5), (3, 30, 40), (5, 2, 90), (8, 1, 1), (9, 1, 1), (9, 2, 3)])
def test_softmax_over_a_box_then_masked_equals_softmax_over_the_masked_pixels(shape):
    """The pipeline's uro confidence and evidence take the softmax over a blob's whole box, then
    its pixels; compared with thresholds, they must be the very float32 numbers of the softmax
    over the blob's pixels gathered first, not merely close ones."""
    rng = np.random.default_rng(sum(shape))
    blk = (rng.normal(size=shape) * 6).astype(np.float32)
    blk[:, 0, 0] = 3.0  # a pixel where every class ties
    mask = rng.random(shape[1:]) < 0.6
    mask[0, 0] = True
    for c in range(shape[0]):
        got = softmax_rows(list(blk), c)
        assert got.shape == shape[1:] and got.dtype == np.float32
        want = softmax_rows([blk[k][mask] for k in range(shape[0])], c)
        assert np.array_equal(got[mask], want)
    assert softmax_rows(list(blk), 0)[0, 0] == pytest.approx(1.0 / shape[0])
    assert np.allclose(sum(softmax_rows(list(blk), c) for c in range(shape[0])), 1.0, atol=1e-6)


def test_softmax_is_safe_from_overflow():
    blk = np.array([[[1000.0]], [[-1000.0]], [[0.0]]], np.float32)
    assert softmax_rows(list(blk), 0)[0, 0] == 1.0 and softmax_rows(list(blk), 1)[0, 0] == 0.0


def _blob_masks():
    one = np.zeros((9, 12), np.uint8)
    cv2.ellipse(one, (6, 4), (5, 3), 20, 0, 360, 1, -1)
    ring = np.ones((7, 7), np.uint8)
    ring[2:5, 2:5] = 0  # a hole: still one blob
    diagonal = np.eye(6, dtype=np.uint8)  # 8-connected only
    two = np.zeros((5, 9), np.uint8)
    two[0:2, 0:3] = 1
    two[3:5, 5:9] = 1
    rng = np.random.default_rng(2)
    specks = (rng.random((20, 25)) < 0.3).astype(np.uint8)
    specks[0, 0] = specks[-1, -1] = 1
    nested = np.ones((9, 9), np.uint8)
    nested[2:7, 2:7] = 0
    nested[4, 4] = 1  # a speck inside the ring's hole: two blobs, one outer border
    return [np.ones((1, 1), np.uint8), one, ring, diagonal, two, specks, nested]


@pytest.mark.parametrize("k", range(7))
def test_blob_stats_equal_opencv_connected_components(k):
    """One uro blob takes the short way (a border trace and the moments); every mask must give
    OpenCV's labels, areas, boxes and centroids, to the bit."""
    from scallop.vision.pipeline import _blobs

    mask = _blob_masks()[k]
    x, y, w, h = cv2.boundingRect(mask)
    mask = mask[y : y + h, x : x + w]
    n, lab, st, cen = _blobs(mask)
    n0, lab0, st0, cen0 = cv2.connectedComponentsWithStats(mask, connectivity=8)
    assert n == n0 and np.array_equal(st[1:], st0[1:]) and np.array_equal(cen[1:], cen0[1:])
    for j in range(1, n):
        assert np.array_equal(lab == j, lab0 == j)
    # One blob without a hole takes the short way (the mask itself as its labels).
    assert (lab is mask) == (k in (0, 1, 3))


# ------------------------------------------------------------------ finder input and instances
@pytest.mark.parametrize("factor", [0.5, 0.25, 0.125])
def test_halving_resize_equals_area_averaging_at_powers_of_two(pipe, factor):
    """2:1 bilinear steps average 2x2 blocks: INTER_AREA's numbers to one grey level."""
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, size=(720, 1280, 3), dtype=np.uint8)
    got = pipe._resize(img, factor)
    ref = cv2.resize(img, (int(1280 * factor), int(720 * factor)), interpolation=cv2.INTER_AREA)
    assert got.shape == ref.shape
    assert np.abs(got.astype(int) - ref).max() <= 1


@pytest.mark.parametrize("factor", [0.15, 0.4, 0.37])
def test_halvings_then_area_stay_near_area_averaging_at_other_factors(pipe, factor):
    """Not the same numbers (a block's edge blurs over one more pixel), but close on a picture
    with the frequencies a camera passes: about one grey level on average (bench hard at 0.3 and
    0.8 mm/px showed no figure worse for it)."""
    rng = np.random.default_rng(5)
    img = cv2.GaussianBlur(rng.integers(0, 256, size=(720, 1280, 3), dtype=np.uint8), (0, 0), 2.0)
    got = pipe._resize(img, factor)
    ref = cv2.resize(img, got.shape[1::-1], interpolation=cv2.INTER_AREA)
    d = np.abs(got.astype(int) - ref)
    assert d.mean() < 1.5 and np.percentile(d, 99) <= 5


@pytest.mark.parametrize(
    ("shape", "factor", "want"),
    [
        ((720, 1280), 0.15, (108, 192)),
        ((481, 641), 0.25, (120, 160)),
        ((720, 1280), 0.4, (288, 512)),
        ((100, 80), 2.0, (200, 160)),
    ],
)
def test_resize_gives_the_rounded_size_at_any_factor(pipe, shape, factor, want):
    img = np.full(shape, 77, np.uint8)  # one grey level: any averaging keeps it
    got = pipe._resize(img, factor)
    assert got.shape == want and (got == 77).all()


def test_instances_are_the_blobs_around_their_cores():
    """A blob with one core is that core's; a blob with two is split between them by nearness;
    a blob with none (a fragment) is nobody's, however near a core it lies."""
    fg = np.zeros((40, 60), bool)
    seeds = np.zeros((40, 60), np.int32)
    fg[5:15, 5:15] = True  # one core
    seeds[9:11, 9:11] = 1
    fg[20:30, 5:45] = True  # two cores, 20 px apart
    seeds[24:26, 14:16] = 2
    seeds[24:26, 34:36] = 3
    fg[5:15, 17:20] = True  # a fragment 2 px from the first blob
    # Core labels 5, 7, 9 (a dropped core's label 8 maps to 0) kept as scallops 1, 2, 3; one
    # pixel of each core stands for it.
    cores = np.zeros_like(seeds)
    for core_label, scallop in ((5, 1), (7, 2), (9, 3)):
        cores[seeds == scallop] = core_label
    remap = np.array([0, 0, 0, 0, 0, 1, 0, 2, 0, 3], np.int32)
    cores[26:28, 24:26] = 8  # a core too small to keep, between the two: not a seed of its own
    lab = Pipeline._assign(fg, cores, remap, (np.array([10, 15, 35]), np.array([9, 25, 24])))
    assert lab.dtype == np.int32 and lab.shape == fg.shape
    assert (lab[5:15, 5:15] == 1).all()
    assert (lab[20:30, 5:25] == 2).all() and (lab[20:30, 25:45] == 3).all()
    assert (lab[5:15, 17:20] == 0).all() and (lab[~fg] == 0).all()


@pytest.mark.parametrize("specks", [0, 253, 254, 300])
def test_instances_with_hundreds_of_foreground_fragments(specks):
    """Past 256 labels (255 blobs and the belt: a belt full of grit) the blob-to-scallop table
    no longer fits OpenCV's 8-bit lookup: the same labels come from the general path."""
    fg = np.zeros((80, 200), bool)
    cores = np.zeros((80, 200), np.int32)
    fg[5:25, 5:25] = True
    cores[12:16, 12:16] = 1
    fg[40:70, 150:190] = True
    cores[50:56, 160:166] = 2
    for i in range(specks):  # isolated one-pixel fragments, nobody's
        fg[30 + 2 * (i // 60), 2 * (i % 60) + 10] = True
    remap = np.array([0, 1, 2], np.int32)
    lab = Pipeline._assign(fg, cores, remap, (np.array([12, 160]), np.array([12, 50])))
    assert cv2.connectedComponents(fg.view(np.uint8), connectivity=8)[0] == 3 + specks
    assert (lab[5:25, 5:25] == 1).all() and (lab[40:70, 150:190] == 2).all()
    assert int((lab > 0).sum()) == 20 * 20 + 30 * 40


def _dumbbell(h=96, w=160):
    """Finder logits of two round scallops whose cores a bar joins: one core blob that the
    split separates (and, in doing so, empties its label)."""
    yy, xx = np.mgrid[:h, :w]
    lg = np.zeros((3, h, w), np.float32)
    lg[0] = 1.0
    for cx in (45, 85):
        d = np.hypot(xx - cx, yy - 48)
        lg[2][d < 16] = 2.0
        lg[1][d < 13] = 3.0
    lg[1][46:51, 45:86] = 3.0
    return lg


@pytest.mark.parametrize("min_scallop", [0.0, 300.0])
def test_a_split_blob_gives_its_pieces_even_with_no_minimum_core_area(pipe, min_scallop):
    """The label a split empties is no scallop's, at any minimum area: at 0 it was kept with
    no pixel, its centroid 0/0 (NaN) and detect() failed on it."""
    p = Pipeline(pipe.model, PipelineConfig(threads=1, min_core_area_mm2=0.0, min_scallop_area_mm2=min_scallop))
    labels, ks, conf, cx, cy = p._instances(_dumbbell(), (96, 160))
    assert list(ks) == [1, 2] and np.isfinite(conf).all()
    assert np.allclose(sorted(cx), [45, 85], atol=2) and np.allclose(cy, 48, atol=1)
    assert set(np.unique(labels)) == {0, 1, 2}


def test_a_frame_of_one_finder_pixel(pipe):
    """The smallest frame: no blob, and nothing that fails (a 1x1 compare with a scalar used to
    come back 4x1)."""
    p = Pipeline(pipe.model, PipelineConfig(threads=1, min_core_area_mm2=0.0, min_scallop_area_mm2=0.0))
    lg = np.zeros((3, 1, 1), np.float32)
    lg[1] = 1.0
    found = p._instances(lg, (1, 1))
    assert found is not None and list(found[1]) == [1] and found[0].shape == (1, 1)


# ------------------------------------------------------------------ normalisation
def _to_input_reference(model, bgr):
    x = bgr.astype(np.float32) * model._scale + model._offset
    if model.info.channel_order == "RGB":
        x = x[..., ::-1]
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


@pytest.mark.parametrize("order", ["BGR", "RGB"])
def test_to_input_matches_plain_formula(pipe, order):
    model = pipe.model
    if order == "RGB":  # a model that wants RGB with unequal per-channel statistics
        import copy

        model = copy.copy(model)
        model.info = replace(model.info, channel_order="RGB")
        model._scale = np.array([0.011, 0.013, 0.017], np.float32)
        model._offset = np.array([-1.5, -2.0, -2.5], np.float32)
    rng = np.random.default_rng(3)
    for shape in [(48, 80, 3), (5, 32, 32, 3), (2, 3, 8, 8, 3)]:
        bgr = rng.integers(0, 256, shape, np.uint8)
        got = model.to_input(bgr)
        assert got.dtype == np.float32 and got.flags.c_contiguous
        assert got.shape == shape[:-3] + (3,) + shape[-3:-1]
        assert np.array_equal(got, _to_input_reference(model, bgr))


# ------------------------------------------------------------------ grasp point on the uro's box
def _grasp_reference(pipe, uro, adductor, mm_px):
    """The whole-crop computation the box version replaces."""
    du = cv2.distanceTransform(cv2.copyMakeBorder(uro, 1, 1, 1, 1, cv2.BORDER_CONSTANT, 0), cv2.DIST_L2, 5)[1:-1, 1:-1]
    if not adductor.any():
        py, px = np.unravel_index(int(du.argmax()), du.shape)
        return py, px, float("inf")
    da = cv2.distanceTransform((~adductor).astype(np.uint8), cv2.DIST_L2, 5)
    for depth in np.arange(pipe.config.grip_clearance_mm, pipe.config.min_grip_depth_mm - 1e-9, -0.5):
        need = min(depth / mm_px, 0.8 * float(du.max()))
        score = np.where(du >= need, da + 0.01 * du, -1.0)
        py, px = np.unravel_index(int(score.argmax()), score.shape)
        if float(da[py, px]) * mm_px >= pipe.config.min_adductor_gap_mm:
            break
    return py, px, float(da[py, px]) * mm_px


def test_grasp_falls_back_to_a_shallower_point_away_from_a_hugging_adductor(pipe):
    """A uro lying along the adductor: every point 2 mm deep is within 2.75 mm of it, a point
    1 mm deep at the far side is not, and it must stay inside the uro."""
    mm = 0.5
    uro = np.zeros((60, 60), np.uint8)
    uro[20:28, 10:50] = 1  # 4 mm thick band
    add = np.zeros((60, 60), bool)
    add[10:20, 5:55] = True  # adductor right above it
    py, px, gap = grasp_point(uro, cv2.boundingRect(uro), add, mm, pipe.config)
    assert uro[py, px] == 1
    assert gap >= pipe.config.min_adductor_gap_mm
    assert py >= 25  # on the far side of the band
    assert uro[py, px] == 1 and (py - 19) * mm >= pipe.config.min_adductor_gap_mm
    deep_only = Pipeline.__new__(Pipeline)
    deep_only.config = PipelineConfig(min_grip_depth_mm=pipe.config.grip_clearance_mm)
    assert grasp_point(uro, cv2.boundingRect(uro), add, mm, deep_only.config)[2] < pipe.config.min_adductor_gap_mm


def test_grasp_keeps_clear_of_a_touching_neighbour_when_the_uro_allows(pipe):
    """A uro whose one end lies against another scallop: the jaws close on its far end,
    clearance_mm from the neighbour, and still away from the adductor; a uro with no room
    for that keeps the old choice (the line then skips it as too_close)."""
    mm = 0.5
    clear = pipe.config.clearance_mm
    lc = np.zeros((80, 80), np.int32)
    lc[:, :40] = 1  # this scallop
    lc[:, 40:] = 2  # a touching neighbour from column 40 on
    uro = np.zeros((80, 80), np.uint8)
    uro[30:42, 12:40] = 1  # 14 mm long, its right end against the neighbour
    add = np.zeros((80, 80), bool)
    add[20:52, 0:8] = True  # adductor off its left end: the right end is farthest
    box = cv2.boundingRect(uro)
    near = neighbour_px(lc, 1, box, 0, 0, clear / mm)
    assert near is not None and near.shape == (box[3], box[2])
    assert near[0, -1] == pytest.approx(1.0) and near[0, 0] == pytest.approx(28.0)  # exact distances
    py0, px0, _ = grasp_point(uro, box, add, mm, pipe.config)
    py, px, gap = grasp_point(uro, box, add, mm, pipe.config, near)
    assert uro[py, px] == 1 and gap >= pipe.config.min_adductor_gap_mm
    assert (40 - px0) * mm < clear <= (40 - px) * mm  # before: next to the neighbour; now clear of it
    # No neighbour within reach: nothing to compute, the same point as without.
    lone = np.ones_like(lc)
    assert neighbour_px(lone, 1, box, 0, 0, clear / mm) is None
    # A uro entirely within the clearance of the neighbour: no clear pixel, the old choice.
    small = np.zeros_like(uro)
    small[30:42, 34:40] = 1
    sbox = cv2.boundingRect(small)
    snear = neighbour_px(lc, 1, sbox, 0, 0, clear / mm)
    assert grasp_point(small, sbox, add, mm, pipe.config, snear) == grasp_point(small, sbox, add, mm, pipe.config)


def test_grasp_without_adductor_stays_on_the_uro_when_only_the_belt_is_clear(pipe):
    """No adductor found and the whole uro within the neighbour clearance: the pixels that are
    clear lie on the belt, and the grasp must not go there."""
    mm = 0.5
    lc = np.zeros((60, 60), np.int32)
    lc[:, :30] = 1
    lc[:, 30:] = 2
    uro = np.zeros((60, 60), np.uint8)
    uro[20:30, 24:30] = 1  # against the neighbour, 3 mm wide
    box = (10, 15, 20, 20)  # a wide box: its left part is belt, far from the neighbour
    near = neighbour_px(lc, 1, box, 0, 0, pipe.config.clearance_mm / mm)
    py, px, gap = grasp_point(uro, box, np.zeros((60, 60), bool), mm, pipe.config, near)
    assert uro[py, px] == 1 and gap == float("inf")


def test_grasp_point_on_box_equals_whole_crop(pipe):
    rng = np.random.default_rng(5)
    checked = 0
    for trial in range(60):
        S = 64
        uro = np.zeros((S, S), np.uint8)
        cx, cy = rng.integers(0, S, 2)  # uros touching the crop edge too
        cv2.ellipse(
            uro,
            (int(cx), int(cy)),
            (int(rng.integers(2, 12)), int(rng.integers(2, 8))),
            float(rng.uniform(0, 180)),
            0,
            360,
            1,
            -1,
        )
        if trial % 3 == 0:  # bent / notched shapes
            cv2.circle(uro, (int(cx) + 3, int(cy)), 3, 0, -1)
        n, lab, st, _ = cv2.connectedComponentsWithStats(uro, connectivity=8)
        if n < 2:
            continue
        k = 1 + int(np.argmax(st[1:, cv2.CC_STAT_AREA]))
        comp = (lab == k).astype(np.uint8)
        add = np.zeros((S, S), bool)
        if trial % 4:
            ax, ay = rng.integers(0, S, 2)
            add = cv2.circle(np.zeros((S, S), np.uint8), (int(ax), int(ay)), int(rng.integers(4, 20)), 1, -1).astype(
                bool
            )
            add &= comp == 0
        box = tuple(int(v) for v in st[k, :4])
        assert grasp_point(comp, box, add, 0.75, pipe.config) == _grasp_reference(pipe, comp, add, 0.75)
        checked += 1
    assert checked > 40


# ------------------------------------------------------------------ crop geometry
# (scale, largest mean offset allowed): at exactly 2:1 every block mean of the integer ramp is
# an x.5 tie that OpenCV rounds to even, a -0.5 bias that is rounding, not geometry.
@pytest.mark.parametrize("mm_per_px, bias", [(0.5, 0.1), (0.4, 0.1), (0.375, 0.55), (0.75, 0.1), (1.0, 0.1)])
def test_crop_pixels_sit_where_the_mapping_says(pipe, mm_per_px, bias):
    """On a linear ramp image (which area averaging and bilinear interpolation both reproduce
    exactly), crop pixel (c, r) must show the image value at ``origin + (c, r) * step``: for
    shrinking, 1:1 and enlarging crops. A half-pixel slip would bias the values by 0.5."""
    H, W = 256, 256
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    img = np.clip(np.round(np.stack([xx, yy, 0.5 * (xx + yy)], -1)), 0, 255).astype(np.uint8)
    S = pipe.crop
    roi = max(1, int(round(S * pipe.fine_mm / mm_per_px)))
    step = roi / S
    x0, y0 = 12, 20
    out = np.empty((S, S, 3), np.uint8)
    pipe._crops(img, [(x0, y0)], roi, out[None])
    ox, oy = x0 + 0.5 * step - 0.5, y0 + 0.5 * step - 0.5
    ix, iy = ox + np.arange(S) * step, oy + np.arange(S) * step
    inside_x = (ix > 1) & (ix < W - 2)
    inside_y = (iy > 1) & (iy < H - 2)
    gx = out[..., 0].astype(float) - ix[None, :]
    gy = out[..., 1].astype(float) - iy[:, None]
    m = inside_y[:, None] & inside_x[None, :]
    assert m.sum() > 5000
    assert np.abs(gx[m]).max() <= 1.0 and np.abs(gy[m]).max() <= 1.0
    assert abs(gx[m].mean()) < bias and abs(gy[m].mean()) < bias


def test_crop_outside_the_frame_repeats_edge_pixels(pipe):
    img = np.zeros((100, 120, 3), np.uint8)
    img[:, 0] = 200  # left column bright
    S = pipe.crop
    out = np.empty((S, S, 3), np.uint8)
    roi = int(round(S * pipe.fine_mm / 0.5))
    pipe._crops(img, [(-roi // 2, 10)], roi, out[None])
    # The part left of the frame shows the replicated bright column.
    assert (out[:40, : S // 4 - 2] == 200).all()
    assert (out[:40, S // 2 + 4 :] == 0).all()


# ------------------------------------------------------------------ behaviour on rendered frames
def _frames(n, width, height, mm_per_px, seed):
    from scallop.sim.dataset import DatasetSettings, random_sample

    st = replace(DatasetSettings(), resolutions=[(width, height)], mm_per_px=(mm_per_px, mm_per_px), scallops=(3, 6))
    return [random_sample(i, seed, st) for i in range(n)]


@pytest.mark.parametrize("mm_per_px", [0.5, 0.9])
def test_detections_match_truth_on_rendered_frames(pipe, mm_per_px):
    from scallop.vision.evaluate import Tally, score_frame

    total = Tally()
    box_err, centre_err = [], []
    n_pickable = 0
    for s in _frames(5, 960, 600, mm_per_px, seed=11):
        dets = pipe.detect(s.image, mm_per_px=s.truth.mm_per_px)
        n_pickable += int((dets.pickable & dets.uro_found).sum())
        facts = [f.to_dict() for f in s.truth.scallops]
        total.add(score_frame(dets, s.truth.parts, s.truth.instances, facts, s.truth.mm_per_px))
        for f in s.truth.scallops:
            if f.cut_by_border or f.visible_fraction < 0.98:
                continue
            x0, y0, x1, y1 = f.bbox_px
            truth_box = np.array([x0, y0, x1 + 1, y1 + 1], float)
            d = np.abs(dets.xyxy - truth_box).max(1)
            if len(d):
                box_err.append(d.min() * s.truth.mm_per_px)
                ys, xs = np.nonzero(s.truth.instances == f.instance)
                c = np.array([xs.mean(), ys.mean()])
                j = int(np.argmin(np.hypot(*(dets.center_px - c).T)))
                centre_err.append(dets.center_px[j] - c)
        assert set(pipe.timings) == {"resize_ms", "finder_ms", "instances_ms", "crops_ms", "parts_ms", "post_ms"}
    r = total.summary()
    assert r["recall"] >= 0.9 and r["precision"] >= 0.9, r
    assert r["grasp_on_uro"] >= 0.85 and r["grasp_on_adductor"] == 0.0 and r["grasp_near_adductor"] == 0.0, r
    assert r["grasp_adductor_min_mm"] >= 2.0 and len(r["counts"]) and "adductor_mm" not in r["counts"], r
    # Every pickable grasp is scored on or off a uro, with its confidence.
    u = r["uro_confidence"]
    assert u["pickable_on_uro"] + len(u["off_uro"]) == n_pickable
    assert u["pickable_on_uro"] >= r["counts"]["grasp_on_uro"] * 0.9 and u["on_uro_min"] >= 0.55
    # Boxes of whole, free-lying scallops within a few millimetres of the true outline.
    assert len(box_err) >= 8 and float(np.median(box_err)) <= 2.5, box_err
    # Mask centroids against the true visible-mask centroids, in image pixels: no offset
    # (a slip of one crop pixel in the crop-to-image mapping moves them by 1.1..1.5 px).
    e = np.array(centre_err)
    assert np.all(np.abs(np.median(e, 0)) <= 0.5) and np.all(np.median(np.abs(e), 0) <= 0.6), e


def test_detect_rejects_bad_images(pipe):
    with pytest.raises(ValueError, match="uint8 BGR"):
        pipe.detect(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="uint8 BGR"):
        pipe.detect(np.zeros((10, 10, 3), np.float32))


def test_empty_belt_gives_no_detections(pipe):
    belt = np.full((480, 640, 3), (200, 200, 205), np.uint8)
    d = pipe.detect(belt)
    assert len(d) == 0 and d.xyxy.shape == (0, 4)


def test_pickable_grips_keep_the_jaw_off_the_true_adductor(pipe):
    """On rendered frames every pickable grasp lies on (within 1 mm of) the true uro and the
    2 mm jaw disk clears the true adductor, at the default doubt margin and a wider one. The
    wider margin picks no more uros; it need not put each grasp farther from the true adductor
    (the grasp search may settle elsewhere on the uro), only off it."""
    wide = Pipeline(pipe.model, replace(pipe.config, adductor_doubt_logit=3.0))
    gaps = {"default": [], "wide": []}
    for s in _frames(12, 960, 600, 0.5, seed=23):
        parts, mm = s.truth.parts, s.truth.mm_per_px
        d_add = cv2.distanceTransform((parts != 3).astype(np.uint8), cv2.DIST_L2, 5) * mm
        d_uro = cv2.distanceTransform((parts != 4).astype(np.uint8), cv2.DIST_L2, 5) * mm
        for name, p in (("default", pipe), ("wide", wide)):
            dets = p.detect(s.image, mm_per_px=mm)
            for x, y in np.round(dets.grasp_px[dets.pickable]).astype(int):
                assert d_uro[y, x] <= 1.0, (name, x, y)
                gaps[name].append(float(d_add[y, x]))
    assert len(gaps["default"]) >= 15
    assert min(gaps["default"]) > 2.0
    assert len(gaps["wide"]) <= len(gaps["default"])
    assert not gaps["wide"] or min(gaps["wide"]) > 2.0


def test_overlay_labels_are_readable_on_a_white_belt():
    """A label is white text on a dark box, so it reads on the white belt as on a dark one."""
    import cv2

    from scallop.vision.annotate import draw
    from scallop.vision.detections import Detections

    white = np.full((480, 640, 3), 250, np.uint8)
    d = Detections.empty()
    box = np.array([[200.0, 200.0, 300.0, 300.0]])
    dets = Detections(
        xyxy=box,
        center_px=np.array([[250.0, 250.0]]),
        area_mm2=np.array([1500.0]),
        confidence=np.array([0.9]),
        uro_found=np.array([False]),
        grasp_px=np.full((1, 2), np.nan),
        pull_dir=np.full((1, 2), np.nan),
        uro_confidence=np.array([0.0]),
        uro_area_mm2=np.array([0.0]),
        cut_by_border=np.array([False]),
        pickable=np.array([False]),
        reason=np.array(["no_uro"], object),
        contours=[np.array([[200, 200], [300, 200], [300, 300], [200, 300]], np.float32)],
    )
    assert len(d) == 0
    out = draw(white, dets, labels=["0.93"])
    # The label sits above the box: a dark field with white strokes, high contrast.
    (tw, th), base = cv2.getTextSize("0.93", cv2.FONT_HERSHEY_SIMPLEX, 0.55, 1)
    region = out[200 - th - base - 12 : 198, 200 : 200 + tw + 6].astype(int).mean(axis=2)
    dark, bright = (region < 60).mean(), (region > 200).mean()
    assert dark > 0.5 and bright > 0.05, (dark, bright)


@pytest.mark.parametrize("roi_of_s", [1.5, 2.5, 1.25, 137 / 128, 1.0, 0.9375])
def test_crops_stacked_in_one_resample_equal_one_resample_each(pipe, roi_of_s):
    """The squares are shrunk together in one INTER_AREA call: every crop must equal the
    resample of its own window alone (edge squares with their replicated border too)."""
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (300, 420, 3), np.uint8)
    S = pipe.crop
    roi = int(round(S * roi_of_s))
    corners = [(10, 20), (-roi // 3, 40), (420 - roi // 2, 300 - roi // 4), (150, -7), (200, 100)]
    out = np.empty((len(corners), S, S, 3), np.uint8)
    pipe._crops(img, corners, roi, out)
    for (x0, y0), got in zip(corners, out):
        pad = cv2.copyMakeBorder(img, 400, 400, 400, 400, cv2.BORDER_REPLICATE)
        win = pad[y0 + 400 : y0 + 400 + roi, x0 + 400 : x0 + 400 + roi]
        if roi > S:
            want = cv2.resize(win, (S, S), interpolation=cv2.INTER_AREA)
        elif roi == S:
            want = win
        else:
            step = roi / S
            M = np.array([[step, 0.0, x0 + 0.5 * step - 0.5], [0.0, step, y0 + 0.5 * step - 0.5]])
            want = cv2.warpAffine(
                img, M, (S, S), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
            )
        assert np.array_equal(got, want)
    # The fluorescence image (one plane) goes the same way.
    uv = img[..., 0].copy()
    out_uv = np.empty((len(corners), S, S), np.uint8)
    pipe._crops(uv, corners, roi, out_uv)
    if roi >= S:  # (the warp's single-plane path is OpenCV's own, not ours)
        assert np.array_equal(out_uv, out[..., 0])


def test_grasp_is_centred_where_the_uro_is_sure(pipe):
    """A uro mask whose far end (from the adductor) is unsure, as where it runs on under a
    mantle flap: the jaws go to the farthest point among the sure pixels deep enough, not to
    the unsure end; with nothing sure, or the rule off (0), the choice is the old one."""
    mm = 0.5
    uro = np.zeros((60, 80), np.uint8)
    uro[20:32, 10:70] = 1  # 30 x 6 mm
    add = np.zeros((60, 80), bool)
    add[10:45, 0:8] = True  # adductor off its left end
    box = cv2.boundingRect(uro)
    x, y, w, h = box
    prob = np.full((h, w), 0.99, np.float32)
    prob[:, 40:] = 0.6  # the right third: unsure
    cfg = pipe.config
    assert cfg.grip_uro_probability == 0.9
    py0, px0, gap0 = grasp_point(uro, box, add, mm, cfg)
    assert px0 >= x + 40  # farthest from the adductor: the unsure end
    py, px, gap = grasp_point(uro, box, add, mm, cfg, None, prob)
    assert uro[py, px] == 1 and prob[py - y, px - x] >= 0.9
    assert px == x + 39 and gap >= cfg.min_adductor_gap_mm  # the farthest sure column
    assert grasp_point(uro, box, add, mm, cfg, None, np.full((h, w), 0.6, np.float32)) == (py0, px0, gap0)
    off = PipelineConfig(grip_uro_probability=0.0)
    assert grasp_point(uro, box, add, mm, off, None, prob) == (py0, px0, gap0)
    # Sure pixels too shallow for any grip depth tried: the old choice, not a grasp on the edge.
    shallow = np.full((h, w), 0.6, np.float32)
    shallow[0, :] = 0.99
    tight = PipelineConfig(min_grip_depth_mm=1.0)
    assert grasp_point(uro, box, add, mm, tight, None, shallow) == grasp_point(uro, box, add, mm, tight)


@pytest.mark.parametrize("bad", [float("nan"), -0.1, 1.5, float("inf")])
def test_grip_uro_probability_is_a_checked_share(bad):
    with pytest.raises(ValueError, match="grip_uro_probability"):
        PipelineConfig(grip_uro_probability=bad)


def test_sure_comes_before_a_neighbours_clearance(pipe):
    """Sure and clear of a neighbour where both can be had; else sure (judged too_close later);
    never the unsure fold because a few clear and sure pixels failed the adductor's gap."""
    mm = 0.5
    uro = np.zeros((60, 80), np.uint8)
    uro[20:32, 10:70] = 1
    add = np.zeros((60, 80), bool)
    add[10:45, 0:8] = True
    box = cv2.boundingRect(uro)
    x, y, w, h = box
    prob = np.full((h, w), 0.99, np.float32)
    prob[:, 40:] = 0.6  # the far third unsure
    near = np.full((h, w), 2.0, np.float32)  # a neighbour close along the middle ...
    near[:, 45:] = 30.0  # ... clear at the unsure far end
    near[:, :2] = 30.0  # and two clear, sure columns next to the adductor: too near it to grip
    py, px, gap = grasp_point(uro, box, add, mm, pipe.config, near, prob)
    assert prob[py - y, px - x] >= 0.9 and px == x + 39 and gap >= pipe.config.min_adductor_gap_mm
    near[:, 30:40] = 30.0  # clear and sure columns far enough from the adductor: taken
    py, px, gap = grasp_point(uro, box, add, mm, pipe.config, near, prob)
    assert prob[py - y, px - x] >= 0.9 and near[py - y, px - x] == 30.0 and px == x + 39


def test_without_adductor_the_grasp_stays_on_the_sure_part(pipe):
    mm = 0.5
    uro = np.zeros((60, 80), np.uint8)
    uro[20:32, 10:70] = 1
    box = cv2.boundingRect(uro)
    x, y, w, h = box
    prob = np.full((h, w), 0.6, np.float32)
    prob[:, :30] = 0.99
    py, px, gap = grasp_point(uro, box, np.zeros((60, 80), bool), mm, pipe.config, None, prob)
    assert gap == float("inf") and uro[py, px] == 1 and prob[py - y, px - x] >= 0.9


def _second_adductor_case(pipe, radius_px):
    """One rendered scallop, and the reason the pipeline gives it when the parts network's
    logits get a second adductor disc of ``radius_px`` crop pixels painted far from its uro
    (what an outline holding two touching scallops shows)."""
    from scallop.sim.dataset import DatasetSettings, random_sample
    from scallop.vision.pipeline import P_ADDUCTOR, P_MEAT, P_URO

    st = replace(DatasetSettings(), resolutions=[(640, 480)], mm_per_px=(0.5, 0.5), scallops=(1, 1))
    s = next(
        s
        for s in (random_sample(i, 21, st) for i in range(20))
        if s.truth.scallops and not s.truth.scallops[0].cut_by_border and s.truth.scallops[0].uro_present
    )
    real = pipe.model.run_parts

    def painted(crops, uv=None):
        out = real(crops, uv).copy()
        if radius_px:
            cls = out[0].argmax(0)
            meat = (cls == P_MEAT).astype(np.uint8)
            inside = cv2.distanceTransform(meat, cv2.DIST_L2, 5)
            far = cv2.distanceTransform((cls != P_URO).astype(np.uint8), cv2.DIST_L2, 5)
            score = np.where(inside >= radius_px + 1, far, -1)
            y, x = np.unravel_index(int(score.argmax()), score.shape)
            assert score[y, x] > 3 * radius_px  # room for the disc, away from the uro
            disc = np.zeros(cls.shape, np.uint8)
            cv2.circle(disc, (int(x), int(y)), radius_px, 1, -1)
            out[0, P_ADDUCTOR][disc > 0] = out[0].max(0)[disc > 0] + 5.0
        return out

    pipe.model.run_parts = painted
    try:
        d = pipe.detect(s.image, mm_per_px=s.truth.mm_per_px)
    finally:
        pipe.model.run_parts = real
    assert len(d) == 1 and d.uro_found[0]
    return d.reason[0]


def test_an_outline_with_two_adductors_is_ambiguous():
    """Two touching scallops seen as one outline hold two adductors: the uro may be the other
    scallop's, and the pull, from the middle of both adductors, would drag it across meat. A
    second adductor blob as large as the smallest kept (``min_adductor_area_mm2``, 60 mm²) makes
    the scallop ``ambiguous``; a speck of adductor does not."""
    pipe = Pipeline(None, PipelineConfig(threads=1))
    alone = _second_adductor_case(pipe, 0)
    assert alone == ""  # pickable as it is
    # 7 crop pixels at 0.75 mm: about 150 px, 86 mm²; 3 px: about 29 px, 16 mm².
    assert _second_adductor_case(pipe, 7) == "ambiguous"
    assert _second_adductor_case(pipe, 3) == alone
    # The same disc under a larger minimum: not a second adductor, nothing else changed.
    big = Pipeline(pipe.model, PipelineConfig(threads=1, min_adductor_area_mm2=100.0))
    assert _second_adductor_case(big, 7) == alone


def test_second_blob_size():
    from scallop.vision.pipeline import _second_blob_px

    m = np.zeros((40, 60), np.uint8)
    assert _second_blob_px(m) == 0
    m[2:12, 2:12] = 1  # 100 px
    assert _second_blob_px(m) == 0
    m[20:25, 40:45] = 1  # 25 px
    m[30:33, 5:8] = 1  # 9 px
    assert _second_blob_px(m) == 25
    m[12, 12] = 1  # touching diagonally: one blob with the first (8-connected)
    m[13:16, 13:16] = 1
    assert _second_blob_px(m) == 25


def test_outside_channel_looks_at_every_piece_of_the_mask_and_only_at_whole_no_uro_rows():
    from scallop.vision.pipeline import _outside_channel

    seen = np.ones((100, 200), bool)
    seen[:, 150:] = False  # the fluorescence camera does not see x >= 150

    def sq(x0, y0, x1, y1):
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)

    def row(pieces, reason="no_uro", cut=False):
        allx = np.concatenate(pieces)
        r = {"cut": cut, "reason": reason, "contour": pieces[0]}
        r["xyxy"] = (allx[:, 0].min() - 0.5, allx[:, 1].min() - 0.5, allx[:, 0].max() + 0.5, allx[:, 1].max() + 0.5)
        if len(pieces) > 1:
            r["pieces"] = pieces
        return r

    rows = [
        row([sq(10, 10, 60, 60)]),  # seen whole
        row([sq(10, 10, 60, 60), sq(148, 10, 152, 14)]),  # a small piece reaches the blind part
        row([sq(100, 10, 160, 60)]),  # its outline reaches it
        row([sq(100, 10, 160, 60)], reason="hidden_uro"),  # a verdict other than no uro stands
        row([sq(100, 10, 160, 60)], reason=""),  # so does a pick
        row([sq(100, 10, 160, 60)], cut=True),  # a cut view decides nothing anyway
        # Its box reaches the blind part, the outline does not (an L whose corner is cut off).
        row([np.array([[100, 10], [149, 10], [149, 30], [120, 30], [120, 60], [100, 60]], float)]),
    ]
    rows[-1]["xyxy"] = (99.5, 9.5, 155.0, 60.5)
    _outside_channel(rows, seen)
    assert [r["reason"] for r in rows] == [
        "no_uro",
        "outside_channel",
        "outside_channel",
        "hidden_uro",
        "",
        "no_uro",
        "no_uro",
    ]
