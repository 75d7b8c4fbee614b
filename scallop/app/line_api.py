"""What the operator screen (and any other front end) may ask of the running line.

The runtime implements :class:`LineAPI`; the web app only talks to this protocol, so the
screen is tested against a fake line and the runtime without a browser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

LineState = Literal["stopped", "starting", "running", "waiting_camera", "paused", "stopping", "estop", "fault"]
Role = Literal["operator", "engineer"]


@dataclass
class Alarm:
    id: int
    time: float  # seconds since the epoch (wall clock) of when it was raised
    severity: Literal["info", "warning", "critical"]
    source: str  # "camera", "arm:left", "vision", "record", "line"
    text: str  # plain words, English (the record keeps these)
    acked: bool = False
    acked_by: str = ""
    active: bool = True  # the condition still holds
    # The message in the operator's language: catalogue key ``alarm.<code>`` filled in with
    # ``params`` (scallop/app/web/i18n); "" = none, the screen shows ``text``.
    code: str = ""
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class ArmStatus:
    name: str
    # What the arm reports, read also while the line is in e-stop or fault: "idle",
    # "picking", "starting", "fault", "estop"; or what the controller sees: "disconnected",
    # "comm_error" (it answers with errors), "stalled" (its heartbeat stopped).
    state: str
    connected: bool
    picks: int = 0
    uro_removed: int | None = 0  # None: not known (no pick verifier)
    last_result: str = ""
    utilisation: float = 0.0  # share of the last minute spent picking, 0..1
    fault: str = ""  # the arm's fault code name (CTRL_WATCHDOG, ESTOP, ...) in fault or e-stop


@dataclass
class Recipe:
    name: str
    product_size_mm: tuple[float, float]  # accepted meat diameter range
    belt_speed_mm_s: float
    description: str = ""


@dataclass
class LineSnapshot:
    """What the line shows. A figure that is not known is None, never 0: what a pick did to
    the uro (``uro_removed``, ``missed``, ``adductor_hits``, ``removal_rate``) is known only
    with a pick verifier (the simulator; an inspection camera), not on plain hardware.
    ``seen`` counts scallops decided (picked, failed or skipped: one record row each);
    ``tracking`` those in view and not decided yet."""

    state: LineState
    recipe: str
    uptime_s: float
    seen: int = 0
    tracking: int = 0
    picked: int = 0
    uro_removed: int | None = 0
    missed: int | None = 0
    adductor_hits: int | None = 0
    skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    per_minute: float = 0.0  # scallops seen per minute over the last minute
    removal_rate: float | None = 0.0  # uro_removed / scallops with a uro, 0..1
    frames: int = 0
    frames_dropped: int = 0
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # stage -> {p50, p99}
    arms: list[ArmStatus] = field(default_factory=list)
    alarms: list[Alarm] = field(default_factory=list)
    model: dict = field(default_factory=dict)  # the live model: name, sha256
    shadow: dict = field(default_factory=dict)  # shadow mode's figures (scallop.app.shadow), {} when off
    capture: dict = field(default_factory=dict)  # frame capture's state (scallop.app.capture), {} when none
    # Where the scallops went: picked, passed (no uro), diverted (to rework), not_diverted (alarmed).
    dispositions: dict[str, int] = field(default_factory=dict)
    lot: str = ""  # the production lot in force ('' = none set)
    shift_check: dict = field(default_factory=dict)  # scallop.app.line.shift.ShiftCheck.status()
    channel: dict = field(default_factory=dict)  # the fluorescence channel's figures (channel_status()), {} without one
    # Camera millimetres over counted millimetres along the belt (median of recent scallop pairs,
    # scallop.app.line.beltcheck); None until enough pairs were seen.
    belt_scale: float | None = None
    # The reject gate held open, every scallop to rework: {"why": code, "for_s": seconds}
    # (scallop.app.line.reject.RejectGate.rework_status); {} while it diverts scallop by scallop.
    all_to_rework: dict = field(default_factory=dict)


class LineAPI(Protocol):
    def snapshot(self) -> LineSnapshot: ...
    def latest_jpeg(self) -> bytes | None:
        """The newest camera frame with scallops, uros and picks drawn on it, JPEG-encoded."""

    def latest_uv_jpeg(self) -> bytes | None:
        """The newest fluorescence image registered onto the colour frame, its grey levels as
        measured (not stretched: a weak channel must look weak), JPEG-encoded; None without a
        channel or before its first pair."""

    def channel_status(self) -> dict | None:
        """The fluorescence channel's figures (pairs, drops by reason, the last pair's time
        apart and belt travel, belt and uro levels, and the healthy limits of those levels:
        ``belt_dark_max``, ``glow_min``); None without a channel."""

    def start(self, user: str) -> None: ...
    def pause(self, user: str) -> None: ...
    def stop(self, user: str) -> None: ...
    def estop(self, user: str) -> None: ...
    def reset(self, user: str) -> None:
        """Leave estop/fault after the cause is cleared (back to stopped), and send RESET to
        every arm in fault or e-stop, whatever the line's state. StateError when there is
        nothing to reset."""

    def ack_alarm(self, alarm_id: int, user: str) -> None:
        """Acknowledge an alarm; acknowledging an arm's fault or e-stop alarm sends that arm
        RESET (unless the line itself is in e-stop or fault: its reset covers the arms)."""

    def recipes(self) -> list[Recipe]: ...
    def select_recipe(self, name: str, user: str) -> None:
        """Raises KeyError for an unknown recipe, RuntimeError when not allowed in this state."""

    def health(self) -> dict:
        """``{"ok": bool, "state": ..., ...}``: whether the line's loops are alive (``/healthz``)."""

    def metrics_text(self) -> str:
        """Prometheus exposition text for /metrics."""

    def config_view(self) -> dict:
        """The running configuration and calibration summary (engineer page)."""

    def update_config(self, changes: dict, user: str) -> dict:
        """Engineer-only: apply validated changes (raises ValueError naming the key)."""

    def set_lot(self, lot: str, user: str) -> str:
        """The production lot stamped on every record row from now on; ConfigError for a bad one."""
        ...

    def override_check(self, user: str, reason: str) -> dict:
        """An engineer lets production start without a passed shift check (recorded with the reason)."""
        ...

    def set_capture(self, on: bool, user: str) -> dict:
        """Engineer-only: start or stop keeping frames for labelling; returns the capture's state."""
