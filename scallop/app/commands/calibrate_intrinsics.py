"""``scallop calibrate intrinsics``: step 1, camera matrix and lens distortion."""

from __future__ import annotations

from pathlib import Path

from scallop.app.commands.calibrate_common import Out, camera_args, load, open_camera, step_parser, verdict_exit


def register(sub) -> None:
    p = step_parser(
        sub,
        "intrinsics",
        "step 1: camera matrix and lens distortion from photos of a board",
        "Step 1: camera intrinsics from 10-30 photos of a board held at different places and tilts\n"
        "(fill the corners of the image too). Board specs:\n"
        "  chessboard:COLSxROWS:SQUARE_MM             inner corners, e.g. chessboard:9x6:25\n"
        "  charuco:COLSxROWS:SQUARE_MM:MARKER_MM:DICT  squares, e.g. charuco:7x5:30:22:DICT_5X5_100\n\n"
        "examples:\n"
        "  scallop calibrate intrinsics --board chessboard:9x6:25 --out line.json photos/\n"
        "  scallop calibrate intrinsics --board charuco:7x5:30:22:DICT_5X5_100 --camera 0 --views 20 --out line.json\n"
        "  scallop calibrate intrinsics --board chessboard:9x6:25 --json photos/ > intrinsics.json\n\n"
        "Photos that cannot be used are listed with a reason (board not found, blurred, outlier error;\n"
        "with --skip-bad also unreadable image, wrong resolution).",
    )
    p.add_argument("photos", nargs="*", metavar="IMAGE_OR_DIR", help="photos, or folders of photos")
    p.add_argument("--board", required=True, help="board spec, e.g. chessboard:9x6:25")
    p.add_argument("--out", help="calibration file to create or update (its intrinsics part)")
    p.add_argument(
        "--coverage", metavar="PNG", help="coverage picture to write (default: next to --out, NAME.coverage.png)"
    )
    p.add_argument("--camera-name", default="", help="a name for this camera, kept in the file")
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out unreadable photos and photos of another resolution instead of stopping",
    )
    p.add_argument(
        "--max-edge-px",
        type=float,
        default=None,
        help="reject views whose board edges are wider than this (blur; default 4.5 px)",
    )
    p.add_argument(
        "--model",
        choices=("auto", "k3", "no-k3"),
        default="auto",
        help="distortion model: auto (k1 k2 p1 p2, k3 only if it clearly helps), k3, no-k3",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout, nothing else")
    camera_args(p, "the views")
    p.add_argument("--views", type=int, default=15, help="live capture: views to collect (default 15)")
    p.add_argument("--max-frames", type=int, default=900, help="live capture: give up after this many frames")
    p.set_defaults(func=run)


def run(args) -> int:
    import cv2

    from scallop.calibration.boards import parse_board
    from scallop.calibration.errors import CalibrationError, ImageError
    from scallop.calibration.intrinsics import (
        MAX_EDGE_PX,
        calibrate_intrinsics,
        capture_views,
        coverage_image,
        read_views,
    )
    from scallop.calibration.store import LineCalibration

    out = Out(args.json)
    board = parse_board(args.board)
    if args.photos and args.camera:
        raise CalibrationError("give photos or --camera, not both")
    if not args.photos and not args.camera:
        raise ImageError("no photos: pass IMAGE_OR_DIR... or capture live with --camera SOURCE")
    existing = None
    if args.out and Path(args.out).exists():
        existing = load(args.out, require=())  # refuse to overwrite something that is not ours

    out.say(f"step 1/3  collecting views of {board}")
    reasons: dict[str, str] = {}  # why each unreadable photo is
    if args.camera:
        if not (3 <= args.views <= 200):
            raise CalibrationError(f"views={args.views} is out of range: allowed 3..200")
        with open_camera(args) as cam:
            out.prompt(
                f"  camera {args.camera}: {cam.resolution[0]}x{cam.resolution[1]}; hold the board in view, "
                f"move and tilt it between views, reach the image corners"
            )
            views = capture_views(cam, board, args.views, max_frames=args.max_frames, on_progress=out.prompt)
        if not views:
            raise CalibrationError(f"no {board} seen in {args.max_frames} frames from camera {args.camera}")
    else:
        views = read_views(args.photos, reasons)
    out.say(f"  {len(views)} photos")

    out.say("step 2/3  detecting the board and solving")
    res = calibrate_intrinsics(
        views,
        board,
        skip_bad=args.skip_bad,
        max_edge_px=args.max_edge_px or MAX_EDGE_PX,
        model=args.model,
        reasons=reasons,
    )
    out.say(f"  {len(res.views)} views used, {len(res.rejected)} rejected")
    for r in res.rejected:
        out.say(f"    rejected {r.image}: {r.reason} ({r.detail})")
    sd = res.std
    out.say(f"  image {res.image_size[0]}x{res.image_size[1]}, distortion model {res.model}")
    out.say(f"  fx {res.fx:.2f} ± {sd.get('fx', 0):.2f} px   fy {res.fy:.2f} ± {sd.get('fy', 0):.2f} px")
    out.say(f"  cx {res.cx:.2f} ± {sd.get('cx', 0):.2f} px   cy {res.cy:.2f} ± {sd.get('cy', 0):.2f} px")
    out.say("  dist k1 k2 p1 p2 k3: " + " ".join(f"{v:.5f}" for v in res.dist))
    worst = sorted(res.views, key=lambda v: -v.rms_px)[:3]
    out.say("  worst views: " + ", ".join(f"{v.image} {v.rms_px:.3f} px" for v in worst))

    out.say("step 3/3  figures")
    out.figures(res.figures())
    out.verdict(res.verdict, "this intrinsics calibration")

    coverage_path = (
        Path(args.coverage) if args.coverage else (Path(args.out).with_suffix(".coverage.png") if args.out else None)
    )
    if coverage_path:
        coverage_path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(coverage_path), coverage_image(res)):
            raise CalibrationError(f"{coverage_path}: cannot write the coverage picture (use a .png name)")
        out.say(f"coverage picture: {coverage_path} (red cells have no corners: add views there)")
    obj = res.to_json()
    if args.out:
        cal = existing or LineCalibration.new(res.image_size, args.camera_name)
        had = [p for p in ("belt", "encoder", "arms") if cal.has(p)]
        cal.set_intrinsics(res.section(args.camera_name or cal.camera_name))
        path = cal.save(args.out)
        out.say(f"wrote {path} (intrinsics)")
        stale = cal.stale_parts()
        if stale:
            out.say("  now out of date, redo: " + "; ".join(stale.values()))
        elif had and not all(cal.has(p) for p in had):
            out.say("  the resolution changed: the belt, encoder and arm parts were removed; redo them")
        out.say(f"next: scallop calibrate belt --calib {path} --board SPEC PHOTO_OF_BOARD_FLAT_ON_BELT")
        # The same step calibrates a second, fluorescence camera, whose own file is not a line's.
        out.say(
            f"  (if {path} is a second, fluorescence camera's own file: it has no belt step; give it to "
            f"'scallop calibrate fluorescence --calib THE_LINES_FILE --fluorescence-intrinsics {path} …', "
            "docs/fluorescence.md)"
        )
        obj["file"] = str(path)
    if coverage_path:
        obj["coverage_png"] = str(coverage_path)
    out.result(obj)
    return verdict_exit(res.verdict)
