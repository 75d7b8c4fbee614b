"""What the line runs on: the built-in simulator or the plant's hardware.

Both give the runtime the same things — a clock, a :class:`Camera`, a pixel→belt mapping
with the encoder scale, and the arms' configurations — so the runtime has no
``if simulated`` branches. The simulator adds ground truth (grading, scallops that went by).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from scallop.app.config import LineConfig
from scallop.calibration.camera_model import CameraModel
from scallop.robot.clock import SystemClock
from scallop.robot.config import ArmConfig, Pose
from scallop.vision.camera import Camera, OpenCVCamera, OpenCVCameraConfig


@dataclass
class BeltMapping:
    """Pixels → belt millimetres, and encoder counts → belt travel."""

    camera: CameraModel
    counts_per_mm: float
    count_sign: int

    @property
    def image_size(self) -> tuple[int, int]:
        return self.camera.image_size

    def pixel_to_belt(self, px) -> np.ndarray:
        return self.camera.pixel_to_belt(px)

    def mm_per_px_center(self) -> float:
        w, h = self.camera.image_size
        return float(self.camera.mm_per_px_at([[(w - 1) / 2.0, (h - 1) / 2.0]])[0])

    def travel_of(self, count: int) -> float:
        """Belt travel (mm, along +x) for an encoder count, up to a constant."""
        return self.count_sign * count / self.counts_per_mm

    def view_x_range(self) -> tuple[float, float]:
        """Belt-frame x covered by the image (from its border pixels)."""
        w, h = self.camera.image_size
        u = np.linspace(0, w - 1, 33)
        v = np.linspace(0, h - 1, 19)
        border = np.concatenate(
            [
                np.column_stack([u, np.zeros_like(u)]),
                np.column_stack([u, np.full_like(u, h - 1)]),
                np.column_stack([np.zeros_like(v), v]),
                np.column_stack([np.full_like(v, w - 1), v]),
            ]
        )
        x = self.camera.pixel_to_belt(border)[:, 0]
        return float(x.min()), float(x.max())


class Backend:
    """Base: subclasses set clock, camera, mapping and arm_configs in ``open()``."""

    simulated = False

    def __init__(self, config: LineConfig) -> None:
        self.config = config
        self.clock = SystemClock()
        self.camera: Camera | None = None
        self.mapping: BeltMapping | None = None
        self.arm_configs: list[ArmConfig] = []

    def open(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if self.camera is not None:
            self.camera.disconnect()

    def grade_of(self, arm: str, target_id: int) -> str | None:
        """The simulator's verdict on a pick ("uro_removed", "adductor_hit", …); None on hardware."""
        return None

    def observe(self, t: float) -> None:
        """Called once per frame (the simulator keeps its ledger of scallops that went by)."""

    def truth_summary(self) -> dict | None:
        return None


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
        cam = OpenCVCamera(
            OpenCVCameraConfig(
                source=cfg.camera.source, width=cfg.camera.width, height=cfg.camera.height, fps=cfg.camera.fps
            ),
            clock=self.clock.now,
        )
        if cfg.camera.encoder.source == "modbus":
            # No hardware latch: counts are sampled over Modbus and interpolated per frame.
            from scallop.vision.encoder import EncodedCamera, ModbusEncoder

            cam = EncodedCamera(cam, ModbusEncoder(cfg.camera.encoder.modbus_config()), clock=self.clock.now)
        cam.connect()
        self.camera = cam
        cal = load_calibration(
            cfg.runtime.calibration,
            image_size=cam.resolution,
            require=("intrinsics", "belt", "encoder"),
            arms=[a.name for a in cfg.arms],
        )
        d = cal.travel_dir
        if abs(float(d[1])) > 0.01 or float(d[0]) <= 0:
            raise ConfigError(
                f"{cfg.runtime.calibration}: the belt frame's x axis is not the direction of travel "
                f"(travel_dir={list(np.round(d, 4))}); redo 'scallop calibrate encoder' without --no-align"
            )
        self.mapping = BeltMapping(cal.camera, cal.counts_per_mm, cal.count_sign)
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
    """The built-in simulator: world, camera, and simulated arms on 127.0.0.1."""

    simulated = True

    def __init__(self, config: LineConfig, clock=None, seed: int = 0) -> None:
        super().__init__(config)
        from scallop.sim.clock import VirtualClock

        self.clock = clock if clock is not None else VirtualClock()
        self.seed = seed
        self.world = None
        self.sim_arms = []
        self._ledger: dict[int, dict] = {}

    def open(self) -> None:
        from scallop.sim.arm import SimArm
        from scallop.sim.camera import SimCamera
        from scallop.sim.world import SimWorld

        cfg = self.config
        self.world = SimWorld(cfg.sim, seed=self.seed, clock=self.clock)
        self.camera = SimCamera(self.world)
        self.camera.connect()
        e = cfg.sim.encoder
        self.mapping = BeltMapping(self.world.camera_model, e.counts_per_mm, e.direction)
        arms = cfg.arms or default_sim_arms(1)
        self.arm_configs = []
        try:
            for a in arms:
                sim = SimArm(a, clock=self.clock, grader=self.world)
                sim.start()
                self.sim_arms.append(sim)
                self.arm_configs.append(replace(a, transport=sim.transport_config()))
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        # The arms stay listed after closing: their records are the run's ground truth.
        for a in self.sim_arms:
            a.close()
        super().close()

    def sim_arm(self, name: str):
        for cfg, a in zip(self.arm_configs, self.sim_arms):
            if cfg.name == name:
                return a
        raise KeyError(name)

    def grade_of(self, arm: str, target_id: int) -> str | None:
        try:
            sim = self.sim_arm(arm)
        except KeyError:
            return None
        for rec in reversed(sim.records):
            if rec.target_id == target_id and rec.grade is not None:
                return rec.grade
        return None

    def observe(self, t: float) -> None:
        for s in self.world.scallops_at(t):
            row = self._ledger.get(s.id)
            if row is None:
                row = self._ledger[s.id] = {"had_uro": s.has_uro and not s.upside_down, "x": s.center_B[0]}
            row["x"] = s.center_B[0]
            row["has_uro"] = s.has_uro

    def truth_summary(self) -> dict:
        """Scallops that went past every arm, by what happened to their uro."""
        last = max(a.pick_window_x_mm[1] for a in self.arm_configs)
        passed = [r for r in self._ledger.values() if r["x"] > last]
        with_uro = [r for r in passed if r["had_uro"]]
        return {
            "passed": len(passed),
            "passed_with_uro": len(with_uro),
            "uro_left_on": sum(1 for r in with_uro if r["has_uro"]),
            "grades": dict(self.world.grades),
        }
