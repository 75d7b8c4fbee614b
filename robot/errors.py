"""Typed errors of the robot side. Every message names the arm, field or register involved,
so the CLI can print it as one line and an operator can act on it.

RobotError
├── ProfileError            a register-map file that cannot be used
├── RobotConfigError        an arm configuration value out of range (also a ValueError)
├── RegisterValueError      a value that does not fit its register (type, scale)
├── RobotCommError          talking to the arm failed
│   ├── ModbusExceptionError   the arm answered with a Modbus exception (code named)
│   ├── RobotTimeoutError      no answer in time
│   ├── RobotDisconnectedError no connection (refused, dropped, backing off)
│   └── CommitUncertain        the commit write failed: the client holds the command until
│                              it has read the arm back (never sent again blindly)
├── WorkspaceViolation      a waypoint outside the workspace or inside a keep-out box
├── HeartbeatStalled        the arm's heartbeat stopped: no new commands
├── ArmFaultError           the arm reports fault or e-stop
├── ArmBusyError            the arm has not taken the previous command yet
└── ProtocolError           the arm broke the handshake (e.g. wrong interface version)
    └── ArmNotReady         the arm answers, but its robot program is not running yet
"""

from __future__ import annotations

from scallop.errors import ConfigError, DeviceError, ScallopError, StateError


class RobotError(ScallopError):
    """Base of every robot-side failure."""


class ProfileError(RobotError, ConfigError):
    """A register-map profile is missing, malformed or inconsistent."""


class RobotConfigError(RobotError, ConfigError):
    """An arm configuration value is out of range; the message names the field."""


class RegisterValueError(RobotError, ConfigError):
    """A value cannot be encoded in its register (out of range for type and scale)."""


class RobotCommError(RobotError, DeviceError):
    """Communication with the arm failed."""


# Names as the Modbus application protocol specification (section 7) spells them.
MODBUS_EXCEPTION_NAMES = {
    1: "ILLEGAL FUNCTION",
    2: "ILLEGAL DATA ADDRESS",
    3: "ILLEGAL DATA VALUE",
    4: "SERVER DEVICE FAILURE",
    5: "ACKNOWLEDGE",
    6: "SERVER DEVICE BUSY",
    7: "NEGATIVE ACKNOWLEDGE",
    8: "MEMORY PARITY ERROR",
    10: "GATEWAY PATH UNAVAILABLE",
    11: "GATEWAY TARGET DEVICE FAILED TO RESPOND",
}


class ModbusExceptionError(RobotCommError):
    """The arm answered a request with a Modbus exception response."""

    def __init__(self, code: int, function: int, address: int, count: int, where: str = "") -> None:
        self.code = int(code)
        self.code_name = MODBUS_EXCEPTION_NAMES.get(self.code, f"UNKNOWN EXCEPTION {self.code}")
        self.function = int(function)
        self.address = int(address)
        self.count = int(count)
        self.where = where
        super().__init__(
            f"{where + ': ' if where else ''}Modbus exception {self.code} ({self.code_name}) "
            f"for function {self.function} at register {self.address} (count {self.count})"
        )


class RobotTimeoutError(RobotCommError):
    """No answer from the arm within the configured timeout."""


class RobotDisconnectedError(RobotCommError):
    """No connection to the arm (refused, dropped, or waiting out the reconnect back-off)."""


class CommitUncertain(RobotCommError):
    """The commit (``cmd_seq``) write failed and the arm could not be read back yet: whether
    the command was taken is unknown. The client keeps it and resolves it by reading the
    arm's registers (``commit_confirmed`` or ``abandoned`` events); the caller must not send
    the same target again."""

    def __init__(self, message: str, seq: int) -> None:
        self.seq = int(seq)
        super().__init__(message)


class WorkspaceViolation(RobotError):
    """A waypoint (or the path to it) leaves the workspace or enters a keep-out box."""

    def __init__(self, message: str, waypoint: str = "", point=None) -> None:
        self.waypoint = waypoint
        self.point = point
        super().__init__(message)


class HeartbeatStalled(RobotError, DeviceError):
    """The arm's heartbeat register has not changed for longer than the timeout."""


class ArmFaultError(RobotError, DeviceError):
    """The arm is in fault or e-stop; ``fault_code`` says which."""

    def __init__(self, message: str, fault_code: int = 0, state: int = 0) -> None:
        self.fault_code = fault_code
        self.state = state
        super().__init__(message)


class ArmBusyError(RobotError, StateError):
    """The arm has not acknowledged the previous command, so the command slot is taken."""


class ProtocolError(RobotError, DeviceError):
    """The arm's registers contradict the interface (version mismatch, impossible sequence)."""


class ArmNotReady(ProtocolError):
    """The arm's controller answers but its robot program is not running (yet): its
    ``interface_version`` is 0 or it reports STARTING. The link is kept and read until it is."""


class StateFileError(RobotError, DeviceError):
    """The controller cannot write its command sequence counter (``state_file``): no command
    may be sent until it can, or a restart could reuse a number the arm already holds."""
