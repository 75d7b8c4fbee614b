"""What the line tells: the screen's snapshot, the metrics and the run summary, all counted
from one tally (:meth:`Readout.tally`), so the screen, ``/metrics`` and ``scallop run``'s JSON
never disagree.

What a pick did to its scallop is known only with a pick verifier (the simulator's truth, an
inspection camera); without one those figures are None, never 0.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from scallop.app.line.states import LineState
from scallop.app.line_api import LineSnapshot

if TYPE_CHECKING:
    from scallop.app.line.line import Line


class Readout:
    def __init__(self, line: Line) -> None:
        self.line = line

    def tally(self) -> dict:
        """The counts the screen, the metrics and the summary all show, counted one way.
        What a pick did to its scallop is known only with a pick verifier (the simulator's
        truth, an inspection camera); without one those figures are None, never 0."""
        c, reasons = self.line.ledger.totals()
        known = self.line.ledger.verifier is not None
        picked, failed, removed = c.get("picked", 0), c.get("failed", 0), c.get("uro_removed", 0)
        # Skipped for a uro, or for one that could not be ruled out, count against the rate;
        # "no uro" and "no uro seen, outside the fluorescence camera's view" do not.
        with_uro = picked + failed + sum(v for k, v in reasons.items() if k not in ("no_uro", "outside_channel"))
        return {
            "seen": c.get("seen", 0),
            "tracking": self.line.tracker.open_count() if self.line.tracker is not None else 0,
            "picked": picked,
            "uro_removed": removed if known else None,
            "missed": c.get("missed", 0) if known else None,
            "adductor_hits": c.get("adductor_hits", 0) if known else None,
            "skipped": c.get("skipped", 0) + failed,
            "skipped_by_reason": reasons,
            "removal_rate": (removed / with_uro) if known and with_uro else None,
            "frames": self.line.frames,
            "frames_dropped": self._frames_dropped(),
            "dispositions": self.line.reject.summary()["dispositions"] if self.line.reject is not None else {},
        }

    def snapshot(self) -> LineSnapshot:
        now = self.line.clock.now()
        arms = self.line.arms.statuses(lambda name: self.line.ledger.arm_tally(name, now))
        if self.line.state in (LineState.ESTOP, LineState.FAULT):
            # The line holds its arms: no heartbeat goes out and each arm's watchdog stops it.
            # An arm stopped that way (or still finishing its last move) shows the line's stop;
            # one that is disconnected, or stopped for a cause of its own, shows that.
            arms = [
                replace(a, state="estop")
                if a.state in ("idle", "picking", "starting", "stalled") or a.fault == "CTRL_WATCHDOG"
                else a
                for a in arms
            ]
        return LineSnapshot(
            state=self.line.state.value,
            recipe=self.line.recipe,
            uptime_s=self.line.control.uptime_s(),
            per_minute=self.line.stats.per_minute(now, "seen"),
            latency_ms={k: {"p50": v["p50"], "p99": v["p99"]} for k, v in self.line.stats.latency_summary().items()},
            arms=arms,
            alarms=self.line.alarms.visible(),
            channel=self.line.channel_status() or {},
            belt_scale=self.line.belt_check.scale_ratio if self.line.belt_check is not None else None,
            all_to_rework=self.line.reject.rework_status(self.line.state) if self.line.reject is not None else {},
            **self.tally(),
            **self.line.models.figures(),
            **(self.line.shift.status() if self.line.shift is not None else {}),
        )

    def _frames_dropped(self) -> int:
        return self.line.frames_dropped + getattr(self.line.backend.camera, "dropped", 0)

    def metrics_text(self) -> str:
        """The line's metrics and its record writer's (docs/interfaces.md)."""
        from scallop.app.metrics import RecordCollector, SnapshotCollector, render

        collectors = [SnapshotCollector(self.snapshot())]
        if self.line.record is not None:
            collectors.append(RecordCollector(self.line.record.stats))
        return render(*collectors)

    def summary(self) -> dict:
        """The one-line JSON of ``scallop run --duration``: the screen's counts (and the
        simulator's truth beside them when there is one)."""
        out = self.tally()
        if self.line.shift is not None:
            out.update(self.line.shift.status())
        out.pop("removal_rate")
        out["model"] = dict(self.line.models.model)
        if self.line.reject is not None:
            out.update(self.line.reject.summary())
        if self.line.models.shadow is not None:
            out["shadow"] = self.line.models.shadow.figures()
        if self.line.models.capture is not None and self.line.models.capture.kept:
            out["capture"] = self.line.models.capture.status()
        channel = self.line.channel_status()
        if channel is not None:
            out["channel"] = {k: channel[k] for k in ("setup", "pairs", "dropped", "lost", "dark", "misregistered")}
        for obs in self.line.observers:
            summary = getattr(obs, "summary", None)
            if summary is not None:
                out["truth"] = summary()
        return out
