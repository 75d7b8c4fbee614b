"""A simulated line PLC: the same register map as the line's client (docs/plc-interface.md),
served over real Modbus, with a reject gate, the feeder and the safety relay.

The PLC program runs on the clock it is given, evaluated lazily in scan steps up to the time of
each request or question (no thread of its own, so a virtual clock gives the same run every
time): the heartbeat, the watchdog on the line's heartbeat and the safe state it leads to, the
divert queue fired when the belt count reaches each request, the gate's sensor and faults.

Faults: :meth:`SimPlc.jam_gate` (the gate no longer moves: the next divert is not confirmed and
the gate goes to FAULT), :meth:`~SimPlc.open_safety` / :meth:`~SimPlc.close_safety`, and the
link's (``go_offline`` / ``come_back``, ``exception_replies``, ``slow_replies``) from
:class:`~scallop.sim.modbus_server.ModbusSimServer`. ``gate_open_during(t0, t1)`` tells the
simulated world whether a scallop crossing the gate between t0 and t1 was diverted.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from scallop.robot.clock import Clock
from scallop.robot.plc import (
    FEEDER_RUNNING,
    GATE_FITTED,
    GATE_SENSOR_FITTED,
    SAFE_STATE,
    SAFETY_OK,
    GateFault,
    GateMode,
    GateState,
    Infeed,
    load_plc_profile,
)
from scallop.robot.registers import RegisterMap
from scallop.sim.modbus_server import ModbusSimServer

SCAN_S = 0.005  # the PLC program's scan time


@dataclass
class GateOpening:
    t_open: float
    t_close: float
    seq: int  # 0: the safe state held the gate open
    track_id: int


class SimPlc(ModbusSimServer):
    """``encoder(t)`` is the raw belt count at time ``t`` (the simulated world's)."""

    def __init__(
        self,
        clock: Clock,
        encoder: Callable[[float], int],
        profile: RegisterMap | str = "generic",
        gate_fitted: bool = True,
        sensor_fitted: bool = True,
        kind: str = "tcp",
        host: str = "127.0.0.1",
        port: int = 0,
        serial_port: str = "",
        baudrate: int = 115200,
    ) -> None:
        self.map = profile if isinstance(profile, RegisterMap) else load_plc_profile(profile)
        self.clock = clock
        self.encoder = encoder
        self._lo, hi = self.map.span()
        self.regs = [0] * (hi - self._lo)
        self._lock = threading.RLock()
        self._init_server("simplc", kind, host, port, serial_port, baudrate)
        tm = self.map.timing
        self.hb_period_s = tm.get("plc_heartbeat_period_ms", 100) / 1000.0
        self.queue_max = tm.get("divert_queue", 16)
        self.watchdog_default_ms = tm.get("watchdog_default_ms", 1000)
        self.gate_fitted, self.sensor_fitted = gate_fitted, sensor_fitted
        self.safety_ok = True
        self.jammed = False
        self.running = True  # the PLC program (False: its heartbeat stops, nothing is done)
        self._t = float(clock.now())
        self._hb_t = self._t
        self._line_hb: int | None = None
        self._line_hb_t: float | None = None  # the watchdog is armed by the first change
        # It starts in its safe state: no line has vouched for anything yet.
        self.safe_state = True
        self._queue: deque[tuple[int, int, int]] = deque()  # (seq, raw count, track id)
        self._open_until: float | None = None
        self._reset_seq = 0
        self.openings: list[GateOpening] = []
        self.gate_state = GateState.READY if gate_fitted else GateState.NOT_FITTED
        self.gate_fault = GateFault.NONE
        self._set("interface_version", self.map.version)
        self._publish()

    # ------------------------------------------------------------------ registers
    def _get(self, name: str) -> int:
        f = self.map.field(name)
        return self.map.decode_field(name, self.regs[f.address - self._lo : f.last + 1 - self._lo])

    def _set(self, name: str, value: float) -> None:
        f = self.map.field(name)
        self.regs[f.address - self._lo : f.last + 1 - self._lo] = self.map.encode_field(name, value)

    def _publish(self) -> None:
        bits = (SAFETY_OK if self.safety_ok else 0) | (FEEDER_RUNNING if self.feeder_running else 0)
        bits |= (GATE_FITTED if self.gate_fitted else 0) | (GATE_SENSOR_FITTED if self.sensor_fitted else 0)
        bits |= SAFE_STATE if self.safe_state else 0
        self._set("inputs", bits)
        self._set("gate_state", int(self.gate_state))
        self._set("gate_fault", int(self.gate_fault))
        self._set("belt_count", int(self.encoder(self._t)))

    @property
    def infeed(self) -> Infeed:
        """What the feeder is told: the line's request, or HOLD in the safe state or without
        the safety relay."""
        if self.safe_state or not self.safety_ok or not self.running:
            return Infeed.HOLD
        try:
            return Infeed(self._get("infeed"))
        except ValueError:
            return Infeed.HOLD

    def infeed_at(self, t: float) -> Infeed:
        """The infeed output at ``t`` (the program's scans run up to it first)."""
        self.advance(t)
        return self.infeed

    def uv_strobe_at(self, t: float) -> bool:
        """Whether the UV light is being strobed at ``t``: the line asks for it, and neither the
        safe state nor an open safety relay has switched it off (eye safety, docs/fluorescence.md)."""
        self.advance(t)
        with self._lock:
            if self.safe_state or not self.safety_ok or not self.running:
                return False
            return self._get("uv_strobe") == 1

    @property
    def feeder_running(self) -> bool:
        return self.infeed != Infeed.HOLD

    # ------------------------------------------------------------------ the program
    def advance(self, now: float | None = None) -> None:
        """Run the program's scans up to ``now``."""
        with self._lock:
            now = self.clock.now() if now is None else now
            while self._t + SCAN_S <= now:
                self._scan(self._t + SCAN_S)
            self._publish()

    def _scan(self, t: float) -> None:
        self._t = t
        if not self.running:
            return
        if t - self._hb_t >= self.hb_period_s:
            self._hb_t = t
            self._set("plc_heartbeat", (self._get("plc_heartbeat") + 1) % 65536)
        wd_ms = self._get("watchdog_ms") or self.watchdog_default_ms
        lost = self._line_hb_t is not None and t - self._line_hb_t > wd_ms / 1000.0
        if lost and not self.safe_state:
            self.safe_state = True  # the line is gone: hold the infeed, divert everything
            self._queue.clear()
        if self.safe_state or self._get("gate_mode") == GateMode.DIVERT_ALL:
            # Held open: every scallop to rework (requests still fire, into an open gate).
            if self.gate_fitted and not self.jammed:
                self._gate_open(t, SCAN_S, 0, 0)
            elif self.gate_fitted and self.sensor_fitted and self.gate_state != GateState.FAULT:
                # Commanded open and the sensor does not see it open (plc-interface.md, section 5).
                self.gate_state, self.gate_fault = GateState.FAULT, GateFault.NOT_CONFIRMED
                self._open_until = None
            if self.safe_state:
                return
        elif self._open_until is not None and t >= self._open_until:
            self._open_until = None
            if self.gate_state == GateState.OPEN:
                self.gate_state = GateState.READY
        if not self._queue:
            return
        direction = self._get("count_direction") or 1
        now_count = self.encoder(t)
        # Each request fires when its own count comes, in whatever order they were taken.
        due = [q for q in self._queue if (now_count - q[1]) * direction >= 0]
        for q in due:
            self._queue.remove(q)
            seq, _, track = q
            self._set("divert_done_seq", seq)
            if not self.gate_fitted or self.gate_state == GateState.FAULT:
                continue
            if self.jammed:
                self.gate_state, self.gate_fault = GateState.FAULT, GateFault.NOT_CONFIRMED
                continue
            self._gate_open(t, self._get("gate_open_ms") / 1000.0, seq, track)
            self._set("divert_confirmed_seq", seq)

    def _gate_open(self, t: float, hold_s: float, seq: int, track: int) -> None:
        last = self.openings[-1] if self.openings else None
        if last is not None and last.t_close >= t - SCAN_S and (seq == 0 or last.seq == 0):
            last.t_close = max(last.t_close, t + max(hold_s, SCAN_S))  # still open: hold it
        else:
            self.openings.append(GateOpening(t, t + max(hold_s, SCAN_S), seq, track))
        self._open_until = max(self._open_until or t, t + hold_s)
        if self.gate_state != GateState.FAULT:  # a fault stays until it is reset
            self.gate_state = GateState.OPEN

    # ------------------------------------------------------------------ Modbus
    def _serve(self, is_write: bool, start: int, address: int, count: int, current: list[int], set_values):
        from pymodbus.constants import ExcCodes

        if not self.map.in_blocks(address, count, "w" if is_write else None):
            return ExcCodes.ILLEGAL_ADDRESS
        now = self.clock.now()
        self.advance(now)
        if is_write:
            old_hb, old_seq, old_reset = (
                self._get("line_heartbeat"),
                self._get("divert_seq"),
                self._get("gate_reset_seq"),
            )
            for i, v in enumerate(set_values):
                self.regs[address - self._lo + i] = int(v) & 0xFFFF
            if self._get("line_heartbeat") != old_hb:
                self._line_hb_t = now
                if self.safe_state:
                    self.safe_state = False  # the line is back
                    self._open_until = now
            seq = self._get("divert_seq")
            if seq != old_seq and seq != 0:
                self._take(seq, now)
            if self._get("gate_reset_seq") != old_reset and self.gate_state == GateState.FAULT and not self.jammed:
                self.gate_state, self.gate_fault = GateState.READY, GateFault.NONE
            self._publish()
        current[: len(self.regs)] = self.regs
        if is_write:
            set_values[:] = self.regs[address - self._lo : address - self._lo + count]
        return None

    def _take(self, seq: int, now: float) -> None:
        self._set("divert_ack_seq", seq)
        if len(self._queue) >= self.queue_max:
            self.gate_state, self.gate_fault = GateState.FAULT, GateFault.QUEUE_FULL
            return
        count = self._get("divert_count")
        direction = self._get("count_direction") or 1
        if (self.encoder(now) - count) * direction > 0 and self.gate_fitted:
            # Already past: the scallop went by before the request came.
            self.gate_state, self.gate_fault = GateState.FAULT, GateFault.LATE
            self._set("divert_done_seq", seq)
            return
        self._queue.append((seq, count, self._get("divert_id")))

    # ------------------------------------------------------------------ questions, faults
    def gate_open_during(self, t0: float, t1: float) -> bool:
        """Was the gate open at any time in [t0, t1]? (A scallop crossing the gate line then
        was pushed into the rework lane.)"""
        self.advance(max(t1, self._t))
        with self._lock:
            return any(o.t_open <= t1 and o.t_close >= t0 for o in self.openings)

    def set_lot_number(self, lot: int) -> None:
        """The plant's system sets the production lot on the PLC (0: none)."""
        with self._lock:
            self._set("lot_number", int(lot))

    def jam_gate(self, jammed: bool = True) -> None:
        with self._lock:
            self.jammed = jammed

    def open_safety(self) -> None:
        with self._lock:
            self.safety_ok = False
            self._publish()

    def close_safety(self) -> None:
        with self._lock:
            self.safety_ok = True
            self._publish()

    def stop_program(self, stopped: bool = True) -> None:
        """The PLC's program stops (heartbeat stands still) or runs again."""
        with self._lock:
            self.running = not stopped
