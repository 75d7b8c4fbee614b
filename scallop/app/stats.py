"""Per-stage latency and per-minute counts, measured all the time."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np


class LatencyWindow:
    """The last ``n`` samples of one stage (ms), with percentiles."""

    def __init__(self, n: int = 2000) -> None:
        self._d: deque[float] = deque(maxlen=n)
        self.count = 0
        self.total_ms = 0.0

    def widen(self, n: int) -> None:
        """Keep the last ``n`` samples from now on (the ones kept so far stay)."""
        self._d = deque(self._d, maxlen=n)

    def add(self, ms: float) -> None:
        self._d.append(float(ms))
        self.count += 1
        self.total_ms += float(ms)

    def percentiles(self) -> dict[str, float]:
        if not self._d:
            return {}
        a = np.fromiter(self._d, float)
        return {
            "p50": round(float(np.percentile(a, 50)), 3),
            "p90": round(float(np.percentile(a, 90)), 3),
            "p99": round(float(np.percentile(a, 99)), 3),
            "max": round(float(a.max()), 3),
            "n": int(self.count),
        }

    def values(self) -> np.ndarray:
        return np.fromiter(self._d, float)


class Stats:
    # stamp_jitter: how far a free-running camera's frames arrive from its cadence.
    STAGES = ("capture", "inference", "tracking", "planning", "modbus", "frame_total", "stamp_jitter")
    # keep_all()'s bound per stage: hours of frames, yet a forgotten run cannot eat the memory.
    KEEP_ALL_MAX = 500_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.latency = {s: LatencyWindow() for s in self.STAGES}
        self._events: deque[tuple[float, str]] = deque(maxlen=20000)

    def keep_all(self) -> None:
        """Keep every latency sample from now on (up to KEEP_ALL_MAX a stage) instead of the
        last 2000: a run's report shows the whole run, a live line only needs recent ones."""
        with self._lock:
            for w in self.latency.values():
                w.widen(self.KEEP_ALL_MAX)

    def timing(self, stage: str, ms: float) -> None:
        with self._lock:
            self.latency[stage].add(ms)

    def event(self, t: float, kind: str) -> None:
        with self._lock:
            self._events.append((t, kind))

    def per_minute(self, now: float, kind: str, window_s: float = 60.0) -> float:
        """Events of ``kind`` per minute over the last ``window_s`` (at most the kept history)."""
        with self._lock:
            n = sum(1 for t, k in self._events if k == kind and now - window_s < t <= now)
        return n * 60.0 / window_s

    def latency_summary(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {s: w.percentiles() for s, w in self.latency.items() if w.count}

    def latency_values(self) -> dict[str, list[float]]:
        """The kept samples (ms) of every stage that has any."""
        with self._lock:
            return {s: w.values().tolist() for s, w in self.latency.items() if w.count}
