"""Prometheus text exposition (format 0.0.4) without a client library.

A :class:`Registry` holds metric families; :meth:`Registry.render` writes them in the text
format that Prometheus scrapes from ``/metrics``::

    reg = Registry()
    frames = reg.counter("scallop_frames_total", "Camera frames captured.")
    latency = reg.histogram("scallop_stage_seconds", "Time spent per stage.", labels=("stage",))
    frames.inc()
    latency.labels(stage="inference").observe(0.012)
    text = reg.render()

Counters only go up, histograms have cumulative buckets ending in ``le="+Inf"``, summaries
report quantiles over a sliding window of the latest observations (the runtime wants "how
slow is it now", not since boot). Every family is thread-safe: the runtime's stages observe
from their own threads while the web server renders.

:func:`snapshot_metrics` turns a :class:`scallop.app.line_api.LineSnapshot` into exposition text,
for a line that keeps its own counts; :func:`parse_text` reads exposition text back (for tests
and for tools that check a scrape).
"""

from __future__ import annotations

import math
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from time import perf_counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scallop.app.line_api import LineSnapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Stage latencies on the line run from ~1 ms (Modbus) to ~1 s (a stalled camera).
DEFAULT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class MetricsError(ValueError):
    """A metric or label that cannot be exposed (bad name, wrong labels, counter going down)."""


# ---------------------------------------------------------------------------- formatting


def format_value(v: float) -> str:
    """A sample value as Prometheus writes it: integers without '.0', ``+Inf``/``-Inf``/``NaN``."""
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


def escape_label_value(s: str) -> str:
    return str(s).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(s: str) -> str:
    return str(s).replace("\\", "\\\\").replace("\n", "\\n")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise MetricsError(
            f"metric name {name!r} is not valid: use letters, digits, '_' and ':', not starting with a digit"
        )
    return name


def check_label_name(name: str) -> str:
    if not isinstance(name, str) or not _LABEL_RE.match(name) or name.startswith("__"):
        raise MetricsError(
            f"label name {name!r} is not valid: use letters, digits and '_', not starting with a digit or '__'"
        )
    return name


def format_sample(name: str, labels: dict[str, str] | Sequence[tuple[str, str]] | None, value: float) -> str:
    """One exposition line: ``name{a="x",b="y"} value``."""
    items = list(labels.items()) if isinstance(labels, dict) else list(labels or ())
    if not items:
        return f"{name} {format_value(value)}"
    body = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in items)
    return f"{name}{{{body}}} {format_value(value)}"


def format_family(name: str, kind: str, help: str, samples: Iterable[tuple[str, dict | Sequence, float]]) -> str:
    """A whole family: ``# HELP``, ``# TYPE`` and its samples (``(sample_name, labels, value)``)."""
    check_name(name)
    if kind not in ("counter", "gauge", "histogram", "summary", "untyped"):
        raise MetricsError(f"metric type {kind!r} is not valid: choose counter, gauge, histogram, summary or untyped")
    lines = [f"# HELP {name} {escape_help(help)}", f"# TYPE {name} {kind}"]
    lines += [format_sample(n, lab, v) for n, lab, v in samples]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- metric families


