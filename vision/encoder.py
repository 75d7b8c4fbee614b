"""The belt encoder for cameras that have no hardware latch.

Tracking and pick timing need the belt encoder count *at each exposure*. The simulator's
frames carry it; a plain OpenCV camera does not. Here a sampling thread reads the encoder
counter (a PLC register or an encoder interface, over Modbus TCP) many times a second into a
short history, and each frame gets the count interpolated at its exposure time::

    enc = ModbusEncoder(ModbusEncoderConfig(host="192.168.10.5", address=100, sample_hz=500))
    with EncodedCamera(OpenCVCamera(OpenCVCameraConfig(source="0")), enc) as cam:
        frame = cam.read()          # frame.encoder: belt count at the exposure

``Encoder`` is the base class of every encoder backend (one method that matters:
``read() -> int``, an unbounded count with the counter's roll-over already undone).

Every failure is a :class:`~scallop.vision.camera.CameraError`, so the line runtime treats it
like any camera failure: a stalled encoder (:class:`EncoderStalledError`) is a critical
camera alarm that clears when counts come back, and a single frame that cannot be given a
count (:class:`EncoderGapError`, also a :class:`CorruptFrameError`) is skipped with a warning.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from scallop.vision.camera import (
    Camera,
    CameraError,
    CameraNotConnectedError,
    CameraNotFoundError,
    CorruptFrameError,
    Frame,
)

log = logging.getLogger("scallop.encoder")

_plog = logging.getLogger("pymodbus")
if _plog.level == logging.NOTSET:
    # pymodbus logs every refused connection and timeout at ERROR; we raise typed errors for
    # those instead, so keep its log quiet unless the application configured it.
    _plog.setLevel(logging.CRITICAL)


# ============================================================================ errors
class EncoderError(CameraError):
    """Base of every encoder failure; the message names the encoder and what went wrong."""


class EncoderNotFoundError(EncoderError, CameraNotFoundError):
    """The encoder (PLC, interface) cannot be reached: refused, unreachable, wrong host."""


class EncoderNotConnectedError(EncoderError, CameraNotConnectedError):
    """read() on an encoder that was never connected or was disconnected."""


class EncoderCommError(EncoderError):
    """A request failed: connection lost, no answer, or an exception response."""


class EncoderTimeoutError(EncoderCommError):
    """No answer within ``timeout_s``."""


class EncoderModbusError(EncoderCommError):
    """The device answered with a Modbus exception (wrong address, wrong function, …)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class EncoderStalledError(EncoderError):
    """No encoder sample came at or after a frame's exposure within the wait: the encoder
    stopped answering. The line raises a critical camera alarm."""


class EncoderGapError(EncoderError, CorruptFrameError):
    """This one frame cannot be given a count: its exposure lies before the oldest sample
    kept, or between two samples too far apart to interpolate. The frame is skipped."""


# ============================================================================ configs
def _check(name: str, value, lo, hi) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}={value!r}: expected a number")
    if not (lo <= value <= hi):
        # A TOML "0" arrives as 0.0 in a float field; show it as the user wrote it.
        shown = int(value) if isinstance(value, float) and value.is_integer() else value
        raise ValueError(f"{name}={shown!r} is out of range: allowed {lo}..{hi}")


