"""The fluorescence channel as cameras deliver it: a second exposure paired with each colour frame.

Under UV excitation the uro glows red and muscle does not (``shared/spec/scallop-appearance.md``,
"Second channel: fluorescence"). That image reaches the line in one of two ways, and both end the
same way here: the colour :class:`~scallop.vision.camera.Frame` carries its partner exposure,
as taken, under ``frame.extra["fluorescence"]`` (a :class:`ChannelExposure`, or anything with
its ``image``, ``timestamp`` and ``encoder``), or under ``frame.extra["fluorescence_missing"]``
the reason it has none. Registration onto the colour pixels and the pair's time check are the
application's (``scallop.app.line.channel``): they need the calibration.

* :class:`SecondCameraPair` — a second, monochrome camera with a long-pass filter, triggered
  with the colour one. Its frames are matched to the colour frames by exposure time.
* :class:`AlternateFramesCamera` — one camera, the white and the UV lights strobed in turn by
  the camera's (or the PLC's) output: every other frame is the fluorescence one, and the belt
  moves between the two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from scallop.vision.camera import Camera, CameraError, Frame


@dataclass
class ChannelExposure:
    """One fluorescence exposure as taken.

    image:     (h, w) uint8, in the fluorescence camera's own pixels (for alternate frames
               the colour camera's).
    timestamp: its exposure time on the line's clock (s).
    encoder:   the belt encoder count latched at its exposure, or None when its camera has none
               (then only a pair exposed together can be registered).
    index:     its frame number from its camera.
    """

    image: np.ndarray
    timestamp: float
    encoder: int | None
    index: int = 0


def as_mono(image: np.ndarray) -> np.ndarray:
    """A fluorescence image as one plane: a colour camera's frame (alternate frames) keeps its
    red plane, where the uro's emission (670–690 nm) falls; a mono frame is kept as it is."""
    if image.ndim == 3:
        return np.ascontiguousarray(image[:, :, 2])
    return image


def _exposure(frame: Frame) -> ChannelExposure:
    return ChannelExposure(as_mono(frame.image), frame.timestamp, frame.encoder, frame.index)


class SecondCameraPair(Camera):
    """Colour frames from ``colour``, each with the ``fluorescence`` camera's exposure within
    ``window_s`` of it. Both cameras run on the same trigger, so their frames come in step; the
    window is kept under half a frame period (``[camera.fluorescence] max_pair_ms`` ≤ 8 ms), so
    at most one fluorescence frame lies in it. One more than ``window_s`` older than the colour
    frame belongs to an earlier trigger and is read past (at most ``max_skip`` per colour
    frame); one more than ``window_s`` newer is kept for the next colour frame.

    The fluorescence camera failing never stops the colour frames: they come without a
    partner (``extra["fluorescence_missing"]`` says why) and the camera is reconnected on a
    later frame, ``retry_s[0]`` seconds after it failed, the wait doubling after each failure
    (to open or to read) up to ``retry_s[1]``, and starting again from ``retry_s[0]`` once one
    of its frames came (a device that takes a while to open, or opens and never delivers,
    would otherwise hold up colour frames). The wait is measured on the colour frames' stamps,
    the clock the line runs on. The colour camera's errors pass through unchanged: the line's
    reader handles them as for a single camera.
    """

    def __init__(
        self,
        colour: Camera,
        fluorescence: Camera,
        window_s: float,
        max_skip: int = 3,
        retry_s: tuple[float, float] = (0.5, 8.0),
    ) -> None:
        super().__init__()
        if not (math.isfinite(window_s) and window_s > 0):
            raise ValueError(f"window_s={window_s!r}: expected a positive number of seconds")
        lo, hi = (float(v) for v in retry_s)
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi <= 600):
            raise ValueError(f"retry_s={retry_s!r}: expected (first, longest) seconds with 0 < first <= longest <= 600")
        self.colour = colour
        self.fluorescence = fluorescence
        self.window_s = float(window_s)
        self.max_skip = int(max_skip)
        self.retry_s = (lo, hi)
        self._held: Frame | None = None  # a fluorescence frame newer than the last colour one
        self._fluo_down = ""
        self._wait = lo  # before the next try; doubles with each failure, until a frame comes
        self._retry_at: float | None = None  # None: to be set from the next colour frame's stamp
        self._retry_in = lo
        self.reconnect_tries = 0

    @property
    def resolution(self) -> tuple[int, int]:
        return self.colour.resolution

    def connect(self) -> None:
        self.colour.connect()
        self._connect_fluorescence()
        self._connected = True

    def disconnect(self) -> None:
        self._connected = False
        self.colour.disconnect()
        try:
            self.fluorescence.disconnect()
        except CameraError:  # it may be gone already; the colour camera is closed
            pass

    def _connect_fluorescence(self, now: float | None = None) -> None:
        try:
            if self._fluo_down:
                self.reconnect_tries += 1
                self.fluorescence.reconnect()
            else:
                self.fluorescence.connect()
            # Opened is not delivering: the wait starts again from its first value only once
            # a fluorescence frame has come (a device that opens and never delivers backs off).
            self._fluo_down = ""
        except CameraError as e:
            self._down(e, now)

    def _down(self, e: CameraError, now: float | None) -> None:
        """Failed (opening, or reading) at ``now`` (None: before any colour frame)."""
        self._fluo_down = str(e) or type(e).__name__
        self._retry_at = None if now is None else now + self._wait
        self._retry_in = self._wait
        self._wait = min(2 * self._wait, self.retry_s[1])

    def read(self) -> Frame:
        self._require_connected("pair")
        frame = self.colour.read()
        if self._fluo_down and self._retry_at is None:
            self._retry_at = frame.timestamp + self._retry_in
        if self._fluo_down and frame.timestamp >= self._retry_at:
            self._connect_fluorescence(frame.timestamp)
        if self._fluo_down:
            frame.extra["fluorescence_missing"] = f"the fluorescence camera is not delivering ({self._fluo_down})"
            return frame
        try:
            partner = self._partner(frame.timestamp)
        except CameraError as e:
            self._down(e, frame.timestamp)
            frame.extra["fluorescence_missing"] = f"the fluorescence camera is not delivering ({self._fluo_down})"
            return frame
        if partner is None:
            frame.extra["fluorescence_missing"] = "no fluorescence frame near this exposure"
        else:
            frame.extra["fluorescence"] = _exposure(partner)
            self._wait = self.retry_s[0]
        return frame

    def _partner(self, t: float) -> Frame | None:
        best = None
        for _ in range(self.max_skip + 1):
            f = self._held if self._held is not None else self.fluorescence.read()
            self._held = None
            if f.timestamp < t - self.window_s:
                continue  # an earlier trigger's: its colour frame was dropped
            if f.timestamp > t + self.window_s:
                self._held = f  # the next trigger's: keep it for the next colour frame
                break
            best = f
            break
        return best


