"""``scallop calibrate encoder``: step 3, encoder counts per mm and the direction of travel."""

from __future__ import annotations

from pathlib import Path

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
        "encoder",
        "step 3: encoder counts per mm and the direction of travel",
        "Step 3: the encoder's counts per mm and the direction of travel, either from a board\n"
        "riding the belt through the view (photos plus the encoder count latched for each), or\n"
        "from a robot touching one mark at two or more belt positions. The belt frame is then\n"
        "turned so its x axis follows the measured travel exactly (arm calibrations carry over).\n\n"
        "counts CSV (track):    image,counts          e.g. f000.png,10233\n"
        "  (a recording's frames.csv from 'scallop capture' is one: --counts REC/frames.csv)\n"
        "touches CSV:           counts,robot_x,robot_y,robot_z\n\n"
        "examples:\n"
        "  scallop calibrate encoder --calib line.json --board chessboard:9x6:25 --frames run/ --counts run/counts.csv\n"
        "  scallop calibrate encoder --calib line.json --arm left --touches touches.csv",
    )
    p.add_argument("--calib", required=True, help="calibration file (with intrinsics and belt) to update")
    p.add_argument("--board", help="track: the board riding the belt")
    p.add_argument("--frames", help="track: folder of frames (or list them in the counts CSV)")
    p.add_argument("--counts", help="track: CSV image,counts in time order")
    p.add_argument(
        "--thickness-mm", type=float, default=None, help="track: board plate thickness (default: as in the belt step)"
    )
    p.add_argument("--touches", help="touches: CSV counts,robot_x,robot_y,robot_z in time order")
    p.add_argument("--arm", help="touches: the arm that touched (already calibrated)")
    p.add_argument("--no-align", action="store_true", help="keep the belt frame as the board defined it")
    p.add_argument("--dry-run", action="store_true", help="measure and report, do not write the file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    picture_arg(p, "encoder")
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from scallop.calibration.encoder import encoder_from_touches, encoder_from_track
    from scallop.calibration.errors import CalibrationError

    out = Out(args.json)
    if bool(args.touches) == bool(args.counts):
        raise CalibrationError("give either --counts (a board tracked in frames) or --touches (robot touches)")
    if args.touches:
        if not args.arm:
            raise CalibrationError("--touches needs --arm NAME (the arm that touched, already calibrated)")
        cal = load(args.calib, require=("intrinsics", "belt"), arms=(args.arm,))
        rows, _ = csv_rows(args.touches, [("counts", "robot_x", "robot_y", "robot_z")])
        counts = [num(r, "counts", args.touches, i + 2) for i, r in enumerate(rows)]
        xyz = np.array(
            [[num(r, k, args.touches, i + 2) for k in ("robot_x", "robot_y", "robot_z")] for i, r in enumerate(rows)]
        ).reshape(-1, 3)
        out.say(f"step 1/2  {len(rows)} touches of arm {args.arm}")
        res = encoder_from_touches(counts, cal.robot_to_belt(args.arm, xyz))
    else:
        if not args.board:
            raise CalibrationError("--counts needs --board SPEC (the board riding the belt)")
        cal = load(args.calib, require=("intrinsics", "belt"))
        rows, _ = csv_rows(args.counts, [("image", "counts")])
        base = Path(args.frames) if args.frames else Path(args.counts).parent
        thick = args.thickness_mm
        if thick is None:
            thick = float(cal.data["belt"].get("placement", {}).get("thickness_mm", 0.0))
        frames = []
        for i, r in enumerate(rows):
            frames.append((r["image"], read_one(str(base / r["image"])), int(num(r, "counts", args.counts, i + 2))))
        out.say(f"step 1/2  {len(frames)} frames of the board riding the belt")
        res = encoder_from_track(cal.camera, frames, args.board, thickness_mm=thick)
        for s in res.skipped:
            out.say(f"    skipped {s}")
    out.say("step 2/2  encoder")
    direction = "rise" if res.count_sign > 0 else "fall"
    out.say(
        f"  {res.counts_per_mm:.5f} counts/mm ({1000 / res.counts_per_mm:.4f} um/count); counts {direction} as "
        f"the belt moves forward; travel {res.angle_deg:+.3f} deg from the belt x axis"
    )
    out.say(f"  {len(res.residuals_mm)} observations over {res.travel_mm:.1f} mm of travel")
    out.figures(res.figures())
    out.verdict(res.verdict, "this encoder calibration")
    obj = res.to_json()
    if not args.touches:
        from scallop.calibration.pictures import track_picture

        obj["picture"] = write_picture(
            out,
            track_picture(
                frames[len(frames) // 2][1],
                cal.camera,
                res.points_mm,
                res.travel_dir,
                z_mm=thick,
                title=f"{res.counts_per_mm:.4f} counts/mm; travel {res.angle_deg:+.2f} deg from belt +x",
            ),
            args.calib,
            "encoder",
            args.picture,
            "the board's corner 0 in every frame and the measured travel, on the belt frame",
        )
    if not args.dry_run:
        turned = cal.set_encoder(res.section(), align=not args.no_align)
        cal.save()
        if turned:
            out.say(f"  belt frame turned {turned:+.3f} deg about the board origin so x follows the travel")
        out.say(f"wrote {cal.path} (encoder)")
        obj["file"] = str(cal.path)
        obj["frame_turned_deg"] = turned
    out.result(obj)
    return verdict_exit(res.verdict)
