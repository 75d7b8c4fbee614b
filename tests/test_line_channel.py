"""The fluorescence channel on the line: the pair check, the registration against the
simulator's exact one, the alarms, and the two real camera set-ups (docs/fluorescence.md)."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

from scallop.app.alarms import Alarms
from scallop.app.config import FluorescenceSection, LineConfig, build
from scallop.app.line.channel import ALARM, SEEN_MARGIN_MM, FluorescenceInput
from scallop.calibration.fluorescence import Registration
from scallop.errors import ConfigError
from scallop.robot.belt import Belt
from scallop.sim.camera import SimCamera
from scallop.sim.clock import VirtualClock
from scallop.sim.commission import true_calibration
from scallop.sim.config import SimConfig
from scallop.sim.world import SimWorld
from scallop.vision.camera import Camera, CameraError, Frame
from scallop.vision.channels import AlternateFramesCamera, ChannelExposure, SecondCameraPair
from tests.test_sim_fluorescence import ALTERNATE, SECOND


def _world(fluorescence: dict, seed: int = 7, **camera) -> SimWorld:
    data = {
        "camera": {"width": 640, "height": 480, "mm_per_px": 0.5, **camera},
        "arrivals": {"rate_per_s": 3.0, "touch_share": 0.0},
        "fluorescence": fluorescence,
    }
    return SimWorld(build(SimConfig, data), seed=seed, clock=VirtualClock())


def _input(world: SimWorld, alarms: Alarms, max_pair_ms: float = 30.0, alarm_after: int = 3) -> FluorescenceInput:
    e = world.config.encoder
    fl = world.fluorescence
    reg = None
    if fl.setup == "second_camera":
        # What a calibration file gives the line: the simulator's true one.
        reg = Registration.from_calibration(true_calibration(world.config, []))
    return FluorescenceInput(
        fl.setup,
        world.camera_model,
        Belt(e.counts_per_mm, e.direction),
        max_pair_ms,
        alarm_after,
        alarms,
        registration=reg,
    )


@pytest.mark.parametrize(
    ("setup", "camera", "tol"),
    [
        # The same camera: only the belt's travel between the two exposures (6 mm at 300 mm/s).
        (ALTERNATE, {}, 1.5),
        (ALTERNATE, {"distortion": [-0.2, 0.05, 0.0, 0.0, 0.0], "tilt_deg": 8.0}, 1.5),
        # Another camera: the calibrated belt-plane homography, then the same travel.
        (SECOND, {}, 1.5),
        # Lens distortion: the registration undistorts, maps and distorts again, exactly.
        (SECOND, {"distortion": [-0.2, 0.05, 0.0, 0.0, 0.0], "tilt_deg": 8.0}, 1.5),
        # Aimed 80 mm downstream: a band of the colour frame it does not see.
        (SECOND | {"center_x_mm": 80.0}, {}, 1.5),
    ],
)
def test_the_line_registers_the_channel_as_the_simulator_does(setup, camera, tol):
    w = _world(setup, **camera)
    cam = SimCamera(w)
    cam.connect()
    ch = _input(w, Alarms())
    diffs = []
    for _ in range(4):
        for _ in range(3):  # a second apart: scallops in view
            frame = cam.read()
        got = ch.pair(frame)
        truth = frame.extra["fluorescence"]
        assert got is not None
        uv = got.image
        assert uv.shape == frame.image.shape[:2] and uv.dtype == np.uint8
        # What the line takes for seen is what the simulated exposure covered, less a margin
        # along the part it did not (parallax and blur): never more.
        seen = np.ones(uv.shape, bool) if got.seen is None else got.seen
        more = seen & ~truth.coverage
        more[0], more[-1], more[:, 0], more[:, -1] = False, False, False, False  # -1e-6 px outside (rounding)
        assert not more.any()
        r = int(np.ceil(SEEN_MARGIN_MM / w.camera_model.mm_per_px_center())) + 1
        inner = cv2.erode(truth.coverage.view(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)).view(bool)
        assert not (inner & ~seen).any()
        assert (got.seen is None) == bool(truth.coverage.all())
        assert got.seen_share == pytest.approx(float(seen.mean()))  # what a kept frame's record says
        # Inside the part both saw, a pixel or so from its edge.
        inner = truth.coverage.copy()
        inner[:4], inner[-4:], inner[:, :4], inner[:, -4:] = False, False, False, False
        diffs.append(np.abs(uv[inner].astype(float) - truth.registered[inner]).mean())
        # The belt's travel between the two exposures, from their encoder counts (alternate frames).
        if setup is ALTERNATE:
            assert ch.last_shift_mm == pytest.approx(truth.shift_mm, abs=0.15)
    assert max(diffs) < tol, diffs
    assert ch.pairs == 4 and not ch.dropped


def test_pairs_too_far_apart_or_without_a_partner_are_dropped_and_alarmed_when_it_persists():
    w = _world(ALTERNATE)
    cam = SimCamera(w)
    cam.connect()
    alarms = Alarms()
    ch = _input(w, alarms, max_pair_ms=10.0, alarm_after=3)  # the frame interval is 20 ms
    frame = cam.read()
    assert ch.pair(frame) is None
    assert "+20.0 ms from it, more than camera.fluorescence.max_pair_ms = 10" in alarms.get(ALARM).text
    assert alarms.get(ALARM).severity == "warning" and not ch.lost
    alone = Frame(frame.image, frame.timestamp, frame.encoder, 5, extra={"fluorescence_missing": "strobe off"})
    ch.pair(alone)
    ch.pair(alone)
    assert ch.lost and alarms.get(ALARM).severity == "critical"
    assert "fluorescence channel lost: 3 frames in a row without it (strobe off)" in alarms.get(ALARM).text
    assert ch.dropped == {"apart": 1, "missing": 2}
    # A good pair clears it.
    wide = _input(w, alarms, max_pair_ms=30.0)
    assert wide.pair(cam.read()) is not None and not alarms.is_active(ALARM)


def test_a_window_exactly_the_frame_interval_keeps_every_pair():
    """max_pair_ms equal to the frame interval is allowed by the loader ("at least the frame
    interval"), but float rounding of the two stamps put some pairs a hair past it: dropped
    as "apart", and after a few the channel was alarmed lost."""
    w = _world(ALTERNATE)
    cam = SimCamera(w)
    cam.connect()
    alarms = Alarms()
    ch = _input(w, alarms, max_pair_ms=w.config.fluorescence.frame_interval_ms, alarm_after=3)
    for _ in range(40):
        ch.pair(cam.read())
    assert ch.pairs == 40 and not ch.dropped and not alarms.is_active(ALARM)


@pytest.mark.parametrize(
    ("setup", "blamed"), [(ALTERNATE, "the UV light did not fire"), (SECOND, "the fluorescence camera gave no frame")]
)
def test_a_lost_fluorescence_frame_blames_the_part_the_optics_have(setup, blamed):
    """A second camera has no strobe: its outage named the UV light, pointing the operator at
    the wrong part."""
    w = _world(setup)
    cam = SimCamera(w)
    cam.connect()
    cam.lose_fluorescence(1)
    frame = cam.read()
    assert frame.extra["fluorescence_missing"] == f"{blamed} (injected fault)"


def test_a_pair_whose_belt_travel_is_unknown_is_dropped():
    w = _world(ALTERNATE)
    cam = SimCamera(w)
    cam.connect()
    ch = _input(w, Alarms())
    frame = cam.read()
    fr = frame.extra["fluorescence"]
    frame.extra["fluorescence"] = ChannelExposure(fr.image, fr.timestamp, None)
    assert ch.pair(frame) is None and ch.dropped == {"uncounted": 1}


def test_a_partner_whose_count_no_belt_could_give_is_dropped_and_a_stopping_belt_is_not():
    """Alternate frames 20 ms apart at 300 mm/s: 6 mm of travel. A partner count 200 mm off (a
    glitch on its latch, a damaged recording) would register the glow off the uro: dropped and
    named. A belt that stopped between the two (no travel where 6 mm were due) still pairs."""
    w = _world(ALTERNATE)
    cam = SimCamera(w)
    cam.connect()
    alarms = Alarms()
    ch = _input(w, alarms)
    assert ch.pair(cam.read()) is not None  # the first frame: no speed yet, so no check
    frame = cam.read()
    fr = frame.extra["fluorescence"]
    per_mm = w.config.encoder.counts_per_mm * w.config.encoder.direction
    frame.extra["fluorescence"] = ChannelExposure(fr.image, fr.timestamp, fr.encoder + int(200 * per_mm))
    assert ch.pair(frame) is None and ch.dropped == {"counts": 1}
    assert "count puts the belt +206.0 mm from it, where the belt's speed says +6.0 mm" in alarms.get(ALARM).text
    frame = cam.read()
    fr = frame.extra["fluorescence"]
    frame.extra["fluorescence"] = ChannelExposure(fr.image, fr.timestamp, frame.encoder)  # the belt stood still
    assert ch.pair(frame) is not None and ch.last_shift_mm == 0.0 and ch.dropped == {"counts": 1}


@pytest.mark.parametrize(
    ("setup", "want"), [(SECOND, "the calibration registered"), (ALTERNATE, "the colour frame is")]
)
def test_a_fluorescence_image_of_another_size_than_registered_is_dropped(setup, want):
    """The registration maps pixels of one image size: a camera that comes back in another mode
    would put the glow beside the uro. The pair is dropped, named, and the next good one counts."""
    w = _world(setup)
    cam = SimCamera(w)
    cam.connect()
    alarms = Alarms()
    ch = _input(w, alarms, alarm_after=2)
    frame = cam.read()
    fr = frame.extra["fluorescence"]
    h, wd = fr.image.shape
    small = cv2.resize(fr.image, (wd // 2, h // 2), interpolation=cv2.INTER_AREA)
    frame.extra["fluorescence"] = ChannelExposure(small, fr.timestamp, fr.encoder)
    assert ch.pair(frame) is None and ch.dropped == {"size": 1}
    assert f"fluorescence image {wd // 2}x{h // 2}, {want} {wd}x{h}" in alarms.get(ALARM).text
    frame.extra["fluorescence"] = ChannelExposure(fr.image.T.copy(), fr.timestamp, fr.encoder)  # w and h swapped
    assert ch.pair(frame) is None and ch.lost
    assert ch.pair(cam.read()) is not None and not alarms.is_active(ALARM)


def test_a_second_cameras_frame_without_a_count_is_moved_by_the_belt_speed_over_the_time_between():
    w = _world(SECOND)
    cam = SimCamera(w)
    cam.connect()
    ch = _input(w, Alarms(), max_pair_ms=2.0)
    first = cam.read()
    fr = first.extra["fluorescence"]
    first.extra["fluorescence"] = ChannelExposure(fr.image, fr.timestamp + 0.001, None)
    # No belt speed yet (one frame's count): the travel over that millisecond is unknown.
    assert ch.pair(first) is None and ch.dropped == {"uncounted": 1}
    frame = cam.read()
    fr = frame.extra["fluorescence"]
    # The same stamp: no travel between the two exposures.
    frame.extra["fluorescence"] = ChannelExposure(fr.image, fr.timestamp, None)
    got = ch.pair(frame)
    assert got is not None and ch.last_dt_ms == pytest.approx(0.0) and ch.last_shift_mm == 0.0
    assert np.array_equal(got.image, fr.registered)
    frame = cam.read()
    fr = frame.extra["fluorescence"]
    frame.extra["fluorescence"] = ChannelExposure(fr.image, fr.timestamp + 0.0015, None)
    assert ch.pair(frame) is not None
    assert ch.last_shift_mm == pytest.approx(300.0 * 0.0015, abs=0.01)  # 300 mm/s from the counts


def test_a_second_camera_without_a_registration_is_refused():
    w = _world(SECOND)
    e = w.config.encoder
    with pytest.raises(ValueError, match="has no registration: run 'scallop calibrate fluorescence'"):
        FluorescenceInput("second_camera", w.camera_model, Belt(e.counts_per_mm, e.direction), 5, 3, Alarms())


# ------------------------------------------------------------------ configuration
def test_the_section_requires_its_physical_settings():
    with pytest.raises(ValueError, match="max_pair_ms is required"):
        FluorescenceSection(setup="alternate", alarm_after=5)
    with pytest.raises(ValueError, match="max_pair_ms=nan"):
        FluorescenceSection(setup="alternate", alarm_after=5, max_pair_ms=float("nan"))
    with pytest.raises(ValueError, match="setup = 'alternate' uses the colour camera itself"):
        FluorescenceSection(setup="alternate", source="1", alarm_after=5, max_pair_ms=25.0)
    with pytest.raises(ValueError, match="source is required"):
        FluorescenceSection(setup="second_camera", alarm_after=5, max_pair_ms=2.0)
    with pytest.raises(ValueError, match="no use with setup = 'none'"):
        FluorescenceSection(max_pair_ms=2.0)
    ok = FluorescenceSection(setup="alternate", alarm_after=5, max_pair_ms=25.0)
    assert ok.enabled


def test_a_second_camera_needs_the_height_it_is_registered_at():
    base = {"setup": "second_camera", "source": "1", "alarm_after": 5, "max_pair_ms": 2.0}
    with pytest.raises(ValueError, match="register_height_mm is required with setup = 'second_camera'"):
        FluorescenceSection(**base)
    for bad in (float("nan"), 61.0, -0.5):
        with pytest.raises(ValueError, match="register_height_mm=.* (is out of range|is not a finite)"):
            FluorescenceSection(**base, register_height_mm=bad)
    assert FluorescenceSection(**base, register_height_mm=15.0).register_height_mm == 15.0
    with pytest.raises(ValueError, match="setup = 'alternate' reads the colour camera's own pixels"):
        FluorescenceSection(setup="alternate", alarm_after=5, max_pair_ms=25.0, register_height_mm=15.0)


def test_the_second_camera_is_registered_at_the_configured_height():
    """The board's plane: the stored homography. Above it: the plane's, from the two cameras'
    poses, a parallax off the board's. Without the fluorescence camera's pose only the board's
    plane can be registered, and the line's error says how to measure the pose."""
    from scallop.app.backends import fluorescence_registration
    from scallop.calibration.errors import MissingPartError

    w = _world(SECOND)
    cal = true_calibration(w.config, [])  # the board's plane is the belt: plane_z_mm 0
    px = np.array([[100.0, 100.0], [320.0, 240.0], [600.0, 400.0]])

    def at(h):
        reg = fluorescence_registration(cal, FluorescenceSection(**SECOND_LINE, register_height_mm=h))
        return reg.to_fluorescence(px)

    np.testing.assert_allclose(at(0.0), Registration.from_calibration(cal).to_fluorescence(px), atol=1e-9)
    np.testing.assert_allclose(at(0.4), at(0.0), atol=1e-9)  # within 0.5 mm of the board's plane
    up = at(15.0)
    np.testing.assert_allclose(up, Registration.from_calibration(cal, z_mm=15.0).to_fluorescence(px), atol=1e-9)
    # The rig's cameras stand apart: 15 mm up moves the fluorescence pixel by a few pixels.
    shift = np.linalg.norm(up - at(0.0), axis=1)
    assert np.all((shift > 2.0) & (shift < 20.0)), shift
    for key in ("K", "dist", "R", "t"):
        del cal.data["fluorescence"][key]  # measured without the fluorescence camera's intrinsics
    np.testing.assert_allclose(at(0.0), Registration.from_calibration(cal).to_fluorescence(px), atol=1e-9)
    with pytest.raises(
        MissingPartError,
        match=r"register_height_mm = 15: .*--fluorescence-intrinsics; or register at the board's plane, 0 mm",
    ):
        at(15.0)


SECOND_LINE = {"setup": "second_camera", "source": "sim", "max_pair_ms": 2.0, "alarm_after": 5}


def test_a_simulated_line_with_a_second_camera_reads_the_channel(tmp_path):
    from tests.helpers import make_line

    # One that sees the whole colour frame (SECOND sees 43 % of the line's: refused, below).
    wide = SECOND | {"width": 1280, "height": 960, "mm_per_px": 0.6}
    line = make_line(
        tmp_path,
        overrides={
            "sim": {"fluorescence": wide},
            "camera": {"fluorescence": SECOND_LINE | {"register_height_mm": 0.0}},
        },
    )
    try:
        assert line.pipeline.takes_uv
        line.start("t")
        line.run_stepped(10.0)
        st = line.channel_status()
        # Not strobed: the second camera exposes with every colour frame, the first one too.
        assert st["setup"] == "second_camera" and st["pairs"] == line.frames >= 5 and not st["dropped"], st
        assert st["belt_level"] < 10 < st["glow_level"]
        # What the panel needs to judge the glow: how many scallops the last frame showed whole.
        assert isinstance(st["scallops_in_view"], int) and st["glow_needs_scallops"] == 2
        assert line.summary()["picked"] > 0
        # A plant dashboard and the --duration summary see the channel too.
        assert line.summary()["channel"] == {
            "setup": "second_camera",
            "pairs": st["pairs"],
            "dropped": {},
            "lost": False,
            "dark": False,
            "misregistered": False,
        }
        metrics = line.metrics_text()
        assert f"scallop_fluorescence_pairs_total {float(st['pairs'])}" in metrics
        assert "scallop_fluorescence_lost 0.0" in metrics and 'scallop_fluorescence_level{what="glow"}' in metrics
    finally:
        line.close()


def test_the_simulator_and_the_line_must_expect_the_same_channel():
    sim = {"fluorescence": ALTERNATE}
    with pytest.raises((ValueError, ConfigError), match="simulator renders 'alternate'"):
        build(LineConfig, {"sim": sim})
    cfg = build(
        LineConfig,
        {
            "sim": sim,
            "camera": {"fluorescence": {"setup": "alternate", "max_pair_ms": 25.0, "alarm_after": 5}},
        },
    )
    assert cfg.camera.fluorescence.setup == "alternate"


# ------------------------------------------------------------------ real camera set-ups
class ListCamera(Camera):
    """Frames from a list; a CameraError where the list holds one (written for these tests)."""

    def __init__(self, items) -> None:
        super().__init__()
        self.items = list(items)
        self.connects = 0

    @property
    def resolution(self):
        return (8, 6)

    def connect(self) -> None:
        self.connects += 1
        self._connected = True

    def disconnect(self) -> None:
        self._connected = False

    def read(self) -> Frame:
        item = self.items.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


def _frame(index: int, t: float, level: int, encoder: int | None = None) -> Frame:
    return Frame(np.full((6, 8, 3), level, np.uint8), t, encoder=encoder, index=index)


def test_alternate_frames_pair_each_colour_frame_with_the_next():
    frames = [_frame(i, i * 0.02, 150 if i % 2 == 0 else 20, 100 * i) for i in range(4)]
    cam = AlternateFramesCamera(ListCamera(frames))
    cam.connect()
    a, b = cam.read(), cam.read()
    assert (a.index, b.index) == (0, 2)
    exp = a.extra["fluorescence"]
    assert exp.index == 1 and exp.encoder == 100 and exp.timestamp == pytest.approx(0.02)
    assert exp.image.shape == (6, 8) and int(exp.image[0, 0]) == 20


def test_alternate_frames_are_told_apart_by_brightness_whatever_the_frame_numbers_say():
    # A driver numbering only the frames it delivers (OpenCV): no gap shows when one is lost.
    C, U = 150, 20
    # The UV frame of pair 2 lost: colour frame 2 comes alone; 3 + 4 pair again.
    cam = AlternateFramesCamera(ListCamera([_frame(i, i * 0.02, v) for i, v in enumerate([C, U, C, C, U])]))
    cam.connect()
    assert cam.read().extra["fluorescence"].index == 1
    alone = cam.read()
    assert alone.index == 2 and "fluorescence" not in alone.extra
    assert "frame 3 is as bright as a colour frame" in alone.extra["fluorescence_missing"]
    assert cam.read().extra["fluorescence"].index == 4
    # The colour frame of pair 2 lost: its UV frame is let go, never taken for a colour frame.
    cam = AlternateFramesCamera(ListCamera([_frame(i, i * 0.02, v) for i, v in enumerate([C, U, U, C, U])]))
    cam.connect()
    a, b = cam.read(), cam.read()
    assert (a.index, a.extra["fluorescence"].index, b.index, b.extra["fluorescence"].index) == (0, 1, 3, 4)
    assert cam.rephased == 1
    # A camera with true frame numbers: a gap leaves the colour frame alone.
    cam = AlternateFramesCamera(ListCamera([_frame(0, 0.0, C), _frame(3, 0.06, U)]))
    cam.connect()
    assert "frame 1 (its fluorescence frame) did not arrive: got frame 3" in cam.read().extra["fluorescence_missing"]
    # The UV light off: every frame white, each colour frame comes alone.
    cam = AlternateFramesCamera(ListCamera([_frame(i, i * 0.02, C) for i in range(3)]))
    cam.connect()
    assert "the UV light is off or weak" in cam.read().extra["fluorescence_missing"]


def test_a_second_camera_is_matched_by_time_and_its_loss_never_stops_the_colour_frames():
    colour = ListCamera([_frame(i, i * 0.1, 150) for i in range(4)])
    # Its frame for t = 0.0 is late (stale one first), then it fails, then comes back.
    fluo = ListCamera(
        [_frame(7, -0.1, 20), _frame(8, 0.001, 20), CameraError("cable"), _frame(10, 0.3, 20), _frame(11, 0.4, 20)]
    )
    pair = SecondCameraPair(colour, fluo, window_s=0.005, retry_s=(0.1, 0.4))
    pair.connect()
    a = pair.read()
    assert a.extra["fluorescence"].index == 8 and a.extra["fluorescence"].encoder is None
    b = pair.read()
    assert "the fluorescence camera is not delivering (cable)" in b.extra["fluorescence_missing"]
    c = pair.read()  # reconnected; its next frame is the t = 0.3 one, which is not c's (t = 0.2)
    assert "no fluorescence frame near this exposure" in c.extra["fluorescence_missing"]
    d = pair.read()
    assert d.extra["fluorescence"].index == 10
    assert fluo.connects == 2  # the start, and once after the cable came back


class DeadCamera(ListCamera):
    """Opens only once ``alive`` is set; reads fail until then (written for these tests)."""

    def __init__(self) -> None:
        super().__init__([])
        self.alive = False

    def connect(self) -> None:
        self.connects += 1
        if not self.alive:
            raise CameraError("no such device")
        self._connected = True

    def read(self) -> Frame:
        if not self.alive:
            raise CameraError("no such device")
        return _frame(99, self.t, 20)


def _retry_times(fluo: Camera, seconds: int):
    """A pair of a 60 fps colour camera (20 s of frames) and ``fluo``, read for ``seconds``
    while ``fluo`` fails: (the pair, the colour camera, the stamps at which it was retried)."""
    colour = ListCamera([_frame(i, i / 60, 150) for i in range(60 * 20)])
    pair = SecondCameraPair(colour, fluo, window_s=0.005, retry_s=(0.5, 4.0))
    pair.connect()  # the colour camera opens; the second one's failure is reported per frame
    tried_at = []
    for _ in range(60 * seconds):
        f = pair.read()
        assert "the fluorescence camera is not delivering (no such device)" in f.extra["fluorescence_missing"]
        if pair.reconnect_tries > len(tried_at):
            tried_at.append(round(f.timestamp, 2))
    return pair, colour, tried_at


def test_a_dead_second_camera_is_tried_again_with_a_growing_wait_not_on_every_frame():
    fluo = DeadCamera()
    pair, colour, tried_at = _retry_times(fluo, 10)
    # It would not open at the start: tried again 0.5 s into the frames, then after 1, 2 and 4 s
    # (the cap), 4 times in 10 s rather than on each of 600 frames.
    assert tried_at == [0.5, 1.5, 3.5, 7.5]
    # It comes back: the next try (11.5 s) opens it, and the wait starts again from 0.5 s.
    fluo.alive = True
    while pair.reconnect_tries == 4:
        fluo.t = colour.items[0].timestamp
        f = pair.read()
    assert f.timestamp == pytest.approx(11.5, abs=0.02) and f.extra["fluorescence"].index == 99
    # Lost again: the wait starts again from 0.5 s.
    fluo.alive = False
    lost = pair.read().timestamp
    while pair.reconnect_tries == 5:
        f = pair.read()
    assert f.timestamp - lost == pytest.approx(0.5, abs=0.02)


class MuteCamera(DeadCamera):
    """Opens every time, never delivers a frame (written for these tests)."""

    def connect(self) -> None:
        self.connects += 1
        self._connected = True


def test_a_second_camera_that_opens_but_never_delivers_backs_off_too():
    _, _, tried_at = _retry_times(MuteCamera(), 16)
    # Its first read failed at once (t = 0): reopened after 0.5, 1, 2, 4, 4, 4 s, each reopen
    # followed by a failed read, not every 0.5 s for ever.
    assert tried_at == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5]


