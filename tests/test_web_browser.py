"""The operator screen in a real headless chromium (Debian's chromium + chromium-driver, via Selenium).

Skipped, with the reason, where chromium, its driver or selenium is missing. The browser
(conftest.py) is started once per module; each test gets its own fake line and server. The
screen's behaviour is tested in English here; its layout at the panel sizes, in both languages,
with screenshots, in test_web_layout.py.
"""

from __future__ import annotations

import time

import cv2
import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from scallop.app.web import create_app
from scallop.app.web_server import serve
from tests.conftest import BROWSER_H, BROWSER_W
from tests.helpers import BROWSER_MISSING, set_viewport, text, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.skipif(BROWSER_MISSING is not None, reason=BROWSER_MISSING or "")]


@pytest.fixture
def screen(browser, fake_line, fast_users):
    app = create_app(fake_line, fast_users, event_interval_s=0.05, language="en")
    server = serve(app, "127.0.0.1", 0)
    try:
        browser.delete_all_cookies()
        set_viewport(browser, BROWSER_W, BROWSER_H)
        browser.get(server.url + "/")
        wait_for(browser, lambda: browser.find_element("id", "state").text.lower() == "stopped")
        yield browser, fake_line, server
    finally:
        browser.get("about:blank")  # closes the page's event stream before the server goes
        server.stop()


def visible(browser, id_: str) -> bool:
    return browser.find_element("id", id_).is_displayed()


def estop_on_top(browser) -> bool:
    """Whether a press at the e-stop's centre reaches the e-stop (nothing covers it)."""
    return browser.execute_script(
        "const b = document.getElementById('estop'); const r = b.getBoundingClientRect();"
        "return r.height >= 48 && document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2) === b;"
    )


def enter_pin(browser, pin: str) -> None:
    wait_for(browser, lambda: visible(browser, "pinpad"), what="PIN pad")
    for d in pin:
        browser.find_element("css selector", f'#pin-keys [data-key="{d}"]').click()
    browser.find_element("id", "pin-ok").click()


def test_page_shows_counts_that_update_live(screen):
    browser, line, _ = screen
    browser.execute_script("window.__same_page = 'yes'")
    assert text(browser, "n-seen") == "0"
    line.set_counts(seen=42, picked=40, missed=1, adductor_hits=2, skipped=2, per_minute=37.5, removal_rate=0.991)
    line.skipped_by_reason = {"no_uro": 2}
    line.arms[1].state, line.arms[1].connected = "disconnected", False
    wait_for(browser, lambda: text(browser, "n-seen") == "42", what="seen=42")
    assert text(browser, "n-per-minute") == "37.5"
    assert text(browser, "n-removal") == "99.1 %"
    assert (text(browser, "n-picked"), text(browser, "n-missed"), text(browser, "n-adductor")) == ("40", "1", "2")
    assert browser.find_element("css selector", '#skip-list [data-reason="no_uro"]').text.split() == [
        "no",
        "uro",
        "seen",
        "2",
    ]
    arm = browser.find_element("css selector", '[data-arm="right"] .arm-state')
    assert arm.text.lower() == "not connected"
    line.set_counts(seen=43)
    wait_for(browser, lambda: text(browser, "n-seen") == "43", what="seen=43")
    assert browser.execute_script("return window.__same_page") == "yes"  # no reload happened
    # Glove-sized controls: every button on the main screen is at least 48 px each way.
    sizes = browser.execute_script(
        "return [...document.querySelectorAll('button')].filter(b => b.offsetParent).map(b => {"
        " const r = b.getBoundingClientRect(); return [b.id || b.textContent, Math.min(r.width, r.height)]; })"
    )
    assert sizes and all(h >= 48 for _, h in sizes), sizes
    assert visible(browser, "estop")


