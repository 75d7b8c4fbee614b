"""Virtual time for the simulator: the same code runs faster than real time, and the
same seed gives the same run.

Two ways to drive it:

* ``auto_advance=True`` (default): ``sleep(dt)`` moves time forward by ``dt`` at once.
  Right for a single driving thread (a test, a benchmark, the stepped line runtime).
* ``auto_advance=False``: ``sleep(dt)`` blocks until a driver calls ``advance``/``advance_to``
  past the wake-up time. Right when several threads share virtual time in lockstep.

Components that depend on time (the simulated arm, the belt) should compute their state
lazily from ``now()`` rather than in background threads, so results do not depend on
thread scheduling.
"""

from __future__ import annotations

import threading
import time


class VirtualClock:
    def __init__(self, start: float = 0.0, auto_advance: bool = True, epoch: float | None = None) -> None:
        self._t = self._start = float(start)
        # The wall time ``start`` stands for (default: when the clock was made): a simulated
        # run's record then spans its virtual time, and a day's report reads its rates.
        self._epoch = time.time() if epoch is None else float(epoch)
        self.auto_advance = auto_advance
        self._cond = threading.Condition()

    def now(self) -> float:
        return self._t

    def wall(self) -> float:
        return self._epoch + (self._t - self._start)

    def advance(self, dt: float) -> float:
        if dt < 0:
            raise ValueError(f"cannot move time backwards (dt={dt})")
        with self._cond:
            self._t += dt
            self._cond.notify_all()
            return self._t

    def advance_to(self, t: float) -> float:
        with self._cond:
            if t > self._t:
                self._t = float(t)
                self._cond.notify_all()
            return self._t

    def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self.auto_advance:
            self.advance(seconds)
            return
        with self._cond:
            wake = self._t + seconds
            while self._t < wake:
                self._cond.wait()
