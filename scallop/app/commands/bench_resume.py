"""``scallop bench resume``: how fast picking resumes after an arm restarts, and how often the
controller knocks while an arm is away."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "resume",
        help="time to resume picking after an arm restart; reconnect attempts per minute while it is away",
        description=(
            "Against the simulated arm on 127.0.0.1, on the wall clock, with the real controller stack\n"
            "(arm client and scheduler served every 10 ms, as the line's arm thread does, with a\n"
            "target always waiting):\n"
            "  resume:   from the arm being ready again to the next pick committed, after\n"
            "            - the robot program restarting with its registers kept,\n"
            "            - the robot program restarting with its registers cleared,\n"
            "            - a power cycle: the arm's controller away for --away-s, back with cleared\n"
            "              registers, its robot program running 1 s later (ready = the program runs),\n"
            "            - the link lost for 0.3 s (well within the watchdog), the arm running on\n"
            "              (ready = the link is back: this one waits out the reconnect back-off);\n"
            "  attempts: connection attempts per minute while the arm is away for --attempts-s,\n"
            "            refusing connections, and accepting them but never answering.\n"
            "The transport uses the default back-off (0.1 s doubling to 5 s) and timeout (0.5 s).\n"
            "Medians, p99 and maxima are printed and written to --out.\n\n"
            "example:\n  scallop bench resume --json --n 10 --out bench/resume.json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--n", type=int, default=10, help="restarts of each kind (default 10)")
    p.add_argument(
        "--away-s", type=float, default=3.0, help="how long the arm's controller is away in a power cycle (default 3)"
    )
    p.add_argument("--attempts-s", type=float, default=60.0, help="how long to count reconnect attempts (default 60)")
    p.add_argument("--out", default="bench/resume.json", help="where the figures are written")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


TICK_S = 0.01


class _Feeder:
    """One arm served like the line's arm thread, with a pick target always queued."""

    def __init__(self, clock, arm_cfg, transport) -> None:
        from dataclasses import replace

        from scallop.robot.arm import ArmClient
        from scallop.robot.belt import ConveyorTracker
        from scallop.robot.scheduler import Scheduler

        self.clock = clock
        self.client = ArmClient(replace(arm_cfg, transport=transport), clock)
        self.tracker = ConveyorTracker(0.1, nominal_speed_mm_s=300.0)
        self.sched = Scheduler([self.client], self.tracker, clock)
        self.lane = self.sched.lanes[0]
        self.next_id = 1

    def tick(self) -> None:
        from scallop.robot.planning import PickTarget

        now = self.clock.now()
        count = int(round(300.0 * now / 0.1))
        self.tracker.update(now, count)
        if not self.sched.queue:
            x0 = self.lane.config.pick_window_x_mm[0] + 50.0
            self.sched.add([PickTarget(self.next_id, (x0, 0.0), count, (0.0, 1.0), z_mm=5.0)])
            self.next_id += 1
        self.sched.serve(self.lane)
        self.sched.drain()
        self.sched.take_events()

    def serve_for(self, seconds: float) -> None:
        t_end = self.clock.now() + seconds
        while self.clock.now() < t_end:
            self.tick()
            self.clock.sleep(TICK_S)

    def resume_after(self, t_ready: float, limit_s: float) -> float:
        """Seconds from ``t_ready`` to the next pick committed."""
        from scallop.robot.errors import RobotError

        n0 = self.lane.submitted
        while self.clock.now() - t_ready < limit_s:
            self.tick()
            if self.lane.submitted > n0:
                return self.clock.now() - t_ready
            self.clock.sleep(TICK_S)
        raise RobotError(f"picking did not resume within {limit_s:g} s of the arm being ready")


def _mute_server():
    """A TCP server that accepts connections and never answers (a hung arm controller)."""
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    srv.settimeout(0.1)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def accept() -> None:
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                continue

    th = threading.Thread(target=accept, name="bench-mute", daemon=True)
    th.start()

    def close() -> None:
        stop.set()
        th.join(2)
        for c in conns:
            c.close()
        srv.close()

    return srv.getsockname()[1], close


