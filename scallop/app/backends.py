"""What the line runs on: the built-in simulator or the plant's hardware.

Both give the line the same things — a clock, a :class:`Camera`, the camera's model over the
belt (pixels → belt millimetres), the :class:`~scallop.robot.belt.Belt` (encoder scale and
direction) and the arms' configurations — so the line has no ``if simulated`` branches. A
backend may also offer a pick verifier (what a pick did to its scallop) and frame observers;
the simulator offers its ground truth that way, hardware offers none.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from scallop.app.config import LineConfig
from scallop.calibration.camera_model import CameraModel
from scallop.robot.belt import Belt
from scallop.robot.clock import SystemClock
from scallop.robot.config import ArmConfig, Pose
from scallop.vision.camera import Camera, OpenCVCamera, OpenCVCameraConfig


class Backend:
    """Base: subclasses set ``camera``, ``camera_model``, ``belt`` and ``arm_configs`` in
    ``open()``; ``verifier`` and ``observers`` stay empty unless the backend can see what
    happens to the scallops."""

    def __init__(self, config: LineConfig) -> None:
        self.config = config
        self.clock = SystemClock()
        self.camera: Camera | None = None
        self.camera_model: CameraModel | None = None
        self.belt: Belt | None = None
        self.arm_configs: list[ArmConfig] = []
        self.verifier = None  # scallop.app.line.ledger.PickVerifier
        self.observers: list = []  # objects with on_frame(frame) and summary() -> dict
        self.accepted_redo: list[str] = []  # calibration parts used despite a REDO verdict (override)

    def open(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if self.camera is not None:
            self.camera.disconnect()


class HardwareBackend(Backend):
    """A real camera (OpenCV source) and real arms, with the line calibration file."""

    def open(self) -> None:
        from scallop.app.config import ConfigError
        from scallop.calibration.store import load_calibration

        cfg = self.config
        if not cfg.runtime.calibration:
            raise ConfigError(
                "runtime.calibration: a real camera needs the line calibration file "
                "(run 'scallop calibrate …' first, see docs/calibration.md)"
            )
        if not cfg.arms:
            raise ConfigError("arms: a real line needs at least one [[arms]] entry")
        for i, a in enumerate(cfg.arms):
            if a.transport is None:
                raise ConfigError(
                    f"arms[{i}].transport: arm {a.name!r} has no [arms.transport]: a real line reaches each arm "
                    "over Modbus TCP (host, port) or RTU (serial_port); see docs/configuration.md"
                )
        c = cfg.camera
        if c.source == "genicam":
            # Issue 23: a GenICam camera through Aravis (vision/aravis.py); the rest is the same.
            from scallop.vision.aravis import AravisCamera

            cam = AravisCamera(c.genicam, width=c.width, height=c.height, fps=c.fps, clock=self.clock.now)
        else:
            cam = OpenCVCamera(
                OpenCVCameraConfig(
                    source=cfg.camera.source, width=cfg.camera.width, height=cfg.camera.height, fps=cfg.camera.fps
                ),
                clock=self.clock.now,
            )
        if cfg.camera.encoder.source == "modbus":
            # No hardware latch: counts are sampled over Modbus and interpolated per frame.
            from scallop.app.frames import EncodedCamera
            from scallop.robot.belt import ModbusEncoder

            cam = EncodedCamera(cam, ModbusEncoder(cfg.camera.encoder.modbus_config()), clock=self.clock.now)
        cam.connect()
        self.camera = cam
        cal = load_calibration(
            cfg.runtime.calibration,
            image_size=cam.resolution,
            require=("intrinsics", "belt", "encoder"),
            arms=[a.name for a in cfg.arms],
            accept_redo=cfg.runtime.accept_redo_calibration,
        )
        self.accepted_redo = cal.accepted_redo
        d = cal.travel_dir
        if abs(float(d[1])) > 0.01 or float(d[0]) <= 0:
            raise ConfigError(
                f"{cfg.runtime.calibration}: the belt frame's x axis is not the direction of travel "
                f"(travel_dir={list(np.round(d, 4))}); redo 'scallop calibrate encoder' without --no-align"
            )
        self.camera_model = cal.camera
        self.belt = Belt(cal.counts_per_mm, cal.count_sign)
        # The calibrated camera→robot transform wins over the configured one.
        self.arm_configs = [
            replace(a, robot_from_belt=Pose.from_matrix(cal.robot_from_belt(a.name).matrix())) for a in cfg.arms
        ]


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

    def open(self) -> None:
        from scallop.sim.arm import SimArm
        from scallop.sim.camera import SimCamera
        from scallop.sim.truth import PassedScallops, SimPickGrader
        from scallop.sim.world import SimWorld

        cfg = self.config
        if cfg.runtime.calibration:
            # Configured is checked, used or not: the simulator brings its own true calibration,
            # but a line file named here that is missing, damaged or REDO is said so now, not on
            # the day the configuration moves to the real camera.
            from scallop.calibration.store import load_calibration

            cal = load_calibration(
                cfg.runtime.calibration,
                require=("intrinsics", "belt", "encoder"),
                accept_redo=cfg.runtime.accept_redo_calibration,
            )
            self.accepted_redo = cal.accepted_redo
        self.world = SimWorld(cfg.sim, seed=self.seed, clock=self.clock)
        self.camera = SimCamera(self.world)
        self.camera.connect()
        e = cfg.sim.encoder
        self.camera_model = self.world.camera_model
        self.belt = Belt(e.counts_per_mm, e.direction)
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
        except Exception:
            self.close()
            raise
        self.verifier = SimPickGrader({a.config.name: a for a in self.sim_arms})
        last = max(a.pick_window_x_mm[1] for a in self.arm_configs)
        self.observers = [PassedScallops(self.world, last)]

    def close(self) -> None:
        # The arms stay listed after closing: their records are the run's ground truth.
        for a in self.sim_arms:
            a.close()
        super().close()

    def sim_arm(self, name: str):
        for a in self.sim_arms:
            if a.config.name == name:
                return a
        raise KeyError(name)
