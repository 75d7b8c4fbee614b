"""Cameras: one interface for the simulated camera and real ones.

``Camera`` is the base class of every backend (the simulator's camera lives in
``scallop.sim``; OpenCV-backed devices, files, streams and image folders live here).
A camera is used as a context manager::

    with OpenCVCamera(OpenCVCameraConfig(source="0")) as cam:
        frame = cam.read()          # -> Frame
        print(frame.timestamp, frame.encoder, frame.image.shape)
"""

from __future__ import annotations

import abc
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from scallop.errors import DeviceError
from scallop.imagefiles import (
    EMPTY_FILE,
    MAX_IMAGE_PIXELS,
    decode_color,
    file_bytes,
    fluorescence_file_problem,
    frame_files,
    image_size,
    no_frames_message,
    too_large,
)
from scallop.vision.stamps import FrameStamper


class CameraError(DeviceError):
    """Base of every camera failure; the message names the device and what went wrong."""


class CameraNotFoundError(CameraError):
    """The device, file, URL or folder is not there or cannot be opened."""


class CameraNotConnectedError(CameraError):
    """read() on a camera that was never connected or was disconnected."""


class CorruptFrameError(CameraError):
    """A frame arrived but cannot be used (undecodable, wrong shape, empty)."""


class EndOfStreamError(CameraError):
    """A finite source (video file, image folder) has no more frames."""


class CameraStalledError(CameraError):
    """A live source (device, stream) delivered no frame: unplugged, stopped, or the stream
    ended. The line reconnects it with back-off."""


@dataclass
class Frame:
    """One exposure.

    image:     (H, W, 3) uint8, BGR.
    timestamp: seconds on the line's clock at exposure (virtual time in the simulator).
    encoder:   belt encoder count latched at exposure (hardware trigger), or None when
               the source has no encoder (a photo, a free-running webcam).
    index:     frame number from this camera, starting at 0.
    source:    what produced it (device, file path, "sim").
    extra:     backend-specific attachments (e.g. the simulator's ground truth under
               ``"truth"``, a co-registered fluorescence channel under ``"uv"``, the stamp's
               deviation from the camera's regular period under ``"stamp_jitter_s"``).
    timestamp_error_s: how far ``timestamp`` may be from the exposure, beyond a constant
               latency: 0 for a stamp latched with the exposure (hardware trigger, the
               simulator, a recording's own times), the measured stamp jitter for a
               free-running camera, ``inf`` when not known (a frame that waited in the
               driver's queue for an unknown time). A frame with an unknown time is never
               given a belt count.
    """

    image: np.ndarray
    timestamp: float
    encoder: int | None = None
    index: int = 0
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    timestamp_error_s: float = 0.0

    def __post_init__(self) -> None:
        img = self.image
        if not isinstance(img, np.ndarray) or img.size == 0:
            raise CorruptFrameError(f"frame {self.index} from {self.source or '?'}: empty image")
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise CorruptFrameError(
                f"frame {self.index} from {self.source or '?'}: expected (H, W, 3) uint8 BGR, "
                f"got {img.shape} {img.dtype}"
            )

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


class Camera(abc.ABC):
    """Base class of every camera backend."""

    def __init__(self) -> None:
        self._connected = False

    @property
    def is_connected(self) -> bool:
        return self._connected

    @abc.abstractmethod
    def connect(self) -> None:
        """Open the device; raises CameraNotFoundError with the device named."""

    @abc.abstractmethod
    def read(self) -> Frame:
        """Return the next frame (blocking); raises CameraError subclasses."""

    @abc.abstractmethod
    def disconnect(self) -> None:
        """Release the device; safe to call twice."""

    @property
    @abc.abstractmethod
    def resolution(self) -> tuple[int, int]:
        """(width, height) of the frames this camera delivers."""

    def reconnect(self) -> None:
        """Drop the device and open it again (the line calls this, with back-off, when frames
        stop coming); raises CameraError subclasses like :meth:`connect`."""
        self.disconnect()
        self.connect()

    def next_frame_time(self) -> float | None:
        """When the next frame will be ready, on the clock that stamps the frames, without
        waiting for it — for a driver on a virtual clock (the simulator, a recording replayed
        on virtual time), which serves the arms until then. None for a live device: its
        frames come when they come, and ``read()`` waits for them."""
        return None

    def __enter__(self) -> Camera:
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()

    def _require_connected(self, name: str) -> None:
        if not self._connected:
            raise CameraNotConnectedError(f"camera {name}: read() before connect()")


