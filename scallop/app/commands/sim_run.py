"""``scallop sim run``: run the whole line against a scenario on the virtual clock, with a report."""

from __future__ import annotations

import argparse

from scallop.errors import SEED_MAX

# The scenario file's own limits (scenario.scallops, scenario.duration_s), for the options that
# replace them: checked here so that the message names the option.
MAX_SCALLOPS = 1_000_000
MAX_DURATION_S = 86400


def register(sub) -> None:
    p = sub.add_parser(
        "run",
        help="run the line against a scenario (virtual time) and write a report",
        description=(
            "Run the complete line — renderer → camera → vision (ONNX) → tracking → planning →\n"
            "simulated arms over Modbus on 127.0.0.1 — against a scenario, on the virtual clock,\n"
            "as fast as the machine allows; the same seed gives the same numbers. Prints a short\n"
            "summary (or the whole summary with --json); with --report writes DIR/summary.json,\n"
            "DIR/index.html (plots) and annotated frames of failures. Scenario format and the\n"
            "shipped scenarios: docs/scenarios.md, 'scallop sim list'.\n\n"
            "examples:\n"
            "  scallop sim run --scenario nominal --report /tmp/nominal --language en\n"
            "  scallop sim run --scenario faults_arm --scallops 40 --json\n"
            "  scallop sim run --scenario my-line.toml --seed 3 --model runs/pre/model.onnx"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--scenario", required=True, metavar="FILE|NAME", help="scenario file, or a shipped scenario's name")
    p.add_argument("--report", metavar="DIR", help="write summary.json, index.html and failure frames here")
    p.add_argument("--seed", type=int, help=f"seed, 0..{SEED_MAX} (default: the scenario's)")
    p.add_argument("--model", metavar="PATH", help="ONNX model (default: the scenario's, else the shipped model)")
    p.add_argument(
        "--scallops", type=int, metavar="N", help=f"run until N scallops went past the arms, 1..{MAX_SCALLOPS}"
    )
    p.add_argument(
        "--duration",
        type=float,
        metavar="S",
        help=f"run S seconds of virtual time instead (more than 0, at most {MAX_DURATION_S})",
    )
    p.add_argument(
        "--language",
        choices=("ja", "en"),
        help="the report's language (default: the scenario's [line.ui] language, else ja)",
    )
    p.add_argument("--json", action="store_true", help="print the whole summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from scallop.app.progress import Progress
    from scallop.app.scenario import load_scenario, run_scenario, write_report
    from scallop.errors import check_duration, check_number, check_seed

    if args.seed is not None:
        check_seed("--seed", args.seed)
    if args.scallops is not None:
        check_number("--scallops", args.scallops, 1, MAX_SCALLOPS, integer=True)
    if args.duration is not None:
        check_duration("--duration", args.duration, MAX_DURATION_S)
    sc = load_scenario(args.scenario)
    by_count = args.scallops is not None or (args.duration is None and sc.spec.scallops > 0)
    total = (args.scallops or sc.spec.scallops) if by_count else int(args.duration or sc.spec.duration_s)
    bar = None if args.quiet else Progress(total, sc.name, unit="scallops" if by_count else "s virtual")
    try:
        summary = run_scenario(
            sc,
            args.report,
            seed=args.seed,
            model=args.model,
            scallops=args.scallops,
            duration_s=args.duration,
            progress=None if bar is None else (lambda done, note: bar.advance_to(done, note)),
        )
    except BaseException:
        if bar is not None:
            bar.close(failed=True)
        raise
    if bar is not None:
        bar.close()
    language = args.language or sc.line_config().ui.language
    page = write_report(summary, args.report, language) if args.report else None
    public = {k: v for k, v in summary.items() if not k.startswith("_")}
    if args.json:
        print(json.dumps(public))
    else:
        print(format_summary(public))
        if page is not None:
            print(f"report: {page}")
    c = summary["checks"]
    # A uro that left without an alarm saying so fails the run, like a scallop not accounted for.
    ok = c["accounted"] and not c["duplicate_target_picks"] and not c.get("escaped_unalarmed")
    # Scallops went by and none reached the gate's judgement: every check passed with nothing checked.
    went_by = ((summary.get("line") or {}).get("truth") or {}).get("passed", 0)
    ok = ok and summary["complete"] and (summary["processed"] > 0 or not went_by)
    return 0 if ok else 1


def format_summary(s: dict) -> str:
    rate = s["uro_removal_rate"]
    lines = [
        (
            f"scenario {s['scenario']} (seed {s['seed']}): {s['processed']} scallops past the arms"
            + (" and the gate" if s.get("dispositions") is not None else "")
            + " in "
            f"{s['duration_s']:g} s virtual, {s['realtime_factor']}x real time"
        ),
        f"  uro removed {s['uro_removed']}/{s['with_uro']}"
        + ("" if rate is None else f" ({100 * rate:.2f} %)")
        + f", missed {s['missed']}"
        + (
            f" (to rework {s['uro_to_rework']}, escaped {s['uro_escaped']})"
            if s.get("uro_to_rework") is not None
            else ""
        )
        + f", adductor hits {s['adductor_hits']}",
        f"  throughput {s['throughput_per_min']:g}/min, capacity {s['capacity']['total_per_min']:g}/min"
        f" ({100 * (s['throughput_share_of_capacity'] or 0):.1f} %), arm busy "
        + ", ".join(f"{k} {100 * v:.1f} %" for k, v in s["arm_utilisation"].items()),
        "  outcomes: " + ", ".join(f"{k} {v}" for k, v in s["outcomes"].items()),
    ]
    if s.get("dispositions") is not None:
        # The food-safety line: where each scallop ended at the reject gate.
        lines.append(
            "  at the gate: "
            + ", ".join(f"{k} {v}" for k, v in s["dispositions"].items())
            + f"; uro escaped {s['uro_escaped']}"
            + (f" (scallops {', '.join(map(str, s['uro_escaped_ids']))})" if s["uro_escaped"] else "")
        )
        held = (s.get("line") or {}).get("all_to_rework") or {}
        if held.get("spells"):
            lines.append(f"  gate held open (all to rework): {held['seconds']:g} s in {held['spells']} spells")
    check = s.get("shift_check") or {}
    if check.get("required"):
        res = check.get("result") or {}
        lines.append(
            f"  shift check: {check['state']}"
            + (f", expected {res['expected']}, got {res['got']}" if "expected" in res else "")
            + (f" ({res['why']})" if res.get("why") else "")
        )
    ch = s.get("channel")
    if ch:
        lines.append(
            f"  fluorescence ({ch['setup']}): {ch['pairs']} pairs, dropped "
            + (", ".join(f"{k} {v}" for k, v in ch["dropped"].items()) or "none")
        )
    other = s.get("without_channel")
    if other:
        for name, x in (("with the channel   ", s), ("without (colour)   ", other)):
            r = x.get("uro_removal_rate")
            lines.append(
                f"  {name}: uro removed {x['uro_removed']}/{x['with_uro']}"
                + ("" if r is None else f" ({100 * r:.2f} %)")
                + f", left on {x['missed']}, picks into meat {(x.get('picks_by_grade') or {}).get('meat_hit', 0)}"
                + f", adductor hits {x['adductor_hits']}, uro escaped {x.get('uro_escaped')}"
                + f", diverted {(x.get('dispositions') or {}).get('diverted', 0)}"
            )
    spans = s.get("alarms") or []
    if spans:
        said = [
            f"{a['alarm'] or a['text'][:40]} ({a['severity']}) "
            + (f"{a['from_s']:g} s to the end" if a["to_s"] is None else f"{a['from_s']:g}–{a['to_s']:g} s")
            for a in spans[:8]
        ]
        lines.append("  alarms: " + "; ".join(said) + (f"; and {len(spans) - 8} more" if len(spans) > 8 else ""))
    c = s["checks"]
    lines.append(
        f"  checks: accounted={c['accounted']} duplicate picks={c['duplicate_target_picks']} "
        f"undecided={c['undecided']} phantom tracks={c['phantom_tracks']}"
        + (f" uro escaped without an alarm={c['escaped_unalarmed']}" if c.get("escaped_unalarmed") else "")
    )
    if not s["complete"]:
        lines.append("  INCOMPLETE: " + (s["crash"] or "the scallop count was not reached in time"))
    for e in s["errors"]:
        lines.append(f"  error: {e}")
    return "\n".join(lines)
