"""A simulated device's Modbus server (TCP, or RTU framing on a serial port / ``socket://``) in
a thread of its own, with faults of the link: the simulated arm and the simulated line PLC are
both served by it.

A subclass holds its registers as ``self.regs`` (protocol addresses ``self._lo`` onwards), a
``self._lock``, and answers each request in :meth:`ModbusSimServer._serve` (under the lock).
Faults of the link: ``slow_replies``, ``exception_replies``, ``drop_connections``, and the
server going away and coming back on the same port (``go_offline`` / ``come_back``).
"""

from __future__ import annotations

import asyncio
import threading


class ModbusSimServer:
    """Base of a simulated Modbus device; see the module docstring."""

    regs: list[int]
    _lo: int
    _lock: threading.RLock

    def _init_server(self, name: str, kind: str, host: str, port: int, serial_port: str, baudrate: int) -> None:
        if kind not in ("tcp", "rtu"):
            raise ValueError(f"kind={kind!r}: choose 'tcp' or 'rtu'")
        self.server_name = name
        self.kind, self.host, self._port, self.serial_port, self.baudrate = kind, host, port, serial_port, baudrate
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self.reply_delay_s = 0.0
        self._exc_code = 0
        self._exc_left = 0
        self.requests = 0

    # ================================================================== lifecycle
    def start(self):
        if self._thread is not None:
            return self
        ready = threading.Event()
        err: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)

            async def main() -> None:
                self._server = self._make_server()
                await self._server.serve_forever(background=True)

            try:
                loop.run_until_complete(main())
            except BaseException as e:  # reported to the caller of start()
                err.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._server.shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name=self.server_name, daemon=True)
        self._thread.start()
        ready.wait(10)
        if err:
            self._thread.join(5)
            self._thread = None
            raise RuntimeError(f"{self.server_name} could not start: {err[0]}") from err[0]
        return self

    def _make_server(self):
        from pymodbus.framer import FramerType
        from pymodbus.server import ModbusSerialServer, ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        dev = SimDevice(
            id=0,
            simdata=[SimData(self._lo, count=len(self.regs), values=0, datatype=DataType.REGISTERS)],
            action=self._action,
        )
        if self.kind == "tcp":
            return ModbusTcpServer(dev, address=(self.host, self._port))
        url = self.serial_port or f"socket://{self.host}:{self._port}"
        return ModbusSerialServer(dev, port=url, framer=FramerType.RTU, baudrate=self.baudrate)

    @property
    def port(self) -> int:
        """The TCP port actually listened on (useful with port=0)."""
        srv = self._server
        tr = getattr(srv, "transport", None)
        socks = getattr(tr, "sockets", None)
        if socks:
            return int(socks[0].getsockname()[1])
        return self._port

    def transport_config(self, timeout_s: float = 0.5):
        """A TransportConfig that reaches this device."""
        from scallop.robot.config import TransportConfig

        if self.kind == "tcp":
            return TransportConfig(
                kind="tcp",
                host=self.host,
                port=self.port,
                timeout_s=timeout_s,
                reconnect_min_s=0.0,
                reconnect_max_s=1.0,
            )
        url = self.serial_port or f"socket://{self.host}:{self.port}"
        return TransportConfig(
            kind="rtu",
            serial_port=url,
            baudrate=self.baudrate,
            timeout_s=timeout_s,
            reconnect_min_s=0.0,
            reconnect_max_s=1.0,
        )

    def close(self) -> None:
        loop, th = self._loop, self._thread
        if th is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        th.join(10)
        self._thread = None

    def go_offline(self) -> None:
        """The server goes away (the device powered off, the cable pulled): every connection
        drops and nothing answers. The device's state stays; :meth:`come_back` serves it again
        on the same port."""
        if self._thread is not None:
            # With port=0 the system chose the port: a client reconnects to that one.
            self._port = self.port
        self.close()

    def come_back(self):
        """Serve again after :meth:`go_offline`, on the port served before."""
        return self.start()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ================================================================== requests
    async def _action(
        self,
        fc: int,
        start: int,
        address: int,
        count: int,
        current: list[int],
        set_values: list[int] | list[bool] | None,
    ):
        from pymodbus.constants import ExcCodes

        if self.reply_delay_s > 0:
            await asyncio.sleep(self.reply_delay_s)
        with self._lock:
            self.requests += 1
            if self._exc_left > 0:
                self._exc_left -= 1
                return ExcCodes(self._exc_code)
            is_write = fc in (5, 6, 15, 16, 22, 23) and set_values is not None
            return self._serve(is_write, start, address, count, current, set_values)

    def _serve(self, is_write: bool, start: int, address: int, count: int, current: list[int], set_values):
        """Answer one request under the lock: update ``current`` (and ``set_values`` for a
        write) from the device's registers; return None, or an ``ExcCodes`` to refuse it."""
        raise NotImplementedError

    def _drop_all(self) -> None:
        srv = self._server
        for conn in list(getattr(srv, "active_connections", {}).values()):
            conn.close()

    # ================================================================== faults of the link
    def slow_replies(self, delay_s: float) -> None:
        """Delay every reply by ``delay_s`` of wall time (0 to stop)."""
        self.reply_delay_s = float(delay_s)

    def exception_replies(self, code: int, n: int = 1) -> None:
        """Answer the next ``n`` requests with Modbus exception ``code``."""
        with self._lock:
            self._exc_code, self._exc_left = int(code), int(n)

    def drop_connections(self) -> None:
        """Close every client connection now (the server keeps listening)."""
        if self._loop is not None:
            fut = asyncio.run_coroutine_threadsafe(self._adrop(), self._loop)
            fut.result(5)

    async def _adrop(self) -> None:
        self._drop_all()
