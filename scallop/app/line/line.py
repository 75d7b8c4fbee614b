"""The line: camera → vision → tracking → pick ledger → arms, with a record of every scallop.

:class:`Line` wires parts that each have one job and implements
:class:`scallop.app.line_api.LineAPI` for the operator screen:

* :class:`~scallop.app.line.frames.FrameReader` reads the camera, turning its faults into alarms;
* the vision :class:`~scallop.vision.pipeline.Pipeline` and the
  :class:`~scallop.app.tracking.Tracker` turn frames into decisions, one per scallop;
* :class:`~scallop.app.line.ledger.PickLedger` follows every decision to its end;
* :class:`~scallop.app.line.arms.ArmDrivers` serve the arms (the scheduler shares the targets);
* :class:`~scallop.app.line.control.LineControl` decides start/pause/stop/e-stop/reset/fault;
* :class:`~scallop.app.line.publisher.Publisher` keeps the screen's frame and writes the record;
* :class:`~scallop.app.line.reject.RejectGate` gives every finished scallop its disposition
  through the line PLC, fed by :class:`~scallop.app.line.demand.ArmDemand` for back-pressure;
* :class:`~scallop.app.line.models.ModelLoop` holds the live model, its shadow and the capture;
* :class:`~scallop.app.line.readout.Readout` counts for the screen, the metrics and the summary;
* :class:`~scallop.app.line.drivers.Drivers` run all of it, in threads (real hardware, the
  simulator in real time) or stepped on the simulator's virtual clock.

Safety rules kept here: nothing is sent to an arm except a plan the planner checked against
the workspace (the arm client checks again); a scallop gets exactly one decision — picked,
failed or skipped with a reason — and nothing queued is lost when the line stops. No lock is
held during network I/O.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from pathlib import Path

import numpy as np

from scallop.app.alarms import Alarms
from scallop.app.backends import Backend
from scallop.app.config import LineConfig
from scallop.app.line import settings
from scallop.app.line.arms import ArmDrivers
from scallop.app.line.beltcheck import BeltCheck, BeltFault
from scallop.app.line.channel import FluorescenceInput, open_channel
from scallop.app.line.control import LineControl
from scallop.app.line.demand import ArmDemand
from scallop.app.line.drivers import Drivers
from scallop.app.line.frames import FrameReader, frame_problem
from scallop.app.line.ledger import PickLedger, ScallopOutcome
from scallop.app.line.models import ModelLoop
from scallop.app.line.publisher import Publisher
from scallop.app.line.readout import Readout
from scallop.app.line.reject import RejectGate
from scallop.app.line.shift import Shift
from scallop.app.line.states import Action, LineReason, LineState
from scallop.app.line_api import LineSnapshot, Recipe
from scallop.app.stats import Stats
from scallop.app.tracking import Tracker
from scallop.errors import StateError
from scallop.robot.belt import ConveyorTracker
from scallop.vision.camera import Frame
from scallop.vision.detections import REASON_OUTSIDE_CHANNEL, Detections
from scallop.vision.pipeline import Pipeline

log = logging.getLogger("scallop.line")


def belt_scale_key(calibration: str, belt) -> str:
    """What a belt-scale reading belongs to: the line calibration file's contents and the
    encoder's counts per millimetre ("" without a calibration file: the simulator's own camera,
    whose runs start afresh). A new calibration, or another encoder scale, starts a new reading."""
    if not calibration:
        return ""
    import hashlib

    try:
        data = Path(calibration).read_bytes()
    except OSError:
        return ""  # the backend's own load says what is wrong with it
    return hashlib.sha256(data + repr(float(belt.counts_per_mm)).encode()).hexdigest()[:16]


def kept_belt_scale(record, key: str) -> tuple[float | None, str]:
    """The belt-scale reading an earlier run kept for ``key`` (the record's newest ``belt_scale``
    event), and when it was taken, or (None, "")."""
    if not key or record is None:
        return None, ""
    ev = getattr(record, "last_events", {}).get("belt_scale") or {}
    detail = ev.get("detail") or {}
    ratio = detail.get("ratio")
    if detail.get("calibration") != key or not isinstance(ratio, (int, float)) or not 0.8 <= ratio <= 1.25:
        return None, ""
    import datetime

    when = ev.get("time")
    note = datetime.datetime.fromtimestamp(when).strftime("%Y-%m-%d %H:%M") if isinstance(when, (int, float)) else "?"
    return float(ratio), note


class Line:
    def __init__(self, config: LineConfig, backend: Backend, record=None) -> None:
        self.config = config
        self.backend = backend
        self.record = record
        self._intents: dict[str, tuple[int, int]] = {}  # arm -> (track, pick intent row) last recorded
        self.clock = backend.clock
        self.stats = Stats()
        self.control = LineControl(self.clock)
        self.publisher = Publisher(None, record, config.runtime.snapshot_doubtful, self.clock.wall)
        self.alarms = Alarms(on_change=self.publisher.alarm, wall_clock=self.clock.wall)
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
        self.shift: Shift | None = None
        self.channel: FluorescenceInput | None = None
        self.frames_without_channel = 0  # frames skipped: the model needs the channel, they had none
        self._scale = math.nan
        self.drivers = Drivers(self)
        self.readout = Readout(self)
        self.models = ModelLoop(
            lambda: self.config, backend, record, self.alarms, self.publisher, self.clock, self.control.lock
        )

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
        self.pipeline = self.models.live()
        cam = b.camera_model
        self._scale = cam.mm_per_px_center()
        self.pipeline.check_frame(*cam.image_size, self._scale)  # a model that cannot take these frames: refused now
        view_x = cam.view_x_range()  # belt-frame x the image covers: the tracker, the belt check, the gate
        belt = b.belt
        self.publisher.belt = belt
        self.tracker = Tracker(travel_of=belt.mm, exit_x=view_x[1])
        self.arms = ArmDrivers(
            b.arm_configs,
            ConveyorTracker(belt.mm_per_count),
            self.clock,
            self.alarms,
            self.config.runtime.tick_s,
            record=self.publisher.event,
        )
        self.demand = ArmDemand(self.arms, self.stats, self.clock, self.control)
        if self.record is not None:
            # The arm is never sent a pick the record does not hold (docs/interfaces.md, picks).
            self.arms.scheduler.before_commit = self._record_pick
            self.arms.scheduler.not_sent = self._withdraw_pick
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
        self.channel = open_channel(cc.fluorescence, b, self.pipeline, self.alarms)
        self._scale_key = belt_scale_key(self.config.runtime.calibration, belt)
        kept, note = kept_belt_scale(self.record, self._scale_key)
        self.belt_check = BeltCheck(
            belt,
            view_x=view_x,
            radius_mm=max(r.product_size_mm[1] for r in self.config.recipes) / 2,
            kept_baseline=kept,
            kept_note=note,
        )
        self._scale_kept = kept
        self.observers = list(b.observers) + self.observers
        self.publisher.say_how_the_last_run_ended(self.alarms)
        self.shift = Shift(self.config.shift_check, self.alarms, self.publisher, self.clock, self.record)
        self.models.open(self._scale)
        settings.check_food_safety_rules(self)
        settings.check_model_scale(self)
        sched = self.arms.scheduler
        self.reject = RejectGate(
            b.plc_config,
            belt,
            self.alarms,
            self.clock,
            belt_count_now=lambda: sched.tracker.count_at(self.clock.now()) if sched.tracker.ready else None,
            belt_speed=lambda: sched.tracker.speed_mm_s if sched.tracker.ready else 0.0,
            event=self.publisher.event,
            view_x_lo=view_x[0],
            on_lot=lambda lot: self.shift.set_lot(lot, "plc"),
            pending=self.ledger.pending_outcomes,
        )
        if self.channel is not None and self.channel.setup == "alternate" and self.reject.client is not None:
            self.reject.client.set_uv_strobe(True)  # the PLC switches the lights in turn (plc-interface.md)
        self.arms.connect()

    def _record_pick(self, arm: str, plan) -> None:
        """Commit the pick's intent to the record before its arm's commit (raises if it cannot:
        the scheduler then skips the target, and the record raises its alarm)."""
        t = plan.target
        row = self.record.pick_intent(t.id, arm, (float(t.xy_mm[0]), float(t.xy_mm[1])))
        self._intents[arm] = (t.id, row)  # a failed commit follows at once: the last one is enough

    def _withdraw_pick(self, arm: str, plan) -> None:
        """Its intent was recorded, its commit never went out: closed as not sent (a second
        intent for the same scallop, when it goes out again, would otherwise be a second row
        reading 'picked': an outside try counted 41 picked rows for 39 picks)."""
        tid, row = self._intents.pop(arm, (None, None))
        if tid == plan.target.id:
            self.record.withdraw_intent(row)

    def close(self) -> None:
        if self.state not in (LineState.ESTOP, LineState.FAULT):
            self.stop("system")
        self.drivers.join()
        self.models.close()
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
    def needs_channel(self) -> bool:
        """The live model reads the fluorescence channel (the line has one: open_channel)."""
        return self.channel is not None and self.pipeline.takes_uv

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
        if self.models.pending:
            with self.control.lock:
                # Between two frames: the one before had the old model, this one the new.
                self.pipeline = self.models.swap(self.config.vision)
                settings.check_model_scale(self)
        t0 = time.perf_counter()
        cam, belt = self.backend.camera_model, self.backend.belt
        problem = frame_problem(frame, cam, belt, self.config.runtime.max_count_error_mm)
        if problem is not None:
            self._frames_bad += 1
            self.alarms.raise_(*problem)
            return
        jitter = frame.extra.get("stamp_jitter_s")
        if jitter is not None:
            self.stats.timing("stamp_jitter", jitter * 1e3)
        paired = self.channel.pair(frame) if self.channel is not None else None
        if paired is None and self.needs_channel:
            self.frames_without_channel += 1  # skipped, never analysed with a stand-in (channel.py)
            return
        uv, seen = (paired.image, paired.seen) if paired is not None else (None, None)
        try:
            dets = self.pipeline.detect(
                frame.image, mm_per_px=self._scale, to_belt=cam.pixel_to_belt, uv=uv, uv_seen=seen
            )
        except Exception as e:  # a bad frame must not kill the line
            self._frames_bad += 1
            self._vision_failures += 1
            self.alarms.raise_("vision.error", "warning", "vision", f"frame {frame.index} could not be analysed: {e}")
            if self._vision_failures >= VISION_FAULT_FRAMES and self.state != LineState.FAULT:
                # Not a bad frame: vision itself cannot work, and every scallop would pass unchecked.
                self.fail(f"vision ({self._vision_failures} frames in a row)", e)
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
        if uv is not None:
            # Scallops in view and no glow: a dark channel. Only those the channel saw can glow.
            outside = dets.reason == REASON_OUTSIDE_CHANNEL if len(dets) else whole
            self.channel.saw(int((whole & ~outside).sum()))
            if len(dets):
                # The glow must sit on the uros the colour frame shows: the surest first.
                mine = np.nonzero(whole & ~outside & dets.uro_found)[0]
                mine = mine[np.argsort(-dets.uro_confidence[mine])]
                self.channel.check_registration(frame.image, uv, seen, dets.uro_center_px[mine], self.needs_channel)
        self.belt_check.update(frame.timestamp, count, dets.center_mm[whole] if len(dets) else [])
        done: list[ScallopOutcome] = []
        with self.control.lock:
            self.frames += 1
            self.reader.analysed(frame.timestamp)
            done += self._belt_fault(self.belt_check.faults)
            if self.belt_check.trusted:
                # Suspect counts never reach the arms' belt model: a frozen counter would make
                # it think the belt stopped, and a pick already planned would close on nothing.
                self.arms.scheduler.belt_sample(frame.timestamp, count)
            # Stopped (or in e-stop/fault, or the counts are not trusted): the screen still
            # shows the belt, nothing is tracked.
            if self.control.tracking and self.belt_check.trusted:
                decisions = self.tracker.update(dets, count, frame.timestamp, frame.index, frame.image.shape[1::-1])
                done += self._decide(decisions)
            elif self.control.tracking and len(dets) and self.reject is not None:
                # Counts in doubt for this frame pair (not yet a fault): nothing is tracked on
                # them, so a scallop seen only in this frame would pass the gate undecided.
                self.reject.doubt()
            self.sync_inputs()
        self.finished(done)
        t2 = time.perf_counter()
        self.stats.timing("tracking", (t2 - t1) * 1e3)
        self.stats.timing("frame_total", (t2 - t0) * 1e3)
        if self.shift is not None:
            self.shift.check.saw(len(dets) + self.tracker.open_count())
        self.publisher.frame(frame.image, dets)
        # Neither waits: the capture queues the frame (or drops it), the shadow takes it if idle.
        self.models.on_frame(frame, dets, self._scale, paired)

    def _belt_fault(self, faults: list[BeltFault]) -> list[ScallopOutcome]:
        """Alarm an encoder the image contradicts (control lock held); when it starts, the open
        tracks and queued picks planned on its counts are recorded, not picked."""
        done: list[ScallopOutcome] = []
        for kind in ("frozen", "mismatch", "impossible", "scale"):
            key = f"encoder.{kind}"
            fault = next((f for f in faults if f.kind == kind), None)
            if fault is not None:
                if not self.alarms.is_active(key):
                    done += self._flush_tracks(LineReason.ENCODER_FAULT)
                self.alarms.raise_(key, "critical", "camera", fault.text)
            else:
                self.alarms.clear(key)
        b = self.belt_check.scale_baseline
        # Only a reading within the drift of 1 is kept: one already warned of (a camera perhaps
        # moved before the run) would hold the next, well-set run to it.
        if b is not None and b != self._scale_kept and self._scale_key and not self.belt_check.scale_warning:
            # This calibration's reading, kept for the next runs (the record's carried events).
            self._scale_kept = b
            self.publisher.event("belt_scale", "system", {"calibration": self._scale_key, "ratio": round(b, 5)})
        warning = self.belt_check.scale_warning
        if warning:
            self.alarms.raise_("encoder.scale_start", "warning", "camera", warning)
        else:
            self.alarms.clear("encoder.scale_start")
        return done

    def sync_inputs(self) -> None:
        """RUNNING while the camera gives frames to pick from, WAITING_CAMERA while not."""
        with self.control.lock:
            # (Counts merely suspect hold tracking for a frame or two, not the state: on an empty
            # belt nothing would clear them, and nothing needs picking either.)
            # A model that needs the channel is blind from the first frame without a good pair:
            # the scallops under the camera meanwhile are not seen, so the gate must divert them.
            blind = self.needs_channel and self.channel.blind
            self.control.inputs(self.reader.usable and not self.belt_check.faults and not blind)

    def finished(self, done: list[ScallopOutcome]) -> None:
        """Finished decisions: each gets its disposition (the gate is asked for the scallops
        that need diverting), then goes to the record and the screen."""
        if done and self.reject is not None:
            self.reject.dispose(done)
        failed = done and self.shift is not None and self.shift.offer(done) is False
        self.publisher.outcomes(done)
        if failed:
            self._check_failed()

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
            done += self.collect()
        return done

    def collect(self) -> list[ScallopOutcome]:
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
        self.arms.step(self.arms_active())
        self.finished(self.collect())
        self.service_plc()
        self.stats.timing("modbus", (time.perf_counter() - t0) * 1e3)

    def service_plc(self) -> None:
        """The line PLC: heartbeat, outputs from the line's state, its inputs and alarms. While
        it holds picking (lost, safety circuit open) targets still queued are not sent."""
        if self.record is not None:
            self.record.stalled()  # a record disk that hangs is said at once, not at its next error
        if self.shift is not None:
            if self.shift.check.tick(self.tracker.next_id) is False:
                self._check_failed()
            elif self.state == LineState.RUNNING:
                self.shift.check.overdue()
        if self.reject is None:
            return
        # During the shift check only the test pieces go under the camera: the feeder is held.
        self.reject.hold_infeed = "shift_check" if self.shift is not None and self.shift.check.running else ""
        # A dark or misregistered channel, or belt counts the camera contradicts, can only be
        # seen to come back with scallops in view (with the feeder held, a counter put right
        # would wait for ever on an empty belt).
        self.reject.feed_while_blind = (
            self.needs_channel and (self.channel.dark or self.channel.misregistered)
        ) or bool(self.belt_check.faults)
        active = [a for a in self.alarms.visible() if a.active]
        critical = any(a.severity == "critical" and not a.acked for a in active)
        self.reject.service(self.state, critical, any(a.severity != "info" for a in active), self.demand.share())
        hold = self.reject.hold_reason()
        if hold:
            with self.control.lock:
                done = self._skip_queued(hold)
            self.finished(done)

    # ------------------------------------------------------------------ control (LineAPI)
    def _event(self, action: Action, user: str, detail: dict | None = None) -> None:
        self.publisher.event(action.value, user, detail)

    def arms_active(self) -> bool:
        return self.state not in (LineState.ESTOP, LineState.FAULT)

    def start(self, user: str = "system", how: str = "screen") -> None:
        """``how`` the start was asked for, for the record: ``screen`` (an operator), or
        ``--start`` (``scallop run --start``: at launch, on purpose)."""
        with self.control.lock:
            self.control.check(Action.START)
            check = self.shift is not None and self.shift.check.due()
            self._event(Action.START, user, {"how": how, **({"shift_check": True} if check else {})})
            self.control.go(Action.START)
            if check:
                self.shift.check.begin(user)  # production only once the test pieces pass
            self.sync_inputs()

    def pause(self, user: str = "system") -> None:
        """No new picks; picks the arms already hold finish."""
        with self.control.lock:
            self.control.check(Action.PAUSE)
            self._event(Action.PAUSE, user)
            self._abandon_check("the line was paused")
            self.control.go(Action.PAUSE)
            done = self._skip_queued(LineReason.LINE_PAUSED)
        self.finished(done)

    def stop(self, user: str = "system") -> None:
        """Arms finish what they hold, then go home; every open scallop is recorded."""
        with self.control.lock:
            if self.state == LineState.STOPPED:
                return
            self._event(Action.STOP, user)
            self._abandon_check("the line was stopped")
            if self.state in TRANSITIONS_STOP:
                self.control.go(Action.STOP)
        self._drain_arms()
        with self.control.lock:
            done = self._flush_tracks(LineReason.LINE_STOPPED)
            self.control.stopped()
        self.finished(done)

    def estop(self, user: str = "screen") -> None:
        with self.control.lock:
            self._event(Action.ESTOP, user)
            self._abandon_check("emergency stop")
            self.control.go(Action.ESTOP)
            self.alarms.raise_(
                "line.estop", "critical", "line", f"emergency stop pressed by {user}", params={"user": user}
            )
            done = self._flush_tracks(LineReason.ESTOP)
            done += self._skip_queued(LineReason.ESTOP)
            done += self.ledger.fail_pending(LineReason.ESTOP)
        self.finished(done)

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
        if not self.arms_active():
            raise StateError(f"the line is in {self.state.value}: reset the line, it resets its arms too")
        return self.arms.reset_arm(name, user)

    def ack_alarm(self, alarm_id: int, user: str) -> None:
        """Acknowledging an arm's fault or e-stop alarm is the operator's word to RESET it."""
        self.alarms.ack(alarm_id, user)
        arm = self.arms.arm_of_alarm(alarm_id)
        if arm is not None and self.arms_active():
            self.arms.reset_arm(arm, user)

    def recipes(self) -> list[Recipe]:
        return settings.recipes(self)

    def select_recipe(self, name: str, user: str) -> None:
        settings.select_recipe(self, name, user)

    def config_view(self) -> dict:
        return settings.config_view(self)

    def update_config(self, changes: dict, user: str) -> dict:
        return settings.update_config(self, changes, user)

    # ------------------------------------------------------------------ lot and shift check (LineAPI)
    def set_lot(self, lot: str, user: str) -> str:
        return self.shift.set_lot(lot, user)

    def override_check(self, user: str, reason: str) -> dict:
        """Production may start without a passed check; during a check the line pauses, so
        production begins only at an operator's Start."""
        was_checking = self.shift.check.running
        status = self.shift.check.override(user, reason)
        if was_checking and self.state in (LineState.RUNNING, LineState.WAITING_CAMERA):
            self.pause(user)
        return status

    def _check_failed(self) -> None:
        """The test pieces did not all end as expected: no production (the alarm says why)."""
        if self.state in (LineState.RUNNING, LineState.WAITING_CAMERA):
            self.pause("system")

    def _abandon_check(self, why: str) -> None:
        if self.shift is not None:
            self.shift.check.abandon(why)

    # ------------------------------------------------------------------ read side (LineAPI)
    def snapshot(self) -> LineSnapshot:
        return self.readout.snapshot()

    def metrics_text(self) -> str:
        return self.readout.metrics_text()

    def summary(self) -> dict:
        return self.readout.summary()

    def latest_frame(self) -> tuple[np.ndarray, Detections] | None:
        """The last analysed frame (BGR) and its detections; the scenario bench annotates failures with it."""
        return self.publisher.latest_frame()

    def latest_jpeg(self) -> bytes | None:
        return self.publisher.latest_jpeg()

    def latest_uv_jpeg(self) -> bytes | None:
        return self.channel.latest_jpeg() if self.channel is not None else None

    def channel_status(self) -> dict | None:
        return self.channel.status() if self.channel is not None else None

    # ------------------------------------------------------------------ the model loop (LineAPI)
    @property
    def model(self) -> dict:
        """The live model's name and hash."""
        return self.models.model

    @property
    def capture(self):
        return self.models.capture

    @property
    def shadow(self):
        return self.models.shadow

    def poll_models(self) -> bool:
        return self.models.poll()

    def set_capture(self, on: bool, user: str) -> dict:
        return self.models.set_capture(on, user)

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
        threaded = self.drivers.threaded
        while self.clock.now() < t_end:
            with self.control.lock:
                done = self._skip_queued(LineReason.LINE_STOPPED)  # nothing new once stopping
            self.finished(done)
            if self.arms.scheduler.in_flight() == 0:
                break
            if not threaded:
                self.service_arms()
            self.clock.sleep(self.config.runtime.tick_s)
        with self.control.lock:
            done = self.ledger.fail_pending(LineReason.LINE_STOPPED)
        self.finished(done)
        self.arms.send_idle_home()

    def fail(self, stage: str, exc: BaseException) -> None:
        """A stage crashed: report it and stop the line safely (never carry on half-working)."""
        text = f"{stage} stage crashed: {type(exc).__name__}: {exc}"
        log.error("%s\n%s", text, "".join(traceback.format_exception(exc)))
        with self.control.lock:
            self.control.fault(text)
            self._abandon_check("line fault")
            self.alarms.raise_("line.crash", "critical", "line", text + " — line stopped", params={"detail": text})
            done = self._flush_tracks(LineReason.LINE_FAULT)
            done += self._skip_queued(LineReason.LINE_FAULT)
            done += self.ledger.fail_pending(LineReason.LINE_FAULT)
        self.finished(done)

    # ------------------------------------------------------------------ drivers
    def run_stepped(self, duration_s: float, on_frame=None, on_tick=None) -> None:
        """Run ``duration_s`` of line time on the simulator's clock (:meth:`Drivers.run_stepped`)."""
        self.drivers.run_stepped(duration_s, on_frame, on_tick)

    def run_threaded(self) -> None:
        """Start the line's threads and return (:meth:`Drivers.run_threaded`; ``close()`` joins them)."""
        self.drivers.run_threaded()

    def health(self, max_age_s: float = 15.0) -> dict:
        return self.drivers.health(max_age_s)


# Frames in a row that vision may fail on before the line faults (one bad frame is an alarm).
VISION_FAULT_FRAMES = 10

# A STOP from these states goes through STOPPING; from e-stop or fault the line stays there.
TRANSITIONS_STOP = (LineState.RUNNING, LineState.PAUSED, LineState.STARTING, LineState.WAITING_CAMERA)
