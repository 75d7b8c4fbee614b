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
    """The report page for a summary of :func:`~scallop.app.scenario.run.run_scenario` (its
    ``_latency_values`` give the latency histograms)."""
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
    return _page().substitute(
        scenario=e(s["scenario"]),
        description=e(s["description"]),
        seed=s["seed"],
        model=e(str(s["model"])),
        arms=e(", ".join(s["arms"])),
        belt_speed=f"{s['belt_speed_mm_s']:g}",
        arrivals=f"{s['arrivals_rate_per_min']:g}",
        incomplete="" if s["complete"] else " — INCOMPLETE",
        cards=cards,
        utilisation=e(util),
        throughput_chart=tp_chart,
        belt_chart=belt,
        outcomes_chart=outcomes,
        skipped=skipped or "<tr><td>none</td></tr>",
        latency_histograms="".join(hists),
        faults=faults,
        fault_log=flog,
        errors=("<h3>Errors</h3><ul>" + errors + "</ul>") if errors else "",
        checks=checks,
        failure_frames=frames,
    )


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
