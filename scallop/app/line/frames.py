"""Reading the camera for the line: every camera fault becomes an alarm, never a crash.

:class:`FrameReader` wraps the backend's :class:`~scallop.vision.camera.Camera` (or the
application's :class:`~scallop.app.frames.EncodedCamera`): a corrupt frame or one the
encoder could not stamp is skipped with a warning; a camera or encoder that stops delivering
is a critical alarm that clears by itself when frames come back; the end of a recording ends
the run (:class:`~scallop.vision.camera.EndOfStreamError` is passed on).
"""

from __future__ import annotations

import time

from scallop.app.alarms import Alarms
from scallop.app.stats import Stats
from scallop.robot.belt import EncoderError, EncoderGapError
from scallop.vision.camera import Camera, CameraError, CorruptFrameError, EndOfStreamError, Frame


class FrameReader:
    def __init__(self, camera: Camera, alarms: Alarms, stats: Stats, clock, stall_alarm_s: float) -> None:
        self.camera = camera
        self.alarms = alarms
        self.stats = stats
        self.clock = clock
        self.stall_alarm_s = stall_alarm_s
        self.bad = 0  # frames that arrived but could not be used
        self.last_frame_t: float | None = None  # stamp of the last frame the line analysed

    def read(self) -> Frame | None:
        """The next frame, or None when there is none to use now (the cause is alarmed)."""
        t0 = time.perf_counter()
        try:
            frame = self.camera.read()
        except EndOfStreamError:
            raise
        except (CorruptFrameError, EncoderGapError) as e:
            self.bad += 1
            self.alarms.raise_("camera.corrupt", "warning", "camera", f"corrupt frame skipped: {e}")
            return None
        except (CameraError, EncoderError) as e:
            self.alarms.raise_("camera.stall", "critical", "camera", f"camera: {e}")
            return None
        self.alarms.clear("camera.stall")
        self.stats.timing("capture", (time.perf_counter() - t0) * 1e3)
        return frame

    def check_stall(self) -> None:
        """Alarm when no frame has been analysed for ``stall_alarm_s``."""
        if self.last_frame_t is not None and self.clock.now() - self.last_frame_t > self.stall_alarm_s:
            self.alarms.raise_(
                "camera.stall", "critical", "camera", f"no frame for {self.clock.now() - self.last_frame_t:.1f} s"
            )
