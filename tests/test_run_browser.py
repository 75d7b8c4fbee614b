"""`scallop run` as a newcomer runs it (no config: the built-in simulator), checked in a real
headless chromium: the live view shows camera frames of the belt, and the counts move."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from scallop.app import i18n
from tests.helpers import BROWSER_MISSING, text, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.skipif(BROWSER_MISSING is not None, reason=BROWSER_MISSING or "")]


@pytest.fixture
def scallop_run(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scallop",
            "run",
            "--port",
            "0",
            "--no-browser",
            "--duration",
            "40",
            "--record",
            str(tmp_path / "record.sqlite"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    url = None
    t_end = time.time() + 60
    while time.time() < t_end and url is None:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        m = re.search(r"operator screen: (http://\S+)", line)
        if m:
            url = m.group(1)
    if url is None:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"scallop run did not serve the screen:\n{err}")
    yield proc, url
    if proc.poll() is None:
        proc.terminate()
    proc.communicate(timeout=30)


def test_scallop_run_shows_live_frames_and_counts(browser, scallop_run):
    proc, url = scallop_run
    browser.get(url + "/")
    running = i18n.t("ja", "state.running")  # the screen's default language: [ui] language = "ja"
    wait_for(browser, lambda: text(browser, "state") == running, timeout=20, what="state running")
    # Counts move as scallops pass under the camera (about one every 1.5 s).
    wait_for(browser, lambda: int(text(browser, "n-seen").replace(",", "") or 0) >= 2, timeout=30, what="scallops seen")
    live = browser.find_element("id", "live")
    wait_for(browser, lambda: live.get_attribute("naturalWidth") not in (None, "0"), timeout=10, what="a frame")
    shots = []
    for _ in range(2):
        png = live.screenshot_as_png
        shots.append(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR))
        time.sleep(1.5)
    a, b = shots
    assert a.shape[0] > 100 and a.shape[1] > 200
    # The simulator's default belt is white plastic: the view is mostly bright, not a blank panel.
    assert a.mean() > 120
    # The belt moves between the two screenshots: the live view really is live.
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 2.0
    browser.get("about:blank")
    proc.terminate()
    proc.communicate(timeout=30)
