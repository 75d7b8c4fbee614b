"""``scallop bench shadow``: what a shadow model costs the live loop."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "shadow",
        help="the live loop's frame time with and without a shadow model beside it",
        description=(
            "Replay the same simulator frames through the line's frame loop (vision, tracking,\n"
            "decisions) at the camera's rate on two lines, one alone and one with a shadow model\n"
            "offered every frame, in alternating blocks, and compare their frame times (median,\n"
            "p99) and the process's CPU. Run it on the line PC.\n\n"
            "example:\n  scallop bench shadow --frames 200 --fps 10 --json --out bench/shadow.json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--shadow-model", help="the candidate (default: the shipped model, the same work)")
    p.add_argument("--frames", type=int, default=200, help="frames per pass (default 200)")
    p.add_argument("--distinct", type=int, default=40, help="distinct simulator frames, replayed (default 40)")
    p.add_argument("--fps", type=float, default=10.0, help="camera rate the frames are replayed at (default 10)")
    p.add_argument("--share", type=float, default=1.0, help="vision.shadow_share (default 1: offer every frame)")
    p.add_argument("--cpu-share", type=float, default=0.25, help="vision.shadow_cpu_share (default 0.25)")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--out", default="bench/shadow.json")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def _frames(n: int, seed: int):
    """``n`` frames of a simulated belt, as its camera delivers them (with encoder counts)."""
    from scallop.app.config import load_config
    from scallop.sim.camera import SimCamera
    from scallop.sim.clock import VirtualClock
    from scallop.sim.world import SimWorld

    cfg = load_config(overrides={"sim": {"arrivals": {"rate_per_s": 2.0}}})
    world = SimWorld(cfg.sim, seed=seed, clock=VirtualClock())
    cam = SimCamera(world)
    cam.connect()
    return [cam.read() for _ in range(n)]


def _line(shadow_model: str | None, share: float, cpu: float, record: Path):
    from scallop.app.build import build_line
    from scallop.app.config import load_config
    from scallop.sim.clock import VirtualClock

    over = {"runtime": {"tick_s": 0.02}, "sim": {"arrivals": {"rate_per_s": 2.0}}}
    if shadow_model:
        over["vision"] = {"shadow_model": shadow_model, "shadow_share": share, "shadow_cpu_share": cpu}
    line = build_line(load_config(overrides=over), record, clock=VirtualClock())
    line.open()
    line.start("bench")
    return line


def _figures(times: list, cpu_s: float, wall_s: float, shadow) -> dict:
    import numpy as np

    a = np.array(times)
    return {
        "median_ms": round(float(np.median(a)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "max_ms": round(float(a.max()), 3),
        "frames": len(a),
        "process_cpu_cores": round(cpu_s / max(wall_s, 1e-9), 3),
        "shadow": shadow.figures() if shadow is not None else None,
    }


def _passes(frames, total: int, fps: float, model: str, share: float, cpu: float, tmp: Path, block: int = 20):
    """Both lines side by side, fed in alternating blocks of ``block`` frames at ``fps``, so a
    machine whose other load comes and goes weighs on both the same."""
    from scallop.vision.camera import Frame

    lines = {
        "alone": _line(None, 1.0, 1.0, tmp / "a.sqlite"),
        "with_shadow": _line(model, share, cpu, tmp / "b.sqlite"),
    }
    times = {k: [] for k in lines}
    cpu_s = dict.fromkeys(lines, 0.0)
    wall_s = dict.fromkeys(lines, 0.0)
    step = frames[-1].encoder - frames[0].encoder + (frames[1].encoder - frames[0].encoder)
    span = frames[-1].timestamp - frames[0].timestamp + (frames[1].timestamp - frames[0].timestamp)
    period = 1.0 / fps
    try:
        done = dict.fromkeys(lines, 0)
        while min(done.values()) < total:
            for name, line in lines.items():
                c0, w0 = time.process_time(), time.perf_counter()
                t_next = w0
                for _ in range(min(block, total - done[name])):
                    i = done[name]
                    f = frames[i % len(frames)]
                    # Later rounds of the same pictures lie further along the belt: tracking sees a moving belt.
                    k = i // len(frames)
                    f = Frame(f.image, f.timestamp + span * k, f.encoder + step * k, i, f.source)
                    t0 = time.perf_counter()
                    line.process_frame(f)
                    times[name].append((time.perf_counter() - t0) * 1e3)
                    done[name] += 1
                    t_next += period
                    time.sleep(max(0.0, t_next - time.perf_counter()))
                cpu_s[name] += time.process_time() - c0
                wall_s[name] += time.perf_counter() - w0
        return {k: _figures(times[k], cpu_s[k], wall_s[k], lines[k].shadow) for k in lines}
    finally:
        for line in lines.values():
            line.close()


def run(args) -> int:
    from scallop.errors import check_seed

    check_seed("--seed", args.seed)  # numpy's seeding refuses a negative one
    import tempfile

    from scallop.errors import check_number
    from scallop.models.runtime import default_model_path

    check_number("--frames", args.frames, 10, 100000, integer=True)
    check_number("--fps", args.fps, 0.5, 200.0)
    frames = _frames(args.distinct, args.seed)
    model = args.shadow_model or str(default_model_path())
    with tempfile.TemporaryDirectory(prefix="scallop-bench-shadow-") as tmp:
        load0 = os.getloadavg()[0]
        r = _passes(frames, args.frames, args.fps, model, args.share, args.cpu_share, Path(tmp))
        alone, shadow = r["alone"], r["with_shadow"]
        load1 = os.getloadavg()[0]
    res = {
        "alone": alone,
        "with_shadow": shadow,
        "median_cost_ms": round(shadow["median_ms"] - alone["median_ms"], 3),
        "p99_cost_ms": round(shadow["p99_ms"] - alone["p99_ms"], 3),
        "fps": args.fps,
        "shadow_share": args.share,
        "shadow_cpu_share": args.cpu_share,
        "shadow_model": args.shadow_model or "shipped (the same work as the live model)",
        "cpus": os.cpu_count(),
        "load_avg_1min": [round(load0, 2), round(load1, 2)],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    if args.json:
        print(json.dumps(res))
    else:
        s = shadow["shadow"]
        print(
            f"frame time alone: median {alone['median_ms']} ms, p99 {alone['p99_ms']} ms; with the shadow: median "
            f"{shadow['median_ms']} ms, p99 {shadow['p99_ms']} ms ({s['frames']} frames compared, "
            f"{s['skipped_busy']} skipped busy; process {shadow['process_cpu_cores']} cores against "
            f"{alone['process_cpu_cores']}); written to {out}"
        )
    return 0
