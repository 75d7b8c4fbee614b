"""Validated configuration of the simulated line.

Every section checks its own ranges in ``__post_init__`` and raises ``ValueError`` naming
the key (``speed_mm_s=900 is out of range: allowed 0..1000``); :func:`scallop.app.config.build`
adds the full key path (``sim.belt.speed_mm_s``) when these are embedded in the line's TOML.
Field types are plain (int, float, bool, str, Literal, tuples, lists, nested dataclasses)
so the TOML loader can build them.

The defaults describe a sensible line: a 1280×720 camera at 0.5 mm/px over a white belt
running 300 mm/s, 0.6 scallops per second (about 90 % of one arm's capacity), an encoder with 10 counts per mm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from scallop.calibration.camera_model import CameraModel
from scallop.errors import check_pair, check_range, check_share


def check_optics(cfg) -> None:
    """A simulated camera's tilt, yaw, lens distortion and focal length (the colour camera's
    and the fluorescence camera's alike)."""
    check_range("tilt_deg", cfg.tilt_deg, -20.0, 20.0)
    check_range("yaw_deg", cfg.yaw_deg, -10.0, 10.0)
    if len(cfg.distortion) != 5:
        raise ValueError(f"distortion={list(cfg.distortion)!r}: expected 5 values (k1 k2 p1 p2 k3)")
    for name, v in zip(("k1", "k2", "p1", "p2", "k3"), cfg.distortion):
        check_range(f"distortion.{name}", v, -1.0, 1.0)
    if cfg.focal_px:
        check_range("focal_px", cfg.focal_px, 100.0, 20000.0, " (0 = automatic)")


def camera_looking_down(cfg) -> CameraModel:
    """A simulated camera's ground-truth model, looking down at the belt from its place (the
    colour camera's ``[sim.camera]`` and the fluorescence camera's alike)."""
    return CameraModel.looking_down(
        image_size=(cfg.width, cfg.height),
        mm_per_px=cfg.mm_per_px,
        tilt_deg=cfg.tilt_deg,
        dist=tuple(cfg.distortion),
        focal_px=cfg.focal_px or None,
        center_xy_mm=(cfg.center_x_mm, cfg.center_y_mm),
        yaw_deg=cfg.yaw_deg,
    )


BeltColour = Literal["white", "blue", "grey"]


@dataclass
class SpeedSegment:
    """One piece of the belt's speed profile: ``duration_s`` at ``speed_mm_s``, ramping
    linearly to ``end_speed_mm_s`` when given (a ramp); speed 0 is a stop."""

    duration_s: float
    speed_mm_s: float
    end_speed_mm_s: float | None = None

    def __post_init__(self) -> None:
        check_range("duration_s", self.duration_s, 1e-3, 1e6)
        check_range("speed_mm_s", self.speed_mm_s, 0.0, 1000.0)
        if self.end_speed_mm_s is not None:
            check_range("end_speed_mm_s", self.end_speed_mm_s, 0.0, 1000.0)

    @property
    def end_speed(self) -> float:
        return self.speed_mm_s if self.end_speed_mm_s is None else self.end_speed_mm_s


@dataclass
class BeltConfig:
    """speed_mm_s: the nominal speed (and the whole profile when ``profile`` is empty);
    arrivals are spaced for this speed.
    profile: speed segments played from the world's start; after the last one the belt
    keeps the last speed, or the profile starts again when ``repeat_profile``.
    keep_downstream_mm: scallops stay in the world this far past the camera's view, so
    arms downstream can still pick them."""

    speed_mm_s: float = 300.0
    profile: list[SpeedSegment] = field(default_factory=list)
    repeat_profile: bool = False
    keep_downstream_mm: float = 2000.0

    def __post_init__(self) -> None:
        check_range("speed_mm_s", self.speed_mm_s, 0.0, 1000.0)
        check_range("keep_downstream_mm", self.keep_downstream_mm, 0.0, 100000.0)
        for i, seg in enumerate(self.profile):
            if not isinstance(seg, SpeedSegment):
                raise ValueError(f"profile[{i}]: expected a speed segment, got {type(seg).__name__}")


@dataclass
class EncoderConfig:
    """count = round(direction · travel_mm · counts_per_mm) + offset."""

    counts_per_mm: float = 10.0
    direction: int = 1
    offset: int = 0

    def __post_init__(self) -> None:
        check_range("counts_per_mm", self.counts_per_mm, 0.01, 10000.0)
        if self.direction not in (1, -1):
            raise ValueError(f"direction={self.direction!r} is not allowed: choose 1 or -1")
        check_range("offset", self.offset, -(2**31), 2**31 - 1)


