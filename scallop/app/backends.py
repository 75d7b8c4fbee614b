"""What the line runs on: the built-in simulator or the plant's hardware.

Both give the line the same things — a clock, a :class:`Camera`, the camera's model over the
belt (pixels → belt millimetres), the :class:`~scallop.robot.belt.Belt` (encoder scale and
direction) and the arms' configurations — so the line has no ``if simulated`` branches. A
backend may also offer a pick verifier (what a pick did to its scallop) and frame observers;
the simulator offers its ground truth that way, hardware offers none.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from scallop.app.config import EncoderSection, LineConfig
from scallop.calibration.camera_model import CameraModel
from scallop.errors import ConfigError, DeviceError
from scallop.robot.belt import Belt
from scallop.robot.clock import SystemClock
from scallop.robot.config import ArmConfig, Pose
from scallop.robot.plc import PlcConfig
from scallop.vision.camera import Camera, OpenCVCamera, OpenCVCameraConfig
from scallop.vision.recording import RecordingCamera, is_recording

log = logging.getLogger("scallop.line")


class Backend:
    """Base: subclasses set ``camera``, ``camera_model``, ``belt`` and ``arm_configs`` in
    ``open()``; ``verifier`` and ``observers`` stay empty unless the backend can see what
    happens to the scallops."""

    def __init__(self, config: LineConfig, clock=None) -> None:
        self.config = config
        self.clock = clock if clock is not None else SystemClock()
        self.camera: Camera | None = None
        self.camera_error = ""  # why the camera could not be opened (the line keeps trying)
        self.camera_model: CameraModel | None = None
        self.belt: Belt | None = None
        self.arm_configs: list[ArmConfig] = []
        self.plc_config: PlcConfig | None = None  # the line PLC to reach (None: none fitted)
        self.verifier = None  # scallop.app.line.ledger.PickVerifier
        self.observers: list = []  # objects with on_frame(frame) and summary() -> dict
        self.accepted_redo: list[str] = []  # calibration parts used despite a REDO verdict (override)
        # A second fluorescence camera's registration at the configured height (the calibration's
        # ``fluorescence`` part, a ``Registration``: its pixel map and its image size); None without one.
        self.fluorescence_registration = None

    def check(self) -> None:
        """Refuse now what would refuse ``open()`` without touching a device: the configuration
        and the line calibration file. ``build_line`` calls it before the record is opened, so
        a start refused for these leaves no run in the record (a run that never ran)."""

    def open(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if self.camera is not None:
            self.camera.disconnect()


def colour_camera(config: LineConfig, clock, sampled: bool = False) -> Camera:
    """The configured colour camera device alone (not connected yet): GenICam through Aravis,
    a recording folder (with its own counts unless ``sampled``), anything else through OpenCV.
    ``scallop doctor`` opens it as the line does."""
    cc = config.camera
    if cc.source == "genicam":
        # A GenICam camera through Aravis (vision/aravis.py): its own clock and, with an encoder
        # trigger divider, its own counts.
        from scallop.vision.aravis import AravisCamera

        cam: Camera = AravisCamera(cc.genicam, width=cc.width, height=cc.height, fps=cc.fps, clock=clock.now)
    elif is_recording(cc.source):
        cam = RecordingCamera(cc.source, clock, with_counts=not sampled, read_partners=cc.fluorescence.enabled)
    else:
        cam = OpenCVCamera(
            OpenCVCameraConfig(source=cc.source, width=cc.width, height=cc.height, fps=cc.fps, timeout_s=cc.timeout_s),
            clock=clock.now,
            sleep=clock.sleep,
        )
    return cam


def fluorescence_camera(config: LineConfig, clock) -> Camera:
    """The second camera of ``[camera.fluorescence] setup = "second_camera"`` (not connected)."""
    cc = config.camera
    return OpenCVCamera(
        OpenCVCameraConfig(source=cc.fluorescence.source, timeout_s=cc.timeout_s), clock=clock.now, sleep=clock.sleep
    )


def open_camera(config: LineConfig, clock) -> Camera:
    """The configured real camera (not connected yet): :func:`colour_camera`; with
    ``[camera.encoder]`` the frames get their counts from the sampled counter (a recording then
    gives only its frames); with ``[camera.fluorescence]`` each frame brings its partner."""
    cc = config.camera
    sampled = cc.encoder.source == "modbus"
    cam = colour_camera(config, clock, sampled)
    if sampled:
        # No hardware latch: counts are sampled over Modbus and interpolated per frame.
        from scallop.app.frames import EncodedCamera
        from scallop.robot.belt import ModbusEncoder

        cam = EncodedCamera(cam, ModbusEncoder(cc.encoder.modbus_config()), clock=clock.now)
    fl = cc.fluorescence
    if is_recording(cc.source) and check_recording_channel(config) != "none":
        # A recording with the channel holds each frame's partner as taken: it is paired and
        # registered by the line as it was live, not paired again here.
        return cam
    if fl.setup == "alternate":
        # Strobed lights: every other frame (each with its own count) is the fluorescence one.
        from scallop.vision.channels import AlternateFramesCamera

        cam = AlternateFramesCamera(cam)
    elif fl.setup == "second_camera":
        # On the colour camera's trigger; its frames are matched by exposure time. Its counts,
        # when sampled, would be the colour frame's: it is registered as exposed with it.
        from scallop.vision.channels import SecondCameraPair

        cam = SecondCameraPair(cam, fluorescence_camera(config, clock), window_s=fl.max_pair_ms / 1000.0)
    return cam


def check_recording_channel(config: LineConfig) -> str:
    """For a recording as ``camera.source``: its fluorescence set-up, refused (ConfigError) when
    the line's ``[camera.fluorescence]`` asks for another one. A colour-only recording cannot
    feed a channel (alternate frames would pair colour with colour), and a second camera's
    exposures are not alternate frames. A recording with the channel replayed by a line without
    it is played colour only. Returns the recording's set-up ("none": colour only)."""
    from scallop.vision.recording import recording_setup

    cc = config.camera
    have, want = recording_setup(cc.source), cc.fluorescence.setup
    if want != "none" and have != want:
        made = "without the fluorescence channel" if have == "none" else f"with setup = {have!r}"
        raise ConfigError(
            f"camera.source: the recording {cc.source} was made {made}, but camera.fluorescence.setup = {want!r}: "
            + (
                "a line reads it with setup = 'none' (and a colour-only model)"
                if have == "none"
                else f"a line reads it with setup = {have!r}, as it was recorded"
            )
        )
    return have


