"""``scallop bench modbus``: round trip and pick-handshake latency against the simulated arm, or
the round trip to a real arm (``--host``: reads only)."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "modbus",
        help="Modbus round trip and pick handshake latency (simulated arm on loopback, or a real arm's round trip)",
        description=(
            "Start the simulated arm on 127.0.0.1 and measure, with the real controller stack:\n"
            "  round trip: one read of the arm's status block (function 3);\n"
            "  pick:       one full handshake: command block write, commit write, then status\n"
            "              reads until the arm reports the command done (the simulated arm\n"
            "              executes instantly here, so this is protocol time, not motion time).\n"
            "With --host (a real arm, or the vendor's simulator): only the round trip, by reading the\n"
            "status block; nothing is written, no heartbeat, no command (like 'scallop robot status').\n"
            "Medians and p99 are printed and written to --out.\n\n"
            "examples:\n  scallop bench modbus --json --n 1000 --out bench/modbus.json\n"
            "  scallop bench modbus --host 192.168.10.21 --port 502 --profile ur --out bench/modbus-arm1.json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--n", type=int, default=1000, help="samples of each measurement (default 1000)")
    p.add_argument("--profile", default="generic", help="register profile: generic, ur or a .toml path")
    p.add_argument("--rtu", action="store_true", help="RTU framing over socket:// instead of Modbus TCP")
    p.add_argument("--host", help="a real arm's address: measure its round trip (reads only)")
    p.add_argument("--port", type=int, default=502, help="the real arm's Modbus TCP port (default 502)")
    p.add_argument("--unit", type=int, default=1, help="the real arm's Modbus unit id (default 1)")
    p.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for each answer (default 1)")
    p.add_argument("--out", default="bench/modbus.json", help="where the figures are written")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def measure(n: int = 1000, profile: str = "generic", rtu: bool = False) -> dict:
    """The benchmark itself (also used by tests): returns the figures as a dict."""
    import platform
    import time
    from dataclasses import replace

    import numpy as np

    from scallop.robot.arm import ArmClient
    from scallop.robot.belt import ConveyorTracker
    from scallop.robot.clock import SystemClock
    from scallop.robot.config import ArmConfig
    from scallop.robot.errors import RobotError
    from scallop.robot.planning import PickPlanner, PickTarget
    from scallop.sim.arm import SimArm, SimArmParams

    if n < 1:
        raise RobotError(f"--n {n}: need at least 1 sample")
    clock = SystemClock()
    cfg = ArmConfig(name="bench", profile=profile)
    params = SimArmParams.from_config(cfg, instant=True, poll_period_s=0.0)
    with SimArm(cfg, clock, params=params, kind="rtu" if rtu else "tcp") as sim:
        client = ArmClient(replace(cfg, transport=sim.transport_config(timeout_s=1.0)), clock)
        try:
            client.connect()
            rt = []
            for _ in range(n):
                client.heartbeat()  # keeps the arm's watchdog fed; not timed
                t0 = time.perf_counter()
                client.read_status()
                rt.append(time.perf_counter() - t0)
            tracker = ConveyorTracker(0.1, nominal_speed_mm_s=300.0)
            planner = PickPlanner(cfg)
            picks = []
            for i in range(n):
                now = clock.now()
                tracker.update(now, 0)
                target = PickTarget(i, (cfg.pick_window_x_mm[0] + 100.0, 0.0), 0, (0.0, 1.0), z_mm=5.0)
                plan = planner.plan(target, tracker, now)
                if not hasattr(plan, "waypoints"):
                    raise RobotError(f"benchmark target could not be planned: {plan.detail}")
                t0 = time.perf_counter()
                seq = client.submit(plan)
                client.wait_for(seq, "done", timeout_s=5.0, step_s=1e-9)
                picks.append(time.perf_counter() - t0)
        finally:
            client.close()
    rt_ms, pk_ms = np.asarray(rt) * 1e3, np.asarray(picks) * 1e3
    return {
        "transport": "rtu-over-socket" if rtu else "tcp",
        "profile": profile,
        "n": n,
        "roundtrip_median_ms": round(float(np.median(rt_ms)), 4),
        "roundtrip_p99_ms": round(float(np.percentile(rt_ms, 99)), 4),
        "pick_median_ms": round(float(np.median(pk_ms)), 4),
        "pick_p99_ms": round(float(np.percentile(pk_ms, 99)), 4),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def measure_remote(
    host: str, port: int, n: int = 1000, profile: str = "generic", unit: int = 1, timeout_s: float = 1.0
):
    """Round trip to a real arm: ``n`` reads of its status block, nothing written."""
    import platform
    import time

    import numpy as np

    from scallop.robot.arm import ArmClient
    from scallop.robot.config import ArmConfig, TransportConfig
    from scallop.robot.errors import RobotError

    if n < 1:
        raise RobotError(f"--n {n}: need at least 1 sample")
    tc = TransportConfig(host=host, port=port, device_id=unit, timeout_s=timeout_s)
    client = ArmClient(ArmConfig(name="bench", profile=profile, transport=tc))
    rt = []
    try:
        client.transport.connect()
        st = client.read_status(control=True)
        for _ in range(n):
            t0 = time.perf_counter()
            client.read_status()
            rt.append(time.perf_counter() - t0)
    finally:
        client.close()
    rt_ms = np.asarray(rt) * 1e3
    return {
        "transport": tc.describe(),
        "profile": client.map.name,
        "n": n,
        "arm_state": st.state.name,
        "interface_version": st.interface_version,
        "roundtrip_median_ms": round(float(np.median(rt_ms)), 4),
        "roundtrip_p99_ms": round(float(np.percentile(rt_ms, 99)), 4),
        "pick_median_ms": None,  # a real arm gets no command from a benchmark
        "pick_p99_ms": None,
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def run(args) -> int:
    from scallop.app.commands.bench import write_figures

    if args.host:
        res = measure_remote(args.host, args.port, args.n, args.profile, args.unit, args.timeout)
    else:
        res = measure(args.n, args.profile, args.rtu)
    if not write_figures(res, args.out, args.json):
        where = res["transport"] if args.host else f"{res['transport']} on loopback"
        print(f"Modbus {where}, profile {res['profile']}, n={res['n']}")
        print(
            f"  round trip (status read): median {res['roundtrip_median_ms']:.3f} ms, p99 {res['roundtrip_p99_ms']:.3f} ms"
        )
        if res["pick_median_ms"] is not None:
            print(f"  pick handshake:           median {res['pick_median_ms']:.3f} ms, p99 {res['pick_p99_ms']:.3f} ms")
        print(f"written to {args.out}")
    return 0
