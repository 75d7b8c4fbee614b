"""Property-based tests (hypothesis): whatever the input, the config loader, the calibration
loader, the Modbus register codecs and the pick planner give either a clear error of our own
types (:class:`scallop.errors.ScallopError`) or a result that holds: finite thresholds, a
calibration that maps the image to the belt, register words that decode back, a plan inside the
workspace. No exception of another type escapes. Seeded (derandomize) and bounded in examples."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from scallop.app.config import load_config
from scallop.calibration.errors import CalibrationError
from scallop.calibration.store import LineCalibration
from scallop.errors import ScallopError
from scallop.robot.belt import ConveyorTracker
from scallop.robot.config import ArmConfig
from scallop.robot.errors import RegisterValueError
from scallop.robot.planning import PickPlan, PickPlanner, PickTarget, Skip
from scallop.robot.registers import RegisterMap

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.sampled_from([0, 1, -1, 0.5, 1e308, -1e308, 1e-308, 2**63]),
)
scalars = st.one_of(numbers, st.booleans(), st.text(max_size=8), st.none())
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


# ---------------------------------------------------------------------------- the config loader
SECTIONS = {
    "vision": [
        "mm_per_px",
        "threads",
        "min_uro_confidence",
        "min_adductor_gap_mm",
        "clearance_mm",
        "adductor_doubt_logit",
        "border_margin_mm",
        "second_uro_ratio",
        "grip_uro_probability",
    ],
    "runtime": ["tick_s", "frame_queue", "stall_alarm_s", "inference_latency_s", "accept_redo_calibration"],
    "record": ["snapshot_budget_mb", "path"],
    "ui": ["port", "host"],
    "camera": ["width", "fps", "source"],
}


@st.composite
def config_tables(draw) -> dict:
    out: dict = {}
    for section in draw(st.lists(st.sampled_from(sorted(SECTIONS)), max_size=3, unique=True)):
        keys = draw(st.lists(st.sampled_from(SECTIONS[section] + ["nonsense"]), min_size=1, max_size=3, unique=True))
        out[section] = {k: draw(values) for k in keys}
    if draw(st.booleans()):
        out[draw(st.text(max_size=5))] = draw(values)
    return out


@SETTINGS
@given(config_tables())
def test_config_loader_gives_a_clear_error_or_finite_checked_values(data):
    try:
        cfg = load_config(overrides=data)
    except ScallopError as e:
        assert str(e) and "\n" not in str(e)
        return
    for name in SECTIONS["vision"]:
        v = getattr(cfg.vision, name)
        assert math.isfinite(v), (name, v)
    assert 0.0 <= cfg.vision.min_uro_confidence <= 1.0 and 1 <= cfg.vision.threads <= 64
    assert math.isfinite(cfg.runtime.tick_s) and 0.001 <= cfg.runtime.tick_s <= 0.5


# ---------------------------------------------------------------------------- the calibration loader
GOOD = json.loads((Path(__file__).with_name("bad_inputs") / "calibration_redo.json").read_text())
GOOD["belt"]["verdict"] = "good"
PATHS = [
    ("camera", "image_size"),
    ("intrinsics", "K"),
    ("intrinsics", "dist"),
    ("belt", "R"),
    ("belt", "t"),
    ("belt", "verdict"),
    ("encoder", "counts_per_mm"),
    ("encoder", "count_sign"),
    ("encoder", "travel_dir"),
    ("version",),
    ("format",),
    ("belt",),
]


def _matrix_like(shape):
    return st.lists(st.lists(numbers, min_size=shape[1], max_size=shape[1]), min_size=shape[0], max_size=shape[0])


@st.composite
def calibration_files(draw) -> dict:
    data = copy.deepcopy(GOOD)
    for path in draw(st.lists(st.sampled_from(PATHS), min_size=1, max_size=3)):
        new = draw(st.one_of(values, _matrix_like((3, 3)), st.lists(numbers, min_size=2, max_size=5)))
        node = data
        for k in path[:-1]:
            node = node.setdefault(k, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node[path[-1]] = new
    return data


@SETTINGS
@given(calibration_files())
def test_calibration_loader_gives_a_clear_error_or_a_usable_mapping(data):
    try:
        cal = LineCalibration.from_dict(json.loads(json.dumps(data, default=str)), path="line.json")
        cal.check(require=("intrinsics", "belt", "encoder"))
    except CalibrationError as e:
        assert str(e).startswith("line.json") and "\n" not in str(e)
        return
    except ValueError:
        # json.dumps refuses nothing here; a ValueError would be ours escaping untyped.
        raise
    w, h = cal.image_size
    xy = cal.pixel_to_belt(np.array([[(w - 1) / 2, (h - 1) / 2], [0.0, 0.0]]))
    assert np.all(np.isfinite(xy)) and cal.counts_per_mm > 0 and np.all(np.isfinite(cal.belt_shift_mm([100])))


# ---------------------------------------------------------------------------- the register codecs
MAP = RegisterMap.load("generic")
FIELDS = [MAP.field(f["name"]) for f in MAP.table()]


@SETTINGS
@given(st.sampled_from(FIELDS), st.one_of(numbers, scalars), st.sampled_from(["big", "little"]))
def test_register_encode_refuses_or_round_trips(field, value, order):
    try:
        words = field.encode(value, order)
    except RegisterValueError as e:
        assert field.name in str(e)
        return
    assert len(words) == field.size and all(0 <= w <= 0xFFFF for w in words)
    back = field.decode(words, order)
    if field.type == "float32":
        assert math.isclose(back, float(value), rel_tol=1e-6, abs_tol=1e-30 + abs(field.scale) * 1e-6)
    else:
        assert abs(back - float(value)) <= field.scale / 2 + 1e-9 * max(1.0, abs(float(value)))


@SETTINGS
@given(st.sampled_from(FIELDS), st.lists(st.one_of(st.integers(-(2**20), 2**20), numbers), max_size=3))
def test_register_decode_refuses_or_gives_a_number(field, words):
    try:
        v = field.decode(words)
    except (RegisterValueError, TypeError, ValueError, OverflowError) as e:
        # Words from a Modbus reply are ints from the library: anything else is refused as ours.
        assert isinstance(e, RegisterValueError) or not all(isinstance(w, int) for w in words)
        return
    assert isinstance(v, (int, float))


# ---------------------------------------------------------------------------- the pick planner
ARM = ArmConfig()
PLANNER = PickPlanner(ARM)


def _tracker(v: float) -> ConveyorTracker:
    tr = ConveyorTracker(0.1)
    for k in range(5):
        t = 9.6 + 0.1 * k
        tr.update(t, int(round(v * t / 0.1)))
    return tr


@SETTINGS
@given(
    x=numbers,
    y=numbers,
    pull=st.tuples(numbers, numbers),
    z=st.floats(-50, 50),
    speed=st.floats(0.0, 1000.0),
    dt=st.floats(-5.0, 5.0),
    chained=st.booleans(),
)
@example(x=math.nan, y=20.0, pull=(0.0, 1.0), z=0.0, speed=300.0, dt=0.0, chained=False)
@example(x=750.0, y=math.inf, pull=(0.0, 1.0), z=0.0, speed=300.0, dt=0.0, chained=False)
@example(x=750.0, y=0.0, pull=(math.nan, 1.0), z=0.0, speed=300.0, dt=0.0, chained=True)
@example(x=1e300, y=1e300, pull=(1e300, 1e300), z=0.0, speed=1000.0, dt=-5.0, chained=False)
def test_planner_skips_or_plans_inside_the_workspace(x, y, pull, z, speed, dt, chained):
    try:
        target = PickTarget(7, (x, y), 0, pull, z_mm=z)
    except ScallopError:
        return  # not finite: refused as data, with our type
    res = PLANNER.plan(target, _tracker(speed), 10.0 + dt, chained=chained)
    if isinstance(res, Skip):
        return
    assert isinstance(res, PickPlan)
    ws = ARM.workspace
    for wp in res.waypoints:
        assert np.all(np.isfinite(wp.xyz_mm)) and ws.contains(wp.xyz_mm), (wp.name, wp.xyz_mm)
        assert not any(box.contains(wp.xyz_mm) for box in ARM.keep_out), wp.name
