"""Scenario files: what a scenario asks of the line, parsed and checked, and the shipped ones.

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
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from scallop.app.config import ConfigError, LineConfig, build, load_toml, to_dict
from scallop.errors import check_range, check_seed

FaultKind = Literal[
    "arm_disconnect",
    "plc_disconnect",
    "gate_jam",
    "heartbeat_stall",
    "camera_drop",
    "camera_stall",
    "camera_scale",
    "fluorescence_drop",
    "fluorescence_shift",
    "estop_restart",
    "belt_stop",
]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
ARM_FAULTS = ("arm_disconnect", "heartbeat_stall")
# The keys each fault kind reads besides ``at_s`` and ``kind``: any other is refused at load
# (a ``duration_s`` on a fault counted in frames would be silently meaningless).
FAULT_KEYS: dict[str, tuple[str, ...]] = {
    "arm_disconnect": ("arm", "duration_s", "reset_after_s"),
    "heartbeat_stall": ("arm", "duration_s"),
    "camera_drop": ("frames",),
    "camera_stall": ("duration_s",),
    "camera_scale": ("scale", "duration_s"),
    "fluorescence_drop": ("frames",),
    "fluorescence_shift": ("shift_mm", "duration_s"),
    "estop_restart": ("duration_s", "arms", "reset_after_s"),
    "belt_stop": ("duration_s", "ramp_s"),
    "plc_disconnect": ("duration_s", "reset_after_s"),
    "gate_jam": ("duration_s", "reset_after_s"),
}


class ScenarioError(ConfigError):
    """A scenario file or option that cannot be used; the message names the key."""


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
    compare_without_channel: run the same seed a second time with the shipped colour-only
    model (the line still has the fluorescence channel, which that model does not read); the
    report shows both (needs ``[line.camera.fluorescence]``).
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
    compare_without_channel: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.compare_without_channel, bool):
            raise ValueError(f"compare_without_channel={self.compare_without_channel!r}: expected true or false")
        if not self.name.strip():
            raise ValueError("name is empty")
        if (self.duration_s > 0) == (self.scallops > 0):
            raise ValueError(
                f"give exactly one of duration_s and scallops (got duration_s={self.duration_s:g}, "
                f"scallops={self.scallops})"
            )
        check_seed("seed", self.seed)  # numpy refuses a negative one
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
    camera_scale: the colour camera's images are ``scale`` times as large about their centre as
      its calibration says, for ``duration_s`` (a camera moved nearer the belt or refocused,
      then set back).
    fluorescence_drop: the next ``frames`` colour frames come without their fluorescence
      exposure (the UV strobe or the second camera failing); needs ``[line.camera.fluorescence]``.
    fluorescence_shift: the fluorescence images move ``shift_mm`` along the belt from where the
      calibration puts them, for ``duration_s`` (a camera knocked on its mount, then set back);
      needs ``[line.camera.fluorescence]``.
    estop_restart: e-stop pressed (the line's and, with ``arms``, every arm's); released after
      ``duration_s``, then the operator resets and restarts the line ``reset_after_s`` later.
    belt_stop: the belt ramps down over ``ramp_s``, stands for ``duration_s`` and ramps back
      (written into the belt's speed profile).
    plc_disconnect: the line PLC's server goes away for ``duration_s`` (its program runs on:
      its watchdog sees the line's heartbeat stop and goes to its safe state).
    gate_jam: the reject gate stops moving for ``duration_s``; the operator resets the line
      ``reset_after_s`` after it is free.
    """

    at_s: float
    kind: FaultKind
    duration_s: float = 5.0
    arm: str = ""  # "" = the first arm
    frames: int = 5
    reset_after_s: float = 1.0
    arms: bool = True
    ramp_s: float = 0.5
    shift_mm: float | None = None  # fluorescence_shift only
    scale: float | None = None  # camera_scale only

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"kind={self.kind!r} is not allowed: choose one of {', '.join(FAULT_KINDS)}")
        check_range("at_s", self.at_s, 0.0, 864000.0)
        check_range("duration_s", self.duration_s, 0.01, 3600.0)
        check_range("frames", self.frames, 1, 10000)
        check_range("reset_after_s", self.reset_after_s, 0.0, 600.0)
        check_range("ramp_s", self.ramp_s, 0.01, 60.0)
        if self.kind == "camera_scale":
            self._held("scale", 0.8, 1.25, 1.0, "", "changes the images' scale")
        if self.kind == "fluorescence_shift":
            self._held("shift_mm", -200.0, 200.0, 0.0, " mm", "moves the images")

    def _held(self, key: str, lo: float, hi: float, normal: float, unit: str, does: str) -> None:
        """A fault that holds a setting away from ``normal``: its value is required, in range,
        and not ``normal`` (which would be no fault)."""
        value = getattr(self, key)
        allowed = f"{lo:g}..{hi:g}{unit}, not {normal:g}"
        if value is None:
            raise ValueError(f"{key} is required for a {self.kind} (allowed {allowed})")
        check_range(key, value, lo, hi, note=f", not {normal:g}")
        if value == normal:
            raise ValueError(f"{key}={normal:g} is not allowed: a {self.kind} {does} ({allowed})")

    @property
    def end_s(self) -> float:
        if self.kind == "belt_stop":
            return self.at_s + 2 * self.ramp_s + self.duration_s
        if self.kind in ("camera_drop", "fluorescence_drop"):
            return self.at_s
        return self.at_s + self.duration_s

    def describe(self) -> str:
        what = {
            "arm_disconnect": f"arm {self.arm or '(first)'} disconnected for {self.duration_s:g} s",
            "heartbeat_stall": f"arm {self.arm or '(first)'} heartbeat stalled for {self.duration_s:g} s",
            "camera_drop": f"camera drops {self.frames} frames",
            "camera_stall": f"camera stalled for {self.duration_s:g} s",
            "camera_scale": f"camera images at {self.scale or 0:g}× their calibrated scale for {self.duration_s:g} s",
            "fluorescence_drop": f"fluorescence channel drops {self.frames} frames",
            "fluorescence_shift": f"fluorescence camera knocked {self.shift_mm or 0:g} mm for {self.duration_s:g} s",
            "estop_restart": f"e-stop for {self.duration_s:g} s, then reset and restart",
            "belt_stop": f"belt stops for {self.duration_s:g} s",
            "plc_disconnect": f"line PLC disconnected for {self.duration_s:g} s",
            "gate_jam": f"reject gate jammed for {self.duration_s:g} s, then reset by the operator",
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


def check_channel_faults(faults: list[FaultSpec], cfg: LineConfig, where: str = "") -> None:
    """A fault on the fluorescence channel needs a line that has one: refused at load, and at
    the run for a scenario built in code (``where``: the file, or "")."""
    for i, f in enumerate(faults):
        if f.kind in ("fluorescence_drop", "fluorescence_shift") and not cfg.camera.fluorescence.enabled:
            what = "a channel to lose" if f.kind == "fluorescence_drop" else "a channel to move"
            raise ScenarioError(
                f"{where}faults[{i}]: {f.kind} needs [line.camera.fluorescence] and [line.sim.fluorescence] ({what})"
            )


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
        for i, (f, raw) in enumerate(zip(fl, faults)):
            extra = sorted(set(raw) - {"at_s", "kind", *FAULT_KEYS[f.kind]})
            if extra:
                allowed = ", ".join(FAULT_KEYS[f.kind]) or "none"
                raise ConfigError(f"faults[{i}].{extra[0]}: a {f.kind} fault does not read it (its keys: {allowed})")
    except ConfigError as e:
        raise ScenarioError(f"{where}{e}") from None
    for key in ("line", "arm"):
        if not isinstance(data.get(key, {}), dict):
            raise ScenarioError(f"{where}{key}: expected a table [{key}]")
    sc = Scenario(spec, data.get("line", {}), data.get("arm", {}), fl, source)
    cfg = sc.line_config()  # validates [line], [arm] and the faults against them
    names = [a.name for a in cfg.arms]
    check_channel_faults(fl, cfg, where)
    for i, f in enumerate(fl):
        if f.kind in ARM_FAULTS and f.arm and f.arm not in names:
            raise ScenarioError(
                f"{where}faults[{i}].arm={f.arm!r} is not an arm of this line: choose one of {', '.join(names)}"
            )
        if f.kind in ARM_FAULTS and not f.arm:
            fl[i] = dataclasses.replace(f, arm=names[0])
    _check_overlaps(fl, where)
    return sc


def _check_overlaps(faults: list[FaultSpec], where: str) -> None:
    """Two faults of one kind (on one arm) at once are refused: the first one's end would undo
    the second (a camera set back to its calibration while a later move should hold), and the
    report would say what the line never saw."""

    def until(f: FaultSpec) -> float:
        # An operator's reset after the fault is part of it: a second fault of the kind before it
        # would be reset (and its alarms acknowledged) by the first one's operator.
        return f.end_s + (f.reset_after_s if "reset_after_s" in FAULT_KEYS[f.kind] else 0.0)

    spans = [(i, f) for i, f in enumerate(faults) if until(f) > f.at_s]
    for a, (i, f) in enumerate(spans):
        for j, g in spans[a + 1 :]:
            if f.kind == g.kind and f.arm == g.arm and f.at_s < until(g) and g.at_s < until(f):
                raise ScenarioError(
                    f"{where}faults[{j}]: {g.kind} from {g.at_s:g} to {until(g):g} s overlaps faults[{i}] "
                    f"({f.at_s:g} to {until(f):g} s, its reset included): one {f.kind} at a time (end one, and "
                    "its reset, before the next begins)"
                )


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
