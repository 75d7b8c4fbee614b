"""A simulated arm: a real Modbus server (TCP, or RTU framing on a serial port / ``socket://``)
serving the simulated robot program (:mod:`scallop.sim.arm_program`: motion timing,
gripper timing, workspace limits, grading and the robot's own faults) on the same register
profile as the controller (docs/robot-interface.md).

Faults of the link, on top of the program's: ``slow_replies``, ``exception_replies``,
``drop_connections``, ``drop_next_commit``, and the server going away and coming back on
the same port (``go_offline`` / ``come_back``).
"""

from __future__ import annotations

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
from scallop.sim.modbus_server import ModbusSimServer

# The program's names stay importable from here, where they always were.
__all__ = ["GRADES", "HOLDING", "ArmProgram", "Grader", "PickGradeLike", "SimArm", "SimArmParams", "SimPickRecord"]


class SimArm(ArmProgram, ModbusSimServer):
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
        self._init_server(f"simarm-{config.name}", kind, host, port, serial_port, baudrate)
        self._drop_commit: str | None = None  # "apply" | "lose"

    # ================================================================== requests
    def _touches(self, name: str, address: int, count: int) -> bool:
        f = self.map.field(name)
        return address <= f.last and f.address < address + count

    def _serve(self, is_write: bool, start: int, address: int, count: int, current: list[int], set_values):
        from pymodbus.constants import ExcCodes

        now = self.clock.now()
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

    # ================================================================== fault injection
    def drop_next_commit(self, apply: bool) -> None:
        """On the next write of cmd_seq, drop the connection before replying; ``apply``
        decides whether the write itself takes effect first (arm holds it) or is lost."""
        with self._lock:
            self._drop_commit = "apply" if apply else "lose"
