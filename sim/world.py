"""The simulated line: a belt with a speed profile and an encoder, scallops arriving on it,
a camera's view of it, and a referee that grades the arms' picks.

Everything is a function of (config, seed, time) plus the few things that happen to the
world (a uro pulled off, the lighting changed), so the same seed and the same calls give
the same frames byte for byte. State is computed lazily from the clock's time: there are
no background threads.

Coordinates: belt frame B (mm): x along the travel, y across, z up. A scallop lies at a
fixed *material* position (x_m, y) on the belt; at time t its belt-frame position is
(x_m + travel_mm(t), y).
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from scallop.errors import ConfigError
from scallop.sim.arrivals import ArrivalStream
from scallop.sim.clock import VirtualClock
from scallop.sim.config import BeltConfig, SimConfig
from scallop.sim.config import camera_looking_down as camera_model_from_config
from scallop.sim.fluorescence import FluorescenceChannel, FluorescenceFrame
from scallop.sim.scene import (  # noqa: F401  (FrameTruth, ScallopTruth re-exported)
    ADDUCTOR,
    BACKGROUND,
    BELT_BGR,
    URO,
    FrameTruth,
    LookParams,
    Placed,
    ScallopModel,
    ScallopSpec,
    ScallopTruth,
    SceneRenderer,
    jpeg_roundtrip,
)

PickResult = Literal["uro_removed", "missed", "adductor_hit", "meat_hit", "empty"]

# The feeder's modes (the line PLC's infeed output, docs/plc-interface.md).
FEEDER_RUN, FEEDER_SLOW, FEEDER_HOLD = 0, 1, 2


# ============================================================================ belt motion
class SpeedProfile:
    """Belt speed and travel over time from a list of segments (constant, ramps, stops).

    Times are seconds since the world's start; speeds are never negative, so travel never
    decreases (the encoder's direction only changes the sign of its count)."""

    def __init__(self, belt: BeltConfig) -> None:
        self.repeat = belt.repeat_profile
        segs = belt.profile or []
        self.constant = belt.speed_mm_s if not segs else None
        self._start, self._dur, self._v0, self._v1, self._x0 = [], [], [], [], []
        t = x = 0.0
        for seg in segs:
            self._start.append(t)
            self._dur.append(seg.duration_s)
            self._v0.append(seg.speed_mm_s)
            self._v1.append(seg.end_speed)
            self._x0.append(x)
            x += 0.5 * (seg.speed_mm_s + seg.end_speed) * seg.duration_s
            t += seg.duration_s
        self.duration, self.cycle_travel = t, x

    def _in_profile(self, tau: float) -> tuple[int, float]:
        i = max(0, bisect.bisect_right(self._start, tau) - 1)
        return i, tau - self._start[i]

    def speed(self, tau: float) -> float:
        if self.constant is not None:
            return self.constant
        if tau < 0:
            return self._v0[0]
        if tau >= self.duration:
            if not self.repeat:
                return self._v1[-1]
            tau = tau % self.duration
        i, dt = self._in_profile(tau)
        return self._v0[i] + (self._v1[i] - self._v0[i]) * dt / self._dur[i]

    def travel(self, tau: float) -> float:
        if self.constant is not None:
            return self.constant * tau
        if tau < 0:
            return self._v0[0] * tau
        base = 0.0
        if tau >= self.duration:
            if not self.repeat:
                return self.cycle_travel + self._v1[-1] * (tau - self.duration)
            cycles = math.floor(tau / self.duration)
            base, tau = cycles * self.cycle_travel, tau - cycles * self.duration
        i, dt = self._in_profile(tau)
        acc = (self._v1[i] - self._v0[i]) / self._dur[i]
        return base + self._x0[i] + self._v0[i] * dt + 0.5 * acc * dt * dt

    def time_to_reach(self, travel: float, tau_from: float, horizon_s: float) -> float | None:
        """Earliest time ≥ tau_from at which travel ≥ ``travel``, or None within the horizon."""
        if self.travel(tau_from) >= travel:
            return tau_from
        hi = tau_from + horizon_s
        if self.travel(hi) < travel:
            return None
        if self.constant is not None:
            return travel / self.constant
        lo = tau_from
        for _ in range(60):  # travel is monotonic: bisect to well below a microsecond
            mid = 0.5 * (lo + hi)
            if self.travel(mid) >= travel:
                hi = mid
            else:
                lo = mid
        return hi


# ============================================================================ world
@dataclass
class PickGrade:
    """The referee's verdict on one pick.

    result:      "uro_removed" | "missed" (landed on a scallop that keeps its uro) |
                 "adductor_hit" (grip on the adductor or pulled into it) | "meat_hit"
                 (landed on meat of a scallop with no uro) | "empty" (belt).
    scallop_id:  the scallop under the grip centre (0 for none).
    detail:      plain words on why.
    part:        part label under the grip centre.
    """

    result: PickResult
    scallop_id: int
    detail: str
    part: int = BACKGROUND


@dataclass
class ScallopState:
    """Where a scallop is at one moment (belt frame, mm)."""

    id: int
    center_B: tuple[float, float]
    rotation_deg: float
    diameter_mm: float
    has_uro: bool
    upside_down: bool
    uro_center_B: tuple[float, float] | None
    adductor_center_B: tuple[float, float]


class SimWorld:
    """The simulated line. ``render(t)`` gives the camera's view and its ground truth;
    ``grade_pick`` referees an arm's pick; ``remove_uro`` records a successful one."""

    BELT_LOOP_MM = 2000.0

    def __init__(self, config: SimConfig | None = None, seed: int = 0, clock=None) -> None:
        self.config = config or SimConfig()
        self.seed = int(seed)
        self.clock = clock if clock is not None else VirtualClock()
        self.t0 = float(self.clock.now())
        self.profile = SpeedProfile(self.config.belt)
        self.camera_model = camera_model_from_config(self.config.camera)
        self.renderer = SceneRenderer(self.camera_model, belt_period_mm=self.BELT_LOOP_MM)
        self._lock = threading.RLock()
        self._models: dict[int, ScallopModel] = {}
        lo, hi = self.renderer.x_lo, self.renderer.x_hi
        r = self.config.product.diameter_mm[1] / 2 + 5
        start = hi + r if self.config.arrivals.prefill else lo - r
        self._arrivals = ArrivalStream(self.config, self.seed, start)
        self._max_travel = -math.inf
        self._look = self._initial_look()
        self._schedule: Callable[[float], LookParams] | None = None
        self.grades: Counter = Counter()
        # The line's feeder (its PLC's infeed output): t -> FEEDER_RUN, FEEDER_SLOW or FEEDER_HOLD.
        self.feeder: Callable[[float], int] | None = None
        # Alternate frames: whether the UV light is strobed at t (the line PLC's uv_strobe
        # output, docs/plc-interface.md); None: always, as on a bench without a PLC.
        self.uv_strobe: Callable[[float], bool] | None = None
        self.feeder_log: Counter = Counter()  # arrivals by the feeder's mode when they came
        self.held_back = 0  # arrivals the feeder held back (never on the belt)
        self._test_pieces: list[int] = []  # ids of the shift check's test pieces laid so far
        # The second camera channel, only when configured: without it nothing else changes.
        # Scallops are made and kept for the views of both cameras (a second one sees more).
        self.fluorescence = FluorescenceChannel(self) if self.config.fluorescence.enabled else None
        view = self.fluorescence.scene if self.fluorescence is not None else self.renderer
        self._x_lo, self._x_hi = min(lo, view.x_lo), max(hi, view.x_hi)

    # ------------------------------------------------------------ belt
    def speed_mm_s(self, t: float | None = None) -> float:
        return self.profile.speed(self._tau(t))

    def travel_mm(self, t: float | None = None) -> float:
        """Belt travel since the world's start (mm)."""
        return self.profile.travel(self._tau(t))

    def encoder_at(self, t: float | None = None) -> int:
        e = self.config.encoder
        return int(round(e.direction * self.travel_mm(t) * e.counts_per_mm)) + e.offset

    def travel_from_encoder(self, count: int) -> float:
        e = self.config.encoder
        return (count - e.offset) * e.direction / e.counts_per_mm

    def time_at_travel(self, travel_mm: float, t_from: float, horizon_s: float) -> float | None:
        tau = self.profile.time_to_reach(travel_mm, self._tau(t_from), horizon_s)
        return None if tau is None else tau + self.t0

    def _tau(self, t: float | None) -> float:
        return (self.clock.now() if t is None else float(t)) - self.t0

    @property
    def view_length_mm(self) -> float:
        """Extent of the camera's view along the travel."""
        return self.renderer.x_hi - self.renderer.x_lo

    # ------------------------------------------------------------ look
    def _initial_look(self) -> LookParams:
        lc = self.config.look
        if lc.randomise:
            return replace(LookParams.random(np.random.default_rng([self.seed, 4])), motion_blur_px=0.0)
        lo, hi = BELT_BGR[lc.belt_colour]
        return LookParams(
            belt_colour=lc.belt_colour,
            belt_bgr=tuple((a + b) / 2 for a, b in zip(lo, hi)),
            hinge_pitch_mm=lc.hinge_pitch_mm,
            water_film=lc.water_film,
            droplets_per_dm2=lc.droplets_per_dm2,
            belt_seed=self.seed,
            brightness=lc.brightness,
            color_temp_k=lc.color_temp_k,
            vignetting=lc.vignetting,
            gradient=lc.gradient,
            noise_sigma=lc.noise_sigma,
            jpeg_quality=lc.jpeg_quality,
        )

    def set_look(self, look: LookParams) -> None:
        """Change the scene's look from now on (lighting drift, a belt change)."""
        with self._lock:
            self._look = look

    def set_look_schedule(self, schedule: Callable[[float], LookParams] | None) -> None:
        """``schedule(t) -> LookParams`` decides the look of every frame (None: back to set_look)."""
        with self._lock:
            self._schedule = schedule

    def look_at(self, t: float | None = None) -> LookParams:
        """The look of a frame exposed at ``t``: the base look (or the schedule's), the
        configured slow drift, and motion blur from the belt speed and exposure time."""
        t = self.clock.now() if t is None else float(t)
        lc = self.config.look
        look = self._schedule(t) if self._schedule is not None else self._look
        if self._schedule is None and (lc.drift_brightness or lc.drift_color_temp_k):
            ph = 2 * math.pi * (t - self.t0) / lc.drift_period_s
            look = replace(
                look,
                brightness=float(np.clip(look.brightness * (1 + lc.drift_brightness * math.sin(ph)), 0.5, 1.5)),
                color_temp_k=float(
                    np.clip(look.color_temp_k + lc.drift_color_temp_k * math.sin(ph + 1.3), 3000.0, 8000.0)
                ),
            )
        blur = self.speed_mm_s(t) * self.config.camera.exposure_ms / 1000.0 / self.renderer.mm_per_px
        return replace(look, motion_blur_px=float(min(3.0, blur)))

    # ------------------------------------------------------------ scallops
    def _advance(self, travel: float, t: float | None = None) -> None:
        """Make the arrivals the view needs at ``travel``; forget those long gone. A feeder held
        (or slowed) at ``t`` drops nothing (every other one) onto the belt meanwhile."""
        r_max = self.config.product.diameter_mm[1] / 2 + 5
        for spec in self._arrivals.take_until(self._x_lo - travel - 2 * r_max):
            mode = self.feeder(self.clock.now() if t is None else t) if self.feeder is not None else FEEDER_RUN
            self.feeder_log[mode] += 1
            if mode == FEEDER_HOLD or (mode == FEEDER_SLOW and self.feeder_log[FEEDER_SLOW] % 2 == 0):
                self.held_back += 1
                continue
            self._models[spec.id] = ScallopModel(spec)
        if travel > self._max_travel:
            self._max_travel = travel
            limit = self._x_hi + self.config.belt.keep_downstream_mm + r_max
            gone = [i for i, m in self._models.items() if m.spec.x_mm + travel > limit]
            for i in gone:
                del self._models[i]

    # Test pieces get ids of their own, far above the arrivals'.
    TEST_PIECE_IDS = 1_000_000

    def place_test_pieces(self, with_uro: int, without_uro: int, spacing_mm: float = 150.0) -> list[int]:
        """Lay a shift check's test pieces on the belt just upstream of the view, one behind
        the other down the middle of the lane, as an operator would by hand: ``with_uro`` with
        a uro in plain view, then ``without_uro`` without one. Returns their ids."""
        with self._lock:
            travel = self.travel_mm()
            r = self.config.product.diameter_mm[1] / 2 + 5
            lo, hi = self.config.arrivals.lane_mm
            ids = []
            for k in range(int(with_uro) + int(without_uro)):
                sid = self.TEST_PIECE_IDS + len(self._test_pieces) + 1
                rng = np.random.default_rng([self.seed, 3, sid])
                x = self.renderer.x_lo - travel - r - k * spacing_mm
                spec = ScallopSpec.random(rng, sid, x, (lo + hi) / 2, self.config.product)
                spec = replace(spec, upside_down=False, uro=k < with_uro, uro_hidden=0.0)
                self._models[sid] = ScallopModel(spec)
                self._test_pieces.append(sid)
                ids.append(sid)
            return ids

    def scallop(self, scallop_id: int) -> ScallopModel:
        with self._lock:
            m = self._models.get(int(scallop_id))
            if m is None:
                raise KeyError(f"scallop {scallop_id} is not on the belt (never arrived or already gone)")
            return m

    def _state(self, m: ScallopModel, travel: float) -> ScallopState:
        c = np.array([m.spec.x_mm + travel, m.spec.y_mm])
        uro = tuple(float(v) for v in c + m.uro_centre_offset()) if m.uro_present else None
        return ScallopState(
            id=m.spec.id,
            center_B=(float(c[0]), float(c[1])),
            rotation_deg=m.spec.rotation_deg,
            diameter_mm=m.spec.diameter_mm,
            has_uro=m.uro_present,
            upside_down=m.spec.upside_down,
            uro_center_B=uro,
            adductor_center_B=tuple(float(v) for v in c + m.adductor_centre_offset()),
        )

    def scallops_at(self, t: float | None = None, x_range: tuple[float, float] | None = None) -> list[ScallopState]:
        """Every scallop the world tracks at ``t`` (optionally with centre x in ``x_range``)."""
        with self._lock:
            travel = self.travel_mm(t)
            self._advance(travel, t)
            out = [self._state(m, travel) for m in self._models.values()]
        if x_range is not None:
            out = [s for s in out if x_range[0] <= s.center_B[0] <= x_range[1]]
        return sorted(out, key=lambda s: s.id)

    def visible_scallops(self, t: float | None = None) -> list[ScallopState]:
        """Scallops with any part inside the camera's image at ``t`` (geometry, no render)."""
        w, h = self.camera_model.image_size
        out = []
        with self._lock:
            travel = self.travel_mm(t)
            self._advance(travel, t)
            for m in self._models.values():
                if not self.renderer.in_canvas(m, travel):
                    continue
                ring = m.outline(48) + [m.spec.x_mm + travel, m.spec.y_mm]
                px = self.camera_model.project_belt(ring)
                inside = (px[:, 0] >= 0) & (px[:, 0] <= w - 1) & (px[:, 1] >= 0) & (px[:, 1] <= h - 1)
                centre_px = self.camera_model.project_belt([[m.spec.x_mm + travel, m.spec.y_mm]])[0]
                if inside.any() or (0 <= centre_px[0] <= w - 1 and 0 <= centre_px[1] <= h - 1):
                    out.append(self._state(m, travel))
        return sorted(out, key=lambda s: s.id)

    # ------------------------------------------------------------ rendering
    def placed_in(self, renderer: SceneRenderer, travel: float) -> list[Placed]:
        """The scallops ``renderer``'s view holds at ``travel``, in drawing order (call with the
        lock held, after ``_advance``)."""
        return [
            Placed(m, m.spec.id, (m.spec.id - 1) % 65535 + 1)
            for i, m in sorted(self._models.items())
            if renderer.in_canvas(m, travel)
        ]

    def render(self, t: float | None = None) -> tuple[np.ndarray, FrameTruth]:
        """The camera's image at ``t`` (BGR uint8) and its ground truth."""
        t = self.clock.now() if t is None else float(t)
        with self._lock:
            travel = self.travel_mm(t)
            self._advance(travel, t)
            look = self.look_at(t)
            placed = self.placed_in(self.renderer, travel)
            rng = np.random.default_rng([self.seed, 3, int(round((t - self.t0) * 1e6)) & 0xFFFFFFFFFFFF])
            res = self.renderer.render(placed, travel, look, rng)
        image = res.image if look.jpeg_quality >= 100 else jpeg_roundtrip(res.image, look.jpeg_quality)
        truth = FrameTruth(
            parts=res.parts,
            instances=res.instances,
            scallops=res.scallops,
            travel_mm=travel,
            encoder=self.encoder_at(t),
            timestamp=t,
            mm_per_px=self.renderer.mm_per_px,
            look=look,
        )
        return image, truth

    def render_fluorescence(self, t: float | None = None) -> FluorescenceFrame:
        """The fluorescence exposure paired with the colour frame exposed at ``t`` (opt-in:
        ``config.fluorescence.setup`` other than "none"; docs/fluorescence.md)."""
        if self.fluorescence is None:
            raise ConfigError("sim.fluorescence.setup is 'none': this world renders no fluorescence channel")
        return self.fluorescence.render(self.clock.now() if t is None else float(t))

    # ------------------------------------------------------------ the referee
    def _top_labels(self, pts_B: np.ndarray, travel: float) -> tuple[np.ndarray, np.ndarray]:
        """Visible part label and owner id at belt points (N, 2): the last-dropped scallop
        lies on top, as drawn."""
        labels = np.zeros(len(pts_B), np.uint8)
        owners = np.zeros(len(pts_B), np.int64)
        for sid in sorted(self._models, reverse=True):
            m = self._models[sid]
            c = np.array([m.spec.x_mm + travel, m.spec.y_mm])
            todo = labels == 0
            if not todo.any():
                break
            near = todo & (np.hypot(*(pts_B - c).T) <= m.r_max)
            if near.any():
                lab = m.part_at(pts_B[near] - c)
                idx = np.nonzero(near)[0][lab > 0]
                labels[idx] = lab[lab > 0]
                owners[idx] = sid
        return labels, owners

    def part_at(self, xy_B, t: float | None = None) -> tuple[int, int]:
        """(part label, scallop id or 0) visible at belt point ``xy_B`` at time ``t``."""
        with self._lock:
            travel = self.travel_mm(t)
            self._advance(travel, t)
            lab, own = self._top_labels(np.asarray(xy_B, np.float64).reshape(1, 2), travel)
        return int(lab[0]), int(own[0])

    def remove_uro(self, scallop_id: int) -> None:
        """The arm pulled this scallop's uro: later frames show it without one."""
        with self._lock:
            self.scallop(scallop_id).uro_present = False

    @staticmethod
    def _disk(centre: np.ndarray, radius: float, rings: int, per_ring: int) -> np.ndarray:
        pts = [centre[None]]
        for k in range(1, rings + 1):
            a = np.linspace(0, 2 * np.pi, per_ring * k, endpoint=False) + 0.3 * k
            pts.append(centre + (radius * k / rings) * np.column_stack([np.cos(a), np.sin(a)]))
        return np.vstack(pts)

    def grade_pick(self, xy_B, t: float | None, pull_dir_B, grip_radius_mm: float = 2.0) -> PickGrade:
        """Referee a pick: the grip disk of ``grip_radius_mm`` at belt point ``xy_B`` at time
        ``t`` (scallops where they are at ``t``), pulling along ``pull_dir_B``.

        uro_removed: the grip centre is on the scallop's uro (1 mm tolerance), the disk
        does not reach its adductor, and the pull is not into the adductor (at most 90°
        from "away from the adductor's centre"); the uro is then removed from the world.
        adductor_hit: the disk covers adductor, or a grip on the uro pulls into the adductor.
        missed: on other meat of a scallop that keeps its uro. meat_hit: on meat of a
        scallop without a uro. empty: on the belt.
        """
        pull = np.asarray(pull_dir_B, np.float64).ravel()[:2]
        if not np.all(np.isfinite(pull)) or np.linalg.norm(pull) < 1e-9:
            raise ValueError(f"pull_dir_B={list(np.asarray(pull_dir_B).ravel())} must be a non-zero direction")
        if not (0.0 < grip_radius_mm <= 20.0):
            raise ValueError(f"grip_radius_mm={grip_radius_mm} is out of range: allowed 0..20")
        centre = np.asarray(xy_B, np.float64).ravel()[:2]
        with self._lock:
            travel = self.travel_mm(t)
            self._advance(travel, t)
            grade = self._grade(centre, travel, pull, grip_radius_mm)
            if grade.result == "uro_removed":
                self._models[grade.scallop_id].uro_present = False
            self.grades[grade.result] += 1
        return grade

    def _grade(self, centre: np.ndarray, travel: float, pull: np.ndarray, grip: float) -> PickGrade:
        disk = self._disk(centre, grip, 3, 8)
        tol = self._disk(centre, 1.0, 2, 8)
        lab_d, own_d = self._top_labels(disk, travel)
        lab_t, own_t = self._top_labels(tol, travel)
        part, sid = int(lab_d[0]), int(own_d[0])
        on_adductor = lab_d == ADDUCTOR
        uro_hits = np.nonzero(lab_t == URO)[0]
        if len(uro_hits):
            sid = int(own_t[uro_hits[0]])
            m = self._models[sid]
            add_c = np.array([m.spec.x_mm + travel, m.spec.y_mm]) + m.adductor_centre_offset()
            away = centre - add_c
            cosang = float(pull @ away / (np.linalg.norm(pull) * np.linalg.norm(away) + 1e-12))
            angle = math.degrees(math.acos(max(-1.0, min(1.0, cosang))))
            if angle > 90.0:
                return PickGrade(
                    "adductor_hit", sid, f"pull {angle:.0f}° from away-from-adductor: into the adductor", part
                )
            if on_adductor.any():
                share = on_adductor.mean()
                return PickGrade(
                    "adductor_hit", sid, f"grip disk on the uro also covers the adductor ({share:.0%} of it)", part
                )
            return PickGrade("uro_removed", sid, f"grip on the uro, pull {angle:.0f}° from away-from-adductor", part)
        if on_adductor.any():
            owner = int(own_d[np.nonzero(on_adductor)[0][0]])
            return PickGrade(
                "adductor_hit", owner, f"grip disk covers the adductor ({on_adductor.mean():.0%} of it)", part
            )
        if sid == 0:
            return PickGrade("empty", 0, "grip centre on the belt", part)
        m = self._models[sid]
        names = ("belt", "mantle", "gonad", "adductor", "uro", "gill")
        if m.uro_present:
            return PickGrade("missed", sid, f"grip on the {names[part]}, the uro stays on", part)
        why = "upside down" if m.spec.upside_down else "no uro"
        return PickGrade("meat_hit", sid, f"grip on the {names[part]} of a scallop with no uro ({why})", part)
