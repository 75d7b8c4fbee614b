"""``scallop calibrate check``: is the saved calibration still good (drift in mm)."""

from __future__ import annotations

from scallop.app.commands.calibrate_common import (
    Out,
    camera_args,
    capture_board_frame,
    load,
    picture_arg,
    read_one,
    step_parser,
    write_picture,
)


def register(sub) -> None:
    p = step_parser(
        sub,
        "check",
        "is the saved calibration still good? (drift in mm)",
        "Lay the board flat on the stopped belt and photograph it: the belt plane is measured again\n"
        "and compared with the saved calibration. With --same-place (the board exactly where it lay\n"
        "for the belt step) a turned or shifted camera is caught too.\n"
        "Exit code: 0 good, 1 marginal (recalibrate soon), 3 redo (stop and call an engineer).\n\n"
        "examples:\n"
        "  scallop calibrate check --calib line.json board_on_belt.png\n"
        "  scallop calibrate check --calib line.json --camera 0 --json",
    )
    p.add_argument("photo", nargs="?", metavar="PHOTO")
    p.add_argument("--calib", required=True, help="the line's calibration file")
    p.add_argument("--board", help="board spec (default: the one used for the belt step)")
    p.add_argument("--same-place", action="store_true", help="the board lies where it lay for the belt step")
    p.add_argument("--thickness-mm", type=float, default=None, help="board plate thickness (default: as saved)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    picture_arg(p, "check")
    camera_args(p, "the photo")
    p.set_defaults(func=run)


def run(args) -> int:
    from scallop.calibration.boards import parse_board
    from scallop.calibration.check import check_drift
    from scallop.calibration.errors import CalibrationError, ImageError

    out = Out(args.json)
    cal = load(args.calib, require=("intrinsics", "belt"))
    board = parse_board(args.board or cal.data["belt"].get("board"))
    if args.photo and args.camera:
        raise CalibrationError("give a photo or --camera, not both")
    if args.camera:
        image = capture_board_frame(args, board, out)
    elif args.photo:
        image = read_one(args.photo)
    else:
        raise ImageError("no photo: pass PHOTO of the board flat on the belt, or --camera SOURCE")
    rep = check_drift(cal, image, board, same_place=args.same_place, thickness_mm=args.thickness_mm)
    out.say(f"checked {cal.path} with {rep.corners} corners of {rep.board}")
    out.say(f"  camera height {rep.height_change_mm:+.2f} mm, tilt {rep.tilt_change_deg:+.3f} deg since calibration")
    out.figures(rep.figures())
    for n in rep.notes:
        out.say(f"  note: {n}")
    out.say(f"verdict: {rep.verdict.upper()} - {rep.advice}")
    from scallop.calibration.boards import detect
    from scallop.calibration.pictures import belt_frame_picture

    det = detect(image, board)
    obj = rep.to_json()
    obj["picture"] = write_picture(
        out,
        belt_frame_picture(
            image,
            cal.camera,
            None if det is None else det.image_points,
            title=f"saved belt frame on today's photo: {rep.verdict.upper()}",
        ),
        args.calib,
        "check",
        args.picture,
        "the saved belt frame and grid drawn on this photo, with the board's corners found in it",
        required=False,  # an operator's check: the calibration's folder may be read-only
    )
    out.result(obj)
    return {"good": 0, "marginal": 1, "redo": 3}[rep.verdict]