@pytest.mark.parametrize("bad", [(0.0, 1.0), (2.0, 1.0), (float("nan"), 1.0), (1.0, float("inf"))])
def test_the_retry_waits_are_checked(bad):
    with pytest.raises(ValueError, match="retry_s"):
        SecondCameraPair(ListCamera([]), ListCamera([]), window_s=0.005, retry_s=bad)


# ------------------------------------------------------------------ the line
LINE_CHANNEL = {
    "sim": {"fluorescence": ALTERNATE},
    "camera": {"fluorescence": {"setup": "alternate", "max_pair_ms": 25.0, "alarm_after": 4}},
}


def test_a_line_with_the_channel_runs_the_four_channel_model_and_stops_picking_when_the_channel_is_lost(tmp_path):
    from tests.helpers import make_line

    line = make_line(tmp_path, overrides=LINE_CHANNEL)
    try:
        assert line.pipeline.takes_uv  # the shipped four-channel model, chosen by the channel
        line.start("t")
        line.run_stepped(10.0)
        st = line.channel_status()
        # The first frame is exposed before the line's first heartbeat takes the PLC out of its
        # safe state, where the UV light stays off: it has no pair (and is not analysed).
        assert st["pairs"] == line.frames > 12 and st["dropped"] == {"missing": 1}
        assert st["last_shift_mm"] == pytest.approx(6.0, abs=0.15)  # 300 mm/s × 20 ms
        assert st["belt_level"] < 10 < st["glow_level"]
        assert line.latest_uv_jpeg()[:2] == b"\xff\xd8"
        # The line asked the PLC to strobe the lights (docs/plc-interface.md, section 8).
        assert line.reject.client.outputs.uv_strobe and line.backend.sim_plc.uv_strobe_at(line.clock.now())
        picked = line.summary()["picked"]
        assert picked > 0
        # The UV light stops firing: 4 frames in a row is the alarm, and the model is blind.
        line.backend.camera.lose_fluorescence(1000)
        line.run_stepped(6.0)
        a = line.alarms.get(ALARM)
        assert a.active and a.severity == "critical" and "the UV light did not fire" in a.text
        assert line.state == "waiting_camera" and line.frames_without_channel >= 4
        # No second alarm piles on for the same cause.
        assert not line.alarms.is_active("camera.silent")
        frames = line.frames
        line.run_stepped(4.0)
        assert line.frames == frames  # nothing analysed without the channel
        # The light comes back: pairs again, the alarm clears, picking resumes.
        line.backend.camera._no_uv = 0
        line.run_stepped(10.0)
        assert not line.alarms.is_active(ALARM) and line.state == "running"
        assert line.summary()["picked"] > picked and line.summary()["adductor_hits"] == 0
    finally:
        line.close()