def test_login_with_pin_then_start_and_stop(screen):
    browser, line, _ = screen
    assert estop_on_top(browser)
    browser.find_element("id", "btn-start").click()
    wait_for(browser, lambda: visible(browser, "pinpad"), what="PIN pad")
    assert estop_on_top(browser)  # the PIN pad does not cover the e-stop
    enter_pin(browser, "9999")
    wait_for(
        browser, lambda: visible(browser, "toast") and "Wrong PIN" in text(browser, "toast"), what="wrong-PIN message"
    )
    assert line.calls == []
    enter_pin(browser, "1111")  # the pad is still open; the start is retried after login
    wait_for(browser, lambda: line.calls == [("start", "operator")], what="start reached the line")
    wait_for(browser, lambda: text(browser, "state").lower() == "running", what="state running")
    assert not visible(browser, "pinpad")
    assert "operator" in text(browser, "user-name")
    browser.find_element("id", "btn-stop").click()  # logged in now: no PIN asked
    wait_for(browser, lambda: line.calls[-1] == ("stop", "operator"), what="stop reached the line")
    wait_for(browser, lambda: text(browser, "state").lower() == "stopped", what="state stopped")


def test_estop_needs_no_login(screen):
    browser, line, _ = screen
    line.state = "running"
    browser.find_element("id", "estop").click()
    wait_for(browser, lambda: line.calls == [("estop", "screen")], what="estop reached the line")
    wait_for(browser, lambda: text(browser, "state") == "E-STOP")
    assert not visible(browser, "pinpad")


def test_critical_alarm_is_obvious_and_can_be_acknowledged(screen):
    browser, line, _ = screen
    a = line.raise_alarm("critical", "arm left: heartbeat stalled", "arm:left", "arm.stalled", arm="left")
    wait_for(browser, lambda: visible(browser, "critical-banner"), what="critical banner")
    assert "Arm left is not answering." in text(browser, "critical-banner")
    assert "critical" in browser.find_element("tag name", "body").get_attribute("class")
    assert browser.find_element("css selector", f'#alarm-list [data-alarm="{a.id}"]').is_displayed()
    browser.find_element("id", "critical-ack").click()
    enter_pin(browser, "1111")
    wait_for(browser, lambda: line.alarms[0].acked, what="alarm acked on the line")
    assert line.alarms[0].acked_by == "operator"
    wait_for(browser, lambda: not visible(browser, "critical-banner"), what="banner gone")
    assert "critical" not in browser.find_element("tag name", "body").get_attribute("class")


@pytest.mark.parametrize("language", ["ja", "en"])
def test_an_alarms_technical_detail_is_a_line_of_its_own_on_a_japanese_screen(browser, fake_line, fast_users, language):
    """The operator's sentence is all in the screen's language; the raiser's English words (for
    the engineer) go under it where the sentence leaves them out (the Japanese ones do)."""
    app = create_app(fake_line, fast_users, event_interval_s=0.05, language=language)
    server = serve(app, "127.0.0.1", 0)
    try:
        browser.delete_all_cookies()
        set_viewport(browser, BROWSER_W, BROWSER_H)
        browser.get(server.url + "/")
        detail = "no frame for 3.0 s (limit 2.0 s)"
        a = fake_line.raise_alarm("warning", detail, "camera", "camera.stall", detail=detail)
        # Read in one script: the list is drawn anew at each event, so an element found by one
        # call may be gone by the next.
        read_row = (
            "const r = document.querySelector(arguments[0]); if (!r) return null;"
            "return [r.querySelector('.alarm-text > div').textContent,"
            " Array.from(r.querySelectorAll('.alarm-detail'), (e) => e.textContent)];"
        )
        row = f'#alarm-list [data-alarm="{a.id}"]'
        wait_for(browser, lambda: browser.execute_script(read_row, row) is not None, what="the alarm's row")
        sentence, lines = browser.execute_script(read_row, row)
        if language == "ja":
            assert "カメラの画像が来ません" in sentence and detail not in sentence
            assert lines == [f"詳細（技術者向け）：{detail}"]
        else:
            assert f"No picture from the camera ({detail})" in sentence and lines == []
    finally:
        browser.get("about:blank")
        server.stop()


def test_recipe_selection(screen):
    browser, line, _ = screen
    browser.find_element("id", "recipe-btn").click()
    wait_for(browser, lambda: visible(browser, "recipes"))
    assert estop_on_top(browser)
    browser.find_element("css selector", '#recipe-list [data-recipe="L"]').click()
    enter_pin(browser, "1111")
    wait_for(browser, lambda: line.recipe == "L", what="recipe L on the line")
    wait_for(browser, lambda: text(browser, "recipe-name") == "L")


