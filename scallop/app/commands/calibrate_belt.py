"""``scallop calibrate belt``: step 2, the belt plane."""

from __future__ import annotations

from scallop.app.commands.calibrate_common import (
    Out,
    camera_args,
    capture_board_frame,
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
        "belt",
        "step 2: the belt plane from a board lying flat on the stopped belt",
        "Step 2: lay the board flat on the stopped belt, in the middle of the view, its rows along\n"
        "the travel; photograph it. Extra photos with the board moved across the belt pin the plane\n"
        "down over more of the field. The first photo's board sets the belt frame: its inner corner 0\n"
        "becomes the belt origin (or the belt point --origin X Y), its rows the belt's x axis (refined\n"
        "later by the encoder step). Which corner that is, and where the axes go, is drawn on the\n"
        "picture this step writes (NAME.belt.png): look at it before going on.\n\n"
        "examples:\n"
        "  scallop calibrate belt --calib line.json --board chessboard:9x6:25 flat.png\n"
        "  scallop calibrate belt --calib line.json --board chessboard:9x6:25 --thickness-mm 3 left.png mid.png right.png\n"
        "  scallop calibrate belt --calib line.json --board chessboard:9x6:25 --camera 0",
    )
    p.add_argument("photos", nargs="*", metavar="PHOTO")
    p.add_argument("--calib", required=True, help="calibration file (with intrinsics) to update")
    p.add_argument("--board", required=True, help="board spec, e.g. chessboard:9x6:25")
    p.add_argument(
        "--travel",
        choices=("right", "left", "down", "up"),
        default="right",
        help="which way the belt moves across the image (default right)",
    )
    p.add_argument(
        "--origin",
        nargs=2,
        type=float,
        metavar=("X", "Y"),
        default=(0.0, 0.0),
        help="belt coordinates (mm) given to the first board's inner corner 0 (default 0 0)",
    )
    p.add_argument("--yaw", type=float, default=0.0, help="the board's known turn from the travel, degrees")
    p.add_argument("--thickness-mm", type=float, default=0.0, help="board plate thickness (default 0)")
    p.add_argument("--dry-run", action="store_true", help="measure and report, do not write the file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    picture_arg(p, "belt")
    camera_args(p, "the photo")
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from scallop.calibration.belt import measure_belt
    from scallop.calibration.boards import parse_board
    from scallop.calibration.errors import CalibrationError, ImageError

    out = Out(args.json)
    board = parse_board(args.board)
    cal = load(args.calib, require=("intrinsics",))
    if args.photos and args.camera:
        raise CalibrationError("give photos or --camera, not both")
    out.say(f"step 1/2  photo of {board} flat on the belt")
    if args.camera:
        images = [capture_board_frame(args, board, out)]
    elif args.photos:
        images = [read_one(p) for p in args.photos]
    else:
        raise ImageError("no photo: pass PHOTO... of the board flat on the belt, or --camera SOURCE")
    res = measure_belt(
        images,
        board,
        cal.K,
        cal.dist,
        cal.image_size,
        travel=args.travel,
        origin_mm=tuple(args.origin),
        yaw_deg=args.yaw,
        thickness_mm=args.thickness_mm,
    )
    out.say("step 2/2  belt plane")
    out.say(
        f"  camera {res.camera_height_mm:.1f} mm above the belt, tilted {res.tilt_deg:.2f} deg from vertical, "
        f"{res.mm_per_px:.4f} mm/px at the image centre"
    )
    out.say(
        f"  {len(res.residuals_mm)} corners from {len(images)} photo(s): residual on the belt "
        f"RMS {res.residual_rms_mm:.3f} mm, worst {res.residual_max_mm:.3f} mm"
    )
    out.figures(res.figures())
    out.verdict(res.verdict, "this belt calibration")
    from scallop.calibration.pictures import belt_frame_picture

    first = res.corner_photo == 0
    order = np.argsort(res.corner_ids[first])
    o = res.placement["origin_mm"]
    out.say(f"  the belt origin ({o[0]:g}, {o[1]:g}) is the first photo's board corner 0, drawn on the picture")
    obj = res.to_json()
    obj["picture"] = write_picture(
        out,
        belt_frame_picture(
            images[0],
            res.camera,
            res.corners_px[first][order],
            z_mm=args.thickness_mm,
            title=f"belt frame: corner 0 = ({o[0]:g}, {o[1]:g}) mm, +x = travel",
        ),
        args.calib,
        "belt",
        args.picture,
        "board corners numbered, corner 0 = the belt origin, the belt axes and a 100 mm grid",
    )
    if not args.dry_run:
        had = [p for p in ("encoder", "arms") if cal.has(p)]
        cal.set_belt(res.section())
        cal.save()
        out.say(f"wrote {cal.path} (belt)")
        if had:
            out.say("  the encoder and arm parts were measured against the previous belt pose: redo them")
        out.say(
            f"next: scallop calibrate encoder --calib {cal.path} …, then scallop calibrate robot --calib "
            f"{cal.path} --arm NAME --points POINTS.csv"
        )
        obj["file"] = str(cal.path)
    out.result(obj)
    return verdict_exit(res.verdict)
