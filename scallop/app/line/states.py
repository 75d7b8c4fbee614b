"""The line's vocabulary: its states, the control actions and why a scallop was not picked.

These values are what the record stores, what the screen shows and what the scenario report
counts; docs/interfaces.md lists them. Each enum is a ``StrEnum``: its members compare equal
to (and are written as) their plain string values.
"""

from __future__ import annotations

from enum import StrEnum

from scallop.robot.planning import SkipReason
from scallop.vision.detections import VisionReason


class LineState(StrEnum):
    STOPPED = "stopped"  # nothing tracked, no picks; the screen still shows the belt
    STARTING = "starting"
    RUNNING = "running"  # tracking and picking
    # Started, but the camera gives nothing to pick from: no frames, or frames without a belt
    # count the line can trust (an alarm names the cause). Back to running by itself.
    WAITING_CAMERA = "waiting_camera"
    PAUSED = "paused"  # tracking, no new picks; picks the arms hold finish
    STOPPING = "stopping"  # arms finish what they hold, then go to ready
    ESTOP = "estop"  # stop request: no commands until an operator resets
    FAULT = "fault"  # a stage crashed: stopped until an operator resets


class Action(StrEnum):
    START = "start"
    PAUSE = "pause"
    STOP = "stop"
    ESTOP = "estop"
    RESET = "reset"


class Result(StrEnum):
    """How one scallop's decision ended."""

    PICKED = "picked"  # an arm completed the pick
    FAILED = "failed"  # sent to an arm that did not complete it
    SKIPPED = "skipped"  # never sent to an arm (the reason says why)


class LineReason(StrEnum):
    """Why the line itself (not vision, not the scheduler) did not pick a scallop."""

    VIEWS_DISAGREE = "views_disagree"  # the one pickable view is contradicted by the others
    LINE_PAUSED = "line_paused"
    LINE_STOPPED = "line_stopped"
    ESTOP = "estop"
    LINE_FAULT = "line_fault"
    BAD_TARGET = "bad_target"  # the grasp could not be made a pick target (not finite)
    ARM_EMPTY = "arm_empty"  # the arm closed on nothing
    ARM_UNKNOWN = "arm_unknown"  # outcome unknown: the arm moved on before its result was read, or restarted holding it
    ENCODER_FAULT = "encoder_fault"  # the belt count it was planned on is not trusted any more
    PLC_LOST = "plc_lost"  # the line PLC does not answer: no picks are sent (its safe state diverts)
    SAFETY_OPEN = "safety_open"  # the line's safety circuit is open: no picks are sent


# Every reason a record row may carry: vision's, the line's and the scheduler's.
ALL_REASONS: tuple[str, ...] = tuple(r.value for e in (VisionReason, LineReason, SkipReason) for r in e)


# Where a scallop left the belt (scallop.app.line.reject gives each its one).
class Disposition(StrEnum):
    PICKED = "picked"
    PASSED = "passed"
    DIVERTED = "diverted"
    NOT_DIVERTED = "not_diverted"


DISPOSITIONS: tuple[str, ...] = tuple(d.value for d in Disposition)