def _choice(name: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed: choose one of {', '.join(map(repr, allowed))}")


@dataclass(kw_only=True)
class EncoderConfig:
    """How an :class:`EncodedCamera` samples any encoder.

    sample_hz: encoder reads per second (wall time). Between two reads the count is
               interpolated, so the belt must run nearly steadily over 1/sample_hz; a
               16-bit counter must also move less than 32768 counts between two reads.
    latency_s: the frame's timestamp minus its exposure (the camera stamps a frame this
               long after the sensor was exposed; negative if it stamps before).
    buffer_s:  how much sample history is kept (frames older than this get no count).
    """

    sample_hz: float = 200.0
    latency_s: float = 0.0
    buffer_s: float = 2.0

    def __post_init__(self) -> None:
        _check("sample_hz", self.sample_hz, 10, 5000)
        _check("latency_s", self.latency_s, -0.5, 1.0)
        _check("buffer_s", self.buffer_s, 0.1, 60.0)
        if self.buffer_s <= abs(self.latency_s) + 2.0 / self.sample_hz:
            raise ValueError(
                f"buffer_s={self.buffer_s!r} must be longer than |latency_s| plus two samples "
                f"({abs(self.latency_s) + 2.0 / self.sample_hz:.3f} s)"
            )


REGISTER_KINDS = ("input", "holding")
WORD_ORDERS = ("big", "little")


@dataclass(kw_only=True)
class ModbusEncoderConfig(EncoderConfig):
    """A counter in a PLC or encoder interface, read over Modbus TCP.

    host, port:  the device (port 502 is Modbus TCP's standard port).
    device_id:   Modbus unit id (many TCP devices ignore it; gateways to RS-485 need it).
    address:     first register of the counter (0-based protocol address, as sent on the
                 wire: register "40101" in 1-based PLC notation is holding address 100).
    register:    "input" (function 4, read-only counters) or "holding" (function 3).
    words:       1 = 16-bit counter, 2 = 32-bit counter in two consecutive registers.
    word_order:  32-bit only: "big" = high word at ``address``, "little" = low word first.
    signed:      the counter is two's complement (only matters for the first value read:
                 roll-over is undone either way).
    timeout_s:   wait this long for each answer.
    """

    host: str = ""
    port: int = 502
    device_id: int = 1
    address: int = 0
    register: str = "holding"
    words: int = 2
    word_order: str = "big"
    signed: bool = False
    timeout_s: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.host, str) or not self.host.strip():
            raise ValueError("host is empty: give the PLC's or encoder interface's IP address or name")
        _check("port", self.port, 1, 65535)
        _check("device_id", self.device_id, 0, 255)
        _check("address", self.address, 0, 65535)
        _choice("register", self.register, REGISTER_KINDS)
        _choice("words", self.words, (1, 2))
        _choice("word_order", self.word_order, WORD_ORDERS)
        if not isinstance(self.signed, bool):
            raise ValueError(f"signed={self.signed!r}: expected true or false")
        if self.address + self.words - 1 > 65535:
            raise ValueError(f"address={self.address} with words=2 runs past register 65535")
        _check("timeout_s", self.timeout_s, 0.01, 5.0)

    @property
    def bits(self) -> int:
        return 16 * self.words

    def describe(self) -> str:
        last = f"..{self.address + 1}" if self.words == 2 else ""
        return f"modbus {self.host}:{self.port} device {self.device_id} {self.register} register {self.address}{last}"


# ============================================================================ base class
class Encoder(abc.ABC):
    """Base class of every encoder backend."""

    config: EncoderConfig

    def __init__(self) -> None:
        self._connected = False

    @property
    def is_connected(self) -> bool:
        return self._connected

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """What the encoder is, for messages."""

    @abc.abstractmethod
    def connect(self) -> None:
        """Open the link and read once; raises EncoderNotFoundError / EncoderCommError."""

    @abc.abstractmethod
    def read(self) -> int:
        """The count now, roll-over undone (unbounded int); raises EncoderError subclasses."""

    @abc.abstractmethod
    def disconnect(self) -> None:
        """Release the link; safe to call twice."""

    def __enter__(self) -> Encoder:
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()


class CounterUnwrapper:
    """Turns a ``bits``-wide counter that rolls over into an unbounded count.

    Consecutive raw values are taken to be less than half the range apart, whichever way
    the counter runs (a belt reversing is fine; a 16-bit counter moving 32768 counts or
    more between two reads is not, and cannot be told apart).
    """

    def __init__(self, bits: int, signed: bool = False) -> None:
        if bits not in (16, 32):
            raise ValueError(f"bits={bits}: allowed 16 or 32")
        self.bits = bits
        self.signed = signed
        self._mod = 1 << bits
        self._half = 1 << (bits - 1)
        self._raw: int | None = None
        self.value: int | None = None

    def update(self, raw: int) -> int:
        raw = int(raw) % self._mod
        if self._raw is None:
            self.value = raw - self._mod if (self.signed and raw >= self._half) else raw
        else:
            self.value += (raw - self._raw + self._half) % self._mod - self._half
        self._raw = raw
        return self.value

    def reset(self) -> None:
        self._raw = None
        self.value = None


# ============================================================================ Modbus
_EXC_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    10: "gateway path unavailable",
    11: "gateway target did not respond",
}


