"""The line: camera → vision → tracking → pick ledger → arms, with a record of every scallop.

:class:`Line` wires parts that each have one job and implements
:class:`scallop.app.line_api.LineAPI` for the operator screen:

* :class:`~scallop.app.line.frames.FrameReader` reads the camera, turning its faults into alarms;
* the vision :class:`~scallop.vision.pipeline.Pipeline` and the
  :class:`~scallop.app.tracking.Tracker` turn frames into decisions, one per scallop;
* :class:`~scallop.app.line.ledger.PickLedger` follows every decision to its end;
* :class:`~scallop.app.line.arms.ArmDrivers` serve the arms (the scheduler shares the targets);
* :class:`~scallop.app.line.control.LineControl` decides start/pause/stop/e-stop/reset/fault;
* :class:`~scallop.app.line.publisher.Publisher` keeps the screen's frame and writes the record.

Two drivers run the same parts:

* :meth:`Line.run_threaded` — capture and inference in their own threads, joined by a bounded
  frame queue that drops the *oldest* frame under overload (counted in ``frames_dropped``),
  and one thread per arm. For real hardware and for the simulator in real time.
* :meth:`Line.run_stepped` — one thread on the simulator's virtual clock, stepping ``tick_s``
  of virtual time: the arms are served at once whenever a queued target waits for an arm that
  can take it, and otherwise every half heartbeat period (each service is a Modbus round
  trip, the most expensive part of a simulated tick); each frame is processed when its
  exposure comes. A run is faster than real time and the same seed gives the same result.

Safety rules kept here: nothing is sent to an arm except a plan the planner checked against
the workspace (the arm client checks again); a scallop gets exactly one decision — picked,
failed or skipped with a reason — and nothing queued is lost when the line stops. No lock is
held during network I/O.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import traceback
from collections import deque
from dataclasses import replace
from pathlib import Path

import numpy as np

from scallop.app.alarms import Alarms
from scallop.app.backends import Backend
from scallop.app.config import LineConfig
from scallop.app.line.arms import ArmDrivers
from scallop.app.line.beltcheck import BeltCheck, BeltFault
from scallop.app.line.control import LineControl
from scallop.app.line.frames import TIMING, FrameReader
from scallop.app.line.ledger import PickLedger, ScallopOutcome
from scallop.app.line.publisher import Publisher
from scallop.app.line.reject import RejectGate
from scallop.app.line.states import Action, LineReason, LineState
from scallop.app.line_api import LineSnapshot, Recipe
from scallop.app.stats import Stats
from scallop.app.tracking import Tracker
from scallop.errors import ConfigError, DeviceError, StateError
from scallop.robot.belt import ConveyorTracker
from scallop.robot.planning import PickPlanner
from scallop.vision.camera import EndOfStreamError, Frame
from scallop.vision.detections import Detections
from scallop.vision.pipeline import Pipeline

log = logging.getLogger("scallop.line")


class Line:
    def __init__(self, config: LineConfig, backend: Backend, record=None) -> None:
        self.config = config
        self.backend = backend
        self.record = record
        self.clock = backend.clock
        self.stats = Stats()
        self.control = LineControl(self.clock)
        self.publisher = Publisher(None, record, config.runtime.snapshot_doubtful)
        self.alarms = Alarms(on_change=self.publisher.alarm)
        self.recipe = config.recipe
        self.frames = 0
        self._frames_bad = 0  # frames that reached vision but could not be used
        self._vision_failures = 0  # consecutive frames vision failed on
        self.frames_dropped = 0
        self.observers: list = []  # on_frame(frame) / summary() -> dict
        self.pipeline: Pipeline | None = None
        self.tracker: Tracker | None = None
        self.ledger: PickLedger | None = None
        self.arms: ArmDrivers | None = None
        self.reader: FrameReader | None = None
        self.belt_check: BeltCheck | None = None
        self.reject: RejectGate | None = None
        self._capacity: dict[tuple[str, float], float] = {}  # (arm, belt speed) -> picks/s
        self._demand_at, self._demand_val = -math.inf, None
        self._scale = math.nan
        self._stop_evt = threading.Event()
        self._threads: list[threading.Thread] = []
        self._beats: dict[str, float] = {}  # loop -> monotonic time it last went round (real time)
        self._next_service = -math.inf
        # The model loop (docs/model-loop.md): the live model, a promoted one waiting for the
        # next frame boundary, the shadow candidate and the frame capture.
        self.model: dict = {}
        self.registry = None
        self._registry_stamp = 0
        self._pending_model = None
        self._models_stop = threading.Event()
        self._models_thread: threading.Thread | None = None
        self.shadow = None
        self._shadow_row_at = -math.inf
        self.capture = None

    # ------------------------------------------------------------------ set-up
    def open(self) -> None:
        """Open the backend, load the model, connect the arms (each failure is an alarm, and
        an arm that is not there does not stop the others)."""
        b = self.backend
        b.open()
        for part in b.accepted_redo:
            # The engineer's override of a REDO verdict: on the screen and in the record, every start.
            text = (
                f"calibration {part} has verdict REDO and is used by override "
                f"(runtime.accept_redo_calibration in the configuration): positions may be off"
            )
            self.alarms.raise_(f"calibration.redo.{part}", "warning", "calibration", text)
            self.publisher.event(
                "calibration_override", "system", {"part": part, "file": self.config.runtime.calibration}
            )
        self.pipeline, self.model = self._live_model()
        cam = b.camera_model
        self._scale = cam.mm_per_px_center()
        self.pipeline.check_frame(*cam.image_size, self._scale)  # a model that cannot take these frames: refused now
        _, exit_x = cam.view_x_range()
        belt = b.belt
        self.publisher.belt = belt
        self.tracker = Tracker(travel_of=belt.mm, exit_x=exit_x)
        self.arms = ArmDrivers(
            b.arm_configs,
            ConveyorTracker(belt.mm_per_count),
            self.clock,
            self.alarms,
            self.config.runtime.tick_s,
            record=self.publisher.event,
        )
        if self.record is not None:
            # The arm is never sent a pick the record does not hold (docs/interfaces.md, picks).
            self.arms.scheduler.before_commit = self._record_pick
        self.ledger = PickLedger(self.clock, belt, self.stats, verifier=b.verifier, holder=self.arms.scheduler.holder)
        cc = self.config.camera
        self.reader = FrameReader(
            b.camera,
            self.alarms,
            self.stats,
            self.clock,
            self.config.runtime.stall_alarm_s,
            cc.reconnect_min_s,
            cc.reconnect_max_s,
            name=f"camera {cc.source!r}",
        )
        if b.camera_error:
            self.reader.lost(b.camera_error)
        self.belt_check = BeltCheck(belt)
        self.observers = list(b.observers) + self.observers
        self._say_how_the_last_run_ended()
        self._open_model_loop()
        sched = self.arms.scheduler
        self.reject = RejectGate(
            b.plc_config,
            belt,
            self.alarms,
            self.clock,
            belt_count_now=lambda: sched.tracker.count_at(self.clock.now()) if sched.tracker.ready else None,
            belt_speed=lambda: sched.tracker.speed_mm_s if sched.tracker.ready else 0.0,
            event=self.publisher.event,
            view_x_lo=cam.view_x_range()[0],
        )
        self.arms.connect()

    def _record_pick(self, arm: str, plan) -> None:
        """Commit the pick's intent to the record before its arm's commit (raises if it cannot:
        the scheduler then skips the target, and the record raises its alarm)."""
        t = plan.target
        self.record.pick_intent(t.id, arm, (float(t.xy_mm[0]), float(t.xy_mm[1])))

    def _say_how_the_last_run_ended(self) -> None:
        """After a crash, a kill or a power cut the screen says so when the line comes back."""
        prev = getattr(self.record, "previous_run", None)
        if not prev or not prev["crashed"]:
            return
        import datetime

        when = datetime.datetime.fromtimestamp(prev["ended"]).strftime("%Y-%m-%d %H:%M:%S") if prev["ended"] else "?"
        unknown = prev["unknown_picks"]
        self.alarms.raise_(
            "line.restarted",
            "warning",
            "line",
            f"the line program stopped without closing at {when} (power cut, crash or kill) and started again"
            + (f"; {unknown} picks in flight then have an unknown outcome" if unknown else "")
            + ": check the scallops of that time; the line waits for Start",
        )

    def close(self) -> None:
        if self.state not in (LineState.ESTOP, LineState.FAULT):
            self.stop("system")
        self._join_threads()
        self._close_model_loop()
        if self.arms is not None:
            self.arms.close()
        if self.reject is not None:
            self.reject.close()
        self.backend.close()
        if self.record is not None:
            self.record.close()

    @property
    def state(self) -> LineState:
        return self.control.state

    @property
    def outcomes(self) -> dict[int, ScallopOutcome]:
        """Recent decisions by track id, in decision order (the record holds them all)."""
        return self.ledger.outcomes

    @property
    def frames_bad(self) -> int:
        """Frames that arrived but could not be used (corrupt, no count, wrong size, vision error)."""
        return self._frames_bad + (self.reader.bad if self.reader is not None else 0)

    @property
    def clients(self):
        return self.arms.clients

    # ------------------------------------------------------------------ the frame loop
    def process_frame(self, frame: Frame) -> None:
        """Vision → tracking → decisions for one frame. A bad frame is counted and alarmed,
        never fatal."""
        if self._pending_model is not None:
            self._swap_model()  # between two frames: the one before had the old model, this one the new
        t0 = time.perf_counter()
        if frame.encoder is None:
            self._frames_bad += 1
            self.alarms.raise_(
                "camera.encoder",
                "critical",
                "camera",
                "frames carry no encoder count: scallops cannot be tracked (configure [camera.encoder], "
                "see docs/configuration.md, or check the trigger wiring)",
            )
            return
        cam = self.backend.camera_model
        if (frame.width, frame.height) != tuple(cam.image_size):
            self._frames_bad += 1
            self.alarms.raise_(
                "camera.size",
                "critical",
                "camera",
                f"frames are {frame.width}x{frame.height} but the calibration is for "
                f"{cam.image_size[0]}x{cam.image_size[1]}: frames ignored",
            )
            return
        belt = self.backend.belt
        jitter = frame.extra.get("stamp_jitter_s")
        if jitter is not None:
            self.stats.timing("stamp_jitter", jitter * 1e3)
        err_mm = belt.mm(frame.extra.get("count_error", 0.0))
        if not err_mm <= self.config.runtime.max_count_error_mm:
            self._frames_bad += 1
            self.alarms.raise_(
                TIMING,
                "warning",
                "camera",
                f"frame {frame.index} skipped: its belt count may be off by {err_mm:.1f} mm (stamp error "
                f"{frame.timestamp_error_s * 1e3:.1f} ms), more than runtime.max_count_error_mm = "
                f"{self.config.runtime.max_count_error_mm:g}",
            )
            return
        try:
            dets = self.pipeline.detect(frame.image, mm_per_px=self._scale, to_belt=cam.pixel_to_belt)
        except Exception as e:  # a bad frame must not kill the line
            self._frames_bad += 1
            self._vision_failures += 1
            self.alarms.raise_("vision.error", "warning", "vision", f"frame {frame.index} could not be analysed: {e}")
            if self._vision_failures >= VISION_FAULT_FRAMES and self.state != LineState.FAULT:
                # Not a bad frame: vision itself cannot work, and every scallop would pass unchecked.
                self._fail(f"vision ({self._vision_failures} frames in a row)", e)
            return
        self._vision_failures = 0
        self.alarms.clear("vision.error")
        t1 = time.perf_counter()
        self.stats.timing("inference", (t1 - t0) * 1e3)
        for obs in self.observers:
            on_frame = getattr(obs, "on_frame", None)
            if on_frame is not None:
                on_frame(frame)
        count = belt.counts(frame.encoder)
        whole = ~dets.cut_by_border if len(dets) else np.zeros(0, bool)
        fault = self.belt_check.update(frame.timestamp, count, dets.center_mm[whole] if len(dets) else [])
        done: list[ScallopOutcome] = []
        with self.control.lock:
            self.frames += 1
            self.reader.analysed(frame.timestamp)
            done += self._belt_fault(fault)
            if self.belt_check.trusted:
                # Suspect counts never reach the arms' belt model: a frozen counter would make
                # it think the belt stopped, and a pick already planned would close on nothing.
                self.arms.scheduler.belt_sample(frame.timestamp, count)
            # Stopped (or in e-stop/fault, or the counts are not trusted): the screen still
            # shows the belt, nothing is tracked.
            if self.control.tracking and self.belt_check.trusted:
                decisions = self.tracker.update(dets, count, frame.timestamp, frame.index, frame.image.shape[1::-1])
                done += self._decide(decisions)
            self._sync_inputs()
        self._finished(done)
        t2 = time.perf_counter()
        self.stats.timing("tracking", (t2 - t1) * 1e3)
        self.stats.timing("frame_total", (t2 - t0) * 1e3)
        self.publisher.frame(frame.image, dets)
        # Neither waits: the capture queues the frame (or drops it), the shadow takes it if idle.
        if self.capture is not None:
            self.capture.on_analysed(frame, dets, self._scale)
        if self.shadow is not None:
            self.shadow.offer(frame, dets, self._scale)
            if self.clock.now() >= self._shadow_row_at:
                self._shadow_row()

    def _belt_fault(self, fault: BeltFault | None) -> list[ScallopOutcome]:
        """Alarm an encoder the image contradicts (control lock held); when it starts, the open
        tracks and queued picks planned on its counts are recorded, not picked."""
        done: list[ScallopOutcome] = []
        for kind in ("frozen", "mismatch", "impossible"):
            key = f"encoder.{kind}"
            if fault is not None and fault.kind == kind:
                if not self.alarms.is_active(key):
                    done += self._flush_tracks(LineReason.ENCODER_FAULT)
                self.alarms.raise_(key, "critical", "camera", fault.text)
            else:
                self.alarms.clear(key)
        return done

    def _sync_inputs(self) -> None:
        """RUNNING while the camera gives frames to pick from, WAITING_CAMERA while not."""
        with self.control.lock:
            # (Counts merely suspect hold tracking for a frame or two, not the state: on an empty
            # belt nothing would clear them, and nothing needs picking either.)
            self.control.inputs(self.reader.usable and self.belt_check.fault is None)

    def _finished(self, done: list[ScallopOutcome]) -> None:
        """Finished decisions: each gets its disposition (the gate is asked for the scallops
        that need diverting), then goes to the record and the screen."""
        if done and self.reject is not None:
            self.reject.dispose(done)
        self.publisher.outcomes(done)

    def _decide(self, decisions) -> list[ScallopOutcome]:
        """New decisions into the ledger and their targets to the scheduler (control lock held)."""
        hold = self.reject.hold_reason() if self.reject is not None else ""
        targets, done = self.ledger.decide(decisions, self.control.state, hold)
        now = self.clock.now()
        for d in decisions:
            if d.pick:
                self.stats.event(now, "target")  # asked of the arms (back-pressure's demand)
        if targets:
            t0 = time.perf_counter()
            self.arms.scheduler.add(targets)
            self.stats.timing("planning", (time.perf_counter() - t0) * 1e3)
            done += self._collect()
        return done

    def _collect(self) -> list[ScallopOutcome]:
        """The scheduler's results into the ledger; returns what finished."""
        skips, outcomes = self.arms.scheduler.drain()
        if not skips and not outcomes:
            return []
        return self.ledger.apply(skips, outcomes)

    def service_arms(self) -> None:
        """Poll the arms, hand out picks, collect results (the robot I/O stage). In e-stop
        or fault the arms are only read: no heartbeats, so each arm's watchdog aborts its
        motion (docs/robot-interface.md); nothing is sent until reset."""
        t0 = time.perf_counter()
        self.arms.step(self._arms_active())
        self._finished(self._collect())
        self.service_plc()
        self.stats.timing("modbus", (time.perf_counter() - t0) * 1e3)

    def _demand(self) -> float | None:
        """The share of the arms' capacity the last minute's arrivals asked for: scallops handed
        to the arms per second over what the connected arms sustain at the belt's speed (None:
        not known yet)."""
        tracker = self.arms.scheduler.tracker
        now = self.clock.now()
        if now < self._demand_at + 1.0:
            return self._demand_val  # judged once a second: it looks back over 20
        self._demand_at = now
        self._demand_val = None
        if not tracker.ready or self.control.uptime_s() < DEMAND_WINDOW_S:
            return None
        v = round(tracker.speed_mm_s, -1)
        if v <= 0:
            return None
        arms = [c.config for c in self.arms.clients if c.connected]
        cap = 0.0
        for a in arms:
            key = (a.name, v)
            if key not in self._capacity:
                self._capacity[key] = PickPlanner(a).capacity_per_s(v)
            cap += self._capacity[key]
        if cap <= 0:
            return None
        self._demand_val = self.stats.per_minute(now, "target", DEMAND_WINDOW_S) / 60.0 / cap
        return self._demand_val

    def service_plc(self) -> None:
        """The line PLC: heartbeat, outputs from the line's state, its inputs and alarms. While
        it holds picking (lost, safety circuit open) targets still queued are not sent."""
        if self.reject is None:
            return
        active = [a for a in self.alarms.visible() if a.active]
        critical = any(a.severity == "critical" and not a.acked for a in active)
        self.reject.service(self.state, critical, any(a.severity != "info" for a in active), self._demand())
        hold = self.reject.hold_reason()
        if hold:
            with self.control.lock:
                done = self._skip_queued(hold)
            self._finished(done)

    # ------------------------------------------------------------------ control (LineAPI)
    def _event(self, action: Action, user: str, detail: dict | None = None) -> None:
        self.publisher.event(action.value, user, detail)

    def _arms_active(self) -> bool:
        return self.state not in (LineState.ESTOP, LineState.FAULT)

    def start(self, user: str = "system", how: str = "screen") -> None:
        """``how`` the start was asked for, for the record: ``screen`` (an operator), or
        ``--start`` (``scallop run --start``: at launch, on purpose)."""
        with self.control.lock:
            self.control.check(Action.START)
            self._event(Action.START, user, {"how": how})
            self.control.go(Action.START)
            self._sync_inputs()

    def pause(self, user: str = "system") -> None:
        """No new picks; picks the arms already hold finish."""
        with self.control.lock:
            self.control.check(Action.PAUSE)
            self._event(Action.PAUSE, user)
            self.control.go(Action.PAUSE)
            done = self._skip_queued(LineReason.LINE_PAUSED)
        self._finished(done)

    def stop(self, user: str = "system") -> None:
        """Arms finish what they hold, then go home; every open scallop is recorded."""
        with self.control.lock:
            if self.state == LineState.STOPPED:
                return
            self._event(Action.STOP, user)
            if self.state in TRANSITIONS_STOP:
                self.control.go(Action.STOP)
        self._drain_arms()
        with self.control.lock:
            done = self._flush_tracks(LineReason.LINE_STOPPED)
            self.control.stopped()
        self._finished(done)

    def estop(self, user: str = "screen") -> None:
        with self.control.lock:
            self._event(Action.ESTOP, user)
            self.control.go(Action.ESTOP)
            self.alarms.raise_(
                "line.estop", "critical", "line", f"emergency stop pressed by {user}", params={"user": user}
            )
            done = self._flush_tracks(LineReason.ESTOP)
            done += self._skip_queued(LineReason.ESTOP)
            done += self.ledger.fail_pending(LineReason.ESTOP)
        self._finished(done)

    def reset(self, user: str = "system") -> None:
        """Leave e-stop or fault (back to stopped) and RESET every arm in fault or e-stop,
        whatever the line's state: the line first, so its heartbeats run again when the arms
        get their RESET (an arm accepts it only with the heartbeat alive)."""
        with self.control.lock:
            line_held = self.state in (LineState.ESTOP, LineState.FAULT)
            arms = self.arms.faulted()
            gate = self.alarms.is_active("plc.gate")
            if not line_held and not arms and not gate:
                raise StateError("nothing to reset: neither the line nor any arm is in e-stop or fault")
            self._event(Action.RESET, user, {"arms": arms} if arms else None)
            if line_held:
                self.control.go(Action.RESET)
                self.alarms.clear("line.estop")
                self.alarms.clear("line.crash")
        if self.reject is not None:
            self.reject.reset()  # a gate fault whose cause is gone clears at the next beat
        self.arms.reset_faults(user)  # Modbus I/O: outside the control lock

    def reset_arm(self, name: str, user: str) -> bool:
        """RESET one arm in fault or e-stop (refused while the line itself is in e-stop or
        fault: no heartbeat runs then, reset the line). Returns whether RESET was sent."""
        if not self._arms_active():
            raise StateError(f"the line is in {self.state.value}: reset the line, it resets its arms too")
        return self.arms.reset_arm(name, user)

    def ack_alarm(self, alarm_id: int, user: str) -> None:
        """Acknowledging an arm's fault or e-stop alarm is the operator's word to RESET it."""
        self.alarms.ack(alarm_id, user)
        arm = self.arms.arm_of_alarm(alarm_id)
        if arm is not None and self._arms_active():
            self.arms.reset_arm(arm, user)

    def recipes(self) -> list[Recipe]:
        return [Recipe(r.name, tuple(r.product_size_mm), r.belt_speed_mm_s, r.description) for r in self.config.recipes]

    def select_recipe(self, name: str, user: str) -> None:
        names = [r.name for r in self.config.recipes]
        if name not in names:
            raise KeyError(f"unknown recipe {name!r}; choose one of {', '.join(names)}")
        with self.control.lock:
            if self.state in (LineState.RUNNING, LineState.WAITING_CAMERA):
                raise StateError("pause or stop the line before changing the recipe")
            self.recipe = name
            self.publisher.event("recipe", user, {"recipe": name})

    def config_view(self) -> dict:
        from scallop.app.config import to_dict

        cam = self.backend.camera_model
        d = to_dict(self.config)
        d["calibration"] = {
            "image_size": list(cam.image_size),
            "mm_per_px_center": round(cam.mm_per_px_center(), 4),
            "counts_per_mm": self.backend.belt.counts_per_mm,
        }
        return d

    def update_config(self, changes: dict, user: str) -> dict:
        """Engineer changes to the vision thresholds, validated and applied at once. Keys as the
        screen's panel takes them, ``{"vision.min_uro_confidence": 0.6}``, or as a table,
        ``{"vision": {"min_uro_confidence": 0.6}}``. Anything else needs a restart (the
        configuration file) or is not the line's to change (the belt's speed is the recipe's)."""
        from scallop.app.config import build, to_dict
        from scallop.vision.pipeline import PipelineConfig

        if not isinstance(changes, dict):
            raise ConfigError(f"changes={changes!r}: expected a JSON object of keys and values")
        vision: dict = {}
        for key, value in changes.items():
            if key == "vision" and isinstance(value, dict):
                vision.update(value)
            elif isinstance(key, str) and key.startswith("vision.") and key.count(".") == 1:
                vision[key.split(".", 1)[1]] = value
            else:
                raise ConfigError(
                    f"{key}: cannot be changed while the line runs; the panel changes the vision thresholds "
                    '(e.g. {"vision.min_uro_confidence": 0.6}); the belt speed comes with the recipe, '
                    "everything else from the configuration file at the next start"
                )
        if {"model", "threads", "shadow_model"} & set(vision):
            raise ConfigError(
                "vision.model, vision.threads and vision.shadow_model need a restart; change them in the config "
                "file (a model is put live with scallop model promote)"
            )
        new = build(PipelineConfig, {**to_dict(self.config.vision), **vision}, "vision")
        with self.control.lock:
            self.config = replace(self.config, vision=new)
            self.pipeline.config = new
            if self.shadow is not None:
                # The candidate is judged on its model, not on other thresholds.
                self.shadow.pipeline.config = replace(new, threads=1)
                self.shadow.share, self.shadow.cpu_share = new.shadow_share, new.shadow_cpu_share
            self.publisher.event("config", user, {"vision": vision})
        return to_dict(new)

    # ------------------------------------------------------------------ read side (LineAPI)
    def _tally(self) -> dict:
        """The counts the screen, the metrics and the summary all show, counted one way.
        What a pick did to its scallop is known only with a pick verifier (the simulator's
        truth, an inspection camera); without one those figures are None, never 0."""
        c, reasons = self.ledger.totals()
        known = self.ledger.verifier is not None
        picked, failed, removed = c.get("picked", 0), c.get("failed", 0), c.get("uro_removed", 0)
        with_uro = picked + failed + sum(v for k, v in reasons.items() if k != "no_uro")
        return {
            "seen": c.get("seen", 0),
            "tracking": self.tracker.open_count() if self.tracker is not None else 0,
            "picked": picked,
            "uro_removed": removed if known else None,
            "missed": c.get("missed", 0) if known else None,
            "adductor_hits": c.get("adductor_hits", 0) if known else None,
            "skipped": c.get("skipped", 0) + failed,
            "skipped_by_reason": reasons,
            "removal_rate": (removed / with_uro) if known and with_uro else None,
            "frames": self.frames,
            "frames_dropped": self._frames_dropped(),
            "dispositions": self.reject.summary()["dispositions"] if self.reject is not None else {},
        }

    def snapshot(self) -> LineSnapshot:
        now = self.clock.now()
        arms = self.arms.statuses(lambda name: self.ledger.arm_tally(name, now))
        if self.state in (LineState.ESTOP, LineState.FAULT):
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
            state=self.state.value,
            recipe=self.recipe,
            uptime_s=self.control.uptime_s(),
            per_minute=self.stats.per_minute(now, "seen"),
            latency_ms={k: {"p50": v["p50"], "p99": v["p99"]} for k, v in self.stats.latency_summary().items()},
            arms=arms,
            alarms=self.alarms.visible(),
            **self._tally(),
            model=dict(self.model),
            shadow=self.shadow.figures() if self.shadow is not None else {},
            capture=self.capture.status() if self.capture is not None else {},
        )

    def _frames_dropped(self) -> int:
        return self.frames_dropped + getattr(self.backend.camera, "dropped", 0)

    def latest_frame(self) -> tuple[np.ndarray, Detections] | None:
        """The last analysed frame (BGR) and its detections; the scenario bench annotates failures with it."""
        return self.publisher.latest_frame()

    def latest_jpeg(self) -> bytes | None:
        return self.publisher.latest_jpeg()

    def metrics_text(self) -> str:
        """The line's metrics and its record writer's (docs/interfaces.md)."""
        from scallop.app.metrics import RecordCollector, SnapshotCollector, render

        collectors = [SnapshotCollector(self.snapshot())]
        if self.record is not None:
            collectors.append(RecordCollector(self.record.stats))
        return render(*collectors)

    def summary(self) -> dict:
        """The one-line JSON of ``scallop run --duration``: the screen's counts (and the
        simulator's truth beside them when there is one)."""
        out = self._tally()
        out.pop("removal_rate")
        out["model"] = dict(self.model)
        if self.reject is not None:
            out.update(self.reject.summary())
        if self.shadow is not None:
            out["shadow"] = self.shadow.figures()
        if self.capture is not None and self.capture.kept:
            out["capture"] = self.capture.status()
        for obs in self.observers:
            summary = getattr(obs, "summary", None)
            if summary is not None:
                out["truth"] = summary()
        return out

    # ------------------------------------------------------------------ the model loop
    def _live_model(self):
        """The live model's Pipeline and its name and hash: the registry's live model when the
        configuration names a registry, else ``vision.model`` (or the shipped model)."""
        from scallop.app.registry import Registry, sha256_of
        from scallop.models.runtime import default_model_path

        cfg = self.config
        if cfg.models.registry:
            self.registry = Registry(cfg.models.registry)
            e = self.registry.ensure_live()
            self._registry_stamp = self.registry.stamp()
            return Pipeline(str(e.path), cfg.vision), {"name": e.name, "sha256": e.sha256}
        path = Path(cfg.vision.model) if cfg.vision.model else default_model_path()
        pipe = Pipeline(config=cfg.vision)
        return pipe, {"name": path.stem, "sha256": sha256_of(path)}

    def _open_model_loop(self) -> None:
        from scallop.app.capture import CaptureSettings, FrameCapture

        cfg = self.config
        cam = self.backend.camera_model
        belt = self.backend.belt
        record_dir = Path(self.record.path).parent if self.record is not None else Path(".")
        self.capture = FrameCapture(
            CaptureSettings(
                folder=Path(cfg.capture.folder) if cfg.capture.folder else record_dir / "captures",
                budget_bytes=int(cfg.capture.budget_mb * 1e6),
                routine_share=cfg.capture.routine_share,
                low_margin=cfg.capture.low_margin,
                min_uro_confidence=cfg.vision.min_uro_confidence,
            ),
            self.alarms,
            lambda: dict(self.model),
            lambda raw: belt.mm(belt.counts(raw)),
        )
        self.publisher.listeners.append(self.capture.on_outcomes)
        if cfg.vision.shadow_model:
            from scallop.app.shadow import Shadow

            path, model = self._resolve_model(cfg.vision.shadow_model, "vision.shadow_model")
            pipe = Pipeline(str(path), replace(cfg.vision, threads=1))
            pipe.check_frame(*cam.image_size, self._scale)
            self.shadow = Shadow(
                pipe, model, cfg.vision.shadow_share, cfg.vision.shadow_cpu_share, on_disagreement=self._disagreement
            )
            self._shadow_row_at = self.clock.now() + SHADOW_ROW_S
        if self.registry is not None:
            self._models_thread = threading.Thread(target=self._watch_registry, name="line-models", daemon=True)
            self._models_thread.start()

    def _resolve_model(self, name: str, key: str):
        """A model file, or the name of a model in the registry → (path, {name, sha256})."""
        from scallop.app.registry import sha256_of

        p = Path(name)
        if p.is_file():
            return p, {"name": p.stem, "sha256": sha256_of(p)}
        if self.registry is not None:
            try:
                e = self.registry.get(name)
            except KeyError as ex:
                raise ConfigError(f"{key}={name!r}: no such file, and {ex.args[0]}") from None
            return e.path, {"name": e.name, "sha256": e.sha256}
        raise ConfigError(f"{key}={name!r}: no such model file")

    def _disagreement(self, frame, dets, mm_per_px: float) -> None:
        if self.capture is not None:
            self.capture.on_analysed(frame, dets, mm_per_px, extra_reasons=("shadow_disagreement",))

    def _shadow_row(self) -> None:
        self._shadow_row_at = self.clock.now() + SHADOW_ROW_S
        if self.record is None or self.shadow is None:
            return
        c = self.shadow.take_interval()
        if not c.get("frames") and not c.get("skipped_busy") and not c.get("skipped_sample"):
            return
        self.record.shadow(
            {
                "time": time.time(),
                "model": self.shadow.model["name"],
                "model_sha256": self.shadow.model["sha256"],
                "live_model": self.model.get("name", ""),
                "frames": c.get("frames", 0),
                "skipped": c.get("skipped_busy", 0) + c.get("skipped_sample", 0),
                "scallops": c.get("scallops", 0),
                "verdicts_agree": c.get("verdicts_agree", 0),
                "grasps_compared": c.get("grasps_compared", 0),
                "grasps_agree": c.get("grasps_agree", 0),
                "live_only": c.get("live_only", 0),
                "shadow_only": c.get("shadow_only", 0),
                "shadow_ms_p50": c.get("ms_p50"),
            }
        )

    def _watch_registry(self) -> None:
        while not self._models_stop.wait(self.config.models.poll_s):
            try:
                self.poll_models()
            except Exception as e:  # the line goes on with the model it has
                log.warning("model registry: %s", e)

    def poll_models(self) -> bool:
        """Load the registry's live model if it changed; the frame loop puts it in at its next
        frame. True when a model now waits for that. Loading happens here, off the frame loop."""
        reg = self.registry
        if reg is None:
            return False
        stamp = reg.stamp()
        if stamp == self._registry_stamp:
            return False
        self._registry_stamp = stamp
        index = reg.index()
        name = index.get("live")
        if not name or name == self.model.get("name"):
            return False
        try:
            e = reg.get(name)
            pipe = Pipeline(str(e.path), self.config.vision)
            cam = self.backend.camera_model
            pipe.check_frame(*cam.image_size, self._scale)
        except Exception as ex:
            self.alarms.raise_(
                "vision.model",
                "warning",
                "vision",
                f"model {name} was made live but cannot be used ({ex}); the line keeps {self.model.get('name')}",
                params={"detail": str(ex)},
            )
            return False
        self.alarms.clear("vision.model")
        why = next((h for h in reversed(index.get("history", [])) if h.get("model") == name), {})
        self._pending_model = (pipe, {"name": e.name, "sha256": e.sha256}, why)
        return True

    def _swap_model(self) -> None:
        pipe, model, why = self._pending_model
        with self.control.lock:
            pipe.config = self.config.vision  # thresholds changed on the panel meanwhile stay
            previous, self.pipeline, self.model = self.model, pipe, model
            self._pending_model = None
            self.publisher.event(
                "model",
                why.get("user") or "system",
                {
                    "model": model["name"],
                    "sha256": model["sha256"],
                    "from": previous.get("name", ""),
                    "action": why.get("action", ""),
                },
            )
        log.info("model %s live (was %s)", model["name"], previous.get("name"))

    def set_capture(self, on: bool, user: str) -> dict:
        """Start or stop keeping frames for labelling (the engineer panel's switch)."""
        if not isinstance(on, bool):
            raise ConfigError(f"on={on!r}: expected true or false")
        cap = self.capture
        if on and not cap.active:
            session = cap.start({"user": user})
            self.publisher.event("capture", user, {"on": True, "session": session.name})
        elif not on and cap.active:
            name = cap.status()["session"]
            cap.stop()
            self.publisher.event("capture", user, {"on": False, "session": name, "kept": cap.kept})
        return cap.status()

    def _close_model_loop(self) -> None:
        self._models_stop.set()
        if self._models_thread is not None:
            self._models_thread.join(timeout=5.0)
            self._models_thread = None
        if self.shadow is not None:
            self.shadow.stop()  # finishes the frame it holds: the last row counts it
            self._shadow_row()
        if self.capture is not None:
            self.capture.stop()

    # ------------------------------------------------------------------ stopping
    def _flush_tracks(self, reason: str) -> list[ScallopOutcome]:
        """Every open track recorded, and targets still queued (not sent to any arm) skipped,
        not lost (control lock held)."""
        done = self.ledger.flush(self.tracker.flush(), reason, overrule=reason == LineReason.ENCODER_FAULT)
        return done + self._skip_queued(reason)

    def _skip_queued(self, reason: str) -> list[ScallopOutcome]:
        return self.ledger.cancel(self.arms.scheduler.take_queue(), reason)

    def _drain_arms(self, timeout_s: float = 5.0) -> None:
        """Let in-flight picks finish (serving the arms on the line's clock), then send the
        arms to their ready position."""
        t_end = self.clock.now() + timeout_s
        threaded = bool(self._threads)
        while self.clock.now() < t_end:
            with self.control.lock:
                done = self._skip_queued(LineReason.LINE_STOPPED)  # nothing new once stopping
            self._finished(done)
            if self.arms.scheduler.in_flight() == 0:
                break
            if not threaded:
                self.service_arms()
            self.clock.sleep(self.config.runtime.tick_s)
        with self.control.lock:
            done = self.ledger.fail_pending(LineReason.LINE_STOPPED)
        self._finished(done)
        self.arms.send_idle_home()

    def _fail(self, stage: str, exc: BaseException) -> None:
        """A stage crashed: report it and stop the line safely (never carry on half-working)."""
        text = f"{stage} stage crashed: {type(exc).__name__}: {exc}"
        log.error("%s\n%s", text, "".join(traceback.format_exception(exc)))
        with self.control.lock:
            self.control.fault(text)
            self.alarms.raise_("line.crash", "critical", "line", text + " — line stopped", params={"detail": text})
            done = self._flush_tracks(LineReason.LINE_FAULT)
            done += self._skip_queued(LineReason.LINE_FAULT)
            done += self.ledger.fail_pending(LineReason.LINE_FAULT)
        self._finished(done)

    # ------------------------------------------------------------------ drivers
    def run_stepped(self, duration_s: float, on_frame=None, on_tick=None) -> None:
        """Virtual-time driver (the simulator). ``on_tick(line)`` runs every tick (fault
        scripts use it); returns when ``duration_s`` of line time has passed or the line
        stopped or faulted."""
        cam = self.backend.camera
        if cam.next_frame_time() is None:
            raise DeviceError(
                "the stepped driver needs a camera that tells when its next frame comes "
                "(the simulator or a recording); a live camera runs with run_threaded()"
            )
        tick = self.config.runtime.tick_s
        # Heartbeats and status reads keep their period; nothing waits on a poll in between.
        serve_every = max(tick, 0.5 * self.arms.heartbeat_period_s())
        t_end = self.clock.now() + duration_s
        latency = self.config.runtime.inference_latency_s
        while self.clock.now() < t_end and self.state != LineState.FAULT and not self._stop_evt.is_set():
            try:
                t_next = cam.next_frame_time()
                while self.clock.now() + tick <= min(t_next, t_end):
                    if self._arms_due(serve_every):
                        self.service_arms()
                    if on_tick is not None:
                        on_tick(self)
                    self.clock.sleep(tick)
                    self.reader.check_stall()
                    self._sync_inputs()
                    # A fault script may have stalled, dropped or released frames meanwhile.
                    t_next = cam.next_frame_time()
                # A frame due after t_end belongs to the next call: reading it now would leave
                # the arms unserved until its exposure.
                if self.clock.now() >= t_end or t_next > t_end:
                    self.clock.sleep(t_end - self.clock.now())  # less than a tick
                    break
                frame = self.reader.read()
                self._sync_inputs()
                if frame is not None:
                    self.process_frame(frame)
                    if on_frame is not None:
                        on_frame(self, frame)
                    self.clock.sleep(latency)
                elif not self.reader.usable:
                    # Waiting to reconnect: time goes on, the arms are served meanwhile.
                    if self._arms_due(serve_every):
                        self.service_arms()
                    if on_tick is not None:
                        on_tick(self)
                    self.clock.sleep(tick)
                self.reader.check_stall()
                self._sync_inputs()
            except EndOfStreamError:
                break
            except Exception as e:
                self._fail("line", e)
                break

    def _arms_due(self, every_s: float) -> bool:
        """Serve the arms now: a target waits for an arm that can take it, or ``every_s`` passed."""
        now = self.clock.now()
        due = now >= self._next_service or self.arms.any_waiting()
        if due:
            self._next_service = now + every_s
        return due

    def run_threaded(self) -> None:
        """Start capture, inference and one thread per arm (returns at once; ``close()``)."""
        frames: deque[Frame] = deque(maxlen=self.config.runtime.frame_queue)
        cond = threading.Condition()
        self._stop_evt.clear()
        stop = self._stop_evt

        def capture():
            while not stop.is_set():
                self._beat("capture")
                try:
                    frame = self.reader.read()
                except EndOfStreamError:
                    self.alarms.raise_("camera.end", "warning", "camera", "camera source ended")
                    break
                self._sync_inputs()
                if frame is None:
                    self.clock.sleep(self.reader.wait_s())
                    continue
                with cond:
                    if len(frames) == frames.maxlen:
                        self.frames_dropped += 1  # the oldest goes: latency stays bounded
                    frames.append(frame)
                    cond.notify()

        def inference():
            while not stop.is_set():
                self._beat("inference")
                with cond:
                    while not frames and not stop.is_set():
                        cond.wait(0.2)
                        if not frames:
                            # Also notices a camera whose read() hangs without an error.
                            self.reader.check_stall()
                            self._sync_inputs()
                    if not frames:
                        continue
                    frame = frames.popleft()
                self.process_frame(frame)
                self.reader.check_stall()  # frames that come but cannot be used
                self._sync_inputs()

        def guard(name, fn):
            def run():
                try:
                    fn()
                except Exception as e:
                    self._fail(name, e)

            return run

        def after_service() -> None:
            self._finished(self._collect())

        def plc():
            # Its own loop: a slow PLC never holds up an arm, nor an arm the PLC's heartbeat.
            while not stop.is_set():
                self._beat("plc")
                self.service_plc()
                stop.wait(PLC_PERIOD_S)

        loops = [("capture", capture), ("inference", inference)]
        if self.reject is not None and self.reject.client is not None:
            loops.append(("plc", plc))
        self._threads = [threading.Thread(target=guard(n, f), name=f"line-{n}", daemon=True) for n, f in loops]
        for t in self._threads:
            t.start()
        # In e-stop or fault no heartbeats go out: each arm's watchdog stops it.
        self._threads += self.arms.start_threads(self._arms_active, after_service, stop, self._fail, beat=self._beat)

    def _beat(self, loop: str) -> None:
        self._beats[loop] = time.monotonic()

    def health(self, max_age_s: float = 15.0) -> dict:
        """Whether the line's loops are alive (``/healthz``, the service watchdog): not faulted,
        and in real time every loop thread running and round its loop within ``max_age_s``. A
        camera that delivers nothing is an alarm, not ill health: its loop still goes round."""
        now = time.monotonic()
        ages = {k: round(now - t, 3) for k, t in self._beats.items()}
        dead = [t.name for t in self._threads if not t.is_alive()]
        stale = sorted(k for k, a in ages.items() if a > max_age_s)
        ok = self.state != LineState.FAULT and not dead and not stale
        return {"ok": ok, "state": self.state.value, "loops": ages, "dead": dead, "stale": stale}

    def _join_threads(self) -> None:
        self._stop_evt.set()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=5.0)
        self._threads = []
        if self.arms is not None:
            self.arms.stop_threads()


# Back-pressure judges the arrivals over this long (once the line has run that long): long
# enough to see a burst for what it is, short enough to let the feeder run again soon after.
DEMAND_WINDOW_S = 20.0

# How often the line PLC is polled and its heartbeat sent (docs/plc-interface.md: about 50 ms).
PLC_PERIOD_S = 0.05

# Line time between two rows of the record's shadow table.
SHADOW_ROW_S = 60.0

# Frames in a row that vision may fail on before the line faults (one bad frame is an alarm).
VISION_FAULT_FRAMES = 10

# A STOP from these states goes through STOPPING; from e-stop or fault the line stays there.
TRANSITIONS_STOP = (LineState.RUNNING, LineState.PAUSED, LineState.STARTING, LineState.WAITING_CAMERA)
