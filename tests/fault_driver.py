"""A line run for the hard-fault tests (tests/test_hard_faults.py), in a process of its own: the
disk tests run it inside a private mount namespace on a size-limited tmpfs, and the kill test
kills it with SIGKILL. Not a test module.

    python tests/fault_driver.py disk --record DIR/record.sqlite --duration 60 \\
        --at 20 --until 40       # fill DIR's disk at 20 s, free it at 40 s
    python tests/fault_driver.py live --record DB --arm-port PORT --state-file F   # until killed

``disk`` runs the built-in simulator on its virtual clock (same seed, same run) and prints one
JSON object: the target ids the simulated arm executed (its own record: the ground truth), what
the record holds, the writer's counts and problems, and the alarms seen. ``live`` runs in real
time against a simulated arm in another process (the test's), prints ``ready`` and runs until
it is killed.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from dataclasses import replace
from pathlib import Path


def fill(folder: Path) -> None:
    """Eat the free space of ``folder``'s disk (the record's own growth may have done it already)."""
    try:
        f = open(folder / "filler", "wb", buffering=0)  # noqa: SIM115 - unbuffered: closing it cannot fail
    except OSError:
        return
    with f:
        block = b"\0" * (1 << 16)
        try:
            while True:
                f.write(block)
                f.flush()
        except OSError:
            pass


def record_contents(db: Path) -> dict:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        picks = con.execute("SELECT run_id, track_id, arm, state, result FROM picks ORDER BY id").fetchall()
        scallops = con.execute("SELECT track_id, result, skip_reason FROM scallops").fetchall()
        runs = con.execute("SELECT id, ended, crashed FROM runs").fetchall()
    finally:
        con.close()
    return {"picks": picks, "scallops": scallops, "runs": runs}


def run_disk(args) -> dict:
    from scallop.app.build import build_line
    from scallop.app.config import load_config

    db = Path(args.record)
    folder = db.parent
    line = build_line(load_config(None), db, seed=args.seed)
    seen_alarms: set[str] = set()
    phase = {"fault": False, "cleared": False}

    def on_tick(ln) -> None:
        now = ln.clock.now() - t0
        if not phase["fault"] and now >= args.at:
            phase["fault"] = True
            fill(folder)
        elif phase["fault"] and not phase["cleared"] and args.until is not None and now >= args.until:
            phase["cleared"] = True
            (folder / "filler").unlink(missing_ok=True)
        for a in ln.alarms.visible():
            if a.active:
                seen_alarms.add(a.source + ":" + a.text.split(":")[0])

    line.open()
    t0 = line.clock.now()
    line.start("test")
    line.run_stepped(args.duration, on_tick=on_tick)
    line.stop("test")
    summary = line.summary()
    stats = line.record.stats()
    line.close()
    from scallop.robot.protocol import PICK_TYPES

    seen = [r.target_id for arm in line.backend.sim_arms for r in arm.records if r.cmd_type in PICK_TYPES]
    out = {
        "arm_targets": seen,
        "summary": summary,
        "stats": stats,
        "problems": line.record.problems(),
        "spill": str(line.record.spill_path) if line.record.spill_path else None,
        # Scallop rows only: alarms and events raised by the full disk are spilled beside them.
        "spill_rows": sum(
            json.loads(row)["table"] == "scallops" for row in line.record.spill_path.read_text().splitlines()
        )
        if line.record.spill_path
        else 0,
        "alarms": sorted(seen_alarms),
        "run_id": line.record.run_id,
    }
    out.update(record_contents(db))
    return out


def run_live(args) -> None:
    from scallop.app.backends import default_sim_arms
    from scallop.app.build import build_line
    from scallop.app.config import load_config
    from scallop.robot.clock import SystemClock
    from scallop.robot.config import TransportConfig

    arm = replace(
        default_sim_arms(1)[0],
        state_file=args.state_file,
        transport=TransportConfig(kind="tcp", host="127.0.0.1", port=args.arm_port, timeout_s=0.5),
    )
    cfg = replace(load_config(None), arms=[arm])
    line = build_line(cfg, args.record, seed=args.seed, clock=SystemClock())
    line.open()
    line.arms.reset_faults("test")  # the watchdog faulted the arm when the previous run was killed
    line.start("test")
    line.run_threaded()
    print("ready", flush=True)
    while True:
        time.sleep(1.0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=("disk", "live"))
    p.add_argument("--record", required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--at", type=float, default=20.0)
    p.add_argument("--until", type=float, default=None)
    p.add_argument("--arm-port", type=int, default=0)
    p.add_argument("--state-file", default="")
    args = p.parse_args()
    if args.mode == "disk":
        print(json.dumps(run_disk(args)))
    else:
        run_live(args)


if __name__ == "__main__":
    sys.exit(main())
