"""The operator screen on the panels lines have, in both languages, in a real headless chromium.

At 1024×600, 1280×800, 1366×768 and 1920×1080, in Japanese and in English, with a busy line
(arms, skips, a critical alarm and more): the page does not scroll; the live view, the counts,
every arm tile, the alarms with their ACK, START/STOP/RESET and E-STOP are on screen and not
covered; every button is at least 48 px each way and its words fit; every word on the page is
in the language's message catalogue. A screenshot of each is left in the artefacts folder
($SCALLOP_TEST_ARTIFACTS, else pytest's temporary folder), and of the PIN pad too.
"""

from __future__ import annotations

import re

import pytest

from scallop.app import i18n
from scallop.app.web import create_app
from scallop.app.web_server import serve
from tests.helpers import BROWSER_MISSING, set_viewport, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.skipif(BROWSER_MISSING is not None, reason=BROWSER_MISSING or "")]

SIZES = [(1024, 600), (1280, 800), (1366, 768), (1920, 1080)]

# What must be reachable on the main screen, without scrolling, not covered by anything.
MUST_SEE = [
    "#view",
    "#n-per-minute",
    "#n-removal",
    "#n-seen",
    "#n-picked",
    "#n-missed",
    "#n-adductor",
    '[data-arm="left"]',
    '[data-arm="right"]',
    "#alarm-list .alarm .btn-ack",
    "#critical-ack",
    "#btn-start",
    "#btn-pause",
    "#btn-stop",
    "#btn-reset",
    "#estop",
    "#login-btn",
    "#lang-btn",
]

_REACHABLE = """
const out = [];
for (const sel of arguments[0]) {
  const el = document.querySelector(sel);
  if (!el) { out.push([sel, 'missing']); continue; }
  const r = el.getBoundingClientRect();
  if (r.width < 1 || r.height < 1) { out.push([sel, 'not shown']); continue; }
  if (r.left < 0 || r.top < 0 || r.right > innerWidth + 0.5 || r.bottom > innerHeight + 0.5) {
    out.push([sel, 'off screen ' + JSON.stringify([r.left, r.top, r.right, r.bottom])]); continue;
  }
  const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
  if (!hit || !(hit === el || el.contains(hit))) out.push([sel, 'covered by ' + (hit && (hit.id || hit.className))]);
}
return out;
"""

_BUTTONS = """
return [...document.querySelectorAll('button')].filter(b => b.offsetParent && !b.closest('[hidden]')).map(b => {
  const r = b.getBoundingClientRect();
  return [b.id || b.dataset.key || b.textContent, r.width, r.height, b.scrollWidth - b.clientWidth];
});
"""

# Every text node of the page (shown or not) that is not data (names, numbers: [data-raw]), and
# the alt texts.
_TEXTS = """
const out = [];
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
while (walker.nextNode()) {
  const n = walker.currentNode, s = n.textContent.trim(), el = n.parentElement;
  if (!s || el.closest('[data-raw], script, style')) continue;
  out.push(s);
}
for (const el of document.querySelectorAll('[alt]')) out.push(el.alt);
out.push(document.title);
return out;
"""


def _template_regexes(language: str) -> list[re.Pattern]:
    out = []
    for text in i18n.catalogue(language).values():
        pattern = re.sub(r"\\\{\w+\\\}", "(.+?)", re.escape(text))
        out.append(re.compile(pattern, re.S))
    return out


def not_in_catalogue(texts: list[str], language: str) -> list[str]:
    """The texts that are neither a catalogue entry of ``language`` (placeholders filled in) nor
    free of letters (numbers, units, punctuation)."""
    regexes = _template_regexes(language)
    bad = []
    for s in texts:
        if not re.search(r"[^\W\d_]", s):
            continue
        if not any(r.fullmatch(s) for r in regexes):
            bad.append(s)
    return bad


def busy(line) -> None:
    """A line at work with things to show: counts, reasons, a stalled arm, several alarms."""
    line.state = "running"
    line.set_counts(
        seen=12847,
        picked=11920,
        uro_removed=11866,
        missed=54,
        adductor_hits=3,
        skipped=927,
        per_minute=58.4,
        removal_rate=None,  # hardware without a pick check: unknown, never 0 %
        frames=1,
    )
    line.skipped_by_reason = {"no_uro": 611, "cut_by_border": 170, "no_capacity": 96, "ambiguous": 50}
    line.arms[0].state, line.arms[0].picks, line.arms[0].uro_removed = "picking", 6011, 5990
    line.arms[0].utilisation = 0.71
    line.arms[1].state, line.arms[1].picks = "stalled", 5909
    line.raise_alarm("warning", "corrupt frame skipped", "camera", "camera.corrupt", detail="JPEG marker")
    line.raise_alarm("info", "x", "record", "record.snapshot_disk", detail="disk 95 % full")
    a = line.raise_alarm("warning", "arm left: reset failed", "arm:left", "arm.reset_failed", arm="left", detail="x")
    line.ack_alarm(a.id, "maria")
    line.raise_alarm("critical", "arm right: heartbeat stalled", "arm:right", "arm.stalled", arm="right", detail="")
    # The gate held open after a camera outage: its banner, the longest words on the screen.
    line.all_to_rework = {"why": "waiting_camera", "for_s": 754.0}


