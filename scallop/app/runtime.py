"""The line: camera → vision → tracking → planning → arms, with a record of every scallop.

:class:`Line` holds the stages and implements :class:`scallop.app.line_api.LineAPI` for the
operator screen. Two drivers run the same stages:

* :meth:`Line.run_threaded` — capture, inference and robot I/O each in their own thread,
  joined by a bounded frame queue that drops the *oldest* frame under overload (counted in
  ``frames_dropped``). For real hardware and for the simulator in real time.
* :meth:`Line.run_stepped` — one thread on the simulator's virtual clock, stepping
  ``tick_s`` of virtual time: the arms are served at once whenever a queued target waits for
  an arm that can take it, and otherwise every half heartbeat period (each service is a
  Modbus round trip, the most expensive part of a simulated tick); each frame is processed
  when its exposure comes. A run is faster than real time and the same seed gives the same
  result.

Safety rules kept here: nothing is sent to an arm except a plan the planner checked
against the workspace (the arm client checks again); a scallop gets exactly one decision —
picked, failed or skipped with a reason — and nothing queued is lost when the line stops.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import traceback
from collections import Counter, deque
from dataclasses import dataclass, field

import cv2
import numpy as np

from scallop.app.alarms import Alarms
from scallop.app.backends import Backend
from scallop.app.config import LineConfig
from scallop.app.line_api import ArmStatus, LineSnapshot, Recipe
from scallop.app.stats import Stats
from scallop.app.tracking import Decision, Tracker
from scallop.robot.arm import ArmClient, ResultCode
from scallop.robot.errors import RobotError
from scallop.robot.planning import ConveyorTracker, PickTarget, Skip
from scallop.robot.scheduler import PickOutcome, Scheduler
from scallop.vision.annotate import draw
from scallop.vision.camera import CameraError, CorruptFrameError, EndOfStreamError, Frame
from scallop.vision.detections import Detections
from scallop.vision.pipeline import Pipeline

log = logging.getLogger("scallop.line")

CONTROL_STATES = {
    "start": ("stopped", "paused"),
    "pause": ("running",),
    "stop": ("running", "paused", "starting"),
    "reset": ("estop", "fault"),
}


@dataclass
class ScallopOutcome:
    """What became of one tracked scallop (the line's bookkeeping before the record)."""

    track_id: int
    decision: Decision
    result: str = ""  # "picked" | "failed" | "skipped"
    reason: str = ""
    arm: str = ""
    grade: str | None = None  # simulator's verdict
    t_decided: float = 0.0
    extra: dict = field(default_factory=dict)


class StageCrashed(RuntimeError):
    pass


class Line:
    def __init__(self, config: LineConfig, backend: Backend, record=None, snapshot_all_failures: bool = True):
        self.config = config
        self.backend = backend
        self.record = record
        self.clock = backend.clock
        self.stats = Stats()
        self.alarms = Alarms(on_change=self._record_alarm)
        self.state = "stopped"
        self.recipe = config.recipe
        self._lock = threading.RLock()  # guards scheduler, tracker, counters
        self._frame_lock = threading.Lock()
        self._latest: tuple[np.ndarray, Detections] | None = None
        self._latest_jpeg: tuple[int, bytes] | None = None
        self._frame_no = 0
        self.counts = Counter()
        self.skip_reasons = Counter()
        self.outcomes: dict[int, ScallopOutcome] = {}
        self._pending: dict[int, ScallopOutcome] = {}  # sent to the scheduler, not resolved
        self._consumed_outcomes = 0
        self._busy: dict[str, deque] = {}  # arm → (t_done, seconds of motion)
        self._consumed_skips = 0
        self.frames = 0
        self.frames_dropped = 0
        self.frames_bad = 0
        self._t_start_wall = time.time()
        self._t_started = None
        self._stop_evt = threading.Event()
        self._crash: str | None = None
        self._last_frame_t: float | None = None
        self._scale = 0.5
        self.pipeline: Pipeline | None = None
        self.tracker: Tracker | None = None
        self.conveyor: ConveyorTracker | None = None
        self.scheduler: Scheduler | None = None
        self.clients: list[ArmClient] = []
        self._threads: list[threading.Thread] = []
        self._next_service = -math.inf

    # ------------------------------------------------------------------ set-up
    def open(self) -> None:
        """Open the backend, load the model, connect the arms (each failure is an alarm, and
        an arm that is not there does not stop the others)."""
        self.backend.open()
        self.pipeline = Pipeline(config=self.config.vision)
        m = self.backend.mapping
        self._scale = m.mm_per_px_center()
        _, exit_x = m.view_x_range()
        self.tracker = Tracker(travel_of=m.travel_of, exit_x=exit_x)
        self.conveyor = ConveyorTracker(mm_per_count=1.0 / m.counts_per_mm)
        self.clients = [ArmClient(a, clock=self.clock) for a in self.backend.arm_configs]
        for c in self.clients:
            try:
                c.connect()
            except RobotError as e:
                self.alarms.raise_(f"arm:{c.name}.connect", "critical", f"arm:{c.name}", f"arm {c.name}: {e}")
        # The next pick is chosen a few ticks before the arm is free; a chained one must land a
        # tick before the release it starts from.
        tick = self.config.runtime.tick_s
        self.scheduler = Scheduler(
            self.clients,
            self.conveyor,
            self.clock,
            commit_lead_s=max(0.25, 4 * tick),
            chain_margin_s=max(0.05, 1.5 * tick),
        )

    def close(self) -> None:
        if self.state not in ("estop", "fault"):
            self.stop("system")
        self._join_threads()
        for c in self.clients:
            try:
                c.close()
            except Exception:
                pass
        self.backend.close()
        if self.record is not None:
            self.record.close()

    # ------------------------------------------------------------------ stages
    def process_frame(self, frame: Frame) -> None:
        """Vision → tracking → decisions for one frame. A bad frame is counted and alarmed,
        never fatal."""
        t0 = time.perf_counter()
        if frame.encoder is None:
            self.frames_bad += 1
            self.alarms.raise_(
                "camera.encoder",
                "critical",
                "camera",
                "frames carry no encoder count: scallops cannot be tracked (configure [camera.encoder], "
                "see docs/configuration.md, or check the trigger wiring)",
            )
            return
        m = self.backend.mapping
        if (frame.width, frame.height) != tuple(m.image_size):
            self.frames_bad += 1
            self.alarms.raise_(
                "camera.size",
                "critical",
                "camera",
                f"frames are {frame.width}x{frame.height} but the calibration is for "
                f"{m.image_size[0]}x{m.image_size[1]}: frames ignored",
            )
            return
        try:
            dets = self.pipeline.detect(frame.image, mm_per_px=self._scale, to_belt=m.pixel_to_belt)
        except Exception as e:  # a bad frame must not kill the line
            self.frames_bad += 1
            self.alarms.raise_("vision.error", "warning", "vision", f"frame {frame.index} could not be analysed: {e}")
            return
        self.alarms.clear("vision.error")
        t1 = time.perf_counter()
        self.stats.timing("inference", (t1 - t0) * 1e3)
        self.backend.observe(frame.timestamp)
        count = self.backend.mapping.count_sign * frame.encoder
        with self._lock:
            self.frames += 1
            self._last_frame_t = frame.timestamp
            self.conveyor.update(frame.timestamp, count)
            # Stopped (or in e-stop/fault): the screen still shows the belt, nothing is tracked.
            if self.state in ("running", "paused"):
                decisions = self.tracker.update(
                    dets, frame.encoder, frame.timestamp, frame.index, frame.image.shape[1::-1]
                )
                self._decide(decisions)
        t2 = time.perf_counter()
        self.stats.timing("tracking", (t2 - t1) * 1e3)
        self.stats.timing("frame_total", (t2 - t0) * 1e3)
        with self._frame_lock:
            self._latest = (frame.image, dets)
            self._frame_no += 1

    def _decide(self, decisions: list[Decision]) -> None:
        now = self.clock.now()
        sign = self.backend.mapping.count_sign
        targets = []
        for d in decisions:
            tid = d.track.id
            oc = ScallopOutcome(tid, d, t_decided=now)
            self.outcomes[tid] = oc
            self.counts["seen"] += 1
            self.stats.event(now, "seen")
            if not d.pick:
                self._finish(oc, "skipped", d.reason or "ambiguous")
                continue
            if self.state != "running":
                self._finish(oc, "skipped", "line_paused" if self.state == "paused" else "line_stopped")
                continue
            v = d.view
            travel_at_view = self.backend.mapping.travel_of(v.encoder)
            xy = (v.grasp_uv[0] + travel_at_view, v.grasp_uv[1])
            try:
                targets.append(
                    PickTarget(
                        id=tid,
                        xy_mm=xy,
                        encoder=sign * v.encoder,
                        pull_dir=v.pull_dir,
                        confidence=v.confidence,
                        t_exposure=v.timestamp,
                    )
                )
            except ValueError as e:
                self._finish(oc, "skipped", "bad_target", {"error": str(e)})
                continue
            self._pending[tid] = oc
        if targets:
            t0 = time.perf_counter()
            self.scheduler.add(targets)
            self.stats.timing("planning", (time.perf_counter() - t0) * 1e3)
            self._collect()

    def service_arms(self) -> None:
        """Poll the arms, hand out picks, collect results (the robot I/O stage)."""
        t0 = time.perf_counter()
        with self._lock:
            if self.state in ("estop", "fault"):
                # No heartbeats: each arm's watchdog aborts its motion within watchdog_ms
                # (docs/robot-interface.md). Nothing is sent until reset.
                return
            self.scheduler.step()
            self._collect()
            self._arm_alarms()
        self.stats.timing("modbus", (time.perf_counter() - t0) * 1e3)

    def _collect(self) -> None:
        sch = self.scheduler
        while self._consumed_skips < len(sch.skips):
            s: Skip = sch.skips[self._consumed_skips]
            self._consumed_skips += 1
            oc = self._pending.pop(s.target.id, None)
            if oc is not None:
                self._finish(oc, "skipped", s.reason.value, {"detail": s.detail, "arm": s.arm})
        while self._consumed_outcomes < len(sch.outcomes):
            o: PickOutcome = sch.outcomes[self._consumed_outcomes]
            self._consumed_outcomes += 1
            self._busy.setdefault(o.arm, deque(maxlen=500)).append((o.t_done, o.plan.duration_s))
            oc = self._pending.pop(o.target.id, None)
            if oc is None:
                continue
            oc.arm = o.arm
            if o.result == ResultCode.OK:
                self._finish(oc, "picked", "", {"seq": o.seq})
            else:
                name = o.result.name.lower() if o.result is not None else "unknown"
                self._finish(oc, "failed", f"arm_{name}", {"seq": o.seq})
        # Trim the scheduler's history: a line runs for days.
        if len(sch.outcomes) > 5000:
            del sch.outcomes[: self._consumed_outcomes]
            self._consumed_outcomes = 0
        if len(sch.skips) > 5000:
            del sch.skips[: self._consumed_skips]
            self._consumed_skips = 0

    def _finish(self, oc: ScallopOutcome, result: str, reason: str, extra: dict | None = None) -> None:
        oc.result, oc.reason = result, reason
        if result == "failed" and not oc.arm:
            # Cut short by an e-stop, a stop or a crash: the record names the arm holding the pick.
            oc.arm = self._arm_holding(oc.track_id)
        if extra:
            oc.extra.update(extra)
        now = self.clock.now()
        if result == "picked":
            self.counts["picked"] += 1
            oc.grade = self.backend.grade_of(oc.arm, oc.track_id)
            if oc.grade == "uro_removed":
                self.counts["uro_removed"] += 1
            elif oc.grade == "adductor_hit":
                self.counts["adductor_hits"] += 1
            elif oc.grade is not None:
                self.counts["missed"] += 1
            self.stats.event(now, "picked")
        elif result == "failed":
            self.counts["failed"] += 1
            self.skip_reasons[reason] += 1
        else:
            self.counts["skipped"] += 1
            self.skip_reasons[reason] += 1
        self._write_record(oc)
        # Keep only recent outcomes in memory: the record holds them all.
        if len(self.outcomes) > 5000:
            for k in list(self.outcomes)[:1000]:
                if k not in self._pending:
                    del self.outcomes[k]

    def _arm_holding(self, track_id: int) -> str:
        """The arm a pick was sent to (in flight, or its commit unresolved); "" when none."""
        if self.scheduler is not None:
            for lane in self.scheduler.lanes:
                if any(p.target.id == track_id for p in lane.inflight.values()):
                    return lane.name
        for c in self.clients:
            p = c.uncertain_plan
            if p is not None and p.target.id == track_id:
                return c.name
        return ""

    def _write_record(self, oc: ScallopOutcome) -> None:
        if self.record is None:
            return
        from scallop.app.record import ScallopRecord

        v = oc.decision.view
        t = oc.decision.track
        m = self.backend.mapping
        grasp = v.grasp_uv
        pull = v.pull_dir
        rec = ScallopRecord(
            track_id=int(oc.track_id),
            time=time.time(),
            encoder_mm=float(m.travel_of(v.encoder)),
            result=oc.result,
            skip_reason=oc.reason if oc.result == "skipped" else "",
            arm=oc.arm if oc.result != "skipped" else "",
            x_mm=float(t.u),
            y_mm=float(t.v),
            views=len(t.views),
            uro_found=bool(v.uro_found),
            uro_score=float(v.confidence),
            score=None,
            grasp_x_mm=None if grasp is None else float(grasp[0]),
            grasp_y_mm=None if grasp is None else float(grasp[1]),
            pull_angle_deg=None if pull is None else float(math.degrees(math.atan2(pull[1], pull[0]))),
            uro_removed=None if oc.grade is None else oc.grade == "uro_removed",
            adductor_hit=None if oc.grade is None else oc.grade == "adductor_hit",
            doubtful=oc.result == "failed" or (oc.grade not in (None, "uro_removed")) or oc.reason == "ambiguous",
            detail={k: v for k, v in oc.extra.items() if isinstance(v, (int, float, str, bool))}
            | ({"grade": oc.grade} if oc.grade else {})
            | ({"reason": oc.reason} if oc.reason else {}),
        )
        snap = None
        if rec.doubtful and self.config.runtime.snapshot_doubtful:
            snap = self._jpeg_now(annotated=False)
        self.record.scallop(rec, snapshot_jpeg=snap)

    def _arm_alarms(self) -> None:
        for c in self.clients:
            key = f"arm:{c.name}"
            st = c.state_name
            if st in ("disconnected", "stalled", "fault", "estop"):
                text = {
                    "disconnected": "not connected",
                    "stalled": "heartbeat stalled: no new picks",
                    "fault": "in fault",
                    "estop": "emergency stop",
                }[st]
                alarm = getattr(c, "alarm", None)
                self.alarms.raise_(key, "critical", key, f"arm {c.name}: {text}" + (f" ({alarm})" if alarm else ""))
            else:
                self.alarms.clear(key)
                self.alarms.clear(f"{key}.connect")

    def _record_alarm(self, alarm) -> None:
        if self.record is not None:
            self.record.alarm(alarm)

    # ------------------------------------------------------------------ control (LineAPI)
    def _control(self, action: str, user: str) -> None:
        with self._lock:
            allowed = CONTROL_STATES.get(action)
            if allowed is not None and self.state not in allowed:
                raise RuntimeError(f"cannot {action} while the line is {self.state}")
            if self.record is not None:
                self.record.event(action, user)

    def start(self, user: str = "system") -> None:
        self._control("start", user)
        with self._lock:
            if self._crash:
                raise RuntimeError(f"the line stopped after a fault: {self._crash}; reset first")
            self.state = "running"
            if self._t_started is None:
                self._t_started = self.clock.now()

    def pause(self, user: str = "system") -> None:
        """No new picks; picks the arms already hold finish."""
        self._control("pause", user)
        with self._lock:
            self.state = "paused"
            self._skip_queued("line_paused")

    def _fail_pending(self, reason: str) -> None:
        """Picks handed to the scheduler and not yet resolved end as failed (never lost)."""
        for tid in list(self._pending):
            self._finish(self._pending.pop(tid), "failed", reason)

    def _skip_queued(self, reason: str) -> None:
        for tid in list(self.scheduler.queue):
            self.scheduler.queue.pop(tid)
            oc = self._pending.pop(tid, None)
            if oc is not None:
                self._finish(oc, "skipped", reason)

    def stop(self, user: str = "system") -> None:
        """Arms finish what they hold, then go home; every open scallop is recorded."""
        with self._lock:
            if self.state in ("stopped",):
                return
            if self.record is not None:
                self.record.event("stop", user)
            was = self.state
            self.state = "stopping" if was in ("running", "paused", "starting") else was
        self._drain_arms()
        with self._lock:
            self._flush_tracks("line_stopped")
            if self.state == "stopping":
                self.state = "stopped"

    def estop(self, user: str = "screen") -> None:
        with self._lock:
            if self.record is not None:
                self.record.event("estop", user)
            self.state = "estop"
            self.alarms.raise_("line.estop", "critical", "line", f"emergency stop pressed by {user}")
            self._flush_tracks("estop")
            self._skip_queued("estop")
            self._fail_pending("estop")

    def reset(self, user: str = "system") -> None:
        self._control("reset", user)
        with self._lock:
            for c in self.clients:
                try:
                    c.poll()
                    # RESET also takes an arm out of ESTOP once its button is released (robot-interface.md).
                    if c.state_name in ("fault", "estop"):
                        c.reset_fault()
                except RobotError as e:
                    self.alarms.raise_(f"arm:{c.name}.reset", "warning", f"arm:{c.name}", f"reset failed: {e}")
            self._crash = None
            self.alarms.clear("line.estop")
            self.alarms.clear("line.crash")
            self.state = "stopped"

    def ack_alarm(self, alarm_id: int, user: str) -> None:
        self.alarms.ack(alarm_id, user)

    def recipes(self) -> list[Recipe]:
        return [Recipe(r.name, tuple(r.product_size_mm), r.belt_speed_mm_s, r.description) for r in self.config.recipes]

    def select_recipe(self, name: str, user: str) -> None:
        names = [r.name for r in self.config.recipes]
        if name not in names:
            raise KeyError(f"unknown recipe {name!r}; choose one of {', '.join(names)}")
        with self._lock:
            if self.state == "running":
                raise RuntimeError("pause or stop the line before changing the recipe")
            self.recipe = name
            if self.record is not None:
                self.record.event("recipe", user, {"recipe": name})

    def config_view(self) -> dict:
        from scallop.app.config import to_dict

        d = to_dict(self.config)
        d["calibration"] = {
            "image_size": list(self.backend.mapping.image_size),
            "mm_per_px_center": round(self.backend.mapping.mm_per_px_center(), 4),
            "counts_per_mm": self.backend.mapping.counts_per_mm,
        }
        return d

    def update_config(self, changes: dict, user: str) -> dict:
        """Engineer changes to the vision thresholds (validated; applied at once)."""
        from dataclasses import replace

        from scallop.app.config import ConfigError, build, to_dict
        from scallop.vision.pipeline import PipelineConfig

        if not isinstance(changes, dict) or set(changes) - {"vision"}:
            raise ValueError(f"only the 'vision' section can be changed while running; got {sorted(changes)}")
        vision = changes["vision"]
        if not isinstance(vision, dict) or {"model", "threads"} & set(vision):
            raise ValueError("vision.model and vision.threads need a restart; change them in the config file")
        try:
            new = build(PipelineConfig, {**to_dict(self.config.vision), **vision}, "vision")
        except ConfigError as e:
            raise ValueError(str(e)) from None
        with self._lock:
            self.config = replace(self.config, vision=new)
            self.pipeline.config = new
            if self.record is not None:
                self.record.event("config", user, {"vision": vision})
        return to_dict(new)

    # ------------------------------------------------------------------ read side (LineAPI)
    def snapshot(self) -> LineSnapshot:
        now = self.clock.now()
        with self._lock:
            c = self.counts
            arms = []
            for cl in self.clients:
                n = sum(1 for o in self.outcomes.values() if o.arm == cl.name and o.result == "picked")
                r = sum(1 for o in self.outcomes.values() if o.arm == cl.name and o.grade == "uro_removed")
                last = next((o for o in reversed(list(self.outcomes.values())) if o.arm == cl.name), None)
                busy = sum(d for t, d in self._busy.get(cl.name, ()) if now - 60.0 < t <= now)
                arms.append(
                    ArmStatus(
                        name=cl.name,
                        state=cl.state_name,
                        connected=cl.connected,
                        picks=n,
                        uro_removed=r,
                        last_result=(last.grade or last.result) if last else "",
                        utilisation=min(1.0, busy / 60.0),
                    )
                )
            with_uro = c["picked"] + c["failed"] + sum(v for k, v in self.skip_reasons.items() if k != "no_uro")
            return LineSnapshot(
                state=self.state,
                recipe=self.recipe,
                uptime_s=0.0 if self._t_started is None else now - self._t_started,
                seen=c["seen"],
                picked=c["picked"],
                uro_removed=c["uro_removed"],
                missed=c["missed"],
                adductor_hits=c["adductor_hits"],
                skipped=c["skipped"] + c["failed"],
                skipped_by_reason=dict(self.skip_reasons),
                per_minute=self.stats.per_minute(now, "seen"),
                removal_rate=(c["uro_removed"] / with_uro) if with_uro and c["uro_removed"] else 0.0,
                frames=self.frames,
                frames_dropped=self.frames_dropped + getattr(self.backend.camera, "dropped", 0),
                latency_ms={k: {"p50": v["p50"], "p99": v["p99"]} for k, v in self.stats.latency_summary().items()},
                arms=arms,
                alarms=self.alarms.visible(),
            )

    def _jpeg_now(self, annotated: bool = True) -> bytes | None:
        with self._frame_lock:
            latest = self._latest
        if latest is None:
            return None
        img, dets = latest
        if annotated:
            img = draw(img, dets)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
        return buf.tobytes() if ok else None

    def latest_frame(self) -> tuple[np.ndarray, Detections] | None:
        """The last analysed frame (BGR) and its detections; the scenario bench annotates failures with it."""
        with self._frame_lock:
            return self._latest

    def latest_jpeg(self) -> bytes | None:
        # Encoded on demand (the screen asks a few times a second), not in the frame loop.
        with self._frame_lock:
            no = self._frame_no
            cached = self._latest_jpeg
        if cached is not None and cached[0] == no:
            return cached[1]
        jpg = self._jpeg_now(annotated=True)
        if jpg is not None:
            with self._frame_lock:
                self._latest_jpeg = (no, jpg)
        return jpg

    def metrics_text(self) -> str:
        from scallop.app.metrics import snapshot_metrics

        return snapshot_metrics(self.snapshot())

    def summary(self) -> dict:
        """The one-line JSON of ``scallop run --duration``."""
        c = self.counts
        out = {
            "seen": c["seen"],
            "picked": c["picked"],
            "uro_removed": c["uro_removed"],
            "skipped": c["skipped"] + c["failed"],
            "adductor_hits": c["adductor_hits"],
            "missed": c["missed"],
            "skipped_by_reason": dict(self.skip_reasons),
            "frames": self.frames,
            "frames_dropped": self.frames_dropped + getattr(self.backend.camera, "dropped", 0),
        }
        truth = self.backend.truth_summary()
        if truth is not None:
            out["truth"] = truth
        return out

    # ------------------------------------------------------------------ stopping
    def _flush_tracks(self, reason: str) -> None:
        decisions = self.tracker.flush()
        for d in decisions:
            oc = ScallopOutcome(d.track.id, d, t_decided=self.clock.now())
            self.outcomes[d.track.id] = oc
            self.counts["seen"] += 1
            self._finish(oc, "skipped", reason if d.pick else (d.reason or reason))
        # Targets still queued (not sent to any arm) are skipped, not lost.
        self._skip_queued(reason)

    def _drain_arms(self, timeout_s: float = 5.0) -> None:
        """Let in-flight picks finish (serving the arms on the line's clock), then send the
        arms to their ready position."""
        t_end = self.clock.now() + timeout_s
        while self.clock.now() < t_end:
            with self._lock:
                self._skip_queued("line_stopped")  # nothing new once stopping
                inflight = sum(len(lane.inflight) for lane in self.scheduler.lanes)
            if inflight == 0:
                break
            self.service_arms()
            self.clock.sleep(self.config.runtime.tick_s)
        with self._lock:
            self._fail_pending("line_stopped")
            for c in self.clients:
                try:
                    if c.connected and c.state_name == "idle":
                        c.move_ready()
                except RobotError:
                    pass

    def _fail(self, stage: str, exc: BaseException) -> None:
        """A stage crashed: report it and stop the line safely (never carry on half-working)."""
        text = f"{stage} stage crashed: {type(exc).__name__}: {exc}"
        log.error("%s\n%s", text, "".join(traceback.format_exception(exc)))
        with self._lock:
            self._crash = text
            self.alarms.raise_("line.crash", "critical", "line", text + " — line stopped")
            self.state = "fault"
            self._flush_tracks("line_fault")
            self._skip_queued("line_fault")
            self._fail_pending("line_fault")

    # ------------------------------------------------------------------ drivers
    def _read_frame(self) -> Frame | None:
        t0 = time.perf_counter()
        try:
            frame = self.backend.camera.read()
        except EndOfStreamError:
            raise
        except CorruptFrameError as e:
            self.frames_bad += 1
            self.alarms.raise_("camera.corrupt", "warning", "camera", f"corrupt frame skipped: {e}")
            return None
        except CameraError as e:
            self.alarms.raise_("camera.stall", "critical", "camera", f"camera: {e}")
            return None
        self.alarms.clear("camera.stall")
        self.stats.timing("capture", (time.perf_counter() - t0) * 1e3)
        return frame

    def run_stepped(self, duration_s: float, on_frame=None, on_tick=None) -> None:
        """Virtual-time driver (the simulator). ``on_tick(line)`` runs every tick (fault
        scripts use it); returns when ``duration_s`` of line time has passed or the line
        stopped or faulted."""
        cam = self.backend.camera
        tick = self.config.runtime.tick_s
        # Heartbeats and status reads keep their period; nothing waits on a poll in between.
        serve_every = max(tick, 0.5 * min((c.config.heartbeat_period_s for c in self.clients), default=tick))
        t_end = self.clock.now() + duration_s
        latency = self.config.runtime.inference_latency_s
        while self.clock.now() < t_end and self.state != "fault" and not self._stop_evt.is_set():
            try:
                t_next = cam.next_exposure_time()
                while self.clock.now() + tick <= min(t_next, t_end):
                    if self._arms_due(serve_every):
                        self.service_arms()
                    if on_tick is not None:
                        on_tick(self)
                    self.clock.sleep(tick)
                    self._check_stall()
                    # A fault script may have stalled, dropped or released frames meanwhile.
                    t_next = cam.next_exposure_time()
                # A frame due after t_end belongs to the next call: reading it now would leave
                # the arms unserved until its exposure.
                if self.clock.now() >= t_end or t_next > t_end:
                    self.clock.sleep(t_end - self.clock.now())  # less than a tick
                    break
                frame = self._read_frame()
                if frame is not None:
                    self.process_frame(frame)
                    if on_frame is not None:
                        on_frame(self, frame)
                    self.clock.sleep(latency)
                self._check_stall()
            except EndOfStreamError:
                break
            except Exception as e:
                self._fail("line", e)
                break

    def _arms_due(self, every_s: float) -> bool:
        """Serve the arms now: a target waits for an arm that can take it, or ``every_s`` passed."""
        now = self.clock.now()
        due = now >= self._next_service or (
            bool(self.scheduler.queue) and any(l.client.can_accept() for l in self.scheduler.lanes)
        )
        if due:
            self._next_service = now + every_s
        return due

    def _check_stall(self) -> None:
        if self._last_frame_t is not None and self.clock.now() - self._last_frame_t > self.config.runtime.stall_alarm_s:
            self.alarms.raise_(
                "camera.stall", "critical", "camera", f"no frame for {self.clock.now() - self._last_frame_t:.1f} s"
            )

    def run_threaded(self) -> None:
        """Start capture, inference and robot threads (returns at once; ``wait()``/``close()``)."""
        frames: deque[Frame] = deque(maxlen=self.config.runtime.frame_queue)
        cond = threading.Condition()
        self._stop_evt.clear()

        def capture():
            while not self._stop_evt.is_set():
                try:
                    frame = self._read_frame()
                except EndOfStreamError:
                    self.alarms.raise_("camera.end", "warning", "camera", "camera source ended")
                    break
                if frame is None:
                    self._check_stall()
                    self.clock.sleep(0.05)
                    continue
                with cond:
                    if len(frames) == frames.maxlen:
                        self.frames_dropped += 1  # the oldest goes: latency stays bounded
                    frames.append(frame)
                    cond.notify()

        def inference():
            while not self._stop_evt.is_set():
                with cond:
                    while not frames and not self._stop_evt.is_set():
                        cond.wait(0.2)
                    if not frames:
                        continue
                    frame = frames.popleft()
                self.process_frame(frame)

        def robot():
            tick = self.config.runtime.tick_s
            while not self._stop_evt.is_set():
                self.service_arms()
                self.clock.sleep(tick)

        def guard(name, fn):
            def run():
                try:
                    fn()
                except Exception as e:
                    self._fail(name, e)

            return run

        self._threads = [
            threading.Thread(target=guard(n, f), name=f"line-{n}", daemon=True)
            for n, f in (("capture", capture), ("inference", inference), ("robot", robot))
        ]
        for t in self._threads:
            t.start()

    def _join_threads(self) -> None:
        self._stop_evt.set()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=5.0)
        self._threads = []
