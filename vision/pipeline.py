"""Frame → Detections with the two-stage model.

Cost per frame is dominated by where the pixels are: the finder sees the whole frame at
a coarse scale (2 mm/px: a 1280×720 frame at 0.5 mm/px becomes 320×180), the parts model
sees only the scallops, each as one crop at a fine scale, all crops in one batch.
Everything that does not depend on the frame (sessions, normalisation, kernels) is set up
once in ``__init__``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from scallop.models.runtime import SegModel
from scallop.vision.detections import (
    REASON_AMBIGUOUS, REASON_CUT, REASON_NO_URO, REASON_TOO_CLOSE, Detections,
)

# Class indices fixed by the metadata check in models.runtime (names must start like this).
F_BG, F_CORE, F_EDGE = 0, 1, 2
P_BG, P_MEAT, P_ADDUCTOR, P_URO = 0, 1, 2, 3


@dataclass
class PipelineConfig:
    """Thresholds in millimetres, so they hold at any camera scale."""

    model: str = ""                        # ONNX file ("" = the shipped model)
    mm_per_px: float = 0.5                 # image scale when no calibration mapping is given
    threads: int = 2                       # onnxruntime intra-op threads
    min_scallop_area_mm2: float = 300.0    # smaller blobs are not scallops (meat is 40–75 mm across)
    min_core_area_mm2: float = 60.0
    min_uro_area_mm2: float = 8.0
    min_adductor_area_mm2: float = 60.0
    min_uro_confidence: float = 0.55       # below: "ambiguous" rather than a guess
    second_uro_ratio: float = 0.6          # a second uro blob this large → ambiguous
    clearance_mm: float = 5.0              # another scallop this close to the grasp → too_close
    grip_clearance_mm: float = 2.0         # the gripper's jaw radius: grasp at least this deep in the uro
    min_adductor_gap_mm: float = 2.75      # jaw radius + mask error: closer to the adductor → ambiguous
    border_margin_mm: float = 1.5          # mask within this of the frame edge → cut by border

    def __post_init__(self) -> None:
        if not (0.05 <= self.mm_per_px <= 5.0):
            raise ValueError(f"mm_per_px={self.mm_per_px} is out of range: allowed 0.05..5")
        if not (1 <= self.threads <= 64):
            raise ValueError(f"threads={self.threads} is out of range: allowed 1..64")
        if not (0.0 <= self.min_uro_confidence <= 1.0):
            raise ValueError(f"min_uro_confidence={self.min_uro_confidence} is out of range: allowed 0..1")


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
        self._k3 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        self._cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _resize(img: np.ndarray, factor: float) -> np.ndarray:
        if abs(factor - 1.0) < 1e-6:
            return img
        h, w = img.shape[:2]
        size = (max(1, int(round(w * factor))), max(1, int(round(h * factor))))
        interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
        return cv2.resize(img, size, interpolation=interp)

    def _split_merged(self, core: np.ndarray, n: int, lab: np.ndarray, stats: np.ndarray):
        """Split core blobs that are clearly several scallops (not convex: solidity < 0.9)
        at their narrow necks: keep only pixels far from the blob's border (≥ 35 % of its
        deepest point), which separates round scallops touching or overlapping by ~10 %."""
        out = lab.copy()
        nxt = n
        for k in range(1, n):
            if stats[k, cv2.CC_STAT_AREA] < 30:
                continue
            x, y, w, h = stats[k, :4]
            m = (lab[y:y + h, x:x + w] == k).astype(np.uint8)
            cnts, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            hull = cv2.contourArea(cv2.convexHull(np.concatenate(cnts)))
            if hull <= 0 or stats[k, cv2.CC_STAT_AREA] / hull >= 0.9:
                continue
            dist = cv2.distanceTransform(cv2.copyMakeBorder(m, 1, 1, 1, 1, cv2.BORDER_CONSTANT, 0),
                                         cv2.DIST_L2, 3)[1:-1, 1:-1]
            seeds = (dist >= max(1.5, 0.35 * float(dist.max()))).astype(np.uint8)
            ns, slab = cv2.connectedComponents(seeds, connectivity=4)
            if ns <= 2:
                continue
            region = out[y:y + h, x:x + w]
            region[m.astype(bool)] = 0
            for j in range(1, ns):
                region[slab == j] = nxt
                nxt += 1
        if nxt == n:
            return n, lab, stats
        out = out.astype(np.int32)
        areas = np.bincount(out.ravel(), minlength=nxt)
        stats2 = np.zeros((nxt, 5), np.int32)
        stats2[:, cv2.CC_STAT_AREA] = areas
        return nxt, out, stats2

    def _instances(self, logits: np.ndarray, valid_hw: tuple[int, int]):
        """Finder logits → (label map int32 at coarse scale, [(label, fg prob mean)])."""
        h, w = valid_hw
        lg = logits[:, :h, :w]
        cls = lg.argmax(0).astype(np.uint8)
        fg = cls != F_BG
        core = (cls == F_CORE).astype(np.uint8)
        # One pixel of erosion cuts the thin bridges that join the cores of touching scallops
        # where the finder drew the edge between them only faintly.
        core = cv2.erode(core, self._cross)
        area_px = (self.coarse_mm ** 2)
        n, lab, stats, _ = cv2.connectedComponentsWithStats(core, connectivity=4)
        n, lab, stats = self._split_merged(core, n, lab, stats)
        keep = np.zeros(n, bool)
        keep[1:] = stats[1:, cv2.CC_STAT_AREA] * area_px >= self.config.min_core_area_mm2
        if not keep.any():
            return np.zeros((h, w), np.int32), []
        remap = np.zeros(n, np.int32)
        remap[keep] = np.arange(1, keep.sum() + 1)
        seeds = remap[lab]
        # Every foreground pixel goes to the nearest kept core: this splits touching
        # scallops along the edge class the finder drew between them.
        _, near = cv2.distanceTransformWithLabels((seeds == 0).astype(np.uint8), cv2.DIST_L2, 3,
                                                  labelType=cv2.DIST_LABEL_PIXEL)
        ys, xs = np.nonzero(seeds)
        pix_to_seed = np.zeros(near.max() + 1, np.int32)
        pix_to_seed[near[ys, xs]] = seeds[ys, xs]
        labels = np.where(fg, pix_to_seed[near], 0).astype(np.int32)
        e = np.exp(lg - lg.max(0, keepdims=True))
        pfg = 1.0 - e[F_BG] / e.sum(0)
        out = []
        for k in range(1, int(keep.sum()) + 1):
            m = labels == k
            a = int(m.sum())
            if a * area_px < self.config.min_scallop_area_mm2 * 0.5:
                labels[m] = 0
                continue
            out.append((k, float(pfg[m].mean())))
        return labels, out

    @staticmethod
    def _empty(to_belt) -> Detections:
        dets = Detections.empty()
        return dets.with_belt_mapping(to_belt) if to_belt is not None else dets

    def _grasp_point(self, uro: np.ndarray, adductor: np.ndarray) -> tuple[int, int, float]:
        """Where to grip the uro: well inside it (a centroid can fall outside a bent, kidney
        uro) and as far from the adductor as that allows — the uro touches the adductor at
        one end, and a gripper closing on that end pinches the meat.

        Candidates are the pixels at least ``grip_clearance_mm`` inside the uro (or 80 % of
        the deepest point's depth for a thin uro); among them the one farthest from the
        adductor wins. Returns (row, col, distance to the adductor in mm)."""
        du = cv2.distanceTransform(cv2.copyMakeBorder(uro, 1, 1, 1, 1, cv2.BORDER_CONSTANT, 0),
                                   cv2.DIST_L2, 5)[1:-1, 1:-1]
        deepest = float(du.max())
        if not adductor.any():
            py, px = np.unravel_index(int(du.argmax()), du.shape)
            return py, px, float("inf")
        need = min(self.config.grip_clearance_mm / self.fine_mm, 0.8 * deepest)
        da = cv2.distanceTransform((~adductor).astype(np.uint8), cv2.DIST_L2, 5)
        score = np.where(du >= need, da + 0.01 * du, -1.0)
        py, px = np.unravel_index(int(score.argmax()), score.shape)
        return py, px, float(da[py, px]) * self.fine_mm

    # ------------------------------------------------------------------ main
    def detect(self, image: np.ndarray, mm_per_px: float | None = None,
               to_belt: Callable[[np.ndarray], np.ndarray] | None = None) -> Detections:
        """Find scallops and uros in a BGR frame.

        mm_per_px: the image's scale on the belt (default: the config's); ``to_belt`` maps
        pixels (N,2) to belt millimetres and fills the *_mm fields.
        """
        if image is None or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 BGR image, got {getattr(image, 'shape', None)}")
        cfg = self.config
        s = float(mm_per_px or cfg.mm_per_px)
        H, W = image.shape[:2]
        r_fine = s / self.fine_mm                 # fine px per image px
        fine = self._resize(image, r_fine)
        fh, fw = fine.shape[:2]
        r_coarse = self.fine_mm / self.coarse_mm  # coarse px per fine px
        coarse = self._resize(fine, r_coarse)
        ch, cw = coarse.shape[:2]
        m = self.multiple
        ph, pw = -ch % m, -cw % m
        if ph or pw:
            coarse = cv2.copyMakeBorder(coarse, 0, ph, 0, pw, cv2.BORDER_REPLICATE)
        labels, insts = self._instances(self.model.run_finder(coarse), (ch, cw))
        if not insts:
            return self._empty(to_belt)

        S = self.crop
        half = S // 2
        padded = cv2.copyMakeBorder(fine, half, half, half, half, cv2.BORDER_REPLICATE)
        lab_pad = cv2.copyMakeBorder(labels, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
        crops, origins, lab_crops = [], [], []
        fine_per_coarse = 1.0 / r_coarse
        for k, _ in insts:
            ys, xs = np.nonzero(labels == k)
            cx = (xs.mean() + 0.5) * fine_per_coarse - 0.5
            cy = (ys.mean() + 0.5) * fine_per_coarse - 0.5
            x0 = int(round(cx)) - half
            y0 = int(round(cy)) - half
            crops.append(padded[y0 + half:y0 + half + S, x0 + half:x0 + half + S])
            origins.append((x0, y0))
            # Instance labels resampled onto the crop's pixel grid (nearest).
            gx = (np.arange(S) + x0 + 0.5) * r_coarse - 0.5
            gy = (np.arange(S) + y0 + 0.5) * r_coarse - 0.5
            ix = np.clip(np.round(gx).astype(int) + 1, 0, lab_pad.shape[1] - 1)
            iy = np.clip(np.round(gy).astype(int) + 1, 0, lab_pad.shape[0] - 1)
            lab_crops.append(lab_pad[iy[:, None], ix[None, :]])
        logits = self.model.run_parts(np.stack(crops))
        cls_all = logits.argmax(1).astype(np.uint8)

        mm2 = self.fine_mm ** 2
        margin_fine = cfg.border_margin_mm / self.fine_mm
        rows = []
        for i, (k, conf) in enumerate(insts):
            x0, y0 = origins[i]
            cls = cls_all[i]
            lc = lab_crops[i]
            mine = lc == k
            others = (lc != k) & (lc != 0)
            # Coarse labels are 2 mm/px: widen our region a little, but never into a neighbour.
            own = cv2.dilate(mine.astype(np.uint8), self._k3, iterations=2).astype(bool) & ~others & (cls != P_BG)
            area = own.sum() * mm2
            if area < cfg.min_scallop_area_mm2:
                continue
            ys, xs = np.nonzero(own)
            gx, gy = xs + x0, ys + y0                      # fine-image coordinates
            cut = bool(gx.min() < margin_fine or gy.min() < margin_fine
                       or gx.max() > fw - 1 - margin_fine or gy.max() > fh - 1 - margin_fine)
            row = dict(xyxy=(gx.min(), gy.min(), gx.max() + 1, gy.max() + 1), center=(gx.mean(), gy.mean()),
                       area=area, conf=conf, cut=cut, grasp=(np.nan, np.nan), pull=(np.nan, np.nan),
                       uconf=0.0, uarea=0.0, reason="")
            own_u8 = own.astype(np.uint8)
            cnts, _ = cv2.findContours(own_u8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cnt = max(cnts, key=cv2.contourArea).reshape(-1, 2).astype(np.float32) + (x0, y0)
            row["contour"] = cnt
            uro = ((cls == P_URO) & own).astype(np.uint8)
            nu, ulab, ust, _ = cv2.connectedComponentsWithStats(uro, connectivity=8)
            areas = ust[1:, cv2.CC_STAT_AREA] * mm2
            if nu <= 1 or areas.max() < cfg.min_uro_area_mm2:
                row["reason"] = REASON_NO_URO
            else:
                order = np.argsort(areas)[::-1]
                best = order[0] + 1
                comp = (ulab == best).astype(np.uint8)
                add = (cls == P_ADDUCTOR) & own
                py, px, gap = self._grasp_point(comp, add)
                lg = logits[i][:, comp.astype(bool)]
                e = np.exp(lg - lg.max(0, keepdims=True))
                uconf = float((e[P_URO] / e.sum(0)).mean())
                row.update(grasp=(px + x0, py + y0), uconf=uconf, uarea=float(areas[order[0]]))
                if add.sum() * mm2 >= cfg.min_adductor_area_mm2:
                    ay, ax = np.nonzero(add)
                    v = np.array([px - ax.mean(), py - ay.mean()])
                    nv = np.linalg.norm(v)
                    if nv > 1e-6:
                        row["pull"] = tuple(v / nv)
                if cut:
                    row["reason"] = REASON_CUT
                elif (uconf < cfg.min_uro_confidence or not np.isfinite(row["pull"][0])
                      or gap < cfg.min_adductor_gap_mm
                      or (len(order) > 1 and areas[order[1]] >= cfg.second_uro_ratio * areas[order[0]])):
                    row["reason"] = REASON_AMBIGUOUS
                elif others.any():
                    oy, ox = np.nonzero(others)
                    dmin = np.sqrt(((ox - px) ** 2 + (oy - py) ** 2).min()) * self.fine_mm
                    if dmin < cfg.clearance_mm:
                        row["reason"] = REASON_TOO_CLOSE
            if cut and not row["reason"]:
                row["reason"] = REASON_CUT
            rows.append(row)

        if not rows:
            return self._empty(to_belt)

        def back(a):  # fine-image pixels → original image pixels
            return (np.asarray(a, np.float64) + 0.5) / r_fine - 0.5

        xyxy = np.array([r["xyxy"] for r in rows], np.float64) / r_fine
        dets = Detections(
            xyxy=xyxy,
            center_px=back([r["center"] for r in rows]),
            area_mm2=np.array([r["area"] for r in rows]),
            confidence=np.array([r["conf"] for r in rows]),
            uro_found=np.array([np.isfinite(r["grasp"][0]) for r in rows]),
            grasp_px=back([r["grasp"] for r in rows]),
            pull_dir=np.array([r["pull"] for r in rows], np.float64),
            uro_confidence=np.array([r["uconf"] for r in rows]),
            uro_area_mm2=np.array([r["uarea"] for r in rows]),
            cut_by_border=np.array([r["cut"] for r in rows]),
            pickable=np.array([r["reason"] == "" for r in rows]),
            reason=np.array([r["reason"] for r in rows], dtype=object),
            contours=[back(r["contour"]).astype(np.float32) for r in rows],
        )
        if to_belt is not None:
            dets.with_belt_mapping(to_belt)
        return dets