def test_the_lot_is_set_on_the_screen_and_the_shift_check_is_shown(screen):
    browser, line, _ = screen
    browser.find_element("id", "lot-btn").click()
    wait_for(browser, lambda: visible(browser, "lot"))
    assert estop_on_top(browser)
    browser.find_element("id", "lot-input").send_keys("L-0412")
    browser.find_element("id", "lot-ok").click()
    enter_pin(browser, "1111")
    wait_for(browser, lambda: getattr(line, "lot", "") == "L-0412", what="lot on the line")
    wait_for(browser, lambda: text(browser, "lot-name") == "L-0412")
    # The live state may show the new lot before the answer to the request closes the panel.
    wait_for(browser, lambda: not visible(browser, "lot"), what="lot panel closed")
    assert not visible(browser, "shift-check")
    line.shift_check = {"required": True, "state": "running", "seen": 1, "of": 3, "with_uro": 2, "without_uro": 1}
    wait_for(browser, lambda: "1 of 3 through" in text(browser, "shift-check"), what="shift check running")


def test_lost_connection_is_shown(screen):
    browser, line, server = screen
    assert not visible(browser, "conn-lost")
    server.stop()
    # Stale numbers must not pass for live ones: the page says so within a few seconds.
    wait_for(browser, lambda: visible(browser, "conn-lost"), timeout=6, what="no-connection banner")


def test_engineer_page_refuses_bad_input_with_the_servers_words(screen):
    browser, line, _ = screen
    browser.find_element("id", "btn-engineer").click()
    enter_pin(browser, "1111")  # an operator may not
    wait_for(browser, lambda: "needs an engineer login" in text(browser, "toast"), what="403 message")
    enter_pin(browser, "2222")  # the pad asked again, now for an engineer
    wait_for(browser, lambda: visible(browser, "engineer"), what="engineer panel")
    assert '"speed_mm_s": 250' in text(browser, "config-view")
    box = browser.find_element("id", "config-changes")
    for changes, shown in (
        ('{"belt.speed_mm_s": 900', "Changes are not valid JSON"),
        ('{"belt.speed_mm_s": 900}', "belt.speed_mm_s=900 is out of range: allowed 0..500"),
    ):
        box.clear()
        box.send_keys(changes)
        browser.find_element("id", "config-apply").click()
        wait_for(browser, lambda shown=shown: shown in text(browser, "toast"), what=shown)
    assert line.config["belt"]["speed_mm_s"] == 250.0
    box.clear()
    box.send_keys('{"belt.speed_mm_s": 300}')
    browser.find_element("id", "config-apply").click()
    wait_for(browser, lambda: line.config["belt"]["speed_mm_s"] == 300, what="config applied")
    wait_for(browser, lambda: '"speed_mm_s": 300' in text(browser, "config-view"))
    assert not visible(browser, "uv-box")  # this line has no fluorescence channel
    # The belt check's scale: not known until scallops rode a moving belt, then the line's figure.
    scale = "belt scale, camera over encoder: "
    assert text(browser, "belt-scale") == scale + "not measured yet (it needs scallops on a moving belt)"
    line.belt_scale = 0.988
    wait_for(browser, lambda: text(browser, "belt-scale") == scale + "0.988 (-1.2 %; picking stops beyond ±5 %)")


def _requests(server, route: str) -> float:
    """How many requests the screen's server has answered on ``route`` (its own /metrics)."""
    text = httpx.get(server.url + "/metrics", timeout=5).text
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "scallop_web_requests_total" and s.labels.get("route") == route
    )