class ModbusEncoder(Encoder):
    """A counter register read over Modbus TCP (pymodbus synchronous client).

    Thread-safe (requests are serialised). After a failed request the socket is closed, so a
    late answer can never be taken for the next one, and the next ``read()`` reconnects.
    """

    def __init__(self, config: ModbusEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self._client = None
        self._lock = threading.Lock()
        self._unwrap = CounterUnwrapper(config.bits, config.signed)
        self.requests = 0
        self.failures = 0

    @property
    def name(self) -> str:
        return self.config.describe()

    def _make_client(self):
        from pymodbus.client import ModbusTcpClient
        from pymodbus.framer import FramerType

        c = self.config
        return ModbusTcpClient(c.host, port=c.port, framer=FramerType.SOCKET, timeout=c.timeout_s, retries=0)

    def _open(self) -> None:
        if self._client is not None and self._client.connected:
            return
        if self._client is None:
            self._client = self._make_client()
        try:
            ok = bool(self._client.connect())
        except Exception:  # name resolution and socket errors surface in several types
            ok = False
        if not ok:
            self._client.close()
            raise EncoderNotFoundError(f"encoder {self.name}: cannot connect (refused, unreachable or no such host)")

    def connect(self) -> None:
        with self._lock:
            self._open()
            self._connected = True
        try:
            self.read()
        except EncoderError:
            self.disconnect()
            raise

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()

    def read(self) -> int:
        from pymodbus.exceptions import (
            ConnectionException,
            ModbusException,
            ModbusIOException,
        )

        c = self.config
        with self._lock:
            if not self._connected:
                raise EncoderNotConnectedError(f"encoder {self.name}: read() before connect()")
            try:
                self._open()
            except EncoderNotFoundError:
                self.failures += 1
                raise
            fn = self._client.read_input_registers if c.register == "input" else self._client.read_holding_registers
            self.requests += 1
            try:
                rsp = fn(c.address, count=c.words, device_id=c.device_id)
            except ConnectionException:
                self.failures += 1
                self._drop()
                raise EncoderCommError(f"encoder {self.name}: connection lost during the read") from None
            except ModbusIOException:
                self.failures += 1
                self._drop()
                raise EncoderTimeoutError(f"encoder {self.name}: no answer within {c.timeout_s:g} s") from None
            except (ModbusException, OSError) as e:
                self.failures += 1
                self._drop()
                raise EncoderCommError(f"encoder {self.name}: read failed: {e}") from None
            if rsp.isError():
                self.failures += 1
                code = int(getattr(rsp, "exception_code", 0) or 0)
                fc = 4 if c.register == "input" else 3
                raise EncoderModbusError(
                    f"encoder {self.name}: device answered exception {code} ({_EXC_NAMES.get(code, 'unknown')}) "
                    f"to function {fc}; check address, register kind and device_id",
                    code,
                )
            regs = list(getattr(rsp, "registers", []) or [])
            if len(regs) < c.words:
                self.failures += 1
                self._drop()
                raise EncoderCommError(f"encoder {self.name}: asked for {c.words} registers, got {len(regs)}")
            if c.words == 1:
                raw = regs[0] & 0xFFFF
            else:
                hi, lo = (regs[0], regs[1]) if c.word_order == "big" else (regs[1], regs[0])
                raw = ((hi & 0xFFFF) << 16) | (lo & 0xFFFF)
            return self._unwrap.update(raw)

    def disconnect(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
            self._connected = False
            # A counter read after a reconnect may have rolled over any number of times.
            self._unwrap.reset()


# ============================================================================ the camera
class EncodedCamera(Camera):
    """Any :class:`Camera` plus an :class:`Encoder`: frames get ``encoder`` = the count at
    their exposure (``frame.timestamp - latency_s``), interpolated linearly between the
    samples just before and just after it.

    A thread samples the encoder at ``sample_hz`` into a ring buffer of
    ``(clock time, count)``; each sample is stamped with the middle of its request. ``read()``
    waits at most ``timeout_s + 2/sample_hz`` (wall time) for a sample at or after the
    exposure. ``clock`` must be the clock that stamps the wrapped camera's frames; the
    thread's pacing is wall time. Each frame also gets ``extra["encoder_t"]``, the clock time
    its count belongs to.

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
        self._samples: deque[tuple[float, int]] = deque(maxlen=math.ceil(cfg.buffer_s * self.sample_hz) + 2)
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
                self._samples.append((t, count))
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
            return np.array(self._samples, dtype=np.float64).reshape(-1, 2)

    def newest_sample(self) -> tuple[float, int] | None:
        with self._cond:
            return self._samples[-1] if self._samples else None

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
        deadline = time.monotonic() + self.max_wait_s
        with self._cond:
            while not self._samples or self._samples[-1][0] < t:
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
            t0, c0 = buf[i]
            if t0 == t:
                return int(c0)
            t1, c1 = buf[i + 1]
        gap = t1 - t0
        if gap > self.max_gap_s:
            raise EncoderGapError(
                f"{self._name}: no encoder sample for {gap:.3f} s around the exposure at t={t:.4f} "
                f"(more than {self.max_gap_s:.3f} s cannot be interpolated): frame skipped"
            )
        # Integer base plus a rounded fraction: counts beyond 2**53 keep their last digits.
        return int(c0) + round((c1 - c0) * (t - t0) / gap)

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
            raise EncoderNotConnectedError(f"{self._name}: read() before connect()")
        frame = self.camera.read()
        t_exp = frame.timestamp - self.latency_s
        frame.encoder = self.count_at(t_exp)
        frame.extra["encoder_t"] = t_exp
        return frame
