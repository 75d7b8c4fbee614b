"""The belt: where a scallop on the conveyor is, now and later.

Everything about the conveyor lives here and everything else asks it:

* :class:`Belt` — encoder counts ↔ belt millimetres. The encoder's direction is applied in
  one place, :meth:`Belt.counts`: a raw count (as the counter or the camera's latch gives it)
  becomes a *belt count* that grows as the belt carries a scallop downstream (+x of the belt
  frame). Every later step — tracking, planning, the record — works in belt counts.
* :class:`ConveyorTracker` — belt count ↔ time: the belt's speed and position from the
  latched (time, count) pairs, so a target's position is known at any later time.
* Encoder sources: :class:`Encoder` is the base of every counter backend (``read() -> int``,
  roll-over already undone, see :class:`CounterUnwrapper`); :class:`ModbusEncoder` reads a PLC
  register or encoder interface over Modbus TCP. Cameras with a hardware latch (and the
  simulator's) deliver the count with each frame instead.

The belt→robot mapping of each arm is :attr:`scallop.robot.config.ArmConfig.robot_from_belt`
(a :class:`~scallop.robot.config.Pose`): belt-frame millimetres into that arm's base frame.

Every encoder failure is an :class:`EncoderError` (a :class:`~scallop.errors.DeviceError`)
whose message names the encoder and what went wrong.
"""

from __future__ import annotations

import abc
import logging
import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from scallop.errors import DeviceError, check_choice, check_number

if TYPE_CHECKING:
    from scallop.robot.planning import PickTarget

log = logging.getLogger("scallop.encoder")

_plog = logging.getLogger("pymodbus")
if _plog.level == logging.NOTSET:
    # pymodbus logs every refused connection and timeout at ERROR; we raise typed errors for
    # those instead, so keep its log quiet unless the application configured it.
    _plog.setLevel(logging.CRITICAL)


# ============================================================================ the belt
@dataclass(frozen=True)
class Belt:
    """The encoder's scale and direction, from the line calibration (or the simulator's
    encoder configuration).

    counts_per_mm: encoder counts per millimetre of belt travel (> 0).
    direction: +1 when raw counts rise as the belt moves downstream, -1 when they fall.
    """

    counts_per_mm: float
    direction: int

    def __post_init__(self) -> None:
        if not (isinstance(self.counts_per_mm, (int, float)) and math.isfinite(self.counts_per_mm)):
            raise ValueError(f"counts_per_mm={self.counts_per_mm!r} must be a finite number")
        if self.counts_per_mm <= 0:
            raise ValueError(f"counts_per_mm={self.counts_per_mm!r} must be positive")
        if self.direction not in (1, -1):
            raise ValueError(f"direction={self.direction!r} must be +1 or -1")

    @property
    def mm_per_count(self) -> float:
        return 1.0 / self.counts_per_mm

    def counts(self, raw: int) -> int:
        """A raw encoder count as a belt count (rising downstream): the only place the
        encoder's direction is applied."""
        return self.direction * int(raw)

    def mm(self, counts: float) -> float:
        """Belt travel (mm, along +x, up to a constant) of a belt count."""
        return counts / self.counts_per_mm

    def travel_mm(self, raw: int) -> float:
        """Belt travel (mm) of a raw encoder count."""
        return self.mm(self.counts(raw))


