"""GenICam cameras (GigE Vision, USB3 Vision) through Aravis.

Aravis is reached through GObject introspection (Debian: ``gir1.2-aravis-0.8``; Python:
``PyGObject``, the ``genicam`` extra). Both are optional: this module imports them only when a
camera connects, and says what to install when they are missing.

A plant camera is triggered by the belt encoder (a divider on the encoder's pulses wired to
the camera's trigger input, ``trigger = "line"``); ``"software"`` fires a trigger from the host
(:meth:`AravisCamera.trigger`: tests, and a PLC-less bench), ``"free"`` runs at a frame rate.

Each frame is stamped from the camera's own timestamp (latched by the camera at the frame's
start), mapped to the host's clock: the offset between the two clocks is the smallest
``arrival - camera time`` of the recent frames (:class:`~scallop.vision.genicam.ClockMap`; the least-delayed frame tells
the offset best, and a window follows the drift between the two oscillators). With
``counts_per_trigger`` (the encoder divider) each frame also carries its belt encoder count:
the camera's frame counter counts the triggers, lost frames included, so the count stays exact
across lost frames.

Faults, as :class:`~scallop.vision.camera.CameraError` subclasses (the line's frame reader turns
them into alarms):

* an incomplete frame (missing packets, a timeout inside the frame) is
  :class:`IncompleteFrameError`, skipped;
* frames that never arrived (a gap in the camera's frame counter, or the host ran out of
  buffers) are reported once as :class:`FramesLostError` with the number lost, and the good
  frame after the gap is returned by the next :meth:`~AravisCamera.read`;
* no frame within ``timeout_s`` is :class:`FrameTimeoutError` (a stopped belt gives no
  encoder triggers, too);
* a camera that stops answering (unplugged, power cut, a heartbeat lost) is closed and opened
  again by later reads, with a back-off from 0.5 s doubling to 10 s; until it answers, reads
  raise :class:`~scallop.vision.camera.CameraNotFoundError`.

``lost`` and ``incomplete`` count those frames since the camera was made; ``dropped`` is their
sum (the line shows it as dropped frames).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from scallop.errors import ConfigError, check_number
from scallop.vision.camera import (
    Camera,
    CameraError,
    CameraNotFoundError,
    CorruptFrameError,
    Frame,
)
from scallop.vision.genicam import PIXEL_FORMATS, AravisCameraConfig, ClockMap, FrameCounter

log = logging.getLogger("scallop.camera.aravis")

INSTALL_HINT = (
    "GenICam cameras need Aravis through GObject introspection: apt-get install gir1.2-aravis-0.8 "
    "libgirepository1.0-dev libcairo2-dev pkg-config, then pip install -e '.[genicam]'"
)

BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.5, 10.0
RELEASE_WAIT_S = 10.0  # giving up control of a GigE camera that is gone: Aravis retries ~4 s


class FrameTimeoutError(CameraError):
    """No frame within ``timeout_s``: no trigger came (belt stopped, trigger not wired) or the
    camera stalled."""


class IncompleteFrameError(CorruptFrameError):
    """A frame arrived incomplete (missing packets, a timeout inside the frame): skipped."""


class FramesLostError(CorruptFrameError):
    """Frames the camera took that never reached the host; ``n`` of them."""

    def __init__(self, msg: str, n: int) -> None:
        super().__init__(msg)
        self.n = n


def list_devices(fake: bool = False) -> list[dict[str, str]]:
    """The GenICam cameras Aravis finds (GigE Vision by discovery, USB3 Vision on the bus), with
    the id ``[camera.genicam] device`` takes; ``fake``: Aravis's built-in fake camera too."""
    Aravis = load_aravis()
    if fake:
        Aravis.enable_interface("Fake")
    Aravis.update_device_list()
    return [
        {
            "device": Aravis.get_device_id(i),
            "vendor": Aravis.get_device_vendor(i) or "",
            "model": Aravis.get_device_model(i) or "",
            "serial": Aravis.get_device_serial_nbr(i) or "",
            "address": Aravis.get_device_address(i) or "",
            "protocol": Aravis.get_device_protocol(i) or "",
        }
        for i in range(Aravis.get_n_devices())
    ]


