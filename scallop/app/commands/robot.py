"""``scallop robot …``: the simulated arm for integrators, and an arm's status registers."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "robot",
        help="run the simulated arm, read an arm's status registers",
        description=(
            "Robot arms over Modbus (see docs/robot-interface.md).\n\n"
            "examples:\n"
            "  scallop robot sim-arm --port 5020\n"
            "  scallop robot status --host 127.0.0.1 --port 5020"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rs = p.add_subparsers(dest="robot", metavar="ROBOT")
    rs.required = True

    s = rs.add_parser(
        "sim-arm",
        help="run the simulated arm as a Modbus server (for integrators)",
        description=(
            "Run the simulated arm standalone: a Modbus server that implements the robot side of\n"
            "the interface (handshake, heartbeats, watchdog, motion timing) on wall-clock time,\n"
            "so a controller or a test tool can be pointed at it. Picks are not graded.\n\n"
            "examples:\n"
            "  scallop robot sim-arm --port 5020\n"
            "  scallop robot sim-arm --profile ur --port 5021 --duration 60\n"
            "  scallop robot sim-arm --rtu socket://127.0.0.1:5022   # RTU framing over TCP"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=5020, help="TCP port (default 5020; 502 needs privileges)")
    s.add_argument("--profile", default="generic", help="register profile: generic, ur or a .toml path")
    s.add_argument("--rtu", metavar="PORT", help="serve Modbus RTU on a serial device or socket://host:port")
    s.add_argument("--baud", type=int, default=115200, help="RTU baud rate (default 115200)")
    s.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (default: until Ctrl-C)")
    s.set_defaults(func=run_sim_arm)

    st = rs.add_parser(
        "status",
        help="read an arm's status registers (read-only)",
        description=(
            "Read the status block and the commit register of an arm (real or simulated) and\n"
            "print them decoded. Only reads: no heartbeat, no command.\n\n"
            "examples:\n"
            "  scallop robot status --host 127.0.0.1 --port 5020\n"
            "  scallop robot status --host 192.168.0.10 --port 502 --profile ur --json\n"
            "  scallop robot status --rtu /dev/ttyUSB0 --baud 115200 --unit 2"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    st.add_argument("--host", default="127.0.0.1")
    st.add_argument("--port", type=int, default=502)
    st.add_argument("--rtu", metavar="PORT", help="read over Modbus RTU from a serial device or socket://host:port")
    st.add_argument("--baud", type=int, default=115200)
    st.add_argument("--unit", type=int, default=1, help="Modbus unit / device id (default 1)")
    st.add_argument("--profile", default="generic", help="register profile: generic, ur or a .toml path")
    st.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for an answer (default 1)")
    st.add_argument("--json", action="store_true", help="print one JSON object")
    st.set_defaults(func=run_status)


def run_sim_arm(args) -> int:
    import time

    from scallop.robot.clock import SystemClock
    from scallop.robot.config import ArmConfig
    from scallop.robot.errors import RobotConfigError
    from scallop.sim.arm import SimArm

    if not 0 < args.port < 65536:
        raise RobotConfigError(f"--port {args.port} is out of range: allowed 1..65535")
    cfg = ArmConfig(name="sim", profile=args.profile)
    kind = "rtu" if args.rtu else "tcp"
    arm = SimArm(
        cfg, SystemClock(), kind=kind, host=args.host, port=args.port, serial_port=args.rtu or "", baudrate=args.baud
    )
    try:
        arm.start()
    except RuntimeError as e:
        raise RobotConfigError(str(e)) from None
    lo, hi = arm.map.span()
    where = f"rtu {args.rtu} {args.baud} baud" if args.rtu else f"tcp {args.host}:{arm.port}"
    print(
        f"simulated arm listening on {where}, profile {arm.map.name} (registers {lo}..{hi - 1}); "
        f"{f'stops after {args.duration:g} s' if args.duration else 'Ctrl-C to stop'}",
        flush=True,
    )
    try:
        t_end = time.monotonic() + args.duration if args.duration > 0 else None
        while t_end is None or time.monotonic() < t_end:
            time.sleep(0.1 if t_end is None else max(0.0, min(0.1, t_end - time.monotonic())))
    finally:
        arm.close()
    snap = arm.snapshot()
    print(f"stopped: {sum(1 for r in arm.records)} commands taken, state {snap['state']}")
    return 0


def run_status(args) -> int:
    import json

    from scallop.robot.arm import ArmClient
    from scallop.robot.config import ArmConfig, TransportConfig

    if args.rtu:
        tc = TransportConfig(
            kind="rtu", serial_port=args.rtu, baudrate=args.baud, device_id=args.unit, timeout_s=args.timeout
        )
    else:
        tc = TransportConfig(kind="tcp", host=args.host, port=args.port, device_id=args.unit, timeout_s=args.timeout)
    client = ArmClient(ArmConfig(name="status", profile=args.profile, transport=tc))
    try:
        client.transport.connect()
        st = client.read_status(control=True)
    finally:
        client.close()
    d = {"arm": tc.describe(), "profile": client.map.name, **st.as_dict()}
    if args.json:
        print(json.dumps(d))
    else:
        for k, v in d.items():
            print(f"{k:18s} {v}")
    return 0
