"""The report of a run: ``summary.json`` and ``index.html`` (the page is ``report.html`` in
this package, filled in with :class:`string.Template`; its plots are inline SVG)."""

from __future__ import annotations

import html
import json
import math
from importlib import resources
from pathlib import Path
from string import Template

import numpy as np

from scallop.app import i18n


def write_report(summary: dict, report_dir: str | Path, language: str = "en") -> Path:
    """``summary.json`` and ``index.html`` (inline SVG plots, words in ``language``: "ja" or "en")
    in ``report_dir``; returns the HTML path."""
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    public = {k: v for k, v in summary.items() if not k.startswith("_")}
    (out / "summary.json").write_text(json.dumps(public, indent=2) + "\n")
    page = out / "index.html"
    page.write_text(render_html(summary, language), encoding="utf-8")
    return page


def outcome_words(language: str, outcome: str) -> str:
    """An outcome key of the summary (``picked:uro_removed``, ``skipped:no_uro``, ``line_estop``)
    in the report's language; an unknown part stays as it is."""

    def known(key: str, raw: str) -> str:
        return i18n.t(language, key) if i18n.has(key) else raw

    if ":" in outcome:
        result, detail = outcome.split(":", 1)
        detail_key = f"report.grade.{detail}" if result == "picked" else f"reason.{detail}"
        return i18n.t(
            language,
            "report.outcome.pair",
            result=known(f"report.outcome.{result}", result),
            reason=known(detail_key, detail),
        )
    if outcome.startswith("line_"):
        return i18n.t(language, "report.outcome.line", state=known(f"state.{outcome[5:]}", outcome[5:]))
    return known(f"report.outcome.{outcome}", outcome)


