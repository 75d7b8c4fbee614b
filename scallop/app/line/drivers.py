"""The two drivers that run the line's parts (see :mod:`scallop.app.line.line`):

* :meth:`Drivers.run_threaded` — capture and inference in their own threads, joined by a bounded
  frame queue that drops the *oldest* frame under overload (counted in ``frames_dropped``), one
  thread per arm and one for the line PLC. For real hardware and for the simulator in real time.
* :meth:`Drivers.run_stepped` — one thread on the simulator's virtual clock, stepping ``tick_s``
  of virtual time: the arms are served at once whenever a queued target waits for an arm that
  can take it, and otherwise every half heartbeat period (each service is a Modbus round trip,
  the most expensive part of a simulated tick); each frame is processed when its exposure
  comes. A run is faster than real time and the same seed gives the same result.

:meth:`Drivers.health` is what ``/healthz`` and the service watchdog read.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from scallop.app.line.states import LineState
from scallop.errors import DeviceError
from scallop.vision.camera import EndOfStreamError, Frame

if TYPE_CHECKING:
    from scallop.app.line.line import Line

# How often the line PLC is polled and its heartbeat sent (docs/plc-interface.md: about 50 ms).
PLC_PERIOD_S = 0.05
# A stage that crashed goes round its loop again after this (the line in fault meanwhile).
RESTART_AFTER_CRASH_S = 1.0


class Drivers:
    """Runs ``line``'s frame loop, arm service and PLC service, stepped or in threads."""

    def __init__(self, line: Line) -> None:
        self.line = line
        self._stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self._beats: dict[str, float] = {}  # loop -> monotonic time it last went round (real time)
        self._next_service = -math.inf

    @property
    def threaded(self) -> bool:
        """Whether the line runs in threads (its arms are then served by their own)."""
        return bool(self.threads)

    def run_stepped(self, duration_s: float, on_frame=None, on_tick=None) -> None:
        """Virtual-time driver (the simulator). ``on_tick(line)`` runs every tick (fault
        scripts use it); returns when ``duration_s`` of line time has passed or the line
        stopped or faulted."""
        line = self.line
        cam = line.backend.camera
        if cam.next_frame_time() is None:
            raise DeviceError(
                "the stepped driver needs a camera that tells when its next frame comes "
                "(the simulator or a recording); a live camera runs with run_threaded()"
            )
        tick = line.config.runtime.tick_s
        # Heartbeats and status reads keep their period; nothing waits on a poll in between.
        serve_every = max(tick, 0.5 * line.arms.heartbeat_period_s())
        t_end = line.clock.now() + duration_s
        latency = line.config.runtime.inference_latency_s

        def idle() -> None:
            """One tick without a frame: the arms when due, the fault script, the clock."""
            if self._arms_due(serve_every):
                line.service_arms()
            if on_tick is not None:
                on_tick(line)
            line.clock.sleep(tick)

        while line.clock.now() < t_end and line.state != LineState.FAULT and not self._stop.is_set():
            try:
                t_next = cam.next_frame_time()
                while line.clock.now() + tick <= min(t_next, t_end):
                    idle()
                    line.reader.check_stall()
                    line.sync_inputs()
                    # A fault script may have stalled, dropped or released frames meanwhile.
                    t_next = cam.next_frame_time()
                # A frame due after t_end belongs to the next call: reading it now would leave
                # the arms unserved until its exposure.
                if line.clock.now() >= t_end or t_next > t_end:
                    line.clock.sleep(t_end - line.clock.now())  # less than a tick
                    break
                frame = line.reader.read()
                line.sync_inputs()
                if frame is not None:
                    line.process_frame(frame)
                    if on_frame is not None:
                        on_frame(line, frame)
                    line.clock.sleep(latency)
                elif not line.reader.usable:
                    idle()  # waiting to reconnect: time goes on, the arms are served meanwhile
                line.reader.check_stall()
                line.sync_inputs()
            except EndOfStreamError:
                break
            except Exception as e:
                line.fail("line", e)
                break

    def _arms_due(self, every_s: float) -> bool:
        """Serve the arms now: a target waits for an arm that can take it, or ``every_s`` passed."""
        line = self.line
        now = line.clock.now()
        due = now >= self._next_service or line.arms.any_waiting()
        if due:
            self._next_service = now + every_s
        return due

    def run_threaded(self) -> None:
        """Start capture, inference and one thread per arm (returns at once; ``close()``)."""
        line = self.line
        frames: deque[Frame] = deque(maxlen=line.config.runtime.frame_queue)
        cond = threading.Condition()
        self._stop.clear()
        stop = self._stop

        def capture():
            while not stop.is_set():
                self._beat("capture")
                try:
                    frame = line.reader.read()
                except EndOfStreamError:
                    line.alarms.raise_("camera.end", "warning", "camera", "camera source ended")
                    break
                line.sync_inputs()
                if frame is None:
                    line.clock.sleep(line.reader.wait_s())
                    continue
                with cond:
                    if len(frames) == frames.maxlen:
                        line.frames_dropped += 1  # the oldest goes: latency stays bounded
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
                            line.reader.check_stall()
                            line.sync_inputs()
                    if not frames:
                        continue
                    frame = frames.popleft()
                line.process_frame(frame)
                line.reader.check_stall()  # frames that come but cannot be used
                line.sync_inputs()

        def guard(name, fn):
            def run():
                while not stop.is_set():
                    try:
                        fn()
                        return
                    except Exception as e:
                        line.fail(name, e)
                    # The stage goes on (the line stays in fault until an operator resets it, and
                    # every stage does in fault what it always does there): an outside try saw a
                    # reset line show "running" with its crashed stage gone for good.
                    stop.wait(RESTART_AFTER_CRASH_S)

            return run

        def after_service() -> None:
            line.finished(line.collect())

        def plc():
            # Its own loop: a slow PLC never holds up an arm, nor an arm the PLC's heartbeat.
            while not stop.is_set():
                self._beat("plc")
                line.service_plc()
                stop.wait(PLC_PERIOD_S)

        # The PLC loop runs without a PLC too: the shift check's clock and what the line says of
        # scallops it could not vouch for (no gate to send them to rework) live in it.
        loops = [("capture", capture), ("inference", inference), ("plc", plc)]
        self.threads = [threading.Thread(target=guard(n, f), name=f"line-{n}", daemon=True) for n, f in loops]
        for t in self.threads:
            t.start()
        # In e-stop or fault no heartbeats go out: each arm's watchdog stops it.
        self.threads += line.arms.start_threads(line.arms_active, after_service, stop, line.fail, beat=self._beat)

    def _beat(self, loop: str) -> None:
        self._beats[loop] = time.monotonic()

    def health(self, max_age_s: float = 15.0) -> dict:
        """Whether the line's loops are alive (``/healthz``, the service watchdog): not faulted,
        and in real time every loop thread running and round its loop within ``max_age_s``. A
        camera that delivers nothing is an alarm, not ill health: its loop still goes round."""
        line = self.line
        now = time.monotonic()
        ages = {k: round(now - t, 3) for k, t in self._beats.items()}
        dead = [t.name for t in self.threads if not t.is_alive()]
        stale = sorted(k for k, a in ages.items() if a > max_age_s)
        ok = line.state != LineState.FAULT and not dead and not stale
        return {"ok": ok, "state": line.state.value, "loops": ages, "dead": dead, "stale": stale}

    def join(self) -> None:
        line = self.line
        self._stop.set()
        for t in self.threads:
            if t is not threading.current_thread():
                t.join(timeout=5.0)
        self.threads = []
        if line.arms is not None:
            line.arms.stop_threads()
