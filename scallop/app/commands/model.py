"""``scallop model list|add|promote|rollback``: the plant's model registry."""

from __future__ import annotations

import argparse
import getpass
import json
import time


def register(sub) -> None:
    p = sub.add_parser(
        "model",
        help="the model registry: list, add, promote (gated on the reference set), roll back",
        description=(
            "Models kept side by side with their data, seed, metrics and hash (docs/model-loop.md).\n"
            "The registry and the labelled reference set come from the line's configuration\n"
            "([models] registry, reference_set) or --registry / --reference. A running line takes a\n"
            "promoted model at its next frame, without stopping, and records the change.\n\n"
            "examples:\n"
            "  scallop model add runs/line3.onnx --name line3-v1 --config line.toml\n"
            "  scallop model promote line3-v1 --config line.toml\n"
            "  scallop model rollback --config line.toml"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="line configuration naming [models] registry and reference_set")
    p.add_argument("--registry", help="registry folder (instead of the configuration's)")
    p.add_argument("--reference", help="labelled reference set, COCO file or folder (instead of the configuration's)")
    s = p.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    ls = s.add_parser("list", help="the models, the live one marked")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=run_list)
    add = s.add_parser("add", help="copy a model file into the registry")
    add.add_argument("file", metavar="FILE")
    add.add_argument("--name", default="", help="its name (default: file name and hash)")
    add.set_defaults(func=run_add)
    pr = s.add_parser("promote", help="make a model live, if it is not worse on the reference set")
    pr.add_argument("name", metavar="M")
    pr.add_argument("--user", default="", help="who promotes (recorded; default: the login name)")
    pr.add_argument("--mm-per-px", type=float, help="the reference set's scale, when it does not carry one")
    pr.set_defaults(func=run_promote)
    rb = s.add_parser("rollback", help="back to the model live before the last promotion")
    rb.add_argument("--user", default="")
    rb.set_defaults(func=run_rollback)


def _settings(args) -> tuple[str, str]:
    from scallop.app.config import load_config

    cfg = load_config(args.config) if args.config else None
    registry = args.registry or (cfg.models.registry if cfg else "")
    reference = args.reference or (cfg.models.reference_set if cfg else "")
    return registry, reference


def _registry(args):
    from scallop.app.registry import Registry

    return Registry(_settings(args)[0])


def _user(args) -> str:
    if args.user:
        return args.user
    try:
        return getpass.getuser()
    except Exception:
        return "cli"


def run_list(args) -> int:
    reg = _registry(args)
    live = reg.ensure_live()
    rows = []
    for e in reg.entries():
        m = e.card.get("metrics") or {}
        if isinstance(m, dict) and "recall" not in m:
            m = m.get("real_holdout") or {}  # fine-tuned without simulator validation: its held-out photos
        rows.append(
            {
                "name": e.name,
                "live": e.name == live.name,
                "sha256": e.sha256,
                "added": time.strftime("%Y-%m-%d %H:%M", time.localtime(e.card.get("added", 0))),
                "seed": e.card.get("seed"),
                "data": e.card.get("data"),
                "uro_success": m.get("uro_success", m.get("grasp_on_uro")) if isinstance(m, dict) else None,
                "recall": m.get("recall") if isinstance(m, dict) else None,
            }
        )
    if args.json:
        print(json.dumps({"live": live.name, "models": rows, "history": reg.index()["history"]}))
        return 0
    for r in rows:
        mark = "*" if r["live"] else " "
        print(
            f"{mark} {r['name']:32s} {r['sha256'][:12]}  added {r['added']}  seed {r['seed']}  "
            f"uro success {r['uro_success']}  recall {r['recall']}"
        )
    return 0


def run_add(args) -> int:
    e = _registry(args).add(args.file, name=args.name)
    print(json.dumps({"name": e.name, "sha256": e.sha256, "path": str(e.path)}))
    return 0


def run_promote(args) -> int:
    from scallop.errors import check_number

    if args.mm_per_px is not None:  # a usage error, as in eval and detect
        check_number("--mm-per-px", args.mm_per_px, 0.05, 5.0)
    registry, reference = _settings(args)
    from scallop.app.registry import Registry

    entry = Registry(registry).promote(args.name, reference, user=_user(args), mm_per_px=args.mm_per_px)
    print(json.dumps(entry))
    return 0


def run_rollback(args) -> int:
    print(json.dumps(_registry(args).rollback(user=_user(args))))
    return 0
