"""Tracking scallops across frames by belt position.

A scallop rides the belt rigidly, so its position in *belt-material* coordinates
(``u = x_B - travel``, ``v = y_B``) stays put while the belt moves; the encoder count latched
at each exposure gives the travel. Detections from successive frames that land within
``match_mm`` of a track's material position are the same scallop. A track is *committed*
as soon as no later frame can show its scallop whole (the next exposure would find it at
the view's downstream edge): its best view decides the grasp, or the skip reason — so every
scallop yields exactly one decision, and the arms learn of it as early as possible.

Views cut by the image border never decide a pick and never move a track that has a whole
view: the centroid of what is visible is biased towards the inside of the image. A track
made only of cut views that lies inside the outline of a scallop tracked whole (a sliver
seen entering, or leaving after its decision) is that scallop, not another one: it is
absorbed, never decided on its own.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from scallop.app.line.states import LineReason
from scallop.vision.detections import (
    REASON_AMBIGUOUS,
    REASON_CUT,
    REASON_NO_URO,
    REASON_OUTSIDE_CHANNEL,
    Detections,
)

# The tracker's own skip reason: the one pickable view is contradicted by the others.
REASON_VIEWS_DISAGREE = LineReason.VIEWS_DISAGREE.value


@dataclass
class View:
    frame_index: int
    encoder: int
    timestamp: float
    u: float
    v: float
    pickable: bool
    reason: str
    uro_found: bool
    grasp_uv: tuple[float, float] | None
    pull_dir: tuple[float, float] | None
    confidence: float
    centrality: float  # 0 at the image centre, 1 at the edge
    cut: bool = False  # partly outside the image: its centre is biased
    radius_mm: float = float("nan")  # sqrt(visible area / pi): the scallop's radius when whole
    score: float = float("nan")  # detection confidence (the mask is scallop), 0..1
    uro_uv: tuple[float, float] | None = None  # the uro's centre, material coordinates


@dataclass
class Track:
    id: int
    u: float
    v: float
    views: list[View] = field(default_factory=list)
    committed: bool = False
    absorbed: int = 0  # cut-only fragments of this scallop merged into it

    def add(self, view: View) -> None:
        self.views.append(view)
        # The centre of a scallop cut by the border is the centre of what is visible: it
        # moves from view to view. Whole views decide the position as soon as there is one.
        whole = [w for w in self.views if not w.cut] or self.views
        self.u = float(np.mean([w.u for w in whole]))
        self.v = float(np.mean([w.v for w in whole]))

    @property
    def first_seen(self) -> float:
        return self.views[0].timestamp

    @property
    def whole(self) -> bool:
        """At least one view shows the scallop entirely."""
        return any(not w.cut for w in self.views)

    @property
    def radius_mm(self) -> float | None:
        """The scallop's radius from its whole views (None while it was only seen cut)."""
        r = [w.radius_mm for w in self.views if not w.cut and math.isfinite(w.radius_mm)]
        return float(np.median(r)) if r else None

    def contradicted(self, chosen: View, agree_mm: float) -> bool:
        """Whether the views outvote pickable ``chosen``: most whole views that found a uro
        judged it not pickable, and each of them found it more than ``agree_mm`` from the
        chosen grasp — they do not see the same spot, so where the uro is is uncertain."""
        found = [w for w in self.views if not w.cut and w.grasp_uv is not None]
        if 2 * sum(w.pickable for w in found) >= len(found):
            return False
        return all(math.dist(chosen.grasp_uv, w.grasp_uv) > agree_mm for w in found if not w.pickable)

    def best_view(self) -> View:
        """The pickable view with the most confident uro, nearest the image centre; when no
        view is pickable, the one whose reason the whole views agree on most (a cut view
        only speaks when the scallop was never seen whole, one partly outside the fluorescence
        camera's view only when no other was wholly inside), where ``no_uro`` counts only when
        every one of them says it."""
        pickable = [v for v in self.views if v.pickable]
        if pickable:
            return max(pickable, key=lambda v: v.confidence - 0.2 * v.centrality)
        pool = [v for v in self.views if not v.cut] or self.views
        # "No uro" where the fluorescence camera did not see (outside_channel) speaks only when
        # no other view does: one it saw whole says more than any number it saw in part.
        pool = [v for v in pool if v.reason != REASON_OUTSIDE_CHANNEL] or pool
        reasons = [v.reason for v in pool]
        if any(r != REASON_NO_URO for r in reasons):
            # One view that saw a uro, or a glimpse of one, outvotes any number that saw none:
            # passing a scallop on as clean is the one skip that can let a uro leave the line.
            reasons = [r for r in reasons if r != REASON_NO_URO]
        top = max(set(reasons), key=reasons.count)
        return min((v for v in pool if v.reason == top), key=lambda v: v.centrality)


