"""Scenario bench: the whole line against a scripted scenario on the virtual clock, with a report.

One job per module:

- :mod:`.spec`: scenario files (``[scenario]``, ``[line]``, ``[arm]``, ``[[faults]]``), parsed
  and checked, the line configuration they run, and the shipped scenarios;
- :mod:`.faults`: the faults as timed actions on the line, its simulated arms and camera;
- :mod:`.accounting`: every scallop of the simulated world followed through the run, one
  outcome each, and frames of failures;
- :mod:`.run`: :func:`run_scenario` and its summary;
- :mod:`.report`: ``summary.json`` and ``index.html`` (:func:`write_report`).
"""

from scallop.app.scenario.report import render_html, svg_bars, svg_hist, svg_lines, write_report
from scallop.app.scenario.run import WALL_TIME_KEYS, deterministic_view, run_scenario
from scallop.app.scenario.spec import (
    ARM_FAULTS,
    FAULT_KINDS,
    FaultKind,
    FaultSpec,
    Scenario,
    ScenarioError,
    ScenarioSpec,
    belt_stop_profile,
    load_scenario,
    parse_scenario,
    scenarios_dir,
    shipped_scenarios,
)

__all__ = [
    "ARM_FAULTS",
    "FAULT_KINDS",
    "WALL_TIME_KEYS",
    "FaultKind",
    "FaultSpec",
    "Scenario",
    "ScenarioError",
    "ScenarioSpec",
    "belt_stop_profile",
    "deterministic_view",
    "load_scenario",
    "parse_scenario",
    "render_html",
    "run_scenario",
    "scenarios_dir",
    "shipped_scenarios",
    "svg_bars",
    "svg_hist",
    "svg_lines",
    "write_report",
]