class _Family:
    kind = "untyped"

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        self.name = check_name(name)
        self.help = help
        self.label_names = tuple(check_label_name(l) for l in labels)
        reserved = {"le"} if self.kind == "histogram" else {"quantile"} if self.kind == "summary" else set()
        for l in self.label_names:
            if l in reserved:
                raise MetricsError(f"label {l!r} is reserved in a {self.kind}")
        self._lock = threading.Lock()
        self._children: dict[tuple[str, ...], _Child] = {}
        if not self.label_names:
            self._children[()] = self._new_child()

    def _new_child(self) -> _Child:
        raise NotImplementedError

    def labels(self, *values: str, **kv: str):
        """The child for one combination of label values (created on first use)."""
        if values and kv:
            raise MetricsError(f"{self.name}: give label values by position or by name, not both")
        if kv:
            if set(kv) != set(self.label_names):
                raise MetricsError(f"{self.name}: labels {sorted(kv)} do not match {list(self.label_names)}")
            values = tuple(str(kv[l]) for l in self.label_names)
        else:
            values = tuple(str(v) for v in values)
        if len(values) != len(self.label_names):
            raise MetricsError(
                f"{self.name}: expected {len(self.label_names)} label values {list(self.label_names)}, got {len(values)}"
            )
        with self._lock:
            child = self._children.get(values)
            if child is None:
                child = self._children[values] = self._new_child()
            return child

    def _only(self) -> _Child:
        if self.label_names:
            raise MetricsError(f"{self.name} has labels {list(self.label_names)}: call .labels(...) first")
        return self._children[()]

    def _samples(self) -> list[tuple[str, list[tuple[str, str]], float]]:
        with self._lock:
            items = sorted(self._children.items())
        out = []
        for values, child in items:
            base = list(zip(self.label_names, values))
            for suffix, extra, v in child.samples():
                out.append((self.name + suffix, base + extra, v))
        return out

    def render(self) -> str:
        return format_family(self.name, self.kind, self.help, self._samples())


class _Child:
    def __init__(self) -> None:
        self._lock = threading.Lock()

    def samples(self) -> list[tuple[str, list[tuple[str, str]], float]]:
        raise NotImplementedError


class _CounterChild(_Child):
    def __init__(self) -> None:
        super().__init__()
        self._v = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise MetricsError(f"a counter only goes up: inc({amount}) refused")
        with self._lock:
            self._v += amount

    def set_total(self, total: float) -> None:
        """Mirror a count kept elsewhere; a total lower than before is refused (counters never go down)."""
        with self._lock:
            if total < self._v:
                raise MetricsError(f"a counter only goes up: total {total} < {self._v}")
            self._v = float(total)

    @property
    def value(self) -> float:
        return self._v

    def samples(self):
        return [("", [], self._v)]


class _GaugeChild(_Child):
    def __init__(self) -> None:
        super().__init__()
        self._v = 0.0

    def set(self, v: float) -> None:
        self._v = float(v)

    def inc(self, amount: float = 1.0) -> None:
        with self._lock:
            self._v += amount

    def dec(self, amount: float = 1.0) -> None:
        with self._lock:
            self._v -= amount

    @property
    def value(self) -> float:
        return self._v

    def samples(self):
        return [("", [], self._v)]


class _Observed(_Child):
    """A child fed by ``observe``; ``time()`` observes how long its block took."""

    def observe(self, v: float) -> None:
        raise NotImplementedError

    @contextmanager
    def time(self, clock: Callable[[], float] = perf_counter) -> Iterator[None]:
        t0 = clock()
        try:
            yield
        finally:
            self.observe(clock() - t0)


class _HistogramChild(_Observed):
    def __init__(self, bounds: tuple[float, ...]) -> None:
        super().__init__()
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # last slot: above the highest bound
        self._sum = 0.0
        self._n = 0

    def observe(self, v: float) -> None:
        v = float(v)
        i = 0
        while i < len(self._bounds) and v > self._bounds[i]:
            i += 1
        with self._lock:
            self._counts[i] += 1
            self._sum += v
            self._n += 1

    @property
    def count(self) -> int:
        return self._n

    @property
    def sum(self) -> float:
        return self._sum

    def samples(self):
        with self._lock:
            counts, s, n = list(self._counts), self._sum, self._n
        out, acc = [], 0
        for b, c in zip(self._bounds, counts):
            acc += c
            out.append(("_bucket", [("le", repr(float(b)))], acc))
        out.append(("_bucket", [("le", "+Inf")], n))
        out.append(("_sum", [], s))
        out.append(("_count", [], n))
        return out


class _SummaryChild(_Observed):
    def __init__(self, quantiles: tuple[float, ...], window: int) -> None:
        super().__init__()
        self._q = quantiles
        self._win: deque[float] = deque(maxlen=window)
        self._sum = 0.0
        self._n = 0

    def observe(self, v: float) -> None:
        v = float(v)
        with self._lock:
            self._win.append(v)
            self._sum += v
            self._n += 1

    def quantile(self, q: float) -> float:
        """Quantile over the window (nearest rank); NaN before the first observation."""
        with self._lock:
            data = sorted(self._win)
        return _nearest_rank(data, q)

    @property
    def count(self) -> int:
        return self._n

    def samples(self):
        with self._lock:
            data, s, n = sorted(self._win), self._sum, self._n
        out = [("", [("quantile", format_value(q))], _nearest_rank(data, q)) for q in self._q]
        out.append(("_sum", [], s))
        out.append(("_count", [], n))
        return out