@dataclass
class SimCameraConfig:
    """The simulated camera and its trigger.

    mm_per_px: scale on the belt at the image centre (sets the mounting height).
    tilt_deg / yaw_deg: camera pitch about the across-belt axis / turn about the vertical.
    distortion: OpenCV k1 k2 p1 p2 k3.
    focal_px: 0 = 1.1 × width.
    center_x_mm / center_y_mm: where the optical axis meets the belt (belt frame).
    trigger: "encoder" = an exposure every ``trigger_mm`` of travel (0 = so that each
    scallop is seen about 3.5 times while it crosses the view); "fps" = free running.
    max_interval_s: with a stopped belt the encoder trigger falls back to this interval.
    exposure_ms: motion blur is belt speed × exposure (capped at 3 px).
    read_timeout_s: how long read() waits on a stalled camera before raising.
    """

    width: int = 1280
    height: int = 720
    mm_per_px: float = 0.5
    tilt_deg: float = 0.0
    yaw_deg: float = 0.0
    distortion: tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0)
    focal_px: float = 0.0
    center_x_mm: float = 0.0
    center_y_mm: float = 0.0
    trigger: Literal["encoder", "fps"] = "encoder"
    trigger_mm: float = 0.0
    fps: float = 10.0
    max_interval_s: float = 1.0
    exposure_ms: float = 1.0
    read_timeout_s: float = 1.0

    def __post_init__(self) -> None:
        check_range("width", self.width, 640, 1920)
        check_range("height", self.height, 480, 1080)
        check_range("mm_per_px", self.mm_per_px, 0.3, 1.0)
        check_optics(self)
        if self.trigger not in ("encoder", "fps"):
            raise ValueError(f"trigger={self.trigger!r} is not allowed: choose 'encoder' or 'fps'")
        if self.trigger_mm:
            check_range("trigger_mm", self.trigger_mm, 1.0, 5000.0, " (0 = automatic)")
        check_range("fps", self.fps, 0.1, 200.0)
        check_range("max_interval_s", self.max_interval_s, 0.01, 60.0)
        check_range("exposure_ms", self.exposure_ms, 0.0, 20.0)
        check_range("read_timeout_s", self.read_timeout_s, 0.01, 600.0)


@dataclass
class ArrivalConfig:
    """How scallops land on the belt upstream of the view.

    rate_per_s: mean arrivals per second at the nominal belt speed; they are spaced along
    the belt (speed / rate mm apart on average), so a stopped belt receives none.
    pattern: "steady" (irregular spacing ± jitter), "bursts" (groups of ``burst_size``
    close together), "gaps" (steady with long empty stretches, ``gap_share`` of the belt).
    touch_share: share of arrivals dropped touching or overlapping the one before.
    max_overlap: the most of the smaller scallop's area another may cover.
    lane_mm: across-belt range of scallop centres (belt frame y).
    prefill: the view is already populated at the start.
    """

    rate_per_s: float = 0.6
    pattern: Literal["steady", "bursts", "gaps"] = "steady"
    jitter: float = 0.5
    burst_size: tuple[int, int] = (2, 4)
    gap_share: float = 0.3
    touch_share: float = 0.1
    max_overlap: float = 0.1
    lane_mm: tuple[float, float] = (-130.0, 130.0)
    prefill: bool = True

    def __post_init__(self) -> None:
        check_range("rate_per_s", self.rate_per_s, 0.0, 20.0)
        if self.pattern not in ("steady", "bursts", "gaps"):
            raise ValueError(f"pattern={self.pattern!r} is not allowed: choose 'steady', 'bursts' or 'gaps'")
        check_share("jitter", self.jitter)
        check_pair("burst_size", self.burst_size, 1, 20)
        check_range("gap_share", self.gap_share, 0.0, 0.9)
        check_share("touch_share", self.touch_share)
        check_range("max_overlap", self.max_overlap, 0.0, 0.3)
        check_pair("lane_mm", self.lane_mm, -1000.0, 1000.0)


