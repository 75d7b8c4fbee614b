"""The line's configuration: one TOML file loaded into validated dataclasses.

Every section is a dataclass that checks its own ranges in ``__post_init__`` (raising
``ValueError`` with ``field=value … allowed …``); :func:`build` adds what a dataclass
cannot see by itself: unknown keys, wrong types, and the full key path in the message.
With no file at all the defaults describe the built-in simulator line.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from scallop.app.opcua import OpcUaSection
from scallop.errors import ConfigError, DataError, check_number, check_range
from scallop.robot.belt import ModbusEncoderConfig
from scallop.robot.config import ArmConfig
from scallop.robot.plc import PlcConfig
from scallop.sim.config import SimConfig
from scallop.vision.genicam import AravisCameraConfig
from scallop.vision.pipeline import PipelineConfig


def _describe(tp: Any) -> str:
    if isinstance(tp, type):
        return {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}.get(
            tp.__name__, tp.__name__
        )
    return str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}={value!r}: expected {_describe(tp)}")
    if origin is typing.Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not allowed: choose one of {', '.join(map(repr, allowed))}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table ([{key}]), got {type(value).__name__}")
        return build(tp, value, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r}: expected a list")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}={value!r}: expected a list of {len(args)} values")
            return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        items = [_convert(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={value!r}: expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}={value!r}: expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r}: expected a string")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{key}={value!r}: expected {_describe(tp)}")
    return value


def build(cls: type, data: dict, path: str = "") -> Any:
    """Construct dataclass ``cls`` from a parsed TOML table, refusing unknown keys and
    wrong types, and naming the full key (``arms[1].port``) in every error."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a table")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")}
    kwargs = {}
    fractional: tuple[str, ConfigError] | None = None
    for key, value in data.items():
        full = f"{path}.{key}" if path else key
        if key not in fields:
            raise ConfigError(f"{full}: unknown key; allowed here: {', '.join(sorted(fields))}")
        try:
            kwargs[key] = _convert(value, hints[key], full)
        except ConfigError as e:
            if fractional is not None or _number_kind(hints[key]) is None:
                raise
            # 2.5 or nan for an integer, a string for a number: its range is said below, if the class has one
            fractional = (key, e)
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        if len(missing) == 1 or not path:
            where = f"{path}." if path else ""
            raise ConfigError(f"{', '.join(where + n for n in missing)}: required, not given")
        # Several: named once under their table, so a caller that puts its own table in front of
        # the message (a scenario's line.) names them all right.
        raise ConfigError(f"{path}: {', '.join(missing)} required, not given")
    if fractional is not None:
        # Never kept: the class's own check of the key is asked only for the allowed range its
        # message gives. With the value itself (nan: "not a finite number, allowed 1..1000"),
        # else with nan (2.5 lies in the range of a check that does not ask for an integer).
        # A class with no check of the key, or failing on another key first, leaves the plain
        # type error.
        key, err = fractional
        where = f"{path}: " if path else ""
        given = data[key]
        # The value itself only where it is a number (2.5 for an integer): a class's check
        # handed a string would word the string as a number it refuses.
        for probe in (
            (given, math.nan) if isinstance(given, (int, float)) and not isinstance(given, bool) else (math.nan,)
        ):
            try:
                cls(**kwargs, **{key: probe})
            except Exception as e:  # whatever the class's own check raises, its words are only read
                text = str(e)
                if probe is given and f"{key}={given!r}" in text:
                    raise ConfigError(f"{where}{text}") from None
                finite = f"{key}=nan is not a finite number"
                at = text.find(finite)
                if probe is not given and at >= 0 and len(text) > at + len(finite):
                    said = f"{key}={given!r}: expected {_number_kind(hints[key])}{text[at + len(finite) :]}"
                    raise ConfigError(f"{where}{text[:at]}{said}") from None
        raise err
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:  # ConfigError too: __post_init__ knows the key, not its path
        raise ConfigError(f"{path + ': ' if path else ''}{e}") from None


def _number_kind(tp: Any) -> str | None:
    """What a numeric field expects, in words ("an integer", "a number"); None for any other."""
    return "an integer" if _takes(tp, int) else "a number" if _takes(tp, float) else None


