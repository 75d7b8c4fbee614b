"""The fluorescence channel on the line: each colour frame's partner exposure checked and
registered onto the colour frame's pixels ([camera.fluorescence], docs/fluorescence.md).

A camera backend hands the partner over as taken (``frame.extra["fluorescence"]``, see
:mod:`scallop.vision.channels`). Here:

* **the pair check** — the two exposures must be at most ``max_pair_ms`` apart, and for a
  belt that moved between them both must carry an encoder count, so the movement is known.
  A frame without a good partner is analysed without the channel when the model does not
  need it, and skipped when it does (``blind``: the line waits, so the reject gate diverts
  what passed unseen): never analysed with an image of another moment.
* **registration** — each colour pixel's belt point, moved by the belt's travel between the
  two exposures (from the counts), seen by the fluorescence camera: through the colour camera
  again for alternate frames, through the calibrated registration (the calibration file's
  ``fluorescence`` part: a belt-plane homography between the two cameras' undistorted pixels,
  both lenses' distortion applied exactly) for a second camera. The per-pixel maps are cached
  per shift (0.1 mm steps, a fifth of a pixel at 0.5 mm/px).
* **alarms** — ``camera.fluorescence`` (warning) names the first reason a pair is dropped;
  after ``alarm_after`` in a row it turns critical (*lost*). Pairs that come but stay dark with
  scallops in view are critical too (*dark*, see :meth:`FluorescenceInput.saw`). A good pair
  clears a lost channel, a glowing uro a dark one.
"""

from __future__ import annotations

import math
import threading
from collections import Counter, deque
from dataclasses import dataclass

import cv2
import numpy as np

from scallop.app.alarms import Alarms
from scallop.calibration.camera_model import CameraModel, interpolated_maps
from scallop.calibration.fluorescence import Registration
from scallop.errors import ConfigError
from scallop.robot.belt import Belt
from scallop.vision.camera import Frame

ALARM = "camera.fluorescence"
SHIFT_STEP_MM = 0.1
# A uro glows at 110–240 (the spec, exposure set so the brightest does not saturate); the
# brightest 3 mm patch of a frame with uros in view is above this (190–241 measured).
GLOW_MIN = 100.0
# The belt under UV is 0–10 (the spec: the filter blocks the excitation's glare); brighter, the
# channel sees light it should not (stray white light, a missing filter).
BELT_DARK_MAX = 10.0
# Frames in a row with at least DARK_SCALLOPS scallops in view and no glow before the channel is
# taken for dark (UV light off or weak, lens capped, filter wrong): 5–10 % of scallops have no
# uro, so two of them in one frame is already rare, ten such frames in a row not a real belt.
DARK_FRAMES, DARK_SCALLOPS = 10, 2
MAX_MAPS = 8  # registration maps kept (about 7 MB each at 1280×720)
# The seen part of the frame is taken this much smaller than where the registration lands on the
# fluorescence image: it registers the belt at one height (register_height_mm, the scallops'
# tops), and a uro up to 10 mm above or below that lands off by the parallax (1.9 mm in the
# simulated rig, cameras 128 mm apart; about 4.5 mm with cameras 300 mm apart at 700 mm); the UV
# exposure's longer motion blur (the spec: up to 12 px) smears a uro's glow by half that each way
# of where it was registered. Scallops that near the edge get the benefit of no doubt: rework.
SEEN_MARGIN_MM = 5.0
# Registered samples this far (px) outside the fluorescence image still count as on it: float
# rounding puts the image's own first row or column a hair outside it (-1e-6).
SEEN_TOLERANCE_PX = 1.0 / 32.0
# The registration check (FluorescenceInput.check_registration): a uro is dark in the colour frame
# and glows in the channel, so around each uro found the shift between the two (phase correlation
# of the colour's darkness with the glow, in a window REG_WINDOW_MM either side of it) is how far
# the registration is off there. On the hard sets, registered right, it is within 0.5 mm per uro
# (interquartile, 0.5 and 1.0 mm/px) and its median 0.1–0.2 mm; the channel shifted 5 mm reads
# 4.9 mm. Shifted 25 mm or more, the glow leaves the window: 95–96 % of the uros the four-channel
# model found then had no 3x3 patch at REG_MISS_GLOW in theirs, against 0–0.6 % registered right
# (a uro glows 110–240, less under a flap: 14 % of them are under 100 at 1.0 mm/px). Such a uro,
# or one whose window holds only a shape unlike its own (a correlation peak under
# REG_MIN_RESPONSE), is a *miss* when the frame glows elsewhere (a dark frame is the dark
# check's). Over the last REG_UROS uros (at least REG_MIN_UROS): a median shift beyond REG_OFF_MM
# (a uro is 5 mm across at its narrowest, so its glow would lie mostly beside it) or more than
# REG_MISS_SHARE misses make the channel misregistered; it is taken back once fresh uros (the
# samples are dropped at each change) give a median under REG_BACK_MM and fewer than REG_MISS_BACK
# misses. At most REG_PER_FRAME uros a frame, the surest first (about 0.13 ms a frame at 0.5 mm/px).
REG_ALARM = "camera.fluorescence_registration"
REG_WINDOW_MM = 12.0
REG_UROS, REG_MIN_UROS = 40, 15
REG_OFF_MM, REG_BACK_MM = 2.0, 1.0
REG_MISS_SHARE, REG_MISS_BACK = 0.5, 0.25
REG_MISS_GLOW = 60.0
REG_PER_FRAME = 2
REG_MIN_RESPONSE = 0.2
# A partner's count may differ from what the belt's speed says by this much plus the travel itself
# (standing still to twice the speed): only a count no belt could give is refused.
COUNT_SLACK_MM = 3.0


