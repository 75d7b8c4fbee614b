"""The simulated camera: a hardware-triggered camera looking at a :class:`SimWorld`.

An exposure fires every ``trigger_mm`` of belt travel (encoder trigger) or at a fixed
rate (``fps``); with the belt stopped the encoder trigger falls back to one exposure per
``max_interval_s``. ``read()`` sleeps the world's clock until the next exposure (with an
auto-advancing :class:`VirtualClock` that moves virtual time forward at once), renders it
and returns a :class:`Frame` carrying the encoder count latched at exposure and the
ground truth under ``frame.extra["truth"]``. With the fluorescence channel configured
(``sim.fluorescence``) every frame also carries its fluorescence exposure as taken, with its own
encoder count, under ``frame.extra["fluorescence"]``
(:class:`scallop.sim.fluorescence.FluorescenceFrame`: its ``image``, ``timestamp`` and ``encoder``
are what a real camera gives; ``registered`` is the simulator's exact registration onto the colour
frame, for tests of the line's own).

Frame indices count exposures, so frames lost to ``drop_next`` or an overflowing buffer
show as gaps in ``Frame.index``, as with a real camera's frame counter.

Fault hooks for tests of the line: ``drop_next(n)``, ``stall(duration_s)``, ``corrupt_next()``,
``lose_fluorescence(n)``, ``knock_fluorescence(shift_mm)``, ``rescale(scale)``.
"""

from __future__ import annotations

import dataclasses
import math
import threading

import cv2
import numpy as np

from scallop.sim.world import SimWorld
from scallop.vision.camera import Camera, CameraError, CorruptFrameError, Frame

# Each scallop crosses the view about this many times the trigger spacing.
SIGHTINGS_PER_CROSSING = 3.5


class CameraTimeoutError(CameraError):
    """No frame arrived within the read timeout (trigger or link stalled)."""