def _takes(tp: Any, kind: type) -> bool:
    """``kind``, or an optional one (``kind | None``)."""
    return tp is kind or (get_origin(tp) in (typing.Union, types.UnionType) and kind in get_args(tp))


def to_dict(obj: Any) -> Any:
    """Dataclass → plain TOML/JSON-friendly data (the inverse of :func:`build`)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if not f.name.startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def load_toml(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir():
        raise DataError(f"{p}: is a folder, not a configuration file (name the .toml file in it)")
    if not p.is_file():
        raise DataError(f"{p}: no such configuration file")
    try:
        with p.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a text file (expected TOML)") from None
    except OSError as e:  # no permission, an I/O error: in words, not as [Errno 13]
        raise DataError(f"{p}: cannot be read ({e.strerror or e}); check its permissions and disk") from None


# ---------------------------------------------------------------------------- the line


@dataclass
class EncoderSection:
    """[camera.encoder]: where a real camera's frames get their belt encoder count.

    source: "none" (frames carry no count: the line refuses them) or "modbus" (a counter
    register read over Modbus TCP, interpolated at each exposure). The other keys are those
    of :class:`scallop.robot.belt.ModbusEncoderConfig` (same defaults, same checks) and
    are only used with source = "modbus"; see docs/configuration.md.
    """

    source: Literal["none", "modbus"] = "none"
    host: str = ""
    port: int = 502
    device_id: int = 1
    address: int = 0
    register: Literal["input", "holding"] = "holding"
    words: int = 2
    word_order: Literal["big", "little"] = "big"
    signed: bool = False
    timeout_s: float = 0.2
    sample_hz: float = 200.0
    latency_s: float = 0.0
    buffer_s: float = 2.0

    def __post_init__(self) -> None:
        if self.source not in ("none", "modbus"):
            raise ValueError(f"source={self.source!r} is not allowed: choose one of 'none', 'modbus'")
        if self.source == "modbus":
            self.modbus_config()

    def modbus_config(self) -> ModbusEncoderConfig:
        """The encoder's own config (raises ValueError naming a bad key)."""
        return ModbusEncoderConfig(
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "source"}
        )


@dataclass
class FluorescenceSection:
    """The fluorescence channel ([camera.fluorescence], docs/fluorescence.md).

    setup: "none", "second_camera" (a second, monochrome camera on the same trigger: ``source``
    names it as ``camera.source`` names the colour one; its registration onto the colour
    frame is the calibration file's ``fluorescence`` part) or "alternate" (the colour camera
    itself, the white and UV lights strobed in turn, each pair told apart by brightness). With
    the simulator (``camera.source = "sim"``) it must name the set-up ``[sim.fluorescence]``
    simulates, and the frames come from it.
    max_pair_ms: a colour and a fluorescence exposure further apart in time are not a pair (the
    frame is analysed without the channel, or skipped when the model needs it).
    alarm_after: pairs dropped in a row before the channel is alarmed as lost.
    register_height_mm: second camera only, required: the height above the belt at which its
    image is registered onto the colour frame. The two cameras see a point above the board's
    plane from different places (parallax, printed by ``scallop calibrate fluorescence``): give
    the height of the scallops' tops, where the uro lies (0 for the simulator's flat scene).
    Another height than the board's needs the calibration's pose of the fluorescence camera."""

    setup: Literal["none", "second_camera", "alternate"] = "none"
    source: str = ""
    max_pair_ms: float = 0.0
    alarm_after: int = 0
    register_height_mm: float = -1.0  # -1: not given

    def __post_init__(self) -> None:
        if self.setup not in ("none", "second_camera", "alternate"):
            raise ValueError(f"setup={self.setup!r} is not allowed: choose one of 'none', 'second_camera', 'alternate'")
        if self.setup == "none":
            for key, unset in (("source", ""), ("max_pair_ms", 0.0), ("alarm_after", 0), ("register_height_mm", -1.0)):
                if getattr(self, key) != unset:
                    raise ValueError(f"{key}={getattr(self, key)!r}: it has no use with setup = 'none'")
            return
        # Physical and safety settings: given, never defaulted.
        second = self.setup == "second_camera"
        if self.max_pair_ms == 0.0:
            raise ValueError(
                f"max_pair_ms is required with a fluorescence set-up (allowed {'0.1–8' if second else '0.1–100'} ms)"
            )
        if second:
            # Matched by time: a window under half the shortest frame period (60 fps: 16.7 ms)
            # holds at most one of its frames, so a frame of another moment cannot be taken.
            check_range("max_pair_ms", self.max_pair_ms, 0.1, 8.0, " for a second camera on the same trigger")
        else:
            check_range("max_pair_ms", self.max_pair_ms, 0.1, 100.0)
        if self.alarm_after == 0:
            raise ValueError("alarm_after is required with a fluorescence set-up (allowed 1–1000 pairs)")
        check_range("alarm_after", self.alarm_after, 1, 1000)
        if second:
            if not self.source.strip():
                raise ValueError("source is required with setup = 'second_camera': the fluorescence camera's device")
            if self.register_height_mm == -1.0:
                raise ValueError(
                    "register_height_mm is required with setup = 'second_camera' (allowed 0–60 mm): the height of "
                    "the scallops' tops above the belt, where the two cameras' images are made to agree"
                )
            check_range("register_height_mm", self.register_height_mm, 0.0, 60.0)
        else:
            if self.source:
                raise ValueError(f"source={self.source!r}: setup = 'alternate' uses the colour camera itself")
            if self.register_height_mm != -1.0:
                raise ValueError(
                    f"register_height_mm={self.register_height_mm!r}: setup = 'alternate' reads the colour camera's "
                    "own pixels, which need no registration between cameras"
                )

    @property
    def enabled(self) -> bool:
        return self.setup != "none"