def test_engineer_panel_shows_the_fluorescence_channel_while_it_is_open(screen, artifacts_dir):
    browser, line, server = screen
    line.with_channel(belt_level=14.0, dropped={"missing": 2, "apart": 1})
    browser.find_element("id", "btn-engineer").click()
    enter_pin(browser, "2222")
    wait_for(browser, lambda: visible(browser, "uv-box"), what="fluorescence box")
    uv = browser.find_element("id", "uv-live")
    wait_for(browser, lambda: uv.get_attribute("data-pairs") == "120", what="fluorescence image")
    assert browser.execute_script(
        "const im = arguments[0]; return [im.complete, im.naturalWidth, im.naturalHeight]", uv
    ) == [
        True,
        line.W,
        line.H,
    ]
    assert uv.is_displayed() and not visible(browser, "uv-none")
    assert text(browser, "uv-pairs") == "alternate frames: 120 pairs, 3 dropped (0 in a row now)"
    assert text(browser, "uv-drops") == "dropped: no fluorescence image: 2 · exposures too far apart: 1"
    assert text(browser, "uv-timing") == "last pair: 20.0 ms apart, belt moved 6.0 mm between the exposures"
    assert text(browser, "uv-belt") == "belt level 14.0: belt too bright: stray white light or filter missing"
    assert text(browser, "uv-glow") == "glow level 196.0: uros glow"
    assert text(browser, "uv-reg") == "glow 0.5 mm from the uros: on the uros"
    assert not visible(browser, "uv-lost")
    assert browser.execute_script("return window.__i18nMissing") == []
    browser.save_screenshot(str(artifacts_dir / "engineer-fluorescence-en.png"))

    # Live: the figures and the image follow the line while the panel is open.
    line.with_channel(pairs=121, lost=True, dropped_in_a_row=5, glow_level=40.0, registration_offset_mm=None)
    wait_for(browser, lambda: visible(browser, "uv-lost"), what="channel lost")
    wait_for(browser, lambda: uv.get_attribute("data-pairs") == "121", what="the newer image")
    assert text(browser, "uv-glow") == "glow level 40.0: no glow: UV light weak or off"
    assert text(browser, "uv-belt") == "belt level 6.0: belt dark"
    assert text(browser, "uv-reg") == "glow on the uros: not measured yet (needs 15 uros)"
    red = browser.execute_script("return getComputedStyle(document.getElementById('uv-lost')).backgroundColor")
    assert red == "rgb(224, 27, 27)"  # --red
    # The glow beside the uros: the camera moved.
    line.with_channel(pairs=121, registration_offset_mm=[4.0, 1.0], misregistered=True, lost=True)
    reg = browser.find_element("id", "uv-reg")
    wait_for(browser, lambda: "off the uros" in reg.text, what="registration off")
    assert (
        reg.text == "glow 4.1 mm from the uros: off the uros: the fluorescence camera has moved or is calibrated wrong"
    )
    assert reg.get_attribute("data-verdict") == "bad"
    # Back under the limit but not yet under the way back: the line's verdict, not the figure's.
    line.with_channel(pairs=121, registration_offset_mm=[1.5, 0.0], misregistered=True, lost=True)
    wait_for(browser, lambda: reg.text.startswith("glow 1.5 mm"), what="1.5 mm")
    assert reg.get_attribute("data-verdict") == "bad" and "off the uros" in reg.text
    # No shift to measure: the glow left the uros altogether.
    line.with_channel(pairs=121, registration_offset_mm=None, misregistered=True, lost=True)
    wait_for(browser, lambda: reg.text.startswith("no glow on the uros"), what="no glow on the uros")
    # An empty view has nothing to glow: no verdict, rather than a red "UV off".
    line.with_channel(pairs=122, glow_level=7.0, scallops_in_view=0, glow_needs_scallops=2)
    glow = browser.find_element("id", "uv-glow")
    wait_for(browser, lambda: "too few to judge" in glow.text, what="no verdict on an empty view")
    assert glow.text == "glow level 7.0: 0 scallops in view: too few to judge"
    assert glow.get_attribute("data-verdict") == "unknown"

    # Closed, the panel asks nothing more of the line.
    browser.find_element("id", "engineer-close").click()
    time.sleep(0.6)  # an answer in flight at the close
    asked = _requests(server, "/api/channel")
    time.sleep(1.2)  # more than two refreshes' time
    assert _requests(server, "/api/channel") == asked


