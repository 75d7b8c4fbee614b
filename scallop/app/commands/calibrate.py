"""``scallop calibrate …``: the calibration chain, one step at a time.

    intrinsics → belt → encoder → robot   (check and show at any time)
    intrinsics → belt → fluorescence      (only on a line with a second, fluorescence camera)

Every step prints its figures and a verdict (good / marginal / redo) with the limits, and
writes its part into the one calibration file of the line (``--out`` / ``--calib``).
With ``--json`` a step prints one JSON object on stdout and nothing else (progress goes to
stderr).
"""

from __future__ import annotations

from scallop.app.commands import register_group

_STEPS = """\
steps, in order:
  scallop calibrate board      --board chessboard:9x6:25 --out board.png    print a board
  scallop calibrate intrinsics --board chessboard:9x6:25 --out line.json photos/
  scallop calibrate belt       --calib line.json --board chessboard:9x6:25 flat.png
  scallop calibrate encoder    --calib line.json --board chessboard:9x6:25 --frames run/ --counts run/counts.csv
  scallop calibrate robot      --calib line.json --arm arm1 --points touches.csv
  scallop calibrate fluorescence --calib line.json --board SPEC --thickness-mm 3 \\
                 --colour c1.png c2.png c3.png --fluorescence f1.png f2.png f3.png   (second camera only)
  scallop calibrate check      --calib line.json board_on_belt.png
  scallop calibrate show       line.json
"""


def register(sub) -> None:
    register_group(
        sub,
        "calibrate",
        ("board", "intrinsics", "belt", "encoder", "robot", "fluorescence", "check", "show"),
        help="calibrate camera, belt plane, encoder, robot arms and a fluorescence camera; check for drift",
        description="Calibrate the line: pixels → belt mm → robot mm, and the encoder.\n\n"
        + _STEPS
        + "\nsee docs/calibration.md for the full procedure.",
        metavar="STEP",
    )
