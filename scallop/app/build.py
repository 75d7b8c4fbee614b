"""Building a line from its configuration: the backend it runs on and its record."""

from __future__ import annotations

from pathlib import Path

from scallop.app.backends import HardwareBackend, SimBackend
from scallop.app.config import LineConfig
from scallop.app.line import Line
from scallop.app.line.models import check_model_file
from scallop.app.record import RecordWriter, default_db_path


def build_line(config: LineConfig, record_path=None, seed: int = 0, clock=None, backend=None) -> Line:
    """The line for ``config`` with its record writer (``scallop run``, the scenario bench,
    tests). ``seed`` matters on the simulator only; ``clock`` (default: wall time on
    hardware, virtual time on the simulator) lets a recording replay on virtual time;
    ``backend`` replaces the one the configuration implies (``scallop replay``)."""
    if backend is not None:
        pass
    elif config.is_simulated:
        backend = SimBackend(config, clock=clock, seed=seed)
    else:
        backend = HardwareBackend(config, clock=clock)
    # What refuses a start without touching a device (the configuration, the calibration file,
    # the model file) refuses it before the record is opened: a refused start is no run in the
    # record's runs.
    backend.check()
    check_model_file(config)
    path = Path(record_path or config.record.path or default_db_path())  # its folder: made (or refused) by the writer
    snap_dir = Path(config.record.snapshot_dir) if config.record.snapshot_dir else path.parent / "snapshots"
    line = None
    early: list[tuple] = []  # what the writer said before the line was there (its snapshot folder)

    def on_alarm(key, severity, text, active):
        if line is None:
            early.append((key, severity, text, active))
        elif active:
            line.alarms.raise_(key, severity, "record", text)
        else:
            line.alarms.clear(key)

    writer = RecordWriter(
        path,
        snapshot_dir=snap_dir,
        snapshot_budget_bytes=int(config.record.snapshot_budget_mb * 1e6),
        on_alarm=on_alarm,
        retention=config.record.retention(),
        wall_clock=backend.clock.wall,
    )
    line = Line(config, backend, record=writer)
    for a in early:  # an outside try's unwritable snapshot folder was warned to nobody
        on_alarm(*a)
    return line
