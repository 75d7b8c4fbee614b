"""The one error root every layer raises from, and the one validation helper.

Every error a user can cause or meet (a bad value, a file that cannot be used, a device that
is not there, an action not allowed now) derives from :class:`ScallopError` through one of
four kinds. The command line maps each kind to one exit code, the web API to one HTTP status
(``exit_code`` / ``http_status`` below), and neither shows a traceback for them.

This module sits at the namespace root, below every package: ``vision``, ``robot``,
``calibration``, ``models`` and ``sim`` import it; it imports nothing of theirs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from numbers import Real


class ScallopError(Exception):
    """Root of the errors a user sees as one line of plain words."""

    exit_code = 1
    http_status = 500


class ConfigError(ScallopError, ValueError):
    """A configuration key, command-line option or request value that cannot be used; the
    message names the key, the value and what is allowed."""

    exit_code = 2
    http_status = 422


class DataError(ScallopError, ValueError):
    """A file or data set that cannot be used (image, model, calibration, record, data set);
    the message names the file and what is wrong with it."""

    exit_code = 3
    http_status = 422


class DeviceError(ScallopError):
    """A device the line needs (camera, encoder, arm, PLC) is missing, refused or failed."""

    exit_code = 4
    http_status = 503


class StateError(ScallopError, RuntimeError):
    """An action that is not allowed in the line's present state (start during e-stop, …)."""

    exit_code = 5
    http_status = 409


@contextmanager
def naming_file(path: object) -> Iterator[None]:
    """An OSError inside names ``path`` when it names no file of its own: a write() or close()
    on a full disk says only "No space left on device" (an outside try could not tell which
    file)."""
    try:
        yield
    except OSError as e:
        if e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        raise


def one_line(text: str) -> str:
    """``text`` on one line whatever it quotes: a newline or other control character (a file's
    name may hold one) is shown escaped (``\\n``), as ``ls`` does, so each line a command prints
    is one message."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _fmt(v: float) -> str:
    # An integer bound exactly (a seed's 4294967295, not 4.29497e+09).
    return str(v) if isinstance(v, int) else f"{v:g}"


def check_number(
    key: str,
    value: object,
    lo: float | None = None,
    hi: float | None = None,
    *,
    integer: bool = False,
    note: str = "",
    error: type[ScallopError] = ConfigError,
) -> float:
    """``value`` as a finite number inside ``lo..hi`` (either bound may be None), or
    ``error`` naming the key, the value and the allowed range. NaN, infinities and booleans
    are refused whatever the bounds: a NaN compares false with everything, so a range check
    alone would let it through and switch the check it feeds off."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise error(f"{key}={value!r}: expected {'an integer' if integer else 'a number'}{_allowed(lo, hi)}{note}")
    if not math.isfinite(float(value)):
        raise error(f"{key}={value!r} is not a finite number{_allowed(lo, hi)}{note}")
    if integer and int(value) != value:
        raise error(f"{key}={value!r}: expected an integer{_allowed(lo, hi)}{note}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise error(f"{key}={value!r} is out of range{_allowed(lo, hi)}{note}")
    return value


def check_duration(key: str, value: object, max_s: float) -> float:
    """A duration option: more than 0 s (0 or less would end before it began) and at most
    ``max_s``, or :class:`ConfigError` naming the option."""
    v = float(check_number(key, value, None, None, note=f": allowed more than 0, up to {_fmt(max_s)} s"))
    if not 0 < v <= max_s:
        raise ConfigError(f"{key}={value!r} is out of range: allowed more than 0, up to {_fmt(max_s)} s")
    return v


#: The largest seed a command takes. numpy's seeding refuses negative numbers (a traceback, not
#: a usage error, if let through); 32 bits are more distinct runs than anyone draws, and a
#: bigger number is a typo, not a wish.
SEED_MAX = 2**32 - 1


def check_seed(key: str, value: object) -> int:
    """A seed option: a whole number 0..SEED_MAX, or :class:`ConfigError` naming the option."""
    return int(check_number(key, value, 0, SEED_MAX, integer=True))


def _allowed(lo: float | None, hi: float | None) -> str:
    if lo is None and hi is None:
        return ""
    if lo is None:
        return f": allowed up to {_fmt(hi)}"
    if hi is None:
        return f": allowed from {_fmt(lo)}"
    return f": allowed {_fmt(lo)}..{_fmt(hi)}"


def check_range(key: str, value: object, lo: float, hi: float, note: str = "") -> None:
    """:func:`check_number` with both bounds, for dataclass ``__post_init__`` checks."""
    check_number(key, value, lo, hi, note=note)


def check_pair(key: str, pair: Sequence, lo: float, hi: float) -> None:
    """Two numbers (low, high) inside ``lo..hi`` with low <= high."""
    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
        raise ConfigError(f"{key}={pair!r}: expected two values (low, high)")
    a, b = pair
    check_range(f"{key}[0]", a, lo, hi)
    check_range(f"{key}[1]", b, lo, hi)
    if a > b:
        raise ConfigError(f"{key}={list(pair)!r}: low is above high")


def check_share(key: str, value: object) -> None:
    """A share between 0 and 1."""
    check_range(key, value, 0.0, 1.0)


def check_choice(key: str, value: object, allowed: Sequence, *, error: type[ScallopError] = ConfigError) -> object:
    """``value`` if it is one of ``allowed``, else ``error`` listing the choices."""
    if isinstance(value, bool) and not any(isinstance(a, bool) for a in allowed):
        raise error(f"{key}={value!r} is not allowed: choose one of {', '.join(map(repr, allowed))}")
    if value not in allowed:
        raise error(f"{key}={value!r} is not allowed: choose one of {', '.join(map(repr, allowed))}")
    return value


def check_vector(key: str, value: object, n: int = 3, *, error: type[ScallopError] = ConfigError) -> tuple[float, ...]:
    """``n`` finite numbers as a tuple of floats."""
    try:
        vals = tuple(float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise error(f"{key}={value!r}: expected {n} numbers") from None
    if len(vals) != n or not all(math.isfinite(v) for v in vals):
        raise error(f"{key}={value!r}: expected {n} finite numbers")
    return vals
