"""The line PLC over Modbus: reject gate, infeed, stack light and horn, safety relay, feeder.

The PLC is the Modbus server, the line PC its client, with the register map as data
(``robot/plc_profiles/*.toml``, :class:`~scallop.robot.registers.RegisterMap`) and the same
transport as the arms (:class:`~scallop.robot.transport.ModbusTransport`). docs/plc-interface.md
is the contract a PLC programmer builds from.

* **Heartbeats both ways.** The line increments ``line_heartbeat``; a PLC that sees it stand
  still for ``watchdog_ms`` goes to its *safe state* on its own (infeed held, gate open, so
  every scallop is diverted). The PLC increments ``plc_heartbeat``; when it stands still for
  :attr:`PlcConfig.heartbeat_timeout_s` (or the link is down) :meth:`PlcClient.poll` raises and
  the line stops picking.
* **Diverts.** :meth:`PlcClient.divert` queues "open the gate when the raw belt count reaches
  C"; the client writes one request at a time (``divert_count``, ``divert_id``, then the commit
  ``divert_seq``) once the PLC acknowledged the previous one. A request cut by a lost link is
  written again with the same ``divert_seq``: the PLC takes each value once, and a gate opened
  twice for one scallop costs at most a good neighbour, never a uro on the packing table.

Every failure is a :class:`PlcError` (a :class:`~scallop.errors.DeviceError`) naming the PLC.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from enum import IntEnum
from importlib import resources
from pathlib import Path

from scallop.errors import ConfigError, DeviceError, check_number
from scallop.robot.clock import Clock, SystemClock
from scallop.robot.config import TransportConfig
from scallop.robot.errors import ModbusExceptionError, RobotCommError
from scallop.robot.registers import RegisterMap
from scallop.robot.transport import ModbusTransport

SAFETY_OK, FEEDER_RUNNING, GATE_FITTED, GATE_SENSOR_FITTED, SAFE_STATE = (1 << i for i in range(5))
SEQ_MOD = 1 << 16


class GateState(IntEnum):
    READY = 0
    OPEN = 1
    FAULT = 2
    NOT_FITTED = 3


class GateFault(IntEnum):
    NONE = 0
    NOT_CONFIRMED = 1
    STUCK_OPEN = 2
    LATE = 3
    QUEUE_FULL = 4


class Infeed(IntEnum):
    RUN = 0
    SLOW = 1
    HOLD = 2


class GateMode(IntEnum):
    AUTO = 0
    DIVERT_ALL = 1


class StackLight(IntEnum):
    OFF = 0
    GREEN = 1
    AMBER = 2
    RED = 3


class PlcError(DeviceError):
    """Base of every line-PLC failure; the message names the PLC and what went wrong."""


class PlcCommError(PlcError):
    """The PLC does not answer, refused a request, or the link is down."""


class PlcStalledError(PlcError):
    """The PLC answers but its heartbeat stands still: its program is not running."""


class PlcProtocolError(PlcError):
    """The PLC's registers contradict the interface (version, impossible values)."""


def load_plc_profile(profile: str | Path) -> RegisterMap:
    """A built-in PLC profile by name (``generic``) or a profile file by path."""
    p = str(profile)
    if p.endswith(".toml") or "/" in p or "\\" in p:
        return RegisterMap.load(p)
    res = resources.files("scallop.robot").joinpath("plc_profiles", f"{p}.toml")
    if not res.is_file():
        names = sorted(r.name[:-5] for r in resources.files("scallop.robot").joinpath("plc_profiles").iterdir())
        raise ConfigError(f"plc.profile={p!r}: no such PLC profile: choose one of {', '.join(names)} or a .toml path")
    with resources.as_file(res) as path:
        return RegisterMap.load(path)


