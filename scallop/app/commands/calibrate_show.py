"""``scallop calibrate show``: a calibration file's parts and what is missing or stale."""

from __future__ import annotations

from scallop.app.commands.calibrate_common import Out, load, step_parser


def register(sub) -> None:
    p = step_parser(
        sub,
        "show",
        "print a calibration file's parts, figures and what is missing or stale",
        "example:\n  scallop calibrate show line.json\n  scallop calibrate show --json line.json",
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    from scallop.calibration.store import PARTS

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
    missing = [p for p in PARTS if not cal.has(p)]
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
    out.result(s)
    return 0