def test_a_colour_model_on_a_line_with_the_channel_keeps_analysing_when_it_is_lost(tmp_path):
    from scallop.models.runtime import default_model_path
    from tests.helpers import make_line

    ov = {**LINE_CHANNEL, "vision": {"model": str(default_model_path())}}
    line = make_line(tmp_path, overrides=ov)
    try:
        assert not line.pipeline.takes_uv
        line.start("t")
        line.run_stepped(5.0)
        frames = line.frames
        line.backend.camera.lose_fluorescence(6)
        line.run_stepped(10.0)
        assert line.frames > frames + 6 and line.frames_without_channel == 0
        assert line.channel_status()["dropped"] == {"missing": 1 + 6}  # the first frame: see above
        assert not line.alarms.is_active(ALARM)  # pairs came back
    finally:
        line.close()


def test_a_four_channel_model_on_a_line_without_the_channel_is_refused(tmp_path):
    from scallop.app.build import build_line
    from scallop.app.config import load_config
    from scallop.models.runtime import default_uv_model_path

    cfg = load_config(overrides={"vision": {"model": str(default_uv_model_path())}})
    # Refused from the model's metadata before the record is opened: no run of a line that never ran.
    with pytest.raises(ConfigError, match="needs the fluorescence channel, which is not configured"):
        build_line(cfg, tmp_path / "record.sqlite", seed=1, clock=VirtualClock())
    assert not (tmp_path / "record.sqlite").exists()


