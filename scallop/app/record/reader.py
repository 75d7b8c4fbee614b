"""Reading a record: shift summaries, raw rows and CSV export (``scallop report``, tests)."""

from __future__ import annotations

import csv
import math
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TextIO

from scallop.app.line.states import DISPOSITIONS
from scallop.app.record.schema import RecordError, open_db
from scallop.errors import ConfigError, naming_file


@dataclass
class ShiftSummary:
    label: str  # "2024-05-01" or the range
    start: float  # epoch s, inclusive
    end: float  # epoch s, exclusive
    seen: int = 0
    picked: int = 0  # picks executed
    failed: int = 0  # picks aborted or errored
    skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    uro_found: int = 0
    # What picks did is known only where a pick verifier graded them (uro_removed not NULL);
    # with picks and none graded these are None: unknown, not 0.
    uro_removed: int | None = 0
    missed: int | None = 0  # picked without removing the uro, plus failed
    adductor_hits: int | None = 0
    removal_rate: float | None = None  # uro_removed / uro_found; None with no uro found or unknown
    ungraded: int = 0  # picks whose effect on the uro is not known
    by_arm: dict[str, dict[str, int]] = field(default_factory=dict)  # arm -> picked, failed, uro_removed, adductor_hits
    per_hour: list[dict] = field(default_factory=list)  # {"hour": "06:00", "seen", "uro_removed"}
    first: float | None = None
    last: float | None = None
    per_minute: float = 0.0  # seen per minute between the first and last scallop
    alarms: int = 0
    critical_alarms: int = 0
    unacked_alarms: int = 0
    snapshots: int = 0  # frames still kept
    runs: int = 0
    lot: str | None = None  # the lot summarised (None: every lot in the range)
    lots: list[str] = field(default_factory=list)  # the lots the rows carry, first seen first
    # Where the scallops left the belt: picked, passed, diverted, not_diverted (and "unknown" for
    # rows written before dispositions were recorded).
    dispositions: dict[str, int] = field(default_factory=dict)
    shift_checks: list[dict] = field(default_factory=list)  # {"time", "user", "result", "why"}

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        """The summary as the shift leader reads it."""

        def fmt_t(t: float | None) -> str:
            return datetime.fromtimestamp(t).strftime("%H:%M:%S") if t is not None else "-"

        def n(v: int | None) -> str:
            return f"{v:8d}" if v is not None else " unknown"

        rate = f"{self.removal_rate * 100:.1f} %" if self.removal_rate is not None else "-"
        graded = f" ({self.ungraded} picks not graded: no pick verifier)" if self.ungraded else ""
        title = (
            f"lot {self.lot or '(none)'}"
            if self.lot is not None and self.label.startswith("lot ")
            else (f"shift {self.label}" + (f"  lot {self.lot or '(none)'}" if self.lot is not None else ""))
        )
        lines = [
            f"{title}  ({datetime.fromtimestamp(self.start):%Y-%m-%d %H:%M} .. {datetime.fromtimestamp(self.end):%Y-%m-%d %H:%M})",
            f"  scallops seen     {self.seen:8d}   first {fmt_t(self.first)}  last {fmt_t(self.last)}  ({self.per_minute:.1f}/min)",
            f"  picked            {self.picked:8d}   failed {self.failed}",
            f"  uro removed       {n(self.uro_removed)}   {rate} of {self.uro_found} with a uro found{graded}",
            f"  missed            {n(self.missed)}",
            f"  adductor hits     {n(self.adductor_hits)}",
            f"  skipped           {self.skipped:8d}",
        ]
        for reason, n in sorted(self.skipped_by_reason.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"    {reason:<20s}{n:6d}")
        for arm, d in sorted(self.by_arm.items()):
            removed = "unknown" if d["uro_removed"] is None else d["uro_removed"]
            hits = "unknown" if d["adductor_hits"] is None else d["adductor_hits"]
            lines.append(
                f"  arm {arm:<14s}{d['picked']:8d} picks, {removed} uro removed, "
                f"{d['failed']} failed, {hits} adductor hits"
            )
        if self.dispositions:
            lines.append(
                "  left the belt     "
                + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in self.dispositions.items() if v or k != "unknown")
            )
        if self.lot is None and self.lots:
            lines.append(f"  lots              {', '.join(x or '(none)' for x in self.lots)}")
        for c in self.shift_checks:
            why = f": {c['why']}" if c["why"] else ""
            lines.append(f"  shift check       {fmt_t(c['time'])} {c['result']} ({c['user']}){why}")
        lines.append(
            f"  alarms            {self.alarms:8d}   critical {self.critical_alarms}, not acknowledged {self.unacked_alarms}"
        )
        lines.append(f"  snapshots kept    {self.snapshots:8d}")
        return "\n".join(lines)


