"""Running a scenario: the whole line (renderer → camera → vision → tracking → planning →
simulated arms over Modbus on 127.0.0.1) on the virtual clock with
:meth:`scallop.app.line.Line.run_stepped`, the faults applied from its ``on_tick`` hook
(:mod:`.faults`), every scallop followed from its hooks (:mod:`.accounting`), and the summary
that :func:`scallop.app.scenario.report.write_report` turns into a report."""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from scallop.app.config import LineConfig
from scallop.app.scenario.accounting import Accounting, outcome_of
from scallop.app.scenario.faults import FaultScript
from scallop.app.scenario.spec import Scenario, ScenarioError, check_channel_faults

# Summary keys measured on the wall clock: everything else is a function of (scenario, seed).
WALL_TIME_KEYS = ("latency_ms", "realtime_factor", "wall_s", "setup_s")


def run_scenario(
    sc: Scenario,
    report_dir: str | Path | None = None,
    *,
    seed: int | None = None,
    model: str | None = None,
    scallops: int | None = None,
    duration_s: float | None = None,
    progress: Callable[[int, str], None] | None = None,
    chunk_s: float = 5.0,
) -> dict:
    """Run ``sc`` on the virtual clock and return its summary (see :mod:`.report`).

    seed / model / scallops / duration_s override the scenario's own (``scallops`` and
    ``duration_s`` replace each other). With ``report_dir`` the failure frames and the line's
    record (``record/record.sqlite``) are written there; ``write_report`` adds the rest.
    ``progress(done, note)`` is called after each ``chunk_s`` of virtual time: scallops past
    the arms for a ``scallops`` run, virtual seconds for a ``duration_s`` run.
    """
    import shutil
    import tempfile

    from scallop.app.build import build_line
    from scallop.sim.clock import VirtualClock

    if scallops is not None and duration_s is not None:
        raise ScenarioError("give --scallops or --duration, not both")
    spec = sc.spec
    if scallops is not None:
        if scallops < 1:
            raise ScenarioError(f"scallops={scallops} is out of range: allowed 1..1000000")
        spec = dataclasses.replace(spec, scallops=scallops, duration_s=0.0)
    elif duration_s is not None:
        if not 0 < duration_s <= 86400:
            raise ScenarioError(f"duration_s={duration_s:g} is out of range: allowed 0..86400")
        spec = dataclasses.replace(spec, duration_s=duration_s, scallops=0)
    sc = dataclasses.replace(sc, spec=spec)
    seed = spec.seed if seed is None else int(seed)
    cfg = sc.line_config(model=model)
    check_channel_faults(sc.faults, cfg, f"{sc.source}: " if sc.source else "")
    if spec.compare_without_channel and cfg.vision.model:
        from scallop.models.runtime import SegModel

        # The report sets this run "with the channel" beside the shipped colour-only model: a
        # colour-only model (--model, or the scenario's line.vision.model) would be colour
        # against colour under that heading.
        if not SegModel(cfg.vision.model, threads=1).takes_uv:
            given = f"--model {model}" if model is not None else f"line.vision.model = {cfg.vision.model!r}"
            raise ScenarioError(
                f"{given} reads colour only: this scenario compares a model that takes the "
                "fluorescence channel with the shipped colour-only one; give a four-channel model "
                "(models/scallop-seg-uv.onnx) or leave the model out"
            )
    rate = cfg.sim.arrivals.rate_per_s
    if spec.scallops:
        if rate <= 0:
            raise ScenarioError("scenario.scallops needs arrivals (line.sim.arrivals.rate_per_s or arrivals_share > 0)")
        stops = sum(f.end_s - f.at_s for f in sc.faults if f.kind in ("belt_stop", "estop_restart"))
        expected = spec.scallops / rate + stops + 30.0
        t_end = spec.max_duration_s or 3.0 * expected
    else:
        t_end = spec.duration_s

    out = Path(report_dir) if report_dir is not None else None
    tmp = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("failure-*.jpg"):
            old.unlink()
        if (out / "record").is_dir():
            shutil.rmtree(out / "record")
        rec_path = out / "record" / "record.sqlite"
    else:
        tmp = tempfile.TemporaryDirectory(prefix="scallop-scenario-")
        rec_path = Path(tmp.name) / "record.sqlite"

    t_wall0 = time.perf_counter()
    clock = VirtualClock()
    line = build_line(cfg, rec_path, seed=seed, clock=clock)
    alarms = AlarmSpans(line.alarms, clock)
    crash = None
    try:
        line.open()
        t0 = clock.now()
        acct = Accounting(line, t0, spec.scallops, spec.failure_frames, out)
        faults = FaultScript(line, sc.faults, t0)
        # The report's histograms show the whole run, not the last 2000 frames.
        line.stats.keep_all()

        laid = []

        def on_tick(line) -> None:
            acct.tick(line.clock.now())
            faults.tick(line.clock.now())
            if line.shift.check.state == "running" and not laid:
                # The shift check asks for its test pieces: laid on the belt as an operator would.
                laid.extend(line.backend.world.place_test_pieces(cfg.shift_check.with_uro, cfg.shift_check.without_uro))

        line.start("scenario")
        t_setup = time.perf_counter() - t_wall0
        t_loop0 = time.perf_counter()
        while not (clock.now() >= t_end or acct.target_reached()):
            step = min(chunk_s, t_end - clock.now())
            line.run_stepped(step, on_frame=acct.on_frame, on_tick=on_tick)
            if line.state == "fault":
                crash = next(
                    (a.text for a in line.alarms.visible() if a.source == "line" and a.active),
                    "the line stopped after a fault",
                )
                break
            if progress is not None:
                done = len(acct.processed()) if spec.scallops else int(clock.now() - t0)
                speed = (clock.now() - t0) / max(1e-9, time.perf_counter() - t_loop0)
                progress(done, f"t={clock.now() - t0:.0f} s virtual, {speed:.1f}x real time")
        t_virtual = clock.now() - t0
        loop_wall = time.perf_counter() - t_loop0
        line.stop("scenario")
        acct.collect()
        summary = _summarise(acct, faults, sc, cfg, seed, t_virtual, loop_wall, t_setup, crash)
        summary["alarms"] = alarms.spans(t0)
        summary["checks"]["escaped_unalarmed"] = _escaped_unalarmed(acct, summary)
    finally:
        line.close()
        if tmp is not None:
            tmp.cleanup()
    summary["wall_s"] = round(time.perf_counter() - t_wall0, 2)
    if spec.compare_without_channel:
        summary["without_channel"] = _without_channel(sc, seed, spec, progress, chunk_s)
    return summary


SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}

# Alarms that name a scallop the line could not divert (its track in their params), and those that
# speak of every scallop reaching the gate over a span (it failed while held open; no gate while
# the line was blind), none of them known one by one.
NAMING_ALARMS = ("plc.not_diverted", "plc.unconfirmed", "plc.divert_missed")
SPAN_ALARMS = ("plc.held_open_failed", "plc.blind_no_gate")
SPAN_SLACK_S = 0.3


def _escaped_unalarmed(acct: Accounting, summary: dict) -> int:
    """Scallops that left with their uro without a critical alarm saying so: neither one naming
    its track, nor one standing when it crossed the gate that said every scallop reaching the gate
    then went on. Any is a failed run (the exit status): the line must divert or say so."""
    ids, times = summary.get("uro_escaped_ids") or [], summary.get("uro_escaped_times") or []
    alarms = summary.get("alarms") or []
    # (The alarms keep their parameters as text: a track is compared as such.)
    named = {str(a["params"].get("track")) for a in alarms if a["alarm"] in NAMING_ALARMS}
    spans = [(a["from_s"], a["to_s"]) for a in alarms if a["alarm"] in SPAN_ALARMS]
    silent = 0
    for sid, t in zip(ids, times):
        tracks = {str(oc.track_id) for oc in acct.truth[sid].outcomes}
        # The spans are to 0.1 s, the crossings to 0.01 s; and such an alarm speaks of what reached
        # the gate from the PLC's last good poll on, up to a poll period before it was raised.
        covered = any(lo - SPAN_SLACK_S <= t and (hi is None or t <= hi + SPAN_SLACK_S) for lo, hi in spans)
        silent += not (tracks & named) and not covered
    return silent


