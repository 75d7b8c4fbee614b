"""``scallop bench vision``: pipeline speed per frame on this machine."""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "vision",
        help="time the detection pipeline (preprocessing to detections) on simulator frames",
        description=(
            "Time the whole pipeline — preprocessing, both model stages, post-processing to\n"
            "detections; image decoding excluded — on rendered 1280x720 frames in memory with\n"
            "0-10 scallops in view. --profile adds each stage's median and p99 with the JPEG\n"
            "decode a file would cost. --anchor also times 'scallop detect' on JPEG files\n"
            "(decode included) side by side with a YOLOv8n-seg@640 ONNX on the same files\n"
            "(decode, letterbox, one run: as its README times it) and reports the ratio, for\n"
            "three loops, each the same on both sides: worker processes side by side, one network\n"
            "thread each (as scallop detect analyses a folder of 100 images or more; the headline),\n"
            "one process with the next file decoded on a second thread meanwhile (a smaller\n"
            "folder), and read-then-work file by file. In the last two each side keeps its own\n"
            "network threads: scallop detect's one, the anchor README's --threads (2).\n"
            "The 1-minute load average is reported beside the figures: the machine may be shared;\n"
            "so is the CPU time a frame takes over all the process's threads (what the vision\n"
            "leaves of the cores for the rest of the line).\n\n"
            "example:\n  scallop bench vision --frames 1000 --profile --json --out bench/vision.json\n"
            "  scallop bench vision --anchor PATH/yolov8n-seg_640.onnx --files 100"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", help="ONNX model (default: shipped)")
    p.add_argument("--frames", type=int, default=1000, help="timed frames (default 1000)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--distinct", type=int, default=40, help="distinct rendered frames, cycled (default 40)")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--mm-per-px", type=float, default=0.5)
    p.add_argument(
        "--threads",
        type=int,
        default=2,
        help="onnxruntime threads for the frames in memory and the anchor (default 2; scallop detect's files "
        "run with its own: one a process)",
    )
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--scallops", default="0,10", help="LO,HI scallops placed per frame (default 0,10)")
    p.add_argument("--profile", action="store_true", help="per-stage medians and p99, JPEG decode included")
    p.add_argument(
        "--plain-graph",
        action="store_true",
        help="run the model's graph as in the file, without the runtime's CPU rewrite (to measure what it gains)",
    )
    p.add_argument("--anchor", metavar="ONNX", help="YOLOv8n-seg@640 ONNX to time side by side on JPEG files")
    p.add_argument("--files", type=int, default=100, help="JPEG files for the side-by-side (default 100)")
    p.add_argument("--repeats", type=int, default=2, help="rounds of the side-by-side, interleaved (default 2)")
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="with --anchor: worker processes for the side-by-side, both sides (default: as scallop detect takes "
        "for a large folder, one per core up to 8)",
    )
    p.add_argument(
        "--out",
        default="bench/vision.json",
        help="figures file (default bench/vision.json, the record the docs quote: give another for a trial)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def bench_frames(
    n: int,
    width: int,
    height: int,
    mm_per_px: float,
    seed: int,
    lo: int = 0,
    hi: int = 10,
    uv: list | None = None,
    counts: list | None = None,
):
    """Rendered frames with ``lo``..``hi`` whole or partial scallops in view, the counts
    spread over the whole range (frame k asks for ``lo + k mod (hi - lo + 1)``). With ``uv``
    (a list) each frame's registered fluorescence image is appended to it (the colour frames
    are the same either way); with ``counts`` (a list), each frame's number of scallops in view."""
    from dataclasses import replace

    from scallop.sim.dataset import DatasetSettings, random_sample

    base = replace(
        DatasetSettings(),
        resolutions=[(width, height)],
        mm_per_px=(mm_per_px, mm_per_px),
        fluorescence=uv is not None,
    )
    out, i = [], 0
    while len(out) < n:
        want = lo + len(out) % (hi - lo + 1)
        s = random_sample(i, seed, replace(base, scallops=(want, want)))
        i += 1
        if lo <= len(s.truth.scallops) <= hi:
            out.append(s.image)
            if uv is not None:
                uv.append(s.uv)
            if counts is not None:
                counts.append(len(s.truth.scallops))
    return out


