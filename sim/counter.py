"""The simulated belt counter: a PLC register holding the belt encoder count, over Modbus TCP.

What ``[camera.encoder] source = "modbus"`` reads on a real line (docs/configuration.md, "The
belt encoder on a real camera"): a counter of ``words`` 16-bit registers at ``address``
(holding registers, function 3, or input registers, function 4), high word first for
``word_order = "big"``, rolling over at 2**(16·words). The count is the simulated world's
encoder at the moment each request is answered, so a camera sampling it on the same clock
sees exactly the belt the simulator renders.

Faults, for rehearsing what the line does about them: :meth:`SimCounter.go_down` /
:meth:`come_back` (the PLC unreachable: connections refused), :meth:`freeze` / :meth:`thaw`
(the register stops changing: a PLC program stopped), ``silent_s`` (answers late).
"""

from __future__ import annotations

import asyncio
import threading

from scallop.sim.world import SimWorld


class SimCounter:
    def __init__(
        self,
        world: SimWorld,
        address: int = 100,
        words: int = 2,
        word_order: str = "big",
        register: str = "holding",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if words not in (1, 2) or word_order not in ("big", "little") or register not in ("holding", "input"):
            raise ValueError(f"words={words}, word_order={word_order!r}, register={register!r}: not a counter layout")
        self.world = world
        self.address, self.words, self.word_order, self.register = address, words, word_order, register
        self.fc = 3 if register == "holding" else 4
        self.host, self._port = host, port
        self.silent_s = 0.0
        self.requests = 0
        self._frozen: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server = None

    # ------------------------------------------------------------------ the register
    def count(self) -> int:
        """The unbounded count the register holds now (frozen or live)."""
        return self._frozen if self._frozen is not None else self.world.encoder_at(self.world.clock.now())

    def freeze(self) -> None:
        self._frozen = self.count()

    def thaw(self) -> None:
        self._frozen = None

    async def _action(self, fc, start, address, count, current, set_values):
        from pymodbus.constants import ExcCodes

        if self.silent_s > 0:
            await asyncio.sleep(self.silent_s)
        self.requests += 1
        if fc != self.fc:
            return ExcCodes.ILLEGAL_FUNCTION
        raw = self.count() % (1 << (16 * self.words))
        regs = [raw & 0xFFFF] if self.words == 1 else [raw >> 16, raw & 0xFFFF]
        if self.word_order == "little":
            regs.reverse()
        off = self.address - start
        current[off : off + self.words] = regs
        return None

    # ------------------------------------------------------------------ the server
    def start(self) -> SimCounter:
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        ready = threading.Event()
        err: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)

            async def main() -> None:
                dev = SimDevice(
                    id=0,
                    simdata=[SimData(self.address, count=self.words, values=0, datatype=DataType.REGISTERS)],
                    action=self._action,
                )
                self._server = ModbusTcpServer(dev, address=(self.host, self._port))
                await self._server.serve_forever(background=True)
                self._port = int(self._server.transport.sockets[0].getsockname()[1])

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
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, name="sim-counter", daemon=True)
        self._thread.start()
        if not ready.wait(10) or err:
            self._thread.join(5)
            self._thread = None
            raise RuntimeError(f"simulated belt counter could not start: {err[0] if err else 'timeout'}")
        return self

    @property
    def port(self) -> int:
        return self._port

    def close(self) -> None:
        if self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None

    def go_down(self) -> None:
        """The PLC is unreachable: the server stops, connections are refused."""
        self.close()

    def come_back(self) -> None:
        """Reachable again, on the same port."""
        self.start()

    def __enter__(self) -> SimCounter:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
