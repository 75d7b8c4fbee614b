"""A line PLC written from docs/plc-interface.md alone, for testing the line's client against
something it did not write. It imports nothing of ``scallop`` (a test checks): every address,
code and rule below comes from the document.

:class:`DocPlc` is the PLC program (sections 2–5): the status block, the heartbeat it
increments every 100 ms, the watchdog on the line's heartbeat armed by its first change and the
safe state it leads to (infeed held, gate held open, queue emptied, bit 4), the safety relay, the
divert queue (16 deep) fired at its count in the direction ``count_direction`` says, the gate
sensor, the gate faults and their reset. Time is ``clock.now()``, evaluated lazily at each
request in 5 ms scans. It is served by :class:`doc_robot.RawModbusServer` (functions 3 and 16 on
a bare socket, with the faults of the link), which reads ``base``, ``read`` and ``write``.

Everything it did is logged for the tests: ``taken`` (seq, count, id) and ``opened``
(time, seq) for each opening of the gate (seq 0: held open by the safe state).
"""

from __future__ import annotations

import threading

# Section 2: addresses.
VERSION, PLC_HB, INPUTS, GATE_STATE, GATE_FAULT, ACK, DONE, CONFIRMED, BELT_COUNT, LOT = 0, 1, 2, 3, 4, 5, 6, 7, 8, 10
LINE_HB, WATCHDOG, INFEED, LIGHT, HORN, DIRECTION, OPEN_MS, RESET, GATE_MODE, UV_STROBE = range(20, 30)
DIV_COUNT, DIV_ID, DIV_SEQ = 30, 32, 34
STATUS, CONTROL, DIVERT = range(0, 12), range(20, 30), range(30, 36)
AUTO, DIVERT_ALL = 0, 1
# Inputs bits, gate states and faults (sections 2 and 5).
SAFETY, FEEDER, FITTED, SENSOR, SAFE = 1, 2, 4, 8, 16
READY, OPEN, FAULT, NOT_FITTED = 0, 1, 2, 3
NOT_CONFIRMED, STUCK_OPEN, LATE, QUEUE_FULL = 1, 2, 3, 4
RUN, SLOW, HOLD = 0, 1, 2
# Timing (section 2).
HB_PERIOD_S, WATCHDOG_DEFAULT_MS, QUEUE = 0.1, 1000, 16
SCAN_S = 0.005


def _s32(hi: int, lo: int) -> int:
    v = (hi << 16) | lo
    return v - (1 << 32) if v & 0x80000000 else v


