"""The operator's words: one message catalogue per language, for the screen, the alarms and the report.

The catalogues are ``scallop/app/web/i18n/<language>.json``: flat ``{"key": "text"}`` objects
with ``{name}`` placeholders. The screen loads the same files (``/static/i18n/ja.json``) and fills
them in with the same rules as :func:`t` here::

    t("ja", "alarm.arm.fault", arm="left")      # 'アーム left が異常です。…'
    t("en", "toast.action", action="#action.start", state="#state.running")
    # a parameter written "#key" is itself looked up: 'start: the line is RUNNING'

Every language has every key (``tests/test_i18n.py``); a missing key is a ``KeyError``, never
a silent fallback, so a test that renders a page in both languages finds it.
"""

from __future__ import annotations

import functools
import json
import math
import re
from pathlib import Path

LANGUAGES: tuple[str, ...] = ("ja", "en")
CATALOGUE_DIR = Path(__file__).with_name("web") / "i18n"
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@functools.cache
def catalogue(language: str) -> dict[str, str]:
    if language not in LANGUAGES:
        raise ValueError(f"language={language!r} is not allowed: choose one of {', '.join(LANGUAGES)}")
    return json.loads((CATALOGUE_DIR / f"{language}.json").read_text(encoding="utf-8"))


def has(key: str) -> bool:
    return key in catalogue("en")


def placeholders(text: str) -> set[str]:
    return set(_PLACEHOLDER.findall(text))


def t(language: str, key: str, **params: object) -> str:
    """The text of ``key`` in ``language`` with its ``{name}`` placeholders filled in."""
    cat = catalogue(language)
    text = cat[key]

    def fill(m: re.Match) -> str:
        name = m.group(1)
        if name not in params:
            return m.group(0)
        v = params[name]
        if isinstance(v, str) and v.startswith("#") and v[1:] in cat:
            return cat[v[1:]]
        return str(v)

    return _PLACEHOLDER.sub(fill, text)


def number(language: str, value: float | int | None, digits: int = 0) -> str:
    """A figure as the language writes it (thousands grouped); None or NaN is "unknown", never 0."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return t(language, "value.unknown")
    return f"{value:,.{digits}f}"


def percent(language: str, share: float | None, digits: int = 1) -> str:
    """A share 0..1 as a percentage in the language's style; None is "unknown"."""
    if share is None or (isinstance(share, float) and not math.isfinite(share)):
        return t(language, "value.unknown")
    return t(language, "value.percent", value=number(language, 100 * share, digits))
