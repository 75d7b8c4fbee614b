"""No lock is held during network I/O: a slow arm holds up neither the other arm nor the screen.

The line runs in real time on the simulator with two arms; the upstream arm answers every
Modbus request 0.45 s late (inside its 0.5 s timeout, so it stays connected and merely slow).
Had any lock that the screen or the other arm needs been held during that arm's I/O, a
snapshot would wait at least one such request (0.45 s) and the downstream arm would stall.
"""

from __future__ import annotations

import time

from scallop.app.backends import default_sim_arms
from scallop.app.build import build_line
from scallop.app.config import load_config, to_dict
from scallop.robot.arm import PICK_TYPES
from scallop.robot.clock import SystemClock

SLOW_REPLY_S = 0.45


def test_a_slow_arm_holds_up_neither_the_other_arm_nor_the_screen(tmp_path):
    cfg = load_config(
        overrides={
            "arms": [to_dict(a) for a in default_sim_arms(2)],
            "sim": {"arrivals": {"rate_per_s": 1.0}},
        }
    )
    line = build_line(cfg, tmp_path / "record.sqlite", seed=3, clock=SystemClock())
    line.open()
    try:
        slow, fast = line.backend.sim_arm("arm1"), line.backend.sim_arm("arm2")
        slow.slow_replies(SLOW_REPLY_S)
        line.start("test")
        line.run_threaded()
        worst = 0.0
        t_end = time.monotonic() + 12.0
        while time.monotonic() < t_end:
            t0 = time.perf_counter()
            snap = line.snapshot()
            line.latest_jpeg()
            line.metrics_text()
            worst = max(worst, time.perf_counter() - t0)
            time.sleep(0.05)
        fast_picks = [r for r in fast.records if r.cmd_type in PICK_TYPES and r.t_grip is not None]
        assert worst < 0.3, f"a screen request waited {worst:.3f} s: a lock was held during the slow arm's I/O"
        assert len(fast_picks) >= 3, f"the downstream arm picked {len(fast_picks)} times in 12 s"
        assert snap.state == "running" and snap.seen >= 5
        h = line.health()
        assert h["ok"] and set(h["loops"]) == {"capture", "inference", "plc", "arm arm1", "arm arm2"}, h
        # The slow arm stays connected (slow, not gone): no disconnect alarm.
        assert {a.name: a.connected for a in snap.arms} == {"arm1": True, "arm2": True}
    finally:
        line.close()


def test_a_stage_that_crashed_runs_again_once_the_line_is_reset(tmp_path):
    """A stage that crashes faults the line (never half-working); the operator's RESET and START
    bring it back. An outside try saw the reset line show "running" with the crashed arm stage
    gone for good: nothing decided, nothing picked, no alarm."""
    cfg = load_config(overrides={"sim": {"arrivals": {"rate_per_s": 1.5}}})
    line = build_line(cfg, tmp_path / "record.sqlite", seed=3, clock=SystemClock())
    line.open()
    try:
        crashes = {"arm": 1, "inference": 0}  # the inference stage's armed once the arm's is over
        serve, process = line.arms.serve, line.process_frame

        def serve_once_broken(lane, active=True):
            if crashes["arm"] and line.state.value == "running":
                crashes["arm"] -= 1
                raise RuntimeError("the arm stage broke")
            return serve(lane, active)

        def process_once_broken(frame):
            if crashes["inference"]:
                crashes["inference"] -= 1
                raise RuntimeError("the inference stage broke")
            return process(frame)

        def until(cond, what):
            t_end = time.monotonic() + 15.0
            while not cond() and time.monotonic() < t_end:
                time.sleep(0.05)
            assert cond(), what

        line.arms.serve = serve_once_broken
        line.process_frame = process_once_broken
        line.start("test")
        line.run_threaded()
        until(lambda: line.state.value == "fault", "the arm stage's crash faults the line")
        assert "arm arm1 stage crashed" in line.alarms.get("line.crash").text
        time.sleep(1.2)  # as an operator: the arm's watchdog has stopped it, the line's RESET resets it too
        line.reset("test")
        line.start("test")
        arm = line.arms.clients[0]
        # Its thread serves it again: beats, reads it, and the arm takes picks (ready, not faulted).
        until(lambda: line.health()["loops"]["arm arm1"] < 0.3, "the arm stage goes round again after the reset")
        until(lambda: arm.can_accept(), "the arm is reset and takes picks again")
        crashes["inference"] = 1
        until(lambda: line.state.value == "fault", "the inference stage's crash faults the line")
        assert "inference stage crashed" in line.alarms.get("line.crash").text
        frames = line.frames
        line.reset("test")
        line.start("test")
        until(lambda: line.frames > frames + 2, "analyses frames again after the inference stage was reset")
        assert line.state.value == "running" and line.health()["ok"]
    finally:
        line.close()