class AlarmSpans:
    """Each alarm the line raised during the run, from when it was raised to when its condition
    went (virtual time): the report says what the line saw, not only what the scenario did. It
    listens beside the record (the alarms' ``on_change``), which it leaves in place."""

    def __init__(self, alarms, clock) -> None:
        self.clock = clock
        self._by_id: dict[int, dict] = {}
        self._next = alarms.on_change
        alarms.on_change = self._saw

    def _saw(self, a) -> None:
        now = self.clock.now()
        span = self._by_id.setdefault(
            a.id, {"alarm": a.code, "severity": a.severity, "text": a.text, "params": dict(a.params), "from": now}
        )
        if a.active and "to" not in span and SEVERITY_RANK.get(a.severity, 0) > SEVERITY_RANK.get(span["severity"], 0):
            # Raised again more severe (a warning that became critical): the span says the worst.
            span.update(alarm=a.code, severity=a.severity, text=a.text, params=dict(a.params))
        if not a.active and "to" not in span:
            span["to"] = now
        if self._next is not None:
            self._next(a)

    def spans(self, t0: float) -> list[dict]:
        """[{alarm (catalogue code, "" for none), severity, text, params, from_s, to_s (None: still
        active at the end)}], in the order raised."""
        return [
            {k: v for k, v in s.items() if k not in ("from", "to")}
            | {"from_s": round(s["from"] - t0, 1), "to_s": round(s["to"] - t0, 1) if "to" in s else None}
            for s in sorted(self._by_id.values(), key=lambda s: s["from"])
        ]


# What the report sets side by side with and without the fluorescence channel.
COMPARED = (
    "model",
    "processed",
    "with_uro",
    "uro_removed",
    "uro_removal_rate",
    "missed",
    "adductor_hits",
    "picks",
    "picks_by_grade",
    "skipped",
    "dispositions",
    "uro_escaped",
)


def _without_channel(sc: Scenario, seed: int, spec, progress, chunk_s: float) -> dict:
    """The same scenario and seed with the shipped colour-only model: the channel's worth."""
    from scallop.models.runtime import default_model_path

    if not sc.line_config().camera.fluorescence.enabled:
        raise ScenarioError("scenario.compare_without_channel needs [line.camera.fluorescence]")
    plain = dataclasses.replace(sc, spec=dataclasses.replace(spec, compare_without_channel=False, failure_frames=0))
    # Its progress is said as such: the counts start again from 0 for this second run.
    labelled = None if progress is None else (lambda done, note: progress(done, f"colour only: {note}"))
    other = run_scenario(plain, seed=seed, model=str(default_model_path()), progress=labelled, chunk_s=chunk_s)
    return {k: other.get(k) for k in COMPARED} | {"model": "(shipped, colour only)"}


