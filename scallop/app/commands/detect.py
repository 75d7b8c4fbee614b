"""``scallop detect``: find scallops and their uros in image files."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from scallop.errors import one_line


def register(sub) -> None:
    p = sub.add_parser(
        "detect",
        help="find scallops, uros, grasp points and pull directions in images",
        description=(
            "Find every scallop and its uro in images.\n\n"
            "example:\n  scallop detect --mm-per-px 0.5 --json --annotate out/ frame1.png frame2.jpg\n\n"
            "With --json, one JSON object per image on stdout, one per line, nothing else.\n"
            "An unreadable image is reported on stderr and the exit code is 1 after the others are done;\n"
            "so is a fluorescence frame x.uv.png given without its colour frame, a pair whose x.uv.png\n"
            "cannot be read (a folder, the wrong size), and an image of a data set whose labels/NAME.json\n"
            "cannot be used.\n\n"
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
            "alone in a colour-only set; a manifest of a version this software does not read is refused (exit 3).\n\n"
            "A folder of many images is analysed several at once, one process per core (--jobs); the output\n"
            "comes in the order the images were given all the same."
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
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help=f"onnxruntime threads per image analysed, 1..64 (default {THREADS}: meanwhile the next image is "
        "decoded on another core, or other cores analyse images of their own)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help=f"images analysed at once, each in a process of its own, 1..the cores, as many as the memory "
        f"available holds at about 300 MB each (default: one per core, at most {MAX_AUTO_JOBS} and half the "
        f"memory available, for {MIN_IMAGES_FOR_WORKERS} images or more; else 1: a process takes about a second "
        "to start)",
    )
    p.set_defaults(func=run)


# A pool of processes pays for its start (about 0.8 s a process here: interpreter, OpenCV,
# onnxruntime, the model) from about 100 images of 1280x720 on two cores (30: 1.18 s in one
# process against 1.23 s in two; 60: 1.36 / 1.37 s; 100: 1.69 / 1.64 s); below that one
# process with the next image read ahead is sooner done.
MIN_IMAGES_FOR_WORKERS = 100
MAX_AUTO_JOBS = 8
# One network thread an image: in one process the next JPEG is decoded on the other core
# meanwhile, which a second onnxruntime thread would keep busy spinning between its runs
# (scallop bench vision --anchor: 1.3x sooner a file on two cores).
THREADS = 1


def jobs_for(n_images: int, given: int | None) -> int:
    """How many images are analysed at once: ``given`` (--jobs), else :func:`folder_jobs` for
    ``MIN_IMAGES_FOR_WORKERS`` images or more, else 1."""
    if given is not None:
        return given
    return 1 if n_images < MIN_IMAGES_FOR_WORKERS else folder_jobs()


def folder_jobs() -> int:
    """The worker processes for a large folder: one per core, at most ``MAX_AUTO_JOBS``, and
    no more than half the memory available now holds (the line's PC runs other things)."""
    from scallop.workers import AUTO_MEMORY_SHARE, memory_jobs, usable_cores

    fits = memory_jobs(AUTO_MEMORY_SHARE)
    return min(usable_cores(), MAX_AUTO_JOBS, fits if fits is not None else MAX_AUTO_JOBS)


@dataclass(frozen=True)
class Setup:
    """What analysing one image needs, as plain data: the same in this process and in a worker."""

    model: str | None  # --model, else the shipped models chosen per image
    threads: int  # onnxruntime threads per analysis
    calibration: str | None
    json: bool
    annotate: bool


@dataclass
class Outcome:
    """One image's result: lines for standard output, error messages (each one failed image),
    and the annotated image encoded as PNG (or why it could not be)."""

    out: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    png: bytes | None = None
    png_error: str = ""


def run(args) -> int:
    from scallop.errors import ConfigError, DataError, check_number
    from scallop.imagefiles import companion_paths, read_ahead
    from scallop.vision.camera import read_image

    if args.threads is not None:
        check_number("--threads", args.threads, 1, 64, integer=True)
    if args.jobs is not None:
        from scallop.workers import check_jobs

        check_jobs("--jobs", args.jobs)
    args.images, stray = _frames_only(args.images)
    if args.mm_per_px is not None:
        check_number("--mm-per-px", args.mm_per_px, 0.05, 5.0)
        if args.calibration:
            raise ConfigError("--mm-per-px and --calibration: give one (the calibration knows the scale)")
    scale = args.mm_per_px
    state: dict = {}
    if args.calibration:
        from scallop.calibration.store import load_calibration

        cal = state["calibration"] = load_calibration(args.calibration)
        scale = cal.mm_per_px_center()
    from scallop.models.dataset import set_of_image

    # An image of a data set follows its dataset.json, checked as eval and train check it (a
    # version this software cannot read is refused up front): its fluorescence frame is used
    # when the set carries the channel, and only then.
    sets = {path: set_of_image(path) for path in args.images}
    # Every image's scale before the model loads: a missing one is refused up front, not after
    # half the images are done. Sizes in mm are what tell a uro from an eye dot: never a guess.
    scales, unusable = {}, {}
    for path in args.images:
        try:
            scales[path] = scale if args.calibration else _scale(path, scale)
        except DataError as e:  # this image's label file: its error, at its turn; the others go on
            unusable[path] = str(e)
    if unusable:
        args.images, stray = _without(args.images, unusable, stray)
    # A name that is no file is reported as such when its turn comes (exit 1), not as unscaled.
    unscaled = [path for path, s in scales.items() if s is None and Path(path).is_file()]
    if unscaled:
        raise ConfigError(
            f"{unscaled[0]}: no image scale: pass --mm-per-px (mm on the belt per pixel), --calibration FILE, "
            "or use images of a data set whose dataset.json gives mm_per_px"
        )
    jobs = min(jobs_for(len(args.images), args.jobs), max(1, len(args.images)))
    threads = args.threads if args.threads is not None else THREADS
    setup = Setup(args.model, threads, args.calibration, bool(args.json), bool(args.annotate))
    if args.model:
        _pipeline(state, setup, "given")  # a bad --model file is refused before any image
        if jobs > 1:
            state.clear()  # the workers load their own: this one would only hold memory
    out_dir = Path(args.annotate) if args.annotate else None
    if out_dir:
        from scallop.app.outputs import check_output_dir

        check_output_dir(out_dir, "the annotated images")  # before any image is analysed
    # A companion given without its frame is reported like an unreadable image, at its place
    # among the images given: the others go on.
    strays: dict[int, list[str]] = {}
    for before, message in stray:
        strays.setdefault(before, []).append(message)

    def say_strays(at: int) -> None:
        for message in strays.pop(at, []):
            print(f"scallop detect: error: {one_line(message)}", file=sys.stderr)

    failed = len(stray)
    companions = companion_paths(args.images)
    written: set[str] = set()  # annotated names of this run: images of one name from two folders
    # What was given (and the fluorescence frames beside it) is never an annotated image's target.
    inputs = (
        {os.path.realpath(p) for p in args.images} | {os.path.realpath(c) for c in companions} if out_dir else set()
    )
    if jobs > 1:
        from scallop.workers import ordered_map

        results = ordered_map(_work, ((setup, p, scales[p], sets[p], c) for p, c in zip(args.images, companions)), jobs)
    else:
        # The next image is decoded on a second thread while this one is analysed.
        results = (
            _analyse(state, setup, path, img, scales[path], sets[path], c)
            for (path, img), c in zip(read_ahead(args.images, read_image), companions)
        )
    from scallop.workers import WorkerDiedError

    done = 0
    try:
        for path, oc in zip(args.images, results):
            say_strays(done)
            for line in oc.out:
                print(one_line(line), flush=args.json)
            for message in oc.errors:
                print(f"scallop detect: error: {one_line(message)}", file=sys.stderr)
            failed += len(oc.errors)
            done += 1
            if out_dir and not oc.errors:
                target = out_dir / f"{_unique(Path(path).stem, written)}_det.png"
                why = oc.png_error or (
                    "it is one of the images given, and is not written over"
                    if os.path.realpath(target) in inputs
                    else _write_bytes(target, oc.png)
                )
                if why:  # a full disk or a vanished folder: said, and counted in the exit code
                    print(
                        one_line(f"scallop detect: error: {target}: the annotated image could not be written: {why}"),
                        file=sys.stderr,
                    )
                    failed += 1
    except WorkerDiedError as e:
        # Said, and counted: the images not analysed are named by their number, never dropped quietly.
        print(f"scallop detect: error: {e}: {len(args.images) - done} image(s) not analysed", file=sys.stderr)
        for at in sorted(strays):
            say_strays(at)
        return 1
    finally:
        # Now, not when the frame is freed: the workers stop and the pool's handlers go back
        # before anything else runs (an error on the way out, another command in this process).
        results.close()
    say_strays(done)
    return 1 if failed else 0


_WORKER_STATE: dict = {}  # a worker process's loaded models and calibration, kept between images


def _work(task: tuple) -> Outcome:
    """A worker process's turn: read one image and analyse it."""
    from scallop.vision.camera import CameraError, read_image

    setup, path, scale, in_set, companion = task
    try:
        img = read_image(path)
    except CameraError as e:
        img = e
    return _analyse(_WORKER_STATE, setup, path, img, scale, in_set, companion)


def _pipeline(state: dict, setup: Setup, kind: str):
    # Loaded when first needed: a folder of colour frames never loads the four-channel model.
    from scallop.models.runtime import default_uv_model_path
    from scallop.vision.pipeline import Pipeline, PipelineConfig

    key = ("pipeline", kind)
    if key not in state:
        path = setup.model if kind == "given" else default_uv_model_path() if kind == "uv" else None
        state[key] = Pipeline(path, PipelineConfig(threads=setup.threads))
    return state[key]


def _analyse(state: dict, setup: Setup, path: str, img, scale: float, in_set, companion_at: Path) -> Outcome:
    """One image (or what reading it raised) through the pipeline; ``state`` keeps what this
    process has loaded, ``companion_at`` is where the image's fluorescence frame is or would be."""
    from scallop.imagefiles import broken_companion, companion_of
    from scallop.vision.camera import CameraError, read_fluorescence

    oc = Outcome()
    if isinstance(img, CameraError):
        oc.errors.append(str(img))
        return oc
    if isinstance(img, BaseException):
        raise img
    cal, to_belt = None, None
    if setup.calibration:
        if "calibration" not in state:
            from scallop.calibration.store import load_calibration

            state["calibration"] = load_calibration(setup.calibration)
        cal = state["calibration"]
        to_belt = cal.pixel_to_belt
        if img.shape[1::-1] != tuple(cal.image_size):
            oc.errors.append(
                f"{path}: image is {img.shape[1]}x{img.shape[0]} but the calibration is for "
                f"{cal.image_size[0]}x{cal.image_size[1]}"
            )
            return oc
    set_uv = in_set is not None and "uv" in in_set[1]
    colour_set = in_set is not None and not set_uv  # a x.uv.png lying there is not its data
    companion = None if colour_set else companion_of(path, companion_at)
    broken = None if colour_set else broken_companion(path, companion_at)
    if setup.model:
        pipe = _pipeline(state, setup, "given")
    else:
        pipe = _pipeline(state, setup, "uv" if companion is not None or broken or set_uv else "colour")
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
                f"{path}: its fluorescence frame {companion_at} is missing"
                + (f" (its data set {in_set[0]} carries the channel)" if set_uv else "")
                + f", and the model {pipe.model.info.path} takes 4 channels (colour and fluorescence)"
            )
        if why:
            oc.errors.append(why)
            return oc
        try:
            uv = read_fluorescence(companion, img.shape[:2])
        except CameraError as e:
            oc.errors.append(str(e))
            return oc
    dets = pipe.detect(img, mm_per_px=scale, to_belt=to_belt, uv=uv)
    if setup.json:
        rec = dets.to_json(path, img.shape[1], img.shape[0])
        rec["channels"] = ["bgr", "uv"] if takes_uv else ["bgr"]
        oc.out.append(json.dumps(rec))
    else:
        n_ok = int(dets.pickable.sum())
        both = " (colour and fluorescence)" if takes_uv else ""
        n, nu = len(dets), int(dets.uro_found.sum())
        oc.out.append(
            f"{path}: {n} scallop{'' if n == 1 else 's'}, {nu} uro{'' if nu == 1 else 's'} found, {n_ok} pickable{both}"
        )
        for i in range(len(dets)):
            uro = (
                f"grasp ({dets.grasp_px[i][0]:.1f}, {dets.grasp_px[i][1]:.1f}) px, conf {dets.uro_confidence[i]:.2f}"
                if dets.uro_found[i]
                else "no uro"
            )
            why = "pickable" if dets.pickable[i] else f"not pickable: {dets.reason[i]}"
            oc.out.append(f"  #{i}: centre ({dets.center_px[i][0]:.1f}, {dets.center_px[i][1]:.1f}) px, {uro}, {why}")
    if setup.annotate:
        import cv2

        from scallop.vision.annotate import draw

        ok, buf = cv2.imencode(".png", draw(img, dets))
        if ok:
            oc.png = buf.tobytes()
        else:
            oc.png_error = "the image could not be encoded"
    return oc


