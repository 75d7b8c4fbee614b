"""``scallop restore``: put a backup back where a configuration says its parts live."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "restore",
        help="restore a backup made by 'scallop backup'",
        description=(
            "Check every file of a backup against its manifest, then write each where the\n"
            "configuration names it (the configuration file itself to --config; when --config\n"
            "does not exist yet, the backup's own configuration is written there and its paths\n"
            "are used). An existing file is only replaced with --force.\n\n"
            "example:\n"
            "  scallop restore /media/usb/line3-2026-12-04.tar.gz --config /etc/scallop/line.toml"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("backup", help="the backup file")
    p.add_argument("--config", required=True, help="the configuration file to restore to")
    p.add_argument("--force", action="store_true", help="replace files that exist")
    p.set_defaults(func=run)


def run(args) -> int:
    from scallop.app.backup import restore

    for role, path in restore(args.backup, args.config, force=args.force):
        print(f"  restored {role:<12} {path}")
    return 0
