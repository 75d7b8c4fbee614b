"""The line's state machine: the one place that decides start, pause, stop, e-stop, reset
and fault.

:class:`LineControl` holds the state and the lock that orders control actions with the
decisions of the frame loop (both are CPU-only: no I/O is ever done under it). Each action
is checked against :data:`TRANSITIONS`; a refused one raises
:class:`~scallop.errors.StateError` saying why, in the operator's words.
"""

from __future__ import annotations

import threading

from scallop.app.line.states import Action, LineState
from scallop.errors import StateError

S = LineState
ANY = frozenset(LineState)

# action -> (states it is allowed from, state it leads to). STOP leads to STOPPING; the line
# reaches STOPPED once the arms have finished what they hold. E-STOP is allowed from anywhere.
TRANSITIONS: dict[Action, tuple[frozenset[LineState], LineState]] = {
    Action.START: (frozenset({S.STOPPED, S.PAUSED}), S.RUNNING),
    Action.PAUSE: (frozenset({S.RUNNING, S.WAITING_CAMERA}), S.PAUSED),
    Action.STOP: (frozenset({S.RUNNING, S.PAUSED, S.STARTING, S.WAITING_CAMERA}), S.STOPPING),
    Action.ESTOP: (ANY, S.ESTOP),
    Action.RESET: (frozenset({S.ESTOP, S.FAULT}), S.STOPPED),
}

# The line tracks scallops (and decides on them) only in these states.
TRACKING = frozenset({S.RUNNING, S.PAUSED})


class LineControl:
    def __init__(self, clock) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self.state = LineState.STOPPED
        self.crash: str | None = None  # why the line faulted, until reset
        self.t_started: float | None = None

    def check(self, action: Action) -> None:
        """Raise StateError when ``action`` is not allowed now (call under ``lock``)."""
        allowed, _ = TRANSITIONS[action]
        if self.state not in allowed:
            raise StateError(f"cannot {action.value} while the line is {self.state.value}")
        if action == Action.START and self.crash:
            raise StateError(f"the line stopped after a fault: {self.crash}; reset first")

    def go(self, action: Action) -> LineState:
        """Take ``action`` (checked); returns the state it left."""
        with self.lock:
            self.check(action)
            was = self.state
            self.state = TRANSITIONS[action][1]
            if action == Action.START and self.t_started is None:
                self.t_started = self.clock.now()
            if action == Action.RESET:
                self.crash = None
            return was

    def fault(self, why: str) -> None:
        with self.lock:
            self.crash = why
            self.state = LineState.FAULT

    def inputs(self, usable: bool) -> None:
        """The camera gives frames to pick from (usable) or not: RUNNING ↔ WAITING_CAMERA.
        Other states keep their own meaning (a paused line stays paused)."""
        with self.lock:
            if not usable and self.state == LineState.RUNNING:
                self.state = LineState.WAITING_CAMERA
            elif usable and self.state == LineState.WAITING_CAMERA:
                self.state = LineState.RUNNING

    def stopped(self) -> None:
        """The arms are home after a STOP."""
        with self.lock:
            if self.state == LineState.STOPPING:
                self.state = LineState.STOPPED

    @property
    def tracking(self) -> bool:
        return self.state in TRACKING

    def uptime_s(self) -> float:
        return 0.0 if self.t_started is None else self.clock.now() - self.t_started