def test_when_the_plc_stops_strobing_the_uv_light_the_channel_is_lost_and_comes_back(tmp_path):
    from tests.helpers import make_line

    line = make_line(tmp_path, overrides=LINE_CHANNEL)
    try:
        line.start("t")
        line.run_stepped(5.0)
        assert line.channel_status()["dropped"] == {"missing": 1}  # the first frame (see above)
        plc_strobe = line.backend.world.uv_strobe
        line.backend.world.uv_strobe = lambda t: False  # as if the PLC had its output off
        line.run_stepped(5.0)
        a = line.alarms.get(ALARM)
        assert a.active and a.severity == "critical" and "uv_strobe output is off" in a.text
        assert line.state == "waiting_camera"
        line.backend.world.uv_strobe = plc_strobe
        line.run_stepped(5.0)
        assert not line.alarms.is_active(ALARM) and line.state == "running"
    finally:
        line.close()


def test_frames_without_their_pair_are_blind_stretches_the_gate_diverts(monkeypatch):
    """Four of every five pairs lost (the channel never 'lost' with alarm_after = 5): every
    frame without its pair makes the line wait, so what passed unseen is diverted."""
    from scallop.app.scenario import load_scenario, run_scenario

    orig = SimCamera.read

    def read(self):
        f = orig(self)
        if "fluorescence" in f.extra:
            self._no_uv = 4  # after each good pair, the next four come without
        return f

    monkeypatch.setattr(SimCamera, "read", read)
    sc = load_scenario("fluorescence")
    sc.spec.compare_without_channel = False
    s = run_scenario(sc, scallops=15)
    assert s["uro_escaped"] == 0 and s["with_uro"] > 5
    assert s["dispositions"]["diverted"] >= s["with_uro"] - s["uro_removed"]