@dataclass
class CameraSection:
    """source: "sim" for the built-in simulator, "genicam" for a GenICam camera through Aravis
    ([camera.genicam], docs/cameras.md), a recording folder (``scallop capture``), otherwise
    what OpenCV opens: a device index ("0"), a video file, an RTSP/HTTP URL or a folder of
    images. encoder: where the frames' belt encoder counts come from on a real camera
    ([camera.encoder]). timeout_s: a stream that opens or sends nothing for this long has gone.
    reconnect_min_s / reconnect_max_s: a camera that delivers no frames is reconnected after
    the first, doubling up to the second."""

    source: str = "sim"
    width: int = 0
    height: int = 0
    fps: float = 0.0
    timeout_s: float = 5.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 10.0
    encoder: EncoderSection = field(default_factory=EncoderSection)
    genicam: AravisCameraConfig = field(default_factory=AravisCameraConfig)
    fluorescence: FluorescenceSection = field(default_factory=FluorescenceSection)

    def __post_init__(self) -> None:
        if not self.source.strip():
            raise ValueError('source is empty: use "sim" or a device index, file, URL or folder')
        check_range("width", self.width, 0, 10000)
        check_range("height", self.height, 0, 10000)
        check_range("fps", self.fps, 0, 1000)
        check_range("timeout_s", self.timeout_s, 0.1, 120.0)
        check_range("reconnect_min_s", self.reconnect_min_s, 0.05, 60.0)
        check_range("reconnect_max_s", self.reconnect_max_s, self.reconnect_min_s, 600.0)
        if self.source == "sim" and self.encoder.source != "none":
            raise ValueError(
                "encoder: the simulator's frames carry its own encoder ([sim.encoder]); "
                '[camera.encoder] is for a real camera: remove it or set source = "none"'
            )
        # GenICam (issue 23): its own table, checked only when it is the source.
        if self.source == "genicam":
            try:
                self.genicam.check_complete()
            except ConfigError as e:
                raise ConfigError(f"genicam.{e}") from None
            if self.genicam.counts_per_trigger and self.encoder.source != "none":
                raise ValueError(
                    "genicam.counts_per_trigger: the frames' counts come from the encoder trigger; "
                    "[camera.encoder] would give them a second time: set one of them (see docs/cameras.md)"
                )


