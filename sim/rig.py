"""A hardware-free rig for the real camera path: everything a real line is wired to, simulated,
on wall time and on 127.0.0.1.

:class:`SimRig` runs the simulated world on the wall clock and serves it as the devices of a
real line: the camera as a live MJPEG stream from a process of its own
(:class:`~scallop.sim.stream.StreamProcess`), the
belt counter as a PLC register over Modbus TCP (:class:`~scallop.sim.counter.SimCounter`),
each arm as a Modbus arm (:class:`~scallop.sim.arm.SimArm`), plus the calibration file a
perfect commissioning would write. :meth:`SimRig.line_overrides` is the ``[camera]``,
``[camera.encoder]``, ``[runtime]`` and ``[[arms]]`` configuration of a line using them:
``scallop run`` then drives the hardware backend — OpenCV on a network stream, the sampled
counter, Modbus arms — with no device of its own.

The :class:`PickReferee` grades every pick against the world and keeps how far each grip
landed from the nearest true uro: the figure the tests and ``scallop bench camera`` hold the
line to. The line itself never asks it (a real line has no such truth).
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from scallop.robot.clock import SystemClock
from scallop.robot.config import ArmConfig
from scallop.sim.arm import SimArm
from scallop.sim.commission import true_calibration
from scallop.sim.config import SimConfig
from scallop.sim.counter import SimCounter
from scallop.sim.stream import StreamProcess
from scallop.sim.world import URO, SimWorld


@dataclass
class RefereedPick:
    t: float
    xy_B: tuple[float, float]
    uro_mm: float  # distance from the grip centre to the nearest true uro (0 on one; inf: none within reach)
    grade: str
    scallop_id: int


class PickReferee:
    """The world's referee, keeping each grip's distance from the nearest true uro.

    reach_mm: how far around the grip a uro is looked for (in 0.5 mm rings)."""

    def __init__(self, world: SimWorld, reach_mm: float = 10.0) -> None:
        self.world = world
        self.reach_mm = reach_mm
        self.picks: list[RefereedPick] = []
        self._lock = threading.Lock()

    def _uro_distance(self, xy: np.ndarray, t: float) -> float:
        for r in np.arange(0.0, self.reach_mm + 1e-9, 0.5):
            n = max(1, int(math.ceil(2 * math.pi * r / 0.5)))
            for a in np.linspace(0, 2 * math.pi, n, endpoint=False):
                if self.world.part_at(xy + r * np.array([math.cos(a), math.sin(a)]), t)[0] == URO:
                    return float(r)
        return math.inf

    def grade_pick(self, xy_B, t: float, pull_dir_B):
        xy = np.asarray(xy_B, dtype=np.float64).ravel()[:2]
        g = self.world.grade_pick(xy, t, pull_dir_B)
        # A removed uro was under the grip (1 mm tolerance); only a miss is searched around,
        # and it left its uro (if any) where it was.
        d = 0.0 if g.result == "uro_removed" else self._uro_distance(xy, t)
        with self._lock:
            self.picks.append(RefereedPick(t, (float(xy[0]), float(xy[1])), d, g.result, g.scallop_id))
        return g


class SimRig:
    """``with SimRig(sim_config, arms, seed=1) as rig: cfg = load_config(None, rig.line_overrides(tmp))``.

    fps / latency_s: the stream's frame rate and pipeline delay (exposure → frame sent).
    """

    def __init__(
        self,
        config: SimConfig,
        arms: list[ArmConfig],
        seed: int = 0,
        fps: float = 10.0,
        latency_s: float = 0.05,
    ) -> None:
        self.config = config
        self.clock = SystemClock()
        self.world = SimWorld(config, seed=seed, clock=self.clock)
        self.referee = PickReferee(self.world)
        self.stream = StreamProcess(self.world, fps=fps, latency_s=latency_s)
        self.counter = SimCounter(self.world)
        self.arm_configs = arms
        self.arms = [SimArm(a, clock=self.clock, grader=self.referee) for a in arms]

    def start(self) -> SimRig:
        try:
            self.counter.start()
            for a in self.arms:
                a.start()
            self.stream.start()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        self.stream.close()
        self.counter.close()
        for a in self.arms:
            a.close()

    def __enter__(self) -> SimRig:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def line_overrides(self, folder: str | Path, latency_s: float | None = None) -> dict:
        """The line configuration (as ``load_config`` overrides) for this rig; the true
        calibration file is written into ``folder``. ``latency_s`` is the camera's delay as
        the line is told it (default: the stream's)."""
        path = Path(folder) / "line-calibration.json"
        true_calibration(self.config, self.arm_configs).save(path)
        arms = [asdict(replace(a.config, transport=a.transport_config())) for a in self.arms]
        return {
            "camera": {
                "source": self.stream.url,
                "width": self.config.camera.width,
                "height": self.config.camera.height,
                "encoder": {
                    "source": "modbus",
                    "host": "127.0.0.1",
                    "port": self.counter.port,
                    "address": self.counter.address,
                    "words": self.counter.words,
                    "latency_s": self.stream.latency_s if latency_s is None else latency_s,
                    "timeout_s": 0.1,
                },
            },
            "runtime": {"calibration": str(path)},
            "arms": arms,
        }

    def material_positions(self, t: float) -> dict[int, tuple[float, float]]:
        """Every scallop in the camera's view at ``t``: id → (x along the belt material, y),
        the coordinates of the record's ``x_mm``/``y_mm`` (with the simulator's encoder offset 0)."""
        travel = self.world.travel_mm(t)
        return {s.id: (s.center_B[0] - travel, s.center_B[1]) for s in self.world.visible_scallops(t)}