@dataclass
class PlcConfig:
    """``[plc]``: how to reach the line PLC and where its gate is in belt terms. Every physical
    value must be given (none has a default a plant could miss); without ``transport`` the
    simulator's PLC stands in (a dry run), as for an arm.

    gate_x_mm: belt-frame x of the gate's line across the belt (downstream of the arms).
    gate_lead_mm: the gate opens when a scallop's centre is this far upstream of gate_x_mm.
    gate_open_ms: how long the gate stays open for one scallop.
    heartbeat_timeout_s: the PLC is lost when plc_heartbeat stands still this long.
    watchdog_ms: the PLC's own timeout on line_heartbeat (then its safe state).
    gate_fitted: false on a line without a gate: the infeed is held instead, with an alarm.
    back_pressure: the line slows, then holds the infeed when the scallops needing a pick come
      faster than its arms can pick them (instead of diverting the excess).
    """

    gate_x_mm: float
    gate_lead_mm: float
    gate_open_ms: int
    heartbeat_timeout_s: float
    watchdog_ms: int
    transport: TransportConfig | None = None
    profile: str = "generic"
    gate_fitted: bool = True
    back_pressure: bool = False  # slow, then hold the infeed before the arms are overrun

    def __post_init__(self) -> None:
        for key, lo, hi, integer in (
            ("gate_x_mm", -10_000.0, 10_000.0, False),
            ("gate_lead_mm", 0.0, 500.0, False),
            ("gate_open_ms", 20, 5000, True),
            ("heartbeat_timeout_s", 0.05, 30.0, False),
            ("watchdog_ms", 50, 60_000, True),
        ):
            check_number(f"plc.{key}", getattr(self, key), lo, hi, integer=integer)
        for key in ("gate_fitted", "back_pressure"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"plc.{key}={getattr(self, key)!r}: expected true or false")
        if not isinstance(self.profile, str) or not self.profile:
            raise ConfigError(f"plc.profile={self.profile!r}: give a built-in profile name or a .toml path")


@dataclass(frozen=True)
class PlcStatus:
    """One read of the PLC's status block."""

    t: float  # controller time of the read
    heartbeat: int
    safety_ok: bool
    feeder_running: bool
    gate_fitted: bool
    gate_sensor_fitted: bool
    safe_state: bool
    gate_state: GateState
    gate_fault: GateFault
    ack_seq: int
    done_seq: int
    confirmed_seq: int
    belt_count: int
    lot_number: int = 0  # 0: the PLC sets no lot


@dataclass
class _Divert:
    seq: int
    raw_count: int
    track_id: int
    written: bool = False


@dataclass
class Outputs:
    infeed: Infeed = Infeed.HOLD
    stack_light: StackLight = StackLight.RED
    horn: bool = False
    gate_reset_seq: int = 0
    gate_mode: GateMode = GateMode.DIVERT_ALL  # until the line vouches for what passes
    uv_strobe: bool = False  # the fluorescence channel's lights switched in turn (alternate frames)