def _summarise(
    acct: Accounting,
    faults: FaultScript,
    sc: Scenario,
    cfg: LineConfig,
    seed: int,
    t_virtual: float,
    loop_wall: float,
    t_setup: float,
    crash: str | None,
) -> dict:
    """The run's figures: outcomes of the processed scallops, the arms' own pick records, time
    series, checks, and the line's summary."""
    from scallop.robot.arm import PICK_TYPES
    from scallop.robot.planning import PickPlanner

    v = cfg.sim.belt.speed_mm_s
    processed = acct.processed()
    outcomes = Counter(outcome_of(r) for r in processed)
    with_uro = [r for r in processed if r.had_uro]
    uro_removed = sum(1 for r in with_uro if not r.has_uro)
    dispositions = Counter(end_of(r) for r in processed) if acct.gate_x is not None else None
    gone = [r for r in with_uro if r.has_uro and not r.diverted] if acct.gate_x is not None else None
    escaped = None if gone is None else [r.id for r in gone]
    missed = sum(1 for r in with_uro if r.has_uro)
    # Of those, the ones the gate sent to rework: a person's look, not a uro let go.
    to_rework = sum(1 for r in with_uro if r.has_uro and r.diverted) if acct.gate_x is not None else None
    skipped = Counter()
    for k, n in outcomes.items():
        if not k.startswith("picked:"):
            skipped[k.split(":", 1)[-1]] += n

    # Executed picks: the arms' own records (ground truth), over the whole run.
    picks, seqs_dup, target_dup = [], 0, 0
    busy: dict[str, float] = {}
    target_ids: Counter = Counter()
    backend = acct.line.backend
    for cfg_a, sim in zip(backend.arm_configs, backend.sim_arms):
        seqs = [r.seq for r in sim.records]
        seqs_dup += len(seqs) - len(set(seqs))
        busy[cfg_a.name] = 0.0
        for r in sim.records:
            if r.cmd_type not in PICK_TYPES:
                continue
            target_ids[r.target_id] += 1
            # Moving or gripping; waiting above a uro that has not arrived yet is spare capacity.
            busy[cfg_a.name] += max(0.0, r.t_done - r.t_ack - r.wait_s)
            if r.t_grip is not None:
                picks.append((r.t_grip, cfg_a.name, r.grade or "ungraded"))
    target_dup = sum(n - 1 for n in target_ids.values() if n > 1)
    picks.sort()
    grades = Counter(g for _, _, g in picks)
    span = t_virtual
    tp = 0.0
    if len(picks) >= 2:
        # Picks per minute from the first grip to the last: the line's sustained rate.
        t_a, t_b = picks[0][0], picks[-1][0]
        tp = (len(picks) - 1) / max(1e-9, t_b - t_a) * 60.0
    caps = {a.name: PickPlanner(a).capacity_per_s(v) for a in cfg.arms}
    cap_total = sum(caps.values()) * 60.0

    # Time series.
    bin_s = sc.spec.bin_s or _nice_bin(span)
    edges = bin_edges(acct.t0, span, bin_s)
    widths = [b - a for a, b in zip(edges, edges[1:])]

    def hist(times) -> list[float]:
        h = np.histogram(np.asarray(list(times), float), bins=edges)[0]
        return [round(float(x) * 60.0 / w, 2) if w > 0 else 0.0 for x, w in zip(h, widths)]

    pop_all = [acct.truth[i] for i in acct.pop_ids]
    series = {
        "bin_s": bin_s,
        "t_s": [round(e - acct.t0, 2) for e in edges[:-1]],
        "arrivals_per_min": hist(r.first_visible_t for r in pop_all if r.first_visible_t is not None),
        "picks_per_min": hist(t for t, _, _ in picks),
        "uro_removed_per_min": hist(t for t, _, g in picks if g == "uro_removed"),
        "skipped_per_min": hist(o.t_decided for r in processed for o in r.outcomes[-1:] if o.result != "picked"),
        "belt_speed_mm_s": [round(acct.world.speed_mm_s(e + bin_s / 2), 1) for e in edges[:-1]],
    }
    lat = acct.line.stats.latency_summary()
    undecided = outcomes.get("undecided", 0)
    checks = {
        "accounted": sum(outcomes.values()) == len(processed) and undecided == 0,
        "dispositions_reconcile": None if dispositions is None else sum(dispositions.values()) == len(processed),
        "undecided": undecided,
        "duplicate_seqs": seqs_dup,
        "duplicate_target_picks": target_dup,
        "scallops_picked_twice": sum(1 for r in processed if sum(o.result == "picked" for o in r.outcomes) > 1),
        "retracked_scallops": sum(1 for r in processed if len(r.outcomes) > 1),
        "phantom_tracks": len(acct.phantoms),
        "line_open_after_stop": sum(1 for oc in acct.line.outcomes.values() if not oc.result),
        # Simulator artefact: scallops dropped on the belt in or past the view, where the camera
        # may never see them (not the line's to handle; counted, not in the population).
        "appeared_too_late_to_image": len(acct.appeared_late),
    }
    line_sum = acct.line.summary()
    return {
        "scenario": sc.name,
        "description": sc.spec.description,
        "source": sc.source,
        "seed": seed,
        "model": cfg.vision.model
        or ("(shipped, colour and fluorescence)" if cfg.camera.fluorescence.enabled else "(shipped)"),
        "channel": acct.line.channel_status(),
        "duration_s": round(t_virtual, 3),
        "scallops_target": sc.spec.scallops or None,
        "complete": (not sc.spec.scallops or len(processed) == sc.spec.scallops) and crash is None,
        "crash": crash,
        "arms": [a.name for a in cfg.arms],
        "belt_speed_mm_s": v,
        "arrivals_rate_per_min": round(cfg.sim.arrivals.rate_per_s * 60.0, 2),
        "capacity": {
            "total_per_min": round(cap_total, 2),
            "cycle_s": {k: round(1.0 / c, 4) for k, c in caps.items()},
            "per_arm_per_min": {k: round(c * 60, 2) for k, c in caps.items()},
        },
        "processed": len(processed),
        "with_uro": len(with_uro),
        "uro_removed": uro_removed,
        "missed": missed,
        "adductor_hits": grades.get("adductor_hit", 0),
        "uro_removal_rate": round(uro_removed / len(with_uro), 4) if with_uro else None,
        "picks": len(picks),
        "picks_by_grade": dict(sorted(grades.items())),
        "skipped": dict(sorted(skipped.items())),
        "outcomes": dict(sorted(outcomes.items())),
        # Where each processed scallop ended, judged at the reject gate (None: no gate simulated).
        "dispositions": None if dispositions is None else {d: dispositions.get(d, 0) for d in END_KINDS},
        "uro_to_rework": to_rework,
        "uro_escaped": None if escaped is None else len(escaped),
        "uro_escaped_ids": escaped,
        # When each crossed the gate's line, in seconds from the start (as the alarms' from_s).
        "uro_escaped_times": None if gone is None else [round(r.t_gate - acct.t0, 2) for r in gone],
        # The start-of-shift check with test pieces, when the scenario's line requires one.
        "shift_check": line_sum.get("shift_check"),
        "throughput_per_min": round(tp, 2),
        "throughput_share_of_capacity": round(tp / cap_total, 4) if cap_total else None,
        "arm_utilisation": {k: round(t / span, 4) if span > 0 else 0.0 for k, t in busy.items()},
        "picks_per_arm": dict(Counter(a for _, a, _ in picks)),
        "latency_ms": lat,
        "realtime_factor": round(t_virtual / loop_wall, 2) if loop_wall > 0 else None,
        "setup_s": round(t_setup, 2),
        "frames": acct.frames,
        "frames_by_line_state": dict(acct.frame_states),
        "faults": [dataclasses.asdict(f) | {"text": f.describe()} for f in sc.faults],
        "fault_log": faults.log,
        "errors": faults.errors,
        "checks": checks,
        "line": line_sum,
        "time_series": series,
        "failure_frames": [dataclasses.asdict(f) for f in acct.failures],
        "_latency_values": acct.line.stats.latency_values(),
    }


