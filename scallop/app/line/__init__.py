"""The line runtime, in parts with one job each (docs/architecture.md):

* :mod:`~scallop.app.line.states` — typed states, actions, results and reasons;
* :mod:`~scallop.app.line.control` — the state machine (start, pause, stop, e-stop, reset, fault);
* :mod:`~scallop.app.line.frames` — reading the camera, its faults as alarms;
* :mod:`~scallop.app.line.ledger` — every scallop's decision followed to its end, at most once;
* :mod:`~scallop.app.line.arms` — the arm drivers and the scheduler, no lock held during I/O;
* :mod:`~scallop.app.line.publisher` — the screen's frame and the record, outside the locks;
* :mod:`~scallop.app.line.reject` — each scallop's disposition through the line PLC's reject gate;
* :mod:`~scallop.app.line.demand` — how hard the arrivals drive the arms (back-pressure);
* :mod:`~scallop.app.line.shift` — the production lot and the start-of-shift check;
* :mod:`~scallop.app.line.models` — the live model, its shadow and the frame capture;
* :mod:`~scallop.app.line.readout` — the screen's snapshot, the metrics and the run summary;
* :mod:`~scallop.app.line.settings` — what may change while the line runs (recipe, thresholds);
* :mod:`~scallop.app.line.beltcheck` — the belt counts held to what the camera sees;
* :mod:`~scallop.app.line.drivers` — the threaded and the stepped drivers, and the loops' health;
* :mod:`~scallop.app.line.line` — :class:`Line`, which wires them.
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