def render_html(s: dict, language: str = "en") -> str:
    """The report page for a summary of :func:`~scallop.app.scenario.run.run_scenario` (its
    ``_latency_values`` give the latency histograms), in ``language``."""
    e = html.escape

    def tr(key: str, **params) -> str:
        return i18n.t(language, key, **params)

    def n(v, digits: int = 0) -> str:
        return i18n.number(language, v, digits)

    ts = s["time_series"]
    cap = s["capacity"]["total_per_min"]
    vlines = [(f["at_s"], f["kind"]) for f in s["faults"]]
    tp_chart = svg_lines(
        ts["t_s"],
        {
            tr("report.series.arrivals"): ts["arrivals_per_min"],
            tr("report.series.picks"): ts["picks_per_min"],
            tr("report.series.uro_removed"): ts["uro_removed_per_min"],
            tr("report.series.skipped"): ts["skipped_per_min"],
        },
        x_label=tr("report.axis.time"),
        y_label=tr("report.axis.per_min"),
        hline=(cap, tr("report.capacity")),
        vlines=vlines,
        no_data=tr("report.no_data"),
    )
    belt = ""
    if len(set(ts["belt_speed_mm_s"])) > 1:
        belt = f"<h3>{e(tr('report.belt_chart'))}</h3>" + svg_lines(
            ts["t_s"],
            {tr("report.series.belt"): ts["belt_speed_mm_s"]},
            x_label=tr("report.axis.time"),
            y_label=tr("report.axis.mm_s"),
            vlines=vlines,
            height=160,
        )
    outcomes = svg_bars(
        [(outcome_words(language, k), v) for k, v in sorted(s["outcomes"].items(), key=lambda kv: -kv[1])],
        colours=[_bar_colour(k) for k, _ in sorted(s["outcomes"].items(), key=lambda kv: -kv[1])],
        none=tr("report.none"),
    )
    hists = []
    for stage, vals in s.get("_latency_values", {}).items():
        if vals and stage in s["latency_ms"]:
            p = s["latency_ms"][stage]
            line = tr("report.latency_line", p50=p["p50"], p90=p["p90"], p99=p["p99"], n=n(p["n"]))
            hists.append(
                f"<div class='h'><h3>{e(stage)}</h3><p>{e(line)}</p>{svg_hist(vals, 'ms', no_data=tr('report.no_data'))}</div>"
            )
    frames = (
        "".join(
            f"<figure><img src='{e(f['file'])}' alt='{e(f['kind'])}'><figcaption>"
            + e(
                tr(
                    "report.frame_caption",
                    kind=f["kind"],
                    scallop=f["scallop"],
                    t=f"{f['t']:g}",
                    frame=f["frame_index"],
                    detail=f["detail"],
                )
            )
            + "</figcaption></figure>"
            for f in s["failure_frames"]
            if f.get("file")
        )
        or f"<p>{e(tr('report.no_failure_frames'))}</p>"
    )
    # "Missed" means two things: the screen counts picks its pick check saw leave the uro on;
    # the simulator knows every scallop that left with its uro. Both, named apart.
    screen_missed = (s.get("line") or {}).get("missed")
    head = [
        ("report.processed", n(s["processed"])),
        ("report.with_uro", n(s["with_uro"])),
        ("report.uro_removed", n(s["uro_removed"])),
        ("report.removal_rate", i18n.percent(language, s["uro_removal_rate"], 2)),
        ("report.uro_left", n(s["missed"])),
        ("report.uro_to_rework", n(s.get("uro_to_rework"))),
        ("report.missed_picks", n(screen_missed)),
        ("report.adductor_hits", n(s["adductor_hits"])),
        ("report.uro_escaped", n(s.get("uro_escaped"))),
        ("report.diverted", n((s.get("dispositions") or {}).get("diverted"))),
        ("report.throughput", tr("report.per_min", value=n(s["throughput_per_min"], 1))),
        ("report.capacity", tr("report.per_min", value=n(cap, 1))),
        ("report.virtual_time", tr("report.seconds", value=n(s["duration_s"], 1))),
        ("report.realtime_factor", tr("report.times", value=n(s["realtime_factor"], 1))),
    ]
    check = s.get("shift_check") or {}
    if check.get("required"):
        head.append(("report.shift_check", tr(f"report.shift_check.{check['state']}")))
    cards = "".join(f"<div class='c'><b>{e(v)}</b><span>{e(tr(k))}</span></div>" for k, v in head)
    checks = "".join(f"<tr><td>{e(k)}</td><td>{e(str(v))}</td></tr>" for k, v in s["checks"].items())
    faults = (
        "".join(f"<li>{e(_fault_words(language, f, s['duration_s']))}</li>" for f in s["faults"])
        or f"<li>{e(tr('report.none'))}</li>"
    )
    flog = "".join("<li>" + e(_log_words(language, ev)) + "</li>" for ev in s["fault_log"])
    raised = "".join("<li>" + e(_alarm_words(language, a)) + "</li>" for a in s.get("alarms") or [])
    skipped = "".join(
        f"<tr><td>{e(i18n.t(language, 'reason.' + k) if i18n.has('reason.' + k) else k)}</td><td>{n(v)}</td></tr>"
        for k, v in s["skipped"].items()
    )
    util = ", ".join(f"{k} {i18n.percent(language, u, 1)}" for k, u in s["arm_utilisation"].items())
    errors = "".join(f"<li>{e(x)}</li>" for x in s["errors"] + ([s["crash"]] if s["crash"] else []))
    target = s.get("scallops_target")
    run_for = (
        tr("report.run_for_scallops", n=n(target))
        if target
        else tr("report.run_for_time", seconds=n(s["duration_s"], 1))
    )
    subtitle = tr(
        "report.subtitle",
        description=s["description"],
        seed=s["seed"],
        model=_model_label(str(s["model"]), tr),
        arms=", ".join(s["arms"]),
        belt=f"{s['belt_speed_mm_s']:g}",
        arrivals=f"{s['arrivals_rate_per_min']:g}",
    )
    return _page().substitute(
        lang=language,
        channel=_channel_table(s, tr, n, language),
        title=e(tr("report.title", name=s["scenario"])),
        subtitle=e(subtitle),
        run_for=e(run_for) + ("" if s["complete"] else f" — {e(tr('report.incomplete'))}"),
        cards=cards,
        utilisation=e(tr("report.utilisation", list=util)),
        missed_note=e(tr("report.missed_note")),
        h_throughput=e(tr("report.throughput_chart")),
        throughput_chart=tp_chart,
        belt_chart=belt,
        h_outcomes=e(tr("report.outcomes")),
        outcomes_note=e(tr("report.outcomes_note")),
        outcomes_chart=outcomes,
        h_not_picked=e(tr("report.not_picked")),
        skipped=skipped or f"<tr><td>{e(tr('report.none'))}</td></tr>",
        h_latency=e(tr("report.latency")),
        latency_histograms="".join(hists),
        h_faults=e(tr("report.faults")),
        faults=faults,
        fault_log=flog,
        alarms=f"<h3>{e(tr('report.alarms'))}</h3><ul>{raised}</ul>" if raised else "",
        errors=(f"<h3>{e(tr('report.errors'))}</h3><ul>" + errors + "</ul>") if errors else "",
        h_checks=e(tr("report.checks")),
        checks=checks,
        h_failure_frames=e(tr("report.failure_frames")),
        failure_note=e(tr("report.failure_note")),
        failure_frames=frames,
    )