def test_the_engineer_panel_goes_when_its_login_ends(screen):
    """Logged out on another screen, or expired: the open panel closes and forgets the
    configuration and the fluorescence image (it used to stay on screen, frozen)."""
    browser, line, server = screen
    line.with_channel()
    browser.find_element("id", "btn-engineer").click()
    enter_pin(browser, "2222")
    uv = browser.find_element("id", "uv-live")
    wait_for(browser, lambda: uv.get_attribute("data-pairs") == "120", what="fluorescence image")
    assert '"belt"' in browser.find_element("id", "config-view").get_attribute("textContent")
    # The session ends on the server, not through this page (as an expiry does).
    cookies = {c["name"]: c["value"] for c in browser.get_cookies()}
    assert httpx.post(server.url + "/api/logout", cookies=cookies, timeout=5).status_code == 200
    wait_for(browser, lambda: not visible(browser, "engineer"), what="the panel closed")
    assert browser.find_element("id", "config-view").get_attribute("textContent") == ""
    assert not uv.get_attribute("src") and uv.get_attribute("data-pairs") == "-1"
    assert text(browser, "login-btn").lower() == "log in"
    # Reopening asks for the PIN again.
    browser.find_element("id", "btn-engineer").click()
    wait_for(browser, lambda: visible(browser, "pinpad"), what="PIN pad")


def _live_view(browser) -> np.ndarray:
    """The camera picture as drawn on screen (BGR): the <img> box less object-fit's letterbox."""
    x, y, w, h, nw, nh, dpr = browser.execute_script(
        "const im = document.getElementById('live'); const r = im.getBoundingClientRect();"
        "return [r.left, r.top, r.width, r.height, im.naturalWidth, im.naturalHeight, window.devicePixelRatio];"
    )
    scale = min(w / nw, h / nh)
    dw, dh = nw * scale, nh * scale
    left, top = x + (w - dw) / 2, y + (h - dh) / 2
    shot = cv2.imdecode(np.frombuffer(browser.get_screenshot_as_png(), np.uint8), cv2.IMREAD_COLOR)
    x0, y0, x1, y1 = (round(v * dpr) for v in (left, top, left + dw, top + dh))
    assert 0 <= x0 < x1 <= shot.shape[1] and 0 <= y0 < y1 <= shot.shape[0], "live view is off screen"
    return shot[y0:y1, x0:x1]


def _bar_span(view: np.ndarray) -> tuple[float, float]:
    """Where the fake frame's green bar is, as fractions of the picture's width."""
    b, g, r = (view[:, :, i].astype(int) for i in range(3))
    green = (g > 180) & (b < 90) & (r < 90)
    cols = np.flatnonzero(green.mean(axis=0) > 0.8)
    assert cols.size, "no green bar in the live view"
    return cols[0] / view.shape[1], (cols[-1] + 1) / view.shape[1]


def _magenta_share(view: np.ndarray) -> float:
    b, g, r = (view[:, :, i].astype(int) for i in range(3))
    return float(((b > 200) & (r > 200) & (g < 70)).mean())


def test_screenshot_shows_live_frames(screen):
    browser, line, _ = screen
    assert not browser.find_element("id", "live").is_displayed() or text(browser, "no-frame")
    views = []
    for _ in range(2):
        n = line.new_frame()
        wait_for(
            browser,
            lambda n=n: browser.find_element("id", "live").get_attribute("data-frame") == str(n),
            what=f"frame {n} shown",
        )
        view = _live_view(browser)
        assert view.shape[1] >= 400, f"live view only {view.shape[1]} px wide"
        # The fake frame: magenta everywhere except one 40-px green bar (1/8 of the width).
        bar = line.BAR_W / line.W
        assert _magenta_share(view) == pytest.approx(1 - bar, abs=0.05)
        lo, hi = _bar_span(view)
        expect = line.bar_x(n) / line.W
        assert lo == pytest.approx(expect, abs=0.01) and hi == pytest.approx(expect + bar, abs=0.01)
        views.append(view)
    assert views[0].shape == views[1].shape
    changed = (np.abs(views[0].astype(int) - views[1].astype(int)).max(axis=2) > 60).mean()
    # Two bars moved: each frame differs from the other where either bar is (2 × 1/8 of the picture).
    assert changed == pytest.approx(2 * line.BAR_W / line.W, abs=0.04)