@dataclass
class RuntimeSection:
    """calibration: the line calibration file (required for a real camera; the simulator
    supplies its own true calibration, but a file named here is still checked).
    accept_redo_calibration: parts of that file used although their verdict is REDO
    ("intrinsics", "belt", "encoder", "arms.NAME", "fluorescence"): the engineer's explicit override, raised as
    an alarm and recorded at every start. tick_s: how often the arms are served.
    frame_queue: frames waiting for inference; under overload the oldest are dropped.
    max_count_error_mm: a frame whose belt count may be off by more than this (its stamp's
    error at the belt's speed) is not used."""

    calibration: str = ""
    accept_redo_calibration: list[str] = field(default_factory=list)
    tick_s: float = 0.01
    frame_queue: int = 2
    inference_latency_s: float = 0.02  # virtual time charged per frame on the simulator
    stall_alarm_s: float = 2.0  # no frame for this long → camera alarm
    snapshot_doubtful: bool = True
    max_count_error_mm: float = 2.0

    def __post_init__(self) -> None:
        check_range("tick_s", self.tick_s, 0.001, 0.5)
        check_range("frame_queue", self.frame_queue, 1, 64)
        check_range("inference_latency_s", self.inference_latency_s, 0.0, 1.0)
        check_range("stall_alarm_s", self.stall_alarm_s, 0.1, 60.0)
        for i, part in enumerate(self.accept_redo_calibration):
            if part not in ("intrinsics", "belt", "encoder", "fluorescence") and not part.startswith("arms."):
                raise ValueError(
                    f"accept_redo_calibration[{i}]={part!r} is not a calibration part: "
                    "use 'intrinsics', 'belt', 'encoder', 'arms.NAME' or 'fluorescence'"
                )
        check_range("max_count_error_mm", self.max_count_error_mm, 0.1, 50.0)


@dataclass
class UISection:
    """The operator screen (docs/operator-screen.md). ``allowed_hosts``: the names and addresses
    the panels use to reach it, besides loopback and the address a request arrives on.
    ``frame_access`` / ``metrics_access``: who may read the camera image and /metrics without a
    login (``anyone``; ``loopback``: only this computer; ``login``: nobody). TLS with both
    ``tls_certfile`` and ``tls_keyfile``."""

    host: str = "127.0.0.1"
    port: int = 8080
    open_browser: bool = True
    users_file: str = ""  # "" = simulator default users (see docs)
    language: Literal["ja", "en"] = "ja"
    allowed_hosts: list[str] = field(default_factory=list)
    frame_access: Literal["anyone", "loopback", "login"] = "loopback"
    metrics_access: Literal["anyone", "loopback", "login"] = "loopback"
    tls_certfile: str = ""
    tls_keyfile: str = ""

    def __post_init__(self) -> None:
        check_range("port", self.port, 0, 65535)
        if bool(self.tls_certfile) != bool(self.tls_keyfile):
            raise ValueError("tls_certfile and tls_keyfile: give both (HTTPS) or neither (HTTP)")
        for h in self.allowed_hosts:
            if not h.strip() or any(c in h for c in "/ @"):
                raise ValueError(f"allowed_hosts: {h!r} is not a host name or address")


@dataclass
class RecordSection:
    """The production record and how long its parts are kept (docs/plant-pc.md#retention)."""

    path: str = ""  # SQLite file ("" = ./scallop-record/record.sqlite)
    snapshot_dir: str = ""  # "" = beside the database
    snapshot_budget_mb: float = 500.0
    keep_days: float = 1095.0  # rows in the live record; older ones move to yearly archives
    archive_dir: str = ""  # "" = "archive" beside the database
    archive_keep_days: float = 0.0  # 0 = archives are kept for ever
    snapshot_keep_days: float = 30.0
    min_free_mb: float = 1000.0  # less free disk than this beside the record: critical alarm

    def __post_init__(self) -> None:
        check_range("snapshot_budget_mb", self.snapshot_budget_mb, 0.0, 1e6)
        check_range("keep_days", self.keep_days, 1.0, 36500.0)
        check_range("archive_keep_days", self.archive_keep_days, 0.0, 36500.0)
        if 0 < self.archive_keep_days < self.keep_days:
            raise ValueError(
                f"archive_keep_days={self.archive_keep_days!r} is below keep_days={self.keep_days!r}: an archive "
                "would be deleted before its rows are moved into it (0 keeps archives for ever)"
            )
        check_range("snapshot_keep_days", self.snapshot_keep_days, 0.0, 36500.0)
        check_range("min_free_mb", self.min_free_mb, 0.0, 1e7)

    def retention(self):
        from scallop.app.record.retention import RetentionPolicy

        return RetentionPolicy(
            self.keep_days, self.archive_dir, self.archive_keep_days, self.snapshot_keep_days, self.min_free_mb
        )