class DocPlc:
    def __init__(self, clock, encoder, gate: bool = True, sensor: bool = True, version: int = 3) -> None:
        self.clock, self.encoder = clock, encoder
        self.base = 0
        self.r = [0] * 36
        self.r[VERSION] = version
        # Section 8: version 3 added uv_strobe (29); a program of version 2 has no register 29.
        self.control = CONTROL if version >= 3 else range(20, 29)
        self.gate, self.sensor = gate, sensor
        self.safety = True
        self.jammed = False
        self.running = True
        self.lock = threading.Lock()
        self.t = clock.now()
        self.hb_t = self.t
        self.line_hb_t = None
        self.safe = True  # section 3: the PLC starts in its safe state
        self.queue: list[tuple[int, int, int]] = []
        self.open_until = None
        self.state, self.fault = (READY if gate else NOT_FITTED), 0
        self.taken: list[tuple[int, int, int]] = []
        self.opened: list[tuple[float, int]] = []
        self._publish()

    @property
    def uv_strobing(self) -> bool:
        """Section 2, uv_strobe: the UV light switched in turn with the white one, never in the
        safe state or with the safety relay open."""
        with self.lock:
            return self.r[UV_STROBE] == 1 and not self.safe and self.safety

    def set_lot(self, lot: int) -> None:
        """Section 7: the plant's system sets the production lot (32 bits, high word first)."""
        with self.lock:
            self.r[LOT], self.r[LOT + 1] = (lot >> 16) & 0xFFFF, lot & 0xFFFF

    # ------------------------------------------------------------------ the program
    def _publish(self) -> None:
        held = self.safe or not self.safety or self.r[INFEED] not in (RUN, SLOW)
        bits = (SAFETY if self.safety else 0) | (0 if held else FEEDER) | (FITTED if self.gate else 0)
        bits |= (SENSOR if self.sensor else 0) | (SAFE if self.safe else 0)
        self.r[INPUTS], self.r[GATE_STATE], self.r[GATE_FAULT] = bits, self.state, self.fault
        c = int(self.encoder(self.t)) & 0xFFFFFFFF
        self.r[BELT_COUNT], self.r[BELT_COUNT + 1] = c >> 16, c & 0xFFFF

    def advance(self, now: float) -> None:
        while self.t + SCAN_S <= now:
            self.t += SCAN_S
            self._scan(self.t)
        self._publish()

    def _direction(self) -> int:
        d = self.r[DIRECTION]
        return -1 if d == 0xFFFF else 1

    def _scan(self, t: float) -> None:
        if not self.running:
            return
        if t - self.hb_t >= HB_PERIOD_S:
            self.hb_t = t
            self.r[PLC_HB] = (self.r[PLC_HB] + 1) & 0xFFFF
        wd = (self.r[WATCHDOG] or WATCHDOG_DEFAULT_MS) / 1000.0
        if self.line_hb_t is not None and t - self.line_hb_t > wd and not self.safe:
            self.safe = True
            self.queue.clear()
        if self.safe or self.r[GATE_MODE] == DIVERT_ALL:
            if self.gate and not self.jammed:
                if self.state != FAULT:
                    self.state = OPEN
                if not self.opened or self.opened[-1][1] != 0:
                    self.opened.append((t, 0))
            elif self.gate and self.sensor and self.state != FAULT:
                # Held open, and the sensor does not see it open: NOT_CONFIRMED (section 5).
                self.state, self.fault = FAULT, NOT_CONFIRMED
            if self.safe:
                return
        elif self.state == OPEN and self.open_until is None and self.opened and self.opened[-1][1] == 0:
            self.state = READY  # DIVERT_ALL ended
        if self.open_until is not None and t >= self.open_until:
            self.open_until = None
            if self.state == OPEN:
                self.state = READY
        now = int(self.encoder(t))
        for item in [q for q in self.queue if (now - q[1]) * self._direction() >= 0]:
            self.queue.remove(item)
            seq = item[0]
            self.r[DONE] = seq
            if not self.gate or self.state == FAULT:
                continue
            if self.jammed:
                self.state, self.fault = FAULT, NOT_CONFIRMED
                continue
            self.state = OPEN
            self.open_until = max(self.open_until or t, t + self.r[OPEN_MS] / 1000.0)
            self.opened.append((t, seq))
            self.r[CONFIRMED] = seq

    # ------------------------------------------------------------------ Modbus access
    def read(self, address: int, count: int):
        with self.lock:
            if count < 1 or not all(
                a in STATUS or a in self.control or a in DIVERT for a in range(address, address + count)
            ):
                return 2
            self.advance(self.clock.now())
            return self.r[address : address + count]

    def write(self, address: int, values: list[int]):
        with self.lock:
            span = range(address, address + len(values))
            if not values or not all(a in self.control or a in DIVERT for a in span):
                return 2
            now = self.clock.now()
            self.advance(now)
            old_hb, old_seq, old_reset = self.r[LINE_HB], self.r[DIV_SEQ], self.r[RESET]
            self.r[address : address + len(values)] = values
            if self.r[LINE_HB] != old_hb:
                self.line_hb_t = now
                if self.safe:
                    self.safe = False
                    self.state = READY if self.state == OPEN else self.state
            if self.r[DIV_SEQ] != old_seq and self.r[DIV_SEQ] != 0:
                self._take(self.r[DIV_SEQ], now)
            if self.r[RESET] != old_reset and self.state == FAULT and not self.jammed:
                self.state, self.fault = READY, 0
            self._publish()
            return None

    def _take(self, seq: int, now: float) -> None:
        self.r[ACK] = seq
        count = _s32(self.r[DIV_COUNT], self.r[DIV_COUNT + 1])
        ident = (self.r[DIV_ID] << 16) | self.r[DIV_ID + 1]
        self.taken.append((seq, count, ident))
        if len(self.queue) >= QUEUE:
            self.state, self.fault = FAULT, QUEUE_FULL
            return
        if self.gate and (int(self.encoder(now)) - count) * self._direction() > 0:
            self.state, self.fault = FAULT, LATE
            self.r[DONE] = seq
            return
        self.queue.append((seq, count, ident))
