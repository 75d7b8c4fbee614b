"""Scenario bench: the whole line against a scripted scenario on the virtual clock, with a report.

A scenario is a TOML file of the line configuration's family::

    [scenario]
    name = "nominal"
    description = "one arm, belt 300 mm/s, arrivals at 90 % of the arm's capacity"
    seed = 1
    scallops = 1000            # run until this many scallops went past the arms (or duration_s)
    arms = 1                   # simulated arms, 600 mm apart (scallop.app.backends.default_sim_arms)
    arrivals_share = 0.9       # arrivals per second as a share of the arms' capacity

    [arm.motion]               # applied to every simulated arm (any ArmConfig field)
    speed_mm_s = 1000.0

    [line.sim.belt]            # merged into the line configuration (scallop.app.config.LineConfig)
    speed_mm_s = 300.0

    [[faults]]
    at_s = 60.0
    kind = "arm_disconnect"    # arm_disconnect heartbeat_stall camera_drop camera_stall estop_restart belt_stop
    duration_s = 5.0

:func:`run_scenario` runs it (renderer → camera → vision → tracking → planning → simulated
arms over Modbus on 127.0.0.1) with :meth:`scallop.app.line.Line.run_stepped`, applies the
faults from its ``on_tick`` hook, follows every scallop of the simulated world from its
``on_frame`` hook, and returns the summary that :func:`write_report` turns into
``summary.json`` and ``index.html`` (inline SVG plots, annotated JPEGs of failures).

Accounting (what the acceptance checks rest on): the *population* is every scallop that lay
in the camera's view when the run began or arrived far enough upstream of the view's
downstream edge (one trigger spacing) that a working camera shows it in at least one frame.
The ones already past the camera are not the line's, nor is one the simulator drops beside a
scallop that is already far into the view. Each population scallop that went past the last pick
window gets exactly one outcome: ``picked:<grade>``, ``skipped:<reason>`` (the line's own
reason, e.g. ``no_uro``, ``no_capacity``), ``failed:<reason>`` (sent to an arm that did not
complete it: ``arm_aborted``, ``arm_empty``, ``estop``), or, when the line never decided
on it, ``vision_missed`` (imaged while running, never tracked), ``line_<state>`` (only
imaged while the line was in e-stop or stopped) or ``not_imaged`` (no frame showed it:
camera dropped or stalled).
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from scallop.app.config import ConfigError, LineConfig, build, load_toml, to_dict
from scallop.errors import check_range

FaultKind = Literal["arm_disconnect", "heartbeat_stall", "camera_drop", "camera_stall", "estop_restart", "belt_stop"]
FAULT_KINDS: tuple[str, ...] = (
    "arm_disconnect",
    "heartbeat_stall",
    "camera_drop",
    "camera_stall",
    "estop_restart",
    "belt_stop",
)
ARM_FAULTS = ("arm_disconnect", "heartbeat_stall")

# Summary keys measured on the wall clock: everything else is a function of (scenario, seed).
WALL_TIME_KEYS = ("latency_ms", "realtime_factor", "wall_s", "setup_s")

# A track matches the scallop whose material position is nearest, within this (mm).
MATCH_MM = 25.0
OBSERVE_EVERY_S = 0.1
OBSERVE_TRAVEL_MM = 30.0
FAILURE_KINDS_MAX_EACH = 2


class ScenarioError(ConfigError):
    """A scenario file or option that cannot be used; the message names the key."""


# ============================================================================ the file
@dataclass
class ScenarioSpec:
    """The ``[scenario]`` table.

    duration_s / scallops: run this long (virtual seconds), or until this many scallops of
    the population went past the last arm (exactly one of the two).
    arms: simulated arms when ``[[line.arms]]`` is not given.
    arrivals_share: > 0 sets ``line.sim.arrivals.rate_per_s`` to this share of the arms'
    total capacity at the belt's nominal speed (the robot planner's ``capacity_per_s``).
    max_duration_s: a ``scallops`` run gives up after this (0 = three times the expected time).
    failure_frames: annotated JPEGs of failures kept for the report.
    bin_s: width of the report's time bins (0 = about 50 bins, at least 5 s).
    """

    name: str
    description: str = ""
    seed: int = 0
    duration_s: float = 0.0
    scallops: int = 0
    arms: int = 1
    arrivals_share: float = 0.0
    max_duration_s: float = 0.0
    failure_frames: int = 6
    bin_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("name is empty")
        if (self.duration_s > 0) == (self.scallops > 0):
            raise ValueError(
                f"give exactly one of duration_s and scallops (got duration_s={self.duration_s:g}, "
                f"scallops={self.scallops})"
            )
        check_range("duration_s", self.duration_s, 0.0, 86400.0)
        check_range("scallops", self.scallops, 0, 1_000_000)
        check_range("arms", self.arms, 1, 8)
        check_range("arrivals_share", self.arrivals_share, 0.0, 10.0)
        check_range("max_duration_s", self.max_duration_s, 0.0, 864000.0)
        check_range("failure_frames", self.failure_frames, 0, 100)
        check_range("bin_s", self.bin_s, 0.0, 3600.0)


@dataclass
class FaultSpec:
    """One ``[[faults]]`` entry: what goes wrong at ``at_s`` (virtual seconds from the start).

    arm_disconnect: the arm's Modbus server goes away for ``duration_s`` (connections refused),
      then comes back; the arm's watchdog faults it meanwhile, and the operator resets it
      ``reset_after_s`` after it is back.
    heartbeat_stall: the arm's heartbeat freezes for ``duration_s``.
    camera_drop: the next ``frames`` exposures are never delivered.
    camera_stall: the camera delivers nothing for ``duration_s``.
    estop_restart: e-stop pressed (the line's and, with ``arms``, every arm's); released after
      ``duration_s``, then the operator resets and restarts the line ``reset_after_s`` later.
    belt_stop: the belt ramps down over ``ramp_s``, stands for ``duration_s`` and ramps back
      (written into the belt's speed profile).
    """

    at_s: float
    kind: FaultKind
    duration_s: float = 5.0
    arm: str = ""  # "" = the first arm
    frames: int = 5
    reset_after_s: float = 1.0
    arms: bool = True
    ramp_s: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"kind={self.kind!r} is not allowed: choose one of {', '.join(FAULT_KINDS)}")
        check_range("at_s", self.at_s, 0.0, 864000.0)
        check_range("duration_s", self.duration_s, 0.01, 3600.0)
        check_range("frames", self.frames, 1, 10000)
        check_range("reset_after_s", self.reset_after_s, 0.0, 600.0)
        check_range("ramp_s", self.ramp_s, 0.01, 60.0)

    @property
    def end_s(self) -> float:
        if self.kind == "belt_stop":
            return self.at_s + 2 * self.ramp_s + self.duration_s
        if self.kind == "camera_drop":
            return self.at_s
        return self.at_s + self.duration_s

    def describe(self) -> str:
        what = {
            "arm_disconnect": f"arm {self.arm or '(first)'} disconnected for {self.duration_s:g} s",
            "heartbeat_stall": f"arm {self.arm or '(first)'} heartbeat stalled for {self.duration_s:g} s",
            "camera_drop": f"camera drops {self.frames} frames",
            "camera_stall": f"camera stalled for {self.duration_s:g} s",
            "estop_restart": f"e-stop for {self.duration_s:g} s, then reset and restart",
            "belt_stop": f"belt stops for {self.duration_s:g} s",
        }[self.kind]
        return f"{self.at_s:g} s: {what}"


@dataclass
class Scenario:
    """A loaded, validated scenario. ``line`` is the raw ``[line]`` table and ``arm`` the raw
    ``[arm]`` table (both already checked by building them once)."""

    spec: ScenarioSpec
    line: dict = field(default_factory=dict)
    arm: dict = field(default_factory=dict)
    faults: list[FaultSpec] = field(default_factory=list)
    source: str = ""

    @property
    def name(self) -> str:
        return self.spec.name

    def line_config(self, model: str | None = None) -> LineConfig:
        """The line configuration this scenario runs: the ``[line]`` overrides, the simulated
        arms, arrivals as a share of capacity, belt stops in the speed profile, and ``model``
        (None: the scenario's ``line.vision.model``, itself defaulting to the shipped model)."""
        from scallop.app.backends import default_sim_arms
        from scallop.robot.config import ArmConfig
        from scallop.robot.planning import PickPlanner

        where = f"{self.source}: " if self.source else ""
        data = _deep_merge({}, self.line)
        data.setdefault("camera", {}).setdefault("source", "sim")
        if data["camera"]["source"] != "sim":
            raise ScenarioError(
                f"{where}line.camera.source={data['camera']['source']!r}: scenarios run on the "
                'simulator only (source = "sim")'
            )
        if model is not None:
            data.setdefault("vision", {})["model"] = str(model)
        stops = [f for f in self.faults if f.kind == "belt_stop"]
        if stops and data.get("sim", {}).get("belt", {}).get("profile"):
            raise ScenarioError(
                f"{where}faults: belt_stop cannot be combined with line.sim.belt.profile "
                "(write the stop into the profile instead)"
            )
        try:
            cfg = build(LineConfig, data)
        except ConfigError as e:
            raise ScenarioError(f"{where}line.{e}") from None
        if cfg.arms:
            arms = list(cfg.arms)
        else:
            arms = []
            for a in default_sim_arms(self.spec.arms):
                d = _deep_merge(to_dict(a), self.arm)
                try:
                    arms.append(build(ArmConfig, d, "arm"))
                except ConfigError as e:
                    raise ScenarioError(f"{where}{e}") from None
        sim = cfg.sim
        v = sim.belt.speed_mm_s
        if self.spec.arrivals_share > 0:
            cap = sum(PickPlanner(a).capacity_per_s(v) for a in arms)
            rate = self.spec.arrivals_share * cap
            try:
                sim = dataclasses.replace(sim, arrivals=dataclasses.replace(sim.arrivals, rate_per_s=rate))
            except ValueError as e:
                raise ScenarioError(f"{where}scenario.arrivals_share={self.spec.arrivals_share:g}: {e}") from None
        if stops:
            sim = dataclasses.replace(sim, belt=dataclasses.replace(sim.belt, profile=belt_stop_profile(v, stops)))
        try:
            return dataclasses.replace(cfg, sim=sim, arms=arms)
        except ValueError as e:
            raise ScenarioError(f"{where}{e}") from None


def belt_stop_profile(speed_mm_s: float, stops: list[FaultSpec]):
    """Speed segments for belt stops: nominal speed, ramp down, stand, ramp up (then the belt
    keeps the nominal speed)."""
    from scallop.sim.config import SpeedSegment

    segs, t = [], 0.0
    for f in sorted(stops, key=lambda f: f.at_s):
        if f.at_s < t - 1e-9:
            raise ScenarioError(f"faults: belt_stop at_s={f.at_s:g} starts before the previous stop ended ({t:g} s)")
        if f.at_s - t > 1e-3:
            segs.append(SpeedSegment(f.at_s - t, speed_mm_s))
        segs += [
            SpeedSegment(f.ramp_s, speed_mm_s, 0.0),
            SpeedSegment(f.duration_s, 0.0),
            SpeedSegment(f.ramp_s, 0.0, speed_mm_s),
        ]
        t = f.end_s
    return segs


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def scenarios_dir() -> Path:
    """Where the shipped scenarios live (``sim/scenarios``, package ``scallop.sim``)."""
    from importlib import resources

    return Path(str(resources.files("scallop.sim").joinpath("scenarios")))


def shipped_scenarios() -> dict[str, Path]:
    """Name → file of every shipped scenario, sorted by name."""
    d = scenarios_dir()
    return {p.stem: p for p in sorted(d.glob("*.toml"))} if d.is_dir() else {}


def parse_scenario(data: dict, source: str = "") -> Scenario:
    """A scenario from a parsed TOML table (errors name the key)."""
    where = f"{source}: " if source else ""
    if not isinstance(data, dict):
        raise ScenarioError(f"{where}expected a table")
    unknown = set(data) - {"scenario", "line", "arm", "faults"}
    if unknown:
        raise ScenarioError(f"{where}{min(unknown)}: unknown table; allowed: scenario, line, arm, faults")
    if "scenario" not in data:
        raise ScenarioError(f"{where}scenario: missing table [scenario] (name, and duration_s or scallops)")
    try:
        spec = build(ScenarioSpec, data["scenario"], "scenario")
        faults = data.get("faults", [])
        if not isinstance(faults, list):
            raise ConfigError("faults: expected [[faults]] entries")
        fl = [build(FaultSpec, f, f"faults[{i}]") for i, f in enumerate(faults)]
    except ConfigError as e:
        raise ScenarioError(f"{where}{e}") from None
    for key in ("line", "arm"):
        if not isinstance(data.get(key, {}), dict):
            raise ScenarioError(f"{where}{key}: expected a table [{key}]")
    sc = Scenario(spec, data.get("line", {}), data.get("arm", {}), fl, source)
    cfg = sc.line_config()  # validates [line], [arm] and the faults against them
    names = [a.name for a in cfg.arms]
    for i, f in enumerate(fl):
        if f.kind in ARM_FAULTS and f.arm and f.arm not in names:
            raise ScenarioError(
                f"{where}faults[{i}].arm={f.arm!r} is not an arm of this line: choose one of {', '.join(names)}"
            )
        if f.kind in ARM_FAULTS and not f.arm:
            fl[i] = dataclasses.replace(f, arm=names[0])
    return sc


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A scenario by file path, or by the name of a shipped one (``scallop sim list``)."""
    p = Path(name_or_path)
    if not p.is_file():
        shipped = shipped_scenarios()
        if str(name_or_path) in shipped:
            p = shipped[str(name_or_path)]
        else:
            raise ScenarioError(
                f"{name_or_path}: no such scenario file or shipped scenario; shipped: {', '.join(shipped) or '(none)'}"
            )
    try:
        data = load_toml(p)
    except ConfigError as e:
        raise ScenarioError(str(e)) from None
    return parse_scenario(data, str(p))


# ============================================================================ the run
@dataclass
class _Truth:
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


@dataclass
class _Failure:
    kind: str
    scallop: int
    frame_index: int
    t: float
    detail: str
    file: str = ""


class _Bench:
    """The hooks run_stepped calls (on_frame, on_tick) and the bookkeeping behind the report."""

    def __init__(
        self, line, sc: Scenario, target_n: int, t_end: float, report_dir: Path | None, ring: int = 16
    ) -> None:
        self.line = line
        self.sc = sc
        self.target_n = target_n
        self.t_end = t_end
        self.report_dir = report_dir
        self.truth: dict[int, _Truth] = {}
        self.phantoms: list = []
        self.harvested: set[int] = set()
        self.open: list = []  # outcomes harvested before their result was known
        self.ring: deque = deque(maxlen=ring)
        self.prev_visible: set[int] = set()
        self.failures: list[_Failure] = []
        self.failure_kinds: Counter = Counter()
        self.frame_states: Counter = Counter()
        self.frames = 0
        self.events: list[tuple[float, int, str, Callable[[], bool]]] = []
        self.fault_log: list[dict] = []
        self.errors: list[str] = []
        self._next_obs = -math.inf
        self.candidates: dict[int, tuple] = {}  # scallop id -> (kind, ring entry, detail)
        self.pop_ids: list[int] = []  # population scallops in order of arrival
        self.appeared_late: list[int] = []  # scallops that appeared too late to be imaged

    # ------------------------------------------------------------ set-up
    def begin(self) -> None:
        b = self.line.backend
        self.world = b.world
        self.camera = b.camera
        self.sim_arms = list(b.sim_arms)
        self.arm_configs = list(b.arm_configs)
        self.view_lo, self.view_hi = b.camera_model.view_x_range()
        # Often enough that an arrival is seen before it reaches the view (arrivals are made
        # at least a scallop's diameter upstream of it).
        belt = self.line.config.sim.belt
        v_max = max([belt.speed_mm_s] + [max(g.speed_mm_s, g.end_speed) for g in belt.profile])
        self.observe_s = min(OBSERVE_EVERY_S, OBSERVE_TRAVEL_MM / max(1.0, v_max))
        cam = self.camera
        self.frame_spacing_mm = cam.trigger_mm if cam.trigger == "encoder" else v_max / cam.fps
        self.last_window = max(a.pick_window_x_mm[1] for a in self.arm_configs)
        self.t0 = self.line.clock.now()
        for i, f in enumerate(self.sc.faults):
            self._schedule(f, i)
        self.events.sort(key=lambda e: (e[0], e[1]))
        self._next_t = self.events[0][0] if self.events else math.inf
        # The report's histograms show the whole run, not the last 2000 frames.
        self.line.stats.keep_all()

    def _schedule(self, f: FaultSpec, i: int) -> None:
        line, t0 = self.line, self.t0

        def add(t: float, what: str, fn: Callable[[], bool]) -> None:
            self.events.append((t0 + t, len(self.events), what, fn))

        def once(fn: Callable[[], None]) -> Callable[[], bool]:
            def run() -> bool:
                fn()
                return True

            return run

        if f.kind == "belt_stop":
            return  # in the belt's speed profile
        if f.kind == "camera_drop":
            add(f.at_s, f"faults[{i}] camera_drop {f.frames}", once(lambda: self.camera.drop_next(f.frames)))
        elif f.kind == "camera_stall":
            add(f.at_s, f"faults[{i}] camera_stall {f.duration_s:g} s", once(lambda: self.camera.stall(f.duration_s)))
        elif f.kind == "heartbeat_stall":
            sim = self.line.backend.sim_arm(f.arm)
            add(f.at_s, f"faults[{i}] {f.arm} heartbeat stalls", once(lambda: sim.stall_heartbeat(True)))
            add(f.end_s, f"faults[{i}] {f.arm} heartbeat back", once(lambda: sim.stall_heartbeat(False)))
        elif f.kind == "arm_disconnect":
            sim = self.line.backend.sim_arm(f.arm)
            port: list[int] = []

            def down() -> None:
                port.append(sim.port)
                sim.close()

            def up() -> None:
                # Same port as before: the controller's transport reconnects to where it was.
                sim._port = port[-1]
                sim.start()

            add(f.at_s, f"faults[{i}] {f.arm} server down", once(down))
            add(f.end_s, f"faults[{i}] {f.arm} server back", once(up))
            t_reset = f.end_s + f.reset_after_s
            add(t_reset, f"faults[{i}] operator resets {f.arm}", self._arm_reset(f.arm, give_up_at_s=t_reset + 10.0))
        elif f.kind == "estop_restart":
            sims = self.sim_arms if f.arms else []

            def press() -> None:
                line.estop("scenario")
                for s in sims:
                    s.estop()

            def release() -> None:
                for s in sims:
                    s.release_estop()

            def restart() -> bool:
                if line.state == "estop":
                    line.reset("scenario")
                if line.state in ("stopped", "paused"):
                    line.start("scenario")
                return True

            add(f.at_s, f"faults[{i}] e-stop pressed", once(press))
            add(f.end_s, f"faults[{i}] e-stop released", once(release))
            add(f.end_s + f.reset_after_s, f"faults[{i}] operator resets and restarts the line", restart)

    def _arm_reset(self, name: str, give_up_at_s: float) -> Callable[[], bool]:
        """The operator's reset of one arm, tried every tick until the arm answers (or gives up)."""
        from scallop.robot.errors import RobotError

        def run() -> bool:
            c = next(c for c in self.line.clients if c.name == name)
            st = c.state_name
            if st in ("idle", "picking"):
                return True
            if st in ("fault", "estop"):
                try:
                    c.reset_fault()
                    return True
                except RobotError:
                    pass
            if self.line.clock.now() > self.t0 + give_up_at_s:
                self.errors.append(f"operator reset of {name} gave up: the arm stayed {st}")
                return True
            return False

        return run

    # ------------------------------------------------------------ hooks
    def on_tick(self, line) -> None:
        if self._next_obs <= line.clock.now():
            self._observe(line.clock.now())
        if self._next_t > line.clock.now():
            return
        now = line.clock.now()
        keep = []
        while self.events and self.events[0][0] <= now:
            t, k, what, fn = self.events.pop(0)
            if fn():
                self.fault_log.append({"t": round(now - self.t0, 3), "event": what})
            else:
                keep.append((t, k, what, fn))
        self.events = sorted(keep + self.events, key=lambda e: (e[0], e[1]))
        # A retried action waits a tick.
        self._next_t = min((e[0] for e in self.events), default=math.inf)
        if keep:
            self._next_t = now + line.config.runtime.tick_s

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
                row = self.truth[s.id] = _Truth(
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
            row.x, row.has_uro = x, s.has_uro
            if row.passed_t is None and x > self.last_window:
                row.passed_t = t
                if self.candidates:
                    self._settle(row)

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
        self._harvest()
        self._check_open()
        # Scallops that left the view undecided while the line ran: vision missed them.
        if state == "running":
            for sid in sorted(self.prev_visible - visible):
                row = self.truth[sid]
                if row.had_uro and row.seen_running and not row.outcomes and row.population:
                    self._failure("vision_missed", sid, None, "scallop with a uro left the view untracked")
        self.prev_visible = visible

    # ------------------------------------------------------------ outcomes
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
            and oc.reason in ("no_uro", "ambiguous", "views_disagree", "too_close")
        ):
            # Only a failure if no other track of the scallop gets it picked: decided when it
            # has gone past the arms (the frame is kept until then).
            kind = f"skipped_{oc.reason}"
            if self._wanted(kind) and sid not in self.candidates:
                entry = self._frame(sid, oc.decision.view.frame_index)
                if entry is not None:
                    self.candidates[sid] = (kind, entry, f"skipped ({oc.reason}) but it carries a uro")

    def _settle(self, row: _Truth) -> None:
        """A scallop went past the arms: a pending failure frame is kept if it was not picked after all."""
        cand = self.candidates.pop(row.id, None)
        if (
            cand is not None
            and not any(not o.result for o in row.outcomes)
            and not _outcome_of(row).startswith("picked:")
        ):
            kind, entry, detail = cand
            self._failure(kind, row.id, None, detail, entry)

    def _wanted(self, kind: str) -> bool:
        return len(self.failures) < self.sc.spec.failure_frames and self.failure_kinds[kind] < FAILURE_KINDS_MAX_EACH

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
        f = _Failure(kind, sid, entry[0], round(entry[1] - self.t0, 3), detail)
        self.failures.append(f)
        if self.report_dir is not None:
            f.file = f"failure-{len(self.failures):02d}-{kind}.jpg"
            _write_failure_jpeg(self.report_dir / f.file, entry, sid, f"#{sid} {kind}")

    # ------------------------------------------------------------ the end
    def done(self) -> bool:
        now = self.line.clock.now()
        if now >= self.t_end:
            return True
        if self.target_n and len(self.pop_ids) >= self.target_n:
            return self.truth[self.pop_ids[self.target_n - 1]].passed_t is not None
        return False

    def population(self) -> list[_Truth]:
        """Population scallops that went past the last pick window (the processed ones); a
        ``scallops = N`` run counts the first N to arrive."""
        ids = self.pop_ids[: self.target_n] if self.target_n else self.pop_ids
        return [self.truth[i] for i in ids if self.truth[i].passed_t is not None]


def _outcome_of(row: _Truth) -> str:
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


def run_scenario(
    sc: Scenario,
    report_dir: str | Path | None = None,
    *,
    seed: int | None = None,
    model: str | None = None,
    scallops: int | None = None,
    duration_s: float | None = None,
    progress: Callable[[str], None] | None = None,
    chunk_s: float = 5.0,
) -> dict:
    """Run ``sc`` on the virtual clock and return its summary (see :func:`write_report`).

    seed / model / scallops / duration_s override the scenario's own (``scallops`` and
    ``duration_s`` replace each other). With ``report_dir`` the failure frames and the line's
    record (``record/record.sqlite``) are written there; :func:`write_report` adds the rest.
    """
    import shutil
    import tempfile

    from scallop.app.build import build_line
    from scallop.robot.planning import PickPlanner
    from scallop.sim.clock import VirtualClock

    if scallops is not None and duration_s is not None:
        raise ScenarioError("give --scallops or --duration, not both")
    spec = sc.spec
    if scallops is not None:
        if scallops < 1:
            raise ScenarioError(f"scallops={scallops} is out of range: allowed 1..1000000")
        spec = dataclasses.replace(spec, scallops=scallops, duration_s=0.0)
    elif duration_s is not None:
        if not 0 < duration_s <= 86400:
            raise ScenarioError(f"duration_s={duration_s:g} is out of range: allowed 0..86400")
        spec = dataclasses.replace(spec, duration_s=duration_s, scallops=0)
    sc = dataclasses.replace(sc, spec=spec)
    seed = spec.seed if seed is None else int(seed)
    cfg = sc.line_config(model=model)
    v = cfg.sim.belt.speed_mm_s
    rate = cfg.sim.arrivals.rate_per_s
    if spec.scallops:
        if rate <= 0:
            raise ScenarioError("scenario.scallops needs arrivals (line.sim.arrivals.rate_per_s or arrivals_share > 0)")
        stops = sum(f.end_s - f.at_s for f in sc.faults if f.kind in ("belt_stop", "estop_restart"))
        expected = spec.scallops / rate + stops + 30.0
        t_end = spec.max_duration_s or 3.0 * expected
    else:
        t_end = spec.duration_s

    out = Path(report_dir) if report_dir is not None else None
    tmp = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("failure-*.jpg"):
            old.unlink()
        if (out / "record").is_dir():
            shutil.rmtree(out / "record")
        rec_path = out / "record" / "record.sqlite"
    else:
        tmp = tempfile.TemporaryDirectory(prefix="scallop-scenario-")
        rec_path = Path(tmp.name) / "record.sqlite"

    t_wall0 = time.perf_counter()
    clock = VirtualClock()
    line = build_line(cfg, rec_path, seed=seed, clock=clock)
    bench = _Bench(line, sc, spec.scallops, t_end, out)
    crash = None
    try:
        line.open()
        bench.begin()
        line.start("scenario")
        t_setup = time.perf_counter() - t_wall0
        t_loop0 = time.perf_counter()
        last_note = 0.0
        while not bench.done():
            step = min(chunk_s, t_end - clock.now())
            line.run_stepped(step, on_frame=bench.on_frame, on_tick=bench.on_tick)
            if line.state == "fault":
                crash = next(
                    (a.text for a in line.alarms.visible() if a.source == "line" and a.active),
                    "the line stopped after a fault",
                )
                break
            if progress is not None and time.perf_counter() - last_note > 10.0:
                last_note = time.perf_counter()
                n = len(bench.population())
                goal = f"/{spec.scallops}" if spec.scallops else ""
                progress(
                    f"t={clock.now():.0f} s virtual, {n}{goal} scallops past the arms, "
                    f"{clock.now() / max(1e-9, last_note - t_loop0):.1f}x real time"
                )
        t_virtual = clock.now() - bench.t0
        loop_wall = time.perf_counter() - t_loop0
        line.stop("scenario")
        bench._harvest()
        bench._check_open()
        summary = _summarise(bench, sc, cfg, seed, t_virtual, loop_wall, t_setup, crash)
    finally:
        line.close()
        if tmp is not None:
            tmp.cleanup()
    summary["wall_s"] = round(time.perf_counter() - t_wall0, 2)
    caps = {a.name: PickPlanner(a).capacity_per_s(v) for a in cfg.arms}
    summary["capacity"]["per_arm_per_min"] = {k: round(c * 60, 2) for k, c in caps.items()}
    return summary


# ============================================================================ the summary
def _summarise(
    b: _Bench,
    sc: Scenario,
    cfg: LineConfig,
    seed: int,
    t_virtual: float,
    loop_wall: float,
    t_setup: float,
    crash: str | None,
) -> dict:
    from scallop.robot.arm import PICK_TYPES
    from scallop.robot.planning import PickPlanner

    v = cfg.sim.belt.speed_mm_s
    processed = b.population()
    outcomes = Counter(_outcome_of(r) for r in processed)
    with_uro = [r for r in processed if r.had_uro]
    uro_removed = sum(1 for r in with_uro if not r.has_uro)
    missed = sum(1 for r in with_uro if r.has_uro)
    skipped = Counter()
    for k, n in outcomes.items():
        if not k.startswith("picked:"):
            skipped[k.split(":", 1)[-1]] += n

    # Executed picks: the arms' own records (ground truth), over the whole run.
    picks, seqs_dup, target_dup = [], 0, 0
    busy: dict[str, float] = {}
    target_ids: Counter = Counter()
    for cfg_a, sim in zip(b.arm_configs, b.sim_arms):
        seqs = [r.seq for r in sim.records]
        seqs_dup += len(seqs) - len(set(seqs))
        busy[cfg_a.name] = 0.0
        for r in sim.records:
            if r.cmd_type not in PICK_TYPES:
                continue
            target_ids[r.target_id] += 1
            # Moving or gripping; waiting above a uro that has not arrived yet is spare capacity.
            busy[cfg_a.name] += max(0.0, r.t_done - r.t_ack - r.wait_s)
            if r.t_grip is not None:
                picks.append((r.t_grip, cfg_a.name, r.grade or "ungraded"))
    target_dup = sum(n - 1 for n in target_ids.values() if n > 1)
    picks.sort()
    grades = Counter(g for _, _, g in picks)
    span = t_virtual
    tp = 0.0
    if len(picks) >= 2:
        # Picks per minute from the first grip to the last: the line's sustained rate.
        t_a, t_b = picks[0][0], picks[-1][0]
        tp = (len(picks) - 1) / max(1e-9, t_b - t_a) * 60.0
    caps = {a.name: PickPlanner(a).capacity_per_s(v) for a in cfg.arms}
    cap_total = sum(caps.values()) * 60.0

    # Time series.
    bin_s = sc.spec.bin_s or _nice_bin(span)
    nb = max(1, int(math.ceil(span / bin_s)))
    edges = [b.t0 + i * bin_s for i in range(nb + 1)]

    # The last bin ends with the run: rates over the time it covers.
    widths = [min(edges[i + 1], b.t0 + span) - edges[i] for i in range(nb)]

    def hist(times) -> list[float]:
        h = np.histogram(np.asarray(list(times), float), bins=edges)[0]
        return [round(float(x) * 60.0 / w, 2) if w > 0 else 0.0 for x, w in zip(h, widths)]

    pop_all = [b.truth[i] for i in b.pop_ids]
    series = {
        "bin_s": bin_s,
        "t_s": [round(e - b.t0, 2) for e in edges[:-1]],
        "arrivals_per_min": hist(r.first_visible_t for r in pop_all if r.first_visible_t is not None),
        "picks_per_min": hist(t for t, _, _ in picks),
        "uro_removed_per_min": hist(t for t, _, g in picks if g == "uro_removed"),
        "skipped_per_min": hist(o.t_decided for r in processed for o in r.outcomes[-1:] if o.result != "picked"),
        "belt_speed_mm_s": [round(b.world.speed_mm_s(e + bin_s / 2), 1) for e in edges[:-1]],
    }
    lat = b.line.stats.latency_summary()
    undecided = outcomes.get("undecided", 0)
    checks = {
        "accounted": sum(outcomes.values()) == len(processed) and undecided == 0,
        "undecided": undecided,
        "duplicate_seqs": seqs_dup,
        "duplicate_target_picks": target_dup,
        "scallops_picked_twice": sum(1 for r in processed if sum(o.result == "picked" for o in r.outcomes) > 1),
        "retracked_scallops": sum(1 for r in processed if len(r.outcomes) > 1),
        "phantom_tracks": len(b.phantoms),
        "line_open_after_stop": sum(1 for oc in b.line.outcomes.values() if not oc.result),
        # Simulator artefact: scallops dropped on the belt in or past the view, where the camera
        # may never see them (not the line's to handle; counted, not in the population).
        "appeared_too_late_to_image": len(b.appeared_late),
    }
    line_sum = b.line.summary()
    return {
        "scenario": sc.name,
        "description": sc.spec.description,
        "source": sc.source,
        "seed": seed,
        "model": cfg.vision.model or "(shipped)",
        "duration_s": round(t_virtual, 3),
        "scallops_target": sc.spec.scallops or None,
        "complete": (not sc.spec.scallops or len(processed) == sc.spec.scallops) and crash is None,
        "crash": crash,
        "arms": [a.name for a in cfg.arms],
        "belt_speed_mm_s": v,
        "arrivals_rate_per_min": round(cfg.sim.arrivals.rate_per_s * 60.0, 2),
        "capacity": {"total_per_min": round(cap_total, 2), "cycle_s": {k: round(1.0 / c, 4) for k, c in caps.items()}},
        "processed": len(processed),
        "with_uro": len(with_uro),
        "uro_removed": uro_removed,
        "missed": missed,
        "adductor_hits": grades.get("adductor_hit", 0),
        "uro_removal_rate": round(uro_removed / len(with_uro), 4) if with_uro else None,
        "picks": len(picks),
        "picks_by_grade": dict(sorted(grades.items())),
        "skipped": dict(sorted(skipped.items())),
        "outcomes": dict(sorted(outcomes.items())),
        "throughput_per_min": round(tp, 2),
        "throughput_share_of_capacity": round(tp / cap_total, 4) if cap_total else None,
        "arm_utilisation": {k: round(t / span, 4) if span > 0 else 0.0 for k, t in busy.items()},
        "picks_per_arm": dict(Counter(a for _, a, _ in picks)),
        "latency_ms": lat,
        "realtime_factor": round(t_virtual / loop_wall, 2) if loop_wall > 0 else None,
        "setup_s": round(t_setup, 2),
        "frames": b.frames,
        "frames_by_line_state": dict(b.frame_states),
        "faults": [dataclasses.asdict(f) | {"text": f.describe()} for f in sc.faults],
        "fault_log": b.fault_log,
        "errors": b.errors,
        "checks": checks,
        "line": line_sum,
        "time_series": series,
        "failure_frames": [dataclasses.asdict(f) for f in b.failures],
        "_latency_values": b.line.stats.latency_values(),
    }


def _nice_bin(span: float) -> float:
    raw = max(5.0, span / 50.0)
    for step in (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if step >= raw:
            return float(step)
    return 3600.0


def deterministic_view(summary: dict) -> dict:
    """The summary without wall-clock figures: the same scenario and seed give the same."""
    return {k: v for k, v in summary.items() if k not in WALL_TIME_KEYS and not k.startswith("_")}


# ============================================================================ the report
def write_report(summary: dict, report_dir: str | Path) -> Path:
    """``summary.json`` and ``index.html`` (inline SVG plots) in ``report_dir``; returns the HTML path."""
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    public = {k: v for k, v in summary.items() if not k.startswith("_")}
    (out / "summary.json").write_text(json.dumps(public, indent=2) + "\n")
    page = out / "index.html"
    page.write_text(render_html(summary))
    return page


def render_html(s: dict) -> str:
    e = html.escape
    ts = s["time_series"]
    cap = s["capacity"]["total_per_min"]
    vlines = [(f["at_s"], f["kind"]) for f in s["faults"]]
    tp_chart = svg_lines(
        ts["t_s"],
        {
            "arrivals": ts["arrivals_per_min"],
            "picks": ts["picks_per_min"],
            "uro removed": ts["uro_removed_per_min"],
            "skipped": ts["skipped_per_min"],
        },
        x_label="virtual time (s)",
        y_label="per minute",
        hline=(cap, "capacity"),
        vlines=vlines,
    )
    belt = ""
    if len(set(ts["belt_speed_mm_s"])) > 1:
        belt = "<h3>Belt speed</h3>" + svg_lines(
            ts["t_s"],
            {"belt": ts["belt_speed_mm_s"]},
            x_label="virtual time (s)",
            y_label="mm/s",
            vlines=vlines,
            height=160,
        )
    outcomes = svg_bars(sorted(s["outcomes"].items(), key=lambda kv: -kv[1]))
    hists = []
    for stage, vals in s.get("_latency_values", {}).items():
        if vals and stage in s["latency_ms"]:
            p = s["latency_ms"][stage]
            hists.append(
                f"<div class='h'><h3>{e(stage)}</h3>"
                f"<p>p50 {p['p50']} ms · p90 {p['p90']} ms · p99 {p['p99']} ms · n {p['n']}</p>"
                f"{svg_hist(vals, 'ms')}</div>"
            )
    frames = (
        "".join(
            f"<figure><img src='{e(f['file'])}' alt='{e(f['kind'])}'><figcaption>{e(f['kind'])}: scallop "
            f"{f['scallop']} at {f['t']:g} s (frame {f['frame_index']}) — {e(f['detail'])}</figcaption></figure>"
            for f in s["failure_frames"]
            if f.get("file")
        )
        or "<p>No failure frames.</p>"
    )
    rate = s["uro_removal_rate"]
    head = [
        ("processed", s["processed"]),
        ("with uro", s["with_uro"]),
        ("uro removed", s["uro_removed"]),
        ("removal rate", "–" if rate is None else f"{100 * rate:.2f} %"),
        ("missed (uro left on)", s["missed"]),
        ("adductor hits", s["adductor_hits"]),
        ("throughput", f"{s['throughput_per_min']:g} /min"),
        ("capacity", f"{cap:g} /min"),
        ("virtual time", f"{s['duration_s']:g} s"),
        ("real-time factor", f"{s['realtime_factor']}×"),
    ]
    cards = "".join(f"<div class='c'><b>{e(str(v))}</b><span>{e(k)}</span></div>" for k, v in head)
    checks = "".join(f"<tr><td>{e(k)}</td><td>{e(str(v))}</td></tr>" for k, v in s["checks"].items())
    faults = "".join(f"<li>{e(f['text'])}</li>" for f in s["faults"]) or "<li>none</li>"
    flog = "".join(f"<li>{ev['t']:g} s: {e(ev['event'])}</li>" for ev in s["fault_log"])
    skipped = "".join(f"<tr><td>{e(k)}</td><td>{n}</td></tr>" for k, n in s["skipped"].items())
    util = ", ".join(f"{k} {100 * u:.1f} %" for k, u in s["arm_utilisation"].items())
    errors = "".join(f"<li>{e(x)}</li>" for x in s["errors"] + ([s["crash"]] if s["crash"] else []))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Scenario {e(s["scenario"])}</title>
<style>
body{{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}}
h1{{margin:0 0 4px}} .sub{{color:#666;margin:0 0 16px}}
.cards{{display:flex;flex-wrap:wrap;gap:8px;margin:12px 0}}
.c{{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:110px}}
.c b{{display:block;font-size:20px}} .c span{{color:#666;font-size:12px}}
.hs{{display:flex;flex-wrap:wrap;gap:12px}} .h{{flex:1 1 320px}} .h p{{color:#666;margin:0}}
figure{{display:inline-block;margin:8px;max-width:520px}} figure img{{max-width:100%;border:1px solid #ccc}}
table{{border-collapse:collapse}} td{{border-bottom:1px solid #eee;padding:2px 12px 2px 0}}
svg text{{font:11px system-ui,sans-serif;fill:#444}}
</style></head><body>
<h1>Scenario {e(s["scenario"])}</h1>
<p class="sub">{e(s["description"])} — seed {s["seed"]}, model {e(str(s["model"]))}, arms {e(", ".join(s["arms"]))},
belt {s["belt_speed_mm_s"]:g} mm/s, arrivals {s["arrivals_rate_per_min"]:g}/min{"" if s["complete"] else " — INCOMPLETE"}</p>
<div class="cards">{cards}</div>
<p>Arm utilisation (time moving or gripping; waiting above a uro that has not arrived is not counted): {e(util)}.</p>
<h2>Throughput over time</h2>{tp_chart}{belt}
<h2>Outcomes</h2><p>Every scallop that went past the arms has exactly one outcome.</p>{outcomes}
<h3>Not picked, by reason</h3><table>{skipped or "<tr><td>none</td></tr>"}</table>
<h2>Latency per stage (wall clock)</h2><div class="hs">{"".join(hists)}</div>
<h2>Faults</h2><ul>{faults}</ul><ul>{flog}</ul>{("<h3>Errors</h3><ul>" + errors + "</ul>") if errors else ""}
<h2>Checks</h2><table>{checks}</table>
<h2>Failure frames</h2><p>Magenta box: the scallop; yellow circle: where its uro really is.</p>{frames}
</body></html>
"""


PALETTE = ("#1f77b4", "#2ca02c", "#17becf", "#d62728", "#9467bd", "#8c564b", "#ff7f0e")


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def svg_lines(
    x,
    series: dict[str, list[float]],
    x_label: str = "",
    y_label: str = "",
    hline: tuple[float, str] | None = None,
    vlines: list[tuple[float, str]] = (),
    width: int = 960,
    height: int = 280,
) -> str:
    """A line chart as an inline ``<svg>`` (one polyline per series, shared x)."""
    e = html.escape
    ml, mr, mt, mb = 56, 110, 12, 36
    pw, ph = width - ml - mr, height - mt - mb
    xs = [float(v) for v in x]
    if not xs:
        return "<p>(no data)</p>"
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    ymax = max([max(v) for v in series.values() if v] + [hline[0] if hline else 0, 1e-9]) * 1.1

    def px(v: float) -> float:
        return ml + (v - x0) / (x1 - x0) * pw

    def py(v: float) -> float:
        return mt + ph - v / ymax * ph

    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img'>",
        f"<rect x='{ml}' y='{mt}' width='{pw}' height='{ph}' fill='none' stroke='#bbb'/>",
    ]
    for t in _ticks(0, ymax):
        parts.append(
            f"<line x1='{ml}' x2='{ml + pw}' y1='{py(t):.1f}' y2='{py(t):.1f}' stroke='#eee'/>"
            f"<text x='{ml - 6}' y='{py(t) + 4:.1f}' text-anchor='end'>{t:g}</text>"
        )
    for t in _ticks(x0, x1, 8):
        parts.append(f"<text x='{px(t):.1f}' y='{mt + ph + 16}' text-anchor='middle'>{t:g}</text>")
    for xv, label in vlines:
        if x0 <= xv <= x1:
            parts.append(
                f"<line x1='{px(xv):.1f}' x2='{px(xv):.1f}' y1='{mt}' y2='{mt + ph}' stroke='#f0a' "
                f"stroke-dasharray='3 3'/><text x='{px(xv) + 3:.1f}' y='{mt + 12}' fill='#a07'>{e(label)}</text>"
            )
    if hline:
        parts.append(
            f"<line x1='{ml}' x2='{ml + pw}' y1='{py(hline[0]):.1f}' y2='{py(hline[0]):.1f}' stroke='#999' "
            f"stroke-dasharray='6 4'/><text x='{ml + 4}' y='{py(hline[0]) - 4:.1f}'>{e(hline[1])}</text>"
        )
    for i, (name, ys) in enumerate(series.items()):
        c = PALETTE[i % len(PALETTE)]
        pts = " ".join(f"{px(a):.1f},{py(float(b)):.1f}" for a, b in zip(xs, ys))
        parts.append(f"<polyline points='{pts}' fill='none' stroke='{c}' stroke-width='1.6'/>")
        parts.append(
            f"<rect x='{ml + pw + 6}' y='{mt + 22 + 16 * i}' width='10' height='3' fill='{c}'/>"
            f"<text x='{ml + pw + 20}' y='{mt + 27 + 16 * i}'>{e(name)}</text>"
        )
    parts.append(
        f"<text x='{ml + pw / 2}' y='{height - 4}' text-anchor='middle'>{e(x_label)}</text>"
        f"<text x='12' y='{mt + ph / 2}' transform='rotate(-90 12 {mt + ph / 2})' "
        f"text-anchor='middle'>{e(y_label)}</text></svg>"
    )
    return "".join(parts)


def svg_bars(items: list[tuple[str, float]], width: int = 720, bar_h: int = 18) -> str:
    """Horizontal bars with their value, as an inline ``<svg>``."""
    e = html.escape
    if not items:
        return "<p>(none)</p>"
    ml, mr = 200, 60
    pw = width - ml - mr
    vmax = max(v for _, v in items) or 1
    height = len(items) * (bar_h + 6) + 8
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img'>"]
    for i, (label, v) in enumerate(items):
        y = 4 + i * (bar_h + 6)
        w = v / vmax * pw
        c = (
            "#2ca02c"
            if label == "picked:uro_removed"
            else ("#d62728" if "adductor" in label or "missed" in label else "#1f77b4")
        )
        parts.append(
            f"<text x='{ml - 6}' y='{y + bar_h - 5}' text-anchor='end'>{e(label)}</text>"
            f"<rect x='{ml}' y='{y}' width='{w:.1f}' height='{bar_h}' fill='{c}'/>"
            f"<text x='{ml + w + 4:.1f}' y='{y + bar_h - 5}'>{v:g}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def svg_hist(values, unit: str = "", bins: int = 30, width: int = 340, height: int = 150) -> str:
    """A histogram (1st to 99.5th percentile; the rest in the end bins) as an inline ``<svg>``."""
    a = np.asarray(values, float)
    if not len(a):
        return "<p>(no data)</p>"
    lo, hi = float(np.percentile(a, 0.5)), float(np.percentile(a, 99.5))
    if hi <= lo:
        hi = lo + 1e-3
    counts, _ = np.histogram(np.clip(a, lo, hi), bins=bins, range=(lo, hi))
    ml, mb, mt = 8, 30, 6
    pw, ph = width - 2 * ml, height - mb - mt
    cmax = counts.max() or 1
    bw = pw / bins
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img'>"]
    for i, c in enumerate(counts):
        h = c / cmax * ph
        parts.append(
            f"<rect x='{ml + i * bw:.1f}' y='{mt + ph - h:.1f}' width='{bw - 1:.1f}' height='{h:.1f}' fill='#1f77b4'/>"
        )
    parts.append(
        f"<line x1='{ml}' x2='{ml + pw}' y1='{mt + ph}' y2='{mt + ph}' stroke='#999'/>"
        f"<text x='{ml}' y='{height - 12}'>{lo:.3g} {html.escape(unit)}</text>"
        f"<text x='{ml + pw}' y='{height - 12}' text-anchor='end'>{hi:.3g} {html.escape(unit)}</text></svg>"
    )
    return "".join(parts)
