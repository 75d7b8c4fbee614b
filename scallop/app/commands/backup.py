"""``scallop backup``: configuration, calibration, users, model and the record in one file."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "backup",
        help="back up the line: config, calibration, users, model, production record",
        description=(
            "Write one file with everything a new PC needs to carry on: the configuration, the line\n"
            "calibration, the users file, the model in use and a consistent copy of the production\n"
            "record (taken while the line runs), with a manifest of versions and checksums.\n\n"
            "example:\n"
            "  scallop backup --config /etc/scallop/line.toml -o /media/usb/line3-2026-12-04.tar.gz"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, help="the line's configuration file")
    p.add_argument("-o", "--out", required=True, help="the backup file to write (.tar.gz)")
    p.set_defaults(func=run)


def run(args) -> int:
    from scallop.app.backup import backup

    m = backup(args.config, args.out)
    for e in m["members"]:
        print(f"  {e['role']:<12} {e['path']}  ({e['bytes'] / 1e3:.0f} kB, sha256 {e['sha256'][:12]})")
    print(f"wrote {args.out}: {len(m['members'])} files, version {m['version']}")
    return 0
