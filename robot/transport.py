"""Modbus TCP and RTU to the arm, through pymodbus 3.16's synchronous clients.

Only two operations are used (see docs/robot-interface.md): read holding registers
(function 3) and write multiple registers (function 16). Every failure becomes a typed error
that names the link and the registers:

* an exception response -> :class:`ModbusExceptionError` with the code and its name;
* no answer in time -> :class:`RobotTimeoutError`; the socket is closed so that a late
  answer can never be taken for the answer to the next request;
* refused or dropped -> :class:`RobotDisconnectedError`. Reconnecting is attempted on the
  next request, no sooner than the back-off allows: doubling from ``reconnect_min_s`` to
  ``reconnect_max_s``, each wait shortened by up to a quarter at random (seeded per arm) so
  several arms do not retry in step. A TCP connect alone does not reset it: a server that
  accepts connections but does not answer would be hammered. Only :meth:`confirm`, called by
  the arm client once the whole connect handshake has gone through, resets it.

Nothing is retried here: the library's own retries are off (``retries=0``), because a write
that may or may not have reached the arm must be resolved by reading the arm back
(:mod:`scallop.robot.arm`), never by sending it again blindly.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
import zlib
from collections.abc import Callable, Sequence

from scallop.robot.clock import Clock, SystemClock
from scallop.robot.config import TransportConfig
from scallop.robot.errors import (
    ModbusExceptionError,
    RobotCommError,
    RobotDisconnectedError,
    RobotTimeoutError,
)

_plog = logging.getLogger("pymodbus")
if _plog.level == logging.NOTSET:
    # pymodbus logs every refused connection and timeout at ERROR; we raise typed errors for
    # those instead, so keep its log quiet unless the application configured it.
    _plog.setLevel(logging.CRITICAL)


class ModbusTransport:
    """One Modbus link (TCP or RTU) to one arm. Thread-safe: requests are serialised."""

    def __init__(
        self,
        config: TransportConfig,
        clock: Clock | None = None,
        name: str = "arm",
        trace_packet: Callable[[bool, bytes], bytes] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.name = name
        self._trace = trace_packet
        self._client = None
        self._lock = threading.RLock()
        self._delay = 0.0
        self._next_attempt = -float("inf")
        self._rng = random.Random(zlib.crc32(name.encode()))
        self.requests = 0
        self.failures = 0
        self.attempts = 0  # connection attempts (refused, or accepted)
        self.reconnects = 0  # connections opened
        self.last_rtt_s = 0.0
        self.last_error = ""  # the last failure, without the link's name (for alarms)

    # ------------------------------------------------------------------ connection
    @property
    def where(self) -> str:
        return f"arm {self.name!r} ({self.config.describe()})"

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    def _make_client(self):
        from pymodbus.client import ModbusSerialClient, ModbusTcpClient
        from pymodbus.framer import FramerType

        c = self.config
        kw = {"timeout": c.timeout_s, "retries": 0}
        if self._trace is not None:
            kw["trace_packet"] = self._trace
        if c.kind == "tcp":
            return ModbusTcpClient(c.host, port=c.port, framer=FramerType.SOCKET, **kw)
        return ModbusSerialClient(
            c.serial_port,
            framer=FramerType.RTU,
            baudrate=c.baudrate,
            parity=c.parity,
            stopbits=c.stopbits,
            bytesize=8,
            **kw,
        )

    def connect(self) -> None:
        """Open the link, or raise :class:`RobotDisconnectedError` (also while backing off)."""
        with self._lock:
            if self.connected:
                return
            now = self.clock.now()
            if now < self._next_attempt:
                raise RobotDisconnectedError(
                    f"{self.where}: not connected; next attempt in {self._next_attempt - now:.2f} s (back-off)"
                )
            if self._client is None:
                self._client = self._make_client()
            self.attempts += 1
            ok = False
            try:
                ok = bool(self._client.connect())
            except Exception:  # pyserial raises undocumented exception types for bad ports
                ok = False
            # The next attempt waits, success or not, until confirm(): the handshake may fail.
            wait = self._back_off()
            if not ok:
                self._client.close()
                self.last_error = "cannot connect (refused or no such port)"
                raise RobotDisconnectedError(f"{self.where}: {self.last_error}; retrying in {wait:.2f} s")
            sock = getattr(self._client, "socket", None)
            if isinstance(sock, socket.socket):
                # Small request/answer pairs: do not let Nagle hold a request back.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.reconnects += 1

    def _back_off(self) -> float:
        c = self.config
        self._delay = min(c.reconnect_max_s, max(c.reconnect_min_s, 2 * self._delay))
        wait = self._delay * (1.0 - 0.25 * self._rng.random())
        self._next_attempt = self.clock.now() + wait
        return wait

    def confirm(self) -> None:
        """The peer answered the whole connect handshake: the next reconnect may be at once."""
        with self._lock:
            self._delay = 0.0
            self._next_attempt = -float("inf")

    def retry_in(self) -> float:
        """Seconds until the next connection attempt is allowed (0 when it is now)."""
        return max(0.0, self._next_attempt - self.clock.now())

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()

    def __enter__(self) -> ModbusTransport:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ requests
    def read(self, address: int, count: int) -> list[int]:
        """Read ``count`` holding registers from ``address`` (function 3)."""
        rsp = self._execute(
            3, address, count, lambda c: c.read_holding_registers(address, count=count, device_id=self.config.device_id)
        )
        regs = list(getattr(rsp, "registers", []) or [])
        if len(regs) < count:
            self.close()
            raise RobotCommError(f"{self.where}: asked for {count} registers at {address}, got {len(regs)}")
        return regs[:count]

    def write(self, address: int, values: Sequence[int]) -> None:
        """Write registers from ``address`` in one request (function 16)."""
        vals = [int(v) for v in values]
        for v in vals:
            if not 0 <= v <= 0xFFFF:
                raise ValueError(f"register value {v} is not a 16-bit word")
        self._execute(
            16, address, len(vals), lambda c: c.write_registers(address, vals, device_id=self.config.device_id)
        )

    def _execute(self, function: int, address: int, count: int, call):
        from pymodbus.exceptions import (
            ConnectionException,
            ModbusException,
            ModbusIOException,
        )

        what = f"{'read' if function == 3 else 'write'} of registers {address}..{address + count - 1}"
        with self._lock:
            if not self.connected:
                self.connect()
            self.requests += 1
            t0 = time.perf_counter()
            try:
                rsp = call(self._client)
            except ConnectionException:
                raise self._failed(RobotDisconnectedError, f"connection lost during {what}") from None
            except ModbusIOException:
                raise self._failed(
                    RobotTimeoutError, f"no answer within {self.config.timeout_s:g} s to {what}"
                ) from None
            except ModbusException as e:
                raise self._failed(RobotCommError, f"{what} failed: {e}") from None
            except OSError as e:
                raise self._failed(RobotDisconnectedError, f"{what} failed: {e}") from None
            self.last_rtt_s = time.perf_counter() - t0
            if rsp.isError():
                self.failures += 1
                code = getattr(rsp, "exception_code", 0)
                err = ModbusExceptionError(code, function, address, count, self.where)
                self.last_error = str(err).removeprefix(f"{self.where}: ")
                raise err
            return rsp

    def _failed(self, kind: type[RobotCommError], why: str) -> RobotCommError:
        """Count a failed request, close the link (a late answer must never be taken for the
        next one) and make its error."""
        self.failures += 1
        self._drop()
        self.last_error = why
        return kind(f"{self.where}: {why}")

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
