"""``scallop calibrate board``: a printable calibration board."""

from __future__ import annotations

from pathlib import Path

from scallop.app.commands.calibrate_common import Out, step_parser


def register(sub) -> None:
    p = step_parser(
        sub,
        "board",
        "write a printable calibration board (PNG)",
        "Write a board to print. Print it at 100 % scale, glue it flat on a rigid plate and\n"
        "MEASURE a square: use the measured size in --board.\n\n"
        "example:\n  scallop calibrate board --board charuco:7x5:30:22:DICT_5X5_100 --dpi 300 --out board.png",
    )
    p.add_argument("--board", required=True, help="board spec (see 'scallop calibrate intrinsics --help')")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--dpi", type=float, default=300.0, help="printer resolution (default 300)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    import cv2

    from scallop.calibration.boards import parse_board
    from scallop.calibration.errors import CalibrationError

    out = Out(args.json)
    board = parse_board(args.board)
    if not (50 <= args.dpi <= 2400):
        raise CalibrationError(f"dpi={args.dpi:g} is out of range: allowed 50..2400")
    img, ppm, _ = board.render(args.dpi / 25.4)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise CalibrationError(f"{path}: cannot write the image (check the folder and the .png suffix)")
    w_mm, h_mm = img.shape[1] / ppm, img.shape[0] / ppm
    out.say(
        f"wrote {path}: {img.shape[1]}x{img.shape[0]} px = {w_mm:.1f} x {h_mm:.1f} mm at {args.dpi:g} dpi "
        f"({board}); print at 100 %, then measure a square"
    )
    out.result(
        {
            "file": str(path),
            "width_px": img.shape[1],
            "height_px": img.shape[0],
            "width_mm": round(w_mm, 2),
            "height_mm": round(h_mm, 2),
            "board": str(board),
        }
    )
    return 0
