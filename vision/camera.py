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
               ``"truth"``, a co-registered fluorescence channel under ``"uv"``).
    """

    image: np.ndarray
    timestamp: float
    encoder: int | None = None
    index: int = 0
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

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


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


# 50 megapixels: twice a 6K industrial sensor. Decoded, that is 150 MB of BGR; a 20000x20000
# file (1.2 GB decoded, several GB while OpenCV works on it) is refused before decoding.
MAX_IMAGE_PIXELS = 50_000_000


class ImageTooLargeError(CorruptFrameError):
    """An image file whose header announces more pixels than the budget: refused unread."""


def image_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) from the file's header, without decoding it (Pillow reads only the
    header on open); None when the format is not one Pillow knows."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as im:
                return int(im.size[0]), int(im.size[1])
        except Image.DecompressionBombError as e:
            # Pillow's own bomb check fired first; its message carries the pixel count.
            import re

            m = re.search(r"\((\d+) pixels\)", str(e))
            return (int(m.group(1)) if m else 2**31, 1)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            return None


def read_image(path: str | os.PathLike, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 BGR, with an error that names the file. An image
    of more than ``max_pixels`` is refused from its header, before any decoding."""
    p = Path(path)
    if not p.is_file():
        raise CameraNotFoundError(f"{p}: no such image file")
    size = image_size(p)
    if size is not None and size[0] * size[1] > max_pixels:
        w, h = size
        shown = f"{w}x{h} ({w * h / 1e6:.0f} megapixels)" if h > 1 else f"{w / 1e6:.0f} megapixels"
        raise ImageTooLargeError(
            f"{p}: image is {shown}, above the {max_pixels / 1e6:g} megapixel limit: scale it down first"
        )
    data = np.fromfile(str(p), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise CorruptFrameError(f"{p}: not a readable image (corrupt or unsupported format)")
    return img


@dataclass
class OpenCVCameraConfig:
    """A real camera through ``cv2.VideoCapture``.

    source: a device index ("0"), a video file, an RTSP/HTTP URL, or a folder of images
            (read in name order).
    width/height: requested resolution for live devices (0 = the device's default).
    fps: requested frame rate for live devices (0 = default).
    loop: restart a file or folder at its end instead of raising EndOfStreamError.
    """

    source: str = "0"
    width: int = 0
    height: int = 0
    fps: float = 0.0
    loop: bool = False

    def __post_init__(self) -> None:
        if not str(self.source).strip():
            raise ValueError("source must name a device index, file, URL or folder")
        for name in ("width", "height"):
            v = getattr(self, name)
            if not (0 <= v <= 10000):
                raise ValueError(f"{name}={v} is out of range: allowed 0..10000 (0 = device default)")
        if not (0 <= self.fps <= 1000):
            raise ValueError(f"fps={self.fps} is out of range: allowed 0..1000 (0 = device default)")


class OpenCVCamera(Camera):
    """Device index, video file, stream URL or image folder. Frames carry no encoder count."""

    def __init__(self, config: OpenCVCameraConfig, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.config = config
        self._clock = clock
        self._cap: cv2.VideoCapture | None = None
        self._files: list[Path] = []
        self._pos = 0
        self._index = 0
        self._size: tuple[int, int] = (config.width, config.height)
        self._lock = threading.Lock()

    @property
    def _name(self) -> str:
        return repr(self.config.source)

    def connect(self) -> None:
        src = str(self.config.source)
        path = Path(src)
        if path.is_dir():
            self._files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self._files:
                raise CameraNotFoundError(f"camera {self._name}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            first = read_image(self._files[0])
            self._size = (first.shape[1], first.shape[0])
            self._connected = True
            return
        is_url = "://" in src
        if src.isdigit():
            target: int | str = int(src)
        elif is_url:
            target = src
        else:
            if not path.exists():
                raise CameraNotFoundError(f"camera {self._name}: no such device, file or folder")
            target = src
        cap = cv2.VideoCapture(target)
        if not cap.isOpened():
            cap.release()
            kind = "device" if isinstance(target, int) else ("stream" if is_url else "video file")
            raise CameraNotFoundError(f"camera {self._name}: cannot open {kind} (not present, busy, or unsupported)")
        if isinstance(target, int):
            if self.config.width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.config.width)
            if self.config.height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.config.height)
            if self.config.fps:
                cap.set(cv2.CAP_PROP_FPS, self.config.fps)
        self._size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self._cap = cap
        self._connected = True

    @property
    def resolution(self) -> tuple[int, int]:
        return self._size

    def read(self) -> Frame:
        self._require_connected(self._name)
        with self._lock:
            ts = self._clock()
            if self._files:
                if self._pos >= len(self._files):
                    if not self.config.loop:
                        raise EndOfStreamError(f"camera {self._name}: no more images")
                    self._pos = 0
                path = self._files[self._pos]
                self._pos += 1
                img = read_image(path)
                source = str(path)
            else:
                assert self._cap is not None
                ok, img = self._cap.read()
                if not ok and self.config.loop and not str(self.config.source).isdigit():
                    self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    ok, img = self._cap.read()
                if not ok or img is None:
                    if str(self.config.source).isdigit() or "://" in str(self.config.source):
                        raise CorruptFrameError(
                            f"camera {self._name}: no frame delivered (device stalled or unplugged)"
                        )
                    raise EndOfStreamError(f"camera {self._name}: end of video")
                source = str(self.config.source)
            if img.ndim == 2:
                img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
            frame = Frame(image=img, timestamp=ts, encoder=None, index=self._index, source=source)
            self._index += 1
            return frame

    def disconnect(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._connected = False