def _nearest_rank(sorted_data: list[float], q: float) -> float:
    if not sorted_data:
        return math.nan
    k = max(0, min(len(sorted_data) - 1, math.ceil(q * len(sorted_data)) - 1))
    return sorted_data[k]


class Counter(_Family):
    """A count that only goes up (name it ``..._total``)."""

    kind = "counter"

    def _new_child(self):
        return _CounterChild()

    def inc(self, amount: float = 1.0) -> None:
        self._only().inc(amount)

    def set_total(self, total: float) -> None:
        self._only().set_total(total)

    @property
    def value(self) -> float:
        return self._only().value


class Gauge(_Family):
    """A value that goes up and down (queue depth, arm state, clients connected)."""

    kind = "gauge"

    def _new_child(self):
        return _GaugeChild()

    def set(self, v: float) -> None:
        self._only().set(v)

    def inc(self, amount: float = 1.0) -> None:
        self._only().inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        self._only().dec(amount)

    @property
    def value(self) -> float:
        return self._only().value


class Histogram(_Family):
    """Observations counted into cumulative buckets (``le`` = upper bound, inclusive)."""

    kind = "histogram"

    def __init__(
        self, name: str, help: str, labels: Sequence[str] = (), buckets: Sequence[float] = DEFAULT_BUCKETS
    ) -> None:
        b = tuple(float(x) for x in buckets if not math.isinf(float(x)))
        if not b or any(b[i] >= b[i + 1] for i in range(len(b) - 1)):
            raise MetricsError(f"{name}: buckets {list(buckets)} must be a non-empty strictly increasing list")
        self._bounds = b
        super().__init__(name, help, labels)

    def _new_child(self):
        return _HistogramChild(self._bounds)

    def observe(self, v: float) -> None:
        self._only().observe(v)

    def time(self, clock: Callable[[], float] = perf_counter):
        return self._only().time(clock)


class Summary(_Family):
    """Quantiles over the last ``window`` observations, plus an all-time sum and count."""

    kind = "summary"

    def __init__(
        self,
        name: str,
        help: str,
        labels: Sequence[str] = (),
        quantiles: Sequence[float] = (0.5, 0.9, 0.99),
        window: int = 1024,
    ) -> None:
        q = tuple(float(x) for x in quantiles)
        if any(not 0.0 <= x <= 1.0 for x in q):
            raise MetricsError(f"{name}: quantiles {list(quantiles)} must lie in 0..1")
        if window < 1:
            raise MetricsError(f"{name}: window={window} is out of range: allowed 1 or more")
        self._quantiles, self._window = q, int(window)
        super().__init__(name, help, labels)

    def _new_child(self):
        return _SummaryChild(self._quantiles, self._window)

    def observe(self, v: float) -> None:
        self._only().observe(v)

    def time(self, clock: Callable[[], float] = perf_counter):
        return self._only().time(clock)

    def quantile(self, q: float) -> float:
        return self._only().quantile(q)