def _stats(values) -> dict:
    import numpy as np

    a = np.asarray(values, dtype=np.float64)
    return {
        "median_ms": round(float(np.median(a)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "mean_ms": round(float(a.mean()), 3),
    }


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _scallop_range(text: str) -> tuple[int, int]:
    from scallop.errors import ConfigError, check_number

    try:
        lo, hi = (int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--scallops={text!r}: expected LO,HI (two whole numbers)") from None
    check_number("--scallops low", lo, 0, 30, integer=True)
    check_number("--scallops high", hi, lo, 30, integer=True)
    return lo, hi


def run(args) -> int:
    from scallop.errors import check_seed

    check_seed("--seed", args.seed)  # numpy's seeding refuses a negative one
    import cv2
    import numpy as np
    import onnxruntime as ort

    from scallop.app.commands.bench import write_figures
    from scallop.errors import check_number
    from scallop.imagefiles import decode_color
    from scallop.vision.pipeline import Pipeline, PipelineConfig

    check_number("--frames", args.frames, 1, 10**6, integer=True)
    check_number("--warmup", args.warmup, 0, 10**5, integer=True)
    check_number("--distinct", args.distinct, 1, 10**4, integer=True)
    # The options by their own names (the renderer and the pipeline would name their config keys).
    check_number("--width", args.width, 640, 1920, integer=True)
    check_number("--height", args.height, 480, 1080, integer=True)
    check_number("--mm-per-px", args.mm_per_px, 0.05, 5)
    check_number("--threads", args.threads, 1, 64, integer=True)
    lo, hi = _scallop_range(args.scallops)
    from scallop.app.commands.detect import folder_jobs
    from scallop.errors import ConfigError
    from scallop.workers import check_jobs

    if args.jobs is not None:
        if not args.anchor:
            raise ConfigError("--jobs sets the worker processes of the files side by side: give --anchor too")
        check_jobs("--jobs", args.jobs)
    if args.plain_graph and args.anchor:
        raise ConfigError(
            "--plain-graph and --anchor: scallop detect runs the rewritten graph; time the plain one alone"
        )
    if args.anchor:  # refused before minutes of frames in memory, not after them
        check_number("--files", args.files, 1, 10000, integer=True)
        check_number("--repeats", args.repeats, 1, 100, integer=True)
        _anchor_session(args.anchor, args.threads)
    jobs = args.jobs or folder_jobs()  # what scallop detect takes for a large folder
    from scallop.models.runtime import SegModel

    model = SegModel(args.model or None, threads=args.threads, rewrite=not args.plain_graph)
    pipe = Pipeline(model, PipelineConfig(threads=args.threads, mm_per_px=args.mm_per_px))
    # A four-channel model is timed with its fluorescence images, as the line feeds it.
    uvs: list | None = [] if pipe.takes_uv else None
    if uvs is not None and args.anchor:
        raise ConfigError("--anchor times colour JPEG files against YOLOv8n-seg: give a colour-only model for it")
    placed: list[int] = []
    frames = bench_frames(
        args.distinct, args.width, args.height, args.mm_per_px, args.seed, lo, hi, uv=uvs, counts=placed
    )

    def uv_of(i: int):
        return None if uvs is None else uvs[i % len(uvs)]

    for i in range(args.warmup):
        pipe.detect(frames[i % len(frames)], uv=uv_of(i))
    # What a file would cost to decode on top (--profile): the frames as camera-quality JPEGs.
    jpegs = [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 90])[1] for f in frames] if args.profile else []
    load_before = _load()
    times, counts, in_view, stages = [], [], [], {}
    # CPU time of the whole process (every thread: onnxruntime's, OpenCV's) during each frame's
    # analysis, to say how much of the machine the vision takes besides how fast it answers.
    cpu_s = 0.0
    for i in range(args.frames):
        img = frames[i % len(frames)]
        if jpegs:
            t0 = time.perf_counter()
            decode_color(jpegs[i % len(jpegs)])  # as scallop detect reads a file
            stages.setdefault("decode_ms", []).append((time.perf_counter() - t0) * 1e3)
        c0, t0 = time.process_time(), time.perf_counter()
        d = pipe.detect(img, uv=uv_of(i))
        times.append((time.perf_counter() - t0) * 1e3)
        cpu_s += time.process_time() - c0
        counts.append(len(d))
        in_view.append(placed[i % len(placed)])
        for k, v in pipe.timings.items():
            stages.setdefault(k, []).append(v)
    a = np.array(times)
    res = _stats(a) | {
        "p90_ms": round(float(np.percentile(a, 90)), 3),
        "frames": len(a),
        "distinct_frames": len(frames),
        "width": args.width,
        "height": args.height,
        "mm_per_px": args.mm_per_px,
        # What the frames hold (the simulator's truth), and what the pipeline reported in them.
        "scallops_per_frame": round(float(np.mean(in_view)), 2),
        "scallops_range": [int(min(in_view)), int(max(in_view))],
        "detections_per_frame": round(float(np.mean(counts)), 2),
        "threads": args.threads,
        # CPU milliseconds per frame over all threads, and the cores busy while analysing: at a
        # camera's 60 frames a second the vision takes cpu_ms_per_frame * 0.06 cores.
        "cpu_ms_per_frame": round(cpu_s * 1e3 / len(a), 3),
        "cores_busy": round(cpu_s * 1e3 / float(a.sum()), 2),
        # Median of each stage on its own (they do not add up to the total's median exactly);
        # decode only with --profile, and not part of the total (a camera delivers pixels).
        "stages_median_ms": {k: round(float(np.median(v)), 3) for k, v in stages.items()},
        # The machine may be shared: the load averages (1, 5, 15 min) before and after say how busy.
        "load_avg_1min": [load_before[0], _load()[0]],
        "load_avg_before": load_before,
        "cpus": os.cpu_count(),
        # The file name and its training record, not where it happens to be installed.
        "model": args.model or f"shipped ({Path(pipe.model.info.path).name})",
        "model_trained_at": pipe.model.info.meta.get("scallop.trained_at", ""),
        "channels": ["bgr", "uv"] if uvs is not None else ["bgr"],
        "graph": pipe.model.graph,
        "onnxruntime": ort.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }
    if args.profile:
        res["profile"] = {k: _stats(v) for k, v in stages.items()}
    if args.anchor:
        res["files"] = side_by_side(
            args.anchor, frames, args.files, args.repeats, args.mm_per_px, args.threads, jobs, args.model
        )
    if not write_figures(res, args.out, args.json):
        print(
            f"{res['frames']} frames {args.width}x{args.height} in memory, {res['scallops_per_frame']} scallops/frame "
            f"({res['scallops_range'][0]}-{res['scallops_range'][1]}; {res['detections_per_frame']} detections/frame): "
            f"median {res['median_ms']} ms, "
            f"p99 {res['p99_ms']} ms (written to {args.out})"
        )
        print(
            f"  CPU {res['cpu_ms_per_frame']} ms a frame over all threads ({res['cores_busy']} of {res['cpus']} cores "
            f"busy while analysing; at 60 frames/s {round(res['cpu_ms_per_frame'] * 0.06, 2)} cores)"
        )
        print(
            "  stage medians: "
            + ", ".join(f"{k[:-3]} {v}" for k, v in res["stages_median_ms"].items())
            + f"; load avg {res['load_avg_1min'][0]}..{res['load_avg_1min'][1]} on {res['cpus']} CPUs"
        )
        print(f"  graph: {res['graph']}")
        if args.profile:
            print("  stage p99: " + ", ".join(f"{k[:-3]} {v['p99_ms']}" for k, v in res["profile"].items()))
        if args.anchor:
            f = res["files"]
            print(
                f"  files ({f['files']} JPEGs x {f['repeats']}, decode included), {f['jobs']} worker processes on "
                f"both sides: scallop detect {f['scallop']['median_ms']} ms a file, YOLOv8n-seg@640 "
                f"{f['anchor']['median_ms']} ms (a round's time over its files): {f['ratio_of_medians']}x faster "
                f"(per round {', '.join(map(str, f['ratio_per_round']))}; against the anchor as its README times it "
                f"{f['ratio_to_anchor_protocol']}x); processes started in {f['workers_start_s']['scallop']} s "
                f"(the anchor's {f['workers_start_s']['anchor']} s)"
            )
            for loop, what in (("ahead", "one process, the next file read ahead"), ("serial", "file by file")):
                g = f[loop]
                print(
                    f"    {what}: {g['scallop']['median_ms']} against {g['anchor']['median_ms']} ms, "
                    f"{g['ratio_of_medians']}x"
                )
            print(f"    load avg {f['load_avg_1min'][0]}..{f['load_avg_1min'][1]} during the files")
    return 0


def _anchor_session(anchor: str, threads: int):
    """The anchor's onnxruntime session; a file that is not a one-image network is refused,
    naming --anchor (the anchor is YOLOv8n-seg@640: one input, (1, 3, 640, 640))."""
    import onnxruntime as ort

    from scallop.errors import ConfigError
    from scallop.models.runtime import _first_line

    if not Path(anchor).is_file():
        raise ConfigError(f"--anchor {anchor}: no such ONNX file")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Random weights on real images make denormals, which a trained network would not.
    so.add_session_config_entry("session.set_denormal_as_zero", "1")
    try:
        sess = ort.InferenceSession(anchor, so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own untyped errors for a bad file
        raise ConfigError(f"--anchor {anchor}: not a loadable ONNX model ({_first_line(e)})") from None
    ins = sess.get_inputs()
    if len(ins) != 1 or len(ins[0].shape) != 4 or ins[0].shape[1] != 3:
        raise ConfigError(
            f"--anchor {anchor}: its inputs are {[(i.name, i.shape) for i in ins]}; the anchor takes one "
            "image, (1, 3, 640, 640), as YOLOv8n-seg@640 does"
        )
    return sess


def _anchor_read(path):
    # The same reading as scallop's side (scallop detect's): the decode costs the same on both.
    from scallop.vision.camera import read_image

    return read_image(path)


def _anchor_work(sess, img) -> None:
    """The anchor's per-file work after the decode, as shared/anchors/README.md times it."""
    import cv2
    import numpy as np

    h, w = img.shape[:2]
    r = 640 / max(h, w)
    small = cv2.resize(img, (round(w * r), round(h * r)), interpolation=cv2.INTER_LINEAR)
    box = np.full((640, 640, 3), 114, np.uint8)
    top, left = (640 - small.shape[0]) // 2, (640 - small.shape[1]) // 2
    box[top : top + small.shape[0], left : left + small.shape[1]] = small
    x = cv2.dnn.blobFromImage(box, 1 / 255.0, swapRB=True)
    sess.run(None, {sess.get_inputs()[0].name: x})


_ANCHOR: dict = {}  # a worker process's anchor session


def _anchor_load(anchor: str) -> None:
    """A worker's start on the anchor side: its session, one thread per process."""
    if anchor not in _ANCHOR:
        _ANCHOR[anchor] = _anchor_session(anchor, 1)


def _anchor_file(task: tuple[str, str]) -> None:
    """A worker's turn on the anchor side: decode one file and run it."""
    anchor, path = task
    _anchor_load(anchor)
    _anchor_work(_ANCHOR[anchor], _anchor_read(path))


def _detect_setup(model: str | None):
    """What ``scallop detect`` (its network threads, no calibration, text output) works with."""
    from scallop.app.commands.detect import THREADS, Setup

    return Setup(model, THREADS, None, False, False)


def _detect_pipeline(state: dict, model: str | None):
    """The pipeline ``scallop detect`` loads for colour frames, kept in ``state``."""
    from scallop.app.commands.detect import _pipeline

    return _pipeline(state, _detect_setup(model), "given" if model else "colour")


def _scallop_load(model: str | None) -> None:
    """A worker's start on our side: the pipeline ``scallop detect``'s workers load."""
    from scallop.app.commands.detect import _WORKER_STATE

    _detect_pipeline(_WORKER_STATE, model)


def side_by_side(
    anchor: str, frames, n: int, repeats: int, mm_per_px: float, threads: int, jobs: int, model: str | None
) -> dict:
    """``scallop detect``'s per-file work (read the JPEG, detect, with its network threads) against
    the anchor's (decode,
    letterbox to 640x640, one onnxruntime run: shared/anchors/README.md) on the same files,
    in alternating rounds so that a change in the machine's load falls on both.

    Three loops, each the same on both sides:
    - ``workers`` (the headline): ``jobs`` processes side by side, each network on one thread,
      as ``scallop detect`` analyses a folder of 100 images or more (``scallop.workers``; its
      own per-image function). A file's time is a round's time over its files, the processes
      started, their models loaded and warm (their start is reported apart);
    - ``ahead``: one process, the next file read on a second thread meanwhile, as ``scallop
      detect`` reads a smaller folder (``scallop.imagefiles.read_ahead``); a file's time is
      the interval between two results;
    - ``serial``: read a file, then work on it (the anchor README's protocol).
    In the last two each side runs with its own network threads: scallop detect's (one) and
    the anchor README's (``threads``). ``ratio_to_anchor_protocol`` sets the workers' figure
    against the anchor timed by its README (serial): what a folder costs with ``scallop detect``
    against what the reference costs as defined, not a like-for-like loop."""
    import tempfile

    import cv2
    import numpy as np

    from scallop.app.commands.detect import _work
    from scallop.imagefiles import companion_paths, read_ahead
    from scallop.vision.camera import read_image
    from scallop.workers import WorkerPool

    sess = _anchor_session(anchor, threads)
    # scallop detect's own pipeline: its network threads, not the in-memory benchmark's.
    dpipe = _detect_pipeline({}, model)

    def scallop_work(img):
        dpipe.detect(img, mm_per_px=mm_per_px)

    sides = {"scallop": (read_image, scallop_work), "anchor": (_anchor_read, lambda img: _anchor_work(sess, img))}

    def serial(read, work, paths):
        t = []
        for p in paths:
            t0 = time.perf_counter()
            work(read(p))
            t.append((time.perf_counter() - t0) * 1e3)
        return t

    def ahead(read, work, paths):
        t, last = [], time.perf_counter()
        for _, img in read_ahead(paths, read):
            if isinstance(img, BaseException):
                raise img
            work(img)
            now = time.perf_counter()
            t.append((now - last) * 1e3)
            last = now
        return t

    setup = _detect_setup(model)
    tasks = {
        "scallop": (
            _work,
            lambda paths: [(setup, p, mm_per_px, None, c) for p, c in zip(paths, companion_paths(paths))],
        ),
        "anchor": (_anchor_file, lambda paths: [(anchor, p) for p in paths]),
    }

    def in_workers(pool, key, paths):
        fn, make = tasks[key]
        items = make(paths)
        t0 = time.perf_counter()
        for oc in pool.map(fn, items):
            if getattr(oc, "errors", None):
                raise RuntimeError(f"a benchmark file failed in a worker: {oc.errors[0]}")
        return (time.perf_counter() - t0) * 1e3 / len(items)

    with tempfile.TemporaryDirectory(prefix="scallop-files-") as tmp:
        paths = []
        for i in range(n):
            p = Path(tmp) / f"{i:05d}.jpg"
            cv2.imencode(".jpg", frames[i % len(frames)], [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tofile(str(p))
            paths.append(str(p))
        for read, work in sides.values():  # warm both (page cache, sessions)
            serial(read, work, paths[:5])
        start = {}
        t0 = time.perf_counter()
        # Every process loads its model as it starts (whichever images it then gets), and does
        # a first image or two before the rounds.
        with (
            WorkerPool(jobs, _scallop_load, (model,)) as scallop_pool,
            WorkerPool(jobs, _anchor_load, (anchor,)) as anchor_pool,
        ):
            pools = {"scallop": scallop_pool, "anchor": anchor_pool}
            for key, pool in pools.items():
                in_workers(pool, key, paths[: 2 * jobs])
                start[key] = round(time.perf_counter() - t0, 2)
                t0 = time.perf_counter()
            load_before = _load()[0]
            times: dict[str, dict[str, list[list[float]]]] = {
                loop: {"scallop": [], "anchor": []} for loop in ("ahead", "serial")
            }
            per_round: dict[str, list[float]] = {"scallop": [], "anchor": []}
            for _ in range(repeats):
                for key, pool in pools.items():
                    per_round[key].append(in_workers(pool, key, paths))
                for loop, run_loop in (("ahead", ahead), ("serial", serial)):
                    for key, (read, work) in sides.items():
                        times[loop][key].append(run_loop(read, work, paths))

    def figures(t: dict[str, list[list[float]]]) -> dict:
        med = {k: [float(np.median(r)) for r in v] for k, v in t.items()}
        s, a = _stats(sum(t["scallop"], [])), _stats(sum(t["anchor"], []))
        return {
            "scallop": s,
            "anchor": a,
            "ratio_of_medians": round(a["median_ms"] / s["median_ms"], 2),
            "ratio_per_round": [round(x / y, 2) for x, y in zip(med["anchor"], med["scallop"])],
        }

    w_s, w_a = float(np.median(per_round["scallop"])), float(np.median(per_round["anchor"]))
    serial_fig = figures(times["serial"])
    return {
        "files": n,
        "repeats": repeats,
        "anchor_file": Path(anchor).name,
        "jobs": jobs,
        "loop": f"{jobs} worker processes on both sides, one network thread each (scallop detect on 100+ images)",
        "scallop": {"median_ms": round(w_s, 3), "per_round_ms": [round(x, 3) for x in per_round["scallop"]]},
        "anchor": {"median_ms": round(w_a, 3), "per_round_ms": [round(x, 3) for x in per_round["anchor"]]},
        "ratio_of_medians": round(w_a / w_s, 2),
        "ratio_per_round": [round(a / s, 2) for s, a in zip(per_round["scallop"], per_round["anchor"])],
        # Against the anchor as its README times it (one process, read then run, 2 threads).
        "ratio_to_anchor_protocol": round(serial_fig["anchor"]["median_ms"] / w_s, 2),
        "workers_start_s": start,
        "ahead": figures(times["ahead"])
        | {"loop": "one process, next file read ahead on a second thread (scallop detect under 100 images)"},
        "serial": serial_fig | {"loop": "read, then work, file by file (the anchor README's)"},
        "load_avg_1min": [load_before, _load()[0]],
    }
