"""Recordings: frames kept with their exposure time and belt encoder count, and played back.

A recording is a folder (``scallop capture`` writes one; docs/dataset-format.md, "Recordings")::

    recording.json   {"format": "scallop-recording", "version": 1, "source", "resolution",
                      "counts", "created", "frames", "t0"}
    frames.csv       image,counts,time_s,stamp_error_s,index   one row per frame, in time order
    frames/000000.jpg …

``time_s`` is the exposure time in seconds since the recording's first frame (``t0``: that
frame's time on the recording program's clock), ``counts`` the
raw encoder count at that exposure (empty when the camera had none), ``stamp_error_s`` the
stamp's error bound when it was recorded. The ``image,counts`` columns are what
``scallop calibrate encoder --counts`` reads, so a recording of a board riding the belt is
step 3's input as it is.

A line with the fluorescence channel ([camera.fluorescence], docs/fluorescence.md) is recorded as
version 2: ``recording.json`` adds ``"fluorescence": {"setup", "resolution"}`` and each row the
partner exposure as taken (in its own camera's pixels, before registration) beside the frame::

    ...,uv_image,uv_counts,uv_time_s,uv_index,uv_missing
    fluorescence/000000.png …   one plane, PNG; uv_missing: why a frame had no partner

so that a replay pairs and registers it as the line did live. They have a folder of their own:
an ``x.uv.png`` beside ``x.jpg`` means a fluorescence image already registered to the frame's
pixels (the appearance spec's files), which these are not. A recording without the channel stays
version 1, which older programs read.

:class:`RecordingCamera` plays one back as a camera: each frame at its recorded time (the
first one when the camera connects) with its recorded count — at the true pace on a wall
clock, and as fast as the work allows on a virtual clock, whose driver asks
:meth:`RecordingCamera.next_frame_time`. A reader that falls further behind than the
camera's buffer loses the oldest frames, as it would on the line.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from scallop.errors import DataError
from scallop.vision.camera import (
    MAX_IMAGE_PIXELS,
    Camera,
    CameraError,
    CameraNotFoundError,
    CameraStalledError,
    CorruptFrameError,
    EndOfStreamError,
    Frame,
    image_size,
    read_fluorescence,
    read_image,
)

FORMAT = "scallop-recording"
VERSION = 1
VERSION_UV = 2  # with the fluorescence channel
INDEX = "frames.csv"
META = "recording.json"
COLUMNS = ("image", "counts", "time_s", "stamp_error_s", "index")
UV_COLUMNS = ("uv_image", "uv_counts", "uv_time_s", "uv_index", "uv_missing")
UV_FOLDER = "fluorescence"  # the partners as taken (not registered: not x.uv.png beside x.jpg)
SETUPS = ("second_camera", "alternate")


class RecordingError(DataError):
    """A recording folder that cannot be read: its description, index or frames."""


class Clock(Protocol):
    def now(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...


def is_recording(path: str | os.PathLike) -> bool:
    """A folder with a recording's index and description."""
    p = Path(path)
    return p.is_dir() and (p / META).is_file() and (p / INDEX).is_file()


@dataclass(frozen=True)
class RecordedExposure:
    """A fluorescence exposure kept beside its colour frame (version 2)."""

    image: str  # path relative to the recording folder
    counts: int | None
    time_s: float
    index: int


@dataclass(frozen=True)
class RecordedFrame:
    image: str  # path relative to the recording folder
    counts: int | None
    time_s: float
    stamp_error_s: float
    index: int
    uv: RecordedExposure | None = None
    uv_missing: str = ""  # why the frame had no fluorescence partner (version 2)


def read_description(folder: str | os.PathLike) -> dict:
    """A recording's ``recording.json``, checked (format, version, the fluorescence part), without
    its index; a :class:`RecordingError` when it cannot be used."""
    p = Path(folder)
    meta = _read_meta(p)
    _checked_setup(p, meta)
    return meta


def recording_setup(folder: str | os.PathLike) -> str:
    """The fluorescence set-up a recording was made with ("none" for a version 1 recording),
    from its description alone; a :class:`RecordingError` when that is unreadable."""
    return setup_of(read_description(folder))


def setup_of(meta: dict) -> str:
    """The fluorescence set-up of a checked description (:func:`read_description`)."""
    return meta["fluorescence"]["setup"] if meta["version"] == VERSION_UV else "none"