@dataclass
class CaptureSection:
    """Frames kept from the running line for labelling (scallop.app.capture): unsure frames
    always, ``routine_share`` of the others, the folder kept under ``budget_mb``."""

    folder: str = ""  # "" = captures/ beside the record
    budget_mb: float = 2000.0
    routine_share: float = 0.02
    low_margin: float = 0.1  # a uro confidence this close to vision.min_uro_confidence is unsure

    def __post_init__(self) -> None:
        check_range("budget_mb", self.budget_mb, 1.0, 1e7)
        check_range("routine_share", self.routine_share, 0.0, 1.0)
        check_range("low_margin", self.low_margin, 0.0, 0.5)


@dataclass
class ModelsSection:
    """The model registry (scallop.app.registry): with ``registry`` set the line runs its live
    model (then ``vision.model`` stays empty) and takes a promoted one at a frame boundary.
    ``reference_set``: the plant's labelled set (COCO file or data-set folder) that promotion
    compares the candidate and the live model on."""

    registry: str = ""
    reference_set: str = ""
    poll_s: float = 1.0  # how often the running line looks for a promotion

    def __post_init__(self) -> None:
        check_range("poll_s", self.poll_s, 0.1, 60.0)


@dataclass
class RecipeSection:
    name: str
    product_size_mm: tuple[float, float] = (40.0, 75.0)
    belt_speed_mm_s: float = 300.0
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("recipe name is empty")
        lo, hi = self.product_size_mm
        if not (10 <= lo < hi <= 200):
            raise ValueError(
                f"product_size_mm={list(self.product_size_mm)} must be two sizes with 10 <= low < high <= 200"
            )
        check_range("belt_speed_mm_s", self.belt_speed_mm_s, 0.0, 1000.0)


def _default_recipes() -> list[RecipeSection]:
    return [
        RecipeSection("standard", (40.0, 75.0), 300.0, "Mixed baby scallops, 300 mm/s"),
        RecipeSection("small", (40.0, 55.0), 250.0, "Small scallops, slower belt"),
        RecipeSection("large", (55.0, 75.0), 350.0, "Large scallops, faster belt"),
    ]


# The configuration file's format (key ``config_version``); see :func:`migrate`.
CONFIG_VERSION = 2


@dataclass
class ShiftCheckSection:
    """``[shift_check]``: the start-of-shift check (docs/shift-check.md).

    required:    production starts only after a passed check (or an engineer's override).
    with_uro:    test pieces with a visible uro (each must be picked), 1..20 when required.
    without_uro: test pieces without one (each must pass on), 0..20.
    clear_s:     the camera must see no scallop this long before the pieces are asked for
                 (product already between the feeder and the camera goes through first), 1..300 s.
    timeout_s:   how long the belt may take to clear, and then the pieces to come through, 10..3600 s.
    valid_h:     how long a pass or an override holds, 0.5..24 h.
    """

    required: bool = False
    with_uro: int = 0
    without_uro: int = 0
    clear_s: float = 0.0
    timeout_s: float = 0.0
    valid_h: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.required, bool):
            raise ConfigError(f"required={self.required!r}: expected true or false")
        # Checked whether or not the check is required: a value written is meant (0 = not set).
        check_number("with_uro", self.with_uro, 0, 20, integer=True)
        check_number("without_uro", self.without_uro, 0, 20, integer=True)
        for key, lo, hi in (("clear_s", 1.0, 300.0), ("timeout_s", 10.0, 3600.0), ("valid_h", 0.5, 24.0)):
            v = getattr(self, key)
            if v != 0:
                check_range(key, v, lo, hi)
        if not self.required:
            return
        unset = [k for k in ("with_uro", "clear_s", "timeout_s", "valid_h") if getattr(self, k) == 0]
        if unset:
            raise ConfigError(
                f"{', '.join(unset)} not set: a required shift check needs with_uro (1..20), clear_s (1..300 s), "
                "timeout_s (10..3600 s) and valid_h (0.5..24 h); see docs/shift-check.md"
            )

    @property
    def pieces(self) -> int:
        return self.with_uro + self.without_uro


