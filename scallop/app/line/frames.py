"""Reading the camera for the line: every camera fault becomes an alarm, never a crash.

:class:`FrameReader` wraps the backend's :class:`~scallop.vision.camera.Camera` (or the
application's :class:`~scallop.app.frames.EncodedCamera`). Each cause has an alarm of its own
(a new cause is a new alarm; one never overwrites another's text):

==================  ========  ====================================================================
key                 severity  cause
==================  ========  ====================================================================
camera.no_frames    critical  the camera delivers no frame (unplugged, stream ended, file gone):
                              it is reconnected with back-off until frames come back
encoder.stalled     critical  the belt encoder does not answer: frames get no count
camera.silent       critical  no usable frame for ``stall_alarm_s`` and no other alarm says why
camera.timing       warning   a frame whose exposure time is unknown (it waited in the camera's
                              queue) or whose count may be off by more than allowed: skipped
camera.corrupt      warning   a frame that cannot be used (undecodable, no count for its time)
==================  ========  ====================================================================

``usable`` says whether frames come that the line can pick from; the line shows
``waiting_camera`` while they do not. The end of a recording ends the run
(:class:`~scallop.vision.camera.EndOfStreamError` is passed on).
"""

from __future__ import annotations

import time

from scallop.app.alarms import Alarms
from scallop.app.frames import ExposureUnknownError
from scallop.app.stats import Stats
from scallop.errors import DeviceError
from scallop.robot.belt import EncoderError, EncoderGapError
from scallop.vision.camera import Camera, CameraError, CorruptFrameError, EndOfStreamError, Frame

NO_FRAMES = "camera.no_frames"
SILENT = "camera.silent"
ENCODER_STALLED = "encoder.stalled"
TIMING = "camera.timing"
CORRUPT = "camera.corrupt"
# Alarms that name why no frame is analysed: the stall watch adds none of its own over them.
CAUSES = (NO_FRAMES, ENCODER_STALLED, "camera.encoder", "camera.size", "camera.fluorescence")
OUTAGES = (NO_FRAMES, ENCODER_STALLED, SILENT)


class FrameReader:
    """reconnect_min_s / reconnect_max_s: the first wait before reconnecting a camera that
    delivers nothing, doubled after each failed try up to the longest."""

    def __init__(
        self,
        camera: Camera,
        alarms: Alarms,
        stats: Stats,
        clock,
        stall_alarm_s: float,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 10.0,
        name: str = "",
    ) -> None:
        self.camera = camera
        self.alarms = alarms
        self.stats = stats
        self.clock = clock
        self.stall_alarm_s = stall_alarm_s
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.name = name or "camera"
        self.bad = 0  # frames that arrived but could not be used
        self.last_frame_t: float | None = None  # stamp of the last frame the line analysed
        self.reconnects = 0  # successful reconnections
        self.untimed_limit = 3  # frames in a row of unknown exposure: not usable
        self._untimed = 0
        self._retry_at: float | None = None  # camera lost: when to try again
        self._backoff = reconnect_min_s

    @property
    def usable(self) -> bool:
        """Frames come that the line can use: no camera or encoder outage is active, and the
        last frames were not all of unknown time (a camera whose frame rate is still being
        learnt after a (re)connect gives nothing to pick from either)."""
        return (
            self._retry_at is None
            and self._untimed < self.untimed_limit
            and not any(self.alarms.is_active(k) for k in OUTAGES)
        )

    def read(self) -> Frame | None:
        """The next frame, or None when there is none to use now (the cause is alarmed)."""
        if self._retry_at is not None and not self._try_reconnect():
            return None
        t0 = time.perf_counter()
        try:
            frame = self.camera.read()
        except EndOfStreamError:
            raise
        except ExposureUnknownError as e:
            self._untimed += 1
            return self._skip(TIMING, f"frame skipped: {e}")
        except (CorruptFrameError, EncoderGapError) as e:
            return self._skip(CORRUPT, f"frame skipped: {e}")
        except EncoderError as e:
            self.alarms.raise_(ENCODER_STALLED, "critical", "camera", f"belt encoder not answering: {e}")
            return None
        except CameraError as e:
            self.lost(str(e))
            return None
        self.alarms.clear(NO_FRAMES)
        self.alarms.clear(ENCODER_STALLED)
        self._untimed = 0
        self._backoff = self.reconnect_min_s
        self.stats.timing("capture", (time.perf_counter() - t0) * 1e3)
        return frame

    def _skip(self, key: str, text: str) -> None:
        self.bad += 1
        self.alarms.raise_(key, "warning", "camera", text)
        return None

    def lost(self, why: str) -> None:
        """No frame from the camera: alarm and reconnect after the back-off."""
        self._retry_at = self.clock.now() + self._backoff
        self.alarms.raise_(
            NO_FRAMES,
            "critical",
            "camera",
            f"{self.name} delivers no frames ({why}); reconnecting, picking stopped",
        )

    def _try_reconnect(self) -> bool:
        if self.clock.now() < self._retry_at:
            return False
        try:
            self.camera.reconnect()
        except DeviceError:  # camera or its encoder still away: the alarm stands
            self._backoff = min(self.reconnect_max_s, 2.0 * self._backoff)
            self._retry_at = self.clock.now() + self._backoff
            return False
        self._retry_at = None
        self.reconnects += 1
        return True

    def wait_s(self) -> float:
        """How long a reader with nothing to read should wait before asking again."""
        if self._retry_at is not None:
            return max(0.0, min(0.25, self._retry_at - self.clock.now()))
        return 0.05

    def analysed(self, t: float) -> None:
        """The line analysed a frame stamped ``t``."""
        self.last_frame_t = t
        self.alarms.clear(SILENT)

    def check_stall(self) -> None:
        """Alarm when no frame has been analysed for ``stall_alarm_s`` and nothing else says why."""
        if self.last_frame_t is None or any(self.alarms.is_active(k) for k in CAUSES):
            return
        if self.clock.now() - self.last_frame_t > self.stall_alarm_s:
            self.alarms.raise_(
                SILENT,
                "critical",
                "camera",
                f"{self.name}: no usable frame for more than {self.stall_alarm_s:g} s; picking stopped",
            )


def frame_problem(frame: Frame, camera, belt, max_count_error_mm: float) -> tuple[str, str, str, str] | None:
    """Why the line cannot use ``frame`` (the alarm's key, severity, source and text), or None:
    no belt count, not the calibrated size, or a count that may be off by more than allowed."""
    if frame.encoder is None:
        return (
            "camera.encoder",
            "critical",
            "camera",
            "frames carry no encoder count: scallops cannot be tracked (configure [camera.encoder], "
            "see docs/configuration.md, or check the trigger wiring)",
        )
    if (frame.width, frame.height) != tuple(camera.image_size):
        return (
            "camera.size",
            "critical",
            "camera",
            f"frames are {frame.width}x{frame.height} but the calibration is for "
            f"{camera.image_size[0]}x{camera.image_size[1]}: frames ignored",
        )
    err_mm = belt.mm(frame.extra.get("count_error", 0.0))
    if not err_mm <= max_count_error_mm:
        return (
            TIMING,
            "warning",
            "camera",
            f"frame {frame.index} skipped: its belt count may be off by {err_mm:.1f} mm (stamp error "
            f"{frame.timestamp_error_s * 1e3:.1f} ms), more than runtime.max_count_error_mm = "
            f"{max_count_error_mm:g}",
        )
    return None
