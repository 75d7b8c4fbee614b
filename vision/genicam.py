"""What a GenICam camera is set up with, and how its frames' own stamps and ids map to the
host: the configuration (``[camera.genicam]``), the pixel formats the line converts, the
camera-clock-to-host-clock map and the frame-id gap counter.

Nothing here needs Aravis or GObject, so the configuration loads, and these parts are tested,
on a machine without them; :mod:`scallop.vision.aravis` drives the camera itself.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

import cv2

from scallop.errors import ConfigError, check_choice, check_number, check_range

# GenICam pixel format name -> (bytes per pixel, OpenCV conversion to BGR or None for BGR as is).
# OpenCV names a Bayer pattern by the second row's first two pixels (its BayerBG is the
# sensor's RGGB, GenICam's BayerRG); tests/test_genicam.py checks each against a known mosaic.
PIXEL_FORMATS: dict[str, tuple[int, int | None]] = {
    "Mono8": (1, cv2.COLOR_GRAY2BGR),
    "RGB8": (3, cv2.COLOR_RGB2BGR),
    "BGR8": (3, None),
    "BayerRG8": (1, cv2.COLOR_BayerBG2BGR),
    "BayerBG8": (1, cv2.COLOR_BayerRG2BGR),
    "BayerGR8": (1, cv2.COLOR_BayerGB2BGR),
    "BayerGB8": (1, cv2.COLOR_BayerGR2BGR),
}

TRIGGERS = ("free", "line", "software")


@dataclass
class AravisCameraConfig:
    """One GenICam camera (``[camera.genicam]``; docs/cameras.md says how to choose the values).

    device: the Aravis device id (``python -m scallop.vision.aravis`` lists them: ``Basler-40012345``, a GigE
            camera's IP address, ``Fake_1`` for Aravis's built-in fake); "" = the one camera
            found (more than one is an error naming them).
    pixel_format: GenICam pixel format (see ``PIXEL_FORMATS``); "" = the camera's current one.
    exposure_us: exposure time, microseconds. Required: at 500 mm/s, 100 us smear 0.05 mm.
    gain_db: analogue gain.
    offset_x, offset_y: the region of interest's corner on the sensor (its size is the
            camera's width and height).
    trigger: "line" (hardware trigger from the encoder divider on ``trigger_source``),
            "software" (:meth:`AravisCamera.trigger`) or "free" (free running at the frame rate).
    trigger_source, trigger_activation: the camera's input and edge for ``trigger = "line"``.
    counts_per_trigger: belt encoder counts between two triggers (the divider); frames then
            carry their count. 0 = frames carry none (the encoder comes from elsewhere).
    timeout_s: how long a read waits for the next frame.
    buffers: frame buffers queued for the camera's stream.
    packet_size: GigE Vision stream packet size in bytes (9000 with jumbo frames); 0 = the
            largest the path allows, negotiated at connect.
    """

    device: str = ""
    pixel_format: str = ""
    exposure_us: float = 0.0
    gain_db: float = 0.0
    offset_x: int = 0
    offset_y: int = 0
    trigger: Literal["free", "line", "software"] = "free"
    trigger_source: str = "Line0"
    trigger_activation: str = "RisingEdge"
    counts_per_trigger: int = 0
    timeout_s: float = 1.0
    buffers: int = 8
    packet_size: int = 0

    def __post_init__(self) -> None:
        if self.pixel_format:
            check_choice("pixel_format", self.pixel_format, ("", *PIXEL_FORMATS))
        check_number("exposure_us", self.exposure_us, 0.0, 1e6)
        check_range("gain_db", self.gain_db, 0.0, 48.0)
        check_number("offset_x", self.offset_x, 0, 20000, integer=True)
        check_number("offset_y", self.offset_y, 0, 20000, integer=True)
        check_choice("trigger", self.trigger, TRIGGERS)
        check_number("counts_per_trigger", self.counts_per_trigger, 0, 10**9, integer=True)
        if self.counts_per_trigger and self.trigger == "free":
            raise ConfigError(
                f"counts_per_trigger={self.counts_per_trigger}: a free-running camera is not triggered by the "
                'encoder; use trigger = "line" (the encoder divider) or counts_per_trigger = 0'
            )
        check_range("timeout_s", self.timeout_s, 0.01, 60.0)
        check_number("buffers", self.buffers, 2, 256, integer=True)
        if self.packet_size:
            check_number("packet_size", self.packet_size, 576, 16384, integer=True, note=" (0 = negotiate)")

    def check_complete(self) -> None:
        """The keys without a default that a camera needs (raises ConfigError naming them)."""
        if not self.exposure_us:
            raise ConfigError(
                "exposure_us is not set: give the exposure in microseconds (docs/cameras.md: at 500 mm/s "
                "and 0.25 mm/px, 250 us keep the smear under half a pixel)"
            )


class ClockMap:
    """Camera time (ns) to host time (s): ``host = camera_ns / 1e9 + offset``.

    Each frame gives ``arrival - camera time``: the true offset plus that frame's readout and
    transfer delay. The smallest over the last ``window`` frames is the estimate (the frame
    delayed least); the window lets it follow the drift of the two clocks (tens of ppm). A
    camera clock that goes backwards (the camera restarted) starts it afresh."""

    def __init__(self, window: int = 64) -> None:
        self._offsets: deque[float] = deque(maxlen=window)
        self._last_ns: int | None = None

    def reset(self) -> None:
        self._offsets.clear()
        self._last_ns = None

    def host_time(self, camera_ns: int, arrival: float) -> float:
        if self._last_ns is not None and camera_ns < self._last_ns:
            self.reset()
        self._last_ns = camera_ns
        self._offsets.append(arrival - camera_ns / 1e9)
        return camera_ns / 1e9 + min(self._offsets)


class FrameCounter:
    """Triggers between frames from the camera's frame ids, which GigE Vision 1.x counts in 16
    bits (1..65535, 0 skipped) and USB3 Vision and GigE Vision 2 in 64."""

    def __init__(self) -> None:
        self.last: int | None = None

    def reset(self) -> None:
        self.last = None

    def step(self, frame_id: int) -> int:
        """Frames since the previous id (1 when none was lost); 1 for the first."""
        last, self.last = self.last, frame_id
        if last is None:
            return 1
        if frame_id > last:
            return frame_id - last
        if last <= 0xFFFF and frame_id <= 0xFFFF:
            return frame_id + 0xFFFF - last  # 16-bit wrap, id 0 never used
        return 1  # the counter restarted: the camera was reset
