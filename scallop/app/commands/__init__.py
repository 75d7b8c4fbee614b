"""Subcommands of ``scallop``. A command group (``bench``, ``calibrate``, ``sim``) gathers modules named
``<group>_<member>.py``, each exposing ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib


def register_group(sub, group: str, members: tuple[str, ...], help: str, description: str, metavar: str | None = None):
    p = sub.add_parser(group, help=help, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    gs = p.add_subparsers(dest=group, metavar=metavar or group.upper())
    gs.required = True
    for name in members:
        try:
            mod = importlib.import_module(f"scallop.app.commands.{group}_{name}")
        except ModuleNotFoundError as e:
            if e.name == f"scallop.app.commands.{group}_{name}":
                continue  # not built yet
            raise
        mod.register(gs)
    return p