@dataclass
class LineConfig:
    """The whole line. Every section has defaults: with no file this is the simulator.

    config_version: the file format the file was written for (absent: 1, version 0.1.0's);
    an older file is brought up to date as it is loaded (:func:`migrate`), a newer one refused."""

    config_version: int = CONFIG_VERSION
    camera: CameraSection = field(default_factory=CameraSection)
    vision: PipelineConfig = field(default_factory=PipelineConfig)
    runtime: RuntimeSection = field(default_factory=RuntimeSection)
    sim: SimConfig = field(default_factory=SimConfig)
    arms: list[ArmConfig] = field(default_factory=list)
    ui: UISection = field(default_factory=UISection)
    record: RecordSection = field(default_factory=RecordSection)
    capture: CaptureSection = field(default_factory=CaptureSection)
    models: ModelsSection = field(default_factory=ModelsSection)
    recipes: list[RecipeSection] = field(default_factory=_default_recipes)
    recipe: str = "standard"
    opcua: OpcUaSection = field(default_factory=OpcUaSection)  # the plant's SCADA/MES (docs/opcua.md)
    # The line PLC: reject gate, infeed, stack light, safety relay (docs/plc-interface.md). None:
    # on the simulator a simulated PLC stands in; on a real line none is fitted (an alarm says so).
    plc: PlcConfig | None = None
    # The start-of-shift check with test pieces (docs/shift-check.md); off unless required.
    shift_check: ShiftCheckSection = field(default_factory=ShiftCheckSection)

    def __post_init__(self) -> None:
        names = [r.name for r in self.recipes]
        if len(set(names)) != len(names):
            raise ValueError(f"recipes: names must be unique, got {names}")
        if self.recipe not in names:
            raise ValueError(f"recipe={self.recipe!r} is not one of the recipes: {', '.join(names)}")
        if self.models.registry and self.vision.model:
            raise ValueError(
                f"vision.model={self.vision.model!r} and models.registry={self.models.registry!r}: give one; "
                "with a registry the line runs its live model (scallop model promote)"
            )
        arm_names = [a.name for a in self.arms]
        if len(set(arm_names)) != len(arm_names):
            raise ValueError(f"arms: names must be unique, got {arm_names}")
        fl, sim_fl = self.camera.fluorescence, self.sim.fluorescence.setup
        if self.is_simulated and fl.setup != sim_fl:
            # The simulator's frames carry the channel its world renders; the line must expect
            # the same one, or a model needing the channel would meet frames without it.
            raise ValueError(
                f"camera.fluorescence.setup={fl.setup!r} but the simulator renders {sim_fl!r} "
                "([sim.fluorescence].setup): give both the same set-up"
            )
        if self.is_simulated and fl.setup == "alternate" and self.sim.fluorescence.frame_interval_ms > fl.max_pair_ms:
            raise ValueError(
                f"camera.fluorescence.max_pair_ms={fl.max_pair_ms:g} is shorter than the simulator's "
                f"sim.fluorescence.frame_interval_ms={self.sim.fluorescence.frame_interval_ms:g}: no pair would "
                "ever be kept; allow at least the frame interval"
            )
        if self.is_simulated and fl.setup == "second_camera" and fl.source != "sim":
            raise ValueError(
                f"camera.fluorescence.source={fl.source!r}: with camera.source = 'sim' the second camera is the "
                "simulator's too: set it to 'sim'"
            )
        if self.shift_check.required and self.plc is None and not self.is_simulated:
            # Product keeps coming with the feeder running and would be taken for test pieces.
            raise ValueError(
                "shift_check.required = true needs a line PLC ([plc]): the feeder must be held while the "
                "test pieces go through"
            )

    @property
    def is_simulated(self) -> bool:
        return self.camera.source == "sim"

    def real_devices(self) -> list[str]:
        """The real devices this configuration drives, in words: a camera other than the
        simulator, a belt encoder, an arm with a transport of its own. With any of them the
        line waits for an operator's Start and the simulator's built-in users are refused."""
        out = []
        if self.camera.source != "sim":
            out.append(f"camera {self.camera.source!r}")
        if self.camera.encoder.source != "none":
            out.append(
                f"belt encoder {self.camera.encoder.source} {self.camera.encoder.host}:{self.camera.encoder.port}"
            )
        out += [f"arm {a.name!r} ({a.transport.describe()})" for a in self.arms if a.transport is not None]
        if self.plc is not None and self.plc.transport is not None:
            out.append(f"line PLC ({self.plc.transport.describe()})")
        return out


