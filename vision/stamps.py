"""When was a frame exposed? Stamps for free-running cameras read through a driver queue.

A camera that is not triggered by the belt exposes frames at its own steady pace and its
driver queues them; the program only learns of a frame when it takes it from the queue. The
host time right *after* the grab is the exposure plus a constant pipeline delay (exposure,
read-out, transfer: ``latency_s`` of the encoder config) plus a varying delivery delay (the
network, the scheduler, a busy CPU) — and, when the frame had been waiting in the queue,
plus however long it waited, which nothing on the host can tell.

:class:`FrameStamper` turns what a read saw into a stamp and a bound on its error:

* **The driver's own timestamp** (a V4L2 buffer time, a stream's presentation time), where
  there is one, mapped onto the line's clock. The mapping's offset follows the *lower
  envelope* of ``host time - driver time`` (the least-delayed frames), allowed to rise at most
  ``max_drift`` seconds per second (two crystals never drift apart faster), so a backlog of
  queued frames never drags it late: a frame that waited keeps its true time. A driver clock
  that does not keep pace with the host's (a demuxer counting frames at a nominal rate) is
  caught on frames that were not queued, and not used for the rest of the connection.
* **Otherwise the camera's cadence** (:class:`CadenceGrid`): exposures of a free-running
  camera fall on a regular grid ``a + n·period``. The grid is fitted to the arrival times —
  the period by least squares over the last frames, the phase by their lower envelope (the
  frames that waited least) — and each frame is stamped with its grid slot, so delivery
  jitter does not reach the stamp. A grab that returned at once took a frame that had been
  queued for an unknown time: its slot is not known, and neither is its stamp (``inf``).

The error bound of a stamp is how well the grid (or the driver mapping) is pinned down; the
delivery jitter itself (how far each arrival strays from the cadence) is reported per frame
for the engineer panel. Until the grid has enough frames the bound is unknown, so the first
frames after a (re)connect are never used where the exposure time matters.
"""

from __future__ import annotations

import logging
import math
from collections import deque

import numpy as np

log = logging.getLogger("scallop.camera")


