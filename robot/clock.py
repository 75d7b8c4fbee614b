"""Clocks. Everything that waits or stamps time takes a clock, so the same code runs on
wall time against hardware and on the simulator's virtual time, faster than real time."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds, monotonic."""

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""

    def wall(self) -> float:
        """Seconds since the epoch: the time a person reads (the record's rows, alarms),
        advancing as ``now()`` does."""


class SystemClock:
    """Wall-clock time (time.monotonic)."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def wall(self) -> float:
        return time.time()
