"""The Grafana dashboard shipped for a plant with several lines (scallop/app/deploy/
grafana-dashboard.json): a dashboard Grafana can import, and every query of every panel asks
only for metrics and labels the line exports (a live /metrics scrape, tests/test_interfaces.py)
or Prometheus adds to each target (``job``, ``instance``, ``up``, and ``line`` from the scrape
configuration shipped beside it)."""

from __future__ import annotations

import json
import re
from importlib.resources import files

import pytest
import yaml

from tests.test_interfaces import live_metrics

DASHBOARD = json.loads(files("scallop.app.deploy").joinpath("grafana-dashboard.json").read_text(encoding="utf-8"))
SCRAPE = yaml.safe_load(files("scallop.app.deploy").joinpath("prometheus.yml").read_text(encoding="utf-8"))

# Labels and series Prometheus itself attaches to a scraped target.
TARGET_LABELS = {"job", "instance"}
PROMETHEUS_SERIES = {"up": set()}
# PromQL words that are not metric names.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}


def target_labels() -> set[str]:
    labels = set(TARGET_LABELS)
    for job in SCRAPE["scrape_configs"]:
        for sc in job["static_configs"]:
            labels |= set(sc.get("labels", {}))
    return labels


def exported(fake_line, fast_users, tmp_path) -> dict[str, set[str]]:
    """Series name -> its labels, as Prometheus stores them (a histogram's three series)."""
    out: dict[str, set[str]] = {}
    for name, (kind, labels) in live_metrics(fake_line, fast_users, tmp_path).items():
        names = [f"{name}_bucket", f"{name}_sum", f"{name}_count"] if kind == "histogram" else [name]
        for n in names:
            out[n] = set(labels) | ({"le"} if n.endswith("_bucket") else set())
    return out


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """``(metric, labels matched)`` of every series selector in a PromQL expression, and the
    labels of its ``by``/``without``/``on``/``ignoring`` lists under the name ``""``."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings: their contents are not names
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range and subquery durations
    out: list[tuple[str, set[str]]] = []
    for m in re.finditer(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr):
        out.append(("", {x.strip() for x in m.group(2).split(",") if x.strip()}))
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    for m in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*(\{[^}]*\})?", expr):
        name, matchers = m.group(1), m.group(2)
        if not name and not matchers:
            continue
        if name and (name in KEYWORDS or expr[m.end() :].lstrip().startswith("(") and not matchers):
            continue  # a function or a keyword
        labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers or ""))
        if name:
            out.append((name, labels))
    return out


def queries() -> list[tuple[str, str]]:
    out = [(p["title"], t["expr"]) for p in DASHBOARD["panels"] for t in p["targets"]]
    for v in DASHBOARD["templating"]["list"]:
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", q)
        assert m, f"variable {v['name']}: {q!r} is not label_values(metric, label)"
        out.append((f"variable {v['name']}", f'{m.group(1)}{{{m.group(2)}!=""}}'))
    return out


def test_the_dashboard_is_a_grafana_dashboard():
    d = DASHBOARD
    assert d["uid"] and d["title"] and isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    inputs = {i["name"] for i in d["__inputs"]}
    for p in d["panels"]:
        g = p["gridPos"]
        assert all(isinstance(g[k], int) and g[k] >= 0 for k in "xywh") and g["x"] + g["w"] <= 24, p["title"]
        assert p["type"] in {"stat", "gauge", "timeseries", "table", "bargauge"}, p["type"]
        assert p["datasource"]["type"] == "prometheus" and p["datasource"]["uid"].strip("${}") in inputs
        refs = [t["refId"] for t in p["targets"]]
        assert p["targets"] and len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["expr"].count("(") == t["expr"].count(")") and t["expr"].count("{") == t["expr"].count("}")
    # The panels do not overlap: Grafana would move them about.
    cells = set()
    for p in d["panels"]:
        g = p["gridPos"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"panel {p['title']!r} overlaps another"
        cells |= mine


def test_every_query_asks_for_what_the_line_exports(fake_line, fast_users, tmp_path):
    series = exported(fake_line, fast_users, tmp_path) | {k: set(v) for k, v in PROMETHEUS_SERIES.items()}
    extra = target_labels()
    problems = []
    for where, expr in queries():
        used = selectors(expr)
        assert used, f"{where}: no metric found in {expr!r}"
        for name, labels in used:
            if name == "":
                problems += [
                    f"{where}: groups by unknown label {l!r}" for l in labels - extra - set().union(*series.values())
                ]
                continue
            if name not in series:
                problems.append(f"{where}: {name} is not exported by the line")
                continue
            problems += [f"{where}: {name} has no label {l!r}" for l in labels - series[name] - extra]
    assert not problems, "\n".join(problems)
    # The things the issue asks a plant's view to show are there.
    names = {n for _, e in queries() for n, _ in selectors(e)}
    for needed in (
        "scallop_seen_total",  # line rate
        "scallop_uro_removal_ratio",  # uro-removed share
        "scallop_missed_total",  # misses
        "scallop_arm_picks_total",  # arm cycle times (with utilisation)
        "scallop_alarms_active",  # alarms
    ):
        assert needed in names, needed


def test_every_panel_is_filtered_by_the_line_variable():
    # Without it one line's numbers would be summed with another's.
    for where, expr in queries():
        if where.startswith("variable"):
            continue
        for name, labels in selectors(expr):
            if name:
                assert "line" in labels, f"{where}: {name} is not filtered by line"
    lines = [sc["labels"]["line"] for job in SCRAPE["scrape_configs"] for sc in job["static_configs"]]
    assert len(lines) == len(set(lines)) >= 2


@pytest.mark.parametrize(
    "expr, want",
    [
        ('sum by (line) (rate(a_total{line=~"$line"}[5m])) * 60', [("", {"line"}), ("a_total", {"line"})]),
        ('up{job="x"} == 1', [("up", {"job"})]),
        ('b / clamp_min(c{x="a{b}"}, 1)', [("b", set()), ("c", {"x"})]),
    ],
)
def test_the_query_reader_itself(expr, want):
    assert sorted(selectors(expr), key=str) == sorted(want, key=str)