def check_counts_source(config: LineConfig) -> None:
    """A line picks only from frames that carry belt counts: a plain video file or image
    folder has none (its frames would be tracked on nothing), a recording has its own."""
    cc = config.camera
    if cc.encoder.source != "none":
        return
    if cc.source == "genicam":
        if not cc.genicam.counts_per_trigger:
            raise ConfigError(
                "camera.genicam.counts_per_trigger: a GenICam camera without [camera.encoder] takes its belt "
                "counts from the encoder trigger's divider: give it (docs/cameras.md), or configure [camera.encoder]"
            )
        return
    if is_recording(cc.source):
        from scallop.vision.recording import read_index

        _, frames = read_index(cc.source)
        if any(f.counts is None for f in frames):
            raise ConfigError(
                f"camera.source: the recording {cc.source} has frames without a belt count: it cannot be "
                "picked from; pair it with [camera.encoder] or record it with the encoder configured"
            )
        return
    kind = OpenCVCameraConfig(source=cc.source).kind
    if kind in ("file", "folder"):
        what = "a video file" if kind == "file" else "an image folder"
        raise ConfigError(
            f"camera.source: {cc.source!r} is {what}: its frames carry no belt counts, so the line cannot "
            "pick from it; replay a recording made with 'scallop capture' (frames with their counts), or "
            "configure [camera.encoder] (docs/configuration.md)"
        )