class ImageTooLargeError(CorruptFrameError):
    """An image file whose header announces more pixels than the budget: refused unread."""


def _not_a_file(p: Path, what: str = "image file") -> str:
    if p.is_dir():
        return f"a folder, not {'an' if what[0] in 'aeiou' else 'a'} {what}: name the image files in it"
    if p.is_symlink() and not p.exists():
        return f"a link to {os.readlink(p)}, which is not there"
    if p.exists():
        return f"not a regular file, not {'an' if what[0] in 'aeiou' else 'a'} {what}"
    return f"no such {what}"


def _refuse_too_large(p: Path, size: tuple[int, int] | None, max_pixels: int, what: str) -> None:
    """An image of more than ``max_pixels`` by its header (``size``), refused before decoding."""
    why = too_large(size, max_pixels, what)
    if why:
        raise ImageTooLargeError(f"{p}: {why}")


def _file_bytes(p: Path) -> np.ndarray:
    """The file's bytes; one there but unreadable is this image's error (:func:`file_bytes`)."""
    data, why = file_bytes(p)
    if data is None:
        raise CorruptFrameError(why)
    return data


def read_image(path: str | os.PathLike, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 BGR, with an error that names the file. An image
    of more than ``max_pixels`` is refused from its header, before any decoding."""
    p = Path(path)
    if not p.is_file():
        raise CameraNotFoundError(f"{p}: {_not_a_file(p)}")
    size = image_size(p)
    _refuse_too_large(p, size, max_pixels, "image")
    data = _file_bytes(p)
    if not data.size:
        raise CorruptFrameError(EMPTY_FILE.format(p))
    img, damage = decode_color(data)
    if damage:
        raise CorruptFrameError(f"{p}: {damage}")
    if img is None:
        raise CorruptFrameError(f"{p}: not a readable image (corrupt or unsupported format)")
    return img


def read_fluorescence(
    path: str | os.PathLike, size_hw: tuple[int, int], against: str = "its colour frame"
) -> np.ndarray:
    """Read a fluorescence frame (``x.uv.png``) as (H, W) uint8, checked to be what the
    appearance spec's "Files" says it is: one 8-bit channel, PNG, on its colour frame's
    ``size_hw`` pixels (already registered to them). ``against``: what ``size_hw`` is, when it is
    not the colour frame (a recording's exposures as taken, in their own camera's pixels).
    Errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise CameraNotFoundError(f"{p}: {_not_a_file(p, 'fluorescence image file')}")
    h, w = size_hw
    size = image_size(p)
    _refuse_too_large(p, size, MAX_IMAGE_PIXELS, "fluorescence image")
    if size is not None and size != (w, h):
        raise CorruptFrameError(
            f"{p}: fluorescence image is {size[0]}x{size[1]} but {against} is {w}x{h}"
            + (": it must be registered to the colour frame's pixels" if against == "its colour frame" else "")
        )
    data = _file_bytes(p)
    if not data.size:
        raise CorruptFrameError(EMPTY_FILE.format(p))
    why = fluorescence_file_problem(p, data)
    if why:
        raise CorruptFrameError(why)
    uv = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if uv is None:
        raise CorruptFrameError(f"{p}: not a readable image (corrupt or unsupported format)")
    if uv.ndim != 2 or uv.dtype != np.uint8:
        raise CorruptFrameError(
            f"{p}: a fluorescence image is one 8-bit channel, this one is {uv.shape[2] if uv.ndim == 3 else 1} "
            f"channel(s) of {uv.dtype}"
        )
    if uv.shape != (h, w):
        raise CorruptFrameError(f"{p}: fluorescence image is {uv.shape[1]}x{uv.shape[0]} but {against} is {w}x{h}")
    return uv


@dataclass
class OpenCVCameraConfig:
    """A real camera through ``cv2.VideoCapture``.

    source: a device index ("0"), a video file, an RTSP/HTTP URL, or a folder of images
            (read in name order).
    width/height: requested resolution for live devices (0 = the device's default).
    fps: live devices: the requested frame rate (0 = default). Video files are played at
         their own frame times (the file's timestamps) and image folders at ``fps`` frames
         per second; with fps = 0 a folder is read as fast as asked and each image is given
         the time it is read (photos for calibration), a video file still keeps its pace.
    loop: restart a file or folder at its end instead of raising EndOfStreamError.
    timeout_s: streams: give up opening, or waiting for a frame, after this long.
    """

    source: str = "0"
    width: int = 0
    height: int = 0
    fps: float = 0.0
    loop: bool = False
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if not str(self.source).strip():
            raise ValueError("source must name a device index, file, URL or folder")
        for name in ("width", "height"):
            v = getattr(self, name)
            if not (0 <= v <= 10000):
                raise ValueError(f"{name}={v} is out of range: allowed 0..10000 (0 = device default)")
        if not (0 <= self.fps <= 1000):
            raise ValueError(f"fps={self.fps} is out of range: allowed 0..1000 (0 = device default)")
        if not (0.1 <= self.timeout_s <= 120):
            raise ValueError(f"timeout_s={self.timeout_s} is out of range: allowed 0.1..120")

    @property
    def kind(self) -> str:
        """ "device", "stream", "folder" or "file"."""
        src = str(self.source)
        if src.isdigit():
            return "device"
        if "://" in src:
            return "stream"
        return "folder" if Path(src).is_dir() else "file"


class OpenCVCamera(Camera):
    """Device index, video file, stream URL or image folder. Frames carry no encoder count.

    Live frames (device, stream) are stamped right after the grab, with the driver's own
    timestamp where it gives one (:class:`~scallop.vision.stamps.FrameStamper`): a frame that
    waited in the driver's queue keeps its time, or, without a driver timestamp, gets an
    unknown error. Video files are played at their own pace (each frame at its time in the
    file, the first one when read first), image folders at ``fps``.

    clock: the line's clock (seconds); sleep: waits on the same clock (pacing of files).
    """

    def __init__(
        self,
        config: OpenCVCameraConfig,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        super().__init__()
        self.config = config
        self._clock = clock
        self._sleep = sleep
        self._cap: cv2.VideoCapture | None = None
        self._files: list[Path] = []
        self._pos = 0
        self._index = 0
        self._size: tuple[int, int] = (config.width, config.height)
        self._lock = threading.Lock()
        self._kind = ""
        self._t0: float | None = None  # clock time of a file's first frame
        self._loop_s = 0.0  # a looped file's time so far, before this pass
        self._last_file_t = 0.0
        self.stamper = FrameStamper()

    @property
    def _name(self) -> str:
        return repr(self.config.source)

    def connect(self) -> None:
        src = str(self.config.source)
        path = Path(src)
        kind = self.config.kind
        self.stamper.reset()
        self._t0, self._loop_s, self._pos = None, 0.0, 0
        if kind == "folder":
            self._files = frame_files(path)
            if not self._files:
                raise CameraNotFoundError(f"camera {self._name}: {no_frames_message(path)}")
            first = read_image(self._files[0])
            self._size = (first.shape[1], first.shape[0])
            self._kind = kind
            self._connected = True
            return
        if kind == "device":
            cap = cv2.VideoCapture(int(src))
        elif kind == "stream":
            ms = int(self.config.timeout_s * 1000)
            cap = cv2.VideoCapture(
                src, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            )
        else:
            if not path.exists():
                raise CameraNotFoundError(f"camera {self._name}: no such device, file or folder")
            cap = cv2.VideoCapture(src)
        if not cap.isOpened():
            cap.release()
            what = {"device": "device", "stream": "stream", "file": "video file"}[kind]
            raise CameraNotFoundError(f"camera {self._name}: cannot open {what} (not present, busy, or unsupported)")
        if kind == "device":
            if self.config.width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.config.width)
            if self.config.height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.config.height)
            if self.config.fps:
                cap.set(cv2.CAP_PROP_FPS, self.config.fps)
        self._size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self._cap = cap
        self._kind = kind
        self._connected = True

    @property
    def resolution(self) -> tuple[int, int]:
        return self._size

    def _paced(self, t_file: float) -> float:
        """Wait until a file's frame at ``t_file`` (seconds into the file) is due; its stamp."""
        if self._t0 is None:
            self._t0 = self._clock() - t_file
        due = self._t0 + t_file
        wait = due - self._clock()
        if wait > 0:
            self._sleep(wait)
        return due

    def _read_folder(self) -> tuple[np.ndarray, str, float]:
        if self._pos >= len(self._files):
            if not self.config.loop:
                raise EndOfStreamError(f"camera {self._name}: no more images")
            self._loop_s += len(self._files) / self.config.fps if self.config.fps else 0.0
            self._pos = 0
        path = self._files[self._pos]
        k = self._pos
        self._pos += 1
        img = read_image(path)
        ts = self._paced(self._loop_s + k / self.config.fps) if self.config.fps else self._clock()
        return img, str(path), ts

    def _read_file(self) -> tuple[np.ndarray, float]:
        cap = self._cap
        ok = cap.grab()
        if not ok and self.config.loop:
            self._loop_s = self._last_file_t + (1.0 / self.config.fps if self.config.fps else 0.04)
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok = cap.grab()
        if not ok:
            raise EndOfStreamError(f"camera {self._name}: end of video")
        if self.config.fps:
            t_file = self._loop_s + (cap.get(cv2.CAP_PROP_POS_FRAMES) - 1) / self.config.fps
        else:
            t_file = self._loop_s + cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        self._last_file_t = t_file
        ok, img = cap.retrieve()
        if not ok or img is None:
            raise CorruptFrameError(f"camera {self._name}: frame {self._index} cannot be decoded")
        return img, self._paced(t_file)

    def _read_live(self) -> tuple[np.ndarray, float, float, float | None]:
        cap = self._cap
        t_before = self._clock()
        ok = cap.grab()
        t_after = self._clock()
        if not ok:
            raise CameraStalledError(
                f"camera {self._name}: no frame delivered (device unplugged or stopped, or the stream ended)"
            )
        driver_ms = cap.get(cv2.CAP_PROP_POS_MSEC)
        ts, err, jitter = self.stamper.stamp(t_before, t_after, driver_ms / 1000.0 if driver_ms > 0 else None)
        ok, img = cap.retrieve()
        if not ok or img is None:
            raise CorruptFrameError(f"camera {self._name}: frame {self._index} cannot be decoded")
        return img, ts, err, jitter

    def read(self) -> Frame:
        self._require_connected(self._name)
        with self._lock:
            err, extra = 0.0, {}
            if self._kind == "folder":
                img, source, ts = self._read_folder()
            elif self._kind == "file":
                img, ts = self._read_file()
                source = str(self.config.source)
            else:
                img, ts, err, jitter = self._read_live()
                source = str(self.config.source)
                if jitter is not None:
                    extra["stamp_jitter_s"] = jitter
            if img.ndim == 2:
                img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
            frame = Frame(
                image=img,
                timestamp=ts,
                encoder=None,
                index=self._index,
                source=source,
                extra=extra,
                timestamp_error_s=err,
            )
            self._index += 1
            return frame

    def disconnect(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._connected = False
