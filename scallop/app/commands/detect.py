"""``scallop detect``: find scallops and their uros in image files."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "detect",
        help="find scallops, uros, grasp points and pull directions in images",
        description=(
            "Find every scallop and its uro in images.\n\n"
            "example:\n  scallop detect --mm-per-px 0.5 --json --annotate out/ frame1.png frame2.jpg\n\n"
            "With --json, one JSON object per image on stdout, one per line, nothing else.\n"
            "An unreadable image is reported on stderr and the exit code is 1 after the others are done;\n"
            "so is a fluorescence frame x.uv.png given without its colour frame, and a pair whose x.uv.png\n"
            "cannot be read (a folder, the wrong size).\n\n"
            "The image scale on the belt is never guessed: it comes from --calibration; else, for images\n"
            "of a data set (ROOT/images/NAME), from its labels/NAME.json or dataset.json; else from\n"
            "--mm-per-px. A --mm-per-px more than 1 % off a data set's own scale is refused (exit 2).\n\n"
            "Frame pairs: an image with its registered fluorescence frame beside it (x.uv.png for x.jpg\n"
            "or x.png) is analysed with the shipped four-channel model (colour and fluorescence), one without\n"
            'with the colour-only model; --json objects say which ("channels": ["bgr", "uv"] or ["bgr"]).\n'
            "With --model, that model is used for every image: a four-channel one needs every image's\n"
            "x.uv.png (an image without it is an error), a colour-only one ignores them.\n"
            "An image of a data set follows its dataset.json: its x.uv.png is used when the set carries the\n"
            'fluorescence channel (version 2, "channels": ["bgr", "uv"]; then every image needs it) and left\n'
            "alone in a colour-only set; a manifest of a version this software does not read is refused (exit 3)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument(
        "--model",
        help="ONNX model file for every image (default: the shipped models, four-channel for frame pairs)",
    )
    p.add_argument(
        "--mm-per-px",
        type=float,
        default=None,
        help="image scale on the belt, mm per pixel (0.05..5), when no calibration or data set gives it",
    )
    p.add_argument("--calibration", help="line calibration file: pixels → belt mm (adds *_mm fields)")
    p.add_argument(
        "--annotate",
        metavar="DIR",
        help="write each image with its detections drawn into DIR as NAME_det.png (NAME-2_det.png, … for "
        "images of the same name from other folders)",
    )
    p.add_argument("--json", action="store_true", help="print JSON lines only")
    p.add_argument("--threads", type=int, default=2, help="onnxruntime threads, 1..64 (default 2)")
    p.set_defaults(func=run)


def run(args) -> int:
    from scallop.errors import ConfigError, check_number
    from scallop.imagefiles import broken_companion, companion_of, companion_path, read_ahead
    from scallop.vision.annotate import draw
    from scallop.vision.camera import CameraError, read_fluorescence, read_image
    from scallop.vision.pipeline import Pipeline, PipelineConfig

    check_number("--threads", args.threads, 1, 64, integer=True)
    args.images, stray = _frames_only(args.images)
    if args.mm_per_px is not None:
        check_number("--mm-per-px", args.mm_per_px, 0.05, 5.0)
        if args.calibration:
            raise ConfigError("--mm-per-px and --calibration: give one (the calibration knows the scale)")
    to_belt, scale = None, args.mm_per_px
    if args.calibration:
        from scallop.calibration.store import load_calibration

        cal = load_calibration(args.calibration)
        to_belt = cal.pixel_to_belt
        scale = cal.mm_per_px_center()
    from scallop.models.dataset import set_of_image

    # An image of a data set follows its dataset.json, checked as eval and train check it (a
    # version this software cannot read is refused up front): its fluorescence frame is used
    # when the set carries the channel, and only then.
    sets = {path: set_of_image(path) for path in args.images}
    # Every image's scale before the model loads: a missing one is refused up front, not after
    # half the images are done. Sizes in mm are what tell a uro from an eye dot: never a guess.
    scales = {path: scale if args.calibration else _scale(path, scale) for path in args.images}
    # A name that is no file is reported as such when its turn comes (exit 1), not as unscaled.
    unscaled = [path for path, s in scales.items() if s is None and Path(path).is_file()]
    if unscaled:
        raise ConfigError(
            f"{unscaled[0]}: no image scale: pass --mm-per-px (mm on the belt per pixel), --calibration FILE, "
            "or use images of a data set whose dataset.json gives mm_per_px"
        )
    from scallop.models.runtime import default_uv_model_path

    pipes: dict[str, Pipeline] = {}

    def pipeline(kind: str) -> Pipeline:
        # Loaded when first needed: a folder of colour frames never loads the four-channel model.
        if kind not in pipes:
            path = args.model if kind == "given" else default_uv_model_path() if kind == "uv" else None
            pipes[kind] = Pipeline(path, PipelineConfig(threads=args.threads))
        return pipes[kind]

    if args.model:
        pipeline("given")  # a bad --model file is refused before any image
    out_dir = Path(args.annotate) if args.annotate else None
    if out_dir:
        from scallop.app.outputs import check_output_dir

        check_output_dir(out_dir, "the annotated images")  # before any image is analysed
    # A companion given without its frame is reported like an unreadable image: the others go on.
    for message in stray:
        print(f"scallop detect: error: {message}", file=sys.stderr)
    failed = len(stray)
    written: set[str] = set()  # annotated names of this run: images of one name from two folders
    # The next image is decoded on a second thread while this one is analysed (the decode is a
    # quarter of the time a 1280x720 JPEG costs here: bench vision --anchor).
    for path, img in read_ahead(args.images, read_image):
        if isinstance(img, CameraError):
            print(f"scallop detect: error: {img}", file=sys.stderr)
            failed += 1
            continue
        if isinstance(img, BaseException):
            raise img
        if to_belt is not None and img.shape[1::-1] != tuple(cal.image_size):
            print(
                f"scallop detect: error: {path}: image is {img.shape[1]}x{img.shape[0]} but the calibration is for "
                f"{cal.image_size[0]}x{cal.image_size[1]}",
                file=sys.stderr,
            )
            failed += 1
            continue
        in_set = sets[path]
        set_uv = in_set is not None and "uv" in in_set[1]
        colour_set = in_set is not None and not set_uv  # a x.uv.png lying there is not its data
        companion = None if colour_set else companion_of(path)
        broken = None if colour_set else broken_companion(path)
        if args.model:
            pipe = pipeline("given")
        else:
            pipe = pipeline("uv" if companion is not None or broken or set_uv else "colour")
        # The fluorescence frame is read only for a model that takes it: with the colour-only
        # model the output is what it always was.
        takes_uv = pipe.model.takes_uv
        uv = None
        if takes_uv:
            why = ""
            if broken:
                what = (
                    "a folder"
                    if broken.is_dir()
                    else f"a link to {os.readlink(broken)}, which is not there"
                    if broken.is_symlink() and not broken.exists()
                    else "not a regular file"
                )
                why = f"{broken}: the fluorescence frame of {path} is {what}: the pair cannot be analysed"
            elif colour_set:
                why = (
                    f"{path}: its data set is colour only ({in_set[0]}: channels {list(in_set[1])}), and the model "
                    f"{pipe.model.info.path} takes 4 channels (colour and fluorescence)"
                )
            elif companion is None:
                why = (
                    f"{path}: its fluorescence frame {companion_path(path)} is missing"
                    + (f" (its data set {in_set[0]} carries the channel)" if set_uv else "")
                    + f", and the model {pipe.model.info.path} takes 4 channels (colour and fluorescence)"
                )
            if why:
                print(f"scallop detect: error: {why}", file=sys.stderr)
                failed += 1
                continue
            try:
                uv = read_fluorescence(companion, img.shape[:2])
            except CameraError as e:
                print(f"scallop detect: error: {e}", file=sys.stderr)
                failed += 1
                continue
        dets = pipe.detect(img, mm_per_px=scales[path], to_belt=to_belt, uv=uv)
        if args.json:
            rec = dets.to_json(path, img.shape[1], img.shape[0])
            rec["channels"] = ["bgr", "uv"] if takes_uv else ["bgr"]
            print(json.dumps(rec), flush=True)
        else:
            n_ok = int(dets.pickable.sum())
            both = " (colour and fluorescence)" if takes_uv else ""
            print(f"{path}: {len(dets)} scallops, {int(dets.uro_found.sum())} uros found, {n_ok} pickable{both}")
            for i in range(len(dets)):
                uro = (
                    f"grasp ({dets.grasp_px[i][0]:.1f}, {dets.grasp_px[i][1]:.1f}) px, conf {dets.uro_confidence[i]:.2f}"
                    if dets.uro_found[i]
                    else "no uro"
                )
                why = "pickable" if dets.pickable[i] else f"not pickable: {dets.reason[i]}"
                print(f"  #{i}: centre ({dets.center_px[i][0]:.1f}, {dets.center_px[i][1]:.1f}) px, {uro}, {why}")
        if out_dir:
            target = out_dir / f"{_unique(Path(path).stem, written)}_det.png"
            why = _write_png(target, draw(img, dets))
            if why:  # a full disk or a vanished folder: said, and counted in the exit code
                print(
                    f"scallop detect: error: {target}: the annotated image could not be written: {why}", file=sys.stderr
                )
                failed += 1
    return 1 if failed else 0


def _unique(stem: str, taken: set[str]) -> str:
    """``stem``, or ``stem-2``, ``stem-3``, … when taken already (added to ``taken``)."""
    name, k = stem, 1
    while name in taken:
        k += 1
        name = f"{stem}-{k}"
    taken.add(name)
    return name


def _write_png(target: Path, image) -> str:
    """Write ``image`` as PNG; "" when written, else why not (the system's words)."""
    import cv2

    ok, buf = cv2.imencode(".png", image)
    if not ok:
        return "the image could not be encoded"
    try:
        target.write_bytes(buf.tobytes())
    except OSError as e:
        return e.strerror or str(e)
    return ""


def _scale(path: str, given: float | None) -> float | None:
    """The scale of the image at ``path`` without a calibration: its data set's own (a
    --mm-per-px that conflicts with it is refused); else ``given`` (--mm-per-px, maybe None)."""
    from scallop.models.dataset import check_scale_option, scale_source_of_image

    own = scale_source_of_image(path)
    if own is None:
        return given
    return check_scale_option(given, own[0], f"{own[1]}: mm_per_px")


def _frames_only(paths: list[str]) -> tuple[list[str], list[str]]:
    """(the frames, why each stray companion was left out). A shell glob (``dir/*``) brings each
    frame's fluorescence companion ``x.uv.png`` along: it is not a frame. Given beside its
    frame it is left out quietly; given without one it is reported (exit 1, the others go on)."""
    from scallop.imagefiles import COMPANION_SUFFIX, frame_of, is_companion

    given = {str(Path(p).resolve()) for p in paths}
    out, stray = [], []
    for p in paths:
        if not is_companion(p):
            out.append(p)
            continue
        frame = frame_of(p)
        if frame is None or str(frame.resolve()) not in given:
            stray.append(
                f"{p}: a fluorescence companion (*{COMPANION_SUFFIX}), not a frame: give its colour frame "
                f"({Path(p).name[: -len(COMPANION_SUFFIX)]}.jpg or .png) instead"
            )
    return out, stray