class PlcClient:
    """The line's side of docs/plc-interface.md. Thread-safe through its transport's lock;
    the line calls :meth:`poll`, :meth:`beat` and :meth:`divert` from one thread."""

    def __init__(self, config: PlcConfig, clock: Clock | None = None, direction: int = 1) -> None:
        if direction not in (1, -1):
            raise ConfigError(f"encoder direction={direction!r}: expected +1 or -1")
        self.config = config
        self.clock = clock or SystemClock()
        self.map = load_plc_profile(config.profile)
        self.map.require(
            [
                "interface_version",
                "plc_heartbeat",
                "inputs",
                "gate_state",
                "gate_fault",
                "divert_ack_seq",
                "divert_done_seq",
                "divert_confirmed_seq",
                "belt_count",
                "line_heartbeat",
                "watchdog_ms",
                "infeed",
                "stack_light",
                "horn",
                "count_direction",
                "gate_open_ms",
                "gate_reset_seq",
                "gate_mode",
                "uv_strobe",
                "divert_count",
                "divert_id",
                "divert_seq",
            ],
            "the PLC interface",
        )
        self.direction = direction
        if config.transport is None:
            raise ConfigError("plc.transport: the line PLC's address is missing ([plc.transport] host and port)")
        self.transport = ModbusTransport(config.transport, self.clock, name="plc")
        self.outputs = Outputs()
        self.plc_version: int | None = None  # the program's interface version, once read
        # The oldest PLC program the profile can work with: the newest version that added a
        # field the line cannot do without.
        self.oldest_version = max((f.since for f in self.map.fields.values() if f.name not in self.OPTIONAL), default=1)
        self.status: PlcStatus | None = None
        self._hb: int | None = None
        self._hb_changed_t = -math.inf
        self._line_hb = 0
        self._seq = 0  # the last divert_seq given out
        self._queue: deque[_Divert] = deque()
        self._qlock = threading.Lock()  # the line asks from its frame loop, the PLC loop sends
        # (seq, track id, raw count) the PLC took, oldest first (a shift's worth).
        self.sent: deque[tuple[int, int, int]] = deque(maxlen=100_000)
        self.errors = 0

    @property
    def where(self) -> str:
        return f"line PLC ({self.config.transport.describe()})"

    # ------------------------------------------------------------------ link
    def connect(self) -> None:
        try:
            self.transport.connect()
        except RobotCommError as e:
            raise self._comm(e) from None

    def close(self) -> None:
        self.transport.close()

    def _comm(self, e: Exception) -> PlcCommError:
        self.errors += 1
        why = getattr(self.transport, "last_error", "") or str(e)
        if isinstance(e, ModbusExceptionError):
            why = str(e)
        return PlcCommError(f"{self.where}: {why}")

    def _read_block(self, name: str) -> dict:
        b = self.map.block(name)
        try:
            words = self.transport.read(b.start, b.count)
        except RobotCommError as e:
            raise self._comm(e) from None
        return self.map.decode_block(name, words)

    def _write_fields(self, values: dict) -> None:
        """Write fields of one block in one request (they must be contiguous in it)."""
        fields = sorted((self.map.field(k) for k in values), key=lambda f: f.address)
        start = fields[0].address
        words: list[int] = []
        for f in fields:
            if f.address != start + len(words):
                raise PlcProtocolError(f"{self.where}: fields {', '.join(values)} are not contiguous in the profile")
            words += self.map.encode_field(f.name, values[f.name])
        try:
            self.transport.write(start, words)
        except RobotCommError as e:
            raise self._comm(e) from None

    # ------------------------------------------------------------------ status
    def poll(self) -> PlcStatus:
        """Read the status block; raise when the PLC is unreachable, its program stands still
        or speaks another interface version. Also sends the divert requests it can."""
        now = self.clock.now()
        s = self._read_block("status")
        v = int(s["interface_version"])
        oldest = self.oldest_version
        if not oldest <= v <= self.map.version:
            also = f" (it also works with programs of version {oldest} and later)" if oldest < self.map.version else ""
            raise PlcProtocolError(
                f"{self.where}: the PLC program implements interface version {v}, the profile {self.map.name!r} "
                f"is version {self.map.version}{also}"
            )
        self.plc_version = v
        if self.outputs.uv_strobe and not self.has("uv_strobe"):
            raise PlcProtocolError(
                f"{self.where}: the PLC program implements interface version {v}, which has no uv_strobe (added in "
                f"version {self.map.field('uv_strobe').since}): alternate frames of the fluorescence channel need "
                "a program of that version"
            )
        hb = int(s["plc_heartbeat"])
        if hb != self._hb:
            self._hb, self._hb_changed_t = hb, now
        elif now - self._hb_changed_t > self.config.heartbeat_timeout_s:
            raise PlcStalledError(
                f"{self.where}: its heartbeat has not changed for {now - self._hb_changed_t:.1f} s "
                f"(limit {self.config.heartbeat_timeout_s} s): its program is not running"
            )
        bits = int(s["inputs"])
        try:
            gate_state, gate_fault = GateState(int(s["gate_state"])), GateFault(int(s["gate_fault"]))
        except ValueError:
            raise PlcProtocolError(
                f"{self.where}: gate_state={int(s['gate_state'])}, gate_fault={int(s['gate_fault'])} "
                "are not values of the interface"
            ) from None
        st = PlcStatus(
            t=now,
            heartbeat=hb,
            safety_ok=bool(bits & SAFETY_OK),
            feeder_running=bool(bits & FEEDER_RUNNING),
            gate_fitted=bool(bits & GATE_FITTED),
            gate_sensor_fitted=bool(bits & GATE_SENSOR_FITTED),
            safe_state=bool(bits & SAFE_STATE),
            gate_state=gate_state,
            gate_fault=gate_fault,
            ack_seq=int(s["divert_ack_seq"]),
            done_seq=int(s["divert_done_seq"]),
            confirmed_seq=int(s["divert_confirmed_seq"]),
            belt_count=int(s["belt_count"]),
            lot_number=int(s["lot_number"]),
        )
        self.status = st
        self._send_diverts(st)
        return st

    # ------------------------------------------------------------------ outputs
    def beat(self) -> None:
        """The line's heartbeat with every output as it is now: the whole control block in one
        request, so a PLC that restarted gets its settings back at the next beat."""
        self._line_hb = (self._line_hb + 1) % SEQ_MOD
        o = self.outputs
        values = {
            "line_heartbeat": self._line_hb,
            "watchdog_ms": self.config.watchdog_ms,
            "infeed": int(o.infeed),
            "stack_light": int(o.stack_light),
            "horn": int(o.horn),
            "count_direction": self.direction,
            "gate_open_ms": self.config.gate_open_ms,
            "gate_reset_seq": o.gate_reset_seq,
            "gate_mode": int(o.gate_mode),
            "uv_strobe": int(o.uv_strobe),
        }
        # A register the PLC's program does not have is never written (an older program may
        # answer a write to it with an exception, and the heartbeat with it would be lost).
        self._write_fields({k: v for k, v in values.items() if self.has(k)})

    def set_outputs(self, infeed: Infeed, light: StackLight, horn: bool, gate_mode: GateMode | None = None) -> None:
        """Takes effect at the next :meth:`beat`."""
        o = self.outputs
        o.infeed, o.stack_light, o.horn = Infeed(infeed), StackLight(light), bool(horn)
        if gate_mode is not None:
            o.gate_mode = GateMode(gate_mode)

    # Fields the line works without: a PLC program older than the one that added them is
    # accepted, and they are left out (uv_strobe: only alternate frames need it).
    OPTIONAL = frozenset({"uv_strobe"})

    def has(self, field: str) -> bool:
        """The PLC's program has this field (its version, once read, else the oldest accepted)."""
        return self.map.field(field).since <= (self.plc_version or self.oldest_version)

    def set_uv_strobe(self, on: bool) -> None:
        """Switch the white and the UV light in turn at every camera trigger (alternate frames
        of the fluorescence channel), or leave the white light on; sent with the next :meth:`beat`."""
        self.outputs.uv_strobe = bool(on)

    def reset_gate(self) -> None:
        """Clear a gate FAULT (an operator's reset); sent with the next :meth:`beat`."""
        self.outputs.gate_reset_seq = (self.outputs.gate_reset_seq + 1) % SEQ_MOD

    # ------------------------------------------------------------------ diverts
    def divert(self, raw_count: int, track_id: int) -> int:
        """Queue "open the gate at raw belt count ``raw_count``" for scallop ``track_id``;
        returns its divert_seq. Sent by :meth:`poll` as the PLC takes them."""
        with self._qlock:
            self._seq = self._seq % (SEQ_MOD - 1) + 1  # 1..65535: 0 is "none yet"
            self._queue.append(_Divert(self._seq, int(raw_count), int(track_id) & 0xFFFFFFFF))
            return self._seq

    def pending_diverts(self) -> int:
        with self._qlock:
            return len(self._queue)

    def drop_passed(self, raw_now: int) -> list[int]:
        """Take back the requests not yet written whose count the belt has reached (the link was
        down meanwhile); returns their track ids."""
        with self._qlock:
            keep, gone = deque(), []
            for d in self._queue:
                if not d.written and (raw_now - d.raw_count) * self.direction >= 0:
                    gone.append(d.track_id)
                else:
                    keep.append(d)
            self._queue = keep
            return gone

    def raw_count_at(self, belt_count: float) -> int:
        """A belt count (grows downstream) as the raw count the PLC compares with."""
        return int(round(belt_count * self.direction))

    def _send_diverts(self, st: PlcStatus) -> None:
        """The next divert request to the PLC. Chosen under the queue's lock, written outside it:
        the frame loop queues diverts under that lock and must never wait on the PLC's link."""
        with self._qlock:
            d = self._next_to_write(st)
        if d is None:
            return
        # A request written but cut before its answer is written again, same seq.
        self._write_fields({"divert_count": d.raw_count, "divert_id": d.track_id})
        self._write_fields({"divert_seq": d.seq})
        with self._qlock:
            d.written = True

    def _next_to_write(self, st: PlcStatus) -> _Divert | None:
        """Drop the requests the PLC has taken; the head, when it still needs writing (lock held)."""
        while self._queue:
            d = self._queue[0]
            if d.written or st.ack_seq == d.seq:
                if st.ack_seq != d.seq:
                    return None  # the PLC has not taken it yet
                self._queue.popleft()
                self.sent.append((d.seq, d.track_id, d.raw_count))
                continue
            return d
        return None