class CadenceGrid:
    """Exposure slots of a free-running camera from the arrival times of its frames.

    ``add(t)`` with the arrival time of a frame that was not queued. Returns
    ``(slot time, error bound, arrival jitter)``, or None while the grid is being learnt or
    when the frame does not fall clearly into a slot: it arrived more than ``late`` periods
    after the envelope, or more than ``early`` periods before it (a frame that late would
    round into the next slot and pull the fit). ``window`` frames are fitted; a gap of more
    than ``reset_s``, or ``lost`` frames in a row that fit no slot, start afresh (a
    restarted camera need not keep its phase or rate).
    """

    def __init__(
        self,
        window: int = 100,
        learn: int = 8,
        late: float = 0.35,
        early: float = 0.15,
        reset_s: float = 5.0,
        lost: int = 10,
    ) -> None:
        self.window, self.learn, self.late, self.early = window, learn, late, early
        self.reset_s, self.lost = reset_s, lost
        self.reset()

    def reset(self) -> None:
        self._n: deque[int] = deque(maxlen=self.window)
        self._t: deque[float] = deque(maxlen=self.window)
        self.a: float | None = None
        self.period_s: float | None = None
        self._misfits = 0
        self._seen = 0  # the slot of the last fresh frame, placed or not
        self._fits: deque[bool] = deque(maxlen=50)

    @staticmethod
    def _slope(n: np.ndarray, t: np.ndarray) -> float | None:
        nc = n - n.mean()
        den = float(nc @ nc)
        return float(nc @ (t - t.mean())) / den if den > 0 else None

    def _fit(self) -> None:
        n = np.fromiter(self._n, float)
        t = np.fromiter(self._t, float)
        b = self._slope(n, t)
        if b is None:
            return
        # Refit on the lower half (the frames that waited least): late deliveries are
        # one-sided, and would tilt a plain fit.
        r = t - b * n
        low = r <= np.median(r)
        b = self._slope(n[low], t[low]) or b
        self.period_s = b
        self.a = float(np.min(t - b * n))

    @property
    def erratic(self) -> bool:
        """More than a fifth of the recent frames fit no slot: deliveries stray so far (a
        loaded network or host) that a frame may be taken for its neighbour. No stamp is
        trusted then; such a camera needs its driver's timestamps or a hardware trigger."""
        return len(self._fits) >= 20 and self._fits.count(False) > 0.2 * len(self._fits)

    def add(self, t: float) -> tuple[float, float, float] | None:
        if self._t and t - self._t[-1] > self.reset_s:
            self.reset()
        if not self._t:
            self._n.append(0)
            self._t.append(t)
            return None
        if self.period_s is None:
            # Learning: slots counted from the intervals (a lost frame is a whole period).
            dt = t - self._t[-1]
            if dt <= 0:
                return None
            ints = np.diff(np.fromiter(self._t, float))
            guess = float(np.median(np.append(ints, dt)))
            self._n.append(self._n[-1] + max(1, round(dt / guess)))
            self._t.append(t)
            self._seen = self._n[-1]
            if len(self._t) >= self.learn:
                self._fit()
                r = np.fromiter(self._t, float) - (self.a + self.period_s * np.fromiter(self._n, float))
                if np.median(r) > self.early * self.period_s:
                    # The frames do not line up on one cadence (a slot miscounted): learn on.
                    self.period_s = self.a = None
                    for _ in range(len(self._t) // 2):
                        self._n.popleft()
                        self._t.popleft()
            return None
        n = round((t - self.a) / self.period_s)
        r = t - (self.a + n * self.period_s)
        # A fresh frame takes the slot after the last fresh frame's. One that seems to skip a
        # slot may be the skipped frame itself, more than a period late: not placed (the
        # next one, on the following slot, is).
        follows = n == self._seen + 1
        self._seen = n
        fits = follows and -self.early * self.period_s <= r <= self.late * self.period_s
        self._fits.append(fits)
        if not fits:
            self._misfits += 1
            if self._misfits >= self.lost:
                self.reset()
            return None
        self._misfits = 0
        self._n.append(n)
        self._t.append(t)
        self._fit()
        slot = self.a + n * self.period_s
        if len(self._t) < 2 * self.learn or self.erratic:
            return slot, math.inf, t - slot  # not settled yet, or deliveries too irregular
        resid = np.fromiter(self._t, float) - (self.a + self.period_s * np.fromiter(self._n, float))
        # The phase rests on the least-delayed frames; half the frames arrive within this of
        # the envelope, a conservative bound on how far it sits from the cadence.
        return slot, float(np.median(resid)), t - slot


class FrameStamper:
    """Stamps for one connection to a free-running camera (see the module docstring).

    ``stamp(t_before, t_after, driver_t)``: host clock just before and just after the grab,
    and the driver's timestamp of the grabbed frame in seconds (None when it has none).
    Returns ``(stamp, error_s, jitter_s)``: error_s is ``inf`` when the stamp cannot be
    trusted; jitter_s is how far this frame's arrival strayed from the cadence (None when
    not known).

    queued_share: a grab that waited less than this share of the frame period took a frame
    that was already queued. max_drift: how fast the driver's and the host's clocks may drift
    apart (s/s). max_lag_s: ``lagging`` frames in a row that were not queued arrive later
    than this after their driver timestamps (mapped): the driver's clock does not keep pace
    with the host's (one late frame is a hiccup of the link, not a wrong clock).
    """

    def __init__(
        self, queued_share: float = 0.25, max_drift: float = 1e-3, max_lag_s: float = 0.05, lagging: int = 5
    ) -> None:
        self.queued_share = queued_share
        self.max_drift = max_drift
        self.max_lag_s = max_lag_s
        self.lagging = lagging
        self._late_run = 0
        self.grid = CadenceGrid()
        self.driver_clock = True  # until the driver's timestamps prove useless
        self._offset: float | None = None
        self._last_host: float | None = None
        self._last_driver: float | None = None
        self._lags: deque[float] = deque(maxlen=100)
        self.queued = 0  # frames taken from the queue with no trustworthy time
        self.unplaced = 0  # fresh frames that fell between two slots of the cadence

    def reset(self) -> None:
        """A new connection: nothing learnt so far holds."""
        self.grid.reset()
        self._lags.clear()
        self.driver_clock = True
        self._late_run = 0
        self._offset = self._last_host = self._last_driver = None

    def _was_queued(self, waited: float) -> bool:
        period = self.grid.period_s
        if period is None:
            return waited < 0.002  # no period yet: only a grab that did not wait at all
        return waited < self.queued_share * period

    def _give_up_driver(self, why: str) -> None:
        log.warning("camera driver timestamps not used (%s): stamping frames by the camera's cadence", why)
        self.driver_clock = False
        self._lags.clear()
        self.grid.reset()  # it held driver stamps

    def _driver_stamp(self, t_after: float, driver_t: float, queued: bool) -> tuple[float, float, float | None] | None:
        last_d, last_h = self._last_driver, self._last_host
        if last_d is not None and (driver_t <= last_d or abs((driver_t - last_d) - (t_after - last_h)) > 10.0):
            # The driver's clock went back or jumped (a stream restarted): learn it afresh.
            self._offset = None
            self._lags.clear()
        o = t_after - driver_t
        if self._offset is None:
            self._offset = o
        else:
            self._offset = min(o, self._offset + self.max_drift * max(0.0, t_after - last_h))
        self._last_driver, self._last_host = driver_t, t_after
        lag = None
        if not queued:
            lag = o - self._offset
            self._late_run = self._late_run + 1 if lag > self.max_lag_s else 0
            if self._late_run >= self.lagging:
                self._give_up_driver(f"{self._late_run} fresh frames in a row came over {self.max_lag_s:g} s late")
                return None
            if lag > self.max_lag_s:
                return driver_t + self._offset, math.inf, lag  # a hiccup, or the start of a wrong clock
            self._lags.append(lag)
        if len(self._lags) < 2 * self.grid.learn:
            return driver_t + self._offset, math.inf, lag
        # The offset rests on the least-delayed frames, as the cadence's phase does.
        return driver_t + self._offset, float(np.median(np.fromiter(self._lags, float))), lag

    def stamp(self, t_before: float, t_after: float, driver_t: float | None) -> tuple[float, float, float | None]:
        queued = self._was_queued(t_after - t_before)
        if self.driver_clock and driver_t is not None and math.isfinite(driver_t) and driver_t > 0:
            out = self._driver_stamp(t_after, driver_t, queued)
            if out is not None:
                if not queued:
                    self.grid.add(out[0])  # the period, for telling queued frames
                return out
        elif self.driver_clock and self._last_driver is not None:
            self._give_up_driver("they stopped coming")
        if queued:
            self.queued += 1
            return t_after, math.inf, None
        placed = self.grid.add(t_after)
        if placed is None:
            if self.grid.period_s is not None:
                self.unplaced += 1
            return t_after, math.inf, None
        return placed