def _alter_channel(monkeypatch, change) -> None:
    """Every fluorescence exposure the simulated camera hands over goes through ``change``
    (image -> image), as a fault between the UV light and the line would alter it."""
    orig = SimCamera.read

    def read(self):
        f = orig(self)
        fl = f.extra.get("fluorescence")
        if fl is not None:
            fl.image = change(fl.image)
        return f

    monkeypatch.setattr(SimCamera, "read", read)


def test_a_dark_channel_is_caught_although_its_pairs_come(tmp_path, monkeypatch):
    from tests.helpers import make_line

    line = make_line(tmp_path, overrides=LINE_CHANNEL)
    dark = {"on": False}
    # The UV light dead, the strobe still running.
    _alter_channel(monkeypatch, lambda im: np.zeros_like(im) if dark["on"] else im)
    try:
        line.start("t")
        line.run_stepped(8.0)
        assert line.state == "running" and not line.channel.dark
        dark["on"] = True
        line.run_stepped(40.0)
        a = line.alarms.get(ALARM)
        assert line.channel.dark and a.active and a.severity == "critical"
        assert "fluorescence channel dark" in a.text and line.state == "waiting_camera"
        dark["on"] = False
        line.run_stepped(10.0)
        assert not line.channel.dark and not line.alarms.is_active(ALARM) and line.state == "running"
    finally:
        line.close()


