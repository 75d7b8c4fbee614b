"""``scallop bench calibration``: how accurately the calibration chain recovers a known
simulated camera, belt, robot and encoder (several seeds; medians and worst cases)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "calibration",
        help="calibration accuracy against the simulator's known camera, robot and encoder",
        description=(
            "Photograph boards with the simulator's camera (barrel distortion, tilted 5 deg), run\n"
            "intrinsics → belt → robot (touch noise sigma 0.2 mm per axis) → encoder, and compare\n"
            "with the truth. Figures per seed, their medians and worst cases.\n\n"
            "example:\n  scallop bench calibration --seeds 3 --json --out bench/calibration.json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seeds", type=int, default=3, help="independent runs (default 3)")
    p.add_argument("--views", type=int, default=15, help="intrinsics views per run (default 15)")
    p.add_argument("--board", default="chessboard:9x6:25", help="board spec (default chessboard:9x6:25)")
    p.add_argument("--touch-sigma-mm", type=float, default=0.2, help="robot touch noise per axis (default 0.2)")
    p.add_argument("--out", default="bench/calibration.json", help="where the figures are written")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    p.set_defaults(func=run)


def _one_run(seed: int, n_views: int, board: str, sigma: float) -> dict:
    import numpy as np

    from scallop.calibration.belt import measure_belt
    from scallop.calibration.encoder import encoder_from_track
    from scallop.calibration.intrinsics import calibrate_intrinsics
    from scallop.calibration.robot import RigidTransform, fit_robot
    from scallop.calibration.store import LineCalibration
    from scallop.sim.boards import (
        board_corners_B,
        flat_pose,
        intrinsics_views,
        render_board,
    )
    from scallop.sim.config import SimCameraConfig
    from scallop.sim.world import camera_model_from_config

    truth = camera_model_from_config(
        SimCameraConfig(distortion=(-0.08, 0.03, 0.0, 0.0, 0.0), tilt_deg=5.0, yaw_deg=2.0)
    )
    rng = np.random.default_rng(seed)
    views = intrinsics_views(truth, board, n_views, seed=seed)
    t0 = time.perf_counter()  # detection + solve, not the rendering
    intr = calibrate_intrinsics(views, board)
    t_intr = time.perf_counter() - t0
    origin, yaw = (-100.0, 60.0), float(rng.uniform(-2, 2))
    places = [(origin, yaw), ((-250.0, 140.0), 0.0), ((50.0, -20.0), 0.0)]
    photos = [render_board(truth, board, flat_pose(o, y, 3.0), seed=seed * 10 + k) for k, (o, y) in enumerate(places)]
    belt = measure_belt(photos, board, intr.K, intr.dist, intr.image_size, origin_mm=origin, thickness_mm=3.0)
    cal = LineCalibration.new(intr.image_size, "sim")
    cal.set_intrinsics(intr.section("sim"))
    cal.set_belt(belt.section())

    frames = []
    for k, travel in enumerate(np.linspace(0.0, 260.0, 6)):
        pose = flat_pose((origin[0] - 120.0 + travel, origin[1]), yaw, 3.0)
        frames.append((f"f{k}", render_board(truth, board, pose, seed=seed * 100 + k), round(10.0 * travel)))
    enc = encoder_from_track(cal.camera, frames, board, thickness_mm=3.0)
    cal.set_encoder(enc.section())

    a = np.radians(rng.uniform(0, 360))
    robot = RigidTransform([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]], [400.0, -200.0, -350.0])
    # Marks: the four outer inner-corners of the two boards away from the origin (8 marks).
    from scallop.calibration.boards import parse_board

    nx, ny = parse_board(board).corner_grid
    belt_pts, touches = [], []
    for o, y in places[1:]:
        true_B = board_corners_B(board, flat_pose(o, y, 3.0))
        for cid in (0, nx - 1, nx * (ny - 1), nx * ny - 1):
            # The camera's view of the mark (its true projection): the chain is what is measured.
            belt_pts.append([*cal.pixel_to_belt(truth.project(true_B[cid]), z_mm=3.0)[0], 3.0])
            touches.append(robot.apply(true_B[cid])[0] + rng.normal(0, sigma, 3))
    fit = fit_robot(np.array(belt_pts), np.array(touches), "bench")
    cal.set_arm("bench", fit.section())

    w, h = truth.image_size
    px = np.array([[u, v] for u in np.linspace(0, w - 1, 17) for v in np.linspace(0, h - 1, 9)])
    belt_err = np.linalg.norm(cal.pixel_to_belt(px) - truth.pixel_to_belt(px), axis=1)
    want = robot.apply(np.column_stack([truth.pixel_to_belt(px), np.zeros(len(px))]))
    robot_err = np.linalg.norm(cal.belt_to_robot("bench", cal.pixel_to_belt(px)) - want, axis=1)
    return {
        "seed": seed,
        "fx_error_pct": 100 * (intr.fx / truth.K[0, 0] - 1),
        "fy_error_pct": 100 * (intr.fy / truth.K[1, 1] - 1),
        "principal_point_error_px": float(np.hypot(intr.cx - truth.K[0, 2], intr.cy - truth.K[1, 2])),
        "intrinsics_rms_px": intr.rms_px,
        "belt_field_error_max_mm": float(belt_err.max()),
        "robot_fit_rms_mm": fit.rms_mm,
        "pixel_to_robot_error_max_mm": float(robot_err.max()),
        "encoder_scale_error_pct": 100 * (enc.counts_per_mm / 10.0 - 1),
        "intrinsics_solve_s": t_intr,
    }


def run(args) -> int:
    import numpy as np

    from scallop.calibration.errors import CalibrationError

    if not (1 <= args.seeds <= 50):
        raise CalibrationError(f"seeds={args.seeds} is out of range: allowed 1..50")
    t0 = time.time()
    runs = [_one_run(s + 1, args.views, args.board, args.touch_sigma_mm) for s in range(args.seeds)]
    keys = [k for k in runs[0] if k != "seed"]
    summary = {
        "board": args.board,
        "views": args.views,
        "touch_sigma_mm": args.touch_sigma_mm,
        "median": {k: float(np.median([r[k] for r in runs])) for k in keys},
        "worst": {k: float(max((r[k] for r in runs), key=abs)) for k in keys},
        "runs": runs,
        "seconds": round(time.time() - t0, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{args.seeds} runs, {args.views} views of {args.board}, touch noise {args.touch_sigma_mm} mm "
            f"({summary['seconds']} s); median / worst:"
        )
        for k in keys:
            print(f"  {k:30s} {summary['median'][k]:9.4f} / {summary['worst'][k]:9.4f}")
        print(f"wrote {out}")
    return 0
