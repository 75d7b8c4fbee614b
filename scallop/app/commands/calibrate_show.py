"""``scallop calibrate show``: a calibration file's parts and what is missing or stale."""

from __future__ import annotations

from scallop.app.commands.calibrate_common import Out, load, step_parser


def register(sub) -> None:
    p = step_parser(
        sub,
        "show",
        "print a calibration file's parts, figures and what is missing or stale",
        "With --plan, also draw the belt frame from above: the camera's view, the belt origin and\n"
        "axes, and each arm's base, reach, pick window, chute and ready points (the arms of --config,\n"
        "placed where the calibration file measured them) - to see at a glance whether the pick\n"
        "windows lie where the arms are.\n\n"
        "examples:\n  scallop calibrate show line.json\n  scallop calibrate show --json line.json\n"
        "  scallop calibrate show line.json --plan plan.png --config line.toml",
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plan", metavar="PNG", help="write the belt frame seen from above, with the arms")
    p.add_argument("--config", help="line configuration whose arms (pick windows, workspace) --plan draws")
    p.set_defaults(func=run)


def run(args) -> int:
    from scallop.calibration.store import RUNTIME_PARTS

    out = Out(args.json)
    cal = load(args.file, require=())
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
    if cal.has("fluorescence"):
        f = {k: (float("nan") if v is None else v) for k, v in d["fluorescence"].items()}
        fw, fh = f["image_size"]
        lens = "its intrinsics" if "K" in f else "lens taken as distortion-free"
        out.say(
            f"  fluorescence {f.get('when')}: {fw}x{fh} camera, residual on the belt worst "
            f"{f.get('residual_max_mm', float('nan')):.3f} mm over {f.get('corners')} corners of {f.get('pairs')} "
            f"pair(s), sees {100 * f.get('overlap_share', float('nan')):.0f} % of the colour frame, {lens}, "
            f"{f.get('verdict')}"
        )
    else:
        out.say("  fluorescence: none (needed only on a line with a second, fluorescence camera)")
    missing = [p for p in RUNTIME_PARTS if not cal.has(p)]
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
    if args.plan:
        s["plan"] = _plan(out, cal, args)
    out.result(s)
    return 0


def _plan(out: Out, cal, args) -> str:
    import numpy as np

    from scallop.app.commands.calibrate_common import write_picture
    from scallop.calibration.errors import CalibrationError
    from scallop.calibration.pictures import PlanArm, plan_picture

    arms = []
    configured = {}
    if args.config:
        from scallop.app.config import load_config

        configured = {a.name: a for a in load_config(args.config).arms}
    for name in sorted(set(cal.data.get("arms", {})) | set(configured)):
        a = configured.get(name)
        if name in cal.data.get("arms", {}):
            m = cal.robot_from_belt(name).matrix()
        elif a is not None:
            m = np.asarray(a.robot_from_belt.matrix)
            out.say(f"  arm {name}: not calibrated, drawn where the configuration puts it")
        else:
            continue
        arms.append(
            PlanArm(
                name,
                m,
                a.pick_window_x_mm if a else None,
                a.pick_window_y_mm if a else None,
                (a.workspace.min_mm, a.workspace.max_mm) if a else None,
                a.chute_mm if a else None,
                a.ready_mm if a else None,
            )
        )
    if not cal.has("belt"):
        raise CalibrationError(f"{cal.path}: no belt calibration: nothing to draw a plan of")
    return write_picture(
        out,
        plan_picture(cal.camera, arms, title=f"{cal.path}: the belt frame from above (x = travel)"),
        cal.path,
        "plan",
        args.plan,
        "camera view, belt origin and axes, arms with their reach and pick windows",
    )