class HardwareBackend(Backend):
    """A real camera (OpenCV source or a recording) and real arms, with the line calibration
    file. A camera that is not there at the start is not fatal: the line starts waiting for
    it (``camera_error``) and connects it when it comes."""

    def check(self) -> None:
        self.check_config()
        # The file, its parts and arms, the belt's axis and the second camera's registration;
        # the camera's size is checked at open(), once the camera answers.
        line_calibration_checks(self.config, load_line_calibration(self.config))

    def _need_calibration(self) -> None:
        if not self.config.runtime.calibration:
            raise ConfigError(
                "runtime.calibration: a real camera needs the line calibration file "
                "(run 'scallop calibrate …' first, see docs/calibration.md)"
            )

    def check_config(self) -> None:
        """The configuration a real line needs (calibration file named, arms and their
        transports, belt counts for the frames, the PLC's transport); ``scallop doctor`` too."""
        cfg = self.config
        self._need_calibration()
        if not cfg.arms:
            raise ConfigError("arms: a real line needs at least one [[arms]] entry")
        for i, a in enumerate(cfg.arms):
            if a.transport is None:
                raise ConfigError(
                    f"arms[{i}].transport: arm {a.name!r} has no [arms.transport]: a real line reaches each arm "
                    "over Modbus TCP (host, port) or RTU (serial_port); see docs/configuration.md"
                )
        check_counts_source(cfg)
        if is_recording(cfg.camera.source):
            check_recording_channel(cfg)
        if cfg.plc is not None and cfg.plc.transport is None:
            raise ConfigError(
                "plc.transport: a real line reaches its PLC over Modbus TCP ([plc.transport] host, port); "
                "see docs/plc-interface.md"
            )

    def open(self) -> None:
        cfg = self.config
        self.check_config()
        self.plc_config = cfg.plc
        cam = open_camera(cfg, self.clock)
        self.camera = cam
        try:
            cam.connect()
        except DeviceError as e:
            self.camera_error = str(e)
            log.error("camera not available at the start, waiting for it: %s", e)
        cal = load_line_calibration(cfg, cam.resolution if cam.is_connected else None)
        self.accepted_redo = cal.accepted_redo
        self.fluorescence_registration = line_calibration_checks(cfg, cal)
        self.camera_model = cal.camera
        self.belt = Belt(cal.counts_per_mm, cal.count_sign)
        # The calibrated camera→robot transform wins over the configured one.
        self.arm_configs = [
            replace(a, robot_from_belt=Pose.from_matrix(cal.robot_from_belt(a.name).matrix())) for a in cfg.arms
        ]


def load_line_calibration(cfg: LineConfig, image_size: tuple[int, int] | None = None, arms: bool = True):
    """The line calibration file of ``cfg``, checked for what a real line needs: intrinsics,
    belt, encoder, every configured arm (``arms``; a simulated line's arms need none) and the
    fluorescence part with a second camera; ``image_size``: the connected camera's, when known."""
    from scallop.calibration.store import load_calibration

    return load_calibration(
        cfg.runtime.calibration,
        image_size=image_size,
        require=("intrinsics", "belt", "encoder")
        + (("fluorescence",) if cfg.camera.fluorescence.setup == "second_camera" else ()),
        arms=[a.name for a in cfg.arms] if arms else (),
        accept_redo=cfg.runtime.accept_redo_calibration,
    )


def line_calibration_checks(cfg: LineConfig, cal):
    """What a real line takes from its calibration beyond the parts, refused with how to mend
    it: the belt frame's axis along the travel, and the second camera's registration at its
    height (returned; None without a second camera). The line's start and ``scallop doctor``."""
    d = cal.travel_dir
    if abs(float(d[1])) > 0.01 or float(d[0]) <= 0:
        raise ConfigError(
            f"{cfg.runtime.calibration}: the belt frame's x axis is not the direction of travel "
            f"(travel_dir={list(np.round(d, 4))}); redo 'scallop calibrate encoder' without --no-align"
        )
    if cfg.camera.fluorescence.setup == "second_camera":
        # Required by load_line_calibration: a file without the part was refused with how to make one.
        return fluorescence_registration(cal, cfg.camera.fluorescence)
    return None


def fluorescence_registration(cal, section):
    """The second camera's :class:`~scallop.calibration.fluorescence.Registration` at
    ``[camera.fluorescence] register_height_mm``; what it lacks is named with the key. The line
    builds it at its start, ``scallop doctor`` to check the calibration file and the camera."""
    from scallop.calibration.errors import MissingPartError
    from scallop.calibration.fluorescence import Registration

    try:
        reg = Registration.at_height(cal, section.register_height_mm)
    except MissingPartError as e:
        raise MissingPartError(
            f"camera.fluorescence.register_height_mm = {section.register_height_mm:g}: {e}"
        ) from None
    share = float(np.mean(reg.overlap()[1]))
    if share < MIN_FLUORESCENCE_OVERLAP:
        # Not a channel gone dark (what the line would alarm, blaming the UV light): a camera
        # looking elsewhere. Scallops outside the overlap get no channel at all.
        raise ConfigError(
            f"the fluorescence camera sees {100 * share:.0f} % of the colour frame (registered at "
            f"camera.fluorescence.register_height_mm = {section.register_height_mm:g} mm; at least "
            f"{100 * MIN_FLUORESCENCE_OVERLAP:.0f} % is needed): aim it at the colour camera's view, then redo "
            "'scallop calibrate fluorescence'"
        )
    return reg