@dataclass
class ProductConfig:
    """The product mix. Shares are per scallop (0..1)."""

    diameter_mm: tuple[float, float] = (40.0, 75.0)
    male_share: float = 0.45
    upside_down_share: float = 0.07
    no_uro_share: float = 0.02
    gill_share: float = 0.3
    hidden_uro_share: float = 0.15
    eye_dots: tuple[int, int] = (10, 30)

    def __post_init__(self) -> None:
        check_pair("diameter_mm", self.diameter_mm, 30.0, 90.0)
        for name in ("male_share", "upside_down_share", "no_uro_share", "gill_share", "hidden_uro_share"):
            check_share(name, getattr(self, name))
        check_pair("eye_dots", self.eye_dots, 0, 60)


@dataclass
class LookConfig:
    """How the scene looks (see LookParams in scallop.sim.scene for each field's meaning).

    randomise: draw the whole look from the appearance envelope (seeded) instead of the
    fields below. drift_*: slow sinusoidal drift over ``drift_period_s`` of the lighting
    level (a share, 0.1 = ±10 %) and colour temperature (K), for robustness runs.
    jpeg_quality: 100 = frames are not JPEG-compressed.
    """

    randomise: bool = False
    belt_colour: BeltColour = "white"
    hinge_pitch_mm: float = 38.1
    water_film: float = 0.3
    droplets_per_dm2: float = 1.5
    brightness: float = 1.0
    color_temp_k: float = 5000.0
    vignetting: float = 0.15
    gradient: float = 0.05
    noise_sigma: float = 2.0
    jpeg_quality: int = 100
    drift_brightness: float = 0.0
    drift_color_temp_k: float = 0.0
    drift_period_s: float = 300.0

    def __post_init__(self) -> None:
        if self.belt_colour not in ("white", "blue", "grey"):
            raise ValueError(f"belt_colour={self.belt_colour!r} is not allowed: choose 'white', 'blue' or 'grey'")
        check_range("hinge_pitch_mm", self.hinge_pitch_mm, 25.0, 50.0)
        check_share("water_film", self.water_film)
        check_range("droplets_per_dm2", self.droplets_per_dm2, 0.0, 20.0)
        check_range("brightness", self.brightness, 0.75, 1.25)
        check_range("color_temp_k", self.color_temp_k, 4000.0, 6500.0)
        check_range("vignetting", self.vignetting, 0.0, 0.4)
        check_range("gradient", self.gradient, 0.0, 0.25)
        check_range("noise_sigma", self.noise_sigma, 0.0, 8.0)
        check_range("jpeg_quality", self.jpeg_quality, 50, 100)
        check_range("drift_brightness", self.drift_brightness, 0.0, 0.25)
        check_range("drift_color_temp_k", self.drift_color_temp_k, 0.0, 1250.0)
        check_range("drift_period_s", self.drift_period_s, 1.0, 1e6)


FluorescenceSetup = Literal["none", "second_camera", "alternate"]


