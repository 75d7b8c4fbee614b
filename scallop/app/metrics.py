"""The line's Prometheus metrics, written by ``prometheus-client`` in the text format 0.0.4.

``/metrics`` (scallop.app.web) is :func:`snapshot_metrics` of the line's
:class:`~scallop.app.line_api.LineSnapshot` followed by the web server's own families;
:meth:`scallop.app.record.RecordWriter.metrics_text` renders the record writer's counts with
:class:`RecordCollector`. Each is a :class:`~prometheus_client.registry.Collector` rendered on a
private registry, so nothing lands in the library's process-wide default registry.

The names, types and labels are an interface: the plant's dashboards query them.
docs/interfaces.md lists them and tests/test_interfaces.py fails when the two disagree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from scallop.app.line_api import LineSnapshot

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

_STATES = ("stopped", "starting", "running", "waiting_camera", "paused", "stopping", "estop", "fault")
_ARM_STATES = (
    "idle",
    "picking",
    "starting",
    "disconnected",
    "comm_error",
    "stalled",
    "state_file",
    "stuck",
    "fault",
    "estop",
    "homing",
)
_SEVERITIES = ("info", "warning", "critical")
_QUANTILES = {"p50": "0.5", "p90": "0.9", "p95": "0.95", "p99": "0.99"}

_SNAPSHOT_COUNTS = (
    ("seen", "Scallops seen (each tracked scallop once)."),
    ("picked", "Picks executed."),
    ("uro_removed", "Uros removed."),
    ("missed", "Picks that did not remove the uro."),
    ("adductor_hits", "Picks that landed in the adductor muscle."),
    ("skipped", "Scallops not picked, all reasons."),
    ("frames", "Camera frames processed."),
    ("frames_dropped", "Camera frames dropped under overload."),
)

_RECORD_COUNTS = (
    ("written", "Scallop rows written."),
    ("dropped", "Rows dropped because the queue was full."),
    ("duplicates", "Scallops recorded twice (refused)."),
    ("db_errors", "Database write errors."),
    ("picks_recorded", "Pick intents committed before their arm's commit."),
    ("picks_refused", "Picks not sent because their intent could not be committed."),
    ("spilled", "Rows the database refused at close, saved to a spill file."),
    ("lost", "Rows neither written nor saved."),
    ("lost_with_file", "Rows written to a record file deleted or replaced while the line ran."),
    ("in_damaged_file", "Rows of this run written to a record found damaged and set aside mid-run."),
    ("snapshots_written", "Snapshot frames kept."),
    ("snapshots_deleted", "Snapshots deleted to stay in budget."),
    ("snapshot_failures", "Snapshot frames that could not be written."),
)


def render(*collectors: Collector) -> str:
    """Exposition text of ``collectors``, on a registry of their own."""
    registry = CollectorRegistry()
    for c in collectors:
        registry.register(c)
    return generate_latest(registry).decode("utf-8")


class WithoutCreated(Collector):
    """A registry's families less the ``*_created`` series that prometheus-client adds to
    counters and histograms: /metrics never had them and the dashboards list every name.
    (``disable_created_metrics()`` would do it for the whole process, other users included.)"""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            family.samples = [s for s in family.samples if s.name != family.name + "_created"]
            yield family


def _counts(prefix: str, counts: Sequence[tuple[str, str]], value: Callable[[str], float | None]) -> Iterator[Metric]:
    for key, help in counts:
        v = value(key)
        if v is not None:  # not known (no pick verifier): absent, never a false 0
            yield CounterMetricFamily(f"{prefix}_{key}_total", help, value=v)


def _one_hot(family: GaugeMetricFamily, labels: tuple[str, ...], states: Sequence[str], current: str) -> None:
    # A state the list does not know still shows, so an alert on it can fire.
    for s in (*states, current) if current not in states else states:
        family.add_metric((*labels, s), 1 if s == current else 0)


class SnapshotCollector(Collector):
    """The families of one :class:`LineSnapshot`.

    Counts become counters (``scallop_seen_total``...), the line and arm states one-hot gauges
    (so a dashboard can alert on ``scallop_line_state{state="fault"} == 1``), stage latencies
    ``..._stage_latency_seconds{stage,quantile}`` gauges (the snapshot holds quantiles only, not
    the sum and count a summary needs).
    """

    def __init__(self, snap: LineSnapshot, prefix: str = "scallop") -> None:
        self.snap = snap
        self.prefix = prefix

    def collect(self) -> Iterator[Metric]:
        snap, p = self.snap, self.prefix
        yield from _counts(p, _SNAPSHOT_COUNTS, lambda key: getattr(snap, key))
        reasons = CounterMetricFamily(
            f"{p}_skipped_by_reason_total", "Scallops not picked, by reason.", labels=["reason"]
        )
        for reason, n in sorted(snap.skipped_by_reason.items()):
            reasons.add_metric((reason,), n)
        yield reasons
        yield GaugeMetricFamily(
            f"{p}_scallops_per_minute", "Scallops seen over the last minute.", value=snap.per_minute
        )
        if snap.removal_rate is not None:
            yield GaugeMetricFamily(
                f"{p}_uro_removal_ratio", "Uros removed / scallops with a uro (0..1).", value=snap.removal_rate
            )
        if snap.belt_scale is not None:
            yield GaugeMetricFamily(
                f"{p}_belt_scale_ratio",
                "Camera millimetres over encoder millimetres along the belt (1 when the calibrations agree).",
                value=snap.belt_scale,
            )
        yield GaugeMetricFamily(
            f"{p}_all_to_rework",
            "1 while the reject gate is held open and every scallop reaching it goes to the rework lane (the line "
            "running or waiting; 0 stopped, without a gate, or with the gate in fault).",
            value=1.0 if snap.all_to_rework else 0.0,
        )
        yield GaugeMetricFamily(f"{p}_uptime_seconds", "Seconds since the line started.", value=snap.uptime_s)
        state = GaugeMetricFamily(f"{p}_line_state", "1 for the line's current state.", labels=["state"])
        _one_hot(state, (), _STATES, snap.state)
        yield state
        latency = GaugeMetricFamily(
            f"{p}_stage_latency_seconds", "Recent stage latency quantiles.", labels=["stage", "quantile"]
        )
        for stage, qs in sorted(snap.latency_ms.items()):
            for qname, ms in sorted(qs.items()):
                latency.add_metric((stage, _QUANTILES.get(qname, qname)), ms / 1000.0)
        yield latency
        yield from self._arms()
        yield from self._models()
        yield from self._channel()
        for key, help, alarms in (
            ("alarms_active", "Alarms whose condition still holds, by severity.", [a for a in snap.alarms if a.active]),
            ("alarms_unacked", "Alarms not yet acknowledged, by severity.", [a for a in snap.alarms if not a.acked]),
        ):
            family = GaugeMetricFamily(f"{p}_{key}", help, labels=["severity"])
            for s in _SEVERITIES:
                family.add_metric((s,), sum(a.severity == s for a in alarms))
            yield family

    def _arms(self) -> Iterator[Metric]:
        p = self.prefix
        state = GaugeMetricFamily(f"{p}_arm_state", "1 for each arm's current state.", labels=["arm", "state"])
        connected = GaugeMetricFamily(f"{p}_arm_connected", "1 when the arm answers on Modbus.", labels=["arm"])
        picks = CounterMetricFamily(f"{p}_arm_picks_total", "Picks executed per arm.", labels=["arm"])
        removed = CounterMetricFamily(f"{p}_arm_uro_removed_total", "Uros removed per arm.", labels=["arm"])
        # An arm whose removals are not known (no pick verifier) has no series here.
        util = GaugeMetricFamily(
            f"{p}_arm_utilisation_ratio", "Share of the last minute spent picking.", labels=["arm"]
        )
        for a in self.snap.arms:
            _one_hot(state, (a.name,), _ARM_STATES, a.state)
            connected.add_metric((a.name,), 1 if a.connected else 0)
            picks.add_metric((a.name,), a.picks)
            if a.uro_removed is not None:
                removed.add_metric((a.name,), a.uro_removed)
            util.add_metric((a.name,), a.utilisation)
        yield from (state, connected, picks, removed, util)

    def _channel(self) -> Iterator[Metric]:
        """The fluorescence channel, so a plant dashboard sees it lost or dark as the engineer
        panel does; no series on a line without one."""
        p, ch = self.prefix, self.snap.channel
        pairs = CounterMetricFamily(f"{p}_fluorescence_pairs_total", "Colour frames with a good fluorescence partner.")
        dropped = CounterMetricFamily(
            f"{p}_fluorescence_dropped_total", "Colour frames without a good partner, by reason.", labels=["reason"]
        )
        lost = GaugeMetricFamily(f"{p}_fluorescence_lost", "1 while the channel is lost (alarm_after frames in a row).")
        dark = GaugeMetricFamily(f"{p}_fluorescence_dark", "1 while the channel is dark (scallops in view, no glow).")
        misreg = GaugeMetricFamily(
            f"{p}_fluorescence_misregistered", "1 while the glow does not sit on the uros the colour camera sees."
        )
        offset = GaugeMetricFamily(
            f"{p}_fluorescence_offset_mm",
            "How far the glow lies from the uros the colour camera sees (median of the last uros).",
        )
        levels = GaugeMetricFamily(
            f"{p}_fluorescence_level", "The last pair's grey levels: belt (median) and glow.", labels=["what"]
        )
        if ch:
            pairs.add_metric((), ch["pairs"])
            for reason, n in sorted(ch["dropped"].items()):
                dropped.add_metric((reason,), n)
            lost.add_metric((), 1 if ch["lost"] else 0)
            dark.add_metric((), 1 if ch["dark"] else 0)
            misreg.add_metric((), 1 if ch.get("misregistered") else 0)
            if ch.get("registration_offset_mm") is not None:
                offset.add_metric((), math.hypot(*ch["registration_offset_mm"]))
            for what, key in (("belt", "belt_level"), ("glow", "glow_level")):
                if ch.get(key) is not None:
                    levels.add_metric((what,), ch[key])
        yield from (pairs, dropped, lost, dark, misreg, offset, levels)

    def _models(self) -> Iterator[Metric]:
        p, snap = self.prefix, self.snap
        info = GaugeMetricFamily(f"{p}_model_info", "1 for the live model.", labels=["model", "sha256"])
        if snap.model:
            info.add_metric((snap.model.get("name", ""), snap.model.get("sha256", "")), 1)
        yield info
        sh = snap.shadow
        m = (sh.get("model", ""),) if sh else ()
        frames = CounterMetricFamily(f"{p}_shadow_frames_total", "Frames the shadow model analysed.", labels=["model"])
        skipped = CounterMetricFamily(
            f"{p}_shadow_skipped_total", "Frames not given to the shadow model.", labels=["model", "reason"]
        )
        scallops = CounterMetricFamily(
            f"{p}_shadow_scallops_total", "Scallops compared between the models.", labels=["model"]
        )
        verdict = GaugeMetricFamily(
            f"{p}_shadow_verdict_agreement_ratio", "Scallops with the same verdict in both models.", labels=["model"]
        )
        grasp = GaugeMetricFamily(
            f"{p}_shadow_grasp_agreement_ratio", "Picks of both models with grasps within 1 mm.", labels=["model"]
        )
        dis = CounterMetricFamily(
            f"{p}_shadow_disagreements_total", "Scallops the models disagree on, by kind.", labels=["model", "kind"]
        )
        if sh:
            frames.add_metric(m, sh["frames"])
            skipped.add_metric((*m, "busy"), sh["skipped_busy"])
            skipped.add_metric((*m, "sample"), sh["skipped_sample"])
            scallops.add_metric(m, sh["scallops"])
            if sh.get("verdict_agreement") is not None:
                verdict.add_metric(m, sh["verdict_agreement"])
            if sh.get("grasp_agreement") is not None:
                grasp.add_metric(m, sh["grasp_agreement"])
            dis.add_metric((*m, "live_only"), sh["live_only"])
            dis.add_metric((*m, "shadow_only"), sh["shadow_only"])
            dis.add_metric((*m, "verdict"), sh["verdict_differs"])
            dis.add_metric((*m, "grasp"), sh["grasps_compared"] - sh["grasps_agree"])
        yield from (frames, skipped, scallops, verdict, grasp, dis)
        cap = snap.capture
        yield GaugeMetricFamily(
            f"{p}_capture_active", "1 while frames are kept for labelling.", value=1 if cap.get("active") else 0
        )
        yield CounterMetricFamily(f"{p}_capture_frames_total", "Frames kept for labelling.", value=cap.get("kept", 0))
        dropped = CounterMetricFamily(
            f"{p}_capture_dropped_total", "Frames the capture did not keep, by reason.", labels=["reason"]
        )
        for reason, n in sorted(cap.get("dropped", {}).items()):
            dropped.add_metric((reason,), n)
        yield dropped
        yield GaugeMetricFamily(f"{p}_capture_bytes", "Bytes of captured frames on disk.", value=cap.get("bytes", 0))


class RecordCollector(Collector):
    """The record writer's counts, from ``stats`` (:meth:`RecordWriter.stats`) at each collect."""

    def __init__(self, stats: Callable[[], Mapping[str, int]], prefix: str = "scallop_record") -> None:
        self.stats = stats
        self.prefix = prefix

    def collect(self) -> Iterator[Metric]:
        s, p = self.stats(), self.prefix
        yield from _counts(p, _RECORD_COUNTS, s.__getitem__)
        yield GaugeMetricFamily(f"{p}_queue_depth", "Rows waiting to be written.", value=s["queued"])
        yield GaugeMetricFamily(f"{p}_snapshot_bytes", "Bytes of snapshot frames on disk.", value=s["snapshot_bytes"])


def snapshot_metrics(snap: LineSnapshot, prefix: str = "scallop") -> str:
    """Exposition text for everything a :class:`LineSnapshot` carries (see :class:`SnapshotCollector`)."""
    return render(SnapshotCollector(snap, prefix))
