"""A simulated arm: a real Modbus server (TCP, or RTU framing on a serial port / ``socket://``)
serving the simulated robot program (:mod:`scallop.sim.arm_program`: motion timing,
gripper timing, workspace limits, grading and the robot's own faults) on the same register
profile as the controller (docs/robot-interface.md).

Faults of the link, on top of the program's: ``slow_replies``, ``exception_replies``,
``drop_connections``, ``drop_next_commit``, and the server going away and coming back on
the same port (``go_offline`` / ``come_back``).
"""

from __future__ import annotations

import asyncio
import threading

from scallop.robot.clock import Clock
from scallop.robot.config import ArmConfig
from scallop.robot.registers import RegisterMap
from scallop.sim.arm_program import (
    GRADES,
    HOLDING,
    ArmProgram,
    Grader,
    PickGradeLike,
    SimArmParams,
    SimPickRecord,
)

# The program's names stay importable from here, where they always were.
__all__ = ["GRADES", "HOLDING", "ArmProgram", "Grader", "PickGradeLike", "SimArm", "SimArmParams", "SimPickRecord"]


class SimArm(ArmProgram):
    """Robot side of the interface as a Modbus server. Use as a context manager::

    with SimArm(cfg, clock=clock, grader=world) as arm:
        client = ArmClient(replace(cfg, transport=arm.transport_config()), clock)
    """

    def __init__(
        self,
        config: ArmConfig,
        clock: Clock,
        grader: Grader | None = None,
        params: SimArmParams | None = None,
        profile: RegisterMap | str | None = None,
        kind: str = "tcp",
        host: str = "127.0.0.1",
        port: int = 0,
        serial_port: str = "",
        baudrate: int = 115200,
    ) -> None:
        super().__init__(config, clock, grader, params, profile)
        if kind not in ("tcp", "rtu"):
            raise ValueError(f"kind={kind!r}: choose 'tcp' or 'rtu'")
        self.kind, self.host, self._port, self.serial_port, self.baudrate = kind, host, port, serial_port, baudrate
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        # Fault injection on the link.
        self.reply_delay_s = 0.0
        self._exc_code = 0
        self._exc_left = 0
        self._drop_commit: str | None = None  # "apply" | "lose"
        self.requests = 0

    # ================================================================== server lifecycle
    def start(self) -> SimArm:
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

        self._thread = threading.Thread(target=run, name=f"simarm-{self.config.name}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if err:
            self._thread.join(5)
            self._thread = None
            raise RuntimeError(f"simulated arm {self.config.name!r} could not start: {err[0]}") from err[0]
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
        """A TransportConfig that reaches this arm."""
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
        """The server goes away (the robot's controller powered off, the cable pulled): every
        connection drops and nothing answers. What the robot was doing, its state and its
        records stay; :meth:`come_back` serves it again on the same port."""
        if self._thread is not None:
            # With port=0 the system chose the port: a controller reconnects to that one.
            self._port = self.port
        self.close()

    def come_back(self) -> SimArm:
        """Serve again after :meth:`go_offline`, on the port served before."""
        return self.start()

    def __enter__(self) -> SimArm:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ================================================================== requests
    def _touches(self, name: str, address: int, count: int) -> bool:
        f = self.map.field(name)
        return address <= f.last and f.address < address + count

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
            now = self.clock.now()
            is_write = fc in (5, 6, 15, 16, 22, 23) and set_values is not None
            if is_write and not self.map.in_blocks(address, count, "w"):
                return ExcCodes.ILLEGAL_ADDRESS
            self._advance(now)
            if is_write:
                vals = [int(v) & 0xFFFF for v in set_values]
                drop = None
                if self._drop_commit and self._touches("cmd_seq", address, count):
                    drop, self._drop_commit = self._drop_commit, None
                if drop == "lose":
                    set_values[:] = current[address - start : address - start + count]
                    self.write_log.append((now, address, vals + [-1]))  # -1 marks "lost"
                    self._drop_all()
                    return None
                self._write(now, address, vals)
                if drop == "apply":
                    self._drop_all()
            self._refresh(now)
            current[: len(self.regs)] = self.regs
            if is_write:
                set_values[:] = self.regs[address - self._lo : address - self._lo + count]
            return None

    def _drop_all(self) -> None:
        srv = self._server
        for conn in list(getattr(srv, "active_connections", {}).values()):
            conn.close()

    # ================================================================== fault injection
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

    def drop_next_commit(self, apply: bool) -> None:
        """On the next write of cmd_seq, drop the connection before replying; ``apply``
        decides whether the write itself takes effect first (arm holds it) or is lost."""
        with self._lock:
            self._drop_commit = "apply" if apply else "lose"