def _unique(stem: str, taken: set[str]) -> str:
    """``stem``, or ``stem-2``, ``stem-3``, … when taken already (added to ``taken``)."""
    name, k = stem, 1
    while name in taken:
        k += 1
        name = f"{stem}-{k}"
    taken.add(name)
    return name


def _write_bytes(target: Path, data: bytes) -> str:
    """Write ``data`` to ``target``; "" when written, else why not (the system's words). A
    file cut short (a full disk) is removed: an annotated image that is there is whole."""
    try:
        target.write_bytes(data)
    except OSError as e:
        try:
            target.unlink(missing_ok=True)
        except OSError:
            pass
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


def _without(
    paths: list[str], unusable: dict[str, str], stray: list[tuple[int, str]]
) -> tuple[list[str], list[tuple[int, str]]]:
    """``paths`` without the ``unusable`` ones (path: why), and ``stray`` (how many frames come
    before it, why) with each of them added at its place, so that its error is said where its
    turn would have come; the places of the earlier strays counted again without them."""
    kept_before = [0]
    for p in paths:
        kept_before.append(kept_before[-1] + (p not in unusable))
    # In the order given: a stray said before the frame it came before (0 before 1).
    said = [(kept_before[at], at, 0, why) for at, why in stray]
    said += [(kept_before[i], i, 1, unusable[p]) for i, p in enumerate(paths) if p in unusable]
    said.sort(key=lambda t: t[:3])  # never by the message: strays at one place keep their order
    return [p for p in paths if p not in unusable], [(at, why) for at, _, _, why in said]


def _frames_only(paths: list[str]) -> tuple[list[str], list[tuple[int, str]]]:
    """(the frames, (how many frames come before it, why) for each stray companion left out).
    A shell glob (``dir/*``) brings each
    frame's fluorescence companion ``x.uv.png`` along: it is not a frame. Given beside its
    frame it is left out quietly; given without one it is reported (exit 1, the others go on)."""
    from scallop.imagefiles import COMPANION_SUFFIX, frame_of, is_companion

    # realpath, not Path.resolve: a symlink loop among the names is that one image's error
    # when its turn comes, not a stop of the whole run.
    given = {os.path.realpath(p) for p in paths}
    out, stray = [], []
    for p in paths:
        if not is_companion(p):
            out.append(p)
            continue
        frame = frame_of(p)
        if frame is None or os.path.realpath(frame) not in given:
            stray.append(
                (
                    len(out),
                    f"{p}: a fluorescence companion (*{COMPANION_SUFFIX}), not a frame: give its colour frame "
                    f"({Path(p).name[: -len(COMPANION_SUFFIX)]}.jpg or .png) instead",
                )
            )
    return out, stray
