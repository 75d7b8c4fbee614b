"""``scallop run``: run the line (the built-in simulator when no config is given)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading


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
            "  scallop run --config line.toml --host 0.0.0.0  # the real line, screen on the LAN"
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
    p.set_defaults(func=run)


def run(args) -> int:
    from scallop.app.auth import screen_users
    from scallop.app.build import build_line
    from scallop.app.config import load_config
    from scallop.app.web import create_app, serve
    from scallop.robot.clock import SystemClock

    cfg = load_config(args.config)
    host = args.host or cfg.ui.host
    port = cfg.ui.port if args.port is None else args.port
    # The screen is a live view: the simulator runs on wall time here (scenario runs on
    # virtual time are `scallop sim run`).
    # Before anything opens: a screen on the network with only the published PINs must not start.
    users = screen_users(cfg.ui.users_file, cfg.real_devices(), host)
    line = build_line(cfg, args.record, seed=args.seed, clock=SystemClock())
    try:
        line.open()
        line.start("system")
        line.run_threaded()
        ui = cfg.ui
        app = create_app(
            line,
            users,
            audit=line.record.event if line.record else None,
            allowed_hosts=ui.allowed_hosts,
            frame_access=ui.frame_access,
            metrics_access=ui.metrics_access,
            language=ui.language,
        )
        tls = {"certfile": ui.tls_certfile, "keyfile": ui.tls_keyfile} if ui.tls_certfile else {}
        server = serve(app, host, port, **tls)
    except BaseException:
        line.close()
        raise
    if not ui.users_file:
        note = "  (simulator PINs: operator 1111, engineer 2222)" if users.users() else "  (no users file: E-STOP only)"
    else:
        note = ""
    print(f"operator screen: {server.url}{note}", file=sys.stderr, flush=True)
    # --- OPC UA for the plant's systems (issue 23; docs/opcua.md): the screen's users, the same line.
    opcua = None
    if cfg.opcua.enabled:
        from scallop.app.opcua import OpcUaServer

        try:
            opcua = OpcUaServer(line, users, cfg.opcua, audit=line.record.event if line.record else None).start()
        except BaseException:
            server.stop()
            line.close()
            raise
        print(f"OPC UA: {opcua.url}", file=sys.stderr, flush=True)
    # --- end OPC UA
    if not args.no_browser and cfg.ui.open_browser and args.duration is None:
        try:
            import webbrowser

            webbrowser.open(server.url)
        except Exception:
            pass
    stop = stop_on_signals()
    try:
        if args.duration is not None:
            stop.wait(max(0.0, args.duration))
        else:
            while not stop.wait(1.0):
                pass
    finally:
        if opcua is not None:
            opcua.stop()
        server.stop()
        line.close()
    if args.duration is not None:
        print(json.dumps(line.summary()))
    return exit_status(line)


def stop_on_signals() -> threading.Event:
    """An event set by the first SIGTERM or SIGINT: the line then stops cleanly. A service
    manager and an impatient operator both send more than one; the later ones are noted and
    change nothing (raising in the middle of the stop would cut the record short)."""
    stop = threading.Event()

    def handler(signum, _frame):
        if stop.is_set():
            print(f"{signal.Signals(signum).name}: already stopping, please wait …", file=sys.stderr, flush=True)
            return
        stop.set()
        print("stopping …", file=sys.stderr, flush=True)

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, handler)
    return stop


def exit_status(line) -> int:
    """0 when the run ended with everything recorded; a record that could not keep every row
    is an error (the process must not exit 0 having lost production data)."""
    from scallop.app.record import RecordError

    problems = line.record.problems() if line.record is not None else []
    if problems:
        raise RecordError("the production record is incomplete: " + "; ".join(problems))
    return 0
