"""``scallop calibrate fluorescence``: the fluorescence camera registered to the colour camera."""

from __future__ import annotations

from scallop.app.commands.calibrate_common import (
    Out,
    load,
    picture_arg,
    read_one,
    step_parser,
    verdict_exit,
    write_picture,
)


def register(sub) -> None:
    p = step_parser(
        sub,
        "fluorescence",
        "register the second, fluorescence camera to the colour camera (belt-plane homography)",
        "For a line with a second, monochrome camera for the fluorescence channel (docs/fluorescence.md).\n"
        "Stop the belt and lay the board flat where both cameras see it whole, lit so that both see it;\n"
        "take one photo with each camera, the board unmoved: that is one pair. Move the board and repeat:\n"
        "at least 3 pairs, better 5 (the middle and the four corners of the area both cameras see).\n"
        "--colour lists the colour camera's photos and --fluorescence the fluorescence camera's, pair by\n"
        "pair in the same order. Needs the colour camera's intrinsics and belt steps first. Prints the\n"
        "corners' residuals on the belt and a verdict; writes the 'fluorescence' part of the file and a\n"
        "picture of the two photos laid over each other (NAME.fluorescence.png).\n\n"
        "examples:\n"
        "  scallop calibrate fluorescence --calib line.json --board charuco:8x6:25:18:DICT_5X5_100 \\\n"
        "      --thickness-mm 3 --colour c1.png c2.png c3.png --fluorescence f1.png f2.png f3.png\n"
        "  scallop calibrate fluorescence --calib line.json --board charuco:8x6:25:18:DICT_5X5_100 \\\n"
        "      --thickness-mm 3 --fluorescence-intrinsics uv-camera.json --colour c*.png --fluorescence f*.png",
    )
    p.add_argument("--calib", required=True, help="the line's calibration file (with intrinsics and belt) to update")
    p.add_argument("--board", required=True, help="board spec, e.g. charuco:8x6:25:18:DICT_5X5_100")
    p.add_argument(
        "--thickness-mm",
        type=float,
        required=True,
        help="the board plate's thickness in mm (0 for a sheet lying on the belt): the mapping holds on its face",
    )
    p.add_argument("--colour", nargs="+", required=True, metavar="PHOTO", help="the colour camera's photo of each pair")
    p.add_argument(
        "--fluorescence",
        nargs="+",
        required=True,
        metavar="PHOTO",
        help="the fluorescence camera's photo of each pair, in the same order",
    )
    p.add_argument(
        "--fluorescence-intrinsics",
        metavar="FILE",
        help="the fluorescence camera's own calibration file ('scallop calibrate intrinsics --out FILE' with its "
        "photos): its lens distortion is then taken out; without it the lens is taken to be distortion-free",
    )
    p.add_argument("--dry-run", action="store_true", help="measure and report, do not write the file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    picture_arg(p, "fluorescence")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from scallop.calibration.boards import parse_board
    from scallop.calibration.errors import BoardSpecError, ImageError
    from scallop.calibration.fluorescence import register_fluorescence
    from scallop.errors import check_number

    out = Out(args.json)
    board = parse_board(args.board)
    # The options before the photos are read (the step checks it again, for callers from Python).
    check_number("--thickness-mm", args.thickness_mm, 0.0, 100.0, error=BoardSpecError)
    cal = load(args.calib, require=("intrinsics", "belt"))
    if len(args.colour) != len(args.fluorescence):
        raise ImageError(
            f"{len(args.colour)} colour photo(s) but {len(args.fluorescence)} fluorescence photo(s): give one of "
            "each per board placement, in the same order"
        )
    intr = None
    if args.fluorescence_intrinsics:
        fc = load(args.fluorescence_intrinsics, require=("intrinsics",))
        intr = (fc.K, fc.dist, fc.image_size, fc.data["intrinsics"].get("id"))
    colour = [read_one(p) for p in args.colour]
    fluo = [read_one(p) for p in args.fluorescence]
    names = [(Path(c).name, Path(f).name) for c, f in zip(args.colour, args.fluorescence)]
    fh, fw = fluo[0].shape[:2]
    cw, ch = cal.image_size
    out.say(
        f"step 1/2  {len(colour)} pair(s) of photos of {board} flat on the belt "
        f"(colour {cw}x{ch}, fluorescence {fw}x{fh})"
    )
    res = register_fluorescence(
        colour, fluo, board, cal, thickness_mm=args.thickness_mm, fluo_intrinsics=intr, names=names
    )
    out.say(f"step 2/2  the fluorescence camera on the colour camera (the plane {res.plane_z_mm:g} mm above the belt)")
    out.say(
        f"  {len(res.residuals_mm)} corners from {res.pairs} pair(s): residual on the belt median "
        f"{res.residual_median_mm:.3f} mm, 95 % {res.residual_p95_mm:.3f} mm, worst {res.residual_max_mm:.3f} mm "
        f"({res.residual_max_px:.2f} colour px)"
    )
    for k, (worst, (cn, fn)) in enumerate(zip(res.pair_worst_mm(), res.pair_names)):
        out.say(f"  pair {k + 1}: {cn} + {fn}: worst corner {worst:.3f} mm")
    out.say(
        f"  the fluorescence camera sees {100 * res.overlap_share:.1f} % of the colour frame, at "
        f"{res.mm_per_px:.4f} mm/px at its centre (colour camera {res.colour_mm_per_px:.4f} mm/px); the boards "
        f"covered {100 * res.board_coverage:.0f} % of that overlap"
    )
    lens = "its intrinsics" if intr is not None else "none given: taken as distortion-free"
    out.say(
        f"  lens distortion of the fluorescence camera: {lens}; a plain perspective warp with the homography "
        f"would be off by up to {res.plain_warp_max_mm:.2f} mm"
    )
    if res.parallax_mm_per_10mm is not None:
        out.say(
            f"  the cameras' centres are {res.baseline_mm:.0f} mm apart: a point 10 mm above the board's face lands "
            f"{res.parallax_mm_per_10mm:.2f} mm off (parallax; the mapping holds on the board's plane)"
        )
    else:
        out.say("  parallax above the board's plane: not known without the fluorescence camera's intrinsics")
    out.figures(res.figures())
    for note in res.notes:
        out.say(f"  note: {note}")
    out.verdict(res.verdict, "this fluorescence registration")
    obj = res.to_json()
    obj["picture"] = write_picture(
        out,
        res.picture(colour[0], fluo[0]),
        args.calib,
        "fluorescence",
        args.picture,
        "the first pair laid over each other (red: fluorescence, cyan: colour; grey where they agree), the "
        "fluorescence camera's view, every corner's residual x20",
    )
    if not args.dry_run:
        cal.set_fluorescence(res.section())
        cal.save()
        out.say(f"wrote {cal.path} (fluorescence)")
        obj["file"] = str(cal.path)
    out.result(obj)
    return verdict_exit(res.verdict)
