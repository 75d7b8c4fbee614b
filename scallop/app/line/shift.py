"""The shift's lot and its start-of-shift check (docs/shift-check.md).

**Lot.** The production lot in force is stamped on every record row (the record writer keeps
it); it is set on the screen (an operator) or with ``scallop run --lot``, and a restarted line
carries on with the last lot set.

**Shift check.** Like a metal detector's challenge test: before production, known test pieces
(``with_uro`` scallops with their uro, ``without_uro`` without) go under the camera while the
feeder is held, and each must end as expected: a piece with a uro *picked*, one without
*passed*. Until a check passes (or an engineer overrides it, with a reason), Start begins a
check, not production. A pass or an override holds for ``valid_h`` hours, across restarts (the
record keeps it); past that a running line says the check is due. A failed check pauses the
line with a critical alarm naming what went wrong.

A check first waits until the camera has seen no scallop for ``clear_s`` (product already
between the feeder and the camera goes through and is handled as production), then asks for
the pieces: the test pieces are the first ``with_uro + without_uro`` scallops first seen after
that. They are compared as counts, since pieces laid side by side reach the camera in no set
order. Pieces laid too early keep the belt from clearing and the check fails at its timeout:
never a product scallop taken for a test piece.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from scallop.app.config import ShiftCheckSection
from scallop.app.line.states import Disposition
from scallop.errors import ConfigError, StateError

# What a test piece must become (a disposition of scallop.app.line.reject).
EXPECTED = {"with_uro": Disposition.PICKED.value, "without_uro": Disposition.PASSED.value}
REASON_MAX = 200


def check_reason(reason: object) -> str:
    if not isinstance(reason, str) or not reason.strip() or len(reason.strip()) > REASON_MAX:
        raise ConfigError(f"reason={reason!r}: an override needs a reason of 1 to {REASON_MAX} characters")
    if not all(c.isprintable() for c in reason.strip()):
        raise ConfigError(f"reason={reason!r}: only printable characters")
    return reason.strip()


class ShiftCheck:
    """``event(kind, user, detail)`` records; ``alarms`` is the line's; ``clock`` the line's
    (timeouts), ``wall_clock`` the epoch (validity across restarts); ``last``: the record's
    newest ``shift_check`` and ``shift_check_override`` events (``RecordWriter.last_events``).

    States: ``off`` (not required), ``due``, ``clearing`` (waiting for the belt to show no
    scallop), ``running`` (the pieces are asked for), ``passed``, ``failed``, ``overridden``."""

    def __init__(
        self,
        config: ShiftCheckSection,
        alarms,
        event: Callable[[str, str, dict], object],
        clock,
        wall_clock: Callable[[], float] = time.time,
        last: dict | None = None,
    ) -> None:
        self.config = config
        self.alarms = alarms
        self.event = event
        self.clock = clock
        self.wall_clock = wall_clock
        self.state = "off" if not config.required else "due"
        self.user = ""
        self.valid_until: float | None = None
        self.pieces: list[str] = []  # dispositions of the pieces so far
        self.result: dict = {}
        self.first_piece_id: int | None = None  # tracks from this id on are test pieces
        self._started = self._asked = self._last_seen = 0.0
        best = None
        for kind in ("shift_check", "shift_check_override"):
            e = (last or {}).get(kind)
            if e and (kind == "shift_check_override" or e["detail"].get("result") == "pass"):
                until = float(e["time"]) + config.valid_h * 3600.0
                if self.valid_until is None or until > self.valid_until:
                    self.valid_until, self.user, best = until, e["user"], kind
                    self.result = dict(e["detail"])
        if config.required and best is not None and self.wall_clock() < self.valid_until:
            self.state = "passed" if best == "shift_check" else "overridden"

    # ------------------------------------------------------------------ asking
    @property
    def running(self) -> bool:
        """A check is under way (clearing the belt or waiting for the pieces): feeder held."""
        return self.state in ("clearing", "running")

    def due(self) -> bool:
        """Whether a Start must begin with a check (required, and no pass or override holds)."""
        if not self.config.required:
            return False
        return self.valid_until is None or self.wall_clock() >= self.valid_until

    def expected(self) -> dict[str, int]:
        want: Counter = Counter()
        want[EXPECTED["with_uro"]] += self.config.with_uro
        want[EXPECTED["without_uro"]] += self.config.without_uro
        return {k: v for k, v in want.items() if v}

    def status(self) -> dict:
        """What the screen shows: the state, the pieces so far and until when a pass holds."""
        if not self.config.required:
            return {"required": False, "state": "off"}
        # A pass or an override that ran out reads as due (the state itself changes only when the
        # line acts on it: overdue(), begin()).
        lapsed = self.state in ("passed", "overridden") and self.due()
        state = "due" if lapsed else self.state
        return {
            "required": True,
            "state": state,
            "user": self.user,
            "with_uro": self.config.with_uro,
            "without_uro": self.config.without_uro,
            "seen": len(self.pieces),
            "of": self.config.pieces,
            "valid_until": self.valid_until if state in ("passed", "overridden") else None,
            "result": self.result,
        }

    # ------------------------------------------------------------------ running
    def begin(self, user: str) -> None:
        """The operator pressed Start with the check due: the feeder stays held; once the belt
        shows no scallop for ``clear_s`` the pieces are asked for."""
        self.state = "clearing"
        self.user = user
        self.pieces = []
        self.result = {}
        self.first_piece_id = None
        self._started = self._last_seen = self.clock.now()
        c = self.config
        self.event("shift_check_start", user, {"with_uro": c.with_uro, "without_uro": c.without_uro})
        self.alarms.clear("shift.check")
        self.alarms.raise_(
            "shift.check_clearing",
            "info",
            "line",
            "shift check: the feeder is held until the belt is clear; do not lay the test pieces yet",
        )

    def saw(self, scallops: int) -> None:
        """The frame loop: ``scallops`` in view or still tracked (the belt is not clear)."""
        if self.state == "clearing" and scallops:
            self._last_seen = self.clock.now()

    def ask(self, next_track_id: int) -> None:
        """The belt is clear: scallops tracked from ``next_track_id`` on are the test pieces."""
        c = self.config
        self.state = "running"
        self.first_piece_id = next_track_id
        self._asked = self.clock.now()
        self.alarms.clear("shift.check_clearing")
        self.alarms.raise_(
            "shift.check_running",
            "info",
            "line",
            f"shift check: pass the {c.pieces} test pieces now ({c.with_uro} with a uro, {c.without_uro} without); "
            "the feeder is held until they are through",
            params={"with_uro": str(c.with_uro), "without_uro": str(c.without_uro)},
        )

    def offer(self, dispositions: list[str]) -> bool | None:
        """The test pieces' dispositions, in order. Returns True when the check passed with
        these, False when it failed, None while it runs (or when none runs)."""
        if self.state != "running":
            return None
        for d in dispositions:
            if len(self.pieces) < self.config.pieces:
                self.pieces.append(d)
        if len(self.pieces) < self.config.pieces:
            return None
        got = dict(Counter(self.pieces))
        if got == self.expected():
            return self._end("pass", got, "")
        return self._end("fail", got, f"expected {_words(self.expected())}, got {_words(got)}")

    def tick(self, next_track_id: int | None = None) -> bool | None:
        """Time passing: the belt cleared (the pieces are asked for, given the tracker's
        ``next_track_id``), or False when the check ran out of time (it failed)."""
        now, c = self.clock.now(), self.config
        if self.state == "clearing":
            if now - self._started > c.timeout_s:
                return self._end(
                    "fail", {}, f"the belt did not clear of scallops in {c.timeout_s:g} s (is the feeder held?)"
                )
            if now - self._last_seen >= c.clear_s and next_track_id is not None:
                self.ask(next_track_id)
            return None
        if self.state != "running" or now - self._asked < c.timeout_s:
            return None
        got = dict(Counter(self.pieces))
        return self._end(
            "fail", got, f"only {len(self.pieces)} of {c.pieces} test pieces came through in {c.timeout_s:g} s"
        )

    def abandon(self, why: str) -> None:
        """The line paused, stopped or faulted during the check: it failed, nothing passes."""
        if self.running:
            self._end("fail", dict(Counter(self.pieces)), f"the check was interrupted ({why})")

    def _end(self, result: str, got: dict, why: str) -> bool:
        detail = {"result": result, "expected": self.expected(), "got": got, "pieces": list(self.pieces)}
        if why:
            detail["why"] = why
        self.result = detail
        self.event("shift_check", self.user, detail)
        self.alarms.clear("shift.check_clearing")
        self.alarms.clear("shift.check_running")
        self.alarms.clear("shift.overdue")
        if result == "pass":
            self.state = "passed"
            self.valid_until = self.wall_clock() + self.config.valid_h * 3600.0
            return True
        self.state = "failed"
        self.alarms.raise_(
            "shift.check",
            "critical",
            "line",
            f"shift check failed: {why}; production does not start: check the camera and the arms, then press "
            "Start to run the check again (or an engineer overrides it)",
            params={"detail": why},
        )
        return False

    def overdue(self) -> None:
        """A running line whose pass or override has run out: a warning until the next check
        (production goes on: stopping mid-shift is the shift leader's call)."""
        if self.config.required and not self.running and self.state in ("passed", "overridden", "due") and self.due():
            self.state = "due"
            self.alarms.raise_(
                "shift.overdue",
                "warning",
                "line",
                "the shift check is due: pause the line and press Start to run it with the test pieces",
            )

    def override(self, user: str, reason: object) -> dict:
        """An engineer lets production start without a passed check; recorded with the reason."""
        if not self.config.required:
            raise StateError("no shift check is required on this line ([shift_check] required = false)")
        text = check_reason(reason)
        self.pieces = []
        self.state = "overridden"
        self.user = user
        self.valid_until = self.wall_clock() + self.config.valid_h * 3600.0
        self.result = {"reason": text}
        self.event("shift_check_override", user, {"reason": text})
        for key in ("shift.check", "shift.check_clearing", "shift.check_running", "shift.overdue"):
            self.alarms.clear(key)
        return self.status()


def _words(counts: dict[str, int]) -> str:
    return ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(counts.items())) or "none"