# Where a processed scallop ended, as the scenario bench judges it at the reject gate.
END_KINDS = ("picked", "diverted", "passed")


def end_of(row) -> str:
    """``diverted``: it crossed the gate's line while the gate was open (whatever the line
    decided); ``picked``: an arm picked it and it went on; ``passed``: it went on unpicked."""
    if row.diverted:
        return "diverted"
    return "picked" if outcome_of(row).startswith("picked:") else "passed"


def bin_edges(t0: float, span: float, bin_s: float) -> list[float]:
    """Edges of the time series' bins: ``bin_s`` each from ``t0``, the last ending with the run.
    A tail shorter than half a bin joins the bin before it: one pick in the last 2 ms of a run
    is not a rate of 30,000 a minute."""
    nb = max(1, int(math.ceil(span / bin_s)))
    if nb > 1 and span - (nb - 1) * bin_s < 0.5 * bin_s:
        nb -= 1
    return [t0 + i * bin_s for i in range(nb)] + [t0 + span]


def _nice_bin(span: float) -> float:
    raw = max(5.0, span / 50.0)
    for step in (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if step >= raw:
            return float(step)
    return 3600.0


def deterministic_view(summary: dict) -> dict:
    """The summary without wall-clock figures: the same scenario and seed give the same. An
    alarm's words may name what the run was given by the system (an arm's port), so of the
    alarms only what was raised, how severe, and when are kept."""
    out = {k: v for k, v in summary.items() if k not in WALL_TIME_KEYS and not k.startswith("_")}
    if "alarms" in out:
        out["alarms"] = [{k: a[k] for k in ("alarm", "severity", "from_s", "to_s")} for a in out["alarms"]]
    return out
