"""The line runtime, in parts with one job each (docs/architecture.md):

* :mod:`~scallop.app.line.states` — typed states, actions, results and reasons;
* :mod:`~scallop.app.line.control` — the state machine (start, pause, stop, e-stop, reset, fault);
* :mod:`~scallop.app.line.frames` — reading the camera, its faults as alarms;
* :mod:`~scallop.app.line.ledger` — every scallop's decision followed to its end, at most once;
* :mod:`~scallop.app.line.arms` — the arm drivers and the scheduler, no lock held during I/O;
* :mod:`~scallop.app.line.publisher` — the screen's frame and the record, outside the locks;
* :mod:`~scallop.app.line.line` — :class:`Line`, which wires them and drives them.
"""

from scallop.app.line.ledger import ScallopOutcome
from scallop.app.line.states import Action, LineReason, LineState, Result

__all__ = ["Action", "Line", "LineReason", "LineState", "Result", "ScallopOutcome"]


def __getattr__(name: str):
    # Line on first use: the tracker imports the line's reasons, and Line imports the tracker.
    if name == "Line":
        from scallop.app.line.line import Line

        return Line
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