@dataclass
class FluorescenceConfig:
    """The second camera channel: a fluorescence image of the scene beside every colour frame
    (shared/spec/scallop-appearance.md, "Second channel: fluorescence"; docs/fluorescence.md).

    setup: "none" (no channel: the default, nothing else changes), "second_camera" (a
    monochrome camera of its own beside the colour camera, exposed with it) or "alternate"
    (the colour camera itself, strobed: the fluorescence exposure comes ``frame_interval_ms``
    after the colour one, the belt having moved meanwhile).

    With the channel on, its physical quantities are required, never defaulted:
    exposure_ratio: its exposure over the colour camera's ``exposure_ms`` (2–4): its blur.
    noise_sigma: its sensor noise σ in grey levels (3–8).
    second_camera: ``width`` × ``height``, ``mm_per_px`` (its resolution on the belt, 0.5–1.5×
    the colour camera's), ``center_x_mm`` / ``center_y_mm`` (where its optical axis meets the
    belt, belt frame: the viewpoint), and as for the colour camera ``tilt_deg``, ``yaw_deg``,
    ``distortion`` (k1 k2 p1 p2 k3) and ``focal_px`` (0 = 1.1 × width).
    alternate: ``frame_interval_ms``, from the colour exposure's start to the fluorescence one's.
    """

    setup: FluorescenceSetup = "none"
    exposure_ratio: float | None = None
    noise_sigma: float | None = None
    width: int | None = None
    height: int | None = None
    mm_per_px: float | None = None
    center_x_mm: float | None = None
    center_y_mm: float | None = None
    tilt_deg: float = 0.0
    yaw_deg: float = 0.0
    distortion: tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0)
    focal_px: float = 0.0
    frame_interval_ms: float | None = None

    # What each setting allows, and which set-up needs it.
    _RANGES = {
        "exposure_ratio": (2.0, 4.0),
        "noise_sigma": (3.0, 8.0),
        "width": (320, 1920),
        "height": (240, 1080),
        "mm_per_px": (0.2, 2.0),
        "center_x_mm": (-1000.0, 1000.0),
        "center_y_mm": (-1000.0, 1000.0),
        "frame_interval_ms": (1.0, 1000.0),
    }
    _NEEDS = {
        "second_camera": (
            "exposure_ratio",
            "noise_sigma",
            "width",
            "height",
            "mm_per_px",
            "center_x_mm",
            "center_y_mm",
        ),
        "alternate": ("exposure_ratio", "noise_sigma", "frame_interval_ms"),
    }

    def __post_init__(self) -> None:
        if self.setup not in ("none", "second_camera", "alternate"):
            raise ValueError(f"setup={self.setup!r} is not allowed: choose 'none', 'second_camera' or 'alternate'")
        mine = self._NEEDS.get(self.setup, ())
        for name, (lo, hi) in self._RANGES.items():
            value = getattr(self, name)
            if value is None:
                if name in mine:
                    raise ValueError(f"{name} is required with setup={self.setup!r}: allowed {lo:g}..{hi:g}")
                continue
            check_range(name, value, lo, hi)
            if self.setup != "none" and name not in mine:
                # Another set-up's key would be ignored without a word: say so. With "none" every
                # key may stay, so the channel can be switched off and on again.
                other = next(k for k, names in self._NEEDS.items() if name in names)
                raise ValueError(f"{name}={value!r} is a setting of setup={other!r}, not of setup={self.setup!r}")
        check_optics(self)

    @property
    def enabled(self) -> bool:
        return self.setup != "none"


@dataclass
class SimConfig:
    belt: BeltConfig = field(default_factory=BeltConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    camera: SimCameraConfig = field(default_factory=SimCameraConfig)
    arrivals: ArrivalConfig = field(default_factory=ArrivalConfig)
    product: ProductConfig = field(default_factory=ProductConfig)
    look: LookConfig = field(default_factory=LookConfig)
    fluorescence: FluorescenceConfig = field(default_factory=FluorescenceConfig)

    def __post_init__(self) -> None:
        if self.arrivals.rate_per_s > 0 and self.belt.speed_mm_s <= 0:
            raise ValueError(
                f"arrivals.rate_per_s={self.arrivals.rate_per_s} needs belt.speed_mm_s > 0 "
                f"(arrivals are spaced along the belt at speed / rate)"
            )
        self._check_fluorescence()

    def _check_fluorescence(self) -> None:
        """What the channel's set-up must agree on with the colour camera."""
        fl, cam = self.fluorescence, self.camera
        if fl.setup == "second_camera":
            # Resolution on the belt (pixels per mm) 0.5–1.5× the colour camera's.
            ratio = cam.mm_per_px / fl.mm_per_px
            if not 0.5 <= ratio <= 1.5:
                raise ValueError(
                    f"fluorescence.mm_per_px={fl.mm_per_px:g} gives {ratio:.2f}× the colour camera's resolution "
                    f"(camera.mm_per_px={cam.mm_per_px:g}): allowed 0.5..1.5×, so "
                    f"{cam.mm_per_px / 1.5:.3g}..{cam.mm_per_px / 0.5:.3g} mm/px"
                )
        if fl.setup == "alternate":
            # The two exposures follow each other: the colour one must be over before the
            # fluorescence one starts, and the pair must be done before the next trigger.
            if fl.frame_interval_ms <= cam.exposure_ms:
                raise ValueError(
                    f"fluorescence.frame_interval_ms={fl.frame_interval_ms:g} must be longer than "
                    f"camera.exposure_ms={cam.exposure_ms:g} (the colour exposure comes first)"
                )
            if cam.trigger == "fps" and fl.frame_interval_ms >= 1000.0 / cam.fps:
                raise ValueError(
                    f"fluorescence.frame_interval_ms={fl.frame_interval_ms:g} must be shorter than the colour "
                    f"frame period {1000.0 / cam.fps:g} ms (camera.fps={cam.fps:g})"
                )