CSV_COLUMNS = (
    "time_iso",
    "time",
    "run_id",
    "track_id",
    "encoder_mm",
    "x_mm",
    "y_mm",
    "diameter_mm",
    "score",
    "views",
    "uro_found",
    "uro_x_mm",
    "uro_y_mm",
    "uro_score",
    "grasp_x_mm",
    "grasp_y_mm",
    "pull_angle_deg",
    "arm",
    "result",
    "skip_reason",
    "uro_removed",
    "adductor_hit",
    "doubtful",
    "snapshot",
    "detail",
    "lot",
    "disposition",
)


class Record:
    """Read access to a production record (its own connection; safe while the line writes)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._con = open_db(self.path, create=False)
        # Read-only, a record of an older schema stays as it is: one without lots or dispositions
        # (before version 5) reports them as unknown.
        self._lots = "lot" in {r[1] for r in self._con.execute("PRAGMA table_info(scallops)")}

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Record:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_lot(self, lot: str | None) -> None:
        if lot is not None and not self._lots:
            raise RecordError(
                f"{self.path}: this record was written before lots were recorded; "
                "open it once with this version of the line program, or report it without --lot"
            )

    def scallops(self, start: float = -math.inf, end: float = math.inf, lot: str | None = None) -> list[dict]:
        self._check_lot(lot)
        where, args = _where(start, end, lot)
        cur = self._con.execute(f"SELECT * FROM scallops WHERE {where} ORDER BY time, id", args)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row)) for row in cur]

    def alarms(self, start: float = -math.inf, end: float = math.inf, lot: str | None = None) -> list[dict]:
        where, args = _where(start, end, lot)
        cur = self._con.execute(f"SELECT * FROM alarms WHERE {where} ORDER BY time, id", args)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row)) for row in cur]

    def events(self, start: float = -math.inf, end: float = math.inf, lot: str | None = None) -> list[dict]:
        where, args = _where(start, end, lot)
        cur = self._con.execute(f"SELECT * FROM events WHERE {where} ORDER BY time, id", args)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row)) for row in cur]

    def lots(self, start: float = -math.inf, end: float = math.inf) -> list[str]:
        """The lots the scallop rows in [start, end) carry, in the order they first appear."""
        if not self._lots:
            return []
        where, args = _where(start, end, None)
        return [
            r[0]
            for r in self._con.execute(
                f"SELECT lot, MIN(time) AS t FROM scallops WHERE {where} GROUP BY lot ORDER BY t", args
            )
        ]

    def span(self, lot: str) -> tuple[float, float]:
        """The half-open time range of every row of ``lot`` (scallops, alarms, events); a lot the
        record does not hold is an error naming the lots it does."""
        self._check_lot(lot)
        first, last = self._con.execute(
            "SELECT MIN(t0), MAX(t1) FROM ("
            " SELECT MIN(time) AS t0, MAX(time) AS t1 FROM scallops WHERE lot = ?"
            " UNION ALL SELECT MIN(time), MAX(time) FROM alarms WHERE lot = ?"
            " UNION ALL SELECT MIN(time), MAX(time) FROM events WHERE lot = ?)",
            (lot, lot, lot),
        ).fetchone()
        if first is None:
            known = ", ".join(repr(x) for x in self.lots()) or "none"
            raise RecordError(f"{self.path}: no rows of lot {lot!r} (the lots here: {known})")
        return float(first), float(last) + 0.001

    def shift_checks(self, start: float, end: float) -> list[dict]:
        """The shift checks and overrides in [start, end): time, user, result (``pass``,
        ``fail``, ``override``) and why."""
        import json

        out = []
        for t, kind, user, detail in self._con.execute(
            "SELECT time, kind, user, detail FROM events WHERE kind IN ('shift_check', 'shift_check_override')"
            " AND time >= ? AND time < ? ORDER BY time, id",
            (start, end),
        ):
            try:
                d = json.loads(detail)
            except ValueError:
                d = {}
            result = "override" if kind == "shift_check_override" else str(d.get("result", "?"))
            out.append({"time": t, "user": user, "result": result, "why": d.get("why") or d.get("reason") or ""})
        return out

    def summary(self, start: float, end: float, label: str = "", lot: str | None = None) -> ShiftSummary:
        """The figures of [start, end); with ``lot``, of that lot's rows only."""
        c = self._con
        s = ShiftSummary(
            label=label or f"{datetime.fromtimestamp(start):%Y-%m-%d %H:%M}..{datetime.fromtimestamp(end):%H:%M}",
            start=start,
            end=end,
            lot=lot,
        )
        self._check_lot(lot)
        where, args = _where(start, end, lot)
        row = c.execute(
            "SELECT COUNT(*), SUM(result='picked'), SUM(result='failed'), SUM(result='skipped'), SUM(uro_found),"
            " SUM(uro_removed=1), SUM(result='picked' AND uro_removed=0) + SUM(result='failed'), SUM(adductor_hit=1),"
            " MIN(time), MAX(time), SUM(snapshot IS NOT NULL), COUNT(DISTINCT run_id),"
            " SUM(result='picked' AND uro_removed IS NULL)"
            " FROM scallops WHERE " + where,
            args,
        ).fetchone()
        (
            s.seen,
            s.picked,
            s.failed,
            s.skipped,
            s.uro_found,
            s.uro_removed,
            s.missed,
            s.adductor_hits,
            s.first,
            s.last,
            s.snapshots,
            s.runs,
        ) = (row[0],) + tuple(int(v or 0) for v in row[1:8]) + (row[8], row[9], int(row[10] or 0), row[11])
        s.ungraded = int(row[12] or 0)
        if s.picked and s.ungraded == s.picked:
            s.uro_removed = s.missed = s.adductor_hits = None
        s.removal_rate = s.uro_removed / s.uro_found if s.uro_found and s.uro_removed is not None else None
        if s.first is not None and s.last is not None and s.last > s.first:
            s.per_minute = s.seen / ((s.last - s.first) / 60.0)
        s.skipped_by_reason = dict(
            c.execute(
                f"SELECT skip_reason, COUNT(*) FROM scallops WHERE result='skipped' AND {where} GROUP BY skip_reason",
                args,
            ).fetchall()
        )
        for arm, picked, failed, removed, hits, ungraded in c.execute(
            "SELECT arm, SUM(result='picked'), SUM(result='failed'), SUM(uro_removed=1), SUM(adductor_hit=1),"
            " SUM(result='picked' AND uro_removed IS NULL)"
            f" FROM scallops WHERE arm != '' AND {where} GROUP BY arm",
            args,
        ):
            unknown = bool(picked) and ungraded == picked
            s.by_arm[arm] = dict(
                picked=int(picked or 0),
                failed=int(failed or 0),
                uro_removed=None if unknown else int(removed or 0),
                adductor_hits=None if unknown else int(hits or 0),
            )
        hours: dict[str, dict] = {}
        for t, removed in c.execute(f"SELECT time, uro_removed FROM scallops WHERE {where} ORDER BY time", args):
            h = datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:00")
            d = hours.setdefault(h, {"hour": h, "seen": 0, "uro_removed": 0})
            d["seen"] += 1
            d["uro_removed"] += 1 if removed == 1 else 0
        s.per_hour = list(hours.values())
        a = c.execute(
            f"SELECT COUNT(*), SUM(severity='critical'), SUM(acked=0) FROM alarms WHERE {where}",
            args,
        ).fetchone()
        s.alarms, s.critical_alarms, s.unacked_alarms = a[0], int(a[1] or 0), int(a[2] or 0)
        got = (
            dict(c.execute(f"SELECT disposition, COUNT(*) FROM scallops WHERE {where} GROUP BY disposition", args))
            if self._lots
            else {"": s.seen}
        )
        s.dispositions = {d: int(got.pop(d, 0)) for d in DISPOSITIONS}
        s.dispositions["unknown"] = int(sum(got.values()))
        s.lots = self.lots(start, end) if lot is None else [lot]
        s.shift_checks = self.shift_checks(start, end)
        return s

    def export_csv(
        self, out: str | Path | TextIO, start: float = -math.inf, end: float = math.inf, lot: str | None = None
    ) -> int:
        """Write the scallop rows in [start, end) (of ``lot`` only, when given) as CSV (``-`` =
        stdout); returns the row count."""
        if isinstance(out, (str, Path)) and str(out) == "-":
            return self._write_csv(sys.stdout, start, end, lot)
        if isinstance(out, (str, Path)):
            p = Path(out)
            if p.parent and not p.parent.is_dir():
                raise FileNotFoundError(f"{p.parent}: no such folder for the CSV file")
            # Written beside and renamed: a full disk leaves no half CSV to be taken for the day's.
            tmp = p.with_name(f".{p.name}.{os.getpid()}.partial")
            try:
                with naming_file(p), tmp.open("w", newline="", encoding="utf-8") as f:
                    n = self._write_csv(f, start, end, lot)
                os.replace(tmp, p)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            return n
        return self._write_csv(out, start, end, lot)

    def _write_csv(self, f: TextIO, start: float, end: float, lot: str | None) -> int:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        n = 0
        for r in self.scallops(start, end, lot):
            r["time_iso"] = datetime.fromtimestamp(r["time"]).astimezone().isoformat(timespec="milliseconds")
            w.writerow(["" if r.get(c) is None else r.get(c) for c in CSV_COLUMNS])
            n += 1
        return n