@pytest.fixture
def busy_screen(browser, fake_line, fast_users):
    servers = []

    def open_(language: str, size: tuple[int, int]):
        busy(fake_line)
        srv = serve(create_app(fake_line, fast_users, event_interval_s=0.05, language=language), "127.0.0.1", 0)
        servers.append(srv)
        set_viewport(browser, *size)
        browser.delete_all_cookies()
        browser.get(srv.url + "/")
        state = i18n.t(language, "state.running")
        wait_for(browser, lambda: browser.find_element("id", "state").text == state, what=f"state {state}")
        wait_for(browser, lambda: browser.find_element("id", "live").get_attribute("data-frame") == "1", what="frame")
        wait_for(browser, lambda: browser.find_element("id", "critical-banner").is_displayed(), what="banner")
        return srv

    try:
        yield open_
    finally:
        browser.get("about:blank")
        for srv in servers:
            srv.stop()


@pytest.mark.parametrize("language", ["ja", "en"])
@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_everything_an_operator_needs_is_on_the_panel(busy_screen, browser, artifacts_dir, size, language):
    busy_screen(language, size)
    w, h = size
    browser.save_screenshot(str(artifacts_dir / f"screen-{language}-{w}x{h}.png"))
    scroll = browser.execute_script(
        "const e = document.scrollingElement; return [e.scrollWidth, e.scrollHeight, innerWidth, innerHeight];"
    )
    assert scroll[0] <= scroll[2] and scroll[1] <= scroll[3], f"the page scrolls: {scroll}"
    problems = browser.execute_script(_REACHABLE, MUST_SEE)
    assert not problems, problems
    buttons = browser.execute_script(_BUTTONS)
    small = [b for b in buttons if min(b[1], b[2]) < 48]
    assert not small, f"touch targets under 48 px: {small}"
    cut = [b for b in buttons if b[3] > 1]
    assert not cut, f"buttons whose words do not fit: {cut}"
    # The words are the language's, and every one is in its catalogue.
    assert browser.execute_script("return window.__i18nMissing") == []
    texts = browser.execute_script(_TEXTS)
    assert not not_in_catalogue(texts, language), not_in_catalogue(texts, language)
    assert browser.find_element("id", "n-removal").text == i18n.t(language, "value.unknown")
    assert browser.find_element("id", "n-seen").text == "12,847"
    banner = browser.find_element("id", "critical-text").text
    assert banner == i18n.t(language, "alarm.banner", text=i18n.t(language, "alarm.arm.stalled", arm="right"))
    rework = browser.find_element("id", "all-rework-text").text
    why = i18n.t(language, "rework_why.waiting_camera")
    since = i18n.t(language, "rework_since.minutes", n="12")
    assert rework == i18n.t(language, "screen.all_to_rework", why=why, since=since), rework

    # The PIN pad fits too, with the E-STOP still on top.
    browser.find_element("id", "btn-stop").click()
    wait_for(browser, lambda: browser.find_element("id", "pinpad").is_displayed(), what="PIN pad")
    keys = ["#pin-keys [data-key='1']", "#pin-keys [data-key='0']", "#pin-keys [data-key='back']", "#pin-ok"]
    problems = browser.execute_script(_REACHABLE, keys + ["#pin-cancel", "#estop"])
    assert not problems, problems
    browser.save_screenshot(str(artifacts_dir / f"pinpad-{language}-{w}x{h}.png"))


def test_the_language_toggle_switches_every_word_and_is_remembered(busy_screen, browser):
    busy_screen("ja", (1280, 800))
    assert browser.find_element("id", "btn-start").text == "運転"
    browser.find_element("id", "lang-btn").click()
    wait_for(browser, lambda: browser.find_element("id", "btn-start").text == "START", what="English")
    assert browser.find_element("id", "state").text == "RUNNING"
    assert browser.find_element("id", "html" if False else "lang-btn").text == "日本語"
    assert browser.execute_script("return document.documentElement.lang") == "en"
    assert not not_in_catalogue(browser.execute_script(_TEXTS), "en")
    browser.refresh()  # this panel keeps its choice
    wait_for(browser, lambda: browser.find_element("id", "btn-start").text == "START", what="English after reload")
    browser.find_element("id", "lang-btn").click()
    wait_for(browser, lambda: browser.find_element("id", "btn-start").text == "運転", what="Japanese again")
    browser.execute_script("localStorage.clear()")


def test_the_catalogue_check_finds_a_word_that_is_not_in_it():
    assert not_in_catalogue(["運転", "アーム left", "12,847", "99.1%", "–"], "ja") == []
    assert not_in_catalogue(["START", "arm in fault"], "ja") == ["START", "arm in fault"]
    assert not_in_catalogue(["START", "ARM left", "uro removed"], "en") == []
