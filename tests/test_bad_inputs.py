"""The bad-input corpus (tests/bad_inputs/cases.toml): every bad file and command line gives
its one-line error and exit code, never a traceback; and the faults behind the line's own
inputs (the engineer panel, vision failing on every frame, a REDO calibration used by
override) are said in plain words."""

from __future__ import annotations

import json
import math
import shlex
import tomllib
from pathlib import Path

import cv2
import numpy as np
import pytest

from scallop.app.build import build_line
from scallop.app.cli import main
from scallop.app.config import load_config
from scallop.errors import ConfigError
from scallop.sim.clock import VirtualClock

CORPUS = Path(__file__).with_name("bad_inputs")
CASES = tomllib.loads((CORPUS / "cases.toml").read_text())["case"]


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """The corpus files too big or too derived to keep in the repository."""
    import onnx
    from PIL import Image

    from scallop.models.runtime import default_model_path

    d = tmp_path_factory.mktemp("made")
    cv2.imwrite(str(d / "frame.png"), np.full((720, 1280, 3), 90, np.uint8))
    Image.new("1", (20000, 20000)).save(d / "huge.png", optimize=True)  # 49 KB on disk, 1.2 GB decoded
    (d / "a-file").write_text("a file where the record's folder should be")
    for name, inp, dims in (("crops96", 1, {2: 96, 3: 96}), ("frame64", 0, {2: 64, 3: 64})):
        m = onnx.load(str(default_model_path()))
        for k, v in dims.items():
            m.graph.input[inp].type.tensor_type.shape.dim[k].dim_value = v
        onnx.save(m, str(d / f"{name}.onnx"))
    return d


@pytest.mark.parametrize("case", CASES, ids=[c["argv"].split(" {")[0][:60] for c in CASES])
def test_corpus_case_gives_its_one_line_error(case, made, monkeypatch, capsys):
    monkeypatch.chdir(CORPUS)
    rc = main(shlex.split(case["argv"].format(tmp=made)))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert rc == case["exit"], err
    assert len(lines) == 1 and case["error"] in lines[0], err


# ---------------------------------------------------------------------------- the line's own inputs


def _line(tmp_path, **overrides):
    cfg = load_config(overrides={"runtime": {"tick_s": 0.02}, **overrides})
    line = build_line(cfg, tmp_path / "record.sqlite", seed=1, clock=VirtualClock())
    line.open()
    return line


def test_engineer_panel_example_is_what_the_line_takes(tmp_path):
    # The panel shows its example from app.js (the label's words come from the message catalogue).
    js = (Path(__file__).parents[1] / "scallop" / "app" / "web" / "app.js").read_text()
    example = json.loads(js.split('t("engineer.changes", { example: \'')[1].split("'")[0])
    line = _line(tmp_path)
    try:
        assert line.update_config(example, "engineer")["min_uro_confidence"] == example["vision.min_uro_confidence"]
        assert line.update_config({"vision": {"clearance_mm": 6.0}}, "engineer")["clearance_mm"] == 6.0
        with pytest.raises(ConfigError, match=r"^belt\.speed_mm_s: cannot be changed while the line runs; .*recipe"):
            line.update_config({"belt.speed_mm_s": 250}, "engineer")
        with pytest.raises(ConfigError, match=r"min_adductor_gap_mm=nan is not a finite number: allowed 0\.\.30"):
            line.update_config({"vision.min_adductor_gap_mm": math.nan}, "engineer")
        assert line.pipeline.config.min_adductor_gap_mm == 2.75  # a refused change changes nothing
    finally:
        line.close()


def test_vision_failing_on_every_frame_faults_the_line(tmp_path, monkeypatch):
    line = _line(tmp_path)

    def broken(*a, **kw):
        raise RuntimeError("model output is garbage")

    monkeypatch.setattr(line.pipeline, "detect", broken)
    try:
        line.start("t")
        line.run_stepped(10.0)
        assert line.state == "fault"
        crash = [a for a in line.alarms.visible() if a.source == "line" and a.severity == "critical"]
        assert crash and "vision (10 frames in a row) stage crashed" in crash[0].text
    finally:
        line.close()


