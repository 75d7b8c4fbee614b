"""The scenario bench: scenario files, the fault scripts on the whole simulated line, the
accounting of every scallop, determinism, and the report.

Runs of the line are short (30 s of virtual time, a fault at 10 s) and need a segmentation
model: the shipped one, else the preliminary ``runs/pre/model.onnx``; without either they skip.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from scallop.app.cli import main
from scallop.app.scenario import (
    FAULT_KINDS,
    ScenarioError,
    belt_stop_profile,
    deterministic_view,
    load_scenario,
    parse_scenario,
    run_scenario,
    shipped_scenarios,
    svg_bars,
    svg_hist,
    svg_lines,
    write_report,
)
from scallop.app.scenario.faults import FaultScript

REPO = Path(__file__).resolve().parents[1]


def _model() -> str | None:
    from scallop.models.runtime import default_model_path

    for p in (default_model_path(), REPO / "runs" / "pre" / "model.onnx"):
        if p.is_file():
            return str(p)
    return None


MODEL = _model()
needs_model = pytest.mark.skipif(MODEL is None, reason="no segmentation model (models/scallop-seg.onnx)")


def scenario(**spec) -> dict:
    base = {"name": "t", "duration_s": 10.0}
    return {"scenario": base | spec}


# ---------------------------------------------------------------------------- the file format
def test_every_shipped_scenario_loads_with_a_description():
    shipped = shipped_scenarios()
    want = {
        "nominal",
        "overload",
        "lighting_drift",
        "two_arms",
        "faults_arm",
        "faults_heartbeat",
        "faults_camera",
        "faults_estop",
        "belt_stop",
        "bursts",
        "faults_plc",
        "faults_gate",
        "faults_fluorescence",
        "shift_check",
    }
    assert want <= set(shipped)
    for name, path in shipped.items():
        sc = load_scenario(name)
        assert sc.name == name == path.stem
        assert sc.spec.description.strip()
        assert sc.line_config().is_simulated


def test_nominal_is_the_acceptance_scenario():
    from scallop.robot.planning import PickPlanner

    sc = load_scenario("nominal")
    cfg = sc.line_config()
    assert sc.spec.scallops == 1000 and len(cfg.arms) == 1
    assert cfg.sim.belt.speed_mm_s == 300.0
    cap = PickPlanner(cfg.arms[0]).capacity_per_s(300.0)
    assert 1 / cap == pytest.approx(1.267, abs=0.005)  # the default arm's chained cycle
    assert cfg.sim.arrivals.rate_per_s == pytest.approx(0.9 * cap)


def test_arrivals_share_counts_every_arm_and_their_motion():
    from scallop.robot.planning import PickPlanner

    sc = parse_scenario(scenario(arms=2, arrivals_share=1.5) | {"arm": {"motion": {"speed_mm_s": 700.0}}})
    cfg = sc.line_config()
    assert [a.name for a in cfg.arms] == ["arm1", "arm2"]
    assert all(a.motion.speed_mm_s == 700.0 for a in cfg.arms)
    assert cfg.arms[1].pick_window_x_mm[0] - cfg.arms[0].pick_window_x_mm[0] == pytest.approx(600.0)
    cap = sum(PickPlanner(a).capacity_per_s(300.0) for a in cfg.arms)
    slow = PickPlanner(
        dataclasses.replace(cfg.arms[0], motion=dataclasses.replace(cfg.arms[0].motion, speed_mm_s=1000.0))
    )
    assert cap < 2 * slow.capacity_per_s(300.0)  # slower moves, lower capacity
    assert cfg.sim.arrivals.rate_per_s == pytest.approx(1.5 * cap)


def test_belt_stop_becomes_a_speed_profile_with_the_right_travel():
    from scallop.sim.config import BeltConfig
    from scallop.sim.world import SpeedProfile

    sc = parse_scenario(scenario() | {"faults": [{"at_s": 4.0, "kind": "belt_stop", "duration_s": 3.0, "ramp_s": 1.0}]})
    prof = sc.line_config().sim.belt.profile
    assert [(s.duration_s, s.speed_mm_s, s.end_speed) for s in prof] == [
        (4.0, 300.0, 300.0),
        (1.0, 300.0, 0.0),
        (3.0, 0.0, 0.0),
        (1.0, 0.0, 300.0),
    ]
    sp = SpeedProfile(BeltConfig(speed_mm_s=300.0, profile=prof))
    assert sp.speed(6.0) == 0.0 and sp.speed(20.0) == 300.0
    # 4 s at 300, two 1 s ramps (150 mm each), 3 s standing: 1500 mm after 9 s.
    assert sp.travel(9.0) == pytest.approx(1500.0)
    with pytest.raises(ScenarioError, match="starts before the previous stop ended"):
        belt_stop_profile(300.0, [sc.faults[0], dataclasses.replace(sc.faults[0], at_s=5.0)])


@pytest.mark.parametrize(
    "data, message",
    [
        ({"scenario": {"name": "x", "duration_s": 5, "scallops": 10}}, "give exactly one of duration_s and scallops"),
        ({"scenario": {"name": "x", "duration_s": 5, "speed": 1}}, "scenario.speed: unknown key"),
        ({"scenario": {"name": "x", "duration_s": 5, "arms": 9}}, "scenario: arms=9 is out of range: allowed 1..8"),
        ({"scenario": {"name": "x", "duration_s": "long"}}, "scenario.duration_s='long': expected a number"),
        ({"line": {}}, "scenario: missing table [scenario]"),
        ({"scenario": {"name": "x", "duration_s": 5}, "belt": {}}, "belt: unknown table"),
        (
            {"scenario": {"name": "x", "duration_s": 5}, "faults": [{"at_s": 1, "kind": "fire"}]},
            "faults[0].kind='fire' is not allowed",
        ),
        (
            {"scenario": {"name": "x", "duration_s": 5}, "faults": [{"at_s": -1, "kind": "camera_stall"}]},
            "faults[0]: at_s=-1.0 is out of range",
        ),
        (
            {
                "scenario": {"name": "x", "duration_s": 5},
                "faults": [{"at_s": 1, "kind": "arm_disconnect", "arm": "left"}],
            },
            "faults[0].arm='left' is not an arm of this line: choose one of arm1",
        ),
        (
            {"scenario": {"name": "x", "duration_s": 5}, "line": {"sim": {"belt": {"speed_mm_s": 2000}}}},
            "line.sim.belt: speed_mm_s=2000.0 is out of range",
        ),
        (
            {"scenario": {"name": "x", "duration_s": 5}, "line": {"camera": {"source": "0"}}},
            "scenarios run on the simulator only",
        ),
        (
            {"scenario": {"name": "x", "duration_s": 5}, "arm": {"motion": {"speed_mm_s": 9000}}},
            "motion.speed_mm_s=9000.0 is out of range",
        ),
        (
            {
                "scenario": {"name": "x", "duration_s": 5},
                "faults": [{"at_s": 1, "kind": "belt_stop"}],
                "line": {"sim": {"belt": {"profile": [{"duration_s": 5, "speed_mm_s": 100}]}}},
            },
            "belt_stop cannot be combined with line.sim.belt.profile",
        ),
    ],
)
def test_bad_scenarios_name_the_key(data, message):
    with pytest.raises(ScenarioError) as e:
        parse_scenario(data, "x.toml")
    assert message in str(e.value)
    assert str(e.value).startswith("x.toml: ")


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["sim", "run", "--scenario", "no-such-scenario"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no such scenario file or shipped scenario" in err and "nominal" in err
    bad = tmp_path / "bad.toml"
    bad.write_text('[scenario]\nname = "b"\nduration_s = 5\n[[faults]]\nat_s = 1\nkind = "quake"\n')
    assert main(["sim", "run", "--scenario", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "faults[0].kind='quake' is not allowed" in err
    assert main(["sim", "run", "--scenario", "nominal", "--scallops", "5", "--duration", "3"]) == 2
    assert "not both" in capsys.readouterr().err
    # A missing model stops the run before it starts (and the simulated arms are shut down).
    assert (
        main(["sim", "run", "--scenario", "faults_arm", "--duration", "3", "--model", str(tmp_path / "none.onnx")]) == 3
    )
    err = capsys.readouterr().err.strip()
    assert err == f"scallop sim: error: {tmp_path / 'none.onnx'}: no such model file"


@pytest.mark.parametrize(
    "args, message",
    [
        # numpy's seeding refuses a negative seed: a usage error, not an internal one.
        (["--seed", "-1"], "--seed=-1 is out of range: allowed 0..4294967295"),
        (["--seed", "4294967296"], "--seed=4294967296 is out of range: allowed 0..4294967295"),
        (["--scallops", "0"], "--scallops=0 is out of range: allowed 1..1000000"),
        (["--scallops", "1000001"], "--scallops=1000001 is out of range: allowed 1..1000000"),
        (["--duration", "nan"], "--duration=nan is not a finite number: allowed more than 0, up to 86400 s"),
        (["--duration", "inf"], "--duration=inf is not a finite number: allowed more than 0, up to 86400 s"),
        (["--duration", "0"], "--duration=0.0 is out of range: allowed more than 0, up to 86400 s"),
    ],
)
def test_sim_run_refuses_out_of_range_options_naming_them(capsys, args, message):
    assert main(["sim", "run", "--scenario", "nominal", "--quiet", *args]) == 2
    assert capsys.readouterr().err.strip() == f"scallop sim: error: {message}"


def test_a_scenario_files_negative_seed_is_refused_naming_the_key(tmp_path, capsys):
    bad = tmp_path / "seed.toml"
    bad.write_text('[scenario]\nname = "s"\nseed = -3\nscallops = 2\n')
    assert main(["sim", "run", "--scenario", str(bad), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"scallop sim: error: {bad}: scenario: seed=-3 is out of range: allowed 0..4294967295"


def test_sim_list_shows_each_scenario_with_its_description(capsys):
    assert main(["sim", "list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = [ln.split()[0] for ln in lines]
    assert names == sorted(shipped_scenarios())
    nominal = next(ln for ln in lines if ln.startswith("nominal "))
    assert load_scenario("nominal").spec.description in nominal
    assert main(["sim", "list", "--json"]) == 0
    rows = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert {r["name"] for r in rows} == set(names) and all(Path(r["file"]).is_file() for r in rows)


# ---------------------------------------------------------------------------- plots
def test_svg_plots_are_well_formed_and_scaled():
    svg = svg_lines([0, 10, 20], {"a": [0, 5, 10], "b": [1, 1, 1]}, hline=(8, "cap"), vlines=[(10, "fault")])
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    lines = root.findall(f"{ns}polyline")
    assert len(lines) == 2
    pts = [tuple(map(float, p.split(","))) for p in lines[0].get("points").split()]
    assert pts[0][0] < pts[1][0] < pts[2][0] and pts[0][1] > pts[1][1] > pts[2][1]  # rising series goes up
    bars = ET.fromstring(svg_bars([("picked:uro_removed", 90), ("skipped:no_uro", 9)]))
    widths = [float(r.get("width")) for r in bars.findall(f"{ns}rect")]
    assert widths[0] == pytest.approx(10 * widths[1])
    h = ET.fromstring(svg_hist([1.0] * 10 + [2.0] * 5, bins=10))
    heights = [float(r.get("height")) for r in h.findall(f"{ns}rect")]
    assert len(heights) == 10 and max(heights) == pytest.approx(2 * heights[-1])


# ---------------------------------------------------------------------------- runs of the line
def short(name: str, at_s: float = 10.0) -> object:
    sc = load_scenario(name)
    return dataclasses.replace(sc, faults=[dataclasses.replace(f, at_s=at_s) for f in sc.faults])


def assert_accounted(s: dict) -> None:
    """Every scallop that went past the arms has exactly one outcome; no pick ran twice."""
    c = s["checks"]
    assert s["processed"] > 5
    assert sum(s["outcomes"].values()) == s["processed"]
    assert c["accounted"] and c["undecided"] == 0 and c["line_open_after_stop"] == 0
    assert c["duplicate_seqs"] == 0 and c["duplicate_target_picks"] == 0 and c["scallops_picked_twice"] == 0
    allowed = ("picked:", "skipped:", "failed:", "vision_missed", "line_", "not_imaged")
    assert all(k.startswith(allowed) for k in s["outcomes"]), s["outcomes"]
    assert s["missed"] + s["uro_removed"] == s["with_uro"] <= s["processed"]
    assert s["picks"] == sum(s["picks_by_grade"].values())
    assert s["complete"] and not s["errors"], (s["crash"], s["errors"])
    # Every scallop ends in a known place, and none leaves the belt with its uro undiverted.
    assert sum(s["dispositions"].values()) == s["processed"] and c["dispositions_reconcile"]
    assert s["uro_escaped"] == 0, s["uro_escaped_ids"]
    line = s["line"]["dispositions"]
    assert line["not_diverted"] == 0 and sum(line.values()) >= sum(s["outcomes"].values()) - s["outcomes"].get(
        "not_imaged", 0
    ) - sum(v for k, v in s["outcomes"].items() if k.startswith(("line_", "vision_missed")))


def picks_after(s: dict, t: float) -> int:
    ts = s["time_series"]
    return sum(p for t0, p in zip(ts["t_s"], ts["picks_per_min"]) if t0 >= t)


@needs_model
@pytest.mark.timeout(300)
def test_arm_disconnect_and_return_same_seed_same_numbers():
    a = run_scenario(short("faults_arm"), model=MODEL, duration_s=30.0)
    assert_accounted(a)
    events = [e["event"] for e in a["fault_log"]]
    assert events == ["faults[0] arm1 server down", "faults[0] arm1 server back", "faults[0] operator resets arm1"]
    # The pick cut by the arm's watchdog and the scallops that went by meanwhile are skipped
    # with the arm's reason, and the arm picks again once reset.
    lost = {k: v for k, v in a["skipped"].items() if k in ("arm_aborted", "arm_unavailable", "no_capacity")}
    assert sum(lost.values()) >= 1, a["skipped"]
    assert picks_after(a, 17.0) > 0
    b = run_scenario(short("faults_arm"), model=MODEL, duration_s=30.0)
    assert deterministic_view(a) == deterministic_view(b)
    assert a["realtime_factor"] > 0 and "realtime_factor" not in deterministic_view(a)


@needs_model
@pytest.mark.timeout(300)
def test_a_pick_cut_by_the_arm_leaving_the_network_is_diverted_before_its_outcome_is_known():
    """At 40 s the arm drops off the network mid-pick (seed 11): its watchdog aborts the pick, and
    the line hears of it only when the arm is back, 5 s later, after the scallop passed the gate.
    It was let go ("not diverted", alarmed); now the gate diverts it as it nears, unresolved."""
    s = run_scenario(short("faults_arm", at_s=40.0), model=MODEL, duration_s=50.0)
    assert_accounted(s)
    assert s["outcomes"]["failed:arm_aborted"] == 1
    line = s["line"]
    assert line["unresolved_diverted"] == 1 and line["dispositions"]["not_diverted"] == 0
    assert s["uro_escaped"] == 0


@needs_model
@pytest.mark.timeout(300)
def test_heartbeat_stall_holds_new_picks_until_it_is_back():
    # Run by count: the run ends when the 15th scallop has gone past the arm.
    s = run_scenario(short("faults_heartbeat"), model=MODEL, scallops=15)
    assert_accounted(s)
    assert s["processed"] == s["scallops_target"] == 15
    assert 20.0 < s["duration_s"] < 45.0
    assert [e["t"] for e in s["fault_log"]] == pytest.approx([10.0, 14.0], abs=0.05)
    assert picks_after(s, 15.0) > 0


@needs_model
@pytest.mark.timeout(300)
def test_camera_drops_and_stall_leave_scallops_not_imaged_but_counted(tmp_path):
    s = run_scenario(short("faults_camera"), tmp_path, model=MODEL, duration_s=30.0)
    assert_accounted(s)
    # 6 frames lost and a 3 s stall at 300 mm/s: about 2 m of belt never imaged.
    assert s["frames"] < 30.0 * 300.0 / 183.0 - 8
    assert s["outcomes"].get("not_imaged", 0) >= 1
    write_report(s, tmp_path)
    public = json.loads((tmp_path / "summary.json").read_text())
    for key in (
        "processed",
        "uro_removed",
        "missed",
        "adductor_hits",
        "skipped",
        "throughput_per_min",
        "arm_utilisation",
        "latency_ms",
        "realtime_factor",
        "seed",
        "duration_s",
        "capacity",
    ):
        assert key in public, key
    assert set(public["latency_ms"]["inference"]) == {"p50", "p90", "p99", "max", "n"}
    assert public["arm_utilisation"]["arm1"] > 0
    page = (tmp_path / "index.html").read_text()
    assert page.count("<svg") >= 4 and "http" not in page.replace("http://www.w3.org/2000/svg", "")
    for f in public["failure_frames"]:
        assert (tmp_path / f["file"]).stat().st_size > 1000 and f["file"] in page
    assert (tmp_path / "record" / "record.sqlite").is_file()


@needs_model
@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["camera_drop", "camera_stall"])
def test_camera_faults_leave_the_arms_served(kind):
    from scallop.app.scenario import FaultSpec

    fault = FaultSpec(at_s=8.0, kind=kind, frames=6, duration_s=3.0)
    sc = dataclasses.replace(load_scenario("faults_camera"), faults=[fault])
    s = run_scenario(sc, model=MODEL, duration_s=24.0)
    assert_accounted(s)
    # The arms are served through the outage (no watchdog fault), so picking goes on; at most
    # a scallop first seen just after the gap comes too late for the arm.
    assert picks_after(s, 15.0) > 0 and s["skipped"].get("no_capacity", 0) <= 1, s["outcomes"]


@needs_model
@pytest.mark.timeout(300)
def test_estop_and_restart_recovers_and_loses_nothing():
    s = run_scenario(short("faults_estop"), model=MODEL, duration_s=30.0)
    assert_accounted(s)
    assert s["frames_by_line_state"].get("estop", 0) >= 5
    assert [e["t"] for e in s["fault_log"]] == pytest.approx([10.0, 15.0, 16.0], abs=0.05)
    assert picks_after(s, 17.0) > 0  # the arm came out of ESTOP with the line


@needs_model
@pytest.mark.timeout(300)
def test_belt_stop_stops_the_flow_and_it_resumes():
    s = run_scenario(short("belt_stop"), model=MODEL, duration_s=30.0)
    assert_accounted(s)
    speeds = s["time_series"]["belt_speed_mm_s"]
    assert min(speeds) == 0.0 and speeds[-1] == 300.0
    assert picks_after(s, 22.0) > 0
    assert s["uro_escaped"] == 0 and "vision_missed" not in s["outcomes"], s["outcomes"]


@needs_model
@pytest.mark.timeout(300)
def test_plc_lost_holds_picks_and_its_safe_state_diverts_every_unpicked_uro():
    s = run_scenario(short("faults_plc"), model=MODEL, duration_s=30.0)
    assert_accounted(s)
    assert [e["event"] for e in s["fault_log"]] == [
        "faults[0] line PLC server down",
        "faults[0] line PLC server back",
        "faults[0] operator checks the rework lane",
    ]
    assert s["dispositions"]["diverted"] > 0 and picks_after(s, 17.0) > 0


@pytest.mark.timeout(300)
def test_a_lost_fluorescence_channel_holds_the_line_until_it_is_back_and_loses_no_uro():
    s = run_scenario(short("faults_fluorescence"), duration_s=30.0)
    assert_accounted(s)
    assert [e["event"] for e in s["fault_log"]] == ["faults[0] fluorescence_drop 15"]
    ch = s["channel"]
    # The 15 frames and the first (exposed before the PLC lifted its safe state, UV off).
    assert ch["dropped"] == {"missing": 16} and not ch["lost"] and ch["dropped_in_a_row"] == 0
    # The model cannot vouch for a frame without its partner: the line waits instead of
    # analysing it, then goes on by itself.
    assert s["frames_by_line_state"].get("waiting_camera", 0) >= 10
    assert s["uro_escaped"] == 0 and picks_after(s, 16.0) > 0


def test_two_faults_of_one_kind_at_once_are_refused_and_one_ending_as_the_next_begins_does_not_undo_it():
    # An outside try: a 1.02 move inside a 1.06 one set the camera back to 1 at its end, while
    # the log and the report said 1.06 held.
    scale = {"kind": "camera_scale", "scale": 1.06, "at_s": 25.0, "duration_s": 30.0}
    with pytest.raises(ScenarioError, match=r"faults\[1\]: camera_scale from 28 to 33 s overlaps faults\[0\]"):
        parse_scenario(scenario() | {"faults": [scale, scale | {"scale": 1.02, "at_s": 28.0, "duration_s": 5.0}]})
    arm = {"kind": "arm_disconnect", "at_s": 5.0, "duration_s": 5.0}
    with pytest.raises(ScenarioError, match=r"one arm_disconnect at a time"):
        parse_scenario(scenario() | {"faults": [arm, arm | {"at_s": 8.0, "arm": "arm1"}]})
    # The operator's reset after an e-stop is part of it: a second e-stop before it is refused.
    estop = {"kind": "estop_restart", "at_s": 10.0, "duration_s": 5.0, "reset_after_s": 3.0}
    with pytest.raises(
        ScenarioError, match=r"faults\[1\]: estop_restart from 16 to 22 s overlaps .*its reset included"
    ):
        parse_scenario(scenario() | {"faults": [estop, estop | {"at_s": 16.0, "reset_after_s": 1.0}]})
    parse_scenario(scenario() | {"faults": [estop, estop | {"at_s": 18.0}]})
    # Touching: the earlier one's end runs first at 35 s, then the later one's start.
    later = scale | {"scale": 0.94, "at_s": 35.0, "duration_s": 5.0}
    sc = parse_scenario(scenario() | {"faults": [later, scale | {"duration_s": 10.0}]})
    camera = types.SimpleNamespace(rescale=lambda v: seen.append(v))
    seen: list[float] = []
    line = types.SimpleNamespace(backend=types.SimpleNamespace(camera=camera), config=None)
    script = FaultScript(line, sc.faults, 0.0)
    for t in (25.0, 35.0, 40.0):
        script.tick(t)
    assert seen == [1.06, 1.0, 0.94, 1.0]


def test_a_fault_refuses_the_keys_of_other_kinds_and_a_channel_fault_needs_the_channel():
    with pytest.raises(ScenarioError, match=r"faults\[0\]\.duration_s: a fluorescence_drop fault does not read it"):
        parse_scenario(scenario() | {"faults": [{"at_s": 4.0, "kind": "fluorescence_drop", "duration_s": 9.0}]})
    with pytest.raises(ScenarioError, match=r"faults\[0\]\.arm: a camera_drop fault does not read it"):
        parse_scenario(scenario() | {"faults": [{"at_s": 4.0, "kind": "camera_drop", "arm": "arm1"}]})
    with pytest.raises(
        ScenarioError, match=r"^x\.toml: faults\[0\]: fluorescence_drop needs \[line.camera.fluorescence\]"
    ):
        parse_scenario(scenario() | {"faults": [{"at_s": 4.0, "kind": "fluorescence_drop", "frames": 3}]}, "x.toml")


def test_a_fluorescence_drop_needs_a_line_with_the_channel():
    from scallop.app.scenario.spec import FaultSpec

    sc = dataclasses.replace(load_scenario("faults_camera"), faults=[FaultSpec(at_s=1.0, kind="fluorescence_drop")])
    with pytest.raises(ScenarioError, match=r"faults\[0\]: fluorescence_drop needs \[line.camera.fluorescence\]"):
        run_scenario(sc, duration_s=2.0)


@needs_model
@pytest.mark.timeout(300)
def test_a_jammed_gate_names_every_scallop_it_let_through():
    sc = short("faults_gate")
    # Overloaded (150 % of the arm), so scallops need diverting while the gate is jammed.
    sc = dataclasses.replace(sc, spec=dataclasses.replace(sc.spec, arrivals_share=1.5))
    s = run_scenario(sc, model=MODEL, duration_s=30.0)
    c = s["checks"]
    assert c["accounted"] and c["dispositions_reconcile"] and s["complete"] and not s["errors"]
    line = s["line"]
    # A gate that does not move cannot divert: each scallop that may have gone on with its uro
    # is a critical alarm naming it (not diverted, or its divert unconfirmed), never silence.
    assert s["uro_escaped"] <= line["dispositions"]["not_diverted"] + line["diverts_unconfirmed"]
    assert line["dispositions"]["not_diverted"] + line["diverts_unconfirmed"] > 0
    assert s["checks"]["escaped_unalarmed"] == 0
    assert picks_after(s, 20.0) > 0


@needs_model
@pytest.mark.timeout(300)
def test_a_fast_belt_brings_its_scallops_to_the_gate():
    # The simulator's gate stands 1.5 s of travel past the arms: the world keeps its scallops
    # until past it (a 500 mm/s belt once had none reach the gate: nothing processed, exit 0).
    s = run_scenario(load_scenario("fast_belt"), model=MODEL, duration_s=20.0)
    assert s["processed"] > 10 and s["checks"]["accounted"]


@needs_model
@pytest.mark.timeout(300)
def test_without_a_gate_what_passed_the_camera_unseen_is_one_alarm():
    """No gate: a camera that stalls lets scallops go on unseen, and nobody can name them: one
    critical alarm says from when (an outside try saw them leave with their uro in silence)."""
    from scallop.app.scenario.spec import FaultSpec

    sc = load_scenario("faults_gate")
    plc = {"gate_fitted": False, "gate_x_mm": 1450.0, "gate_lead_mm": 40.0, "gate_open_ms": 400}
    plc |= {"heartbeat_timeout_s": 1.0, "watchdog_ms": 1000}
    sc = dataclasses.replace(
        sc, line={**sc.line, "plc": plc}, faults=[FaultSpec(at_s=9.0, kind="camera_stall", duration_s=3.0)]
    )
    s = run_scenario(sc, model=MODEL, duration_s=30.0)
    blind = [a for a in s["alarms"] if a["alarm"] == "plc.blind_no_gate"]
    assert len(blind) == 1 and blind[0]["severity"] == "critical" and 9.0 < blind[0]["from_s"] < 12.0, blind
    assert s["line"]["blind_no_gate"] == 1 and s["checks"]["escaped_unalarmed"] == 0
    assert s["line"]["all_to_rework"]["spells"] >= 1  # told in the record, not on the screen (no gate)


@needs_model
@pytest.mark.timeout(300)
def test_a_gate_that_jams_while_held_open_says_what_went_on_after_it():
    """The camera stalls (every scallop to rework through the held-open gate) and the gate jams
    meanwhile: the line knows none of those scallops one by one, so a critical alarm says that
    what reached the gate from its last good poll on went on (an outside try saw uros escape in
    silence: the PLC only faulted when a single divert came due)."""
    from scallop.app.scenario.spec import FaultSpec

    sc = load_scenario("faults_gate")
    faults = [
        FaultSpec(at_s=8.0, kind="camera_stall", duration_s=10.0),
        FaultSpec(at_s=10.0, kind="gate_jam", duration_s=6.0, reset_after_s=1.0),
    ]
    s = run_scenario(dataclasses.replace(sc, faults=faults), model=MODEL, duration_s=30.0)
    assert s["checks"]["accounted"] and s["checks"]["dispositions_reconcile"] and not s["errors"]
    failed = [a for a in s["alarms"] if a["alarm"] == "plc.held_open_failed"]
    assert len(failed) == 1 and failed[0]["severity"] == "critical" and 10.0 <= failed[0]["from_s"] <= 10.2, failed
    assert s["line"]["held_open_failed"] == 1
    # Whatever escaped, escaped while that alarm stood or was named scallop by scallop.
    assert s["uro_escaped"] > 0 and s["checks"]["escaped_unalarmed"] == 0, (s["uro_escaped_ids"], s["alarms"])
    assert all(failed[0]["from_s"] - 0.3 <= t for t in s["uro_escaped_times"]), s["uro_escaped_times"]


@needs_model
@pytest.mark.timeout(300)
def test_the_shift_check_passes_with_its_test_pieces_before_production():
    s = run_scenario(load_scenario("shift_check"), model=MODEL, duration_s=40.0)
    assert_accounted(s)
    c = s["shift_check"]
    assert c["state"] == "passed" and c["user"] == "scenario", c
    assert sorted(c["result"]["pieces"]) == ["passed", "passed", "picked", "picked", "picked"]
    assert s["checks"]["dispositions_reconcile"] and s["uro_escaped"] == 0
    assert s["processed"] > 5  # production followed the check


@pytest.mark.timeout(300)
def test_the_fluorescence_scenario_runs_the_channel_and_sets_the_same_scallops_without_it_beside(tmp_path):
    notes = []
    s = run_scenario(
        load_scenario("fluorescence"), tmp_path, scallops=25, progress=lambda done, note: notes.append(note)
    )
    assert_accounted(s)
    assert s["model"] == "(shipped, colour and fluorescence)"
    # The second run's progress says it is that one (its counts start from 0 again).
    assert notes and not notes[0].startswith("colour only: ") and notes[-1].startswith("colour only: t=")
    ch = s["channel"]
    # The first frame comes before the PLC leaves its safe state (UV off): no pair.
    assert ch["setup"] == "alternate" and ch["pairs"] > 20 and ch["dropped"] == {"missing": 1}
    other = s["without_channel"]
    assert other["model"] == "(shipped, colour only)" and other["processed"] == s["processed"] == 25
    assert other["with_uro"] == s["with_uro"]  # the same scallops
    # The text summary gives both halves the same figures, the scallops diverted among them.
    from scallop.app.commands.sim_run import format_summary

    halves = [ln for ln in format_summary(s).splitlines() if ln.strip().startswith(("with the channel", "without"))]
    assert len(halves) == 2 and all(", diverted " in ln for ln in halves), halves
    write_report(s, tmp_path)
    page = (tmp_path / "index.html").read_text()
    assert "The same scenario and seed with and without the fluorescence channel" in page
    # How many scallops each run saw, first: a run that held its infeed sees fewer.
    assert "<tr><td>scallops past the arms</td><td>25</td><td>25</td></tr>" in page
    assert "with the channel (colour and fluorescence)" in page and "picks into meat" in page
    # The pairs, and why frames had none, on the page as in the summary.
    assert "Fluorescence channel (alternate strobed frames)" in page and "frame pairs analysed" in page
    assert "frames without a good pair" in page and "(no fluorescence frame 1)" in page
    assert "the shipped model, colour and fluorescence" in page
    write_report(s, tmp_path, language="ja")
    page = (tmp_path / "index.html").read_text()
    assert (
        "標準モデル（カラー＋蛍光）" in page and "(shipped" not in page and "蛍光チャンネル（交互ストロボ撮影）" in page
    )


@pytest.mark.timeout(300)
def test_a_knocked_fluorescence_camera_holds_the_line_until_it_is_set_back_and_loses_no_uro():
    """The glow moved 5 mm off the uros, pairs still coming and bright: only the registration
    check can see it. The line waits (the gate diverts) and goes on once it is set back."""
    s = run_scenario(load_scenario("faults_fluorescence_shift"), duration_s=90.0)
    assert_accounted(s)
    assert [e["event"] for e in s["fault_log"]] == [
        "faults[0] fluorescence_shift 5 mm",
        "faults[0] fluorescence_shift back",
    ]
    ch = s["channel"]
    assert ch["setup"] == "second_camera" and not ch["misregistered"] and not ch["lost"] and ch["dropped"] == {}
    assert np.hypot(*ch["registration_offset_mm"]) < 0.5  # back on the uros
    # Waiting: from a few frames after the knock until a few after it is set back.
    assert s["frames_by_line_state"].get("waiting_camera", 0) >= 30
    assert s["uro_escaped"] == 0 and s["dispositions"]["passed"] == 0 and s["adductor_hits"] == 0
    assert picks_after(s, 15.0) > 0 and picks_after(s, 70.0) > 0


@pytest.mark.timeout(300)
def test_a_camera_moved_off_its_calibrated_scale_holds_the_line_until_it_is_set_back(tmp_path):
    """6 % nearer the belt: every frame pair still agrees with the counts within the per-frame
    tolerance, so only the belt check's scale sees it. Before it does, a few picks land beside
    their uros (failed, diverted); none on an adductor, and none after."""
    s = run_scenario(load_scenario("faults_camera_scale"), duration_s=90.0, report_dir=tmp_path)
    assert_accounted(s)
    assert [e["event"] for e in s["fault_log"]] == ["faults[0] camera_scale 1.06", "faults[0] camera_scale back"]
    assert s["frames_by_line_state"].get("waiting_camera", 0) >= 20
    assert s["outcomes"].get("skipped:encoder_fault", 0) >= 1 and s["outcomes"].get("line_waiting_camera", 0) >= 5
    assert s["adductor_hits"] == 0 and s["uro_escaped"] == 0
    # Every uro left on went to rework through the gate: missed, but none let go.
    assert s["missed"] > 0 and s["uro_to_rework"] == s["missed"]
    assert picks_after(s, 70.0) > 0  # back by itself, the feeder having run while it waited
    # The report says what the line saw: the alarm, from after the move to after the set-back.
    (scale,) = [a for a in s["alarms"] if a["alarm"] == "encoder.scale"]
    assert scale["severity"] == "critical" and 30.0 < scale["from_s"] < 60.0 < scale["to_s"] < 90.0
    assert "farther than the encoder counts" in scale["text"] and "since the start of this run" in scale["text"]
    # The record is stamped on the run's own (virtual) time: its rows span the 90 s, not the
    # few seconds the run took, so a day's report reads the line's rates.
    con = sqlite3.connect(tmp_path / "record" / "record.sqlite")
    first, last, n = con.execute("SELECT min(time), max(time), count(*) FROM scallops").fetchone()
    (raised,) = con.execute("SELECT time FROM alarms WHERE text LIKE 'camera sees the belt move%'").fetchone()
    (started,) = con.execute("SELECT started FROM runs").fetchone()
    con.close()
    assert n > 30 and last - first > 60.0 and raised - started == pytest.approx(scale["from_s"], abs=1.0)


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ({"kind": "camera_scale", "at_s": 4.0}, r"scale is required for a camera_scale"),
        ({"kind": "camera_scale", "at_s": 4.0, "scale": 1.5}, r"scale=1\.5 is out of range"),
        ({"kind": "camera_scale", "at_s": 4.0, "scale": 1.0}, r"scale=1 is not allowed"),
        ({"kind": "camera_scale", "at_s": 4.0, "scale": "1.06"}, r"scale='1\.06': expected a number: allowed 0\.8"),
        ({"kind": "camera_scale", "at_s": 4.0, "scale": 1.05, "frames": 3}, r"frames: a camera_scale"),
        (
            {"kind": "fluorescence_shift", "at_s": 4.0, "duration_s": 9.0},
            r"shift_mm is required for a fluorescence_shift",
        ),
        ({"kind": "fluorescence_shift", "at_s": 4.0, "shift_mm": 500.0}, r"shift_mm=500\.0 is out of range"),
        (
            {"kind": "fluorescence_shift", "at_s": 4.0, "shift_mm": 0.0},
            r"shift_mm=0 is not allowed: a fluorescence_shift moves",
        ),
        ({"kind": "fluorescence_shift", "at_s": 4.0, "shift_mm": 5.0, "frames": 3}, r"frames: a fluorescence_shift"),
    ],
)
def test_a_camera_scale_and_a_fluorescence_shift_are_checked(fault, words):
    with pytest.raises(ScenarioError, match=words):
        parse_scenario(scenario() | {"faults": [fault]})


def test_a_fluorescence_shift_needs_a_line_with_the_channel():
    from scallop.app.scenario.spec import FaultSpec

    sc = dataclasses.replace(
        load_scenario("faults_camera"), faults=[FaultSpec(at_s=1.0, kind="fluorescence_shift", shift_mm=5.0)]
    )
    with pytest.raises(
        ScenarioError, match=r"fluorescence_shift needs .*\[line.sim.fluorescence\] \(a channel to move\)"
    ):
        run_scenario(sc, duration_s=2.0)


def test_every_fault_kind_has_a_shipped_scenario():
    kinds = {f.kind for name in shipped_scenarios() for f in load_scenario(name).faults}
    assert kinds == set(FAULT_KINDS)


# ---------------------------------------------------------------------------- the report's words and figures
def _summary(**kw) -> dict:
    s = {
        "scenario": "nominal",
        "description": "One arm, belt 300 mm/s, arrivals at 90 % of the arm's capacity, 1000 scallops",
        "seed": 1,
        "model": "(shipped)",
        "arms": ["arm1"],
        "belt_speed_mm_s": 300.0,
        "arrivals_rate_per_min": 45.0,
        "complete": True,
        "scallops_target": 100,
        "capacity": {"total_per_min": 50.0},
        "time_series": {
            "t_s": [0.0, 5.0],
            "arrivals_per_min": [40.0, 44.0],
            "picks_per_min": [36.0, 42.0],
            "uro_removed_per_min": [36.0, 41.0],
            "skipped_per_min": [4.0, 2.0],
            "belt_speed_mm_s": [300.0, 300.0],
        },
        "faults": [{"at_s": 40.0, "kind": "arm_disconnect", "duration_s": 5.0, "frames": 0, "arm": ""}],
        "fault_log": [{"t": 40.0, "event": "faults[0] arm1 server down"}],
        "outcomes": {"picked:uro_removed": 90, "skipped:no_uro": 8, "line_estop": 2},
        "skipped": {"no_uro": 8},
        "latency_ms": {"inference": {"p50": 11.0, "p90": 14.0, "p99": 19.0, "max": 25.0, "n": 1200}},
        "_latency_values": {"inference": [10.0, 11.0, 12.0, 19.0]},
        "failure_frames": [],
        "processed": 100,
        "with_uro": 92,
        "uro_removed": 90,
        "uro_removal_rate": None,
        "missed": 2,
        "adductor_hits": 0,
        "throughput_per_min": 41.5,
        "duration_s": 150.0,
        "realtime_factor": 3.2,
        "checks": {"accounted": True},
        "arm_utilisation": {"arm1": 0.62},
        "errors": [],
        "crash": None,
        "line": {"missed": 0},
    }
    s.update(kw)
    return s


def test_the_report_names_its_run_and_both_missed_counts():
    from scallop.app.scenario import render_html

    page = render_html(_summary(), "en")
    assert "this run: 100 scallops past the arms" in page  # the description says 1000: the scenario's default
    assert "<b>2</b><span>uro left on (truth)</span>" in page
    assert "<b>0</b><span>uro left after pick (screen)</span>" in page
    assert "<b>–</b><span>removal rate</span>" in page  # unknown, never 0 %
    assert render_html(_summary(scallops_target=None), "en").count("this run: 150.0 s of virtual time") == 1


def test_the_report_in_japanese_has_no_english_words_of_its_own():
    from scallop.app import i18n
    from scallop.app.scenario import render_html

    alarm = {
        "alarm": "encoder.scale",
        "severity": "critical",
        "text": "camera sees the belt move +5.9 %",
        "params": {"detail": "camera sees the belt move +5.9 %"},
        "from_s": 47.5,
        "to_s": 71.3,
    }
    page = render_html(_summary(alarms=[alarm, alarm | {"alarm": "", "to_s": None}]), "ja")
    assert '<html lang="ja">' in page and "シナリオ nominal" in page
    assert "<li>47.5〜71.3 秒、重大：カメラとベルトのカウンタで、ベルトの進んだ距離が合いません。" in page
    assert "<li>47.5 秒から終わりまで、重大：camera sees the belt move +5.9 %</li>" in page  # no words of its own
    assert "<b>不明</b><span>ウロ除去率</span>" in page and "ウロ残り（実際）" in page
    assert "ラインが非常停止の間だけ見えた" in page and "ピック: ウロ除去" in page
    assert "アーム （最初） が 5 秒切断" in page
    ja, en = i18n.catalogue("ja"), i18n.catalogue("en")
    # (The scenario's description is the plant's own text: data, not the report's words.)
    english = [v for k, v in en.items() if k.startswith("report.") and v != ja[k] and "{" not in v and f">{v}<" in page]
    assert not english, english


def test_a_short_last_bin_joins_the_one_before():
    from scallop.app.scenario.run import bin_edges

    edges = bin_edges(0.0, 60.002, 5.0)
    assert len(edges) == 13 and edges[-2] == 55.0 and edges[-1] == 60.002  # not a 2 ms bin
    assert bin_edges(0.0, 62.6, 5.0)[-2:] == [60.0, 62.6]  # a tail over half a bin keeps its own
    assert bin_edges(0.0, 3.0, 5.0) == [0.0, 3.0]


def test_the_fault_log_reads_in_the_reports_language_and_unreached_faults_say_so():
    from scallop.app.scenario import render_html

    log = [
        {"t": 40.0, "event": "faults[0] arm1 server down", "fault": 0, "action": "arm_down", "params": {"arm": "arm1"}},
        {"t": 45.0, "event": "faults[0] arm1 server back", "fault": 0, "action": "arm_back", "params": {"arm": "arm1"}},
    ]
    faults = [
        {"at_s": 40.0, "kind": "arm_disconnect", "duration_s": 5.0, "frames": 0, "arm": "arm1"},
        {"at_s": 400.0, "kind": "camera_drop", "duration_s": 0.0, "frames": 3, "arm": ""},
    ]
    en = render_html(_summary(fault_log=log, faults=faults), "en")
    assert "<li>40 s, fault 1: arm arm1 goes off the network</li>" in en
    assert "<li>45 s, fault 1: arm arm1 is back on the network</li>" in en
    assert "faults[0]" not in en  # the log's own words stay in the summary, not in the report
    assert "400 s: camera drops 3 frames (not reached: the run ended first)" in en
    assert "40 s: arm arm1 disconnected for 5 s</li>" in en  # reached: no note
    ja = render_html(_summary(fault_log=log, faults=faults), "ja")
    assert "<li>40 秒、故障 1: アーム arm1 がネットワークから切断</li>" in ja and "(未到達: その前に運転が終了)" in ja
    # The first arm ("" in a scenario) is named as the fault list names it; an action the
    # catalogue does not know falls back to the log's own words.
    first = [{"t": 1.0, "event": "faults[0]  server down", "fault": 0, "action": "arm_down", "params": {"arm": ""}}]
    assert "fault 1: arm (first) goes off the network" in render_html(_summary(fault_log=first), "en")
    other = [{"t": 2.0, "event": "faults[0] something new", "fault": 0, "action": "new_thing", "params": {}}]
    assert "<li>2 s: faults[0] something new</li>" in render_html(_summary(fault_log=other), "en")
    # A summary written before the log had its words (no "action") still renders, in the log's own.
    assert "<li>40 s: faults[0] arm1 server down</li>" in render_html(_summary(), "en")


@pytest.mark.timeout(300)
def test_scallops_riding_where_a_second_camera_does_not_see_go_to_rework_never_on_as_clean(tmp_path):
    """A second camera that misses a band of the belt along its length: the scallops riding
    there are never seen by it, and the four-channel model, given no glow there, can call a
    scallop with a uro clean. Those it finds without a uro are diverted as outside_channel;
    the rest are decided as usual, and the channel is not taken for dark for want of glow
    where it cannot see."""
    sc = load_scenario("fluorescence")
    line = dict(sc.line)
    # 768 x 576 mm seen, shifted 250 mm across the belt: of the colour view's 360 mm, a band of
    # 142 mm along one edge is not seen (61 % of the frame is).
    line["sim"] = line["sim"] | {
        "product": line["sim"]["product"] | {"no_uro_share": 0.3},
        "fluorescence": {
            "setup": "second_camera",
            "exposure_ratio": 2.5,
            "noise_sigma": 4.0,
            "width": 1280,
            "height": 960,
            "mm_per_px": 0.6,
            "center_x_mm": 0.0,
            "center_y_mm": 250.0,
        },
    }
    line["camera"] = line["camera"] | {
        "fluorescence": {
            "setup": "second_camera",
            "source": "sim",
            "max_pair_ms": 2.0,
            "alarm_after": 5,
            "register_height_mm": 0.0,
        }
    }
    sc = dataclasses.replace(sc, line=line, spec=dataclasses.replace(sc.spec, compare_without_channel=False))
    s = run_scenario(sc, tmp_path, scallops=80)
    assert_accounted(s)
    ch = s["channel"]
    assert ch["setup"] == "second_camera" and not ch["dark"] and not ch["lost"]
    out = s["outcomes"]
    assert out.get("skipped:outside_channel", 0) >= 5
    assert s["uro_escaped"] == 0
