"""Following every scallop of the simulated world through a run: the population, which track
belongs to which scallop, one outcome each, and annotated frames of failures.

The *population* is every scallop that lay in the camera's view when the run began or arrived
far enough upstream of the view's downstream edge (one trigger spacing) that a working camera
shows it in at least one frame. The ones already past the camera are not the line's, nor is
one the simulator drops beside a scallop that is already far into the view. Each population
scallop that went past the last pick window gets exactly one outcome (:func:`outcome_of`):
``picked:<grade>``, ``skipped:<reason>`` (the line's own reason, e.g. ``no_uro``,
``no_capacity``), ``failed:<reason>`` (sent to an arm that did not complete it:
``arm_aborted``, ``arm_empty``, ``estop``), or, when the line never decided on it,
``vision_missed`` (imaged while running, never tracked), ``line_<state>`` (only imaged while
the line was in e-stop or stopped) or ``not_imaged`` (no frame showed it: camera dropped or
stalled).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

# A track matches the scallop whose material position is nearest, within this (mm).
MATCH_MM = 25.0
OBSERVE_EVERY_S = 0.1
OBSERVE_TRAVEL_MM = 30.0
FAILURE_KINDS_MAX_EACH = 2


@dataclass
class ScallopTruth:
    """What the bench knows about one scallop of the simulated world."""

    id: int
    x_m: float  # material position (belt frame at travel 0), mm
    y: float
    had_uro: bool  # carried a uro a pick could reach (not upside down)
    has_uro: bool  # still carries it (last observation)
    x: float  # belt-frame x at the last observation
    appeared_x: float  # belt-frame x when the bench first saw it in the world
    first_visible_t: float | None = None
    seen_running: int = 0  # frames showing it while the line was running
    seen_other: set = field(default_factory=set)  # line states of other frames showing it
    outcomes: list = field(default_factory=list)  # ScallopOutcome objects matched to it
    passed_t: float | None = None
    population: bool = True  # the line's to handle (see the module docstring)
    t_obs: float = -math.inf  # time of the last observation (x was there then)
    diverted: bool = False  # crossed the reject gate's line while the gate was open
    t_gate: float | None = None  # when its centre crossed the reject gate's line (virtual s)


@dataclass
class FailureFrame:
    """A failure worth a picture in the report: the frame that shows it, and its JPEG."""

    kind: str
    scallop: int
    frame_index: int
    t: float
    detail: str
    file: str = ""


class Accounting:
    """Every scallop of the simulated world and what the line decided about it, kept up to date
    from the line's hooks: :meth:`on_frame` for each frame, :meth:`tick` between frames."""

    def __init__(
        self, line, t0: float, target_n: int, failure_frames: int, report_dir: Path | None, ring: int = 16
    ) -> None:
        self.line = line
        self.t0 = t0
        self.target_n = target_n
        self.failure_frames = failure_frames
        self.report_dir = report_dir
        self.truth: dict[int, ScallopTruth] = {}
        self.phantoms: list = []
        self.harvested: set[int] = set()
        self.open: list = []  # outcomes harvested before their result was known
        self.ring: deque = deque(maxlen=ring)
        self.prev_visible: set[int] = set()
        self.failures: list[FailureFrame] = []
        self.failure_kinds: Counter = Counter()
        self.frame_states: Counter = Counter()
        self.frames = 0
        self._next_obs = -math.inf
        self.candidates: dict[int, tuple] = {}  # scallop id -> (kind, ring entry, detail)
        self.pop_ids: list[int] = []  # population scallops in order of arrival
        self.appeared_late: list[int] = []  # scallops that appeared too late to be imaged

        b = line.backend
        self.world = b.world
        self.view_hi = b.camera_model.view_x_range()[1]
        # Often enough that an arrival is seen before it reaches the view (arrivals are made
        # at least a scallop's diameter upstream of it).
        belt = line.config.sim.belt
        v_max = max([belt.speed_mm_s] + [max(g.speed_mm_s, g.end_speed) for g in belt.profile])
        self.observe_s = min(OBSERVE_EVERY_S, OBSERVE_TRAVEL_MM / max(1.0, v_max))
        cam = b.camera
        self.frame_spacing_mm = cam.trigger_mm if cam.trigger == "encoder" else v_max / cam.fps
        self.last_window = max(a.pick_window_x_mm[1] for a in b.arm_configs)
        # With a reject gate the line's part ends where the gate is: a scallop is judged there.
        self.plc = getattr(b, "sim_plc", None)
        self.gate_x = b.plc_config.gate_x_mm if self.plc is not None and b.plc_config is not None else None
        self.end_x = max(self.last_window, self.gate_x) if self.gate_x is not None else self.last_window

    # ------------------------------------------------------------ hooks
    def tick(self, now: float) -> None:
        """Between frames: where the scallops are, when it is time to look again."""
        if self._next_obs <= now:
            self._observe(now)

    def _observe(self, t: float) -> None:
        """Where every scallop of the world is at ``t`` (also between frames: where a scallop
        first appeared decides whether it belongs to the population, camera stalls or not)."""
        self._next_obs = t + self.observe_s
        travel = self.world.travel_mm(t)
        for s in self.world.scallops_at(t):
            row = self.truth.get(s.id)
            x = s.center_B[0]
            if row is None:
                # In the view when the run began, or arrived far enough upstream of its
                # downstream edge that a working camera exposes at least one frame showing it.
                pop = x < self.view_hi - (0.0 if t <= self.t0 else self.frame_spacing_mm)
                row = self.truth[s.id] = ScallopTruth(
                    s.id,
                    x - travel,
                    s.center_B[1],
                    s.has_uro and not s.upside_down,
                    s.has_uro,
                    x,
                    appeared_x=x,
                    population=pop,
                )
                if row.population:
                    self.pop_ids.append(s.id)
                elif t > self.t0:
                    self.appeared_late.append(s.id)
            if row.passed_t is None and x > self.end_x:
                row.passed_t = t
                if self.gate_x is not None:
                    # When its centre crossed the gate's line (between the last two looks).
                    t_cross = t
                    if row.x < self.gate_x and math.isfinite(row.t_obs) and x > row.x:
                        t_cross = row.t_obs + (self.gate_x - row.x) / (x - row.x) * (t - row.t_obs)
                    row.diverted = self.plc.gate_open_during(t_cross, t_cross)
                    row.t_gate = t_cross
                row.x, row.has_uro, row.t_obs = x, s.has_uro, t
                if self.candidates:
                    self._settle(row)
            else:
                row.x, row.has_uro, row.t_obs = x, s.has_uro, t

    def on_frame(self, line, frame) -> None:
        truth = frame.extra.get("truth")
        t = frame.timestamp
        state = line.state
        self.frames += 1
        self.frame_states[state] += 1
        self._observe(t)
        visible = set()
        by_id = {}
        for st in truth.scallops if truth is not None else ():
            row = self.truth.get(st.id)
            if row is None:
                continue
            visible.add(st.id)
            by_id[st.id] = st
            if row.first_visible_t is None:
                row.first_visible_t = t
            if state == "running":
                row.seen_running += 1
            else:
                row.seen_other.add(state)
        latest = line.latest_frame()
        dets = latest[1] if latest is not None else None
        self.ring.append((frame.index, t, frame.image, dets, by_id))
        self.collect()
        # Scallops that left the view undecided while the line ran: vision missed them.
        if state == "running":
            for sid in sorted(self.prev_visible - visible):
                row = self.truth[sid]
                if row.had_uro and row.seen_running and not row.outcomes and row.population:
                    self._failure("vision_missed", sid, None, "scallop with a uro left the view untracked")
        self.prev_visible = visible

    # ------------------------------------------------------------ outcomes
    def collect(self) -> None:
        """Match the line's new decisions to scallops, and judge the ones whose result came."""
        self._harvest()
        self._check_open()

    def _harvest(self) -> None:
        new = []
        for tid in reversed(self.line.outcomes):
            if tid in self.harvested:
                break
            new.append(tid)
        for tid in reversed(new):
            oc = self.line.outcomes[tid]
            self.harvested.add(tid)
            sid = self._match(oc.decision.track.u, oc.decision.track.v)
            if sid is None:
                self.phantoms.append(oc)
            else:
                self.truth[sid].outcomes.append(oc)
            if oc.result:
                self._judge(oc, sid)
            else:
                self.open.append((oc, sid))

    def _check_open(self) -> None:
        still = []
        for oc, sid in self.open:
            if oc.result:
                self._judge(oc, sid)
            else:
                still.append((oc, sid))
        self.open = still

    def _match(self, u: float, v: float) -> int | None:
        best, best_d = None, MATCH_MM
        for row in self.truth.values():
            if abs(row.x_m - u) < best_d:
                d = math.hypot(row.x_m - u, row.y - v)
                if d < best_d:
                    best, best_d = row.id, d
        return best

    def _judge(self, oc, sid: int | None) -> None:
        """A decided scallop: is it a failure worth a frame in the report?"""
        if sid is None:
            return
        row = self.truth[sid]
        if oc.result == "picked" and oc.grade not in (None, "uro_removed"):
            self._failure(oc.grade, sid, oc.decision.view.frame_index, f"picked by {oc.arm}: {oc.grade}")
        elif (
            oc.result == "skipped"
            and row.had_uro
            and oc.reason in ("no_uro", "hidden_uro", "ambiguous", "views_disagree", "too_close", "outside_channel")
        ):
            # Only a failure if no other track of the scallop gets it picked: decided when it
            # has gone past the arms (the frame is kept until then).
            kind = f"skipped_{oc.reason}"
            if self._wanted(kind) and sid not in self.candidates:
                entry = self._frame(sid, oc.decision.view.frame_index)
                if entry is not None:
                    self.candidates[sid] = (kind, entry, f"skipped ({oc.reason}) but it carries a uro")

    def _settle(self, row: ScallopTruth) -> None:
        """A scallop went past the arms: a pending failure frame is kept if it was not picked after all."""
        cand = self.candidates.pop(row.id, None)
        if (
            cand is not None
            and not any(not o.result for o in row.outcomes)
            and not outcome_of(row).startswith("picked:")
        ):
            kind, entry, detail = cand
            self._failure(kind, row.id, None, detail, entry)

    def _wanted(self, kind: str) -> bool:
        return len(self.failures) < self.failure_frames and self.failure_kinds[kind] < FAILURE_KINDS_MAX_EACH

    def _frame(self, sid: int, frame_index: int | None):
        for e in reversed(self.ring):
            if (frame_index is None and sid in e[4]) or e[0] == frame_index:
                return e
        return None

    def _failure(self, kind: str, sid: int, frame_index: int | None, detail: str, entry=None) -> None:
        if not self._wanted(kind):
            return
        entry = entry or self._frame(sid, frame_index)
        if entry is None:
            return
        self.failure_kinds[kind] += 1
        f = FailureFrame(kind, sid, entry[0], round(entry[1] - self.t0, 3), detail)
        self.failures.append(f)
        if self.report_dir is not None:
            f.file = f"failure-{len(self.failures):02d}-{kind}.jpg"
            _write_failure_jpeg(self.report_dir / f.file, entry, sid, f"#{sid} {kind}")

    # ------------------------------------------------------------ the end
    def target_reached(self) -> bool:
        """The first ``target_n`` population scallops went past the arms (False without a target)."""
        if self.target_n and len(self.pop_ids) >= self.target_n:
            return self.truth[self.pop_ids[self.target_n - 1]].passed_t is not None
        return False

    def processed(self) -> list[ScallopTruth]:
        """Population scallops that went past the last pick window; a ``scallops = N`` run
        counts the first N to arrive."""
        ids = self.pop_ids[: self.target_n] if self.target_n else self.pop_ids
        return [self.truth[i] for i in ids if self.truth[i].passed_t is not None]