# The summary names the shipped models in English (it is read by programs too); the page says
# them in the report's language.
SHIPPED_MODELS = {
    "(shipped)": "report.model.shipped",
    "(shipped, colour only)": "report.model.shipped_colour",
    "(shipped, colour and fluorescence)": "report.model.shipped_uv",
}


def _model_label(model: str, tr) -> str:
    return tr(SHIPPED_MODELS[model]) if model in SHIPPED_MODELS else model


def _channel_table(s: dict, tr, n, language: str) -> str:
    """The fluorescence channel's frame pairs, and the same scallops with and without it
    (``compare_without_channel``)."""
    e = html.escape
    out = ""
    ch = s.get("channel")
    if ch:
        dropped = ch.get("dropped") or {}
        why = ", ".join(f"{tr('report.pair_dropped.' + k)} {n(v)}" for k, v in sorted(dropped.items()))
        out = (
            f"<h2>{e(tr('report.channel', setup=tr('report.setup.' + ch['setup'])))}</h2><table>"
            f"<tr><td>{e(tr('report.pairs'))}</td><td>{e(n(ch.get('pairs')))}</td></tr>"
            f"<tr><td>{e(tr('report.pairs_dropped'))}</td><td>{e(n(sum(dropped.values())))}"
            f"{e(' (' + why + ')') if why else ''}</td></tr></table>"
        )
    other = s.get("without_channel")
    if not other:
        return out

    def row(key: str, get) -> str:
        return f"<tr><td>{e(tr(key))}</td><td>{e(get(s))}</td><td>{e(get(other))}</td></tr>"

    def grade(g: str):
        return lambda x: n((x.get("picks_by_grade") or {}).get(g, 0))

    rows = [
        # How many each run saw: the same seed and scenario, but a run that held its infeed (the
        # channel lost) lets fewer scallops past in the same time.
        row("report.processed", lambda x: n(x.get("processed"))),
        row("report.with_uro", lambda x: n(x.get("with_uro"))),
        row("report.removal_rate", lambda x: i18n.percent(language, x.get("uro_removal_rate"), 2)),
        row("report.uro_left", lambda x: n(x.get("missed"))),
        row("report.meat_picks", grade("meat_hit")),
        row("report.adductor_hits", lambda x: n(x.get("adductor_hits"))),
        row("report.uro_escaped", lambda x: n(x.get("uro_escaped"))),
        row("report.diverted", lambda x: n((x.get("dispositions") or {}).get("diverted"))),
    ]
    head = f"<tr><th></th><th>{e(tr('report.with_channel'))}</th><th>{e(tr('report.without_channel'))}</th></tr>"
    return out + f"<h2>{e(tr('report.channel_compare'))}</h2><table>{head}{''.join(rows)}</table>"