class Registry:
    """The families exposed together at one ``/metrics``; names must be unique."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._families: dict[str, _Family] = {}

    def register(self, family: _Family) -> _Family:
        with self._lock:
            if family.name in self._families:
                raise MetricsError(f"metric {family.name!r} is already registered")
            self._families[family.name] = family
        return family

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Counter:
        return self.register(Counter(name, help, labels))  # type: ignore[return-value]

    def gauge(self, name: str, help: str, labels: Sequence[str] = ()) -> Gauge:
        return self.register(Gauge(name, help, labels))  # type: ignore[return-value]

    def histogram(
        self, name: str, help: str, labels: Sequence[str] = (), buckets: Sequence[float] = DEFAULT_BUCKETS
    ) -> Histogram:
        return self.register(Histogram(name, help, labels, buckets))  # type: ignore[return-value]

    def summary(
        self,
        name: str,
        help: str,
        labels: Sequence[str] = (),
        quantiles: Sequence[float] = (0.5, 0.9, 0.99),
        window: int = 1024,
    ) -> Summary:
        return self.register(Summary(name, help, labels, quantiles, window))  # type: ignore[return-value]

    def names(self) -> list[str]:
        with self._lock:
            return list(self._families)

    def render(self) -> str:
        with self._lock:
            fams = list(self._families.values())
        return "".join(f.render() for f in fams)


# ---------------------------------------------------------------------------- line snapshot


_STATES = ("stopped", "starting", "running", "paused", "stopping", "estop", "fault")
_ARM_STATES = ("idle", "picking", "disconnected", "fault", "estop", "homing")


def snapshot_metrics(snap: LineSnapshot, prefix: str = "scallop") -> str:
    """Exposition text for everything a :class:`LineSnapshot` carries.

    Counts become counters (``scallop_seen_total``...), the line and arm states become
    one-hot gauges (so a dashboard can alert on ``scallop_line_state{state="fault"} == 1``),
    stage latencies become ``..._stage_latency_seconds{stage,quantile}`` gauges (the snapshot
    holds quantiles only, not the sum and count a summary needs).
    """
    p = prefix
    out = []
    for key, help in (
        ("seen", "Scallops seen (each tracked scallop once)."),
        ("picked", "Picks executed."),
        ("uro_removed", "Uros removed."),
        ("missed", "Picks that did not remove the uro."),
        ("adductor_hits", "Picks that landed in the adductor muscle."),
        ("skipped", "Scallops not picked, all reasons."),
        ("frames", "Camera frames processed."),
        ("frames_dropped", "Camera frames dropped under overload."),
    ):
        out.append(format_family(f"{p}_{key}_total", "counter", help, [(f"{p}_{key}_total", [], getattr(snap, key))]))
    out.append(
        format_family(
            f"{p}_skipped_by_reason_total",
            "counter",
            "Scallops not picked, by reason.",
            [(f"{p}_skipped_by_reason_total", [("reason", r)], n) for r, n in sorted(snap.skipped_by_reason.items())],
        )
    )
    out.append(
        format_family(
            f"{p}_scallops_per_minute",
            "gauge",
            "Scallops seen over the last minute.",
            [(f"{p}_scallops_per_minute", [], snap.per_minute)],
        )
    )
    out.append(
        format_family(
            f"{p}_uro_removal_ratio",
            "gauge",
            "Uros removed / scallops with a uro (0..1).",
            [(f"{p}_uro_removal_ratio", [], snap.removal_rate)],
        )
    )
    out.append(
        format_family(
            f"{p}_uptime_seconds",
            "gauge",
            "Seconds since the line started.",
            [(f"{p}_uptime_seconds", [], snap.uptime_s)],
        )
    )
    states = list(_STATES) + ([snap.state] if snap.state not in _STATES else [])
    out.append(
        format_family(
            f"{p}_line_state",
            "gauge",
            "1 for the line's current state.",
            [(f"{p}_line_state", [("state", s)], 1 if s == snap.state else 0) for s in states],
        )
    )
    lat = []
    for stage, qs in sorted(snap.latency_ms.items()):
        for qname, ms in sorted(qs.items()):
            q = {"p50": "0.5", "p90": "0.9", "p95": "0.95", "p99": "0.99"}.get(qname, qname)
            lat.append((f"{p}_stage_latency_seconds", [("stage", stage), ("quantile", q)], ms / 1000.0))
    out.append(format_family(f"{p}_stage_latency_seconds", "gauge", "Recent stage latency quantiles.", lat))
    arm_state, arm_conn, arm_picks, arm_removed, arm_util = [], [], [], [], []
    for a in snap.arms:
        astates = list(_ARM_STATES) + ([a.state] if a.state not in _ARM_STATES else [])
        arm_state += [(f"{p}_arm_state", [("arm", a.name), ("state", s)], 1 if s == a.state else 0) for s in astates]
        arm_conn.append((f"{p}_arm_connected", [("arm", a.name)], 1 if a.connected else 0))
        arm_picks.append((f"{p}_arm_picks_total", [("arm", a.name)], a.picks))
        arm_removed.append((f"{p}_arm_uro_removed_total", [("arm", a.name)], a.uro_removed))
        arm_util.append((f"{p}_arm_utilisation_ratio", [("arm", a.name)], a.utilisation))
    out.append(format_family(f"{p}_arm_state", "gauge", "1 for each arm's current state.", arm_state))
    out.append(format_family(f"{p}_arm_connected", "gauge", "1 when the arm answers on Modbus.", arm_conn))
    out.append(format_family(f"{p}_arm_picks_total", "counter", "Picks executed per arm.", arm_picks))
    out.append(format_family(f"{p}_arm_uro_removed_total", "counter", "Uros removed per arm.", arm_removed))
    out.append(
        format_family(f"{p}_arm_utilisation_ratio", "gauge", "Share of the last minute spent picking.", arm_util)
    )
    active = [a for a in snap.alarms if a.active]
    unacked = [a for a in snap.alarms if not a.acked]
    out.append(
        format_family(
            f"{p}_alarms_active",
            "gauge",
            "Alarms whose condition still holds, by severity.",
            [
                (f"{p}_alarms_active", [("severity", s)], sum(a.severity == s for a in active))
                for s in ("info", "warning", "critical")
            ],
        )
    )
    out.append(
        format_family(
            f"{p}_alarms_unacked",
            "gauge",
            "Alarms not yet acknowledged, by severity.",
            [
                (f"{p}_alarms_unacked", [("severity", s)], sum(a.severity == s for a in unacked))
                for s in ("info", "warning", "critical")
            ],
        )
    )
    return "".join(out)


# ---------------------------------------------------------------------------- parsing


_SAMPLE_RE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r'(?:\{(?P<labels>(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"(?:,|(?=\})))*)\})?'
    r" (?P<value>[^ ]+)(?: (?P<ts>-?\d+))?$"
)
_LABEL_PAIR_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _unescape(s: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\", '"': '"'}.get(m.group(1), "\\" + m.group(1)), s)


def parse_text(text: str) -> dict[str, dict]:
    """Read exposition text back: ``{family: {"type", "help", "samples": [(name, labels, value)]}}``.

    Strict: a malformed line, a sample before its ``# TYPE``, a family declared twice or a
    bad value raises :class:`MetricsError` naming the line.
    """
    fams: dict[str, dict] = {}
    current: str | None = None
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line.startswith("# HELP "):
            parts = line[7:].split(" ", 1)
            fams.setdefault(parts[0], {"type": "untyped", "help": "", "samples": []})["help"] = _unescape(
                parts[1] if len(parts) > 1 else ""
            )
            continue
        if line.startswith("# TYPE "):
            parts = line[7:].split(" ")
            if len(parts) != 2 or parts[1] not in ("counter", "gauge", "histogram", "summary", "untyped"):
                raise MetricsError(f"line {i}: bad TYPE line {line!r}")
            fam = fams.setdefault(parts[0], {"type": "untyped", "help": "", "samples": []})
            if fam.get("typed"):
                raise MetricsError(f"line {i}: family {parts[0]} declared twice")
            fam["type"], fam["typed"], current = parts[1], True, parts[0]
            continue
        if line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        if not m:
            raise MetricsError(f"line {i}: not a valid sample: {line!r}")
        name = m.group("name")
        fam_name = (
            current
            if current
            and (
                name == current or (name.startswith(current) and name[len(current) :] in ("_bucket", "_sum", "_count"))
            )
            else None
        )
        if fam_name is None:
            raise MetricsError(f"line {i}: sample {name} does not belong to the family declared above it ({current})")
        try:
            value = float(m.group("value"))
        except ValueError:
            raise MetricsError(f"line {i}: bad value {m.group('value')!r}") from None
        labels = {k: _unescape(v) for k, v in _LABEL_PAIR_RE.findall(m.group("labels") or "")}
        fams[fam_name]["samples"].append((name, labels, value))
    for fam in fams.values():
        fam.pop("typed", None)
    return fams
