"""``scallop bench …``: benchmarks that write their figures to a file (medians and p99)."""

from scallop.app.commands import register_group


def register(sub) -> None:
    p = register_group(
        sub,
        "bench",
        ("vision", "accuracy", "hard", "modbus", "resume", "calibration", "camera", "shadow"),
        help="measure speed and accuracy (medians and p99, written to a file)",
        description="Benchmarks.\n\nexample:\n  scallop bench vision --json",
    )
    # Every benchmark writes its figures to --out at the end: a place they cannot be written is
    # refused before the benchmark runs, not after minutes of it with the figures lost.
    for action in p._subparsers._group_actions:
        for member in action.choices.values():
            run = member.get_default("func")
            if run is not None and member.get_default("out") is not None:
                member.set_defaults(func=_out_checked(run))


def _out_checked(run):
    def checked(args):
        from pathlib import Path

        from scallop.app.outputs import check_output_file

        check_output_file(Path(args.out), "the figures (--out)", "bench/figures.json")
        return run(args)

    return checked


def write_figures(figures: dict, out: str, as_json: bool) -> bool:
    """Write a benchmark's figures to ``out`` (JSON, folders made); print them as one JSON
    line when ``as_json``. Returns whether they were printed (else the caller prints its text)."""
    import json
    from pathlib import Path

    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2))
    if as_json:
        print(json.dumps(figures))
    return as_json
