"""``scallop bench …``: benchmarks that write their figures to a file (medians and p99)."""

from scallop.app.commands import register_group


def register(sub) -> None:
    register_group(
        sub,
        "bench",
        ("vision", "accuracy", "hard", "modbus", "resume", "calibration", "camera", "shadow"),
        help="measure speed and accuracy (medians and p99, written to a file)",
        description="Benchmarks.\n\nexample:\n  scallop bench vision --json",
    )


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