def _fault_words(language: str, f: dict, run_s: float | None = None) -> str:
    what = i18n.t(
        language,
        f"report.fault.{f['kind']}",
        arm=f.get("arm") or i18n.t(language, "report.first_arm"),
        duration=f"{f.get('duration_s', 0):g}",
        frames=f.get("frames", 0),
        shift=f"{f.get('shift_mm') or 0:g}",
        scale=f"{f.get('scale') or 0:g}",
    )
    words = i18n.t(language, "report.fault_at", at=f"{f['at_s']:g}", what=what)
    if run_s is not None and f["at_s"] > run_s:
        # The run ended first (a --duration shorter than the scenario's): listed, never happened.
        words += " " + i18n.t(language, "report.fault_not_reached")
    return words


def _log_words(language: str, ev: dict) -> str:
    """One fault action in the reader's words; an older summary's entries have only the log's own."""
    action = ev.get("action")
    key = f"report.log.{action}"
    if not action or key not in i18n.catalogue(language):
        return i18n.t(language, "report.log_line", t=f"{ev['t']:g}", event=ev["event"])
    params = dict(ev.get("params") or {})
    if params.get("arm") == "":  # "" in a scenario means the line's first arm
        params["arm"] = i18n.t(language, "report.first_arm")
    what = i18n.t(language, key, **params)
    return i18n.t(language, "report.log_entry", t=f"{ev['t']:g}", fault=int(ev.get("fault", 0)) + 1, what=what)


def _alarm_words(language: str, a: dict) -> str:
    """One alarm the line raised, in the words the operator's screen gives it."""
    code = a.get("alarm") or ""
    what = i18n.t(language, f"alarm.{code}", **a.get("params", {})) if code and i18n.has(f"alarm.{code}") else a["text"]
    severity = i18n.t(language, f"severity.{a['severity']}")
    if a.get("to_s") is None:
        return i18n.t(language, "report.alarm_open", start=f"{a['from_s']:g}", severity=severity, what=what)
    return i18n.t(
        language, "report.alarm_span", start=f"{a['from_s']:g}", end=f"{a['to_s']:g}", severity=severity, what=what
    )


def _bar_colour(outcome: str) -> str:
    if outcome == "picked:uro_removed":
        return "#2ca02c"
    return "#d62728" if "adductor" in outcome or "missed" in outcome else "#1f77b4"


def _page() -> Template:
    # The page is a file of the package so that it reads (and diffs) as HTML.
    return Template(resources.files(__package__).joinpath("report.html").read_text(encoding="utf-8"))


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
    no_data: str = "(no data)",
) -> str:
    """A line chart as an inline ``<svg>`` (one polyline per series, shared x)."""
    e = html.escape
    ml, mr, mt, mb = 56, 110, 12, 36
    pw, ph = width - ml - mr, height - mt - mb
    xs = [float(v) for v in x]
    if not xs:
        return f"<p>{e(no_data)}</p>"
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


def svg_bars(
    items: list[tuple[str, float]],
    width: int = 720,
    bar_h: int = 18,
    colours: list[str] | None = None,
    none: str = "(none)",
) -> str:
    """Horizontal bars with their value, as an inline ``<svg>`` (``colours``: one per bar)."""
    e = html.escape
    if not items:
        return f"<p>{e(none)}</p>"
    ml, mr = 240, 60
    pw = width - ml - mr
    vmax = max(v for _, v in items) or 1
    height = len(items) * (bar_h + 6) + 8
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img'>"]
    for i, (label, v) in enumerate(items):
        y = 4 + i * (bar_h + 6)
        w = v / vmax * pw
        c = colours[i] if colours else _bar_colour(label)
        parts.append(
            f"<text x='{ml - 6}' y='{y + bar_h - 5}' text-anchor='end'>{e(label)}</text>"
            f"<rect x='{ml}' y='{y}' width='{w:.1f}' height='{bar_h}' fill='{c}'/>"
            f"<text x='{ml + w + 4:.1f}' y='{y + bar_h - 5}'>{v:g}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def svg_hist(
    values, unit: str = "", bins: int = 30, width: int = 340, height: int = 150, no_data: str = "(no data)"
) -> str:
    """A histogram (1st to 99.5th percentile; the rest in the end bins) as an inline ``<svg>``."""
    a = np.asarray(values, float)
    if not len(a):
        return f"<p>{html.escape(no_data)}</p>"
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
