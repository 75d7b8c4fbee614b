"""Commissioning the simulated line as a plant engineer would commission a real one.

* :func:`true_calibration` — the line calibration file a perfect commissioning of the
  simulated line would write (the camera, belt pose, encoder and arms the simulator uses),
  for dry runs of the real camera path that should not depend on calibration error.
* :func:`write_commissioning` — what each ``scallop calibrate`` step and a camera + encoder
  dry run need, as files: board photos for the intrinsics, photos of a board lying flat on
  the stopped belt, a recording of a board riding the belt (frames with their counts),
  the robot's touches of board corners, and a line configuration for the dry run. Running
  the commands of docs/calibration.md on them is the commissioning rehearsal.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt

import numpy as np

from scallop.calibration.store import LineCalibration
from scallop.robot.config import ArmConfig
from scallop.sim.config import FluorescenceConfig, SimConfig
from scallop.sim.fluorescence import fluorescence_homography
from scallop.sim.world import camera_model_from_config


def true_calibration(config: SimConfig, arms: list[ArmConfig]) -> LineCalibration:
    """The simulated line's exact calibration: intrinsics and belt pose of its camera, its
    encoder's scale and direction, each arm's configured ``robot_from_belt``, and with a second,
    fluorescence camera (``[sim.fluorescence] setup = "second_camera"``) its registration: the
    belt-plane homography between the two camera models, and its own intrinsics. Alternate
    frames on the colour camera need no registration part (the belt's shift comes from the
    encoder counts of each pair)."""
    cam = camera_model_from_config(config.camera)
    when = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    truth = {"when": when, "verdict": "good", "source": "simulator truth"}
    cal = LineCalibration.new(cam.image_size, "sim")
    cal.set_intrinsics(
        truth
        | {"camera": "sim", "image_size": list(cam.image_size), "K": cam.K.tolist(), "dist": cam.dist.tolist()}
        | {"rms_px": 0.0, "model": "truth"}
    )
    cal.set_belt(truth | {"R": cam.R.tolist(), "t": cam.t.tolist(), "placement": {"origin_mm": [0.0, 0.0]}})
    e = config.encoder
    cal.set_encoder(
        truth | {"counts_per_mm": e.counts_per_mm, "count_sign": e.direction, "travel_dir": [1.0, 0.0]}, align=False
    )
    for a in arms:
        cal.set_arm(a.name, truth | {"robot_from_belt": np.asarray(a.robot_from_belt.matrix).tolist()})
    if config.fluorescence.setup == "second_camera":
        fluo = camera_model_from_config(config.fluorescence)
        cal.set_fluorescence(
            truth
            | {
                "homography": fluorescence_homography(fluo, cam).tolist(),
                "image_size": list(fluo.image_size),
                "K": fluo.K.tolist(),
                "dist": fluo.dist.tolist(),
                "R": fluo.R.tolist(),
                "t": fluo.t.tolist(),
                "plane_z_mm": 0.0,
                "residual_max_mm": 0.0,
            }
        )
    return cal


BOARD = "chessboard:9x6:25"
BOARD_ORIGIN_MM = (-100.0, 60.0)  # where the engineer lays the board's corner 0, belt frame
BOARD_THICKNESS_MM = 3.0
RIDE_COUNTS_START = 7000
# Where the board's centre lies for the fluorescence pairs (belt mm): the middle and the four
# corners of the area both cameras see, the whole board inside both views.
FLUORESCENCE_PLACES_MM = ((0.0, 0.0), (-170.0, 70.0), (170.0, 70.0), (-170.0, -70.0), (170.0, -70.0))
TOUCH_SIGMA_MM = 0.2


def write_commissioning(folder, config: SimConfig, arms: list[ArmConfig], seed: int = 1, dryrun_s: float = 30.0):
    """Write what commissioning the simulated line needs into ``folder`` (see the module
    docstring and the README.md it writes); returns the commands, in order, as argument lists
    for ``scallop`` (with this folder's paths)."""
    from pathlib import Path

    import cv2

    from scallop.sim.boards import board_corners_B, flat_pose, intrinsics_views, render_board
    from scallop.sim.camera import SimCamera
    from scallop.sim.clock import VirtualClock
    from scallop.sim.world import SimWorld
    from scallop.vision.recording import RecordingWriter

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    cam = camera_model_from_config(config.camera)
    rng = np.random.default_rng(seed)
    th = BOARD_THICKNESS_MM

    def save(path: Path, img: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(path), img):
            raise OSError(f"{path}: cannot be written")

    for name, img in intrinsics_views(cam, BOARD, 15, seed=seed):
        save(root / "intrinsics" / name, img)
    flat = flat_pose(BOARD_ORIGIN_MM, 0.0, th)
    save(root / "belt" / "flat.png", render_board(cam, BOARD, flat, seed=seed * 10 + 1))
    for k, origin in enumerate(((-250.0, 140.0), (50.0, -20.0))):
        save(
            root / "belt" / f"more{k + 1}.png",
            render_board(cam, BOARD, flat_pose(origin, 0.0, th), seed=seed * 10 + 2 + k),
        )
    save(root / "check" / "board.png", render_board(cam, BOARD, flat_pose((-60.0, 40.0), 0.0, th), seed=seed * 10 + 9))

    # With a second, fluorescence camera: its own board photos for its intrinsics, and pairs of
    # photos of the board lying still where both cameras see it (docs/fluorescence.md).
    second = config.fluorescence.setup == "second_camera"
    if second:
        from scallop.calibration.boards import parse_board

        fcam = camera_model_from_config(config.fluorescence)
        for name, img in intrinsics_views(fcam, BOARD, 15, seed=seed + 1):
            save(root / "fluorescence-intrinsics" / name, np.ascontiguousarray(img[:, :, 2]))
        b = parse_board(BOARD)
        nx, ny = b.corner_grid
        for k, (cx, cy) in enumerate(FLUORESCENCE_PLACES_MM):
            pose = flat_pose((cx - (nx - 1) * b.square_mm / 2, cy + (ny - 1) * b.square_mm / 2), 0.0, th)
            save(root / "fluorescence" / f"colour{k + 1}.png", render_board(cam, BOARD, pose, seed=seed * 10 + 20 + k))
            # The fluorescence camera's 650-700 nm filter passes the red of white light: one channel.
            uv = render_board(fcam, BOARD, pose, seed=seed * 10 + 30 + k)[:, :, 2]
            save(root / "fluorescence" / f"uv{k + 1}.png", np.ascontiguousarray(uv))

    # The board riding the belt through the view, recorded as the camera would: frames with
    # the count latched at each exposure (a recording, as 'scallop capture' writes one).
    e = config.encoder
    with RecordingWriter(root / "encoder-ride", "sim", "latched", "png") as w:
        for k, travel in enumerate(np.linspace(0.0, 300.0, 7)):
            pose = flat_pose((BOARD_ORIGIN_MM[0] - 150.0 + travel, BOARD_ORIGIN_MM[1]), 0.0, th)
            count = RIDE_COUNTS_START + e.direction * round(travel * e.counts_per_mm)
            w.add(
                _frame(render_board(cam, BOARD, pose, seed=seed * 100 + k), travel / config.belt.speed_mm_s, count, k)
            )

    # Each arm touches the board's four outer inner corners after the belt carried it from
    # where it was photographed (belt/flat.png) into that arm's pick window.
    corners = board_corners_B(BOARD, flat)
    touches = {}
    for a in arms:
        shift = 0.5 * (a.pick_window_x_mm[0] + a.pick_window_x_mm[1]) - BOARD_ORIGIN_MM[0]
        moved = e.direction * round(shift * e.counts_per_mm)
        lines = [f"# arm {a.name}: touched after the belt ran {moved} counts", "corner,robot_x,robot_y,robot_z"]
        for cid in (0, 8, 45, 53):
            p = a.robot_from_belt.apply(corners[cid] + [moved / (e.direction * e.counts_per_mm), 0.0, 0.0])
            p = p + rng.normal(0.0, TOUCH_SIGMA_MM, 3)
            lines.append(f"{cid},{p[0]:.3f},{p[1]:.3f},{p[2]:.3f}")
        (root / "robot").mkdir(exist_ok=True)
        (root / "robot" / f"{a.name}.csv").write_text("\n".join(lines) + "\n")
        touches[a.name] = moved

    # The dry run: the line's camera recorded on the simulated line, with a second camera its
    # fluorescence frames too, as 'scallop capture' records them; line.toml reads them.
    clock = VirtualClock()
    world = SimWorld(
        config if second else dataclasses.replace(config, fluorescence=FluorescenceConfig()), seed=seed, clock=clock
    )
    camera = SimCamera(world)
    camera.connect()
    with RecordingWriter(
        root / "dryrun", "sim", "latched", "jpg", fluorescence="second_camera" if second else "none"
    ) as w:
        while clock.now() < dryrun_s:
            w.add(camera.read())
    (root / "line.toml").write_text(line_toml(arms, fluorescence=config.fluorescence if second else None))

    calib = root / "line.json"
    cmds = [
        ["calibrate", "intrinsics", "--board", BOARD, "--camera-name", "sim", "--out", calib, root / "intrinsics"],
        ["calibrate", "belt", "--calib", calib, "--board", BOARD, "--origin", *map(str, BOARD_ORIGIN_MM)]
        + [
            "--thickness-mm",
            str(th),
            root / "belt" / "flat.png",
            root / "belt" / "more1.png",
            root / "belt" / "more2.png",
        ],
        ["calibrate", "encoder", "--calib", calib, "--board", BOARD, "--counts", root / "encoder-ride" / "frames.csv"],
    ]
    if second:
        n = len(FLUORESCENCE_PLACES_MM)
        uv_cal = root / "uv-camera.json"
        cmds += [
            ["calibrate", "intrinsics", "--board", BOARD, "--camera-name", "uv", "--out", uv_cal]
            + [root / "fluorescence-intrinsics"],
            ["calibrate", "fluorescence", "--calib", calib, "--board", BOARD, "--thickness-mm", str(th)]
            + ["--fluorescence-intrinsics", uv_cal, "--colour"]
            + [root / "fluorescence" / f"colour{k + 1}.png" for k in range(n)]
            + ["--fluorescence"]
            + [root / "fluorescence" / f"uv{k + 1}.png" for k in range(n)],
        ]
    for a in arms:
        cmds.append(
            ["calibrate", "robot", "--calib", calib, "--arm", a.name, "--points", root / "robot" / f"{a.name}.csv"]
            + ["--image", root / "belt" / "flat.png", "--board", BOARD, "--moved-counts", str(touches[a.name])]
        )
    cmds += [
        ["calibrate", "check", "--calib", calib, root / "check" / "board.png"],
        ["calibrate", "show", calib, "--plan", root / "line.plan.png", "--config", root / "line.toml"],
        ["replay", root / "dryrun", "--config", root / "line.toml"],
    ]
    cmds = [[str(c) for c in cmd] for cmd in cmds]
    (root / "README.md").write_text(_readme(cmds, root))
    return cmds


def _frame(image: np.ndarray, t: float, count: int, index: int):
    from scallop.vision.camera import Frame

    return Frame(image=image, timestamp=t, encoder=count, index=index, source="sim")


def line_toml(
    arms: list[ArmConfig], calibration: str = "line.json", fluorescence: FluorescenceConfig | None = None
) -> str:
    """A line configuration for a dry run: the calibration file and the arms (their transports
    point at nothing: 'scallop replay' stands simulated arms in for them); ``fluorescence``: the
    simulator's second, fluorescence camera, which the line reads too (registered by the
    calibration's ``fluorescence`` part), so the file also runs the simulated line with it."""
    out = [
        "# The simulated line's configuration for the dry run (docs/calibration.md, commissioning",
        "# rehearsal). The arms' transports point at nothing: 'scallop replay' stands simulated arms in",
        "# for them; on the real line give each arm's address.",
        "",
        "[runtime]",
        f'calibration = "{calibration}"',
        "",
    ]
    if fluorescence is not None:
        if fluorescence.setup != "second_camera":
            raise ValueError(f"a dry run's second camera, not setup={fluorescence.setup!r}")
        sim = {k: v for k, v in dataclasses.asdict(fluorescence).items() if v is not None}
        out += [
            "# The second, fluorescence camera (docs/fluorescence.md). A replay takes its frames from the",
            "# recording, each with its colour frame; on the simulator from [sim.fluorescence] below; on",
            "# the real line 'source' names its device.",
            "[camera.fluorescence]",
            'setup = "second_camera"',
            'source = "sim"',
            "max_pair_ms = 4",
            "alarm_after = 5",
            "# The simulator's scene is flat: registered on the belt's plane.",
            "register_height_mm = 0",
            "",
            "[sim.fluorescence]",
            *(f"{k} = {_toml_value(v)}" for k, v in sim.items()),
            "",
        ]
    for a in arms:
        p = a.robot_from_belt
        out += [
            "[[arms]]",
            f'name = "{a.name}"',
            f"pick_window_x_mm = [{a.pick_window_x_mm[0]:g}, {a.pick_window_x_mm[1]:g}]",
            f"pick_window_y_mm = [{a.pick_window_y_mm[0]:g}, {a.pick_window_y_mm[1]:g}]",
            f"chute_mm = [{', '.join(f'{v:g}' for v in a.chute_mm)}]",
            f"ready_mm = [{', '.join(f'{v:g}' for v in a.ready_mm)}]",
            "[arms.robot_from_belt]",
            f"rotation_deg = [{', '.join(f'{v:g}' for v in p.rotation_deg)}]",
            f"translation_mm = [{', '.join(f'{v:g}' for v in p.translation_mm)}]",
            "[arms.workspace]",
            f"min_mm = [{', '.join(f'{v:g}' for v in a.workspace.min_mm)}]",
            f"max_mm = [{', '.join(f'{v:g}' for v in a.workspace.max_mm)}]",
            "[arms.transport]",
            'kind = "tcp"',
            'host = "127.0.0.1"',
            "port = 1502",
            "",
        ]
    return "\n".join(out)


def _toml_value(v) -> str:
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v) if isinstance(v, float) else str(v)  # repr: every digit, read back the same