# ============================================================================ belt motion
class ConveyorTracker:
    """Belt position from belt counts (:meth:`Belt.counts`).

    ``update(t, count)`` with every latched (time, count) pair (each frame gives one); the
    speed is the least-squares slope over the last ``history_s`` seconds, and positions are
    extrapolated from the newest sample. Counts are plain integers (unwrap a hardware
    counter before feeding it). A target's belt position at time ``t`` is its position at
    exposure plus the travel since its encoder count: ``xy + [(count(t) - encoder) * mm_per_count, 0]``.
    """

    def __init__(
        self,
        mm_per_count: float,
        history_s: float = 2.0,
        nominal_speed_mm_s: float | None = None,
        stale_after_s: float = 1.0,
        stale_intervals: float = 4.0,
    ) -> None:
        if not (mm_per_count > 0 and math.isfinite(mm_per_count)):
            raise ValueError(f"mm_per_count={mm_per_count!r} must be a positive number")
        if not (stale_after_s > 0 and stale_intervals > 0):
            raise ValueError(
                f"stale_after_s={stale_after_s!r} and stale_intervals={stale_intervals!r} must be positive"
            )
        self.mm_per_count = float(mm_per_count)
        self.history_s = float(history_s)
        self.stale_after_s = float(stale_after_s)
        self.stale_intervals = float(stale_intervals)
        self._samples: deque[tuple[float, int]] = deque()
        self._intervals: deque[float] = deque(maxlen=9)
        self._nominal = nominal_speed_mm_s
        self._slope: float | None = None  # counts per second

    def update(self, t: float, count: int) -> None:
        if self._samples and t < self._samples[-1][0]:
            raise ValueError(f"encoder sample at t={t} is older than the last one ({self._samples[-1][0]})")
        if self._samples:
            self._intervals.append(float(t) - self._samples[-1][0])
        self._samples.append((float(t), int(count)))
        while len(self._samples) > 2 and self._samples[0][0] < t - self.history_s:
            self._samples.popleft()
        self._slope = None

    @property
    def ready(self) -> bool:
        return bool(self._samples) and (len(self._samples) >= 2 or self._nominal is not None)

    def _counts_per_s(self) -> float:
        if self._slope is None:
            if len(self._samples) >= 2:
                ts = np.array([s[0] for s in self._samples])
                cs = np.array([s[1] for s in self._samples], dtype=np.float64)
                dt = ts - ts.mean()
                den = float(dt @ dt)
                self._slope = float(dt @ (cs - cs.mean()) / den) if den > 0 else 0.0
            elif self._nominal is not None:
                self._slope = self._nominal / self.mm_per_count
            else:
                raise ValueError("conveyor tracker has no encoder samples yet")
        return self._slope

    @property
    def last_sample_t(self) -> float:
        return self._samples[-1][0] if self._samples else -math.inf

    def fresh(self, t: float) -> bool:
        """Whether positions at ``t`` still rest on a recent encoder sample: the newest is no
        older than ``stale_intervals`` usual sample intervals (and at least ``stale_after_s``).
        Past that (camera stalled, trigger lost) the belt may have stopped or changed speed
        unseen, and a grip planned on the extrapolation could land anywhere on the scallop."""
        if not self._samples:
            return False
        usual = float(np.median(self._intervals)) if self._intervals else 0.0
        return t - self._samples[-1][0] <= max(self.stale_after_s, self.stale_intervals * usual)

    @property
    def speed_mm_s(self) -> float:
        return self._counts_per_s() * self.mm_per_count

    def count_at(self, t: float) -> float:
        """Extrapolated encoder count at controller time ``t``."""
        if not self._samples:
            raise ValueError("conveyor tracker has no encoder samples yet")
        t0, c0 = self._samples[-1]
        return c0 + self._counts_per_s() * (t - t0)

    def position_at(self, target: PickTarget, t: float) -> np.ndarray:
        """(2,) belt-frame position of ``target`` at time ``t``."""
        dx = (self.count_at(t) - target.encoder) * self.mm_per_count
        return target.xy_mm + np.array([dx, 0.0])

    def time_at_x(self, target: PickTarget, x_mm: float) -> float:
        """When ``target`` is at belt x ``x_mm`` (±inf when the belt stands still)."""
        t0, _ = self._samples[-1]
        x0 = float(self.position_at(target, t0)[0])
        v = self.speed_mm_s
        if abs(v) < 1e-9:
            return -math.inf if x0 >= x_mm else math.inf
        return t0 + (x_mm - x0) / v


# ============================================================================ errors
class EncoderError(DeviceError):
    """Base of every encoder failure; the message names the encoder and what went wrong."""


class EncoderNotFoundError(EncoderError):
    """The encoder (PLC, interface) cannot be reached: refused, unreachable, wrong host."""


class EncoderNotConnectedError(EncoderError):
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


class EncoderGapError(EncoderError):
    """This one frame cannot be given a count: its exposure lies before the oldest sample
    kept, or between two samples too far apart to interpolate. The frame is skipped."""


# ============================================================================ configs
@dataclass(kw_only=True)
class EncoderConfig:
    """How an :class:`EncodedCamera` samples any encoder.

    sample_hz: encoder reads per second (wall time). Between two reads the count is
               interpolated, so the belt must run nearly steadily over 1/sample_hz; a
               16-bit counter must also move less than 32768 counts between two reads.
    latency_s: the frame's timestamp minus its exposure: the camera's pipeline delay
               (exposure, read-out, transfer), positive now that frames are stamped after
               they are taken from the driver (scallop.vision.stamps).
    buffer_s:  how much sample history is kept (frames older than this get no count).
    """

    sample_hz: float = 200.0
    latency_s: float = 0.0
    buffer_s: float = 2.0

    def __post_init__(self) -> None:
        check_number("sample_hz", self.sample_hz, 10, 5000)
        check_number("latency_s", self.latency_s, -0.5, 1.0)
        check_number("buffer_s", self.buffer_s, 0.1, 60.0)
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
        check_number("port", self.port, 1, 65535, integer=True)
        check_number("device_id", self.device_id, 0, 255, integer=True)
        check_number("address", self.address, 0, 65535, integer=True)
        check_choice("register", self.register, REGISTER_KINDS)
        check_choice("words", self.words, (1, 2))
        check_choice("word_order", self.word_order, WORD_ORDERS)
        if not isinstance(self.signed, bool):
            raise ValueError(f"signed={self.signed!r}: expected true or false")
        if self.address + self.words - 1 > 65535:
            raise ValueError(f"address={self.address} with words=2 runs past register 65535")
        check_number("timeout_s", self.timeout_s, 0.01, 5.0)

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
