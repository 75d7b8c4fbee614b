"""``scallop run``: run the line (the built-in simulator when no config is given)."""

from __future__ import annotations

import argparse
import json
import sys
import time


def register(sub) -> None:
    p = sub.add_parser(
        "run",
        help="run the line and serve the operator screen",
        description=(
            "Run the line: camera → vision → tracking → arms, with the operator screen.\n"
            "With no --config it runs on the built-in simulator (simulated camera, belt and\n"
            "arm on 127.0.0.1), in real time, so what the screen shows is what a line does.\n\n"
            "examples:\n"
            "  scallop run                                  # simulator, screen at http://127.0.0.1:8080/\n"
            "  scallop run --duration 30 --no-browser       # 30 s, then a JSON summary on stdout\n"
            "  scallop run --config line.toml --host 0.0.0.0  # the real line, screen on the LAN\n"
            "  scallop run --config dry-run.toml --start      # a dry run with a real arm, started at once\n\n"
            "Safe start: with any real device configured (a camera other than the simulator, a belt\n"
            "encoder, an arm with [arms.transport]) the line waits for an operator's Start on the\n"
            "screen, also after a power loss or a crash. --start starts it at launch on purpose\n"
            "(dry runs, tests); it is refused when the screen is bound beyond loopback."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="line configuration (TOML); default: the built-in simulator")
    p.add_argument("--host", help="address of the operator screen (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port of the operator screen (default 8080; 0 = any free port)")
    p.add_argument("--duration", type=float, help="run this many seconds, stop cleanly, print a JSON summary")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser window")
    p.add_argument("--record", help="production record database (default from the config)")
    p.add_argument("--seed", type=int, default=0, help="simulator seed")
    p.add_argument(
        "--start",
        action="store_true",
        help="start the line at launch even with real devices (screen on loopback only)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from scallop.app.build import build_line
    from scallop.app.config import load_config
    from scallop.app.web import create_app, serve
    from scallop.robot.clock import SystemClock

    cfg = load_config(args.config)
    host = args.host or cfg.ui.host
    port = cfg.ui.port if args.port is None else args.port
    start_how = launch_start(cfg, host, args.start)
    users = screen_users(cfg)
    # The screen is a live view: the simulator runs on wall time here (scenario runs on
    # virtual time are `scallop sim run`).
    line = build_line(cfg, args.record, seed=args.seed, clock=SystemClock())
    try:
        line.open()
        if start_how is not None:
            line.start("system", how=start_how)
        line.run_threaded()
        app = create_app(line, users, audit=line.record.event if line.record else None)
        server = serve(app, host, port)
    except BaseException:
        line.close()
        raise
    print(
        f"operator screen: {server.url}  (simulator PINs: operator 1111, engineer 2222)"
        if not cfg.ui.users_file
        else f"operator screen: {server.url}",
        file=sys.stderr,
        flush=True,
    )
    if start_how is None:
        print(
            f"the line waits for an operator's Start on the screen (real devices: {', '.join(cfg.real_devices())})",
            file=sys.stderr,
            flush=True,
        )
    if not args.no_browser and cfg.ui.open_browser and args.duration is None:
        try:
            import webbrowser

            webbrowser.open(server.url)
        except Exception:
            pass
    # A service manager stops the line with SIGTERM: same clean stop as Ctrl-C.
    import signal

    def _term(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    try:
        if args.duration is not None:
            time.sleep(max(0.0, args.duration))
        else:
            while True:
                time.sleep(1.0)
    except KeyboardInterrupt:
        print("stopping …", file=sys.stderr)
    finally:
        server.stop()
        line.close()
    if args.duration is not None:
        print(json.dumps(line.summary()))
    return 0


# ---------------------------------------------------------------------------- safe start


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def launch_start(cfg, host: str, start: bool) -> str | None:
    """How the line starts at launch, for the record: ``"--start"`` (asked for on the command
    line), ``"launch"`` (the simulator alone: nothing real can move), or None: it waits for
    an operator's Start on the screen, as it must with any real device configured."""
    from scallop.errors import ConfigError

    if start:
        if not _loopback(host):
            raise ConfigError(
                f"--start: the operator screen is bound to {host}, beyond loopback; a line reachable from "
                "the plant network starts only by an operator's Start on the screen (bind it to 127.0.0.1 "
                "for a dry run, or leave --start out)"
            )
        return "--start"
    return None if cfg.real_devices() else "launch"


def screen_users(cfg):
    """The users file of the configuration; the simulator's built-in PINs only when nothing
    real is driven."""
    from scallop.app.auth import UserStore
    from scallop.errors import ConfigError

    if cfg.ui.users_file:
        return UserStore.load(cfg.ui.users_file)
    if cfg.real_devices():
        raise ConfigError(
            f"ui.users_file: this line drives real devices ({', '.join(cfg.real_devices())}); the simulator's "
            "built-in PINs are refused: create a users file (docs/configuration.md) and name it here"
        )
    return UserStore.simulator_defaults()
