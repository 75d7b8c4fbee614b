"""What the ``scallop calibrate`` steps share: their parser, the output (text or one JSON
object), live capture, and reading photos, calibration files and CSV files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def step_parser(cs, name: str, help: str, description: str):
    return cs.add_parser(name, help=help, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)


def camera_args(p, what: str) -> None:
    g = p.add_argument_group("live capture (instead of photo files)")
    g.add_argument(
        "--camera",
        metavar="SOURCE",
        help=f"capture {what} from a camera: device index (0), video file, stream URL or image folder",
    )
    g.add_argument("--width", type=int, default=0, help="requested capture width (default: the device's)")
    g.add_argument("--height", type=int, default=0, help="requested capture height (default: the device's)")


class Out:
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
            "redo": f"{what} should not be used: fix what the figures point at and redo this step "
            "(the line refuses a part judged REDO unless runtime.accept_redo_calibration names it).",
        }[verdict]
        self.say(f"verdict: {text} - {advice}")

    def result(self, obj: dict) -> None:
        if self.json_mode:
            print(json.dumps(obj), flush=True)


def verdict_exit(verdict: str) -> int:
    """A step's exit code: 3 (the data cannot be used) when its verdict is REDO, as for
    ``scallop calibrate check``; 0 otherwise. A script running the steps stops at a REDO."""
    return 3 if verdict == "redo" else 0


def picture_arg(p, step: str) -> None:
    p.add_argument(
        "--picture",
        metavar="PNG",
        help=f"where to write the picture of what this step found (default: next to the calibration file, "
        f"NAME.{step}.png)",
    )


def write_picture(
    out: Out, image, calib_path, step: str, given: str | None, what: str, required: bool = True
) -> str | None:
    """Write a step's picture (``--picture`` or ``<calib>.<step>.png``) and say where; a
    picture that is not ``required`` and cannot be written is only reported."""
    import cv2

    from scallop.calibration.errors import CalibrationError

    path = Path(given) if given else Path(calib_path).with_suffix(f".{step}.png")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ok = cv2.imwrite(str(path), image)
    except (OSError, cv2.error):
        ok = False
    if not ok:
        if required or given:
            raise CalibrationError(f"{path}: cannot write the picture (a .png name in a folder you can write)")
        out.say(f"picture: not written ({path} cannot be written; pass --picture PNG)")
        return None
    out.say(f"picture: {path} ({what})")
    return str(path)


def open_camera(args):
    from scallop.vision.camera import OpenCVCamera, OpenCVCameraConfig

    try:
        cfg = OpenCVCameraConfig(source=args.camera, width=args.width, height=args.height)
    except ValueError as e:
        from scallop.calibration.errors import CalibrationError

        raise CalibrationError(f"--camera {args.camera}: {e}") from None
    return OpenCVCamera(cfg)


def capture_board_frame(args, board, out: Out, tries: int = 150):
    """One frame from the live camera in which the board is found."""
    from scallop.calibration.boards import detect
    from scallop.calibration.errors import BoardNotFoundError

    out.prompt(f"capturing from camera {args.camera}: lay the board flat in view …")
    from scallop.vision.camera import EndOfStreamError

    with open_camera(args) as cam:
        for _ in range(tries):
            try:
                frame = cam.read()
            except EndOfStreamError:
                break
            if detect(frame.image, board, refine=False) is not None:
                return frame.image
    raise BoardNotFoundError(f"no {board} seen in {tries} frames from camera {args.camera}: check the view and --board")


def read_one(path: str):
    """One photo as BGR, with a CalibrationError naming it when it cannot be read."""
    from scallop.calibration.errors import ImageError
    from scallop.calibration.intrinsics import read_photo

    p = Path(path)
    if p.is_dir():
        raise ImageError(f"{p}: a folder, not a photo: name the photo files in it")
    if not p.is_file():
        raise ImageError(f"{p}: no such photo")
    img, why = read_photo(p)
    if img is None:
        raise ImageError(f"{p}: {why}")
    return img


def load(path: str, **kw):
    from scallop.calibration.store import LineCalibration

    return LineCalibration.load(path, **kw)


def csv_rows(path: str, need_any: list[tuple[str, ...]]) -> tuple[list[dict], tuple[str, ...]]:
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


def num(row: dict, key: str, path: str, line: int) -> float:
    import math

    from scallop.calibration.errors import InputFileError

    try:
        v = float(row[key])
    except (KeyError, ValueError, TypeError):
        raise InputFileError(f"{path} row {line}: {key}={row.get(key)!r} is not a number") from None
    if not math.isfinite(v):
        raise InputFileError(f"{path} row {line}: {key} is not finite")
    return v
