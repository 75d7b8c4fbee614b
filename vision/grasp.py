"""Per-pixel geometry the pipeline applies inside each scallop crop: which class wins a pixel
(from logit planes, without the slow axis-0 reductions of a stacked array), and where on a uro
the jaws close (deep inside it, far from the adductor and from a touching neighbour).

Functions of arrays and the pipeline's thresholds only, so each is tested on hand-made masks
(tests/test_pipeline.py, tests/test_uro_adductor_gap.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from scallop.vision.pipeline import PipelineConfig


def max_of(planes: list[np.ndarray]) -> np.ndarray:
    """Elementwise maximum of a list of equally shaped arrays (pairwise: ``np.maximum.reduce``
    over a list would first copy them all into one stacked array)."""
    m = planes[0]
    for p in planes[1:]:
        m = np.maximum(m, p)
    return m


def wins(ch: list[np.ndarray], c: int) -> np.ndarray:
    """``argmax over ch == c`` without the argmax: a class wins where it beats every class
    before it and ties or beats every class after it (argmax keeps the first of equals).
    ``ch`` is the list of per-class logit planes."""
    m = ch[c] > max_of(ch[:c])
    if c + 1 < len(ch):
        m &= ch[c] >= max_of(ch[c + 1 :])
    return m


def softmax_rows(rows: list[np.ndarray], c: int) -> np.ndarray:
    """Softmax probability of class ``c`` from per-class logit vectors: the same float32 steps
    as ``exp(l - l.max(0)) / sum`` on the stacked array (whose axis-0 reductions are slow)."""
    m = max_of(rows)
    e = [np.exp(r - m) for r in rows]
    t = e[0]
    for x in e[1:]:
        t = t + x
    return e[c] / t


def not_first(ch: list[np.ndarray]) -> np.ndarray:
    """``argmax over ch != 0``: some later class beats class 0 strictly."""
    return max_of(ch[1:]) > ch[0]


def grasp_point(
    uro: np.ndarray,
    box: tuple[int, int, int, int],
    adductor: np.ndarray,
    mm_px: float,
    cfg: PipelineConfig,
    neighbour_px: np.ndarray | None = None,
    uro_prob: np.ndarray | None = None,
) -> tuple[int, int, float]:
    """Where to grip the uro: well inside it (a centroid can fall outside a bent, kidney
    uro) and as far from the adductor as that allows — the uro touches the adductor at
    one end, and a gripper closing on that end pinches the meat.

    Candidates are the pixels at least ``grip_clearance_mm`` inside the uro (or 80 % of
    the deepest point's depth for a thin uro); among them the one farthest from the
    adductor wins. ``uro``: uint8 0/1 mask of the crop, ``box``: its (x, y, w, h)
    bounding box, ``mm_px``: the crop's scale. ``neighbour_px``: on the box, the distance
    in pixels to the nearest pixel of another scallop (None: none near); when a touching
    neighbour lies close, pixels at least ``clearance_mm`` from it are preferred, so the
    jaws close on the far part of the uro rather than next to the other scallop's meat.
    ``uro_prob``: on the box, each pixel's probability of being uro; where some pixel inside
    the uro reaches ``cfg.grip_uro_probability`` the jaws are centred among those first (a mask
    running on under a mantle flap is less sure there, and its far end lies on the fold).
    Returns (row, col, distance to the adductor in mm)."""
    x, y, w, h = box
    # Depth inside the uro on its box only. The 2-pixel zero border stands for everything
    # outside: a 5x5 chamfer step spans at most 2 pixels, so no path to a farther zero can
    # be shorter and the depths equal those computed on the whole crop.
    du = cv2.distanceTransform(
        cv2.copyMakeBorder(uro[y : y + h, x : x + w], 2, 2, 2, 2, cv2.BORDER_CONSTANT, 0), cv2.DIST_L2, 5
    )[2:-2, 2:-2]
    deepest = float(du.max())
    clear = None
    if neighbour_px is not None:
        clear = (neighbour_px >= cfg.clearance_mm / mm_px + 0.5) & (du > 0)
        if not clear.any():
            clear = None
    # Where the jaws may be centred, pass by pass: where the uro is sure and the jaws clear a
    # touching neighbour, then where the uro is sure, then where they clear the neighbour, then
    # anywhere (judged too_close later). Sure comes before clear: a grasp beside a neighbour is
    # only diverted (too_close), one on a mantle fold leaves the uro on the scallop.
    passes: list[np.ndarray | None] = []
    if uro_prob is not None and cfg.grip_uro_probability > 0:
        sure = (uro_prob >= cfg.grip_uro_probability) & (du > 0)
        if sure.any():
            if clear is not None and (clear & sure).any():
                passes.append(clear & sure)
            passes.append(sure)
    if clear is not None:
        passes.append(clear)
    passes.append(None)
    if not adductor.any():
        allowed = passes[0]
        score = du if allowed is None else np.where(allowed, du, -1.0)
        py, px = np.unravel_index(int(score.argmax()), score.shape)
        return py + y, px + x, float("inf")
    da = cv2.distanceTransform(cv2.compare(adductor.view(np.uint8), 0, cv2.CMP_EQ), cv2.DIST_L2, 5)[
        y : y + h, x : x + w
    ]
    # From the jaw radius down to the shallowest grip allowed, in 0.5 mm steps.
    depths = np.arange(cfg.grip_clearance_mm, cfg.min_grip_depth_mm - 1e-9, -0.5)
    for allowed in passes:
        for depth_mm in depths if len(depths) else (cfg.min_grip_depth_mm,):
            need = min(depth_mm / mm_px, 0.8 * deepest)
            ok = du >= need if allowed is None else (du >= need) & allowed
            score = np.where(ok, da + 0.01 * du, -1.0)
            py, px = np.unravel_index(int(score.argmax()), score.shape)
            gap = float(da[py, px]) * mm_px
            # A uro lying along the adductor has no deep pixel far enough from it; a shallower
            # grip (still inside the uro by more than the mask error) often has.
            if ok[py, px] and gap >= cfg.min_adductor_gap_mm:
                return py + y, px + x, gap
    return py + y, px + x, gap


def uro_adductor_gap(uro: np.ndarray, box: tuple[int, int, int, int], adductor: np.ndarray, reach_px: float) -> float:
    """Crop pixels from the uro blob (``uro`` 0/1, its ``box`` x, y, w, h) to the nearest
    adductor pixel, looked for only within ``reach_px`` of the blob's box (inf beyond)."""
    x, y, w, h = box
    r = int(np.ceil(reach_px)) + 1
    H, W = uro.shape
    wx0, wy0, wx1, wy1 = max(x - r, 0), max(y - r, 0), min(x + w + r, W), min(y + h + r, H)
    add = adductor[wy0:wy1, wx0:wx1]
    if not add.any():
        return float("inf")
    mine = uro[wy0:wy1, wx0:wx1] > 0
    # The usual case, a uro that meets the adductor where the two masks overlap: 0, with no
    # transform (the pipeline's adductor mask is the wider "might be adductor" one).
    if (mine & add).any():
        return 0.0
    d = cv2.distanceTransform(cv2.compare(add.view(np.uint8), 0, cv2.CMP_EQ), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return float(d[mine].min())


def neighbour_px(
    lc: np.ndarray, k: int, box: tuple[int, int, int, int], x0: int, y0: int, reach_px: float
) -> np.ndarray | None:
    """Distance in crop pixels from each pixel of the uro box (``box`` relative to
    (x0, y0)) to the nearest pixel of another scallop in the crop's labels ``lc`` (own
    label ``k``, 0 = belt); None when none lies within ``reach_px`` of the box. The window
    reaches ``reach_px`` past the box, so every distance under ``reach_px`` is exact."""
    bx, by, bw, bh = box
    bx, by = bx + x0, by + y0
    r = int(np.ceil(reach_px)) + 1
    H, W = lc.shape
    wx0, wy0, wx1, wy1 = max(bx - r, 0), max(by - r, 0), min(bx + bw + r, W), min(by + bh + r, H)
    win = lc[wy0:wy1, wx0:wx1]
    free = ((win == k) | (win == 0)).view(np.uint8)
    if free.all():
        return None
    d = cv2.distanceTransform(free, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return d[by - wy0 : by - wy0 + bh, bx - wx0 : bx - wx0 + bw]