def _stats(values: list[float]) -> dict:
    import numpy as np

    a = np.asarray(values, dtype=float) * 1e3
    return {
        "n": len(values),
        "median_ms": round(float(np.median(a)), 1),
        "p99_ms": round(float(np.percentile(a, 99)), 1),
        "max_ms": round(float(a.max()), 1),
    }


def measure(n: int = 10, away_s: float = 3.0, attempts_s: float = 60.0) -> dict:
    """The benchmark itself (also used by tests): returns the figures as a dict."""
    import platform

    from scallop.robot.arm import ArmClient
    from scallop.robot.clock import SystemClock
    from scallop.robot.config import ArmConfig, TransportConfig
    from scallop.robot.errors import RobotError
    from scallop.sim.arm import SimArm, SimArmParams

    if n < 1 or away_s <= 0 or attempts_s <= 0:
        raise RobotError(f"--n {n}, --away-s {away_s:g}, --attempts-s {attempts_s:g}: each must be positive")
    clock = SystemClock()
    cfg = ArmConfig(name="bench")
    params = SimArmParams.from_config(cfg, instant=True)
    out: dict = {"resume": {}, "attempts_per_min": {}}
    with SimArm(cfg, clock, params=params) as sim:
        feeder = _Feeder(clock, cfg, TransportConfig(host="127.0.0.1", port=sim.port))
        try:
            feeder.serve_for(0.5)
            cases = {
                "restart_registers_kept": lambda: sim.restart_program(),
                "restart_registers_cleared": lambda: sim.restart_program(fresh_registers=True),
            }
            for name, restart in cases.items():
                waits = []
                for _ in range(n):
                    feeder.serve_for(0.3)
                    restart()  # the program is ready at once
                    waits.append(feeder.resume_after(clock.now(), 10.0))
                out["resume"][name] = _stats(waits)
            waits = []
            for _ in range(n):
                feeder.serve_for(0.3)
                sim.go_offline()
                feeder.serve_for(away_s)
                sim.restart_program(fresh_registers=True, start_after_s=1.0)
                t_ready = clock.now() + 1.0
                sim.come_back()
                waits.append(feeder.resume_after(t_ready, 10.0))
            out["resume"][f"power_cycle_{away_s:g}s"] = _stats(waits)
            waits = []
            for _ in range(n):
                feeder.serve_for(0.3)
                sim.go_offline()
                feeder.serve_for(0.3)
                sim.come_back()
                waits.append(feeder.resume_after(clock.now(), 10.0))
            out["resume"]["link_lost_0.3s"] = _stats(waits)
            # Away: nothing listens.
            sim.go_offline()
            a0 = feeder.client.transport.attempts
            feeder.serve_for(attempts_s)
            out["attempts_per_min"]["refused"] = round((feeder.client.transport.attempts - a0) * 60.0 / attempts_s, 1)
        finally:
            feeder.client.close()
    # Away: the controller accepts TCP connections but never answers.
    port, close = _mute_server()
    client = ArmClient(ArmConfig(name="bench", transport=TransportConfig(host="127.0.0.1", port=port)), clock)
    try:
        t_end = clock.now() + attempts_s
        while clock.now() < t_end:
            client.poll()
            clock.sleep(TICK_S)
        out["attempts_per_min"]["accepted_never_answering"] = round(client.transport.attempts * 60.0 / attempts_s, 1)
    finally:
        client.close()
        close()
    out.update(
        {
            "away_s": away_s,
            "attempts_s": attempts_s,
            "back_off": "0.1 s doubling to 5 s, up to a quarter shorter at random; timeout 0.5 s",
            "machine": platform.machine(),
            "python": platform.python_version(),
        }
    )
    return out


def run(args) -> int:
    from scallop.app.commands.bench import write_figures

    res = measure(args.n, args.away_s, args.attempts_s)
    if not write_figures(res, args.out, args.json):
        print(f"time from the arm being ready to the next pick committed (n={args.n} each):")
        for name, s in res["resume"].items():
            print(f"  {name:28s} median {s['median_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms, max {s['max_ms']:.1f} ms")
        print(f"reconnect attempts per minute while the arm is away ({args.attempts_s:g} s):")
        for name, v in res["attempts_per_min"].items():
            print(f"  {name:28s} {v:.1f}")
        print(f"written to {args.out}")
    return 0
