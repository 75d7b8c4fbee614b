"""``scallop run``: run the line (the built-in simulator when no config is given)."""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import sys
import threading
import time

from scallop.app.systemd import notify, watchdog_interval_s

# A timed run (--duration): a week at most; the line's service runs without one.
MAX_DURATION_S = 7 * 86400


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
            "  scallop run --config dry-run.toml --start      # a dry run with a real arm, started at once\n"
            "  scallop run --capture --duration 600 --no-browser   # keep frames for labelling\n\n"
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
    p.add_argument(
        "--duration",
        type=float,
        help=f"run this many seconds (more than 0, at most {MAX_DURATION_S}), stop cleanly, print a JSON "
        "summary (its keys, and the simulator's 'truth' block: docs/operator-screen.md)",
    )
    p.add_argument("--no-browser", action="store_true", help="do not open a browser window")
    p.add_argument("--record", help="production record database (default from the config)")
    p.add_argument(
        "--seed",
        type=int,
        help="the simulator's seed (default 0); refused for a configuration with a real camera",
    )
    p.add_argument(
        "--start",
        action="store_true",
        help="start the line at launch even with real devices (screen on loopback only)",
    )
    p.add_argument(
        "--capture",
        action="store_true",
        help="keep frames for labelling from the start ([capture] in the config; the engineer panel switches it too)",
    )
    p.add_argument("--lot", help="the production lot from the start (the screen changes it; the record keeps it)")
    p.set_defaults(func=run)


def run(args) -> int:
    # First: a SIGTERM while the devices opened (a service restarted as it starts) killed the
    # program there and left its run 'crashed' (an outside try), and one during the start
    # before that ended it as -15. Either now asks for the stop, which comes once the line is up.
    stop = stop_on_signals()
    from scallop.app.auth import screen_users
    from scallop.app.build import build_line
    from scallop.app.config import load_config
    from scallop.app.web import create_app
    from scallop.app.web_server import bind, serve
    from scallop.errors import check_duration, check_number, check_seed
    from scallop.robot.clock import SystemClock

    if args.seed is not None:
        check_seed("--seed", args.seed)  # numpy's seeding refuses a negative one
    if args.duration is not None:  # nan, 0 or -1 started and stopped at once, recording a run
        check_duration("--duration", args.duration, MAX_DURATION_S)
    if args.port is not None:
        check_number("--port", args.port, 0, 65535, integer=True)  # 70000 is a typo, not port 4464
    cfg = load_config(args.config)
    if args.seed is not None and not cfg.is_simulated:
        from scallop.errors import ConfigError

        # Real devices draw nothing: a seed given for them would be silently meaningless.
        raise ConfigError(
            f"--seed {args.seed}: the seed drives the simulator only, and this configuration runs "
            f"camera.source = {cfg.camera.source!r}; leave --seed out"
        )
    host = args.host or cfg.ui.host
    port = cfg.ui.port if args.port is None else args.port
    start_how = launch_start(cfg, host, args.start)
    # The screen is a live view: the simulator runs on wall time here (scenario runs on
    # virtual time are `scallop sim run`).
    # Before anything opens: a screen on the network with only the published PINs must not start.
    users = screen_users(cfg.ui.users_file, cfg.real_devices(), host)
    sock = bind(host, port)  # before any device opens: a refused start moves nothing
    try:
        line = build_line(cfg, args.record, seed=args.seed or 0, clock=SystemClock())
    except BaseException:
        sock.close()
        raise
    try:
        line.open()
        if args.lot is not None:
            line.set_lot(args.lot, "system")
        if start_how is not None:
            line.start("system", how=start_how)
        if args.capture:
            line.set_capture(True, "system")
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
        server = serve(app, host, port, sock=sock, **tls)
    except BaseException:
        sock.close()
        line.close()
        raise
    if not ui.users_file:
        note = "  (simulator PINs: operator 1111, engineer 2222)" if users.users() else "  (no users file: E-STOP only)"
    else:
        note = ""
    print(f"operator screen: {server.url}{note}", file=sys.stderr, flush=True)
    for a in line.alarms.visible():
        if a.source == "record":
            # What the record found as it opened (a damaged or emptied file set aside): the
            # screen shows it, and so does the service's journal (an outside try saw neither
            # on stderr nor in the summary).
            print(f"{a.severity}: {a.text}", file=sys.stderr, flush=True)
    if start_how is None:
        print(
            f"the line waits for an operator's Start on the screen (real devices: {', '.join(cfg.real_devices())})",
            file=sys.stderr,
            flush=True,
        )
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
    bar = None
    if args.capture:
        from scallop.app.progress import Progress

        bar = Progress(None, "capture", unit="frames")

    def show_capture() -> None:
        c = line.capture.status()
        bar.advance_to(c["kept"], f"{c['bytes'] / 1e6:.0f} of {c['budget_bytes'] / 1e6:.0f} MB")

    try:
        supervise(line, stop, args.duration, on_tick=None if bar is None else show_capture)
    finally:
        if opcua is not None:
            opcua.stop()
        if bar is not None:
            bar.close()
        notify("STOPPING=1", "STATUS=stopping: the arms finish what they hold")
        server.stop()
        line.close()
    if args.duration is not None:
        print(json.dumps(line.summary()))
    return exit_status(line)


