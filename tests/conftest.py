"""Shared fixtures.

* ``no_leaked_threads`` (autouse): a test that leaves threads or asyncio tasks running fails.
  Threads get a short grace period to finish; mark a test ``@pytest.mark.allow_leaks`` only
  with a comment saying why.
* ``fake_line``: a :class:`scallop.app.line_api.LineAPI` double for the operator screen's tests.
* ``fast_users``: the simulator's users (operator 1111, engineer 2222) with a cheap scrypt
  cost so tests do not spend their time hashing.
* ``browser`` (module scope): a headless chromium driven by Selenium, for the modules marked
  ``browser`` (they skip themselves with ``tests.helpers.BROWSER_MISSING``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from tests.helpers import CHROMEDRIVER, CHROMIUM

LEAK_GRACE_S = 2.0


def pytest_configure(config):
    config.addinivalue_line("markers", "allow_leaks: the test may leave threads/tasks running (say why)")


def _pending_tasks() -> set:
    """asyncio tasks not done whose loop is still open (any thread)."""
    reg = getattr(asyncio.tasks, "_scheduled_tasks", None)
    if reg is None:
        reg = getattr(asyncio.tasks, "_all_tasks", None)
    if reg is None:
        return set()
    out = set()
    for t in list(reg):
        try:
            if not t.done() and not t.get_loop().is_closed():
                out.add(t)
        except Exception:
            continue
    return out


@pytest.fixture(autouse=True)
def no_leaked_threads(request):
    if request.node.get_closest_marker("allow_leaks"):
        yield
        return
    threads_before = set(threading.enumerate())
    tasks_before = _pending_tasks()
    yield
    deadline = time.monotonic() + LEAK_GRACE_S
    while True:
        threads = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
        tasks = _pending_tasks() - tasks_before
        if (not threads and not tasks) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    problems = []
    if threads:
        problems.append("threads still running: " + ", ".join(sorted(t.name for t in threads)))
    if tasks:
        problems.append("asyncio tasks still pending: " + ", ".join(sorted(repr(t.get_coro()) for t in tasks)))
    if problems:
        pytest.fail(
            f"{request.node.nodeid} leaked " + "; ".join(problems) + " (stop them in the test or its fixtures)",
            pytrace=False,
        )


# ---------------------------------------------------------------------------- fake line


class FakeLine:
    """A :class:`LineAPI` double: a small state machine whose counts the test sets directly.

    Frames are 320×240 JPEGs: a magenta field with a green bar whose position moves with the
    frame number, so a screenshot can tell "showing frames" and "showing new frames" apart.
    Every control call is appended to ``calls`` as ``(action, user)``.

    No fluorescence channel unless a test sets ``channel`` (:meth:`with_channel`): then
    ``channel_status()`` is that dict and, once ``channel["pairs"]`` > 0, ``latest_uv_jpeg()`` is
    a dark grey field (``UV_BELT``) with ``UV_BLOBS`` glowing discs, as a healthy channel sees uros.
    """

    UV_BELT = 6  # the spec's belt under UV: 0–10
    UV_BLOBS = ((80, 60, 18, 200), (200, 150, 24, 150), (270, 70, 12, 230))  # x, y, radius, level

    W, H = 320, 240
    BG_BGR = (255, 0, 255)  # magenta
    BAR_BGR = (0, 255, 0)  # green
    BAR_W = 40

    def __init__(self) -> None:
        from scallop.app.line_api import ArmStatus, Recipe

        self.lock = threading.Lock()
        self.state = "stopped"
        self.recipe = "M"
        self.recipes_list = [
            Recipe("S", (40.0, 50.0), 200.0, "small baby scallops"),
            Recipe("M", (50.0, 62.0), 250.0, "standard"),
            Recipe("L", (62.0, 75.0), 300.0, "large"),
        ]
        self.counts = dict(
            seen=0,
            picked=0,
            uro_removed=0,
            missed=0,
            adductor_hits=0,
            skipped=0,
            per_minute=0.0,
            removal_rate=0.0,
            frames=0,
            frames_dropped=0,
        )
        self.skipped_by_reason: dict[str, int] = {}
        self.arms = [ArmStatus("left", "idle", True), ArmStatus("right", "idle", True)]
        self.alarms: list = []
        self.calls: list[tuple[str, str]] = []
        self.config = {"belt": {"speed_mm_s": 250.0}, "camera": {"exposure_us": 800}}
        self.jpeg_quality = 90
        self._next_alarm = 1
        self.channel: dict | None = None

    # -- test controls

    def set_counts(self, **kw) -> None:
        with self.lock:
            for k, v in kw.items():
                if k not in self.counts:
                    raise KeyError(k)
                self.counts[k] = v

    def new_frame(self) -> int:
        with self.lock:
            self.counts["frames"] += 1
            return self.counts["frames"]

    def raise_alarm(self, severity: str, text: str, source: str = "line", code: str = "", **params):
        from scallop.app.line_api import Alarm

        with self.lock:
            a = Alarm(self._next_alarm, time.time(), severity, source, text, code=code, params=params)
            self._next_alarm += 1
            self.alarms.append(a)
            return a

    def with_channel(self, **kw) -> dict:
        """Give the line a healthy alternate-frames channel with ``pairs`` pairs; ``kw`` overrides figures."""
        status = {
            "setup": "alternate",
            "pairs": 120,
            "dropped": {"missing": 2},
            "dropped_in_a_row": 0,
            "lost": False,
            "last_dt_ms": 20.0,
            "last_shift_mm": 6.0,
            "belt_dark_max": 10.0,
            "glow_min": 100.0,
            "belt_level": float(self.UV_BELT),
            "glow_level": 196.0,
            "misregistered": False,
            "registration_offset_mm": [0.3, -0.4],
            "registration_limit_mm": 2.0,
            "registration_misses": 0.05,
            "registration_needs_uros": 15,
        }
        status.update(kw)
        if not status["pairs"]:  # as on the line: the levels are measured on the newest pair
            status.pop("belt_level", None)
            status.pop("glow_level", None)
        with self.lock:
            self.channel = status
        return status

    @classmethod
    def draw_uv(cls) -> np.ndarray:
        import cv2

        img = np.full((cls.H, cls.W), cls.UV_BELT, np.uint8)
        for x, y, r, level in cls.UV_BLOBS:
            cv2.circle(img, (x, y), r, level, -1)
        return img

    @classmethod
    def draw(cls, n: int) -> np.ndarray:
        img = np.zeros((cls.H, cls.W, 3), np.uint8)
        img[:] = cls.BG_BGR
        x = cls.bar_x(n)
        img[:, x : x + cls.BAR_W] = cls.BAR_BGR
        return img

    @classmethod
    def bar_x(cls, n: int) -> int:
        return (n * 70) % (cls.W - cls.BAR_W)

    # -- LineAPI

    def snapshot(self):
        from scallop.app.line_api import LineSnapshot

        with self.lock:
            c = self.counts
            return LineSnapshot(
                state=self.state,
                recipe=self.recipe,
                uptime_s=12.0,
                seen=c["seen"],
                picked=c["picked"],
                uro_removed=c["uro_removed"],
                missed=c["missed"],
                adductor_hits=c["adductor_hits"],
                skipped=c["skipped"],
                skipped_by_reason=dict(self.skipped_by_reason),
                per_minute=c["per_minute"],
                removal_rate=c["removal_rate"],
                frames=c["frames"],
                frames_dropped=c["frames_dropped"],
                latency_ms={"inference": {"p50": 11.5, "p99": 19.0}, "modbus": {"p50": 1.2, "p99": 3.4}},
                arms=[replace(a) for a in self.arms],
                alarms=[replace(a) for a in self.alarms],
                lot=getattr(self, "lot", ""),
                shift_check=dict(getattr(self, "shift_check", {})),
                belt_scale=getattr(self, "belt_scale", None),
                all_to_rework=dict(getattr(self, "all_to_rework", {})),
            )

    def latest_jpeg(self):
        import cv2

        with self.lock:
            n = self.counts["frames"]
        if n == 0:
            return None
        ok, buf = cv2.imencode(".jpg", self.draw(n), [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        assert ok
        return buf.tobytes()

    def latest_uv_jpeg(self):
        import cv2

        with self.lock:
            pairs = self.channel["pairs"] if self.channel is not None else 0
        if not pairs:
            return None
        ok, buf = cv2.imencode(".jpg", self.draw_uv(), [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        assert ok
        return buf.tobytes()

    def channel_status(self):
        with self.lock:
            return None if self.channel is None else dict(self.channel, dropped=dict(self.channel["dropped"]))

    def _move(self, action: str, user: str, allowed_from: tuple[str, ...], to: str) -> None:
        with self.lock:
            if self.state not in allowed_from:
                raise RuntimeError(f"cannot {action} while the line is {self.state}")
            self.state = to
            self.calls.append((action, user))

    def start(self, user: str, how: str = "screen") -> None:
        self._move("start", user, ("stopped", "paused"), "running")

    def pause(self, user: str) -> None:
        self._move("pause", user, ("running",), "paused")

    def stop(self, user: str) -> None:
        self._move("stop", user, ("running", "paused", "starting"), "stopped")

    def estop(self, user: str) -> None:
        self._move("estop", user, ("stopped", "starting", "running", "paused", "stopping", "estop", "fault"), "estop")

    def reset(self, user: str) -> None:
        self._move("reset", user, ("estop", "fault"), "stopped")

    def ack_alarm(self, alarm_id: int, user: str) -> None:
        with self.lock:
            for a in self.alarms:
                if a.id == alarm_id:
                    a.acked, a.acked_by = True, user
                    self.calls.append(("ack", user))
                    return
        raise KeyError(f"no alarm {alarm_id}")

    def recipes(self):
        return list(self.recipes_list)

    def select_recipe(self, name: str, user: str) -> None:
        with self.lock:
            if name not in {r.name for r in self.recipes_list}:
                raise KeyError(f"unknown recipe {name!r}")
            if self.state == "running":
                raise RuntimeError("pause or stop the line before changing the recipe")
            self.recipe = name
            self.calls.append(("recipe", user))

    def health(self) -> dict:
        return {"ok": self.state != "fault", "state": self.state, "loops": {}, "dead": [], "stale": []}

    def metrics_text(self) -> str:
        from scallop.app.metrics import snapshot_metrics

        return snapshot_metrics(self.snapshot())

    def config_view(self) -> dict:
        with self.lock:
            return {k: dict(v) for k, v in self.config.items()}

    def set_lot(self, lot: str, user: str) -> str:
        with self.lock:
            self.calls.append(("lot", user))
            self.lot = lot.strip()
            return self.lot

    def override_check(self, user: str, reason: str) -> dict:
        with self.lock:
            self.calls.append(("override_check", user))
            return {"required": True, "state": "overridden", "user": user}

    def set_capture(self, on: bool, user: str) -> dict:
        with self.lock:
            self.calls.append(("capture_on" if on else "capture_off", user))
            self.capturing = on
            return {"active": on, "kept": 0, "bytes": 0, "dropped": {}}

    def update_config(self, changes: dict, user: str) -> dict:
        with self.lock:
            for key, value in changes.items():
                section, _, name = key.partition(".")
                if section not in self.config or name not in self.config[section]:
                    raise ValueError(f"{key}: unknown key; allowed: belt.speed_mm_s, camera.exposure_us")
                if key == "belt.speed_mm_s":
                    if isinstance(value, bool) or not isinstance(value, (int, float)):
                        raise ValueError(f"belt.speed_mm_s={value!r}: expected a number")
                    if not 0 <= value <= 500:
                        raise ValueError(f"belt.speed_mm_s={value} is out of range: allowed 0..500")
            for key, value in changes.items():
                section, _, name = key.partition(".")
                self.config[section][name] = value
            self.calls.append(("config", user))
        return self.config_view()


@pytest.fixture
def fake_line() -> FakeLine:
    return FakeLine()


@pytest.fixture(scope="session")
def fast_users():
    from scallop.app.auth import UserStore

    return UserStore.simulator_defaults(scrypt_n=2**8)


# ---------------------------------------------------------------------------- headless chromium

BROWSER_W, BROWSER_H = 1280, 800


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory):
    """Where tests leave files for people to look at (screenshots): $SCALLOP_TEST_ARTIFACTS, else
    a folder of pytest's temporary directory. Never the repository."""
    import os
    from pathlib import Path

    env = os.environ.get("SCALLOP_TEST_ARTIFACTS")
    path = Path(env) if env else tmp_path_factory.getbasetemp() / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--force-device-scale-factor=1",
        "--hide-scrollbars",
        f"--window-size={BROWSER_W},{BROWSER_H}",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        opts.add_argument(flag)
    # An explicit driver path keeps Selenium Manager from trying to download anything.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(10)
    # --window-size includes the (invisible) browser frame; pin the page's viewport itself.
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": BROWSER_W, "height": BROWSER_H, "deviceScaleFactor": 1, "mobile": False},
    )
    yield driver
    driver.quit()
