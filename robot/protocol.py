"""The words of the pick handshake (docs/robot-interface.md), shared by the controller's
:class:`~scallop.robot.arm.ArmClient` and the simulated arm: states, codes, command types, the
register fields a profile must carry, sequence-number arithmetic and the decoded status."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

import numpy as np

from scallop.robot.planning import WAYPOINTS, PickPlan
from scallop.robot.registers import RegisterMap


class ArmState(IntEnum):
    STARTING = 0
    IDLE = 1
    BUSY = 2
    FAULT = 3
    ESTOP = 4


class FaultCode(IntEnum):
    NONE = 0
    CTRL_WATCHDOG = 1
    ESTOP = 2
    WORKSPACE = 3
    GRIPPER = 4
    MOTION = 5
    INTERNAL = 6


class ResultCode(IntEnum):
    NONE = 0
    OK = 1
    EMPTY = 2
    LATE = 3
    REJECTED = 4
    ABORTED = 5
    NOT_READY = 6


class CommandType(IntEnum):
    PICK = 1
    MOVE_READY = 2
    RESET = 3
    PICK_CHAINED = 4  # a PICK planned from the previous pick's release at the chute (v2)


PICK_TYPES = (CommandType.PICK, CommandType.PICK_CHAINED)


STATUS_FIELDS = (
    "interface_version",
    "arm_heartbeat",
    "arm_state",
    "fault_code",
    "ack_seq",
    "done_seq",
    "result",
    "arm_time_ms",
    "tcp_x",
    "tcp_y",
    "tcp_z",
    "picks_total",
)
CONTROL_FIELDS = ("ctrl_heartbeat", "watchdog_ms", "cmd_seq")
COMMAND_FIELDS = ("cmd_type", "target_id", "grip_time_ms", "belt_vx", "belt_vy", "belt_vz") + tuple(
    f"{w}_{k}" for w in WAYPOINTS for k in ("x", "y", "z", "speed")
)
PROTOCOL_FIELDS = STATUS_FIELDS + CONTROL_FIELDS + COMMAND_FIELDS
MIN_INTERFACE_VERSION = 2  # v2 added PICK_CHAINED
SEQ_MODULUS = 0xFFFF  # wire sequence numbers are 1..65535; 0 never means a command
ARM_CLOCK_MODULUS = 1 << 32  # arm_time_ms wraps here


def check_profile(m: RegisterMap) -> None:
    """Refuse a profile that cannot carry the protocol (missing fields or blocks)."""
    m.require(PROTOCOL_FIELDS)
    if m.version < MIN_INTERFACE_VERSION:
        from scallop.robot.errors import ProfileError

        raise ProfileError(
            f"profile {m.name!r} is interface version {m.version}; this controller speaks version "
            f"{MIN_INTERFACE_VERSION} (chained picks, cmd_type 4): update the robot program as "
            "docs/robot-interface.md describes and set [profile] version = 2"
        )
    for f, blk in (("ack_seq", "status"), ("cmd_seq", "control"), ("cmd_type", "command")):
        if m.field(f).block != blk:
            from scallop.robot.errors import ProfileError

            raise ProfileError(f"profile {m.name!r}: field {f} must be in block {blk!r}, not {m.field(f).block!r}")


def wire_seq(counter: int) -> int:
    """Persisted counter (1, 2, 3, ...) -> sequence number on the wire (1..65535)."""
    return (int(counter) - 1) % SEQ_MODULUS + 1


@dataclass
class ArmStatus:
    """The arm's status block, decoded. ``t``: controller time of the read."""

    t: float
    interface_version: int
    heartbeat: int
    state: ArmState
    fault_code: FaultCode
    ack_seq: int
    done_seq: int
    result: ResultCode
    arm_time_ms: int
    tcp_mm: np.ndarray  # (3,) robot base frame
    picks_total: int
    cmd_seq: int | None = None  # the commit register, when the control block was read too

    def as_dict(self) -> dict:
        return {
            "state": self.state.name,
            "fault": self.fault_code.name,
            "ack_seq": self.ack_seq,
            "done_seq": self.done_seq,
            "result": self.result.name,
            "heartbeat": self.heartbeat,
            "arm_time_ms": self.arm_time_ms,
            "tcp_mm": [round(float(v), 2) for v in self.tcp_mm],
            "picks_total": self.picks_total,
            "interface_version": self.interface_version,
            **({"cmd_seq": self.cmd_seq} if self.cmd_seq is not None else {}),
        }


EventKind = Literal[
    "connected",
    "disconnected",
    "acked",
    "done",
    "alarm",
    "alarm_cleared",
    "fault",
    "fault_cleared",
    "commit_confirmed",
    "restarted",
    "abandoned",
    "error",
]


@dataclass
class ArmEvent:
    """Something the caller's loop should know. ``plan`` is the plan of ``seq`` when known;
    ``result`` is set for ``done`` (None when the arm moved on before its result was read).

    ``restarted``: the robot program restarted (or its registers were cleared); the client
    has resynchronised with the arm's sequence registers. ``abandoned``: the client no longer
    follows command ``seq``: ``result`` None means it may have run (the arm restarted while it
    held it: outcome unknown), NOT_READY that it surely never ran (an unresolved commit the
    arm does not hold, whose time has passed)."""

    kind: EventKind
    t: float
    seq: int = 0
    result: ResultCode | None = None
    plan: PickPlan | None = None
    detail: str = ""