#: The least share of the colour frame a second, fluorescence camera must see for the line to
#: run with it: below, most scallops would be analysed without their channel.
MIN_FLUORESCENCE_OVERLAP = 0.5


class ReplayBackend(HardwareBackend):
    """A recording replayed on the virtual clock, as fast as the work allows, with simulated
    arms standing in for the configured ones (same poses, workspaces and motion): the line
    decides and picks as it did on the shift, offline. ``grader`` referees the stand-in arms'
    picks when the truth is known (a recording of the simulator); otherwise their effect is
    unknown, as on the line."""

    def __init__(self, config: LineConfig, clock=None, grader=None) -> None:
        from scallop.sim.clock import VirtualClock

        super().__init__(config, clock=clock if clock is not None else VirtualClock())
        self.grader = grader
        self.sim_arms = []

    def _check_recording(self) -> None:
        if not is_recording(self.config.camera.source):
            raise ConfigError(f"camera.source: {self.config.camera.source!r} is not a recording folder to replay")
        check_recording_channel(self.config)

    def check(self) -> None:
        # What open() checks of the configuration it replays with (stand-in arms, whose
        # transports exist only once they run; no encoder; no PLC), and the calibration file.
        self._check_recording()
        self._need_calibration()
        offline = self._offline(self.config.arms or default_sim_arms(1))
        check_counts_source(offline)
        load_line_calibration(offline)

    def _offline(self, arms: list[ArmConfig]) -> LineConfig:
        """The configuration replayed: ``arms`` standing in, no encoder (the recording has its
        counts), no PLC (the recording's scallops left the belt long ago)."""
        return replace(self.config, arms=arms, camera=replace(self.config.camera, encoder=EncoderSection()), plc=None)

    def open(self) -> None:
        from scallop.sim.arm import SimArm

        self._check_recording()
        arms = []
        try:
            for a in self.config.arms or default_sim_arms(1):
                sim = SimArm(replace(a, transport=None), clock=self.clock, grader=self.grader).start()
                self.sim_arms.append(sim)
                arms.append(replace(a, transport=sim.transport_config()))
        except Exception:
            self.close()
            raise
        self.config = self._offline(arms)
        super().open()

    def close(self) -> None:
        for a in self.sim_arms:
            a.close()
        super().close()


def default_sim_arms(n: int = 1) -> list[ArmConfig]:
    """Arms standing one after another downstream of the camera, 600 mm apart."""
    base = ArmConfig()
    out = []
    for i in range(n):
        dx = 600.0 * i
        pose = base.robot_from_belt
        # Shifting the arm downstream by dx along belt +x: robot_from_belt(p) = R p + t,
        # so the base moves with t' = t - R·[dx, 0, 0].
        t = np.asarray(pose.translation_mm) - pose.R @ np.array([dx, 0.0, 0.0])
        out.append(
            replace(
                base,
                name=f"arm{i + 1}",
                robot_from_belt=replace(pose, translation_mm=tuple(float(v) for v in t)),
                pick_window_x_mm=(base.pick_window_x_mm[0] + dx, base.pick_window_x_mm[1] + dx),
            )
        )
    return out


def default_sim_plc(arms: list[ArmConfig], belt_speed_mm_s: float = 300.0) -> PlcConfig:
    """The simulator's line PLC: its gate past the last pick window by 1.5 s of belt travel, at
    least 450 mm (a failed pick is known by then: at 800 mm/s, 450 mm left a decision 0.56 s,
    and an outside try saw scallops reach the gate before theirs came), opening when a
    scallop's centre is 40 mm from it, for 400 ms."""
    last = max(a.pick_window_x_mm[1] for a in arms)
    return PlcConfig(
        gate_x_mm=last + max(450.0, 1.5 * belt_speed_mm_s),
        gate_lead_mm=40.0,
        gate_open_ms=400,
        heartbeat_timeout_s=1.0,
        watchdog_ms=1000,
    )