def supervise(line, stop: StopRequest | threading.Event, duration: float | None, on_tick=None) -> None:
    """Until ``stop`` (or ``duration``): tell systemd the line is up, ping its watchdog while
    the line's loops are alive (a hung line is then restarted), and note wall-clock jumps (a
    clock set by hand, NTP stepping it) in the record: the record's times would jump with it.
    ``on_tick()`` runs about every second (a progress line)."""

    interval = watchdog_interval_s()
    notify("READY=1", f"STATUS=line {line.state.value}: the screen serves")
    t_end = None if duration is None else time.monotonic() + max(0.0, duration)
    wall0, mono0 = time.time(), time.monotonic()
    while True:
        wait = 1.0 if interval is None else min(1.0, interval)
        if t_end is not None:
            wait = min(wait, max(0.0, t_end - time.monotonic()))
        if stop.wait(wait) or (t_end is not None and time.monotonic() >= t_end):
            return
        if on_tick is not None:
            on_tick()
        if interval is not None:
            h = line.health()
            if h["ok"]:
                notify("WATCHDOG=1", f"STATUS=line {h['state']}")
            else:
                notify(f"STATUS=unhealthy: loops stopped {h['dead'] or h['stale']}, state {h['state']}")
        wall, mono = time.time(), time.monotonic()
        jump = (wall - wall0) - (mono - mono0)
        if abs(jump) > CLOCK_JUMP_S:
            line.alarms.raise_(
                "clock.jump",
                "warning",
                "line",
                f"the computer's clock jumped {jump:+.1f} s: record times before and after differ by that much",
            )
            line.publisher.event("clock_jump", "system", {"jump_s": round(jump, 3)})
        wall0, mono0 = wall, mono


# A wall clock that moves this much more or less than the monotonic clock in a second jumped.
CLOCK_JUMP_S = 2.0


class StopRequest:
    """A stop asked for, settable from a signal handler. A ``threading.Event`` is not: its
    ``set()`` takes the lock that ``wait()`` holds for a moment as it returns, and a handler
    runs in the main thread, possibly right there, so a signal then hangs the program for good
    (CI caught one: a SIGTERM landing as the supervisor's one-second wait ran out). This takes
    no lock: a flag, and a byte down a pipe (the self-pipe trick) to wake ``wait()`` at once."""

    def __init__(self) -> None:
        self._flag = False
        self._r, self._w = os.pipe()
        os.set_blocking(self._w, False)  # a handler must never block: one byte already wakes the reader
        self._poll = select.poll()  # not select(): that one refuses a descriptor numbered past 1023
        self._poll.register(self._r, select.POLLIN)

    def set(self) -> None:
        self._flag = True
        try:
            os.write(self._w, b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full of earlier wake-ups (or closed): the flag is what counts

    def is_set(self) -> bool:
        return self._flag

    def wait(self, timeout: float) -> bool:
        """True as soon as a stop is asked for, False after ``timeout`` seconds without one."""
        if not self._flag:
            self._poll.poll(max(0.0, timeout) * 1000.0)  # a signal retries it (PEP 475); the byte ends it
        return self._flag

    def close(self) -> None:
        """Only once no handler can set it any more: a write to a closed descriptor number
        could land in whatever file was opened under that number since."""
        os.close(self._r)
        os.close(self._w)


def stop_on_signals() -> StopRequest:
    """A stop request set by the first SIGTERM or SIGINT: the line then stops cleanly. A service
    manager and an impatient operator both send more than one; the later ones are noted and
    change nothing (raising in the middle of the stop would cut the record short). The handler
    writes with ``os.write``: a ``print`` could land inside another write to stderr and raise."""
    stop = StopRequest()

    def handler(signum, _frame):
        if stop.is_set():
            _say(f"{signal.Signals(signum).name}: already stopping, please wait …\n")
            return
        stop.set()
        _say("stopping …\n")

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, handler)
    return stop


def _say(text: str) -> None:
    try:
        os.write(2, text.encode("utf-8", "replace"))
    except OSError:
        pass  # no stderr to tell (closed by the service manager): the stop goes on regardless


def exit_status(line) -> int:
    """0 when the run ended with everything recorded; a record that could not keep every row
    is an error (the process must not exit 0 having lost production data)."""
    from scallop.app.record import RecordError

    problems = line.record.problems() if line.record is not None else []
    if problems:
        raise RecordError("the production record is incomplete: " + "; ".join(problems))
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
