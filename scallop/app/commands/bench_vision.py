"""``scallop bench vision``: pipeline speed per frame on this machine."""

from __future__ import annotations

import argparse
import json
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
            "detections; image decoding excluded — on rendered 1280x720 frames with 3-8 scallops.\n\n"
            "example:\n  scallop bench vision --frames 300 --json --out bench/vision.json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", help="ONNX model (default: shipped)")
    p.add_argument("--frames", type=int, default=300, help="timed frames (default 300)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--distinct", type=int, default=40, help="distinct rendered frames, cycled (default 40)")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--mm-per-px", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", default="bench/vision.json")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def bench_frames(n: int, width: int, height: int, mm_per_px: float, seed: int, lo: int = 3, hi: int = 8):
    """Rendered frames with ``lo``..``hi`` whole or partial scallops in view."""
    from dataclasses import replace

    from scallop.sim.dataset import DatasetSettings, random_sample

    st = replace(DatasetSettings(), resolutions=[(width, height)], mm_per_px=(mm_per_px, mm_per_px), scallops=(lo, hi))
    out, i = [], 0
    while len(out) < n:
        s = random_sample(i, seed, st)
        i += 1
        k = len(s.truth.scallops)
        if lo <= k <= hi:
            out.append(s.image)
    return out


def run(args) -> int:
    import numpy as np
    import onnxruntime as ort

    from scallop.vision.pipeline import Pipeline, PipelineConfig

    frames = bench_frames(args.distinct, args.width, args.height, args.mm_per_px, args.seed)
    pipe = Pipeline(args.model, PipelineConfig(threads=args.threads, mm_per_px=args.mm_per_px))
    for i in range(args.warmup):
        pipe.detect(frames[i % len(frames)])
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    times, counts, stages = [], [], {}
    for i in range(args.frames):
        img = frames[i % len(frames)]
        t0 = time.perf_counter()
        d = pipe.detect(img)
        times.append((time.perf_counter() - t0) * 1e3)
        counts.append(len(d))
        for k, v in pipe.timings.items():
            stages.setdefault(k, []).append(v)
    a = np.array(times)
    res = {
        "median_ms": round(float(np.median(a)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "p90_ms": round(float(np.percentile(a, 90)), 3),
        "mean_ms": round(float(a.mean()), 3),
        "frames": len(a),
        "width": args.width,
        "height": args.height,
        "mm_per_px": args.mm_per_px,
        "scallops_per_frame": round(float(np.mean(counts)), 2),
        "threads": args.threads,
        # Median of each stage on its own (they do not add up to the total's median exactly).
        "stages_median_ms": {k: round(float(np.median(v)), 3) for k, v in stages.items()},
        # The machine may be shared: the 1-minute load average around the run says how busy.
        "load_avg_1min": [round(x, 2) for x in (load_before, os.getloadavg()[0])] if load_before is not None else None,
        "cpus": os.cpu_count(),
        # The file name and its training record, not where it happens to be installed.
        "model": args.model or f"shipped ({Path(pipe.model.info.path).name})",
        "model_trained_at": pipe.model.info.meta.get("scallop.trained_at", ""),
        "onnxruntime": ort.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    if args.json:
        print(json.dumps(res))
    else:
        print(
            f"{res['frames']} frames {args.width}x{args.height}, {res['scallops_per_frame']} scallops/frame: "
            f"median {res['median_ms']} ms, p99 {res['p99_ms']} ms (written to {out})"
        )
        print(
            "  stage medians: "
            + ", ".join(f"{k[:-3]} {v}" for k, v in res["stages_median_ms"].items())
            + (
                f"; load avg {res['load_avg_1min'][0]}..{res['load_avg_1min'][1]} on {res['cpus']} CPUs"
                if res["load_avg_1min"]
                else ""
            )
        )
    return 0
