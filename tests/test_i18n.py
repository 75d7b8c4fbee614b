"""The message catalogues (scallop/app/web/i18n): both languages complete, and every key the
screen, the alarms and the report ask for is in them. The browser tests (test_web_layout.py)
check the words a rendered page shows; these check the sources, so a key that only a rare
state would show is found too."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scallop.app import i18n
from scallop.app.auth import ROLES
from scallop.app.line.arms import ARM_ALARM_CODE
from scallop.app.line.states import ALL_REASONS, LineState
from scallop.app.scenario import FAULT_KINDS
from scallop.app.web import OPERATOR_ACTIONS, STATIC_DIR

ROOT = Path(__file__).resolve().parents[1]


def test_both_languages_have_the_same_keys_and_placeholders():
    ja, en = i18n.catalogue("ja"), i18n.catalogue("en")
    assert sorted(set(ja) ^ set(en)) == []

    # An alarm's {detail} (the raiser's English words) may stay out of the Japanese sentence: the
    # screen then shows it on a line of its own (app.js alarmDetail).
    def same(k):
        a, b = i18n.placeholders(en[k]), i18n.placeholders(ja[k])
        return a == b or (k.startswith("alarm.") and set(a) - set(b) == {"detail"} and set(b) <= set(a))

    differ = {k: (en[k], ja[k]) for k in en if not same(k)}
    assert not differ, differ


def test_japanese_alarm_sentences_carry_no_english_detail():
    """The operator's sentence is all Japanese; the engineer's detail goes under it."""
    ja = i18n.catalogue("ja")
    inline = [k for k, v in ja.items() if k.startswith("alarm.") and k != "alarm.detail" and "{detail}" in v]
    assert not inline, inline
    assert "{detail}" in ja["alarm.detail"]
    empty = [k for lang in i18n.LANGUAGES for k, v in i18n.catalogue(lang).items() if not v.strip()]
    assert not empty


def test_japanese_uses_the_plants_words():
    ja = i18n.catalogue("ja")
    assert "ウロ" in ja["screen.removal"] and "貝柱" in ja["screen.adductor"]
    assert ja["state.estop"] == "非常停止" and ja["screen.estop"] == "非常停止"
    # Short, plain sentences: no alarm text runs on past three sentences.
    long = {k: v for k, v in ja.items() if k.startswith("alarm.") and v.count("。") > 3}
    assert not long


def test_every_key_the_page_asks_for_is_there():
    en = i18n.catalogue("en")
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    js = (STATIC_DIR / "app.js").read_text(encoding="utf-8")
    keys = set(re.findall(r'data-i18n(?:-alt)?="([^"]+)"', html))
    keys |= set(re.findall(r'\bt\("([\w.]+)"[,)]', js)) | set(re.findall(r'"#([\w]+\.[\w.]+)"', js))
    keys |= set(re.findall(r'\["([\w]+\.[\w.]+)", ', js))  # PIN pad titles: ["pin.for", {...}]
    assert len(keys) > 60
    missing = sorted(k for k in keys if k not in en)
    assert not missing, missing


@pytest.mark.parametrize(
    "prefix, values",
    [
        ("state.", [s.value for s in LineState]),
        ("action.", [*OPERATOR_ACTIONS, "ack", "recipe", "estop"]),
        ("role.", ROLES),
        ("reason.", ALL_REASONS),
        (
            "arm_state.",
            ["idle", "picking", "disconnected", "comm_error", "stalled", "fault", "estop", "starting", "homing"],
        ),
        ("severity.", ["info", "warning", "critical"]),
        ("source.", ["line", "camera", "vision", "record", "arm"]),
        ("alarm.", [*ARM_ALARM_CODE.values(), "arm.connect", "arm.reset_failed", "arm.restarted"]),
        ("error.", ["wrong_pin", "locked", "busy", "login_needed", "role_needed", "not_now"]),
        # Every fault a scenario can script, in its report (two were missing: the report crashed).
        ("report.fault.", list(FAULT_KINDS)),
    ],
)
def test_every_value_the_screen_translates_has_words(prefix, values):
    en = i18n.catalogue("en")
    missing = [v for v in values if prefix + v not in en]
    assert not missing, missing


def test_every_alarm_key_raised_in_the_line_is_a_cause_in_the_catalogue():
    """An alarm raised under a literal key (``camera.stall``) reaches the screen in the operator's
    language only if that key is a cause in the catalogue."""
    keys = set()
    for path in (ROOT / "scallop").rglob("*.py"):
        keys |= set(re.findall(r'raise_\(\s*"([\w.]+)"', path.read_text(encoding="utf-8")))
        keys |= set(re.findall(r'_raise\(\s*"([\w.]+)"', path.read_text(encoding="utf-8")))
        # Keys named once as constants (scallop/app/line/frames.py) and the encoder's by kind.
        keys |= set(re.findall(r'^[A-Z_]+ = "((?:camera|encoder)\.[\w.]+)"$', path.read_text(encoding="utf-8"), re.M))
    keys |= {f"encoder.{kind}" for kind in ("frozen", "mismatch", "impossible", "scale")}
    assert {"camera.no_frames", "encoder.stalled", "line.estop", "record.database"} <= keys
    missing = sorted(k for k in keys if not i18n.has(f"alarm.{k}"))
    assert not missing, missing


def test_t_fills_placeholders_and_looks_up_hash_parameters():
    assert i18n.t("en", "toast.action", action="#action.start", state="#state.running") == "start: the line is RUNNING"
    assert i18n.t("ja", "toast.action", action="#action.start", state="#state.running") == "運転: ラインは運転中です"
    assert i18n.t("en", "arm.name", arm="#not.a.key") == "ARM #not.a.key"
    with pytest.raises(KeyError):
        i18n.t("en", "no.such.key")
    with pytest.raises(ValueError, match="language='de' is not allowed"):
        i18n.catalogue("de")


@pytest.mark.parametrize(
    "language, value, digits, text",
    [
        ("en", 12847, 0, "12,847"),
        ("ja", 12847, 0, "12,847"),
        ("en", None, 0, "–"),
        ("ja", None, 1, "不明"),
        ("ja", float("nan"), 1, "不明"),
    ],
)
def test_numbers_and_unknowns(language, value, digits, text):
    assert i18n.number(language, value, digits) == text


def test_percent_is_unknown_not_zero():
    assert i18n.percent("en", 0.991) == "99.1 %" and i18n.percent("ja", 0.991) == "99.1%"
    assert i18n.percent("en", None) == "–" and i18n.percent("ja", None) == "不明"


def test_every_reason_a_scenario_report_can_show_is_in_words():
    """The report's "Not picked, by reason" showed the raw key vision_missed (and would have
    for line_waiting_camera and the other states the line can be in while a scallop goes by)."""
    from scallop.app import i18n
    from scallop.app.line.states import LineState

    for language in i18n.LANGUAGES:
        words = i18n.catalogue(language)
        for key in ["vision_missed", *(f"line_{s.value}" for s in LineState)]:
            assert f"reason.{key}" in words, (language, key)