def test_a_redo_calibration_used_by_override_is_alarmed_and_recorded(tmp_path, monkeypatch):
    from scallop.app.record import Record

    monkeypatch.chdir(CORPUS)
    line = _line(tmp_path, runtime={"calibration": "calibration_redo.json", "accept_redo_calibration": ["belt"]})
    try:
        alarms = [a for a in line.alarms.visible() if a.source == "calibration"]
        assert alarms and "calibration belt has verdict REDO and is used by override" in alarms[0].text
    finally:
        line.close()
    with Record(tmp_path / "record.sqlite") as rec:
        ev = [e for e in rec.events() if e["kind"] == "calibration_override"]
    assert ev and json.loads(ev[0]["detail"]) == {"part": "belt", "file": "calibration_redo.json"}


def test_run_exits_non_zero_when_the_record_kept_rows_elsewhere(tmp_path):
    from scallop.app.commands.run import exit_status
    from scallop.app.record import RecordError

    class Line:
        class record:
            @staticmethod
            def problems():
                return ["336 row(s) could not be written to r.sqlite and were saved to r.sqlite.unwritten-run1.jsonl"]

    with pytest.raises(RecordError, match=r"^the production record is incomplete: 336 row\(s\)"):
        exit_status(Line)


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (float("nan"), "k=nan is not a finite number: allowed 1..10"),
        (float("inf"), "k=inf is not a finite number: allowed 1..10"),
        (2.5, "k=2.5: expected an integer: allowed 1..10"),
        ("3", "k='3': expected an integer: allowed 1..10"),
        (True, "k=True: expected an integer: allowed 1..10"),
        (11, "k=11 is out of range: allowed 1..10"),
    ],
)
def test_an_integer_setting_is_refused_with_its_range_whatever_the_value(value, said):
    """NaN for an integer setting raised Python's own ValueError ("cannot convert float NaN to
    integer"), which reached the user as an internal error; the other refusals lacked the range."""
    from scallop.errors import check_number

    with pytest.raises(ConfigError) as e:
        check_number("k", value, 1, 10, integer=True)
    assert str(e.value) == said


@pytest.mark.parametrize(
    ("table", "said"),
    [
        # The class checks the range only (2.5 lies in it): the range still comes with the refusal.
        ({"ui": {"port": 2.5}}, "ui: port=2.5: expected an integer: allowed 0..65535"),
        ({"runtime": {"frame_queue": 7.5}}, "runtime: frame_queue=7.5: expected an integer: allowed 1..64"),
        # The class checks an integer with its range: its own words.
        ({"vision": {"threads": 2.5}}, "vision: threads=2.5: expected an integer: allowed 1..64"),
        ({"vision": {"threads": float("nan")}}, "vision: threads=nan is not a finite number: allowed 1..64"),
        (
            {"camera": {"fluorescence": {"setup": "alternate", "max_pair_ms": 25.0, "alarm_after": 2.5}}},
            "camera.fluorescence: alarm_after=2.5: expected an integer: allowed 1..1000",
        ),
        # The class's words come after its own prefix.
        (
            {"camera": {"encoder": {"source": "modbus", "host": "127.0.0.1", "device_id": 2.5}}},
            "camera.encoder: device_id=2.5: expected an integer: allowed 0..255",
        ),
        # Words or a boolean for a number: the range too.
        ({"camera": {"fps": "x"}}, "camera: fps='x': expected a number: allowed 0..1000"),
        ({"ui": {"port": "80"}}, "ui: port='80': expected an integer: allowed 0..65535"),
    ],
)
def test_a_fraction_or_nan_for_an_integer_key_in_the_file_is_refused_with_the_keys_range(table, said):
    """The file's types are checked before the classes check their ranges: a fraction for an
    integer key said only "expected an integer". It is never taken; the range is asked of the
    class's own check."""
    from scallop.app.config import load_config

    with pytest.raises(ConfigError) as e:
        load_config(overrides=table)
    assert str(e.value) == said


def test_an_integer_key_checked_under_its_arms_name_keeps_the_name_and_gives_the_range():
    from scallop.app.backends import default_sim_arms
    from scallop.app.config import load_config, to_dict

    arm = to_dict(default_sim_arms(1)[0]) | {"watchdog_ms": float("nan")}
    with pytest.raises(ConfigError) as e:
        load_config(overrides={"arms": [arm]})
    assert str(e.value) == "arms[0]: arm 'arm1': watchdog_ms=nan is not a finite number: allowed 100..65535"
    arm["watchdog_ms"] = 500.5  # inside the range, which does not ask for an integer
    with pytest.raises(ConfigError) as e:
        load_config(overrides={"arms": [arm]})
    assert str(e.value) == "arms[0]: arm 'arm1': watchdog_ms=500.5: expected an integer: allowed 100..65535"