def load_aravis() -> Any:
    """The ``Aravis`` 0.8 module of GObject introspection, or CameraNotFoundError saying what to install."""
    try:
        import gi

        gi.require_version("Aravis", "0.8")
        from gi.repository import Aravis
    except (ImportError, ValueError) as e:
        raise CameraNotFoundError(f"{INSTALL_HINT} ({e})") from None
    return Aravis


class AravisCamera(Camera):
    """A GenICam camera through Aravis. ``width``/``height`` (0 = the sensor's) and ``fps``
    (free running; 0 = the camera's) are the line's ``[camera]`` keys; the rest is
    :class:`AravisCameraConfig`. ``clock`` stamps the frames (the line's clock)."""

    def __init__(
        self,
        config: AravisCameraConfig,
        width: int = 0,
        height: int = 0,
        fps: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        config.check_complete()
        self.config = config
        self.width, self.height, self.fps = width, height, fps
        self._clock = clock
        self._lock = threading.Lock()
        self._cam = None
        self._stream = None
        self._size = (width, height)
        self._format = config.pixel_format
        self._clockmap = ClockMap()
        self._ids = FrameCounter()
        self._control_lost = threading.Event()
        self._next_try = 0.0
        self._backoff = BACKOFF_FIRST_S
        self._pending: Frame | None = None
        self._timeouts = 0  # reads in a row that got no frame
        self._device_id = ""
        self._reapers: list[threading.Thread] = []
        self._underruns = 0
        self.index = 0
        self.count = 0  # the belt count of the last frame, with counts_per_trigger
        self._rate: float | None = None  # counts per second between the last two frames
        self._last_t: float | None = None
        self.lost = 0
        self.incomplete = 0
        self.reconnects = 0

    @property
    def name(self) -> str:
        return f"genicam {self.config.device or '(first found)'}"

    @property
    def resolution(self) -> tuple[int, int]:
        return self._size

    @property
    def dropped(self) -> int:
        return self.lost + self.incomplete

    # ------------------------------------------------------------------ opening
    def connect(self) -> None:
        with self._lock:
            self._open()
        self._connected = True

    def _open(self) -> None:
        Aravis = load_aravis()
        GLib = _glib()
        cfg = self.config
        if cfg.device.startswith("Fake"):
            Aravis.enable_interface("Fake")  # Aravis's in-process fake camera is off by default
        try:
            cam = Aravis.Camera.new(cfg.device or self._only_device(Aravis))
        except GLib.Error as e:
            raise CameraNotFoundError(f"camera {self.name}: cannot open: {e.message}") from None
        try:
            self._configure(cam)
            stream = cam.create_stream(None, None)
            if stream is None:
                raise CameraNotFoundError(f"camera {self.name}: no stream (is another program using it?)")
            payload = cam.get_payload()
            for _ in range(cfg.buffers):
                stream.push_buffer(Aravis.Buffer.new_allocate(payload))
            self._control_lost.clear()
            cam.get_device().connect("control-lost", lambda _dev: self._control_lost.set())
            cam.start_acquisition()
        except GLib.Error as e:
            raise CameraError(f"camera {self.name}: {e.message}") from None
        self._cam, self._stream = cam, stream
        self._device_id = cam.get_device_id()
        self._timeouts = 0
        self._clockmap.reset()
        self._ids.reset()
        self._underruns = self._stream_info("n_underruns")
        self._backoff = BACKOFF_FIRST_S

    def _only_device(self, Aravis) -> str:
        Aravis.update_device_list()
        ids = [Aravis.get_device_id(i) for i in range(Aravis.get_n_devices())]
        if len(ids) != 1:
            found = ", ".join(ids) if ids else "none"
            raise CameraNotFoundError(
                f"camera {self.name}: [camera.genicam] device is not set and {len(ids)} cameras answer "
                f"({found}): name one"
            )
        return ids[0]

    def _configure(self, cam) -> None:
        """Settings from the configuration; a value the camera refuses names the key."""
        cfg = self.config
        GLib = _glib()

        def apply(key: str, value, fn, *args) -> None:
            try:
                fn(*args)
            except GLib.Error as e:
                raise ConfigError(
                    f"camera.genicam.{key}={value!r}: the camera {self.name} refuses it: {e.message}"
                ) from None

        cam.stop_acquisition()  # a camera left running by another program refuses settings
        if cfg.pixel_format:
            if cfg.pixel_format not in cam.dup_available_pixel_formats_as_strings():
                raise ConfigError(
                    f"camera.genicam.pixel_format={cfg.pixel_format!r}: the camera offers "
                    f"{', '.join(cam.dup_available_pixel_formats_as_strings())}"
                )
            apply("pixel_format", cfg.pixel_format, cam.set_pixel_format_from_string, cfg.pixel_format)
        fmt = cam.get_pixel_format_as_string()
        if fmt not in PIXEL_FORMATS:
            raise ConfigError(
                f"camera.genicam.pixel_format: the camera is set to {fmt!r}; choose one of {', '.join(PIXEL_FORMATS)}"
            )
        self._format = fmt
        sensor_w, sensor_h = cam.get_sensor_size()
        w, h = self.width or sensor_w - cfg.offset_x, self.height or sensor_h - cfg.offset_y
        if cfg.offset_x + w > sensor_w or cfg.offset_y + h > sensor_h:
            raise ConfigError(
                f"camera.genicam: region {w}x{h} at ({cfg.offset_x}, {cfg.offset_y}) does not fit the "
                f"{sensor_w}x{sensor_h} sensor"
            )
        apply("offset_x", (cfg.offset_x, cfg.offset_y, w, h), cam.set_region, cfg.offset_x, cfg.offset_y, w, h)
        _, _, rw, rh = cam.get_region()
        if (rw, rh) != (w, h):
            raise ConfigError(
                f"camera.width/height: the camera took {rw}x{rh} for {w}x{h} (its sizes come in steps of "
                f"{cam.get_width_increment()}x{cam.get_height_increment()})"
            )
        self._size = (rw, rh)
        lo, hi = cam.get_exposure_time_bounds()
        check_number("camera.genicam.exposure_us", cfg.exposure_us, lo, hi, note=f" for camera {self.name}")
        if cam.is_exposure_auto_available():
            cam.set_exposure_time_auto(_aravis().Auto.OFF)
        apply("exposure_us", cfg.exposure_us, cam.set_exposure_time, cfg.exposure_us)
        if cam.is_gain_available():
            if cam.is_gain_auto_available():
                cam.set_gain_auto(_aravis().Auto.OFF)
            lo, hi = cam.get_gain_bounds()
            check_number("camera.genicam.gain_db", cfg.gain_db, lo, hi, note=f" for camera {self.name}")
            apply("gain_db", cfg.gain_db, cam.set_gain, cfg.gain_db)
        if cfg.trigger == "free":
            cam.clear_triggers()
            if self.fps:
                lo, hi = cam.get_frame_rate_bounds()
                check_number("camera.fps", self.fps, lo, hi, note=f" for camera {self.name}")
                apply("fps", self.fps, cam.set_frame_rate, self.fps)
        else:
            source = "Software" if cfg.trigger == "software" else cfg.trigger_source
            sources = cam.get_device().dup_available_enumeration_feature_values_as_strings("TriggerSource")
            if source not in sources:
                raise ConfigError(
                    f"camera.genicam.trigger_source={source!r}: the camera {self.name} offers {', '.join(sources)}"
                )
            apply("trigger", cfg.trigger, cam.set_trigger, source)
            if cfg.trigger == "line":
                dev = cam.get_device()
                apply(
                    "trigger_activation",
                    cfg.trigger_activation,
                    dev.set_string_feature_value,
                    "TriggerActivation",
                    cfg.trigger_activation,
                )
        if cam.is_gv_device():
            if cfg.packet_size:
                apply("packet_size", cfg.packet_size, cam.gv_set_packet_size, cfg.packet_size)
            else:
                cam.gv_auto_packet_size()

    # ------------------------------------------------------------------ reading
    def trigger(self) -> None:
        """Fire a software trigger (``trigger = "software"``): one frame. Not under the read
        lock: a read waits for the frame this trigger makes."""
        cam = self._cam
        if cam is None:
            raise CameraNotFoundError(f"camera {self.name}: not open")
        try:
            cam.software_trigger()
        except _glib().Error as e:
            raise CameraError(f"camera {self.name}: software trigger: {e.message}") from None

    def read(self) -> Frame:
        self._require_connected(self.name)
        with self._lock:
            if self._pending is not None:
                frame, self._pending = self._pending, None
                return frame
            if self._cam is None or self._control_lost.is_set():
                self._reopen()
            Aravis = _aravis()
            deadline = time.monotonic() + self.config.timeout_s
            while True:
                buf = self._stream.timeout_pop_buffer(max(1, int((deadline - time.monotonic()) * 1e6)))
                if buf is None:
                    raise self._no_frame()
                if buf.get_status() in (Aravis.BufferStatus.CLEARED, Aravis.BufferStatus.ABORTED):
                    self._stream.push_buffer(buf)  # never filled (acquisition restarted): not a frame
                    continue
                self._timeouts = 0
                try:
                    return self._frame(buf)
                finally:
                    self._stream.push_buffer(buf)

    def _no_frame(self) -> CameraError:
        """The error for a read that got no frame. After a second one in a row the camera is
        asked whether it is still there (a stopped belt sends no triggers: that is not a lost
        camera); one that is not is closed, and reads reconnect it."""
        self._timeouts += 1
        if self._control_lost.is_set() or (self._timeouts >= 2 and not self._present()):
            self._drop()
            return CameraNotFoundError(f"camera {self.name}: stopped answering; reconnecting")
        waited = self._timeouts * self.config.timeout_s
        why = "no trigger: belt stopped, or the encoder trigger is not wired" if self.config.trigger != "free" else ""
        return FrameTimeoutError(f"camera {self.name}: no frame for {waited:g} s" + (f" ({why})" if why else ""))

    def _frame(self, buf) -> Frame:
        Aravis = _aravis()
        # Frames the host had no buffer for: the camera took them, they never arrived.
        underruns = self._stream_info("n_underruns")
        missed, self._underruns = underruns - self._underruns, underruns
        status = buf.get_status()
        frame_id = int(buf.get_frame_id())
        resumed = self._ids.last is None and self.index > 0
        steps = self._ids.step(frame_id)
        lost = max(steps - 1, missed)
        self.lost += lost
        if status != Aravis.BufferStatus.SUCCESS:
            self.incomplete += 1
            raise IncompleteFrameError(
                f"camera {self.name}: frame {frame_id} arrived incomplete ({status.value_nick}): skipped "
                "(check the network: docs/cameras.md, GigE set-up)"
            )
        frame = self._convert(buf, frame_id, steps, resumed)
        if lost:
            self._pending = frame
            raise FramesLostError(
                f"camera {self.name}: {lost} frame(s) lost before frame {frame_id} (network, host buffers, or "
                "triggers faster than the camera can take them)",
                lost,
            )
        return frame

    def _convert(self, buf, frame_id: int, steps: int, resumed: bool) -> Frame:
        now_host, now_wall_ns = self._clock(), time.time_ns()
        # Arrival on the line's clock: the host stamped it on the wall clock (ns).
        arrival = now_host - (now_wall_ns - buf.get_system_timestamp()) / 1e9
        cam_ns = int(buf.get_timestamp())
        ts = self._clockmap.host_time(cam_ns, arrival) if cam_ns else arrival
        w, h = buf.get_image_width(), buf.get_image_height()
        bpp, code = PIXEL_FORMATS[self._format]
        data = np.frombuffer(buf.get_image_data(), dtype=np.uint8)
        row = w * bpp + buf.get_image_padding()[0]
        if data.size < h * row:
            self.incomplete += 1
            raise IncompleteFrameError(f"camera {self.name}: frame {frame_id} holds {data.size} bytes for {w}x{h}")
        img = data[: h * row].reshape(h, row)[:, : w * bpp].reshape(h, w, bpp)
        img = img.copy() if code is None else cv2.cvtColor(img if bpp == 3 else img[:, :, 0], code)
        if self.config.counts_per_trigger:
            self._advance_count(ts, steps, resumed)
        frame = Frame(
            image=img,
            timestamp=ts,
            encoder=self.count if self.config.counts_per_trigger else None,
            index=self.index,
            source=self.name,
            extra={"camera_ns": cam_ns, "frame_id": frame_id, "arrival": arrival},
        )
        self.index += 1
        return frame

    def _advance_count(self, ts: float, steps: int, resumed: bool) -> None:
        """The belt count at this frame: ``steps`` triggers on, or after a reconnect (the new
        session's frame counter knows nothing of the triggers during the outage) the belt's last
        rate carried over the outage, in whole triggers."""
        cpt = self.config.counts_per_trigger
        if resumed and self._rate is not None and self._last_t is not None:
            steps = max(1, round(self._rate * (ts - self._last_t) / cpt))
        elif self._last_t is not None and ts > self._last_t:
            self._rate = steps * cpt / (ts - self._last_t)
        self.count += steps * cpt
        self._last_t = ts

    def _stream_info(self, name: str) -> int:
        try:
            return int(self._stream.get_info_uint64_by_name(name))
        except Exception:  # an older Aravis without the statistic
            return 0

    def _present(self) -> bool:
        """The camera is still there. A GigE camera is looked for by discovery (1 s); reading
        a register of a GigE camera that is gone takes 5 s of retries. Others answer a read."""
        if self._cam.is_gv_device():
            Aravis = _aravis()
            Aravis.update_device_list()
            return self._device_id in {Aravis.get_device_id(i) for i in range(Aravis.get_n_devices())}
        try:
            self._cam.get_pixel_format()
            return True
        except _glib().Error:
            return False

    # ------------------------------------------------------------------ losing it and getting it back
    def _drop(self) -> None:
        log.warning("camera %s stopped answering: closing it, reconnecting", self.name)
        # Releasing a camera that is gone costs seconds of retries (Aravis gives up control of
        # it): that happens in a thread of its own, so the line hears of the loss at once.
        lost = [self._cam, self._stream]  # the only references left: the thread drops them
        self._cam = self._stream = None
        self._ids.reset()
        self._next_try = time.monotonic()
        reaper = threading.Thread(target=_release, args=(lost,), name="genicam-release", daemon=True)
        reaper.start()
        self._reapers = [t for t in self._reapers if t.is_alive()] + [reaper]

    def _reopen(self) -> None:
        if self._cam is not None:
            self._drop()  # its heartbeat went unanswered (control lost)
        now = time.monotonic()
        if now < self._next_try:
            raise CameraNotFoundError(f"camera {self.name}: not answering; next try in {self._next_try - now:.1f} s")
        try:
            self._open()
        except CameraError as e:
            self._close()
            self._next_try = time.monotonic() + self._backoff  # opening a camera that is gone takes seconds
            self._backoff = min(BACKOFF_MAX_S, self._backoff * 2)
            raise CameraNotFoundError(f"{e}; next try in {self._backoff / 2:.1f} s") from None
        self.reconnects += 1
        log.warning("camera %s: reconnected", self.name)

    def _close(self) -> None:
        cam, self._cam, self._stream = self._cam, None, None
        if cam is not None:
            try:
                cam.stop_acquisition()
            except _glib().Error:
                pass  # already gone
        self._ids.reset()

    def disconnect(self) -> None:
        with self._lock:
            self._close()
            self._pending = None
        for t in self._reapers:
            t.join(RELEASE_WAIT_S)
            if t.is_alive():
                log.error("camera %s: a lost camera is still being released", self.name)
        self._reapers = []
        self._connected = False


def _release(objs: list) -> None:
    """Drop the last references to a lost camera and its stream (in this thread: see _drop)."""
    objs.clear()


def _aravis():
    return load_aravis()


def _glib():
    from gi.repository import GLib

    return GLib


if __name__ == "__main__":  # python -m scallop.vision.aravis [--fake]: the cameras there are
    import sys

    try:
        found = list_devices(fake="--fake" in sys.argv[1:])
    except CameraError as e:
        sys.exit(f"error: {e}")
    for d in found:
        print(f"{d['device']}\t{d['protocol']} {d['address']}\t{d['vendor']} {d['model']} (serial {d['serial']})")
    if not found:
        print("no GenICam camera found (GigE: same subnet and a free port? USB3: permissions?)", file=sys.stderr)
