"""Frame → Detections with the two-stage model.

Cost per frame is dominated by where the pixels are: the finder sees the whole frame at
a coarse scale (2 mm/px: a 1280×720 frame at 0.5 mm/px becomes 320×180), the parts model
sees only the scallops, each as one crop at a fine scale, all crops in one batch.
Both are resampled straight from the frame (no whole-frame fine image is made), and the
post-processing works per instance on the box it covers, with statistics gathered in one
pass (bincount) rather than one full-size mask per instance. Everything that does not
depend on the frame (sessions, normalisation, kernels) is set up once in ``__init__``;
``Pipeline.timings`` holds the last frame's per-stage milliseconds.

A model whose stages take the fluorescence channel (``SegModel.takes_uv``, docs/fluorescence.md)
gets the frame's registered fluorescence image (``detect(..., uv=)``) resampled into its inputs
by the very calls that resample the colour image; a colour-only model ignores it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from scallop.errors import check_number, check_range, check_share
from scallop.models.runtime import SegModel
from scallop.vision.detections import (
    REASON_AMBIGUOUS,
    REASON_CUT,
    REASON_HIDDEN_URO,
    REASON_NO_URO,
    REASON_OUTSIDE_CHANNEL,
    REASON_TOO_CLOSE,
    Detections,
)
from scallop.vision.grasp import (
    grasp_point,
    max_of,
    neighbour_px,
    not_first,
    softmax_rows,
    uro_adductor_gap,
    wins,
)

# Class indices fixed by the metadata check in models.runtime (names must start like this).
F_BG, F_CORE, F_EDGE = 0, 1, 2
P_BG, P_MEAT, P_ADDUCTOR, P_URO = 0, 1, 2, 3


@dataclass
class PipelineConfig:
    """Thresholds in millimetres, so they hold at any camera scale."""

    model: str = ""  # ONNX file ("" = the shipped model)
    mm_per_px: float = 0.5  # image scale when no calibration mapping is given
    threads: int = 2  # onnxruntime intra-op threads
    min_scallop_area_mm2: float = 300.0  # smaller blobs are not scallops (meat is 40–75 mm across)
    min_core_area_mm2: float = 60.0
    min_uro_area_mm2: float = 8.0
    min_adductor_area_mm2: float = 60.0
    min_uro_confidence: float = 0.55  # below: "ambiguous" rather than a guess
    # No uro big enough to grip, but somewhere on the scallop a pixel more likely than this to be
    # uro (a sliver beside a mantle flap, the flap's glow in the fluorescence channel): the
    # scallop is "hidden_uro" and goes to rework. Set from bench hard (models/README.md); 1 turns
    # the rule off (a float32 softmax reaches exactly 1.0, so "at least" could not).
    hidden_uro_probability: float = 0.15
    second_uro_ratio: float = 0.6  # a second uro blob this large → ambiguous
    clearance_mm: float = 5.0  # another scallop this close to the grasp → too_close
    grip_clearance_mm: float = 2.0  # the gripper's jaw radius: grasp at least this deep in the uro
    min_grip_depth_mm: float = 0.5  # …or down to this deep, when deeper points are too near the adductor
    # The jaws are centred where the uro is at least this likely, when it is somewhere deep enough:
    # at 0.8-1 mm/px the mask of a uro under a mantle flap runs on under the fold at lower odds,
    # and the point farthest from the adductor fell there, on the fold (bench hard). 0 turns it off.
    grip_uro_probability: float = 0.9
    min_adductor_gap_mm: float = 2.75  # jaw radius + mask error: closer to the adductor → ambiguous
    # Every uro touches the adductor (appearance spec, The product): a dark blob farther from it
    # is debris, an eye dot or a shadow, not a uro → ambiguous (bench hard measures it).
    max_uro_adductor_gap_mm: float = 4.0
    adductor_doubt_logit: float = 1.5  # the gap is kept from pixels this close to being adductor
    border_margin_mm: float = 1.5  # mask within this of the frame edge → cut by border
    # Shadow mode (the line's, scallop.app.shadow): a candidate model beside this one.
    shadow_model: str = ""  # ONNX file or registry model name ("" = no shadow)
    shadow_share: float = 0.5  # share of frames offered to the candidate
    shadow_cpu_share: float = 0.25  # the most of one core the candidate may use on average

    def __post_init__(self) -> None:
        # Every threshold is range-checked: a NaN compares false with everything, so one that
        # slipped through would switch its check off (a NaN adductor gap passes every grasp).
        check_range("mm_per_px", self.mm_per_px, 0.05, 5.0)
        check_number("threads", self.threads, 1, 64, integer=True)
        check_range("min_scallop_area_mm2", self.min_scallop_area_mm2, 0.0, 20000.0)
        check_range("min_core_area_mm2", self.min_core_area_mm2, 0.0, 20000.0)
        check_range("min_uro_area_mm2", self.min_uro_area_mm2, 0.0, 2000.0)
        check_range("min_adductor_area_mm2", self.min_adductor_area_mm2, 0.0, 5000.0)
        check_share("min_uro_confidence", self.min_uro_confidence)
        check_share("hidden_uro_probability", self.hidden_uro_probability)
        check_share("second_uro_ratio", self.second_uro_ratio)
        check_range("clearance_mm", self.clearance_mm, 0.0, 100.0)
        check_range("grip_clearance_mm", self.grip_clearance_mm, 0.0, 20.0)
        check_range("min_grip_depth_mm", self.min_grip_depth_mm, 0.0, 20.0)
        check_share("grip_uro_probability", self.grip_uro_probability)
        check_range("min_adductor_gap_mm", self.min_adductor_gap_mm, 0.0, 30.0)
        check_range("max_uro_adductor_gap_mm", self.max_uro_adductor_gap_mm, 0.0, 100.0)
        check_range("adductor_doubt_logit", self.adductor_doubt_logit, 0.0, 20.0)
        check_range("border_margin_mm", self.border_margin_mm, 0.0, 50.0)
        check_range("shadow_share", self.shadow_share, 0.01, 1.0)
        check_range("shadow_cpu_share", self.shadow_cpu_share, 0.05, 1.0)


def _blobs(mask: np.ndarray):
    """``cv2.connectedComponentsWithStats(mask, connectivity=8)`` of a 0/1 uint8 mask whose
    pixels all lie in it (its own bounding box), as far as the caller reads it: the blobs'
    labels, stats and centroids (label 0, the background, is not read). Most uro masks are one
    blob without a hole: then the same numbers (exact sums over the same pixels) come from one
    border trace and the moments, with the mask itself as the label image, without OpenCV's
    labelling, whose parallel version costs more than the whole of this on a uro's few
    hundred pixels."""
    # Every border, outer or of a hole, is one contour: a single one is a single blob with no
    # hole. (Outer borders alone would miss a speck lying inside another blob's hole.)
    if len(cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)[0]) != 1:
        return cv2.connectedComponentsWithStats(mask, connectivity=8)
    m = cv2.moments(mask, True)
    h, w = mask.shape
    area = int(m["m00"])
    stats = np.array([[0, 0, w, h, h * w - area], [0, 0, w, h, area]], np.int32)
    # The background's centroid is never read.
    return 2, mask, stats, np.array([[np.nan, np.nan], [m["m10"] / m["m00"], m["m01"] / m["m00"]]])


def _second_blob_px(mask: np.ndarray) -> int:
    """Pixels of the second largest blob (8-connected) of a 0/1 uint8 mask, 0 if it has one.

    Used on the adductor of one outline: a second adductor as large as the smallest one kept
    (``min_adductor_area_mm2``) means two touching scallops seen as one. Their uro may be the
    other's, and the pull, from the middle of both adductors, would drag it across meat: such a
    scallop is ``ambiguous``. On the hard sets (11 243 detections, 4 scales, the scale told
    0.9x, 1x and 1.1x) no outline of one scallop had a second adductor blob over 43 mm², and 40
    of the 330 outlines holding two scallops had one of 60 mm² or more (8 of their 10 pickable)."""
    n, _, stats, _ = _blobs(mask)  # its blob areas are exact whatever the mask's box
    return int(np.sort(stats[1:n, cv2.CC_STAT_AREA])[-2]) if n > 2 else 0


def _outside_channel(rows: list[dict], seen: np.ndarray) -> None:
    """Rows of whole scallops found without a uro whose outline reaches pixels the
    fluorescence camera did not see become ``outside_channel``: a model reading the channel
    was given 0 there, no glow, so its "no uro" cannot be trusted. Its other verdicts stand:
    with the channel zeroed on the hard sets the shipped four-channel model picked no scallop
    without a uro and brought no jaws near an adductor, but let up to 5.4 % of uros go as
    "no uro" (2.7 % with the channel). Rows cut by the border keep their reason, which decides
    nothing while a whole view exists. The outline's box is looked at first: in the usual frame
    the camera saw all of it. Every piece of the scallop's mask counts, not only the largest
    (the uro is looked for in all of them)."""
    H, W = seen.shape
    for r in rows:
        if r["cut"] or r["reason"] != REASON_NO_URO:
            continue
        x0, y0, x1, y1 = r["xyxy"]
        x0, y0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
        x1, y1 = min(int(np.ceil(x1)), W), min(int(np.ceil(y1)), H)
        box = seen[y0:y1, x0:x1]
        if box.all():
            continue
        inside = np.zeros(box.shape, np.uint8)
        pieces = r.get("pieces") or [r["contour"]]
        cv2.fillPoly(inside, [np.round(c - (x0, y0)).astype(np.int32) for c in pieces], 1)
        if (inside.view(bool) & ~box).any():
            r["reason"] = REASON_OUTSIDE_CHANNEL


class Pipeline:
    def __init__(self, model: SegModel | str | None = None, config: PipelineConfig | None = None):
        self.config = config or PipelineConfig()
        if not isinstance(model, SegModel):
            model = SegModel(model or self.config.model or None, threads=self.config.threads)
        self.model = model
        info = self.model.info
        self.fine_mm = info.parts.mm_per_px
        self.coarse_mm = info.finder.mm_per_px
        self.crop = info.parts.size
        self.multiple = max(1, info.finder.multiple)
        self._uv_finder = info.finder.takes_uv
        self._uv_parts = info.parts.takes_uv
        self._k3 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        self._cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
        self._arange = np.arange(self.crop, dtype=np.float64)
        # Milliseconds spent in each stage of the last detect() call (for benchmarks).
        self.timings: dict[str, float] = {}

    @property
    def takes_uv(self) -> bool:
        """The model needs the fluorescence image (``detect(uv=...)``) in some stage."""
        return self._uv_finder or self._uv_parts

    def finder_size(self, width: int, height: int, mm_per_px: float) -> tuple[int, int]:
        """(H, W) of the finder's input for a frame of ``width`` x ``height`` at ``mm_per_px``."""
        g = float(mm_per_px) / self.coarse_mm
        h, w = max(1, int(round(height * g))), max(1, int(round(width * g)))
        return h + (-h % self.multiple), w + (-w % self.multiple)

    def check_frame(self, width: int, height: int, mm_per_px: float) -> None:
        """Refuse, with a :class:`~scallop.models.runtime.ModelError` naming both, frames the
        model cannot take (a graph exported for one fixed input size); the line checks at load."""
        self.model.check_frame(self.finder_size(width, height, mm_per_px))

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _resize(img: np.ndarray, factor: float) -> np.ndarray:
        if abs(factor - 1.0) < 1e-6:
            return img
        h, w = img.shape[:2]
        size = (max(1, int(round(w * factor))), max(1, int(round(h * factor))))
        if factor > 1:
            return cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
        # Area averaging, first by exact halvings: a 2:1 bilinear resample samples midway between
        # two pixels, i.e. averages each 2x2 block as INTER_AREA does (to one grey level of
        # rounding), at a quarter of INTER_AREA's cost on a 1280x720 frame (0.28 against 1.06 ms
        # here: bench vision). INTER_AREA does whatever factor is left; where the halvings are not
        # the whole factor (0.3 or 0.8 mm/px) a block's edge is blurred over one more pixel than
        # INTER_AREA alone would, as the training's own two area resamples do (models/train.py).
        while h % 2 == 0 and w % 2 == 0 and w // 2 >= size[0] and h // 2 >= size[1]:
            h, w = h // 2, w // 2
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
        if (w, h) == size:
            return img
        return cv2.resize(img, size, interpolation=cv2.INTER_AREA)

    def _split_merged(self, n: int, lab: np.ndarray, core: tuple[np.ndarray, np.ndarray, np.ndarray]):
        """Split core blobs that are clearly several scallops (not convex: solidity < 0.9)
        at their narrow necks: keep only pixels far from the blob's border (≥ 35 % of its
        deepest point), which separates round scallops touching or overlapping by ~10 %.
        ``core``: the core pixels' x, y and label (raster order). Returns (n, lab, labels of
        the core pixels, pixels per label) with the new blobs appended."""
        px, py, pl = core
        areas = np.bincount(pl, minlength=n)
        out = None
        nxt = n
        for k in np.flatnonzero(areas[1:] >= 30) + 1:
            # The blob's box from its own pixels: a compare over the whole frame per blob cost
            # more than the rest of this loop.
            mine = pl == k
            xs, ys = px[mine], py[mine]
            x, y = int(xs.min()), int(ys.min())
            w, h = int(xs.max()) - x + 1, int(ys.max()) - y + 1
            m = (lab[y : y + h, x : x + w] == k).view(np.uint8)
            cnts, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            hull = cv2.contourArea(cv2.convexHull(np.concatenate(cnts)))
            if hull <= 0 or areas[k] / hull >= 0.9:
                continue
            dist = cv2.distanceTransform(cv2.copyMakeBorder(m, 1, 1, 1, 1, cv2.BORDER_CONSTANT, 0), cv2.DIST_L2, 3)[
                1:-1, 1:-1
            ]
            seeds = (dist >= max(1.5, 0.35 * float(dist.max()))).view(np.uint8)
            ns, slab = cv2.connectedComponents(seeds, connectivity=4)
            if ns <= 2:
                continue
            if out is None:
                out = lab.copy()
            region = out[y : y + h, x : x + w]
            region[m.view(bool)] = 0
            for j in range(1, ns):
                region[slab == j] = nxt
                nxt += 1
        if out is None:
            return n, lab, pl, areas
        pl = out[py, px]
        return nxt, out, pl, np.bincount(pl, minlength=nxt)

    @staticmethod
    def _assign(fg: np.ndarray, lab: np.ndarray, remap: np.ndarray, seed_xy: tuple[np.ndarray, np.ndarray]):
        """Foreground (bool, H×W) → instance labels (int32): each connected foreground blob that
        holds one kept core is that core's scallop; in a blob holding several (touching
        scallops) every pixel goes to the nearest of its cores, which splits them along the
        edge class the finder drew between them; a blob holding none (a fragment, a sliver of
        a scallop at the frame's edge) is no scallop's. ``lab``: core labels, ``remap``: core
        label → kept scallop 1..nk (0: dropped), ``seed_xy``: x and y of one pixel of each kept
        scallop's core, in scallop order. The distance transform runs only on the blobs that
        need it: on the whole frame it cost more than the rest of this stage."""
        nf, flab = cv2.connectedComponents(fg.view(np.uint8), connectivity=8)
        # Cores are foreground and connected: all of a core lies in the blob of any one of its pixels.
        blob = flab[seed_xy[1], seed_xy[0]]
        core = np.arange(1, len(blob) + 1, dtype=np.int32)
        per_blob = np.bincount(blob, minlength=nf)
        table = np.zeros(max(nf, 256), np.int32)
        single = per_blob[blob] == 1
        table[blob[single]] = core[single]
        # OpenCV's table lookup takes 8-bit indices and costs half of numpy's take here.
        labels = cv2.LUT(flab.astype(np.uint8), table[:256]) if nf <= 256 else table.take(flab)
        for j in np.flatnonzero(per_blob >= 2):
            x, y, w, h = cv2.boundingRect(cv2.compare(flab, int(j), cv2.CMP_EQ))
            inside = flab[y : y + h, x : x + w] == j
            sd = np.where(inside, remap.take(lab[y : y + h, x : x + w]), 0)
            # Only this blob's cores are zeros of the transform: each pixel's nearest one.
            _, near = cv2.distanceTransformWithLabels(
                (sd == 0).view(np.uint8), cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL
            )
            has = sd != 0
            pix_to_seed = np.zeros(int(near.max()) + 1, np.int32)
            pix_to_seed[near[has]] = sd[has]
            region = labels[y : y + h, x : x + w]
            region[inside] = pix_to_seed.take(near[inside])
        return labels

    def _instances(self, logits: np.ndarray, valid_hw: tuple[int, int]):
        """Finder logits → (label map int32 at coarse scale, kept labels (K,) int,
        fg prob mean (K,), centroid x (K,), centroid y (K,) in coarse pixels)."""
        h, w = valid_hw
        ch = [logits[c, :h, :w] for c in range(logits.shape[0])]
        fg = not_first(ch)
        core = wins(ch, F_CORE).view(np.uint8)
        # One pixel of erosion cuts the thin bridges that join the cores of touching scallops
        # where the finder drew the edge between them only faintly.
        core = cv2.erode(core, self._cross)
        area_px = self.coarse_mm**2
        # Plain labelling, then counts and boxes from the core pixels alone (a few % of the
        # frame): OpenCV's WithStats variant costs ~5x more at this size, a bincount over the
        # whole label map twice as much as the labelling.
        # SAUF for 4-connectivity: the same labels as OpenCV's default (Spaghetti), a quarter
        # faster on this map with OpenCV's pool.
        n, lab = cv2.connectedComponentsWithAlgorithm(core, 4, cv2.CV_32S, cv2.CCL_SAUF)
        cpts = cv2.findNonZero(core)
        if cpts is None:
            return None
        cpts = cpts.reshape(-1, 2)
        px, py = cpts[:, 0], cpts[:, 1]
        # Boolean masks pick pixels in the raster order of findNonZero, at a quarter of the cost
        # of indexing by the two coordinate arrays.
        n, lab, pl, areas = self._split_merged(n, lab, (px, py, lab[core.view(bool)]))
        keep = np.zeros(n, bool)
        # A label the split emptied has no pixel: never a scallop, even at a minimum area of 0.
        keep[1:] = (areas[1:] > 0) & (areas[1:] * area_px >= self.config.min_core_area_mm2)
        nk = int(keep.sum())
        if nk == 0:
            return None
        remap = np.zeros(n, np.int32)
        remap[keep] = np.arange(1, nk + 1)
        # One pixel of each kept core (any will do), in the order of ``remap``: every kept label
        # has one (``areas > 0`` above), or ``anyone`` would point it at another core's pixel.
        anyone = np.zeros(n, np.intp)
        anyone[pl] = np.arange(len(pl))
        at = anyone[keep]
        labels = self._assign(fg, lab, remap, (px[at], py[at]))
        # Per-instance sums in one pass over the labelled pixels instead of one mask per instance
        # (findNonZero: same raster order as np.nonzero, several times faster).
        # (findNonZero takes the int32 labels, all >= 0: a compare with the scalar 0 would be
        # read as a 4-vector against a 1x1 array.)
        pts = cv2.findNonZero(labels)
        if pts is None:
            return None
        pts = pts.reshape(-1, 2)
        xs, ys = pts[:, 0], pts[:, 1]
        on = labels > 0
        lv = labels[on]
        cnt = np.bincount(lv, minlength=nk + 1)
        pfg = 1.0 - softmax_rows([logits[c, :h, :w][on] for c in range(logits.shape[0])], F_BG)
        psum = np.bincount(lv, weights=pfg, minlength=nk + 1)
        sx = np.bincount(lv, weights=xs, minlength=nk + 1)
        sy = np.bincount(lv, weights=ys, minlength=nk + 1)
        ok = cnt * area_px >= self.config.min_scallop_area_mm2 * 0.5
        ok[0] = False
        if not ok[1:].all():  # label 0 is the background, never kept
            drop = np.arange(nk + 1, dtype=np.int32)
            drop[~ok] = 0
            labels = drop.take(labels)
        ks = np.flatnonzero(ok)
        if len(ks) == 0:
            return None
        c = cnt[ks]
        return labels, ks, psum[ks] / c, sx[ks] / c, sy[ks] / c

    @staticmethod
    def _empty(to_belt) -> Detections:
        dets = Detections.empty()
        return dets.with_belt_mapping(to_belt) if to_belt is not None else dets

    # ------------------------------------------------------------------ main
    def _crops(self, image: np.ndarray, corners, roi: int, out: np.ndarray) -> None:
        """Resample each image square [x0, x0+roi)×[y0, y0+roi) of ``corners`` into ``out[i]``
        (N×S×S): area averaging when shrinking (as the fine frame was made in training),
        bilinear when enlarging; the frame's edge pixels are repeated outside it."""
        S = self.crop
        H, W = image.shape[:2]
        if roi < S:  # enlarging: bilinear, border handled by the warp
            step = roi / S
            for (x0, y0), o in zip(corners, out):
                M = np.array([[step, 0.0, x0 + 0.5 * step - 0.5], [0.0, step, y0 + 0.5 * step - 0.5]])
                cv2.warpAffine(
                    image,
                    M,
                    (S, S),
                    dst=o,
                    flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                    borderMode=cv2.BORDER_REPLICATE,
                )
            return
        # The squares stacked one above the other and shrunk in one resample: square i's rows
        # end at row (i+1)*roi, which lands on crop row (i+1)*S exactly (roi/S is a multiple of
        # 1/S, exact in binary), so no output pixel averages across two squares and each gets
        # the weights it would get alone: the same crops as one resample each, in one call.
        n = len(corners)
        stack = (
            out.reshape(n * S, S, *out.shape[3:])
            if roi == S
            else np.empty((n * roi, roi, *image.shape[2:]), image.dtype)
        )
        for i, (x0, y0) in enumerate(corners):
            a, b = max(x0, 0), max(y0, 0)
            c, d = min(x0 + roi, W), min(y0 + roi, H)
            dst = stack[i * roi : (i + 1) * roi]
            if (a, b, c, d) != (x0, y0, x0 + roi, y0 + roi):
                cv2.copyMakeBorder(
                    image[b:d, a:c], b - y0, y0 + roi - d, a - x0, x0 + roi - c, cv2.BORDER_REPLICATE, dst=dst
                )
            else:
                dst[...] = image[b:d, a:c]
        if roi != S:
            cv2.resize(stack, (S, n * S), dst=out.reshape(n * S, S, *out.shape[3:]), interpolation=cv2.INTER_AREA)

    def detect(
        self,
        image: np.ndarray,
        mm_per_px: float | None = None,
        to_belt: Callable[[np.ndarray], np.ndarray] | None = None,
        outlines: bool = False,
        uv: np.ndarray | None = None,
        uv_seen: np.ndarray | None = None,
    ) -> Detections:
        """Find scallops and uros in a BGR frame.

        mm_per_px: the image's scale on the belt (default: the config's); ``to_belt`` maps
        pixels (N,2) to belt millimetres and fills the *_mm fields. ``outlines``: also give
        the outlines of each scallop's uro and adductor (``Detections.part_contours``; the
        pre-annotations of a labelling export, not needed on the line). ``uv``: the frame's
        fluorescence image, (H, W) uint8 registered to ``image``'s pixels; a model that takes
        the channel needs it (:class:`~scallop.models.runtime.MissingChannelError` without
        it), a colour-only model ignores it. ``uv_seen``: (H, W) bool, the pixels the
        fluorescence camera saw (None: all of them); for a model that reads the channel, a
        whole scallop reaching where it saw nothing is ``outside_channel``, never ``no_uro``
        (its uro could lie where nothing could glow); its other verdicts stand.
        """
        if image is None or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 BGR image, got {getattr(image, 'shape', None)}")
        uv_finder, uv_parts = self._uv_finder, self._uv_parts
        if uv_finder or uv_parts:
            if uv is None:
                raise self.model.missing_uv("detect() was given no uv image")
            if uv.ndim != 2 or uv.shape != image.shape[:2] or uv.dtype != np.uint8:
                raise ValueError(
                    f"expected the fluorescence image as (H, W) uint8 on the colour image's {image.shape[1]}x"
                    f"{image.shape[0]} pixels, got {getattr(uv, 'shape', None)} {getattr(uv, 'dtype', None)}"
                )
            if uv_seen is not None and (uv_seen.shape != uv.shape or uv_seen.dtype != bool):
                raise ValueError(
                    f"expected the fluorescence camera's view as (H, W) bool on the colour image's pixels, got "
                    f"{getattr(uv_seen, 'shape', None)} {getattr(uv_seen, 'dtype', None)}"
                )
        else:
            uv_seen = None  # a colour-only model does not go by the channel
        clock = time.perf_counter
        t0 = clock()
        tm = self.timings = {}
        cfg = self.config
        s = float(mm_per_px or cfg.mm_per_px)
        H, W = image.shape[:2]
        # The finder's input straight from the frame (area averaging by halvings: at 0.5 mm/px an
        # exact 4:1 block average); the fine scale is only ever made for the crops.
        g = s / self.coarse_mm  # coarse px per image px
        coarse = self._resize(image, g)
        ch, cw = coarse.shape[:2]
        self.model.check_frame((ch + (-ch % self.multiple), cw + (-cw % self.multiple)))
        m = self.multiple
        ph, pw = -ch % m, -cw % m
        if ph or pw:
            coarse = cv2.copyMakeBorder(coarse, 0, ph, 0, pw, cv2.BORDER_REPLICATE)
        coarse_uv = None
        if uv_finder:  # the same resample and padding as the colour image
            coarse_uv = self._resize(uv, g)
            if ph or pw:
                coarse_uv = cv2.copyMakeBorder(coarse_uv, 0, ph, 0, pw, cv2.BORDER_REPLICATE)
        t1 = clock()
        tm["resize_ms"] = (t1 - t0) * 1e3
        flog = self.model.run_finder(coarse, coarse_uv)
        t2 = clock()
        tm["finder_ms"] = (t2 - t1) * 1e3
        found = self._instances(flog, (ch, cw))
        t3 = clock()
        tm["instances_ms"] = (t3 - t2) * 1e3
        if found is None:
            return self._empty(to_belt)
        labels, ks, confs, cxs, cys = found

        # Each crop is S fine pixels = ``roi`` image pixels square, cut from the frame around
        # the instance's centroid: a whole-frame fine image would cost more than the model.
        S = self.crop
        half = S // 2
        roi = max(1, int(round(S * self.fine_mm / s)))
        step = roi / S  # image px per crop px
        lab_pad = cv2.copyMakeBorder(labels, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
        n = len(ks)
        crops = np.empty((n, S, S, 3), np.uint8)
        uv_crops = np.empty((n, S, S), np.uint8) if uv_parts else None
        origins = np.empty((n, 2))
        corners = []
        for i in range(n):
            cx = (cxs[i] + 0.5) / g - 0.5
            cy = (cys[i] + 0.5) / g - 0.5
            x0 = int(round(cx + 0.5 - (half + 0.5) * step))
            y0 = int(round(cy + 0.5 - (half + 0.5) * step))
            corners.append((x0, y0))
            origins[i] = (x0 + 0.5 * step - 0.5, y0 + 0.5 * step - 0.5)
        self._crops(image, corners, roi, crops)
        if uv_crops is not None:  # the same squares, the same resampling
            self._crops(uv, corners, roi, uv_crops)
        t4 = clock()
        tm["crops_ms"] = (t4 - t3) * 1e3
        logits = self.model.run_parts(crops, uv_crops)
        t5 = clock()
        tm["parts_ms"] = (t5 - t4) * 1e3
        rows = self._rows(logits, ks, confs, origins, step, s, lab_pad, (W, H), outlines)
        if uv_seen is not None:
            _outside_channel(rows, uv_seen)
        tm["post_ms"] = (clock() - t5) * 1e3
        if not rows:
            return self._empty(to_belt)
        return self._detections(rows, to_belt)

    def _rows(
        self,
        logits: np.ndarray,
        ks: np.ndarray,
        confs: np.ndarray,
        origins: np.ndarray,
        step: float,
        s: float,
        lab_pad: np.ndarray,
        frame_wh: tuple[int, int],
        outlines: bool = False,
    ) -> list[dict]:
        """Per-crop post-processing. Crop pixel (c, r) sits at image pixel
        ``origins[i] + (c, r) * step`` (pixel centres); ``mm_c`` is mm per crop pixel.

        Each instance is worked on inside the box its coarse label covers in the crop, grown
        by the 2 pixels the dilation below can add: nothing of the instance lies outside it,
        and every quantity (areas, moments, contours, depths, distances to the adductor) comes
        out the same as on the whole crop at a fraction of the pixels."""
        cfg = self.config
        S = self.crop
        W, H = frame_wh
        ch = [logits[:, c] for c in range(logits.shape[1])]
        solid = not_first(ch)  # (N, S, S) not background
        uro_all = wins(ch, P_URO)
        add_all = wins(ch, P_ADDUCTOR)
        rivals = [c for k, c in enumerate(ch) if k != P_ADDUCTOR]
        mm_c = self.fine_mm if step == self.fine_mm / s else s * step
        mm2 = mm_c**2
        # The cut test runs on the fine frame's pixel grid (as the model was trained).
        r_fine = s / self.fine_mm
        fw, fh = int(round(W * r_fine)), int(round(H * r_fine))
        margin_fine = cfg.border_margin_mm / self.fine_mm
        g = s / self.coarse_mm  # coarse px per image px
        # Where each crop's pixel centres fall in the padded coarse labels (nearest), every crop
        # at once: rows (N, S) and columns (N, S), non-decreasing along each crop.
        at = np.round((self._arange * step + origins[:, :, None] + 0.5) * g - 0.5).astype(np.intp) + 1
        np.maximum(at, 0, out=at)
        np.minimum(at[:, 0], lab_pad.shape[1] - 1, out=at[:, 0])
        np.minimum(at[:, 1], lab_pad.shape[0] - 1, out=at[:, 1])
        rows = []
        for i, k in enumerate(ks):
            ox, oy = origins[i]
            # Instance labels resampled onto the crop's pixel grid (nearest), gathered from the
            # few coarse pixels the crop covers rather than from whole rows of the label map.
            ix, iy = at[i]
            lc = lab_pad[iy[0] : iy[-1] + 1, ix[0] : ix[-1] + 1].take(iy - iy[0], axis=0).take(ix - ix[0], axis=1)
            mine = (lc == k).view(np.uint8)
            mx, my, mw, mh = cv2.boundingRect(mine)
            if mw == 0:
                continue
            x0, y0 = max(mx - 2, 0), max(my - 2, 0)
            x1, y1 = min(mx + mw + 2, S), min(my + mh + 2, S)
            lr = lc[y0:y1, x0:x1]
            # Coarse labels are 2 mm/px: widen our region a little, but never into a neighbour.
            own = cv2.dilate(mine[y0:y1, x0:x1], self._k3, iterations=2).view(bool)
            own &= (lr == k) | (lr == 0)
            own &= solid[i, y0:y1, x0:x1]
            own_u8 = own.view(np.uint8)
            npx = cv2.countNonZero(own_u8)
            area = npx * mm2
            if area < cfg.min_scallop_area_mm2:
                continue
            bx, by, bw, bh = cv2.boundingRect(own_u8)
            bx, by = bx + x0, by + y0
            mo = cv2.moments(own_u8, True)
            cxc = (mo["m10"] + x0 * mo["m00"]) / mo["m00"]
            cyc = (mo["m01"] + y0 * mo["m00"]) / mo["m00"]
            # Fine-frame coordinates of the mask's extreme pixels (for the border test).
            fx0 = (ox + bx * step + 0.5) * r_fine - 0.5
            fx1 = (ox + (bx + bw - 1) * step + 0.5) * r_fine - 0.5
            fy0 = (oy + by * step + 0.5) * r_fine - 0.5
            fy1 = (oy + (by + bh - 1) * step + 0.5) * r_fine - 0.5
            cut = bool(
                fx0 < margin_fine or fy0 < margin_fine or fx1 > fw - 1 - margin_fine or fy1 > fh - 1 - margin_fine
            )
            e0x, e0y = ox + 0.5 - 0.5 * step, oy + 0.5 - 0.5 * step  # crop pixel edges → image edges
            row = dict(
                xyxy=(e0x + bx * step, e0y + by * step, e0x + (bx + bw) * step, e0y + (by + bh) * step),
                center=(ox + cxc * step, oy + cyc * step),
                area=area,
                conf=float(confs[i]),
                cut=cut,
                grasp=(np.nan, np.nan),
                pull=(np.nan, np.nan),
                uconf=0.0,
                uarea=0.0,
                ucenter=(np.nan, np.nan),
                uevid=np.nan,
                reason="",
            )
            cnts, _ = cv2.findContours(own_u8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cnt = max(cnts, key=cv2.contourArea).reshape(-1, 2) + (x0, y0)
            row["contour"] = cnt * step + (ox, oy)
            if len(cnts) > 1:  # every piece of the mask, for _outside_channel (the uro may be in any)
                row["pieces"] = [(c.reshape(-1, 2) + (x0, y0)) * step + (ox, oy) for c in cnts]
            if outlines:
                row["parts"] = {
                    name: [
                        (c.reshape(-1, 2) + (x0, y0)) * step + (ox, oy)
                        for c in cv2.findContours(
                            (mask[i, y0:y1, x0:x1] & own).view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
                        )[0]
                        if len(c) >= 3
                    ]
                    for name, mask in (("uro", uro_all), ("adductor", add_all))
                }
            uro = (uro_all[i, y0:y1, x0:x1] & own).view(np.uint8)
            # Uro blobs labelled on the uro pixels' bounding box only (same raster order, so the
            # same labels as on the whole crop).
            ux, uy, uw, uh = cv2.boundingRect(uro)
            nu = 0
            if uw:
                ub = uro[uy : uy + uh, ux : ux + uw]
                nu, ulab, ust, ucen = _blobs(ub)
            areas = ust[1:, cv2.CC_STAT_AREA] * mm2 if nu > 1 else None
            if nu <= 1 or areas.max() < cfg.min_uro_area_mm2:
                # Only here (a few scallops in ten) is the softmax over the whole mask worth it.
                ev = float(softmax_rows(list(logits[i, :, y0:y1, x0:x1]), P_URO)[own].max())
                row["uevid"] = ev
                row["reason"] = REASON_HIDDEN_URO if ev > cfg.hidden_uro_probability else REASON_NO_URO
            else:
                order = np.argsort(areas)[::-1]
                best = order[0] + 1
                cx_, cy_, cw_, ch_ = ust[best, :4]
                comp = np.zeros_like(uro)
                comp[uy : uy + uh, ux : ux + uw] = ulab == best
                add = add_all[i, y0:y1, x0:x1] & own
                # Where the adductor might be: within ``adductor_doubt_logit`` of the winning
                # class (about 18 % likely at the default). Grips keep their distance from this
                # wider mask, since the boundary between uro and adductor is where the mask errs:
                # at 0.5 logit one held-out grasp in 2800 still came within the 2 mm jaw radius
                # of the true adductor, at 1.5 none nearer than 2.5 mm (bench accuracy reports it).
                box = (i, slice(y0, y1), slice(x0, x1))
                add_near = ch[P_ADDUCTOR][box] + cfg.adductor_doubt_logit >= max_of([c[box] for c in rivals])
                add_near &= own
                ubox = (ux + cx_, uy + cy_, cw_, ch_)
                near = neighbour_px(lc, k, ubox, x0, y0, cfg.clearance_mm / mm_c)
                # Over the blob's own box: the same pixels in the same order as over the crop.
                bx0, by0 = ubox[:2]
                cm = comp[by0 : by0 + ch_, bx0 : bx0 + cw_].view(bool)
                ys_, xs_ = slice(y0 + by0, y0 + by0 + ch_), slice(x0 + bx0, x0 + bx0 + cw_)
                # The softmax over the whole box, then the blob's pixels: elementwise, so the same
                # numbers as over the blob's pixels gathered first, without four masked gathers.
                pu = softmax_rows(list(logits[i, :, ys_, xs_]), P_URO)
                py, px, gap = grasp_point(comp, ubox, add_near, mm_c, cfg, near, pu)
                touch = uro_adductor_gap(comp, ubox, add_near, cfg.max_uro_adductor_gap_mm / mm_c) * mm_c
                uconf = float(pu[cm].mean())
                px, py = px + x0, py + y0
                ucx, ucy = ucen[best] + (ux + x0, uy + y0)
                row.update(
                    grasp=(ox + px * step, oy + py * step),
                    uconf=uconf,
                    uarea=float(areas[order[0]]),
                    ucenter=(ox + ucx * step, oy + ucy * step),
                )
                add_u8 = add.view(np.uint8)
                na = cv2.countNonZero(add_u8)
                if na * mm2 >= cfg.min_adductor_area_mm2:
                    ma = cv2.moments(add_u8, True)
                    v = np.array(
                        [px - (ma["m10"] + x0 * ma["m00"]) / ma["m00"], py - (ma["m01"] + y0 * ma["m00"]) / ma["m00"]]
                    )
                    nv = np.linalg.norm(v)
                    if nv > 1e-6:
                        row["pull"] = tuple(v / nv)
                if cut:
                    row["reason"] = REASON_CUT
                elif (
                    uconf < cfg.min_uro_confidence
                    or not np.isfinite(row["pull"][0])
                    or gap < cfg.min_adductor_gap_mm
                    or touch > cfg.max_uro_adductor_gap_mm
                    or (len(order) > 1 and areas[order[1]] >= cfg.second_uro_ratio * areas[order[0]])
                    # Two adductors in one outline (_second_blob_px): looked for last, when it decides.
                    or (
                        na * mm2 >= 2 * cfg.min_adductor_area_mm2
                        and _second_blob_px(add_u8) * mm2 >= cfg.min_adductor_area_mm2
                    )
                ):
                    row["reason"] = REASON_AMBIGUOUS
                elif near is not None:
                    # A neighbour's pixel closer than the clearance lies in this window around the
                    # grasp (neighbours anywhere in the crop count, not only inside our box). With
                    # ``near`` None no other scallop lies within a wider window around the whole
                    # uro box (neighbour_px), which holds this one: nothing to look for.
                    r = int(np.ceil(cfg.clearance_mm / mm_c))
                    wy0, wx0 = max(py - r, 0), max(px - r, 0)
                    win = lc[wy0 : py + r + 1, wx0 : px + r + 1]
                    oyy, oxx = np.nonzero((win != k) & (win != 0))
                    if len(oxx):
                        dmin = np.sqrt(((oxx + wx0 - px) ** 2 + (oyy + wy0 - py) ** 2).min()) * mm_c
                        if dmin < cfg.clearance_mm:
                            row["reason"] = REASON_TOO_CLOSE
            if cut and not row["reason"]:
                row["reason"] = REASON_CUT
            rows.append(row)
        return rows

    @staticmethod
    def _detections(rows: list[dict], to_belt) -> Detections:
        dets = Detections(
            xyxy=np.array([r["xyxy"] for r in rows], np.float64),
            center_px=np.array([r["center"] for r in rows], np.float64),
            area_mm2=np.array([r["area"] for r in rows]),
            confidence=np.array([r["conf"] for r in rows]),
            uro_found=np.array([np.isfinite(r["grasp"][0]) for r in rows]),
            grasp_px=np.array([r["grasp"] for r in rows], np.float64),
            pull_dir=np.array([r["pull"] for r in rows], np.float64),
            uro_confidence=np.array([r["uconf"] for r in rows]),
            uro_area_mm2=np.array([r["uarea"] for r in rows]),
            cut_by_border=np.array([r["cut"] for r in rows]),
            pickable=np.array([r["reason"] == "" for r in rows]),
            reason=np.array([r["reason"] for r in rows], dtype=object),
            contours=[np.asarray(r["contour"], np.float32) for r in rows],
            uro_center_px=np.array([r["ucenter"] for r in rows], np.float64).reshape(-1, 2),
            uro_evidence=np.array([r["uevid"] for r in rows], np.float64),
            part_contours=(
                [{k: [np.asarray(c, np.float32) for c in v] for k, v in r["parts"].items()} for r in rows]
                if rows and "parts" in rows[0]
                else None
            ),
        )
        if to_belt is not None:
            dets.with_belt_mapping(to_belt)
        return dets
