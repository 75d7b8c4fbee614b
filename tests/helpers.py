"""Plain helpers that more than one test module uses (fixtures are in conftest.py), imported
as ``tests.helpers``: free ports, the headless browser, and lines on the simulator (virtual clock)."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3

from scallop.app.build import build_line
from scallop.app.config import load_config
from scallop.robot.arm import PICK_TYPES
from scallop.sim.clock import VirtualClock

# ---------------------------------------------------------------------------- network


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------------------- headless chromium

CHROMIUM = os.environ.get("SCALLOP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = os.environ.get("SCALLOP_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"

try:
    import selenium  # noqa: F401

    BROWSER_MISSING = None
except ImportError:
    BROWSER_MISSING = "selenium is not installed (pip install -e '.[test]')"
if BROWSER_MISSING is None and not (os.path.isfile(CHROMIUM) and os.path.isfile(CHROMEDRIVER)):
    BROWSER_MISSING = (
        f"no headless chromium here ({CHROMIUM}, {CHROMEDRIVER}): apt-get install chromium chromium-driver"
    )

WAIT_S = 5.0


def wait_for(browser, cond, timeout: float = WAIT_S, what: str = ""):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(browser, timeout, poll_frequency=0.03).until(lambda _: cond())
    except Exception:
        raise AssertionError(f"timed out waiting for {what or cond}") from None


def text(browser, id_: str) -> str:
    return browser.find_element("id", id_).text


def set_viewport(browser, width: int, height: int) -> None:
    """The page's viewport in CSS pixels (device scale 1), whatever the window around it."""
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )


# ---------------------------------------------------------------------------- lines on the simulator


def make_line(tmp_path, seed=1, arms=1, overrides=None, **kw):
    """An opened simulated line recording to ``tmp_path/record.sqlite``; ``arms`` > 1 stands
    that many arms one after another downstream (the line's default is one)."""
    from scallop.app.backends import default_sim_arms
    from scallop.app.config import to_dict

    ov = {"runtime": {"tick_s": 0.02}}
    if arms > 1:
        ov["arms"] = [to_dict(a) for a in default_sim_arms(arms)]
    ov.update(overrides or {})
    cfg = load_config(overrides=ov)
    line = build_line(cfg, tmp_path / "record.sqlite", seed=seed, clock=VirtualClock(), **kw)
    try:
        line.open()
    except BaseException:
        line.close()  # as scallop run does: what opened before the failure is shut again
        raise
    return line


def executed_picks(line) -> dict[str, list]:
    """Per simulated arm (by name), the pick commands it carried out down to the grip: the
    arms' own records, the ground truth of what was picked."""
    return {
        sim.config.name: [r for r in sim.records if r.cmd_type in PICK_TYPES and r.t_grip is not None]
        for sim in line.backend.sim_arms
    }


def executed_targets(line):
    return [r.target_id for recs in executed_picks(line).values() for r in recs]


def rows(tmp_path):
    con = sqlite3.connect(tmp_path / "record.sqlite")
    try:
        return con.execute("SELECT track_id, result, skip_reason FROM scallops").fetchall()
    finally:
        con.close()


# ---------------------------------------------------------------------------- calibration files


def write_line_calibration(path, camera, counts_per_mm: float = 10.0, count_sign: int = 1, camera_name: str = "top"):
    """A line calibration file (intrinsics, belt, encoder, all GOOD) for ``camera`` (a
    CameraModel, e.g. the simulator's true one), as the calibrate steps would write it."""
    from scallop.calibration.store import LineCalibration

    when = "2026-01-01T00:00:00+00:00"
    cal = LineCalibration.new(tuple(camera.image_size), camera_name)
    cal.set_intrinsics(
        {
            "when": when,
            "camera": camera_name,
            "image_size": list(camera.image_size),
            "board": "chessboard:9x6:25",
            "K": camera.K.tolist(),
            "dist": camera.dist.tolist(),
            "rms_px": 0.12,
            "views_used": 20,
            "verdict": "good",
        }
    )
    cal.set_belt(
        {
            "when": when,
            "board": "chessboard:9x6:25",
            "placement": {"origin_mm": [0.0, 0.0], "yaw_deg": 0.0, "thickness_mm": 0.0, "travel": "right"},
            "R": camera.R.tolist(),
            "t": camera.t.tolist(),
            "residual_max_mm": 0.1,
            "verdict": "good",
        }
    )
    cal.set_encoder(
        {
            "when": when,
            "method": "track",
            "counts_per_mm": counts_per_mm,
            "count_sign": count_sign,
            "travel_dir": [1.0, 0.0],
            "residual_rms_mm": 0.05,
            "verdict": "good",
        }
    )
    return cal.save(path)


def capture_with_truth(tmp_path, seconds: float = 12.0, overrides=None) -> tuple[dict, dict]:
    """Run a simulated line for ``seconds`` with the capture on; (the capture's figures, the
    simulator's truth per frame index: (parts, instances, facts), what a labeller would draw)."""
    truths = {}

    def keep_truth(_line, frame):
        t = frame.extra["truth"]
        truths[frame.index] = (t.parts, t.instances, [f.to_dict() for f in t.scallops])

    line = make_line(tmp_path, overrides=overrides)
    try:
        line.start("test")
        line.set_capture(True, "engineer")
        line.run_stepped(seconds, on_frame=keep_truth)
        cap = line.set_capture(False, "engineer")
    finally:
        line.close()
    return cap, truths
