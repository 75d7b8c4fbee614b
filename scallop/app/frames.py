"""Frames with their belt count: a camera and an encoder brought together.

Tracking and pick timing need the belt encoder count *at each exposure*. The simulator's
frames carry it, as do cameras with a hardware latch; a plain OpenCV camera does not. Here a
sampling thread reads the encoder counter (:class:`scallop.robot.belt.ModbusEncoder`, a PLC
register over Modbus TCP) many times a second into a short history, and each frame gets the
count interpolated at its exposure time::

    enc = ModbusEncoder(ModbusEncoderConfig(host="192.168.10.5", address=100, sample_hz=500))
    with EncodedCamera(OpenCVCamera(OpenCVCameraConfig(source="0")), enc) as cam:
        frame = cam.read()          # frame.encoder: belt count at the exposure

The line treats encoder failures like camera failures: a stalled encoder
(:class:`EncoderStalledError`) is a critical alarm of its own that clears when counts come
back, and a single frame that cannot be given a count (:class:`EncoderGapError`) is skipped
with a warning. A frame is only given a count when its exposure time is known
(``Frame.timestamp_error_s`` finite): a frame that waited in the camera's queue for an unknown
time — the backlog a stream builds while the counter is away — is skipped
(:class:`ExposureUnknownError`), never stamped with a count read after it was exposed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

import numpy as np

from scallop.robot.belt import Encoder, EncoderGapError, EncoderStalledError
from scallop.vision.camera import Camera, CameraNotConnectedError, Frame

log = logging.getLogger("scallop.encoder")


class ExposureUnknownError(EncoderGapError):
    """The frame's exposure time is not known (it waited in the camera's queue): it gets no
    count and is skipped."""


class EncodedCamera(Camera):
    """Any :class:`Camera` plus an :class:`Encoder`: frames get ``encoder`` = the count at
    their exposure (the camera's stamp minus ``latency_s``), interpolated linearly between the
    samples just before and just after it, and ``timestamp`` = that exposure time.

    A thread samples the encoder at ``sample_hz`` into a ring buffer of
    ``(clock time, count)``; each sample is stamped with the middle of its request. ``read()``
    waits at most ``timeout_s + 2/sample_hz`` (wall time) for a sample at or after the
    exposure. ``clock`` must be the clock that stamps the wrapped camera's frames; the
    thread's pacing is wall time. Each frame also gets ``extra["encoder_t"]``, the clock time
    its count belongs to, and ``extra["count_error"]``: how many counts its stamp error
    (``timestamp_error_s``) and the samples' own time error (half their request's round trip)
    are worth at the belt speed of the samples around it.

    run_sampler=False starts no thread: the caller takes samples with :meth:`sample` (tests,
    tools that sample in their own loop).
    """

    def __init__(
        self, camera: Camera, encoder: Encoder, clock: Callable[[], float] = time.monotonic, run_sampler: bool = True
    ) -> None:
        super().__init__()
        self.camera = camera
        self.encoder = encoder
        self._clock = clock
        cfg = encoder.config
        self.sample_hz = float(cfg.sample_hz)
        self.latency_s = float(cfg.latency_s)
        timeout = float(getattr(cfg, "timeout_s", 0.2))
        self.max_wait_s = timeout + 2.0 / self.sample_hz
        # One failed request plus a few periods can be bridged; longer gaps are not
        # interpolated (the belt may have changed speed meanwhile).
        self.max_gap_s = timeout + 4.0 / self.sample_hz
        # (clock time, count, half the request's round trip: how far the time may be off)
        self._samples: deque[tuple[float, int, float]] = deque(maxlen=math.ceil(cfg.buffer_s * self.sample_hz) + 2)
        self._cond = threading.Condition()
        self._sample_lock = threading.Lock()
        self._run_sampler = run_sampler
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.last_error: BaseException | None = None
        self.errors = 0
        self.last_rtt_s = 0.0

    @property
    def _name(self) -> str:
        return f"encoder {self.encoder.name}"

    @property
    def resolution(self) -> tuple[int, int]:
        return self.camera.resolution

    # ------------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        if self._connected:
            return
        self.encoder.connect()
        try:
            self.sample()
            if self._run_sampler:
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._sampler, name=f"encoder-sampler-{self.encoder.name}", daemon=True
                )
                self._thread.start()
            self.camera.connect()
        except BaseException:
            self._shutdown()
            self.camera.disconnect()
            raise
        self._connected = True

    def _shutdown(self) -> None:
        self._stop.set()
        th = self._thread
        if th is not None:
            th.join(self.max_wait_s + 2.0)
            if th.is_alive():
                log.error("%s: sampler thread did not stop", self._name)
            self._thread = None
        with self._cond:
            self._samples.clear()
            self._cond.notify_all()
        self.encoder.disconnect()

    def disconnect(self) -> None:
        self._connected = False
        self._shutdown()
        self.camera.disconnect()

    def reconnect(self) -> None:
        """The camera only: the encoder's sampler runs on (it has its own alarm). Never
        connected (not there at the start): both."""
        if not self._connected:
            self.connect()
        else:
            self.camera.reconnect()

    @property
    def sampler_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ sampling
    def sample(self) -> tuple[float, int]:
        """Read the encoder once and keep ``(time, count)``; raises EncoderError subclasses.
        A sample stamped no later than the newest one kept is returned but not kept."""
        with self._sample_lock:
            t0 = self._clock()
            w0 = time.perf_counter()
            count = self.encoder.read()
            self.last_rtt_s = time.perf_counter() - w0
            t1 = self._clock()
        t = 0.5 * (t0 + t1)
        with self._cond:
            if not self._samples or t > self._samples[-1][0]:
                self._samples.append((t, count, 0.5 * (t1 - t0)))
                self._cond.notify_all()
        return t, count

    @contextlib.contextmanager
    def sampling_paused(self) -> Iterator[None]:
        """Hold the sampler between two samples (a test steps its clock here without racing
        a request in flight)."""
        with self._sample_lock:
            yield

    def samples(self) -> np.ndarray:
        """(N, 2) float64 copy of the kept samples: column 0 clock time, column 1 count."""
        with self._cond:
            return np.array([s[:2] for s in self._samples], dtype=np.float64).reshape(-1, 2)

    def newest_sample(self) -> tuple[float, int] | None:
        with self._cond:
            return self._samples[-1][:2] if self._samples else None

    def _sampler(self) -> None:
        period = 1.0 / self.sample_hz
        due = time.monotonic()
        while not self._stop.is_set():
            failed = False
            try:
                self.sample()
                self.last_error = None
            except Exception as e:  # the thread must keep trying; read() reports the cause
                failed = True
                self.errors += 1
                if self.last_error is None or str(self.last_error) != str(e):
                    log.warning("%s", e)
                self.last_error = e
            now = time.monotonic()
            due = max(due + period, now)  # fell behind: no burst of catch-up reads
            if failed:
                due = max(due, now + 0.05)  # do not hammer a device that refuses
            self._stop.wait(due - now)

    # ------------------------------------------------------------------ counts
    def count_at(self, t: float) -> int:
        """The count at clock time ``t``, interpolated between the kept samples around it;
        waits (bounded) for the sample after ``t``."""
        return self._count_and_rate(t)[0]

    def _count_and_rate(self, t: float, rate_span_s: float = 0.1) -> tuple[int, float, float]:
        """The count at ``t``, the belt's rate there (counts per second, over the samples of
        ``rate_span_s`` before the one after ``t``: two neighbours alone are a count apart), and
        how far the samples' own times may be off (half the slower request's round trip)."""
        deadline = time.monotonic() + self.max_wait_s
        with self._cond:
            while not self._samples or self._samples[-1][0] < t:
                if self.last_error is not None and self._samples and self._samples[-1][0] < t - self.max_gap_s:
                    # The encoder is failing and even a sample now would leave a gap: do not
                    # wait per frame (the camera's queue would fill meanwhile).
                    raise self._stalled(t)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._stalled(t)
                self._cond.wait(remaining)
            buf = self._samples
            t_old = buf[0][0]
            if t < t_old:
                raise EncoderGapError(
                    f"{self._name}: exposure at t={t:.4f} is {t_old - t:.3f} s before the oldest encoder sample kept "
                    f"(the frame came late, or latency_s={self.latency_s:g} / buffer_s are wrong): frame skipped"
                )
            # Frames are recent: search from the newest end.
            i = len(buf) - 1
            while buf[i][0] > t:
                i -= 1
            t0, c0, h0 = buf[i]
            k = min(i + 1, len(buf) - 1)
            j = k
            while j > 0 and buf[j - 1][0] >= buf[k][0] - rate_span_s:
                j -= 1
            (ta, ca, _), (tb, cb, _) = buf[j], buf[k]
            rate = (cb - ca) / (tb - ta) if tb > ta else 0.0
            if i + 1 == len(buf):  # exactly on the newest sample
                return int(c0), rate, h0
            t1, c1, h1 = buf[i + 1]
        gap = t1 - t0
        if gap > self.max_gap_s:
            raise EncoderGapError(
                f"{self._name}: no encoder sample for {gap:.3f} s around the exposure at t={t:.4f} "
                f"(more than {self.max_gap_s:.3f} s cannot be interpolated): frame skipped"
            )
        # Integer base plus a rounded fraction: counts beyond 2**53 keep their last digits.
        return int(c0) + round((c1 - c0) * (t - t0) / gap), rate, max(h0, h1)

    def _stalled(self, t: float) -> EncoderStalledError:
        newest = self._samples[-1][0] if self._samples else None
        age = "no sample kept" if newest is None else f"the newest sample is {t - newest:.3f} s older"
        why = (
            f"last error: {self.last_error}"
            if self.last_error is not None
            else ("sampler not running" if not self.sampler_running else "no new sample")
        )
        return EncoderStalledError(
            f"{self._name}: encoder stalled: no count at or after the exposure at t={t:.4f} within "
            f"{self.max_wait_s:.3f} s ({age}; {why})"
        )

    def read(self) -> Frame:
        if not self._connected:
            raise CameraNotConnectedError(f"camera with {self._name}: read() before connect()")
        frame = self.camera.read()
        if not math.isfinite(frame.timestamp_error_s):
            raise ExposureUnknownError(
                f"frame {frame.index}: exposure time not known (it waited in the camera's queue, or the camera's "
                "frame rate is still being learnt after a (re)connect): no belt count, frame skipped"
            )
        t_exp = frame.timestamp - self.latency_s
        frame.encoder, rate, sample_err = self._count_and_rate(t_exp)
        # From here on the frame's time is its exposure, as a latched camera's is: the belt
        # model of the arms pairs it with the count.
        frame.timestamp = t_exp
        frame.extra["encoder_t"] = t_exp
        # A loaded computer stretches the counter's round trips: their halves add to the error.
        frame.extra["count_error"] = abs(rate) * (frame.timestamp_error_s + sample_err)
        self._count_partner(frame)
        return frame

    def _count_partner(self, frame: Frame) -> None:
        """A fluorescence exposure that came with the frame without a count (a recording with the
        channel, replayed against a live counter) gets its own from the same samples, at its own
        exposure: alternate frames are registered by the belt's travel between the two. When its
        count cannot be had it stays without one, and the line drops the pair as uncounted."""
        from dataclasses import replace

        from scallop.vision.channels import ChannelExposure

        ex = frame.extra.get("fluorescence")
        if not isinstance(ex, ChannelExposure) or ex.encoder is not None:
            return
        t = ex.timestamp - self.latency_s
        try:
            count = self._count_and_rate(t)[0]
        except (EncoderGapError, EncoderStalledError):
            count = None
        frame.extra["fluorescence"] = replace(ex, timestamp=t, encoder=count)