class SimBackend(Backend):
    """The built-in simulator: world, camera, and simulated arms on 127.0.0.1, with the
    world's ground truth as pick verifier and observer."""

    def __init__(self, config: LineConfig, clock=None, seed: int = 0) -> None:
        super().__init__(config)
        from scallop.sim.clock import VirtualClock

        self.clock = clock if clock is not None else VirtualClock()
        self.seed = seed
        self.world = None
        self.sim_arms = []
        self.sim_plc = None

    def check(self) -> None:
        self._calibration()
        self._registration()

    def _registration(self):
        """The simulator's true calibration of its second camera, through the same registration
        a calibration file gives a real line (at the configured height); None without one."""
        fl = self.config.sim.fluorescence
        if fl is None or fl.setup != "second_camera":
            return None
        from scallop.sim.commission import true_calibration

        return fluorescence_registration(true_calibration(self.config.sim, []), self.config.camera.fluorescence)

    def _calibration(self):
        """The configured calibration file, checked used or not: the simulator brings its own
        true calibration, but a line file named here that is missing, damaged or REDO is said so
        now, not on the day the configuration moves to the real camera. None when none is named."""
        cfg = self.config
        if not cfg.runtime.calibration:
            return None
        from scallop.calibration.store import load_calibration

        return load_calibration(
            cfg.runtime.calibration,
            # As the real line will: a second camera needs the file's fluorescence part too.
            require=("intrinsics", "belt", "encoder")
            + (("fluorescence",) if cfg.camera.fluorescence.setup == "second_camera" else ()),
            accept_redo=cfg.runtime.accept_redo_calibration,
        )

    def open(self) -> None:
        from scallop.sim.arm import SimArm
        from scallop.sim.camera import SimCamera
        from scallop.sim.plc import SimPlc
        from scallop.sim.truth import PassedScallops, SimPickGrader
        from scallop.sim.world import SimWorld

        cfg = self.config
        cal = self._calibration()
        if cal is not None:
            self.accepted_redo = cal.accepted_redo
        # Scallops stay in the world until past the reject gate: where they end is judged there
        # (a gate farther down than the world kept them made a fast belt's scallops never arrive).
        plc = cfg.plc or default_sim_plc(cfg.arms or default_sim_arms(1), cfg.sim.belt.speed_mm_s)
        keep = max(cfg.sim.belt.keep_downstream_mm, plc.gate_x_mm + 300.0)
        sim = replace(cfg.sim, belt=replace(cfg.sim.belt, keep_downstream_mm=keep))
        self.world = SimWorld(sim, seed=self.seed, clock=self.clock)
        self.camera = SimCamera(self.world)
        self.camera.connect()
        e = cfg.sim.encoder
        self.camera_model = self.world.camera_model
        self.belt = Belt(e.counts_per_mm, e.direction)
        self.fluorescence_registration = self._registration()
        arms = cfg.arms or default_sim_arms(1)
        self.arm_configs = []
        try:
            for a in arms:
                if a.transport is not None:
                    # Hardware in the loop: simulated scallops, a real arm (or the vendor's
                    # arm simulator) over the transport the configuration gives.
                    self.arm_configs.append(a)
                    continue
                sim = SimArm(a, clock=self.clock, grader=self.world)
                sim.start()
                self.sim_arms.append(sim)
                self.arm_configs.append(replace(a, transport=sim.transport_config()))
            plc = cfg.plc or default_sim_plc(self.arm_configs, cfg.sim.belt.speed_mm_s)
            if plc.transport is None:
                self.sim_plc = SimPlc(
                    self.clock, self.world.encoder_at, profile=plc.profile, gate_fitted=plc.gate_fitted
                )
                self.sim_plc.start()
                sim_plc = self.sim_plc
                # The PLC's infeed output drives the simulated feeder, as on the line, and its
                # strobe output the simulated lights of alternate frames.
                self.world.feeder = lambda t: int(sim_plc.infeed_at(t))
                self.world.uv_strobe = sim_plc.uv_strobe_at
                plc = replace(plc, transport=self.sim_plc.transport_config())
            self.plc_config = plc
        except Exception:
            self.close()
            raise
        self.verifier = SimPickGrader({a.config.name: a for a in self.sim_arms})
        last = max(a.pick_window_x_mm[1] for a in self.arm_configs)
        simulated = {a.config.name for a in self.sim_arms}
        self.observers = [
            PassedScallops(self.world, last, [a.name for a in self.arm_configs if a.name not in simulated])
        ]

    def close(self) -> None:
        # The arms stay listed after closing: their records are the run's ground truth.
        for a in self.sim_arms:
            a.close()
        if self.sim_plc is not None:
            self.sim_plc.close()
        super().close()

    def sim_arm(self, name: str):
        for a in self.sim_arms:
            if a.config.name == name:
                return a
        raise KeyError(name)
