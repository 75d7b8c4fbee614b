"""Plain helpers that more than one test module uses (fixtures are in conftest.py), imported
as ``tests.helpers``."""

from __future__ import annotations

import os
import shutil
import socket

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
