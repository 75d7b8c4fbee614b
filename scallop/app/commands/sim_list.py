"""``scallop sim list``: the shipped scenarios, one line each."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "list",
        help="list the shipped scenarios",
        description="List the scenarios that ship with the project (sim/scenarios/*.toml): name and\n"
        "what each one runs. Run one with 'scallop sim run --scenario NAME'.\n\n"
        "examples:\n  scallop sim list\n  scallop sim list --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="one JSON object per scenario (name, description, file)")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from scallop.app.scenario import load_scenario, shipped_scenarios

    rows = []
    for name, path in shipped_scenarios().items():
        sc = load_scenario(path)
        rows.append({"name": name, "description": sc.spec.description, "file": str(path)})
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    width = max((len(r["name"]) for r in rows), default=0)
    for r in rows:
        print(f"{r['name']:<{width}}  {r['description']}")
    return 0