def _readme(cmds: list[list[str]], root) -> str:
    lines = [
        "# Commissioning rehearsal",
        "",
        "What an engineer collects on the line, made by the simulator: board photos for the camera",
        "(intrinsics/), the board lying flat on the stopped belt (belt/, its corner 0 laid at belt",
        f"({BOARD_ORIGIN_MM[0]:g}, {BOARD_ORIGIN_MM[1]:g}) mm, {BOARD_THICKNESS_MM:g} mm plate), the board riding the belt",
        "(encoder-ride/, a recording), each arm's touches of the board's corners after the belt carried",
        "it into the arm's reach (robot/), a later photo for the drift check (check/), and a recording",
        "of the line's camera for the dry run (dryrun/). Run, in order (docs/calibration.md):",
        "",
    ]
    lines += ["    scallop " + " ".join(c.replace(str(root) + "/", "") for c in cmd) for cmd in cmds]
    if any(cmd[:2] == ["calibrate", "fluorescence"] for cmd in cmds):
        lines += [
            "",
            "The line has a second, fluorescence camera: its own board photos (fluorescence-intrinsics/)",
            "and five pairs of photos of the board lying still where both cameras see it, one by each",
            "camera (fluorescence/colourN.png + uvN.png; docs/fluorescence.md, calibrating the second camera).",
            "The dry run's recording holds that camera's frames too (dryrun/fluorescence/, each with its",
            "colour frame); line.toml reads them, registered by the calibration the steps above make.",
        ]
    lines += ["", "Every calibrate step must say verdict: GOOD; look at the pictures each writes next to line.json."]
    return "\n".join(lines) + "\n"