class AlternateFramesCamera(Camera):
    """One camera whose lights are strobed in turn: a colour frame, then its fluorescence
    frame. Which frame is which is read from the frames themselves, never from frame numbers
    (a camera's driver may number only the frames it delivers, so a lost frame would shift
    every later pair): under UV the belt and the meat are near black (the spec's levels 0–25
    of 255), so the fluorescence frame is far darker than its colour frame.

    Two frames in a row: when the second is darker than ``MAX_LEVEL_RATIO`` times the first,
    they are a pair. When the first is that much darker than the second, the first was the
    fluorescence frame of a lost colour frame: it is let go and the second starts the next pair.
    When both are about as bright, no fluorescence frame came (the UV light off or weak): the
    first comes alone, with the reason. A gap in frame numbers, where the camera has true
    ones, also leaves a colour frame alone.
    """

    # Mean level of a fluorescence frame over its colour frame's above which the two are not
    # a strobed pair. A real pair is under 0.25 (uros are a few % of the view); white light in
    # both frames gives about 1.
    MAX_LEVEL_RATIO = 0.6

    def __init__(self, camera: Camera) -> None:
        super().__init__()
        self.camera = camera
        self._next: Frame | None = None
        self.rephased = 0  # fluorescence frames whose colour frame was lost

    @property
    def resolution(self) -> tuple[int, int]:
        return self.camera.resolution

    def connect(self) -> None:
        self.camera.connect()
        self._next = None
        self._connected = True

    def disconnect(self) -> None:
        self._connected = False
        self.camera.disconnect()

    def read(self) -> Frame:
        self._require_connected("alternate")
        while True:
            frame = self._next if self._next is not None else self.camera.read()
            self._next = None
            partner = self.camera.read()
            lf, lp = _level(frame), _level(partner)
            if lf <= self.MAX_LEVEL_RATIO * lp:
                # ``frame`` is a fluorescence frame whose colour frame was lost: back in phase.
                self.rephased += 1
                self._next = partner
                continue
            break
        if lp > self.MAX_LEVEL_RATIO * lf:
            self._next = partner
            frame.extra["fluorescence_missing"] = (
                f"frame {partner.index} is as bright as a colour frame ({lp / max(lf, 1.0):.0%} of it): "
                "the UV light is off or weak, or the strobe is out of step"
            )
            return frame
        if partner.index != frame.index + 1:
            frame.extra["fluorescence_missing"] = (
                f"frame {frame.index + 1} (its fluorescence frame) did not arrive: got frame {partner.index}"
            )
            return frame
        frame.extra["fluorescence"] = ChannelExposure(
            as_mono(partner.image), partner.timestamp, partner.encoder, partner.index
        )
        return frame


def _level(frame: Frame) -> float:
    return float(cv2.mean(as_mono(frame.image))[0])