class Shift:
    """The lot in force and the shift check, for the line: ``record`` (the record writer or
    None) stamps the lot and tells the last lot and check; ``publisher`` records events."""

    def __init__(self, config: ShiftCheckSection, alarms, publisher, clock, record=None) -> None:
        self.record = record
        self.publisher = publisher
        last = getattr(record, "last_events", {}) if record is not None else {}
        self.check = ShiftCheck(config, alarms, publisher.event, clock, last=last)
        self._lot = getattr(record, "lot", "") if record is not None else ""

    @property
    def lot(self) -> str:
        return self._lot

    def set_lot(self, lot: object, user: str) -> str:
        """The lot from now on (1–40 printable characters; '' ends the lot); recorded."""
        from scallop.app.record import RecordError, check_lot

        try:
            # The record checks what it stamps; without one the same rule applies.
            new = self.record.set_lot(lot) if self.record is not None else check_lot(lot)
        except RecordError as e:
            raise ConfigError(str(e)) from None
        previous, self._lot = self._lot, new
        self.publisher.event("lot", user, {"lot": new, "from": previous})
        return new

    def offer(self, done: list) -> bool | None:
        """Finished scallops: while the check runs, the first of them are its test pieces
        (marked ``test_piece`` in the record): those first tracked once the belt was clear.
        False when the check failed with them."""
        first = self.check.first_piece_id
        if self.check.state != "running" or first is None:
            return None
        pieces = [oc for oc in done if oc.track_id >= first]
        for oc in pieces[: self.check.config.pieces - len(self.check.pieces)]:
            oc.extra["test_piece"] = True
        return self.check.offer([str(oc.extra.get("disposition", "")) for oc in pieces])

    def status(self) -> dict:
        return {"lot": self._lot, "shift_check": self.check.status()}
