"""The production record: every scallop seen, every alarm, every operator action, in SQLite.

Writing (the runtime)::

    w = RecordWriter("scallop-record/record.sqlite", snapshot_dir="scallop-record/snapshots",
                     snapshot_budget_bytes=500_000_000, on_alarm=line_alarm)
    w.scallop(ScallopRecord(track_id=17, time=time.time(), encoder_mm=10234.5, result="picked",
                            arm="left", uro_found=True, uro_removed=True), snapshot_jpeg=None)
    w.alarm(alarm)                      # a scallop.app.line_api.Alarm, again on ack or clear
    w.event("start", "maria")
    w.close()                           # everything queued is written first

Scallop rows, alarms and events go into a queue that one thread drains into SQLite (WAL
mode, one transaction per batch): the caller never waits for them. A pick's *intent*
(``w.pick_intent(track_id, arm)``) is the exception: it is committed (synchronous=FULL)
before the call returns, and the line calls it before the arm's commit, so an arm never makes
a pick the record does not hold; if it cannot be written the pick is not sent and the
``record.picks`` alarm is raised. A failing database is retried with rows kept in memory (the
queue holds 100 000; past that rows are dropped, counted, alarmed and reported at exit), and
whatever the database still refuses when the writer closes goes to a spill file beside it
(``scallop record import`` adds it back). A full snapshot disk raises an alarm and the
scallop is still recorded without its frame. A run's lock file tells the next start whether
it crashed: then its end is set, ``crashed = 1``, and its picks still ``sending`` become
``unknown`` (``scallop record check`` lists them).

Snapshots (JPEG frames of failed or doubtful picks, for retraining) are files next to the
database whose total size stays under a byte budget: past it the oldest are deleted (and their
rows' ``snapshot`` set to NULL).

Every row carries the production lot in force when it was queued (``w.set_lot("L-0412")``; a new
run starts with the last lot set), and each scallop its disposition (where it left the belt).

Reading (``scallop report``, tests): :class:`Record` gives shift and lot summaries and CSV export.
"""

from scallop.app.record.reader import CSV_COLUMNS, Record, ShiftSummary, shift_range
from scallop.app.record.rows import DISPOSITIONS, RESULTS, ScallopRecord, check_lot
from scallop.app.record.schema import SCHEMA_VERSION, RecordError, default_db_path, default_record_dir, open_db
from scallop.app.record.writer import AlarmCallback, RecordWriter, write_snapshot_file

__all__ = [
    "DISPOSITIONS",
    "CSV_COLUMNS",
    "RESULTS",
    "SCHEMA_VERSION",
    "AlarmCallback",
    "Record",
    "RecordError",
    "RecordWriter",
    "ScallopRecord",
    "ShiftSummary",
    "check_lot",
    "default_db_path",
    "default_record_dir",
    "open_db",
    "shift_range",
    "write_snapshot_file",
]
