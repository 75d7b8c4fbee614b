"""Score detections against per-pixel ground truth (simulator or labelled photos).

The one frame scorer: ``scallop bench accuracy`` and ``scallop eval`` (and through it the
model registry's promotion gate) all count with :func:`score_frame`. The figures are the ones
the product is judged by, counted over scallops that are at least 90 % visible, not marked
occluded and not cut by the image border: scallop recall and precision, grasp inside the true
uro grown by 1 mm (uro success), grasps landing on the adductor, grasps whose 2 mm jaws reach
it, scallops without a uro reported as such or grasped anyway, and the true distance from
every pickable grasp to the nearest adductor (the jaw margin). docs/evaluation.md writes the
definitions down.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from scallop.vision.detections import REASON_NO_URO, Detections

PART_ADDUCTOR = 3
PART_URO = 4


JAW_RADIUS_MM = 2.0  # the referee's grip disk (sim/world.py grade_pick)
# A visible uro smaller than the jaws' disk (12.6 mm²): what shows of it (a sliver beside a
# mantle flap) cannot be closed on without the meat around it. Counted apart, so a figure over
# every uro can be read beside the same figure over the uros the gripper can take.
SMALL_URO_MM2 = float(np.pi * JAW_RADIUS_MM**2)
LISTS = ("failures", "conf_on_uro", "conf_off_uro", "adductor_mm")


@dataclass
class Tally:
    truth_scallops: int = 0  # ≥ 90 % visible
    found: int = 0  # of those, matched by a detection
    detections: int = 0  # detections of any scallop or of nothing
    false_detections: int = 0  # matched no scallop at all, or a second time
    with_uro: int = 0  # ≥ 90 % visible truth scallops whose uro is visible
    grasp_on_uro: int = 0
    grasps: int = 0  # every reported grasp
    grasp_on_adductor: int = 0
    grasp_near_adductor: int = 0  # pickable grasps whose 2 mm jaw disk reaches the true adductor
    without_uro: int = 0
    no_uro_reported: int = 0
    no_uro_grasped: int = 0  # of without_uro: a grasp emitted all the same (the no-uro picked count)
    no_uro_pickable: int = 0  # of those, marked pickable: the pick into meat the line would make
    # What the line would do with the scallops vision did not get right (reject.py: only
    # "no_uro" passes unpicked): a uro let go on the belt is the food-safety failure, a scallop
    # without one sent to rework only costs a person's time.
    small_uro: int = 0  # of with_uro: visible uro smaller than the jaws' disk (SMALL_URO_MM2)
    small_uro_on: int = 0  # of small_uro: grasp on the uro
    small_uro_passed: int = 0  # of small_uro: let go with it (as uro_passed)
    # uro success counts a grasp on the uro whatever the line does with it. Split: the line
    # picks it (pickable), or diverts it (ambiguous, too close, cut); of the diverted, those
    # whose 2 mm jaws would reach the labelled adductor (a uro seen only beside it).
    uro_on_picked: int = 0
    uro_on_diverted_near_adductor: int = 0
    uro_passed: int = 0  # of with_uro: not found, reported "no_uro", or given a pickable grasp off the uro
    uro_to_rework: int = 0  # of with_uro: not grasped on the uro, diverted (any other reason)
    no_uro_to_rework: int = 0  # of without_uro: no pickable grasp, a reason other than "no_uro"
    frames: int = 0
    failures: list = field(default_factory=list)  # (frame, scallop id, what) for reports
    # uro confidence of every pickable grasp, split by whether it lands on a true uro: how well
    # min_uro_confidence can separate the two.
    conf_on_uro: list = field(default_factory=list)
    conf_off_uro: list = field(default_factory=list)
    adductor_mm: list = field(default_factory=list)  # true distance from each pickable grasp to an adductor

    def add(self, other: Tally) -> None:
        for k, v in asdict(other).items():
            if k in LISTS:
                getattr(self, k).extend(getattr(other, k))
            else:
                setattr(self, k, getattr(self, k) + v)

    def summary(self) -> dict:
        def rate(a, b):
            return round(a / b, 5) if b else None

        mm = self.adductor_mm
        return {
            "frames": self.frames,
            "scallops": self.truth_scallops,
            "recall": rate(self.found, self.truth_scallops),
            # The names of scallop eval and the promotion gate (docs/evaluation.md).
            "uro_success": rate(self.grasp_on_uro, self.with_uro),
            # The same over the uros that show at least the jaws' disk, and the share that do not.
            "uro_success_jaw_size": rate(self.grasp_on_uro - self.small_uro_on, self.with_uro - self.small_uro),
            "small_uro_share": rate(self.small_uro, self.with_uro),
            "uro_picked": rate(self.uro_on_picked, self.with_uro),
            "uro_diverted_near_adductor": rate(self.uro_on_diverted_near_adductor, self.with_uro),
            "adductor_hits": rate(self.grasp_on_adductor, self.grasps),
            "near_adductor": rate(self.grasp_near_adductor, len(mm)),
            "no_uro_picked": rate(self.no_uro_grasped, self.without_uro),
            "no_uro_pickable": rate(self.no_uro_pickable, self.without_uro),
            "uro_passed": rate(self.uro_passed, self.with_uro),
            "uro_to_rework": rate(self.uro_to_rework, self.with_uro),
            "no_uro_to_rework": rate(self.no_uro_to_rework, self.without_uro),
            "jaw_margin_min_mm": round(min(mm), 2) if mm else None,
            "jaw_margin_p1_mm": round(float(np.percentile(mm, 1)), 2) if mm else None,
            "precision": rate(self.detections - self.false_detections, self.detections),
            "grasp_on_uro": rate(self.grasp_on_uro, self.with_uro),
            "grasp_on_adductor": rate(self.grasp_on_adductor, self.grasps),
            "grasp_near_adductor": rate(self.grasp_near_adductor, len(self.adductor_mm)),
            "grasp_adductor_min_mm": round(min(self.adductor_mm), 2) if self.adductor_mm else None,
            "no_uro_reported": rate(self.no_uro_reported, self.without_uro),
            "uro_confidence": {
                "pickable_on_uro": len(self.conf_on_uro),
                "on_uro_min": round(min(self.conf_on_uro), 4) if self.conf_on_uro else None,
                "on_uro_p1": round(float(np.percentile(self.conf_on_uro, 1)), 4) if self.conf_on_uro else None,
                "off_uro": sorted(round(c, 4) for c in self.conf_off_uro),
            },
            "counts": {k: v for k, v in asdict(self).items() if k not in LISTS} | {"pickable_grasps": len(mm)},
        }


def score_frame(
    dets: Detections,
    parts: np.ndarray,
    instances: np.ndarray,
    facts: list[dict],
    mm_per_px: float,
    frame: str = "",
    tol_mm: float = 1.0,
    min_visible: float = 0.9,
) -> Tally:
    """``facts``: per-scallop truth dicts with at least ``id``, ``visible_fraction``,
    ``uro_present`` and ``cut_by_border`` (and ``occluded``: a labeller's mark that a
    neighbour hides part of it, for sets that cannot know the visible fraction)."""
    t = Tally(frames=1)
    h, w = parts.shape
    by_id = {int(f["id"]): f for f in facts}
    counted = {
        i
        for i, f in by_id.items()
        if f.get("visible_fraction", 1.0) >= min_visible
        and not f.get("cut_by_border", False)
        and not f.get("occluded", False)
    }
    t.truth_scallops = len(counted)
    t.detections = len(dets)
    matched: dict[int, int] = {}
    for j in range(len(dets)):
        cx, cy = np.round(dets.center_px[j]).astype(int)
        tid = int(instances[np.clip(cy, 0, h - 1), np.clip(cx, 0, w - 1)])
        if tid == 0 or tid in matched:
            # The centroid of a bent outline can miss: fall back to the outline's majority owner.
            mask = np.zeros((h, w), np.uint8)
            cv2.fillPoly(mask, [np.round(dets.contours[j]).astype(np.int32)], 1)
            ids, counts = np.unique(instances[mask.astype(bool)], return_counts=True)
            keep = (ids != 0) & ~np.isin(ids, list(matched))
            tid = int(ids[keep][counts[keep].argmax()]) if keep.any() else 0
        if tid == 0 or tid in matched:
            t.false_detections += 1
            t.failures.append((frame, tid, "false_detection"))
            continue
        matched[tid] = j
    is_uro = parts == PART_URO
    add_dist: list[np.ndarray] = []

    def adductor_mm() -> np.ndarray:
        # True distance to the labelled adductor, made once and only when a grasp needs it.
        if not add_dist:
            add_dist.append(
                cv2.distanceTransform((parts != PART_ADDUCTOR).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
                * mm_per_px
            )
        return add_dist[0]

    uro_xy: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def uro_of(tid: int) -> tuple[np.ndarray, np.ndarray]:
        # Each scallop's labelled uro pixels, found once: both loops below ask for them.
        if tid not in uro_xy:
            uro_xy[tid] = np.nonzero(is_uro & (instances == tid))
        return uro_xy[tid]

    for tid in counted:
        f = by_id[tid]
        j = matched.get(tid)
        if j is not None:
            t.found += 1
        else:
            t.failures.append((frame, tid, "missed_scallop"))
        if f.get("uro_present"):
            t.with_uro += 1
            ys, xs = uro_of(tid)
            small = len(xs) * mm_per_px**2 < SMALL_URO_MM2
            t.small_uro += small
            if j is not None and dets.uro_found[j] and len(xs):
                gx, gy = dets.grasp_px[j]
                d = np.sqrt(((xs - gx) ** 2 + (ys - gy) ** 2).min()) * mm_per_px
                if d <= tol_mm:
                    t.grasp_on_uro += 1
                    t.small_uro_on += small
                    if dets.pickable[j]:
                        t.uro_on_picked += 1
                    else:
                        ix, iy = np.clip(np.round((gx, gy)).astype(int), 0, (w - 1, h - 1))
                        t.uro_on_diverted_near_adductor += bool(adductor_mm()[iy, ix] < JAW_RADIUS_MM)
                    continue
            # Not found at all, reported without a uro, or picked off it: no divert is asked for.
            if j is None or dets.reason[j] == REASON_NO_URO or dets.pickable[j]:
                t.uro_passed += 1
                t.small_uro_passed += small
            else:
                t.uro_to_rework += 1
            t.failures.append((frame, tid, "grasp_off_uro" if j is not None else "missed_scallop"))
        else:
            t.without_uro += 1
            if j is not None and not dets.pickable[j] and dets.reason[j] != REASON_NO_URO:
                t.no_uro_to_rework += 1
            if j is not None and dets.uro_found[j]:
                t.no_uro_grasped += 1
                t.no_uro_pickable += bool(dets.pickable[j])
            if j is not None and not dets.uro_found[j]:
                t.no_uro_reported += 1
            elif j is not None:  # an unmatched one is already a missed scallop
                t.failures.append((frame, tid, "uro_reported_on_scallop_without_uro"))
    for j in np.nonzero(dets.uro_found)[0]:
        t.grasps += 1
        gx, gy = np.round(dets.grasp_px[j]).astype(int)
        gx, gy = np.clip(gx, 0, w - 1), np.clip(gy, 0, h - 1)
        if parts[gy, gx] == PART_ADDUCTOR:
            t.grasp_on_adductor += 1
            t.failures.append((frame, -1, "grasp_on_adductor"))
        if dets.pickable[j]:
            add_mm = adductor_mm()
            t.adductor_mm.append(float(add_mm[gy, gx]))
            if add_mm[gy, gx] < JAW_RADIUS_MM:
                t.grasp_near_adductor += 1
                t.failures.append((frame, -1, "grasp_near_adductor"))
            tid = int(instances[gy, gx])
            ys, xs = uro_of(tid) if tid else ((), ())
            on = (
                len(xs) > 0
                and np.sqrt(((xs - dets.grasp_px[j][0]) ** 2 + (ys - dets.grasp_px[j][1]) ** 2).min()) * mm_per_px
                <= tol_mm
            )
            (t.conf_on_uro if on else t.conf_off_uro).append(float(dets.uro_confidence[j]))
    return t
