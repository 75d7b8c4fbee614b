"""``scallop bench …``: benchmarks that write their figures to a file (medians and p99)."""

from scallop.app.commands import register_group


def register(sub) -> None:
    register_group(
        sub,
        "bench",
        ("vision", "accuracy", "modbus", "calibration", "shadow"),
        help="measure speed and accuracy (medians and p99, written to a file)",
        description="Benchmarks.\n\nexample:\n  scallop bench vision --json",
    )