@dataclass
class Decision:
    """A committed track: a pick target in material coordinates, or a skip with a reason."""

    track: Track
    view: View
    pick: bool
    reason: str  # "" for a pick

    @property
    def grasp_uv(self):
        return self.view.grasp_uv


class Tracker:
    """``travel_of(encoder) -> mm`` converts a latched encoder count into belt travel;
    ``exit_x`` is the belt-frame x (mm) where the camera's view ends downstream.

    commit_margin_mm: a scallop whose centre is this close to ``exit_x`` cannot be seen
    whole (used while its size is unknown). cut_match_mm: the farthest a cut view's centroid
    lies from its scallop's centre (the largest scallop's radius). agree_mm: grasps of two
    views further apart than this do not point at the same spot of the uro.
    """

    def __init__(
        self,
        travel_of: Callable[[int], float],
        exit_x: float,
        match_mm: float = 25.0,
        commit_margin_mm: float = 30.0,
        cut_match_mm: float = 40.0,
        agree_mm: float = 4.0,
    ):
        self.travel_of = travel_of
        self.exit_x = exit_x
        # Scallops are 40–75 mm across and overlap by at most ~10 %, so two centres are never
        # this close; one scallop's centre moves less than this between views.
        self.match_mm = match_mm
        self.commit_margin = commit_margin_mm
        self.cut_match_mm = max(cut_match_mm, match_mm)
        # The grasp is the uro's most interior point: views of one uro put it within 1–2 mm of
        # each other, and a uro is 5–10 mm wide, so grasps this far apart are not one spot.
        self.agree_mm = agree_mm
        self.tracks: list[Track] = []
        self.closed: list[Track] = []  # committed, their scallop maybe still in view
        self._next_id = 1
        self.total_tracks = 0
        self.duplicates = 0
        self.absorbed = 0  # cut-only tracks merged into a whole one
        self.late_views = 0  # views of a scallop already decided
        self._recent: deque[tuple[float, float]] = deque(maxlen=64)  # committed (u, v)
        self._last_travel: float | None = None
        self._steps: deque[float] = deque(maxlen=5)  # belt travel between exposures

    # ------------------------------------------------------------------ geometry
    def _edge(self, t: Track) -> float:
        """How far the scallop reaches downstream of its centre (mm)."""
        r = t.radius_mm
        return self.commit_margin if r is None else r + 2.0

    def next_step_mm(self) -> float:
        """Belt travel expected before the next exposure (median of the last few: a dropped
        frame or a stop does not throw it off)."""
        return float(np.median(self._steps)) if self._steps else 0.0

    def _owner(self, t: Track, among: list[Track]) -> Track | None:
        """A track seen whole whose scallop outline contains cut-only track ``t``'s centre."""
        best, best_d = None, math.inf
        for w in among:
            if w is t or not w.whole:
                continue
            d = float(np.hypot(w.u - t.u, w.v - t.v))
            if d < min(self.cut_match_mm, w.radius_mm or self.match_mm) and d < best_d:
                best, best_d = w, d
        return best

    # ------------------------------------------------------------------ frames
    def update(
        self, dets: Detections, encoder: int, timestamp: float, frame_index: int, image_size: tuple[int, int]
    ) -> list[Decision]:
        """Add one frame's detections (with belt-mm fields filled); return the decisions of
        tracks that no later frame can show whole."""
        if len(dets) and dets.center_mm is None:
            raise ValueError("detections need belt coordinates (call with a pixel→belt mapping)")
        travel = self.travel_of(encoder)
        if self._last_travel is not None:
            self._steps.append(max(0.0, travel - self._last_travel))
        self._last_travel = travel
        # Scallops already decided and gone from the view need no matching any more.
        self.closed = [t for t in self.closed if t.u + travel - self._edge(t) <= self.exit_x + self.cut_match_mm]
        w, h = image_size
        unmatched = [t for t in self.tracks if not t.committed]
        for i in range(len(dets)):
            u = float(dets.center_mm[i][0] - travel)
            v = float(dets.center_mm[i][1])
            cx, cy = dets.center_px[i]
            centrality = float(max(abs(cx / w - 0.5), abs(cy / h - 0.5)) * 2)
            grasp = pull = None
            if dets.uro_found[i] and dets.grasp_mm is not None and np.isfinite(dets.grasp_mm[i]).all():
                grasp = (float(dets.grasp_mm[i][0] - travel), float(dets.grasp_mm[i][1]))
                if np.isfinite(dets.pull_dir_mm[i]).all():
                    pull = (float(dets.pull_dir_mm[i][0]), float(dets.pull_dir_mm[i][1]))
            pickable = bool(dets.pickable[i]) and grasp is not None and pull is not None
            reason = "" if pickable else (str(dets.reason[i]) or REASON_AMBIGUOUS)
            cut = bool(dets.cut_by_border[i])
            area = float(dets.area_mm2[i])
            uro_uv = None
            if dets.uro_center_mm is not None and np.isfinite(dets.uro_center_mm[i]).all():
                uro_uv = (float(dets.uro_center_mm[i][0] - travel), float(dets.uro_center_mm[i][1]))
            view = View(
                frame_index,
                int(encoder),
                float(timestamp),
                u,
                v,
                pickable,
                reason,
                bool(dets.uro_found[i]),
                grasp,
                pull,
                float(dets.uro_confidence[i]),
                centrality,
                cut=cut,
                radius_mm=math.sqrt(area / math.pi) if area > 0 else float("nan"),
                score=float(dets.confidence[i]),
                uro_uv=uro_uv,
            )
            # A cut view's centroid can lie up to a radius from the scallop's centre.
            reach = self.cut_match_mm if cut else self.match_mm
            best, best_d = None, reach
            for t in unmatched:
                d = float(np.hypot(t.u - u, t.v - v))
                # A track seen only cut has no size yet: two cut views of one scallop (entering
                # before a gap in the frames, leaving after it) lie on opposite sides of its
                # centre, so they may be as far apart as a cut view may lie from a new track.
                r = t.radius_mm if t.radius_mm is not None else reach
                lim = self.match_mm if not cut else min(reach, max(self.match_mm, r))
                if d < lim and d < best_d:
                    best, best_d = t, d
            if best is None:
                # The scallop of a decision already made, still in view (its edge leaving).
                late = [
                    t
                    for t in self.closed
                    if np.hypot(t.u - u, t.v - v) < (max(self.match_mm, t.radius_mm or 0.0) if cut else self.match_mm)
                ]
                if late:
                    self.late_views += 1
                    continue
                best = Track(self._next_id, u, v)
                self._next_id += 1
                self.total_tracks += 1
                self.tracks.append(best)
            else:
                unmatched.remove(best)
            best.add(view)
        self._absorb_fragments()
        return self._commit(travel, final=False)

    def _absorb_fragments(self) -> None:
        """Cut-only tracks inside the outline of a scallop tracked whole are that scallop."""
        for t in [t for t in self.tracks if not t.whole]:
            owner = self._owner(t, self.tracks + self.closed)
            if owner is None:
                continue
            if not owner.committed:
                for v in t.views:
                    owner.views.append(v)  # cut: moves nothing, never picked
            owner.absorbed += 1
            self.absorbed += 1
            self.tracks.remove(t)

    def _commit(self, travel: float, final: bool) -> list[Decision]:
        out = []
        step = self.next_step_mm()
        for t in self.tracks:
            if t.committed:
                continue
            x = t.u + travel
            edge = self._edge(t)
            # Now, or at the next exposure, the scallop reaches the downstream edge: no later
            # frame shows it whole, and the arms gain a frame's worth of time.
            if final or x > self.exit_x - self.commit_margin or x + step + edge > self.exit_x:
                t.committed = True
                if not t.whole and self._owner(t, self.closed) is not None:
                    self.absorbed += 1
                    continue
                if any(np.hypot(t.u - u, t.v - v) < self.match_mm for u, v in self._recent):
                    # A second track of a scallop already decided (a view that matched no
                    # track): deciding it again could pick the same scallop twice.
                    self.duplicates += 1
                    continue
                self._recent.append((t.u, t.v))
                self.closed.append(t)
                view = t.best_view()
                if view.pickable and t.contradicted(view, self.agree_mm):
                    out.append(Decision(t, view, False, REASON_VIEWS_DISAGREE))
                elif not view.pickable and view.reason == REASON_NO_URO and not t.whole:
                    # Only ever seen cut by the image's edge: what the edge hid may carry the
                    # uro, so it is not passed on as clean (reject.py passes only what vision
                    # saw whole without a uro).
                    out.append(Decision(t, view, False, REASON_CUT))
                else:
                    out.append(Decision(t, view, view.pickable, "" if view.pickable else view.reason))
        self.tracks = [t for t in self.tracks if not t.committed]
        return out

    @property
    def next_id(self) -> int:
        """The id the next new track gets (ids only grow)."""
        return self._next_id

    def open_count(self) -> int:
        """Scallops in view that are not decided yet."""
        return sum(1 for t in self.tracks if not t.committed)

    def flush(self) -> list[Decision]:
        """Commit everything still open (line stopping): nothing seen is lost."""
        return self._commit(0.0, final=True)