def test_scallops_the_fluorescence_camera_did_not_see_do_not_make_the_channel_dark(tmp_path, monkeypatch):
    """No glow where the camera does not see is no sign of a dark channel: scallops found
    outside_channel are not counted by the dark check (30 s of them, no glow, no alarm)."""
    from tests.helpers import make_line

    line = make_line(tmp_path, overrides=LINE_CHANNEL)
    _alter_channel(monkeypatch, np.zeros_like)
    detect = line.pipeline.detect

    def blind(*a, **k):  # as if the camera saw none of these scallops
        d = detect(*a, **k)
        whole = ~d.cut_by_border if len(d) else np.zeros(0, bool)
        d.reason[whole] = "outside_channel"
        d.pickable[whole] = False
        return d

    monkeypatch.setattr(line.pipeline, "detect", blind)
    try:
        line.start("t")
        line.run_stepped(30.0)
        assert line.frames > 40 and line.channel.last_scallops == 0
        assert not line.channel.dark and not line.alarms.is_active(ALARM) and line.state == "running"
        assert line.summary()["skipped_by_reason"].get("outside_channel", 0) > 5
    finally:
        line.close()


@pytest.mark.parametrize(
    "value, words",
    [
        (9.0, "max_pair_ms=9.0 is out of range: allowed 0.1..8 for a second camera on the same trigger"),
        (float("nan"), "max_pair_ms=nan is not a finite number: allowed 0.1..8 for a second camera"),
        (0.0, r"max_pair_ms is required with a fluorescence set-up \(allowed 0.1–8 ms\)"),
    ],
)
def test_a_second_cameras_pair_window_is_checked_against_its_own_range(value, words):
    with pytest.raises(ValueError, match=words):
        FluorescenceSection(
            setup="second_camera", source="1", alarm_after=5, max_pair_ms=value, register_height_mm=15.0
        )


