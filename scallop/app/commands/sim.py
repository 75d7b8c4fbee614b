"""``scallop sim …``: the simulated world (data sets, previews, scenario runs)."""

from scallop.app.commands import register_group


def register(sub) -> None:
    register_group(
        sub,
        "sim",
        ("preview", "dataset", "run", "list", "commission"),
        help="the simulator: preview frames, write labelled data sets, run scenarios, rehearse commissioning",
        description="The simulator.\n\nexamples:\n  scallop sim preview --out preview/\n"
        "  scallop sim dataset --n 200 --out data/sim --seed 1",
    )
