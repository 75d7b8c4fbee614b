"""``scallop calibrate robot``: step 4, the belt → robot transform of one arm."""

from __future__ import annotations

from scallop.app.commands.calibrate_common import (
    Out,
    csv_rows,
    load,
    num,
    picture_arg,
    read_one,
    step_parser,
    verdict_exit,
    write_picture,
)


def register(sub) -> None:
    p = step_parser(
        sub,
        "robot",
        "step 4: belt → robot transform from touched marks",
        "Step 4: the robot's tool touches 4-6 marks on the stopped belt that the camera also sees,\n"
        "spread over the area the arm picks in (at least 3, not on one line). A points CSV has a\n"
        "header and one row per mark, in one of these forms:\n"
        "  u,v,robot_x,robot_y,robot_z                  the mark's pixel in the calibration photo\n"
        "  belt_x,belt_y[,belt_z],robot_x,robot_y,robot_z  the mark in belt mm\n"
        "  corner,robot_x,robot_y,robot_z               a corner id of the board in --image\n"
        "(u,v rows may add belt_z: the mark's height above the belt, mm)\n"
        "An arm downstream of the camera: photograph the marks, run the belt until they reach the\n"
        "arm, touch them, and pass --moved-counts (the encoder counts run in between).\n\n"
        "examples:\n"
        "  scallop calibrate robot --calib line.json --arm left --points touches.csv\n"
        "  scallop calibrate robot --calib line.json --arm left --points corners.csv --image flat.png "
        "--board chessboard:9x6:25",
    )
    p.add_argument("--calib", required=True, help="calibration file (with intrinsics and belt) to update")
    p.add_argument("--arm", required=True, help="arm name, e.g. left")
    p.add_argument("--points", required=True, help="CSV of marks and touches (see above)")
    p.add_argument("--image", help="photo for corner ids (with --board)")
    p.add_argument("--board", help="board spec for corner ids")
    p.add_argument(
        "--moved-counts",
        type=int,
        default=0,
        metavar="COUNTS",
        help="the belt ran this many encoder counts between the photo and the touches (an arm "
        "downstream of the camera); needs the encoder step done",
    )
    p.add_argument("--dry-run", action="store_true", help="fit and report, do not write the file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    picture_arg(p, "robot-ARM")
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from scallop.calibration.boards import detect, parse_board
    from scallop.calibration.errors import (
        BoardNotFoundError,
        CalibrationError,
        InputFileError,
    )
    from scallop.calibration.robot import fit_robot

    out = Out(args.json)
    cal = load(args.calib, require=("intrinsics", "belt"))
    robot_cols = ("robot_x", "robot_y", "robot_z")
    rows, cols = csv_rows(
        args.points, [("u", "v") + robot_cols, ("belt_x", "belt_y") + robot_cols, ("corner",) + robot_cols]
    )
    f = args.points
    robot = np.array([[num(r, k, f, i + 2) for k in robot_cols] for i, r in enumerate(rows)]).reshape(-1, 3)
    z_default = float(cal.data["belt"].get("placement", {}).get("thickness_mm", 0.0))
    if cols[0] == "u":
        px = np.array([[num(r, "u", f, i + 2), num(r, "v", f, i + 2)] for i, r in enumerate(rows)]).reshape(-1, 2)
        z = np.array([num(r, "belt_z", f, i + 2) if r.get("belt_z") else 0.0 for i, r in enumerate(rows)])
        try:
            belt = np.column_stack(
                [np.vstack([cal.pixel_to_belt(p, z_mm=zz) for p, zz in zip(px, z)]) if len(px) else np.zeros((0, 2)), z]
            )
        except ValueError as e:
            raise InputFileError(f"{f}: {e}") from None
    elif cols[0] == "belt_x":
        belt = np.array(
            [
                [
                    num(r, "belt_x", f, i + 2),
                    num(r, "belt_y", f, i + 2),
                    num(r, "belt_z", f, i + 2) if r.get("belt_z") else 0.0,
                ]
                for i, r in enumerate(rows)
            ]
        )
        belt = belt.reshape(-1, 3)
    else:
        if not (args.image and args.board):
            raise CalibrationError("corner ids need --image PHOTO and --board SPEC (the board the marks are on)")
        board = parse_board(args.board)
        det = detect(read_one(args.image), board)
        if det is None:
            raise BoardNotFoundError(f"{args.image}: no {board} found")
        where = {int(k): n for n, k in enumerate(det.ids)}
        pts = []
        for i, r in enumerate(rows):
            cid = int(num(r, "corner", f, i + 2))
            if cid not in where:
                raise InputFileError(
                    f"{f} row {i + 2}: corner {cid} is not seen in {args.image} "
                    f"(seen: {len(where)} corners, ids 0..{board.n_corners - 1})"
                )
            pts.append(det.image_points[where[cid]])
        belt = np.column_stack(
            [cal.pixel_to_belt(np.array(pts).reshape(-1, 2), z_mm=z_default), np.full(len(pts), z_default)]
        )
    if args.moved_counts:
        cal.check(require=("encoder",))
        shift = cal.belt_shift_mm([args.moved_counts])[0]
        belt[:, :2] += shift
        out.say(f"  the belt ran {args.moved_counts} counts = {np.hypot(*shift):.2f} mm between photo and touches")
    out.say(f"step 1/2  {len(rows)} marks touched by arm {args.arm}")
    fit = fit_robot(belt, robot, args.arm)
    out.say("step 2/2  belt -> robot")
    out.say("   #   belt x     belt y     robot x    robot y    robot z   residual mm")
    for i, (b, r, e) in enumerate(zip(fit.belt_points, fit.robot_points, fit.residuals_mm)):
        out.say(f"  {i + 1:2d} {b[0]:9.2f} {b[1]:9.2f}  {r[0]:9.2f} {r[1]:9.2f} {r[2]:9.2f}   {e:.3f}")
    for n in fit.notes:
        out.say(f"  note: {n}")
    out.figures(fit.figures())
    out.verdict(fit.verdict, f"arm {args.arm}'s calibration")
    obj = fit.to_json()
    from scallop.calibration.pictures import PlanArm, PlanPoint, plan_picture

    back = fit.transform.inverse().apply(fit.robot_points)
    marks = [
        PlanPoint(str(i + 1), tuple(b[:2]), tuple(r[:2] - b[:2])) for i, (b, r) in enumerate(zip(fit.belt_points, back))
    ]
    obj["picture"] = write_picture(
        out,
        plan_picture(
            cal.camera,
            [PlanArm(args.arm, fit.transform.matrix())],
            marks,
            title=f"arm {args.arm}: marks touched (residuals x20), its base, on the belt frame",
        ),
        args.calib,
        f"robot-{args.arm}",
        args.picture,
        "the belt frame from above: the camera's view, the marks and their residuals, the arm's base",
    )
    if not args.dry_run:
        cal.set_arm(args.arm, fit.section())
        cal.save()
        out.say(f"wrote {cal.path} (arm {args.arm})")
        obj["file"] = str(cal.path)
    out.result(obj)
    return verdict_exit(fit.verdict)