@pytest.mark.parametrize(("centre_x", "refused"), [(6.0, False), (900.0, True)])
def test_a_second_camera_looking_elsewhere_is_refused_not_alarmed_dark(centre_x, refused):
    """A second camera that sees none of the colour frame was taken: the line then alarmed the
    channel dark and blamed the UV light. Its registration now says what it sees, and the line
    (its start, the simulator's check, scallop doctor) refuses less than half the frame."""
    from scallop.app.backends import MIN_FLUORESCENCE_OVERLAP, fluorescence_registration
    from scallop.errors import ConfigError

    w = _world({**SECOND, "center_x_mm": centre_x})
    section = FluorescenceSection(
        setup="second_camera", source="sim", alarm_after=5, max_pair_ms=5.0, register_height_mm=0.0
    )
    cal = true_calibration(w.config, [])
    if not refused:
        reg = fluorescence_registration(cal, section)
        assert np.mean(reg.overlap()[1]) >= MIN_FLUORESCENCE_OVERLAP
        return
    with pytest.raises(ConfigError, match=r"the fluorescence camera sees 0 % of the colour frame .*at least 50 %"):
        fluorescence_registration(cal, section)


def test_a_simulated_second_camera_with_a_calibration_file_needs_its_fluorescence_part(tmp_path):
    """The simulator checks a calibration file named in the configuration as the real line
    will: with a second camera, one without the fluorescence part was taken by scallop sim run
    and refused only by scallop doctor."""
    from scallop.app.backends import SimBackend
    from scallop.app.config import load_config
    from scallop.calibration.errors import CalibrationError

    second = {
        "setup": "second_camera",
        "source": "sim",
        "max_pair_ms": 5.0,
        "alarm_after": 5,
        "register_height_mm": 0.0,
    }
    cfg = load_config(overrides={"sim": {"fluorescence": SECOND}, "camera": {"fluorescence": second}})
    plain = true_calibration(SimConfig(camera=cfg.sim.camera), [])  # no channel: no fluorescence part
    assert not plain.has("fluorescence")
    cfg.runtime.calibration = str(plain.save(tmp_path / "line.json"))
    with pytest.raises(CalibrationError, match="has no fluorescence calibration"):
        SimBackend(cfg).check()


@pytest.mark.parametrize(("centre_y", "refused"), [(0.0, False), (250.0, True)])
def test_a_finder_reading_the_channel_is_refused_where_the_second_camera_misses_part_of_the_view(centre_y, refused):
    """A finder that reads the channel could leave a scallop unfound where the fluorescence
    camera does not see: undecided, it would pass the gate unchecked. Refused at the start;
    a finder on colour alone (the shipped four-channel model's), or alternate frames, is not."""
    from types import SimpleNamespace

    from scallop.app.backends import fluorescence_registration
    from scallop.app.line.channel import check_finder_sees, open_channel

    wide = SECOND | {"width": 1280, "height": 960, "mm_per_px": 0.6, "center_x_mm": 0.0, "center_y_mm": centre_y}
    w = _world(wide, width=1280, height=720)
    section = FluorescenceSection(
        setup="second_camera", source="sim", alarm_after=5, max_pair_ms=2.0, register_height_mm=0.0
    )
    reg = fluorescence_registration(true_calibration(w.config, []), section)

    def model(finder_uv: bool):
        info = SimpleNamespace(finder=SimpleNamespace(takes_uv=finder_uv))
        return SimpleNamespace(model=SimpleNamespace(info=info), takes_uv=True)

    check_finder_sees(model(False), reg)
    check_finder_sees(model(True), None)  # alternate frames
    backend = SimpleNamespace(fluorescence_registration=reg, camera_model=w.camera_model, belt=Belt(10.0, 1))
    if not refused:
        check_finder_sees(model(True), reg)
        assert open_channel(section, backend, model(True), Alarms()) is not None
        return
    with pytest.raises(
        ValueError,
        match=r"its finder reads the fluorescence channel, and the fluorescence camera sees 6\d\.\d % of the colour frame",
    ):
        check_finder_sees(model(True), reg)
    with pytest.raises(ConfigError, match=r"^the live model: its finder reads the fluorescence channel"):
        open_channel(section, backend, model(True), Alarms())


def _uros(shift_px: tuple[int, int], seed: int = 0):
    """A colour frame with dark uros on pale meat, and the channel with them glowing, shifted by
    ``shift_px`` (x, y): what a registration that far off gives."""
    rng = np.random.default_rng(seed)
    img = np.full((480, 640, 3), 190, np.uint8)
    uv = np.zeros((480, 640), np.uint8)
    centres = rng.uniform((60, 60), (580, 420), (6, 2))
    for (x, y), ang in zip(centres, rng.uniform(0, 180, 6)):
        c = (int(x), int(y))
        cv2.ellipse(img, c, (18, 7), float(ang), 0, 360, (40, 50, 60), -1)
        cv2.ellipse(uv, (c[0] + shift_px[0], c[1] + shift_px[1]), (18, 7), float(ang), 0, 360, 170, -1)
    img = cv2.add(img, rng.integers(0, 12, img.shape, dtype=np.uint8))
    uv = cv2.add(uv, rng.integers(0, 10, uv.shape, dtype=np.uint8))
    return img, uv, centres