def _v1_to_v2(data: dict) -> dict:
    """Version 2 lets an arm leave out its transport (the simulator then stands in for it);
    version 1 gave such an arm the transport's defaults. On a line with a real camera the
    migrated file says so explicitly, so the arm is reached where it was."""
    if data.get("camera", {}).get("source", "sim") != "sim":
        data["arms"] = [a if "transport" in a else {**a, "transport": {}} for a in data.get("arms", [])]
    return data


MIGRATIONS = {2: _v1_to_v2}


def migrate(data: dict, source: str = "") -> dict:
    """A parsed configuration of any earlier format brought to :data:`CONFIG_VERSION`."""
    where = f"{source}: " if source else ""
    version = data.get("config_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigError(f"{where}config_version={version!r}: expected a whole number from 1")
    if version > CONFIG_VERSION:
        raise ConfigError(
            f"{where}config_version={version} was written for a newer version of the line program; this one "
            f"reads up to {CONFIG_VERSION}: use the newer version ('scallop service versions')"
        )
    for v in range(version + 1, CONFIG_VERSION + 1):
        data = MIGRATIONS[v](dict(data))
    return {**data, "config_version": CONFIG_VERSION}


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> LineConfig:
    """The line's configuration from a TOML file (None: the built-in simulator line)."""
    data = load_toml(path) if path else {"config_version": CONFIG_VERSION}
    if path and not data:
        # A line.toml emptied (a power cut mid-save, a copy gone wrong) ran the simulator with
        # a screen saying "running" in an outside try: the simulator is asked for by leaving
        # --config out, never by a file that holds nothing.
        raise ConfigError(
            f"{path}: the file holds no settings (empty, or comments only); restore it from a backup "
            "('scallop restore') or write it again (docs/configuration.md). The built-in simulator runs "
            "without --config"
        )
    if overrides:
        data = {**data, **overrides}
    try:
        data = migrate(data, str(path) if path else "")
        return build(LineConfig, data)
    except ConfigError as e:
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}{e}") from None


def vision_changes(changes: object) -> dict:
    """The vision thresholds an engineer may change while the line runs, from the panel's
    ``{"vision.KEY": value}`` or ``{"vision": {"KEY": value}}`` → ``{"KEY": value}`` (the
    values are checked when the section is built). Anything else needs a restart (the
    configuration file) or is not the line's to change (the belt's speed is the recipe's)."""
    if not isinstance(changes, dict):
        raise ConfigError(f"changes={changes!r}: expected a JSON object of keys and values")
    vision: dict = {}
    for key, value in changes.items():
        if key == "vision" and isinstance(value, dict):
            vision.update(value)
        elif isinstance(key, str) and key.startswith("vision.") and key.count(".") == 1:
            vision[key.split(".", 1)[1]] = value
        else:
            raise ConfigError(
                f"{key}: cannot be changed while the line runs; the panel changes the vision thresholds "
                '(e.g. {"vision.min_uro_confidence": 0.6}); the belt speed comes with the recipe, '
                "everything else from the configuration file at the next start"
            )
    if {"model", "threads", "shadow_model"} & set(vision):
        raise ConfigError(
            "vision.model, vision.threads and vision.shadow_model need a restart; change them in the config "
            "file (a model is put live with scallop model promote)"
        )
    return vision
