"""``scallop users``: who may log in on the line, with which role (the users file of ``[ui] users_file``).

The file holds names, roles and salted scrypt hashes of the PINs, never a PIN; it is rewritten
atomically with mode 0600, under a lock so that two commands at once do not lose a change. A
running line rereads it: a new user or PIN works at once. Format: docs/operator-screen.md.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "users",
        help="add, change, remove and list the users of the operator screen",
        description=(
            "Manage the users file of the operator screen ([ui] users_file): each user has a name, a role\n"
            "(operator: runs the line; engineer: also changes configuration) and a PIN of 4 to 8 digits\n"
            "(engineers: 6 to 8), unique on the line. The PIN is asked twice on the terminal, or read from\n"
            "standard input with --pin-stdin; it is never an argument (others could read it in 'ps').\n\n"
            "examples:\n"
            "  scallop users add maria --role operator --file /etc/scallop/users.json\n"
            "  scallop users add ken --role engineer --config line.toml\n"
            "  echo 482913 | scallop users passwd ken --pin-stdin --config line.toml\n"
            "  scallop users list --config line.toml\n"
            "  scallop users remove maria --config line.toml"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    us = p.add_subparsers(dest="users", metavar="ACTION")
    us.required = True
    for action, help_ in (
        ("add", "add a user"),
        ("passwd", "give a user a new PIN"),
        ("remove", "remove a user"),
        ("list", "list the users and their roles"),
    ):
        a = us.add_parser(action, help=help_, description=help_ + ".")
        if action != "list":
            a.add_argument("name", help="the user's name as the screen shows it")
        if action == "add":
            a.add_argument("--role", required=True, choices=("operator", "engineer"))
        if action in ("add", "passwd"):
            a.add_argument("--pin-stdin", action="store_true", help="read the PIN from standard input (scripts)")
        where = a.add_mutually_exclusive_group()
        where.add_argument("--file", help="the users file")
        where.add_argument("--config", help="line configuration: its [ui] users_file")
        a.set_defaults(func=run)


def _users_file(args) -> Path:
    from scallop.app.config import load_config
    from scallop.errors import ConfigError

    if args.file:
        return Path(args.file)
    if args.config:
        cfg = load_config(args.config)
        if not cfg.ui.users_file:
            raise ConfigError(f"{args.config}: [ui] users_file is not set: set it, or give --file")
        return Path(cfg.ui.users_file)
    raise ConfigError("which users file? give --file PATH or --config line.toml")


def _read_pin(args) -> str:
    from scallop.errors import ConfigError

    if args.pin_stdin:
        return sys.stdin.readline().strip()
    if not sys.stdin.isatty():
        raise ConfigError("no terminal to ask the PIN on: pipe it in with --pin-stdin")
    pin = getpass.getpass("PIN: ")
    if getpass.getpass("PIN again: ") != pin:
        raise ConfigError("the two PINs differ: nothing changed")
    return pin


@contextlib.contextmanager
def _locked(path: Path):
    """One ``scallop users`` at a time per file (an advisory lock on ``<file>.lock``)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run(args) -> int:
    from scallop.app.auth import UserStore

    path = _users_file(args)
    if args.users == "list":
        users = UserStore.load(path).users()
        width = max([len(u.name) for u in users] + [4])
        print(f"{'name':<{width}}  role")
        for u in users:
            print(f"{u.name:<{width}}  {u.role}")
        return 0
    pin = _read_pin(args) if args.users in ("add", "passwd") else ""
    with _locked(path):
        store = UserStore.load(path) if args.users != "add" or path.exists() else UserStore(path)
        try:
            if args.users == "add":
                store.add(args.name, args.role, pin)
            elif args.users == "passwd":
                store.passwd(args.name, pin)
            else:
                store.remove(args.name)
        except KeyError as e:
            from scallop.app.auth import UserError

            raise UserError(f"{path}: {e.args[0]}") from None
        store.save()
    done = {"add": "added", "passwd": "has a new PIN", "remove": "removed"}[args.users]
    print(f"{args.name} {done} ({path})", file=sys.stderr)
    if args.users == "remove" and not any(u.role == "engineer" for u in store.users()):
        print("note: no engineer is left in this file: nobody can change the configuration", file=sys.stderr)
    return 0