def test_the_glow_is_checked_to_sit_on_the_uros_and_a_shifted_channel_is_blind_until_it_is_back():
    from scallop.app.line.channel import REG_ALARM, REG_MIN_UROS, REG_OFF_MM

    w = _world(ALTERNATE)
    alarms = Alarms()
    ch = _input(w, alarms)
    ch.last_glow = 170.0  # the frame glows (pair() measures it)

    def feed(shift, frames, seed, decides=True):
        for k in range(frames):  # 2 uros a frame
            img, uv, centres = _uros(shift, seed=seed + k)
            ch.check_registration(img, uv, None, centres, decides)

    feed((0, 0), REG_MIN_UROS, 0)
    assert np.hypot(*ch.offset_mm) < 0.2 and ch.miss_share == 0 and not ch.misregistered and not ch.blind
    # Knocked 8 px (4 mm) along x and 2 px across: measured, alarmed, blind.
    feed((8, 2), REG_MIN_UROS, 100)
    assert ch.misregistered and ch.blind and ch.lost
    a = alarms.get(REG_ALARM)
    assert a.active and a.severity == "critical" and f"{REG_OFF_MM:g} mm is the limit" in a.text
    assert re.match(r"fluorescence registration off: the glow lies [2-4]\.\d mm from the uros", a.text), a.text
    # Alternate frames: one camera, so the belt's travel between the two exposures is to blame.
    assert "the encoder's counts" in a.text and "register_height_mm" not in a.text
    feed((8, 2), REG_MIN_UROS, 150)  # fresh uros only, after the change
    assert ch.offset_mm == pytest.approx((4.0, 1.0), abs=0.3)
    st = ch.status()
    assert st["misregistered"] and st["registration_offset_mm"] == pytest.approx([4.0, 1.0], abs=0.3)
    # Half put right, 1.5 mm: under the limit, not under the way back (1 mm): still off.
    feed((3, 0), 30, 200)
    assert ch.misregistered and 1.0 < ch.offset_mm[0] < 2.0
    # Put right: taken back.
    feed((0, 0), 30, 300)
    assert not ch.misregistered and not alarms.is_active(REG_ALARM)
    # Moved 20 mm: the glow leaves the uros' windows altogether. No shift to measure, but the
    # uros with no glow on them while the frame glows say it.
    feed((40, 0), 30, 400)
    assert ch.misregistered and ch.miss_share > 0.5
    text = alarms.get(REG_ALARM).text
    assert re.match(
        r"fluorescence registration off: \d+ % of the last 40 uros the colour camera sees have no glow", text
    )
    # Moved further while alarmed: it stays alarmed (fresh misses, not the old samples).
    feed((160, 0), 30, 500)
    assert ch.misregistered and alarms.is_active(REG_ALARM)
    feed((0, 0), 30, 600)
    assert not ch.misregistered
    # A dark frame says nothing here (the dark check's): no misses counted.
    ch.last_glow = 20.0
    before = len(ch._offsets)
    for k in range(5):
        img, uv, centres = _uros((0, 0), seed=700 + k)
        ch.check_registration(img, np.zeros_like(uv), None, centres, True)
    assert len(ch._offsets) == before
    ch.last_glow = 170.0
    # Uros whose window the camera did not wholly see, or that reach past the frame, say nothing.
    img, uv, centres = _uros((8, 2), seed=7)
    ch.check_registration(img, uv, np.zeros(uv.shape, bool), centres, True)
    ch.check_registration(img, uv, None, np.array([[5.0, 5.0], [np.nan, 3.0]]), True)
    assert len(ch._offsets) == before
    # A second camera: its mount, its calibration or its registration height.
    second = Alarms()
    ch3 = _input(_world(SECOND), second)
    ch3.last_glow = 170.0
    for k in range(REG_MIN_UROS):
        img, uv, centres = _uros((8, 2), seed=900 + k)
        ch3.check_registration(img, uv, None, centres, True)
    text = second.get(REG_ALARM).text
    assert (
        "the fluorescence camera has moved on its mount" in text
        and "register_height_mm is not the uros' height" in text
    )
    assert text.endswith("'scallop calibrate fluorescence'")
    # With a colour-only live model the channel decides nothing: a warning, saying so.
    other = Alarms()
    ch2 = _input(w, other)
    ch2.last_glow = 170.0
    for k in range(REG_MIN_UROS):
        img, uv, centres = _uros((8, 2), seed=800 + k)
        ch2.check_registration(img, uv, None, centres, False)
    a = other.get(REG_ALARM)
    assert ch2.misregistered and a.severity == "warning" and "The live model reads colour only" in a.text


def test_a_line_whose_glow_moved_off_the_uros_waits_and_diverts_until_it_is_back(tmp_path, monkeypatch):
    """The channel shifted 10 px (5 mm) after 8 s, as a knocked camera would: the line sees the
    glow beside the uros, alarms it and waits (the gate diverts); shifted back, it goes on."""
    from scallop.app.line.channel import REG_ALARM
    from tests.helpers import make_line

    line = make_line(tmp_path, overrides=LINE_CHANNEL)
    shift = {"px": 0}
    _alter_channel(monkeypatch, lambda im: np.roll(im, shift["px"], axis=1))
    try:
        line.start("t")
        line.run_stepped(8.0)
        assert line.state == "running" and not line.channel.misregistered
        shift["px"] = 10
        line.run_stepped(30.0)
        a = line.alarms.get(REG_ALARM)
        assert line.channel.misregistered and a.active and a.severity == "critical"
        assert line.state == "waiting_camera" and line.reject.feed_while_blind  # the feeder runs, all to rework
        assert line.channel_status()["registration_offset_mm"][0] == pytest.approx(5.0, abs=0.5)
        assert "scallop_fluorescence_misregistered 1.0" in line.metrics_text()
        shift["px"] = 0
        line.run_stepped(30.0)
        assert not line.channel.misregistered and not line.alarms.is_active(REG_ALARM)
        assert line.state == "running" and not line.reject.feed_while_blind
    finally:
        line.close()