@dataclass(frozen=True)
class Registered:
    """A colour frame's fluorescence image, registered.

    image: (H, W) uint8 on the colour frame's pixels, 0 where the fluorescence camera saw
           nothing.
    seen:  (H, W) bool, the colour pixels it saw; None when it saw all of them. Scallops
           reaching outside it are ``outside_channel`` (``Pipeline.detect(uv_seen=)``).
    seen_share: the share of the colour pixels it saw (what a kept frame's record says).
    """

    image: np.ndarray
    seen: np.ndarray | None = None
    seen_share: float = 1.0


class FluorescenceInput:
    """Pairs and registers the fluorescence channel for one line.

    setup: "second_camera" or "alternate". registration: for a second camera, its
    :class:`~scallop.calibration.fluorescence.Registration` (the calibration file's
    ``fluorescence`` part): ``to_fluorescence`` maps raw colour pixels (N, 2) to the raw
    fluorescence pixels seeing the same belt point at the same instant, on images of
    ``fluo_size``; None for alternate frames (the colour frame's own size and pixels).
    """

    def __init__(
        self,
        setup: str,
        camera: CameraModel,
        belt: Belt,
        max_pair_ms: float,
        alarm_after: int,
        alarms: Alarms,
        registration: Registration | None = None,
    ) -> None:
        if setup not in ("second_camera", "alternate"):
            raise ValueError(f"setup={setup!r}: expected 'second_camera' or 'alternate'")
        if setup == "second_camera" and registration is None:
            raise ValueError(
                "the fluorescence camera has no registration: run 'scallop calibrate fluorescence' "
                "(docs/fluorescence.md) so the calibration file has its 'fluorescence' part"
            )
        second = setup == "second_camera"
        self._to_fluo = registration.to_fluorescence if second else None
        # (w, h) the calibration registered; None: the colour frame's own (alternate frames).
        self._fluo_size = registration.fluo_size if second else None
        self.setup = setup
        self.camera = camera
        self.belt = belt
        self.max_pair_s = float(max_pair_ms) / 1000.0
        self.alarm_after = int(alarm_after)
        self.alarms = alarms
        self.pairs = 0
        self.dropped: Counter[str] = Counter()
        self.in_a_row = 0
        self.last_dt_ms: float | None = None
        self.last_shift_mm: float | None = None
        self.last_glow: float | None = None
        self.dark_frames = 0
        self.last_scallops: int | None = None  # whole scallops in the last analysed frame
        self.dark = False
        self.misregistered = False
        # Per uro measured: the glow's shift from it (mm, image x and y), or None (a miss).
        self._offsets: deque[tuple[float, float] | None] = deque(maxlen=REG_UROS)
        self.offset_mm: tuple[float, float] | None = None  # median of _offsets, once enough
        self.miss_share: float | None = None  # of _offsets: uros with no glow on them
        self._hann: dict[int, np.ndarray] = {}
        self._last_colour: tuple[float, int] | None = None  # (time, belt count) of the last frame
        self._maps: dict[float, tuple[np.ndarray, np.ndarray, np.ndarray | None, float]] = {}
        self._latest: np.ndarray | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ per frame
    def pair(self, frame: Frame) -> Registered | None:
        """The frame's fluorescence image on its pixels, or None when it has no good partner
        (counted and alarmed)."""
        exp = frame.extra.get("fluorescence")
        if exp is None:
            return self._drop("missing", str(frame.extra.get("fluorescence_missing") or "no fluorescence exposure"))
        dt = float(exp.timestamp) - float(frame.timestamp)
        # A microsecond of slack: two stamps a whole window apart differ by it plus float
        # rounding (20 ms from t = 3.6 s is 20.0000000000002 ms), and the window is "at most".
        if not abs(dt) <= self.max_pair_s + 1e-6:
            return self._drop(
                "apart",
                f"frame {frame.index}: its fluorescence exposure is {dt * 1e3:+.1f} ms from it, more than "
                f"camera.fluorescence.max_pair_ms = {self.max_pair_s * 1e3:g}",
            )
        speed = self._belt_speed(frame)
        if exp.encoder is None or frame.encoder is None:
            if self.setup == "alternate":
                # A whole frame interval apart: the belt moved by an amount only counts can tell.
                return self._drop("uncounted", f"frame {frame.index}: its fluorescence exposure has no belt count")
            if speed is None and dt != 0.0:
                return self._drop(
                    "uncounted",
                    f"frame {frame.index}: no belt count on its fluorescence exposure and no belt speed yet",
                )
            # A second camera without counts of its own: the belt's travel over the time between
            # the two stamps, at the speed the colour frames' counts give.
            shift = (speed or 0.0) * dt
        else:
            shift = self.belt.mm(self.belt.counts(exp.encoder) - self.belt.counts(frame.encoder))
            if speed is not None and not abs(shift - speed * dt) <= COUNT_SLACK_MM + abs(speed * dt):
                # A count that puts the belt where no belt could be (a glitch on the partner's
                # latch, a damaged recording) would register the glow beside the uro, or off the
                # frame: anything from standing still to twice the speed passes, a belt
                # stopping or starting included.
                return self._drop(
                    "counts",
                    f"frame {frame.index}: its fluorescence exposure's count puts the belt {shift:+.1f} mm from it, "
                    f"where the belt's speed says {speed * dt:+.1f} mm",
                )
        image = np.asarray(exp.image)
        if image.dtype != np.uint8 or image.ndim != 2:
            return self._drop("corrupt", f"frame {frame.index}: fluorescence image {image.shape} {image.dtype}")
        want = self._fluo_size or (frame.image.shape[1], frame.image.shape[0])
        if (image.shape[1], image.shape[0]) != want:
            # Registered pixel by pixel for one image size: another size (a camera reset to its
            # default mode, a swapped camera) would put the glow beside the uro, not on it.
            where = "the calibration registered" if self._fluo_size else "the colour frame is"
            return self._drop(
                "size",
                f"frame {frame.index}: fluorescence image {image.shape[1]}x{image.shape[0]}, {where} "
                f"{want[0]}x{want[1]}",
            )
        mx, my, seen, seen_share = self._registration(shift, want)
        uv = cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        glow = glow_level(uv)
        with self._lock:
            self.pairs += 1
            self.in_a_row = 0
            self.last_dt_ms = dt * 1e3
            self.last_shift_mm = shift
            self.last_glow = glow
            self._latest = uv
        if not self.dark:
            self.alarms.clear(ALARM)
        return Registered(uv, seen, seen_share)

    def _belt_speed(self, frame: Frame) -> float | None:
        """Belt speed (mm/s, along +x) from this colour frame's count and the last one's."""
        last, self._last_colour = self._last_colour, None
        if frame.encoder is None:
            return None
        now = (float(frame.timestamp), self.belt.counts(frame.encoder))
        self._last_colour = now
        if last is None or now[0] <= last[0]:
            return None
        return self.belt.mm(now[1] - last[1]) / (now[0] - last[0])

    def saw(self, scallops: int) -> None:
        """The analysed frame showed ``scallops`` whole scallops: with enough of them in view
        and no glow, frame after frame, the channel is dark although its pairs come."""
        self.last_scallops = int(scallops)
        if self.last_glow is None:
            return
        if self.last_glow >= GLOW_MIN and scallops >= 1:
            self.dark_frames = 0
            if self.dark:
                self.dark = False
                self.alarms.clear(ALARM)
        elif scallops >= DARK_SCALLOPS:
            self.dark_frames += 1
            if self.dark_frames >= DARK_FRAMES and not self.dark:
                self.dark = True
                self.alarms.raise_(
                    ALARM,
                    "critical",
                    "camera",
                    f"fluorescence channel dark: {self.dark_frames} frames in a row with scallops in view and no uro "
                    f"glowing (brightest patch {self.last_glow:.0f}, a uro glows above {GLOW_MIN:.0f}): the UV light "
                    "is off or weak, or the fluorescence camera or its filter is blocked",
                )

    def check_registration(
        self, image: np.ndarray, uv: np.ndarray, seen: np.ndarray | None, uro_centres_px: np.ndarray, decides: bool
    ) -> None:
        """Whether the glow sits on the uros: ``uro_centres_px`` (N, 2), uros found whole in the
        colour frame ``image`` with its registered channel ``uv`` (``seen``: where it saw). A
        camera knocked on its mount, a calibration of another camera, a second camera registered
        at another height than the uros', or an encoder counting wrong puts the glow beside the
        uros, where a model reading the channel looks for them; nothing else on the line would
        notice. Misregistered, the channel is blind (the line waits; the gate diverts) until the
        glow is back on the uros. ``decides``: the live model reads the channel (else the alarm
        is a warning: only the frames kept for labelling carry it)."""
        h, w = uv.shape
        frame_glows = self.last_glow is not None and self.last_glow >= GLOW_MIN
        took = 0
        for cx, cy in np.round(np.asarray(uro_centres_px, float).reshape(-1, 2)):
            if took >= REG_PER_FRAME:
                break
            if not (np.isfinite(cx) and np.isfinite(cy)):
                continue
            # The scale where the uro lies: a tilted camera's differs across the view.
            mm = float(self.camera.mm_per_px_at([[cx, cy]])[0])
            r = int(round(REG_WINDOW_MM / mm))
            x0, y0 = int(cx) - r, int(cy) - r
            if x0 < 0 or y0 < 0 or x0 + 2 * r > w or y0 + 2 * r > h:
                continue
            box = (slice(y0, y0 + 2 * r), slice(x0, x0 + 2 * r))
            if seen is not None and not seen[box].all():
                continue
            glow = uv[box]
            if cv2.blur(glow, (3, 3)).max() < REG_MISS_GLOW:
                if frame_glows:
                    took += 1
                    self._offsets.append(None)
                continue
            took += 1
            dark = 255.0 - cv2.cvtColor(image[box], cv2.COLOR_BGR2GRAY).astype(np.float32)
            glow = glow.astype(np.float32)
            hann = self._hann.get(r)
            if hann is None:
                hann = self._hann[r] = cv2.createHanningWindow((2 * r, 2 * r), cv2.CV_32F)
            (dx, dy), response = cv2.phaseCorrelate(dark - dark.mean(), glow - glow.mean(), hann)
            self._offsets.append((dx * mm, dy * mm) if response >= REG_MIN_RESPONSE else None)
        n = len(self._offsets)
        if n < REG_MIN_UROS:
            return
        found = [o for o in self._offsets if o is not None]
        misses = (n - len(found)) / n
        median = tuple(float(v) for v in np.median(np.asarray(found), axis=0)) if found else None
        off = math.hypot(*median) if median is not None else math.inf
        with self._lock:
            self.offset_mm = median
            self.miss_share = misses
        if not self.misregistered and (off > REG_OFF_MM or misses > REG_MISS_SHARE):
            self.misregistered = True
            self._offsets.clear()  # taken back on fresh uros only
            where = (
                f"the glow lies {off:.1f} mm from the uros the colour camera sees (median of the last {n} uros; "
                f"{REG_OFF_MM:g} mm is the limit)"
                if off > REG_OFF_MM and math.isfinite(off)
                else f"{100 * misses:.0f} % of the last {n} uros the colour camera sees have no glow on them, "
                "while the frame glows elsewhere"
            )
            if self.setup == "second_camera":
                causes = (
                    "the fluorescence camera has moved on its mount, the calibration is not this camera's, or "
                    "camera.fluorescence.register_height_mm is not the uros' height"
                )
                fix = "'scallop calibrate fluorescence'"
            else:  # one camera: nothing between the two exposures but the belt's travel
                causes = (
                    "the belt travel between the colour and the UV exposure is off: the encoder's counts, "
                    "or the counts latched at the two exposures"
                )
                fix = "check the encoder ('scallop calibrate encoder') and the strobe's timing"
            if decides:
                severity, code, then = "critical", "", "Scallops go to rework until it is put right"
            else:
                severity, code = "warning", "camera.fluorescence_registration_colour_only"
                then = "The live model reads colour only; the fluorescence frames kept for labelling are off"
            self.alarms.raise_(
                REG_ALARM,
                severity,
                "camera",
                f"fluorescence registration off: {where}: {causes}. {then}: {fix}",
                code=code,
            )
        elif self.misregistered and off < REG_BACK_MM and misses < REG_MISS_BACK:
            self.misregistered = False
            self._offsets.clear()
            self.alarms.clear(REG_ALARM)

    @property
    def blind(self) -> bool:
        """A model that reads the channel cannot vouch for this moment: the last frame had no
        good pair, the channel is dark, or its glow is not on the uros."""
        return self.in_a_row > 0 or self.dark or self.misregistered

    def _drop(self, why: str, text: str) -> None:
        with self._lock:
            self.dropped[why] += 1
            self.in_a_row += 1
        if self.in_a_row >= self.alarm_after:
            self.alarms.raise_(
                ALARM,
                "critical",
                "camera",
                f"fluorescence channel lost: {self.in_a_row} frames in a row without it ({text})",
            )
        elif not self.alarms.is_active(ALARM):
            self.alarms.raise_(ALARM, "warning", "camera", f"a frame came without its fluorescence image: {text}")
        return None

    @property
    def lost(self) -> bool:
        """Pairs have stopped coming (``alarm_after`` dropped in a row), or the channel is dark or
        misregistered."""
        return self.in_a_row >= self.alarm_after or self.dark or self.misregistered

    def _registration(
        self, shift_mm: float, fluo_wh: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, float]:
        """The remap maps for a belt travel of ``shift_mm`` between the two exposures, the
        colour pixels whose sample lies on the fluorescence image (``fluo_wh``; None when all
        do) and their share. A second camera aimed a little elsewhere, or the strip the belt brought in between
        alternate frames, is not seen."""
        key = round(shift_mm / SHIFT_STEP_MM) * SHIFT_STEP_MM
        hit = self._maps.get(key)
        if hit is None:
            cam, to_fluo = self.camera, self._to_fluo

            def colour_to_fluo(px: np.ndarray) -> np.ndarray:
                # The material a colour pixel saw was ``key`` mm further down the belt (+x, the
                # calibrated belt frame's travel) at the fluorescence exposure.
                xy = cam.pixel_to_belt(px)
                xy[:, 0] += key
                out = cam.project_belt(xy)
                if to_fluo is not None:
                    out = to_fluo(out)
                    # Off the fluorescence camera's view: off its image, so remap fills in 0.
                    out[~np.isfinite(out).all(axis=1)] = -1e6
                return out

            if len(self._maps) >= MAX_MAPS:  # a belt changing speed: a new shift per frame
                self._maps.pop(next(iter(self._maps)))
            mx, my = interpolated_maps(cam.image_size, colour_to_fluo)
            t = SEEN_TOLERANCE_PX
            fw, fh = fluo_wh[0] - 1 + t, fluo_wh[1] - 1 + t
            seen = (mx >= -t) & (mx <= fw) & (my >= -t) & (my <= fh)
            share = 1.0
            if seen.all():
                seen = None
            else:
                # Eroded away from the unseen part only: beyond the frame's own edge is no
                # blind part (erode's default border leaves the edge as it is).
                r = int(np.ceil(SEEN_MARGIN_MM / cam.mm_per_px_center()))
                disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
                seen = cv2.erode(seen.view(np.uint8), disk).view(bool)
                share = float(np.mean(seen))
            hit = self._maps[key] = (mx, my, seen, share)
        return hit

    # ------------------------------------------------------------------ the screen
    def latest(self) -> np.ndarray | None:
        """The newest registered fluorescence image (for the engineer's view of the channel)."""
        with self._lock:
            return self._latest

    def latest_jpeg(self) -> bytes | None:
        """The newest registered image as JPEG, grey levels as measured."""
        img = self.latest()
        if img is None:
            return None
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
        return buf.tobytes() if ok else None

    def status(self) -> dict:
        """Figures an engineer reads to tell the channel is healthy (the web thread asks: the
        frame thread's counters are read under the lock)."""
        with self._lock:
            out = {
                "setup": self.setup,
                "pairs": self.pairs,
                "dropped": dict(self.dropped),
                "dropped_in_a_row": self.in_a_row,
                "lost": self.lost,
                "dark": self.dark,
                "misregistered": self.misregistered,
                # Where the glow lies from the uros the colour camera sees (mm, image x and y).
                "registration_offset_mm": None
                if self.offset_mm is None
                else [round(self.offset_mm[0], 2), round(self.offset_mm[1], 2)],
                "registration_limit_mm": REG_OFF_MM,
                "registration_misses": None if self.miss_share is None else round(self.miss_share, 3),
                "registration_needs_uros": REG_MIN_UROS,
                "last_dt_ms": None if self.last_dt_ms is None else round(self.last_dt_ms, 2),
                "last_shift_mm": None if self.last_shift_mm is None else round(self.last_shift_mm, 2),
                # The healthy limits, so the screen judges the levels by the line's own.
                "belt_dark_max": BELT_DARK_MAX,
                "glow_min": GLOW_MIN,
                # No glow says nothing without scallops to glow: the screen judges it only with
                # as many in view as the line's own dark check needs.
                "scallops_in_view": self.last_scallops,
                "glow_needs_scallops": DARK_SCALLOPS,
            }
            img, glow = self._latest, self.last_glow
        if img is not None:
            # The belt fills most of the view: its level is the median. The glow: see glow_level.
            out["belt_level"] = float(np.median(_half(img)[::2, ::2]))
            out["glow_level"] = glow
        return out


