"""``scallop bench camera``: stamp jitter of the real camera path, and the pick position error
when its recording is replayed through the line."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

DESCRIPTION = """\
Record the simulated line through the real camera path — OpenCV reading a live MJPEG stream
(a camera process of its own, frames sent a fixed 50 ms after exposure), the belt counter
sampled over Modbus TCP, all on 127.0.0.1 — with 'scallop capture''s code, then replay the
recording through the line on a virtual clock with simulated arms, graded against the
simulator's truth. Figures (medians, p99, worst):

  stamp error      each recorded frame's exposure time minus its true exposure (ms)
  arrival jitter   how far frames arrived from the camera's cadence: what stamping a
                   frame when it arrives would have cost (ms)
  count error      each recorded count minus the true count at the exposure (mm)
  pick error       where each grip closed on the belt minus where the grasp vision chose
                   truly was (its frame's true exposure, the true belt travel since): what
                   stamps, counts and planning cost, vision's own error left out (mm)
  uro distance     each grip's distance from the nearest true uro (0 on it) (mm)

example:
  scallop bench camera --seconds 60 --json --out bench/camera.json
"""


def register(sub) -> None:
    p = sub.add_parser(
        "camera",
        help="stamp jitter and pick position error of the camera path, on a replayed recording",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seconds", type=float, default=60.0, help="seconds recorded (default 60)")
    p.add_argument("--fps", type=float, default=10.0, help="the stream's frame rate (default 10)")
    p.add_argument("--seed", type=int, default=11, help="simulator seed (default 11)")
    p.add_argument("--out", default="bench/camera.json", help="where the figures are written")
    p.add_argument("--keep", metavar="DIR", help="keep the recording in DIR")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    p.set_defaults(func=run)


def _figures(values, digits: int = 3) -> dict:
    import numpy as np

    a = np.abs(np.asarray(values, dtype=np.float64))
    if not len(a):
        return {"n": 0}
    return {
        "n": int(len(a)),
        "p50": round(float(np.median(a)), digits),
        "p99": round(float(np.quantile(a, 0.99)), digits),
        "max": round(float(a.max()), digits),
    }


def record(folder: Path, seconds: float, fps: float, seed: int):
    """Record ``seconds`` of the simulated line through the camera path into ``folder``.
    Returns (rig facts for the replay, stamp errors s, count errors mm, arrival jitters s)."""
    import numpy as np

    from scallop.app.backends import default_sim_arms, open_camera
    from scallop.app.commands.capture import capture
    from scallop.app.config import load_config
    from scallop.sim.config import SimConfig
    from scallop.sim.rig import SimRig
    from scallop.vision.recording import RecordingWriter, read_index

    sim = SimConfig()
    jitter: list[float] = []
    with SimRig(sim, default_sim_arms(1), seed=seed, fps=fps, latency_s=0.05) as rig:
        cfg = load_config(None, rig.line_overrides(folder.parent, latency_s=0.051))
        camera = open_camera(cfg, rig.clock)
        with camera, RecordingWriter(folder, cfg.camera.source, "sampled: sim counter", "jpg") as w:
            warm = rig.clock.now() + 3.0  # the stream and the cadence settle
            while rig.clock.now() < warm:
                try:
                    camera.read()
                except Exception:  # frames of unknown time while the cadence is learnt
                    pass

            def on_frame(frame):
                if "stamp_jitter_s" in frame.extra:
                    jitter.append(frame.extra["stamp_jitter_s"])

            counts = capture(camera, w, seconds, rig.clock, on_frame=on_frame)
        exposures = np.array([t for _, t in rig.stream.exposures])
        meta, frames = read_index(folder)
        stamp_err, count_err = [], []
        exposed_at = {}  # recorded count -> the true exposure of its frame
        for f in frames:
            t = meta["t0"] + f.time_s
            k = int(np.argmin(np.abs(exposures - t)))
            stamp_err.append(t - exposures[k])
            count_err.append((f.counts - rig.world.encoder_at(exposures[k])) / sim.encoder.counts_per_mm)
            exposed_at[f.counts] = float(exposures[k])
        facts = {
            "world_t0": rig.world.t0,
            "t0": meta["t0"],
            "calibration": str(folder.parent / "line-calibration.json"),
            "exposed_at": exposed_at,
        }
        facts |= {"arms": default_sim_arms(1), "sim": sim, "seed": seed, "capture": counts}
    return facts, stamp_err, count_err, jitter


def replay_graded(folder: Path, facts: dict, record_path: Path):
    """The recording through the line on a virtual clock, its picks graded by a replica of the
    world. Returns (pick errors mm, uro distances mm, line summary)."""
    import math
    import sqlite3

    import numpy as np

    from scallop.app.commands.replay import replay
    from scallop.app.config import LineConfig, RuntimeSection
    from scallop.sim.clock import VirtualClock
    from scallop.sim.rig import PickReferee
    from scallop.sim.world import SimWorld

    clock = VirtualClock(start=facts["t0"])
    world = SimWorld(facts["sim"], seed=facts["seed"], clock=clock)
    world.t0 = facts["world_t0"]  # the recorded world, at the same moments
    referee = PickReferee(world)
    cfg = LineConfig(arms=facts["arms"], runtime=RuntimeSection(calibration=facts["calibration"]))
    lines = []
    summary = replay(cfg, folder, str(record_path), grader=referee, clock=clock, on_line=lines.append)
    con = sqlite3.connect(record_path)
    chosen = {
        tid: (gx, gy, enc)
        for tid, gx, gy, enc in con.execute("SELECT track_id, grasp_x_mm, grasp_y_mm, encoder_mm FROM scallops")
    }
    con.close()
    cpm = facts["sim"].encoder.counts_per_mm
    errors = []
    for sim_arm in lines[0].backend.sim_arms:
        for r in sim_arm.records:
            gx, gy, enc = chosen.get(r.target_id, (None, None, None))
            if r.t_grip is None or r.grasp_B is None or gx is None:
                continue
            # The grasp as the deciding frame showed it (belt frame at its exposure), carried by
            # the belt's true travel from that frame's true exposure to the grip.
            t_seen = facts["exposed_at"][round(enc * cpm)]
            x_true = gx + enc + world.travel_mm(r.t_grip) - world.travel_mm(t_seen)
            errors.append(math.hypot(r.grasp_B[0] - x_true, r.grasp_B[1] - gy))
    dist = [p.uro_mm for p in referee.picks]
    return errors, dist, summary, int(np.sum(np.asarray(dist) > 5.0))


def run(args) -> int:
    from scallop.errors import check_seed

    check_seed("--seed", args.seed)  # numpy's seeding refuses a negative one
    from scallop.errors import ConfigError

    if not (5 <= args.seconds <= 3600) or not (1 <= args.fps <= 30):
        raise ConfigError("--seconds is allowed 5..3600 and --fps 1..30")
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="scallop-bench-camera-") as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp) / "recording"
        facts, stamp_err, count_err, jitter = record(folder, args.seconds, args.fps, args.seed)
        errors, dist, summary, far = replay_graded(folder, facts, Path(tmp) / "record.sqlite")
    import numpy as np

    out = {
        "source": f"simulator seed {args.seed}: MJPEG stream at {args.fps:g} fps, 50 ms pipeline delay, "
        f"counter over Modbus TCP, {args.seconds:g} s recorded",
        "frames": facts["capture"]["frames"],
        "frames_skipped": facts["capture"]["skipped"],
        "stamp_error_ms": _figures(np.asarray(stamp_err) * 1e3),
        "stamp_bias_ms": round(float(np.mean(stamp_err)) * 1e3, 3),
        "arrival_jitter_ms": _figures(np.asarray(jitter) * 1e3),
        "count_error_mm": _figures(count_err),
        "pick_error_mm": _figures(errors),
        "uro_distance_mm": _figures(dist),
        "picks_over_5mm_from_uro": far,
        "replay": {k: summary[k] for k in ("seen", "picked", "skipped", "skipped_by_reason", "frames")},
        "seconds": round(time.time() - t_start, 1),
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    if args.json:
        print(json.dumps(out))
    else:
        print(out["source"])
        for k in ("stamp_error_ms", "arrival_jitter_ms", "count_error_mm", "pick_error_mm", "uro_distance_mm"):
            f = out[k]
            print(f"  {k:20s} n {f['n']:4d}  p50 {f.get('p50', '-')}  p99 {f.get('p99', '-')}  max {f.get('max', '-')}")
        print(f"  stamp bias {out['stamp_bias_ms']} ms; picks over 5 mm from a uro: {far}; replay {out['replay']}")
        print(f"wrote {path}")
    return 0
