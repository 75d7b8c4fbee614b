"""``scallop capture``: record the line's camera — frames with their exposure time and belt count."""

from __future__ import annotations

import argparse
import json
import sys
import time

DESCRIPTION = """\
Record what the line's camera sees, each frame with its exposure time and its belt encoder
count, into a recording folder (docs/dataset-format.md, "Recordings"). The camera and the
encoder are those of the line configuration ([camera], [camera.encoder]); frames whose
exposure time or count is not known are left out and counted. With [camera.fluorescence] each
frame's fluorescence exposure is kept with it as taken (fluorescence/NNNNNN.png), or why it had
none, and a replay pairs and registers it as the line did.

A recording is what a shift looks like to the line: 'scallop replay' plays it through the
line offline, as fast as the machine allows; as [camera] source of a line configuration it
plays at its true pace; its frames.csv is what 'scallop calibrate encoder --counts' reads
(record a board riding the belt for step 3).

examples:
  scallop capture --config line.toml --out shift-0612/ --duration 600
  scallop capture --config line.toml --out board-ride/ --duration 20 --format png
"""


def register(sub) -> None:
    p = sub.add_parser(
        "capture",
        help="record the camera's frames with their exposure time and belt count",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, help="line configuration (TOML): its camera and encoder")
    p.add_argument("--out", required=True, metavar="DIR", help="new folder for the recording")
    p.add_argument("--duration", type=float, default=60.0, metavar="S", help="seconds to record (default 60)")
    p.add_argument("--format", choices=("jpg", "png"), default="jpg", help="image format (default jpg, quality 95)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=run)


def capture(camera, writer, duration_s: float, clock, on_frame=None) -> dict:
    """Read ``camera`` for ``duration_s`` on ``clock`` into ``writer``; frames of unknown time or
    count are skipped. Returns the counts. A camera that stops delivering ends the capture with
    its error (a recording has no back-off: it is restarted by whoever runs it)."""
    from scallop.robot.belt import EncoderGapError
    from scallop.vision.camera import CorruptFrameError, EndOfStreamError

    written = skipped = 0
    reasons: dict[str, int] = {}
    end = clock.now() + duration_s
    while clock.now() < end:
        try:
            frame = camera.read()
        except EndOfStreamError:
            break
        except (EncoderGapError, CorruptFrameError) as e:
            skipped += 1
            name = type(e).__name__
            reasons[name] = reasons.get(name, 0) + 1
            continue
        writer.add(frame)
        written += 1
        if on_frame is not None:
            on_frame(frame)
    return {"frames": written, "skipped": skipped, "skipped_by_reason": reasons}


def run(args) -> int:
    from scallop.app.backends import open_camera
    from scallop.app.config import load_config
    from scallop.app.progress import Progress
    from scallop.errors import ConfigError
    from scallop.robot.clock import SystemClock
    from scallop.vision.recording import RecordingWriter

    if not (0 < args.duration <= 86400):
        raise ConfigError(f"--duration={args.duration:g} is out of range: allowed 0..86400 s")
    cfg = load_config(args.config)
    if cfg.is_simulated:
        raise ConfigError(f"{args.config}: camera.source is the simulator; 'scallop capture' records a real camera")
    clock = SystemClock()
    camera = open_camera(cfg, clock)
    counts = "sampled: " + cfg.camera.encoder.host if cfg.camera.encoder.source == "modbus" else "camera"
    t0 = time.monotonic()
    progress = Progress(None, f"capture {args.out}", unit="frame", bar=False if args.json else None)
    try:
        fl = cfg.camera.fluorescence.setup
        with camera, RecordingWriter(args.out, cfg.camera.source, counts, args.format, fluorescence=fl) as writer:
            result = capture(camera, writer, args.duration, clock, on_frame=lambda f: progress.update())
    finally:
        progress.close()
    result |= {"out": str(args.out), "seconds": round(time.monotonic() - t0, 1)}
    if fl != "none":
        result |= {"fluorescence": {"setup": fl, "frames": writer.uv_frames, "missing": writer.uv_missing}}
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"wrote {result['frames']} frames to {args.out} in {result['seconds']} s; "
            f"{result['skipped']} skipped (time or count not known)"
            + (f"; with their fluorescence frames ({writer.uv_missing} frames without one)" if fl != "none" else ""),
            file=sys.stdout,
        )
    return 0