def glow_level(img: np.ndarray) -> float:
    """The brightest 3 mm patch of a registered fluorescence image (half resolution, 3×3 mean:
    the sensor's noise averaged out, a uro's 4–8 mm width kept). Uros cover well under 1 % of
    the view, so no percentile of the image is theirs. A healthy channel: uros at 110–240."""
    return float(cv2.blur(_half(img), (3, 3)).max())


def _half(img: np.ndarray) -> np.ndarray:
    return cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)


NEEDS_CHANNEL = (
    "the model needs the fluorescence channel, which is not configured: set up [camera.fluorescence] "
    "(docs/fluorescence.md) or run a colour-only model"
)


def check_finder_sees(pipeline, registration: Registration | None) -> None:
    """ValueError when ``pipeline``'s finder reads the channel and a second camera
    (``registration``) does not see the whole colour frame. Such a finder looks for scallops by
    their glow too: where the camera does not see, one could go unfound, so undecided, and
    pass the reject gate unchecked (``outside_channel`` covers only scallops found). Alternate
    frames (no registration) miss only the strip the belt brings in at the downstream edge, of
    scallops whole in the frames before."""
    if registration is None or not pipeline.model.info.finder.takes_uv:
        return
    share = float(np.mean(registration.overlap()[1]))
    if share < 1.0:
        raise ValueError(
            f"its finder reads the fluorescence channel, and the fluorescence camera sees {100 * share:.1f} % of "
            "the colour frame: a scallop elsewhere could go unfound and pass unchecked. Use a model whose finder "
            "reads colour only (the shipped four-channel model's does), or aim the camera to see the whole view"
        )


def open_channel(section, backend, pipeline, alarms: Alarms) -> FluorescenceInput | None:
    """The line's fluorescence input for ``[camera.fluorescence]`` (None when it is "none");
    a model that needs the channel on a line without one is refused at the start, and so is one
    whose finder reads it where the camera does not see the whole frame (:func:`check_finder_sees`)."""
    if not section.enabled:
        if pipeline.takes_uv:
            raise ConfigError(NEEDS_CHANNEL)
        return None
    try:
        check_finder_sees(pipeline, backend.fluorescence_registration)
    except ValueError as e:
        raise ConfigError(f"the live model: {e}") from None
    try:
        return FluorescenceInput(
            section.setup,
            backend.camera_model,
            backend.belt,
            section.max_pair_ms,
            section.alarm_after,
            alarms,
            registration=backend.fluorescence_registration,
        )
    except ValueError as e:
        raise ConfigError(f"camera.fluorescence: {e}") from None
