"""``scallop doctor``: the line PC's health, one line a check, with what to do."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "doctor",
        help="check the line PC: camera, encoder, arms, calibration, model, disk, record, users, clock",
        description=(
            "Check what a maintenance engineer would, one line each: OK, WARN or FAIL, what was\n"
            "found and what to do. Devices are only read (the doctor may run beside the line).\n"
            "Exit status 0 when nothing FAILs, 1 otherwise; 2 when the configuration itself is\n"
            "refused (the error names the key, the value and the allowed range).\n\n"
            "example:\n"
            "  scallop doctor --config /etc/scallop/line.toml"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="the line's configuration (default: the built-in simulator)")
    p.add_argument("--json", action="store_true", help="the checks as one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    from dataclasses import asdict

    from scallop.app.config import load_config
    from scallop.app.doctor import FAIL, WARN, run_checks

    checks = run_checks(load_config(args.config))
    fails = sum(c.status == FAIL for c in checks)
    warns = sum(c.status == WARN for c in checks)
    if args.json:
        print(json.dumps({"checks": [asdict(c) for c in checks], "fail": fails, "warn": warns}))
    else:
        for c in checks:
            print(c.line())
        print(f"{len(checks) - fails - warns} OK, {warns} WARN, {fails} FAIL")
    return 1 if fails else 0