def _where(start: float, end: float, lot: str | None) -> tuple[str, tuple]:
    """The rows of [start, end), of ``lot`` only when it is given (a SQL condition and its values)."""
    if lot is None:
        return "time >= ? AND time < ?", (start, end)
    return "time >= ? AND time < ? AND lot = ?", (start, end, lot)


def _parse_hhmm(s: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", s or "")
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ConfigError(f"day start {s!r}: expected a time like 06:00")
    return int(m.group(1)), int(m.group(2))


def shift_range(spec: str, day_start: str = "00:00", now: datetime | None = None) -> tuple[float, float, str]:
    """``(start, end, label)`` in epoch seconds for a production day: ``today``, ``yesterday``
    or a date ``YYYY-MM-DD``, in local time. With ``day_start="06:00"`` a day runs from 06:00 to
    06:00 the next morning, and "today" at 03:00 is still the day that began yesterday 06:00."""
    hh, mm = _parse_hhmm(day_start)
    now = now or datetime.now()
    today_start = datetime.combine(now.date(), datetime.min.time()).replace(hour=hh, minute=mm)
    current = now.date() if now >= today_start else now.date() - timedelta(days=1)
    if spec == "today":
        d = current
    elif spec == "yesterday":
        d = current - timedelta(days=1)
    else:
        try:
            d = date.fromisoformat(spec)
        except (TypeError, ValueError):
            raise ConfigError(f"shift {spec!r}: expected today, yesterday or a date like 2024-05-01") from None
    start = datetime.combine(d, datetime.min.time()).replace(hour=hh, minute=mm)
    end = datetime.combine(d + timedelta(days=1), datetime.min.time()).replace(hour=hh, minute=mm)
    return start.timestamp(), end.timestamp(), d.isoformat()
