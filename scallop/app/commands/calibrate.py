"""``scallop calibrate …``: the calibration chain, one step at a time.

    intrinsics → belt → encoder → robot   (check and show at any time)

Every step prints its figures and a verdict (good / marginal / redo) with the limits, and
writes its part into the one calibration file of the line (``--out`` / ``--calib``).
With ``--json`` a step prints one JSON object on stdout and nothing else (progress goes to
stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

_STEPS = """\
steps, in order:
  scallop calibrate board      --board chessboard:9x6:25 --out board.png    print a board
  scallop calibrate intrinsics --board chessboard:9x6:25 --out line.json photos/
  scallop calibrate belt       --calib line.json --board chessboard:9x6:25 flat.png
  scallop calibrate encoder    --calib line.json --board chessboard:9x6:25 --frames run/ --counts run/counts.csv
  scallop calibrate robot      --calib line.json --arm left --points touches.csv
  scallop calibrate check      --calib line.json board_on_belt.png
  scallop calibrate show       line.json
"""


def register(sub) -> None:
    p = sub.add_parser(
        "calibrate",
        help="calibrate camera, belt plane, encoder and robot arms; check for drift",
        description="Calibrate the line: pixels → belt mm → robot mm, and the encoder.\n\n"
        + _STEPS
        + "\nsee docs/calibration.md for the full procedure.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cs = p.add_subparsers(dest="calibrate", metavar="STEP")
    cs.required = True
    _add_board(cs)
    _add_intrinsics(cs)
    _add_belt(cs)
    _add_encoder(cs)
    _add_robot(cs)
    _add_check(cs)
    _add_show(cs)


def _parser(cs, name: str, help: str, description: str):
    return cs.add_parser(name, help=help, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)


def _camera_args(p, what: str) -> None:
    g = p.add_argument_group("live capture (instead of photo files)")
    g.add_argument(
        "--camera",
        metavar="SOURCE",
        help=f"capture {what} from a camera: device index (0), video file, stream URL or image folder",
    )
    g.add_argument("--width", type=int, default=0, help="requested capture width (default: the device's)")
    g.add_argument("--height", type=int, default=0, help="requested capture height (default: the device's)")


# ====================================================================== output
class _Out:
    """Human text to stdout; with --json only the one JSON object goes to stdout and the
    text is dropped (so an error stays the single line on stderr), except prompts for a
    live capture, which go to stderr because someone is holding the board."""

    def __init__(self, json_mode: bool) -> None:
        self.json_mode = json_mode

    def say(self, text: str = "") -> None:
        if not self.json_mode:
            print(text, flush=True)

    def prompt(self, text: str) -> None:
        print(text, file=sys.stderr if self.json_mode else sys.stdout, flush=True)

    def figures(self, figs) -> None:
        for f in figs:
            self.say(f"  {f.describe()}")

    def verdict(self, verdict: str, what: str) -> None:
        text = {"good": "GOOD", "marginal": "MARGINAL", "redo": "REDO"}[verdict]
        advice = {
            "good": f"{what} can be used.",
            "marginal": f"{what} is usable but not reliable; redo it when you can (see the figures above).",
            "redo": f"{what} should not be used: fix what the figures point at and redo this step.",
        }[verdict]
        self.say(f"verdict: {text} - {advice}")

    def result(self, obj: dict) -> None:
        if self.json_mode:
            print(json.dumps(obj), flush=True)


def _open_camera(args):
    from scallop.vision.camera import OpenCVCamera, OpenCVCameraConfig

    try:
        cfg = OpenCVCameraConfig(source=args.camera, width=args.width, height=args.height)
    except ValueError as e:
        from scallop.calibration.errors import CalibrationError

        raise CalibrationError(f"--camera {args.camera}: {e}") from None
    return OpenCVCamera(cfg)


def _capture_board_frame(args, board, out: _Out, tries: int = 150):
    """One frame from the live camera in which the board is found."""
    from scallop.calibration.boards import detect
    from scallop.calibration.errors import BoardNotFoundError

    out.prompt(f"capturing from camera {args.camera}: lay the board flat in view …")
    from scallop.vision.camera import EndOfStreamError

    with _open_camera(args) as cam:
        for _ in range(tries):
            try:
                frame = cam.read()
            except EndOfStreamError:
                break
            if detect(frame.image, board, refine=False) is not None:
                return frame.image
    raise BoardNotFoundError(f"no {board} seen in {tries} frames from camera {args.camera}: check the view and --board")


def _read_one(path: str):
    """One photo as BGR, with a CalibrationError naming it when it cannot be read."""
    from scallop.calibration.errors import ImageError
    from scallop.calibration.intrinsics import load_image

    p = Path(path)
    if not p.is_file():
        raise ImageError(f"{p}: no such photo")
    img = load_image(p)
    if img is None:
        raise ImageError(f"{p}: not a readable image (corrupt or unsupported format)")
    return img


def _load(path: str, **kw):
    from scallop.calibration.store import LineCalibration

    return LineCalibration.load(path, **kw)


def _csv_rows(path: str, need_any: list[tuple[str, ...]]) -> tuple[list[dict], tuple[str, ...]]:
    """Rows of a CSV with a header; returns the rows and the first column set of ``need_any``
    that the header has."""
    import csv

    from scallop.calibration.errors import InputFileError

    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"{p}: no such file")
    try:
        with p.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(row for row in f if row.strip() and not row.lstrip().startswith("#"))
            header = tuple(h.strip() for h in (reader.fieldnames or ()))
            rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
    except (UnicodeDecodeError, csv.Error) as e:
        raise InputFileError(f"{p}: not a readable CSV file ({e})") from None
    for cols in need_any:
        if all(c in header for c in cols):
            return rows, cols
    wanted = " or ".join(",".join(c) for c in need_any)
    raise InputFileError(f"{p}: header {','.join(header) or '(none)'} lacks the columns: expected {wanted}")


def _num(row: dict, key: str, path: str, line: int) -> float:
    import math

    from scallop.calibration.errors import InputFileError

    try:
        v = float(row[key])
    except (KeyError, ValueError, TypeError):
        raise InputFileError(f"{path} row {line}: {key}={row.get(key)!r} is not a number") from None
    if not math.isfinite(v):
        raise InputFileError(f"{path} row {line}: {key} is not finite")
    return v


# ====================================================================== board
def _add_board(cs) -> None:
    p = _parser(
        cs,
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
    p.set_defaults(func=_run_board)


def _run_board(args) -> int:
    import cv2

    from scallop.calibration.boards import parse_board
    from scallop.calibration.errors import CalibrationError

    out = _Out(args.json)
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


# ====================================================================== intrinsics
def _add_intrinsics(cs) -> None:
    p = _parser(
        cs,
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
    _camera_args(p, "the views")
    p.add_argument("--views", type=int, default=15, help="live capture: views to collect (default 15)")
    p.add_argument("--max-frames", type=int, default=900, help="live capture: give up after this many frames")
    p.set_defaults(func=_run_intrinsics)


def _run_intrinsics(args) -> int:
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

    out = _Out(args.json)
    board = parse_board(args.board)
    if args.photos and args.camera:
        raise CalibrationError("give photos or --camera, not both")
    if not args.photos and not args.camera:
        raise ImageError("no photos: pass IMAGE_OR_DIR... or capture live with --camera SOURCE")
    existing = None
    if args.out and Path(args.out).exists():
        existing = _load(args.out, require=())  # refuse to overwrite something that is not ours

    out.say(f"step 1/3  collecting views of {board}")
    if args.camera:
        if not (3 <= args.views <= 200):
            raise CalibrationError(f"views={args.views} is out of range: allowed 3..200")
        with _open_camera(args) as cam:
            out.prompt(
                f"  camera {args.camera}: {cam.resolution[0]}x{cam.resolution[1]}; hold the board in view, "
                f"move and tilt it between views, reach the image corners"
            )
            views = capture_views(cam, board, args.views, max_frames=args.max_frames, on_progress=out.prompt)
        if not views:
            raise CalibrationError(f"no {board} seen in {args.max_frames} frames from camera {args.camera}")
    else:
        views = read_views(args.photos)
    out.say(f"  {len(views)} photos")

    out.say("step 2/3  detecting the board and solving")
    res = calibrate_intrinsics(
        views, board, skip_bad=args.skip_bad, max_edge_px=args.max_edge_px or MAX_EDGE_PX, model=args.model
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
        obj["file"] = str(path)
    if coverage_path:
        obj["coverage_png"] = str(coverage_path)
    out.result(obj)
    return 0


# ====================================================================== belt
def _add_belt(cs) -> None:
    p = _parser(
        cs,
        "belt",
        "step 2: the belt plane from a board lying flat on the stopped belt",
        "Step 2: lay the board flat on the stopped belt, in the middle of the view, its rows along\n"
        "the travel; photograph it. Extra photos with the board moved across the belt pin the plane\n"
        "down over more of the field. The board's first inner corner becomes the belt origin\n"
        "(or --origin X Y), its rows the belt's x axis (refined later by the encoder step).\n\n"
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
    _camera_args(p, "the photo")
    p.set_defaults(func=_run_belt)


def _run_belt(args) -> int:
    from scallop.calibration.belt import measure_belt
    from scallop.calibration.boards import parse_board
    from scallop.calibration.errors import CalibrationError, ImageError

    out = _Out(args.json)
    board = parse_board(args.board)
    cal = _load(args.calib, require=("intrinsics",))
    if args.photos and args.camera:
        raise CalibrationError("give photos or --camera, not both")
    out.say(f"step 1/2  photo of {board} flat on the belt")
    if args.camera:
        images = [_capture_board_frame(args, board, out)]
    elif args.photos:
        images = [_read_one(p) for p in args.photos]
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
    obj = res.to_json()
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
    return 0


# ====================================================================== encoder
def _add_encoder(cs) -> None:
    p = _parser(
        cs,
        "encoder",
        "step 3: encoder counts per mm and the direction of travel",
        "Step 3: the encoder's counts per mm and the direction of travel, either from a board\n"
        "riding the belt through the view (photos plus the encoder count latched for each), or\n"
        "from a robot touching one mark at two or more belt positions. The belt frame is then\n"
        "turned so its x axis follows the measured travel exactly (arm calibrations carry over).\n\n"
        "counts CSV (track):    image,counts          e.g. f000.png,10233\n"
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
    p.set_defaults(func=_run_encoder)


def _run_encoder(args) -> int:
    import numpy as np

    from scallop.calibration.encoder import encoder_from_touches, encoder_from_track
    from scallop.calibration.errors import CalibrationError

    out = _Out(args.json)
    if bool(args.touches) == bool(args.counts):
        raise CalibrationError("give either --counts (a board tracked in frames) or --touches (robot touches)")
    if args.touches:
        if not args.arm:
            raise CalibrationError("--touches needs --arm NAME (the arm that touched, already calibrated)")
        cal = _load(args.calib, require=("intrinsics", "belt"), arms=(args.arm,))
        rows, _ = _csv_rows(args.touches, [("counts", "robot_x", "robot_y", "robot_z")])
        counts = [_num(r, "counts", args.touches, i + 2) for i, r in enumerate(rows)]
        xyz = np.array(
            [[_num(r, k, args.touches, i + 2) for k in ("robot_x", "robot_y", "robot_z")] for i, r in enumerate(rows)]
        ).reshape(-1, 3)
        out.say(f"step 1/2  {len(rows)} touches of arm {args.arm}")
        res = encoder_from_touches(counts, cal.robot_to_belt(args.arm, xyz))
    else:
        if not args.board:
            raise CalibrationError("--counts needs --board SPEC (the board riding the belt)")
        cal = _load(args.calib, require=("intrinsics", "belt"))
        rows, _ = _csv_rows(args.counts, [("image", "counts")])
        base = Path(args.frames) if args.frames else Path(args.counts).parent
        thick = args.thickness_mm
        if thick is None:
            thick = float(cal.data["belt"].get("placement", {}).get("thickness_mm", 0.0))
        frames = []
        for i, r in enumerate(rows):
            frames.append((r["image"], _read_one(str(base / r["image"])), int(_num(r, "counts", args.counts, i + 2))))
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
    if not args.dry_run:
        turned = cal.set_encoder(res.section(), align=not args.no_align)
        cal.save()
        if turned:
            out.say(f"  belt frame turned {turned:+.3f} deg about the board origin so x follows the travel")
        out.say(f"wrote {cal.path} (encoder)")
        obj["file"] = str(cal.path)
        obj["frame_turned_deg"] = turned
    out.result(obj)
    return 0


# ====================================================================== robot
def _add_robot(cs) -> None:
    p = _parser(
        cs,
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
    p.set_defaults(func=_run_robot)


def _run_robot(args) -> int:
    import numpy as np

    from scallop.calibration.boards import detect, parse_board
    from scallop.calibration.errors import (
        BoardNotFoundError,
        CalibrationError,
        InputFileError,
    )
    from scallop.calibration.robot import fit_robot

    out = _Out(args.json)
    cal = _load(args.calib, require=("intrinsics", "belt"))
    robot_cols = ("robot_x", "robot_y", "robot_z")
    rows, cols = _csv_rows(
        args.points, [("u", "v") + robot_cols, ("belt_x", "belt_y") + robot_cols, ("corner",) + robot_cols]
    )
    f = args.points
    robot = np.array([[_num(r, k, f, i + 2) for k in robot_cols] for i, r in enumerate(rows)]).reshape(-1, 3)
    z_default = float(cal.data["belt"].get("placement", {}).get("thickness_mm", 0.0))
    if cols[0] == "u":
        px = np.array([[_num(r, "u", f, i + 2), _num(r, "v", f, i + 2)] for i, r in enumerate(rows)]).reshape(-1, 2)
        z = np.array([_num(r, "belt_z", f, i + 2) if r.get("belt_z") else 0.0 for i, r in enumerate(rows)])
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
                    _num(r, "belt_x", f, i + 2),
                    _num(r, "belt_y", f, i + 2),
                    _num(r, "belt_z", f, i + 2) if r.get("belt_z") else 0.0,
                ]
                for i, r in enumerate(rows)
            ]
        )
        belt = belt.reshape(-1, 3)
    else:
        if not (args.image and args.board):
            raise CalibrationError("corner ids need --image PHOTO and --board SPEC (the board the marks are on)")
        board = parse_board(args.board)
        det = detect(_read_one(args.image), board)
        if det is None:
            raise BoardNotFoundError(f"{args.image}: no {board} found")
        where = {int(k): n for n, k in enumerate(det.ids)}
        pts = []
        for i, r in enumerate(rows):
            cid = int(_num(r, "corner", f, i + 2))
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
    if not args.dry_run:
        cal.set_arm(args.arm, fit.section())
        cal.save()
        out.say(f"wrote {cal.path} (arm {args.arm})")
        obj["file"] = str(cal.path)
    out.result(obj)
    return 0


# ====================================================================== check
def _add_check(cs) -> None:
    p = _parser(
        cs,
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
    _camera_args(p, "the photo")
    p.set_defaults(func=_run_check)


def _run_check(args) -> int:
    from scallop.calibration.boards import parse_board
    from scallop.calibration.check import check_drift
    from scallop.calibration.errors import CalibrationError, ImageError

    out = _Out(args.json)
    cal = _load(args.calib, require=("intrinsics", "belt"))
    board = parse_board(args.board or cal.data["belt"].get("board"))
    if args.photo and args.camera:
        raise CalibrationError("give a photo or --camera, not both")
    if args.camera:
        image = _capture_board_frame(args, board, out)
    elif args.photo:
        image = _read_one(args.photo)
    else:
        raise ImageError("no photo: pass PHOTO of the board flat on the belt, or --camera SOURCE")
    rep = check_drift(cal, image, board, same_place=args.same_place, thickness_mm=args.thickness_mm)
    out.say(f"checked {cal.path} with {rep.corners} corners of {rep.board}")
    out.say(f"  camera height {rep.height_change_mm:+.2f} mm, tilt {rep.tilt_change_deg:+.3f} deg since calibration")
    out.figures(rep.figures())
    for n in rep.notes:
        out.say(f"  note: {n}")
    out.say(f"verdict: {rep.verdict.upper()} - {rep.advice}")
    out.result(rep.to_json())
    return {"good": 0, "marginal": 1, "redo": 3}[rep.verdict]


# ====================================================================== show
def _add_show(cs) -> None:
    p = _parser(
        cs,
        "show",
        "print a calibration file's parts, figures and what is missing or stale",
        "example:\n  scallop calibrate show line.json\n  scallop calibrate show --json line.json",
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run_show)


def _run_show(args) -> int:
    from scallop.calibration.store import PARTS

    out = _Out(args.json)
    cal = _load(args.file, require=())
    s = cal.summary()
    w, h = cal.image_size
    out.say(f"{cal.path}: format {s['format']} v{s['version']}, written {s['written']}")
    out.say(f"  camera {cal.camera_name or '(unnamed)'} {w}x{h}")
    d = cal.data
    if cal.has("intrinsics"):
        i = d["intrinsics"]
        K = i["K"]
        out.say(
            f"  intrinsics  {i.get('when')}: fx {K[0][0]:.2f} fy {K[1][1]:.2f} cx {K[0][2]:.2f} cy {K[1][2]:.2f} px, "
            f"RMS {i.get('rms_px', float('nan')):.3f} px, {i.get('views_used')} views, {i.get('verdict')}"
        )
    if cal.has("belt"):
        b = d["belt"]
        out.say(
            f"  belt        {b.get('when')}: height {b.get('camera_height_mm', float('nan')):.1f} mm, "
            f"{b.get('mm_per_px', float('nan')):.4f} mm/px, residual worst {b.get('residual_max_mm', float('nan')):.3f} mm, "
            f"{b.get('verdict')}"
        )
    if cal.has("encoder"):
        e = d["encoder"]
        out.say(
            f"  encoder     {e.get('when')}: {e['counts_per_mm']:.5f} counts/mm, sign {e['count_sign']:+d}, "
            f"{e.get('method')}, {e.get('verdict')}"
        )
    for name, a in d.get("arms", {}).items():
        out.say(
            f"  arm {name:<7} {a.get('when')}: RMS {a.get('rms_mm', float('nan')):.3f} mm over "
            f"{len(a.get('residuals_mm', []))} points, {a.get('verdict')}"
        )
    missing = [p for p in PARTS if not cal.has(p)]
    stale = cal.stale_parts()
    for p in missing:
        out.say(f"  missing: {p}")
    for why in stale.values():
        out.say(f"  stale: {why}")
    ready = not missing and not stale
    out.say("ready for the line" if ready else "not ready for the line: complete the steps above")
    s["ready"] = ready
    s["missing"] = missing
    s["stale"] = list(stale.values())
    out.result(s)
    return 0