def outcome_of(row: ScallopTruth) -> str:
    """Exactly one outcome per processed scallop (see the module docstring)."""
    picked = [o for o in row.outcomes if o.result == "picked"]
    if picked:
        return f"picked:{picked[-1].grade or 'ungraded'}"
    decided = [o for o in row.outcomes if o.result]
    if decided:
        # A scallop the tracker split (a partial view at the border): the track with the most views speaks.
        o = max(decided, key=lambda o: len(o.decision.track.views))
        # "failed": sent to an arm that did not complete it (aborted, empty grip, e-stop).
        return f"{o.result}:{o.reason or 'unknown'}"
    if row.outcomes:
        return "undecided"  # a track with no result: the line lost it (must never happen)
    if row.seen_running:
        return "vision_missed"
    if row.seen_other:
        return "line_" + min(row.seen_other)
    return "not_imaged"


def _write_failure_jpeg(path: Path, entry, sid: int, label: str) -> None:
    import cv2

    from scallop.vision.annotate import draw

    _, _, image, dets, by_id = entry
    out = draw(image, dets) if dets is not None else image.copy()
    st = by_id.get(sid)
    if st is not None:
        x0, y0, x1, y1 = (int(v) for v in st.bbox_px)
        cv2.rectangle(out, (x0 - 6, y0 - 6), (x1 + 6, y1 + 6), (255, 0, 255), 2, cv2.LINE_AA)
        if st.uro_centroid_px is not None:
            p = tuple(int(round(v)) for v in st.uro_centroid_px)
            cv2.circle(out, p, 9, (0, 255, 255), 2, cv2.LINE_AA)  # where the uro really is
        y = min(out.shape[0] - 8, y1 + 24)
        cv2.putText(out, label, (max(4, x0), y), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 4, cv2.LINE_AA)
        cv2.putText(out, label, (max(4, x0), y), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 0, 255), 2, cv2.LINE_AA)
    cv2.imwrite(str(path), out, [cv2.IMWRITE_JPEG_QUALITY, 85])
