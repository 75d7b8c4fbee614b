"""Tracking scallops across frames by belt position.

A scallop rides the belt rigidly, so its position in *belt-material* coordinates
(``u = x_B - travel``, ``v = y_B``) stays put while the belt moves; the encoder count latched
at each exposure gives the travel. Detections from successive frames that land within
``match_mm`` of a track's material position are the same scallop. When a track is about
to leave the camera's view it is *committed*: its best view decides the grasp, or the skip
reason — so every scallop yields exactly one decision.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from scallop.vision.detections import REASON_AMBIGUOUS, REASON_NO_URO, Detections


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
    centrality: float                     # 0 at the image centre, 1 at the edge
    cut: bool = False                     # partly outside the image: its centre is biased


@dataclass
class Track:
    id: int
    u: float
    v: float
    views: list[View] = field(default_factory=list)
    committed: bool = False

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

    def best_view(self) -> View:
        """The pickable view with the most confident uro, nearest the image centre; when no
        view is pickable, the one whose reason the views agree on most."""
        pickable = [v for v in self.views if v.pickable]
        if pickable:
            return max(pickable, key=lambda v: (v.confidence - 0.2 * v.centrality))
        reasons = [v.reason for v in self.views]
        top = max(set(reasons), key=lambda r: (reasons.count(r), r == REASON_NO_URO))
        return min((v for v in self.views if v.reason == top), key=lambda v: v.centrality)


@dataclass
class Decision:
    """A committed track: a pick target in material coordinates, or a skip with a reason."""

    track: Track
    view: View
    pick: bool
    reason: str                       # "" for a pick

    @property
    def grasp_uv(self):
        return self.view.grasp_uv


class Tracker:
    """``travel_of(encoder) -> mm`` converts a latched encoder count into belt travel;
    ``exit_x`` is the belt-frame x (mm) where the camera's view ends downstream."""

    def __init__(self, travel_of: Callable[[int], float], exit_x: float, match_mm: float = 25.0,
                 commit_margin_mm: float = 30.0):
        self.travel_of = travel_of
        self.exit_x = exit_x
        # Scallops are 40–75 mm across and overlap by at most ~10 %, so two centres are never
        # this close; one scallop's centre moves less than this between views.
        self.match_mm = match_mm
        self.commit_margin = commit_margin_mm
        self.tracks: list[Track] = []
        self._next_id = 1
        self.total_tracks = 0
        self.duplicates = 0
        self._recent: deque[tuple[float, float]] = deque(maxlen=64)   # committed (u, v)

    def update(self, dets: Detections, encoder: int, timestamp: float, frame_index: int,
               image_size: tuple[int, int]) -> list[Decision]:
        """Add one frame's detections (with belt-mm fields filled); return the decisions of
        tracks that are now leaving the view."""
        if len(dets) and dets.center_mm is None:
            raise ValueError("detections need belt coordinates (call with a pixel→belt mapping)")
        travel = self.travel_of(encoder)
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
            view = View(frame_index, int(encoder), float(timestamp), u, v, pickable, reason,
                        bool(dets.uro_found[i]), grasp, pull, float(dets.uro_confidence[i]), centrality,
                        cut=bool(dets.cut_by_border[i]))
            best, best_d = None, self.match_mm
            for t in unmatched:
                d = float(np.hypot(t.u - u, t.v - v))
                if d < best_d:
                    best, best_d = t, d
            if best is None:
                best = Track(self._next_id, u, v)
                self._next_id += 1
                self.total_tracks += 1
                self.tracks.append(best)
            else:
                unmatched.remove(best)
            best.add(view)
        return self._commit(travel, final=False)

    def _commit(self, travel: float, final: bool) -> list[Decision]:
        out = []
        for t in self.tracks:
            if t.committed:
                continue
            if final or t.u + travel > self.exit_x - self.commit_margin:
                t.committed = True
                if any(np.hypot(t.u - u, t.v - v) < self.match_mm for u, v in self._recent):
                    # A second track of a scallop already decided (a view that matched no
                    # track): deciding it again could pick the same scallop twice.
                    self.duplicates += 1
                    continue
                self._recent.append((t.u, t.v))
                view = t.best_view()
                out.append(Decision(t, view, view.pickable, "" if view.pickable else view.reason))
        self.tracks = [t for t in self.tracks if not t.committed]
        return out

    def flush(self) -> list[Decision]:
        """Commit everything still open (line stopping): nothing seen is lost."""
        return self._commit(0.0, final=True)