class SimCamera(Camera):
    """Camera backend over a simulated world (``source = "sim"``).

    Arguments left as None come from ``world.config.camera``.
    buffer_frames: exposures the camera holds for a slow reader; older ones are dropped.
    """

    def __init__(
        self,
        world: SimWorld,
        trigger: str | None = None,
        trigger_mm: float | None = None,
        fps: float | None = None,
        max_interval_s: float | None = None,
        read_timeout_s: float | None = None,
        buffer_frames: int = 4,
    ) -> None:
        super().__init__()
        cfg = world.config.camera
        self.world = world
        self.clock = world.clock
        self.trigger = trigger or cfg.trigger
        if self.trigger not in ("encoder", "fps"):
            raise ValueError(f"trigger={self.trigger!r} is not allowed: choose 'encoder' or 'fps'")
        self.trigger_mm = float(trigger_mm or cfg.trigger_mm or world.view_length_mm / SIGHTINGS_PER_CROSSING)
        self.fps = float(fps or cfg.fps)
        self.max_interval_s = float(max_interval_s or cfg.max_interval_s)
        self.read_timeout_s = float(read_timeout_s or cfg.read_timeout_s)
        if self.trigger_mm <= 0 or self.fps <= 0 or self.max_interval_s <= 0 or buffer_frames < 1:
            raise ValueError("trigger_mm, fps, max_interval_s and buffer_frames must be positive")
        self.buffer_frames = int(buffer_frames)
        self._lock = threading.Lock()
        self._last_t: float | None = None
        self._index = 0
        self._drop = 0
        self._corrupt = False
        self._no_uv = 0
        self._uv_shift_mm = 0.0
        self._scale = 1.0
        self._stall_until = -math.inf
        self.dropped = 0  # exposures never delivered (drop_next, buffer overflow)

    # ------------------------------------------------------------ Camera interface
    @property
    def resolution(self) -> tuple[int, int]:
        return self.world.camera_model.image_size

    def connect(self) -> None:
        self._connected = True
        self._last_t = None

    def disconnect(self) -> None:
        self._connected = False

    def read(self) -> Frame:
        self._require_connected("sim")
        with self._lock:
            self._wait_out_stall()
            while True:
                t_exp, index = self._take_exposure()
                if self._drop > 0:
                    self._drop -= 1
                    self.dropped += 1
                    continue
                break
            if self._corrupt:
                self._corrupt = False
                raise CorruptFrameError(f"camera sim: frame {index} arrived corrupt (injected fault)")
            image, truth = self.world.render(t_exp)
            if self._scale != 1.0:
                image = _scaled(image, self._scale)
            extra = {"truth": truth, "travel_mm": truth.travel_mm}
            w = self.world
            strobe_off = (
                w.fluorescence is not None
                and w.fluorescence.setup == "alternate"
                and w.uv_strobe is not None
                and not w.uv_strobe(t_exp)
            )
            if w.fluorescence is not None and self._no_uv > 0:
                self._no_uv -= 1
                # What fails differs with the optics: the strobe of one camera, or a camera of its own.
                extra["fluorescence_missing"] = (
                    "the UV light did not fire (injected fault)"
                    if w.fluorescence.setup == "alternate"
                    else "the fluorescence camera gave no frame (injected fault)"
                )
            elif strobe_off:
                # Both frames lit white: what AlternateFramesCamera says of such a pair.
                extra["fluorescence_missing"] = (
                    "the fluorescence frame is as bright as the colour frame: the UV light is not strobed "
                    "(the line PLC's uv_strobe output is off)"
                )
            elif self.world.fluorescence is not None:
                fl = self.world.render_fluorescence(t_exp)
                if self._uv_shift_mm:
                    fl = _moved(fl, self._uv_shift_mm)
                # The pair is whole only once its second exposure is over (alternate frames).
                if fl.timestamp > self.clock.now():
                    self.clock.sleep(fl.timestamp - self.clock.now())
                # As taken, with its own count: the line registers it (the simulator's exact
                # registration stays on it as ``registered``, to check the line's against).
                extra["fluorescence"] = fl
            return Frame(
                image=image,
                timestamp=t_exp,
                encoder=truth.encoder,
                index=index,
                source="sim",
                extra=extra,
            )

    # ------------------------------------------------------------ faults
    def drop_next(self, n: int = 1) -> None:
        """The next ``n`` exposures happen but are never delivered."""
        if n < 0:
            raise ValueError(f"n={n} must be ≥ 0")
        with self._lock:
            self._drop += int(n)

    def lose_fluorescence(self, n: int) -> None:
        """The next ``n`` frames come without their fluorescence exposure (the UV strobe or
        the second camera failing), each saying so under ``extra["fluorescence_missing"]``."""
        if n < 0:
            raise ValueError(f"n={n} must be ≥ 0")
        with self._lock:
            self._no_uv += int(n)

    def knock_fluorescence(self, shift_mm: float) -> None:
        """From the next frame on, the fluorescence camera's images are moved ``shift_mm``
        along the belt from where its calibration puts them (a camera knocked on its mount; the
        strobe's belt counts off, for alternate frames); 0 sets it back."""
        if not math.isfinite(shift_mm):
            raise ValueError(f"shift_mm={shift_mm!r} is not a finite number")
        with self._lock:
            self._uv_shift_mm = float(shift_mm)

    def rescale(self, scale: float) -> None:
        """From the next frame on, the colour images are ``scale`` times as large about their
        centre as the calibration says (the camera moved nearer the belt, or refocused); 1
        sets it back. The fluorescence images are left as they are."""
        if not math.isfinite(scale) or not 0.5 <= scale <= 2.0:
            raise ValueError(f"scale={scale!r} is not allowed: 0.5..2")
        with self._lock:
            self._scale = float(scale)

    def corrupt_next(self) -> None:
        """The next read raises CorruptFrameError once."""
        with self._lock:
            self._corrupt = True

    def stall(self, duration_s: float | None = None) -> None:
        """Stop delivering frames for ``duration_s`` of clock time (None: until unstall());
        read() waits ``read_timeout_s`` and raises CameraTimeoutError while stalled."""
        with self._lock:
            self._stall_until = math.inf if duration_s is None else self.clock.now() + float(duration_s)

    def unstall(self) -> None:
        with self._lock:
            self._stall_until = -math.inf

    # ------------------------------------------------------------ timing
    def next_frame_time(self) -> float:
        """When the next exposure happens (clock time), without waiting for it: a stepped
        driver serves the arms until then and reads the frame when it is due."""
        with self._lock:
            now = self.clock.now()
            if self._stall_until == math.inf:
                return math.inf  # an open-ended stall: the driver serves the arms and notices the silence
            if self._last_t is None:
                return max(now, self._stall_until)
            # The trigger starts again from a stall's end: the first exposure comes an interval after
            # it (said as such: a driver told the stall's end read then and waited a whole interval
            # inside read(), its arms unserved, long enough at a slow belt for their watchdogs).
            t = self._next_after(max(self._last_t, self._stall_until))
            for _ in range(self._drop):  # exposures that will never be delivered
                t = self._next_after(t)
            return max(now, t)

    def _wait_out_stall(self) -> None:
        now = self.clock.now()
        if now >= self._stall_until:
            if self._last_t is not None and self._last_t < self._stall_until:
                self._last_t = self._stall_until  # a stall that ended meanwhile: its exposures are lost too
            return
        self.clock.sleep(min(self.read_timeout_s, self._stall_until - now))
        if self.clock.now() < self._stall_until:
            raise CameraTimeoutError(f"camera sim: no frame within {self.read_timeout_s:g} s (trigger stalled)")
        # Exposures during the stall are lost: the trigger starts again from its end.
        self._last_t = self._stall_until

    def _next_after(self, t_last: float) -> float:
        if self.trigger == "fps":
            return t_last + 1.0 / self.fps
        target = self.world.travel_mm(t_last) + self.trigger_mm
        t = self.world.time_at_travel(target, t_last, self.max_interval_s)
        return t_last + self.max_interval_s if t is None else t

    def _take_exposure(self) -> tuple[float, int]:
        """The next exposure's time and index, waiting for it when it is in the future;
        a reader that fell behind gets the oldest of the last ``buffer_frames``."""
        now = self.clock.now()
        t = now if self._last_t is None else self._next_after(self._last_t)
        if t > now:
            self.clock.sleep(t - now)
        else:
            pending = [t]
            while True:
                nxt = self._next_after(pending[-1])
                if nxt > now:
                    break
                pending.append(nxt)
                if len(pending) > self.buffer_frames:
                    pending.pop(0)
                    self._index += 1
                    self.dropped += 1
                    if self._drop > 0:  # it was to be dropped anyway: it counts
                        self._drop -= 1
            t = pending[0]
        self._last_t = t
        index = self._index
        self._index += 1
        return t, index


def _scaled(image: np.ndarray, scale: float) -> np.ndarray:
    """``image`` magnified ``scale`` times about its centre (what enters at the edge: the border
    pixels repeated, as a belt wider than the view would look)."""
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), 0.0, scale)
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _moved(fl, shift_mm: float):
    """``fl`` with its image moved ``shift_mm`` along its x axis (what enters at the edge is 0,
    no glow); the simulator's exact registration (``registered``) stays the truth."""
    px = int(round(shift_mm / fl.camera.mm_per_px_center()))
    img = np.zeros_like(fl.image)
    if px >= 0:
        img[:, px:] = fl.image[:, : img.shape[1] - px]
    else:
        img[:, :px] = fl.image[:, -px:]
    return dataclasses.replace(fl, image=img)