def _read_meta(p: Path) -> dict:
    try:
        meta = json.loads((p / META).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise RecordingError(f"recording {p}: {META} is not valid JSON ({e})") from None
    version = meta.get("version") if isinstance(meta, dict) else None
    if (
        not isinstance(meta, dict)
        or meta.get("format") != FORMAT
        or isinstance(version, bool)
        or version not in (VERSION, VERSION_UV)
    ):
        got = meta if not isinstance(meta, dict) else f"format {meta.get('format')!r} version {meta.get('version')!r}"
        raise RecordingError(
            f"recording {p}: {got}; this program reads {FORMAT!r} versions {VERSION} and {VERSION_UV} "
            "(2: with the fluorescence channel)"
        )
    return meta


def _checked_setup(p: Path, meta: dict) -> str:
    if meta["version"] == VERSION:
        return "none"
    fl = meta.get("fluorescence")
    setup = fl.get("setup") if isinstance(fl, dict) else None
    if setup not in SETUPS:
        raise RecordingError(
            f'recording {p}: version {VERSION_UV} needs "fluorescence": {{"setup": one of {", ".join(SETUPS)}}} '
            f"in {META}, it has {fl!r}"
        )
    res = fl.get("resolution")
    if res is not None and not (
        isinstance(res, list)
        and len(res) == 2
        and all(type(v) is int and 0 < v for v in res)
        and res[0] * res[1] <= MAX_IMAGE_PIXELS
    ):
        raise RecordingError(
            f'recording {p}: "fluorescence": "resolution" in {META} is {res!r}: expected [width, height] in '
            "pixels, or null"
        )
    return setup


def _inside(p: Path, name: str, row_no: int, column: str) -> str:
    """A file named by the index, refused unless it lies inside the recording's folder."""
    rel = Path(name)
    if not name or rel.is_absolute() or ".." in rel.parts:
        raise RecordingError(
            f"recording {p}: {INDEX} row {row_no}: {column}={name!r} is not a file inside the recording"
        )
    return name


class RecordingWriter:
    """Writes a recording folder frame by frame (``add``); ``close`` completes it.

    image_format: "jpg" (quality 95: a shift stays a manageable size) or "png" (lossless).
    fluorescence: the line's fluorescence set-up ("none", "second_camera", "alternate"): with
    one, each frame's partner exposure (``frame.extra["fluorescence"]``) is kept beside it, or
    why it had none (``frame.extra["fluorescence_missing"]``), and the recording is version 2.
    """

    def __init__(
        self, folder: str | os.PathLike, source: str, counts: str, image_format: str = "jpg", fluorescence: str = "none"
    ) -> None:
        if image_format not in ("jpg", "png"):
            raise ValueError(f"image_format={image_format!r} is not allowed: choose 'jpg' or 'png'")
        if fluorescence not in ("none", *SETUPS):
            raise ValueError(f"fluorescence={fluorescence!r} is not allowed: choose 'none' or one of {SETUPS}")
        self.fluorescence = fluorescence
        self.uv_resolution: tuple[int, int] | None = None
        self.uv_frames = self.uv_missing = 0
        self.folder = Path(folder)
        if self.folder.exists() and any(self.folder.iterdir()):
            raise FileExistsError(f"{self.folder}: not empty; give a new folder for the recording")
        (self.folder / "frames").mkdir(parents=True, exist_ok=True)
        if fluorescence != "none":
            (self.folder / UV_FOLDER).mkdir(exist_ok=True)
        self.source, self.counts_from, self.image_format = source, counts, image_format
        self._csv = (self.folder / INDEX).open("w", newline="", encoding="utf-8")
        self._w = csv.writer(self._csv)
        self._w.writerow(COLUMNS + (UV_COLUMNS if fluorescence != "none" else ()))
        self._csv.flush()  # a recording killed before its first frame still has its columns
        self._t0: float | None = None
        self.frames = 0
        self.resolution: tuple[int, int] | None = None
        self._write_meta()

    def add(self, frame: Frame) -> None:
        if self._t0 is None:
            self._t0 = frame.timestamp
        size = (frame.width, frame.height)
        if self.resolution is None:
            self.resolution = size
        elif size != self.resolution:
            raise CorruptFrameError(f"frame {frame.index} is {size[0]}x{size[1]}, the recording is {self.resolution}")
        name = f"frames/{self.frames:06d}.{self.image_format}"
        params = [cv2.IMWRITE_JPEG_QUALITY, 95] if self.image_format == "jpg" else []
        ok, buf = cv2.imencode("." + self.image_format, frame.image, params)
        if not ok:
            raise CorruptFrameError(f"frame {frame.index} could not be encoded")
        uv_row = self._partner(frame) if self.fluorescence != "none" else ()
        (self.folder / name).write_bytes(buf.tobytes())
        err = frame.timestamp_error_s
        self._w.writerow(
            (
                name,
                "" if frame.encoder is None else int(frame.encoder),
                f"{frame.timestamp - self._t0:.6f}",
                "inf" if not math.isfinite(err) else f"{err:.6f}",
                frame.index,
            )
            + uv_row
        )
        self.frames += 1
        # Each row on disk with its frame: a recorder killed mid-shift loses at most the row
        # being written, which a reader then leaves out.
        self._csv.flush()

    def _partner(self, frame: Frame) -> tuple:
        """The row's fluorescence columns, its exposure written beside the frame's image."""
        ex = frame.extra.get("fluorescence")
        if ex is None:
            return self._no_partner(str(frame.extra.get("fluorescence_missing") or "no fluorescence exposure"))
        img = np.asarray(ex.image)
        # One odd exposure is that frame's partner lost, kept with the reason: never the shift's
        # recording stopped (the line drops such a pair the same way).
        if img.ndim != 2 or img.dtype != np.uint8:
            return self._no_partner(f"its fluorescence exposure came as {img.shape} {img.dtype}, not one 8-bit plane")
        if not math.isfinite(float(ex.timestamp)):
            return self._no_partner("its fluorescence exposure's time is not known")
        if img.size == 0:
            return self._no_partner("its fluorescence exposure came empty")
        if self.uv_resolution not in (None, (img.shape[1], img.shape[0])):
            w, h = self.uv_resolution
            return self._no_partner(
                f"its fluorescence exposure came {img.shape[1]}x{img.shape[0]}, the recording's are {w}x{h}"
            )
        try:
            ok, buf = cv2.imencode(".png", img)
        except cv2.error:
            ok = False
        if not ok:
            return self._no_partner("its fluorescence exposure could not be encoded")
        if self.uv_resolution is None:  # the first partner kept sets the recording's size
            self.uv_resolution = (img.shape[1], img.shape[0])
        name = f"{UV_FOLDER}/{self.frames:06d}.png"
        (self.folder / name).write_bytes(buf.tobytes())
        self.uv_frames += 1
        return (
            name,
            "" if ex.encoder is None else int(ex.encoder),
            f"{ex.timestamp - self._t0:.6f}",
            int(getattr(ex, "index", 0)),
            "",
        )

    def _no_partner(self, why: str) -> tuple:
        self.uv_missing += 1
        return ("", "", "", "", why)

    def _write_meta(self) -> None:
        meta = {
            "format": FORMAT,
            "version": VERSION if self.fluorescence == "none" else VERSION_UV,
            "source": self.source,
            "counts": self.counts_from,
            "resolution": list(self.resolution) if self.resolution else None,
            "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "frames": self.frames,
            "t0": self._t0,
        }
        if self.fluorescence != "none":
            meta["fluorescence"] = {
                "setup": self.fluorescence,
                "resolution": list(self.uv_resolution) if self.uv_resolution else None,
                "frames": self.uv_frames,
                "missing": self.uv_missing,
            }
        (self.folder / META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    def close(self) -> None:
        if self._csv.closed:
            return
        self._csv.close()
        self._write_meta()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_index(folder: str | os.PathLike) -> tuple[dict, list[RecordedFrame]]:
    """The description and the frames of a recording; a :class:`RecordingError` naming the
    file and row for anything malformed (CameraNotFoundError when the folder is not there)."""
    p = Path(folder)
    if not is_recording(p):
        raise CameraNotFoundError(f"recording {p}: not a recording folder (no {META} and {INDEX})")
    meta = _read_meta(p)
    with_uv = _checked_setup(p, meta) != "none"
    frames: list[RecordedFrame] = []
    try:
        with (p / INDEX).open(encoding="utf-8", newline="") as raw:
            text = raw.read()
    except UnicodeDecodeError:
        raise RecordingError(f"recording {p}: {INDEX} is not text") from None
    if text and not text.endswith("\n"):
        # The recorder was killed part-way through its last row: the rows before it stand.
        text = text[: text.rfind("\n") + 1]
    with io.StringIO(text, newline="") as f:
        reader = csv.DictReader(f)
        need = ("image", "counts", "time_s") + (UV_COLUMNS if with_uv else ())
        missing = [c for c in need if c not in (reader.fieldnames or ())]
        if missing:
            raise RecordingError(f"recording {p}: {INDEX} lacks the columns {', '.join(missing)}")
        last = -math.inf
        for row_no, row in enumerate(reader, start=2):
            try:
                t = float(row["time_s"])
                counts = int(row["counts"]) if row["counts"].strip() else None
                err = float(row.get("stamp_error_s") or 0.0)
                index = int(row.get("index") or len(frames))
            except (ValueError, TypeError, AttributeError):  # TypeError: a row short of fields
                raise RecordingError(f"recording {p}: {INDEX} row {row_no} is not numbers: {row}") from None
            if not math.isfinite(t) or t < last:
                raise RecordingError(f"recording {p}: {INDEX} row {row_no}: time_s={t} is not after {last}")
            last = t
            uv, why = _partner_of(p, row, row_no) if with_uv else (None, "")
            image = _inside(p, row["image"] or "", row_no, "image")
            frames.append(RecordedFrame(image, counts, t, err, index, uv, why))
    if not frames:
        raise RecordingError(f"recording {p}: holds no frames")
    return meta, frames


def _partner_of(p: Path, row: dict, row_no: int) -> tuple[RecordedExposure | None, str]:
    if not isinstance(row.get("uv_image"), str) or not row["uv_image"].strip():
        return None, str(row.get("uv_missing") or "").strip() or "no fluorescence exposure with this frame"
    try:
        counts = int(row["uv_counts"]) if (row["uv_counts"] or "").strip() else None
        t = float(row["uv_time_s"])
        index = int(row["uv_index"] or 0)
    except (ValueError, TypeError):
        raise RecordingError(f"recording {p}: {INDEX} row {row_no}: its fluorescence columns are not numbers") from None
    if not math.isfinite(t):
        raise RecordingError(f"recording {p}: {INDEX} row {row_no}: uv_time_s={t} is not a time")
    return RecordedExposure(_inside(p, row["uv_image"], row_no, "uv_image"), counts, t, index), ""


class RecordingCamera(Camera):
    """A recording played back as a camera (see the module docstring).

    clock: the line's clock (``now()``, ``sleep()``). with_counts: give each frame its
    recorded count (False: frames only, for pairing with a live counter in a rehearsal).
    buffer_frames: frames the "camera" holds for a slow reader before dropping the oldest.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        clock: Clock,
        with_counts: bool = True,
        buffer_frames: int = 4,
        read_partners: bool = True,
    ):
        super().__init__()
        # False: a line without the channel, which would only throw the decoded partners away.
        self.read_partners = read_partners
        if buffer_frames < 1:
            raise ValueError(f"buffer_frames={buffer_frames} must be at least 1")
        self.folder = Path(folder)
        self.clock = clock
        self.with_counts = with_counts
        self.buffer_frames = buffer_frames
        self.meta: dict = {}
        self.frames: list[RecordedFrame] = []
        self._pos = 0
        self._t0 = 0.0
        self._size: tuple[int, int] = (0, 0)
        self._uv_size: list[int] | None = None
        self.setup = "none"  # the fluorescence set-up it was made with, once connected
        self._root = self.folder.resolve()
        self.dropped = 0

    @property
    def _name(self) -> str:
        return f"recording {self.folder}"

    @property
    def resolution(self) -> tuple[int, int]:
        return self._size

    @property
    def has_counts(self) -> bool:
        return all(f.counts is not None for f in self.frames)

    def connect(self) -> None:
        self.meta, self.frames = read_index(self.folder)
        self.setup = setup_of(self.meta)
        self._root = self.folder.resolve()
        self._check_inside(self.folder / self.frames[0].image)
        first = read_image(self.folder / self.frames[0].image)
        self._size = (first.shape[1], first.shape[0])
        self._pos = 0
        self._t0 = self.clock.now() - self.frames[0].time_s
        self._connected = True

    def disconnect(self) -> None:
        self._connected = False

    def reconnect(self) -> None:
        # A recording that went away (a network share, a disk) comes back where the time has
        # got to, not at its start.
        if not is_recording(self.folder):
            raise CameraNotFoundError(f"camera {self._name}: the recording is not there")
        self._connected = True

    def _due(self, k: int) -> float:
        return self._t0 + self.frames[k].time_s

    def next_frame_time(self) -> float | None:
        if self._pos >= len(self.frames):
            return math.inf
        return max(self.clock.now(), self._due(self._pos))

    def read(self) -> Frame:
        self._require_connected(self._name)
        if self._pos >= len(self.frames):
            raise EndOfStreamError(f"camera {self._name}: end of the recording")
        now = self.clock.now()
        # Fell behind by more than the buffer: the oldest frames are gone.
        while self._pos + self.buffer_frames < len(self.frames) and self._due(self._pos + self.buffer_frames) <= now:
            self._pos += 1
            self.dropped += 1
        due = self._due(self._pos)
        if due > now:
            self.clock.sleep(due - now)
        rec = self.frames[self._pos]
        self._pos += 1
        path = self.folder / rec.image
        try:
            self._check_inside(path)
            img = read_image(path)
        except CameraNotFoundError:
            if not self.folder.is_dir():
                raise CameraStalledError(f"camera {self._name}: the recording is gone") from None
            raise CorruptFrameError(f"camera {self._name}: frame {rec.index} ({rec.image}) is missing") from None
        if img.shape[1::-1] != self._size:
            raise CorruptFrameError(f"camera {self._name}: frame {rec.index} is {img.shape[1]}x{img.shape[0]}")
        frame = Frame(
            image=img,
            timestamp=due,
            encoder=rec.counts if self.with_counts else None,
            index=rec.index,
            source=str(path),
            timestamp_error_s=rec.stamp_error_s,
        )
        if self.read_partners and self.setup != "none":
            self._attach_partner(frame, rec, due)
        return frame

    def _check_inside(self, path: Path) -> None:
        """A file the index names, followed through any link, must still lie in the recording."""
        real, root = path.resolve(), self._root
        if real != root and root not in real.parents:
            raise CorruptFrameError(f"camera {self._name}: {path} leads outside the recording (to {real})")

    def _attach_partner(self, frame: Frame, rec: RecordedFrame, due: float) -> None:
        """The partner exposure as recorded, on the replay's clock as the frame is; a partner
        that cannot be read leaves the frame without one and says why, as a live camera would."""
        from scallop.vision.channels import ChannelExposure

        if rec.uv is None:
            frame.extra["fluorescence_missing"] = rec.uv_missing
            return
        path = self.folder / rec.uv.image
        want = (self.meta.get("fluorescence") or {}).get("resolution") or self._uv_size
        try:
            self._check_inside(path)
            if want is None:  # a description without it (a recording cut short): the first partner's
                size = image_size(path)
                if size is None:
                    raise CorruptFrameError(f"{path}: not a readable image")
                want = self._uv_size = list(size)
            # As the appearance spec's files are: one 8-bit plane, PNG; of the recording's size.
            uv = read_fluorescence(path, (want[1], want[0]), against="the recording's fluorescence frames")
        except CameraError as e:
            frame.extra["fluorescence_missing"] = f"the recorded fluorescence frame cannot be used ({e})"
            return
        frame.extra["fluorescence"] = ChannelExposure(
            uv, due - rec.time_s + rec.uv.time_s, rec.uv.counts if self.with_counts else None, rec.uv.index
        )


def stamp_figures(errors_s) -> dict:
    """Median, p99 and worst (ms) of stamp errors: each frame's stamp minus its true exposure
    (and the constant latency), for the benchmark."""
    d = np.abs(np.asarray(errors_s, dtype=np.float64)) * 1e3
    if not len(d):
        raise ValueError("no stamps to measure")
    return {
        "frames": int(len(d)),
        "p50_ms": round(float(np.median(d)), 3),
        "p99_ms": round(float(np.quantile(d, 0.99)), 3),
        "max_ms": round(float(d.max()), 3),
    }
