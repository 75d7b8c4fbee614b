"""GenICam cameras through Aravis (vision/aravis.py), against what Aravis itself ships: its
in-process ``Fake`` camera and its GigE Vision camera simulator ``arv-fake-gv-camera-0.8`` on
127.0.0.1 (real GVCP and GVSP over UDP on loopback). Neither is our code.

What each can do: the in-process Fake streams on its own (free running, or at its fixed 25 Hz
"Line0" trigger) whatever the trigger mode; the GigE simulator obeys the software trigger, can
lose stream packets (``-r``) and can be killed and started again. The software trigger stands
in for the encoder trigger: each trigger is ``counts_per_trigger`` counts of belt travel.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from scallop.app.config import load_config
from scallop.errors import ConfigError
from scallop.vision.aravis import (
    AravisCamera,
    FramesLostError,
    FrameTimeoutError,
    IncompleteFrameError,
    load_aravis,
)
from scallop.vision.camera import CameraError, CameraNotFoundError, CorruptFrameError
from scallop.vision.genicam import PIXEL_FORMATS, AravisCameraConfig, ClockMap, FrameCounter
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "genicam-fake"
GV_SIM = shutil.which("arv-fake-gv-camera-0.8")

try:
    load_aravis()
    ARAVIS_MISSING = None
except CameraError as e:
    ARAVIS_MISSING = str(e)
needs_aravis = pytest.mark.skipif(ARAVIS_MISSING is not None, reason=ARAVIS_MISSING or "")
needs_gv_sim = pytest.mark.skipif(
    ARAVIS_MISSING is not None or GV_SIM is None,
    reason=ARAVIS_MISSING or "arv-fake-gv-camera-0.8 is not installed (apt-get install aravis-tools)",
)


def fake(**kw) -> AravisCamera:
    size = kw.pop("size", (320, 240))
    fps = kw.pop("fps", 0.0)
    cfg = AravisCameraConfig(**{"device": "Fake_1", "exposure_us": 200.0, "pixel_format": "RGB8", **kw})
    return AravisCamera(cfg, width=size[0], height=size[1], fps=fps)


def read_frame(cam, tries: int = 10):
    """The next frame, past skipped ones (lost/incomplete reports), at most ``tries`` reads."""
    for _ in range(tries):
        try:
            return cam.read()
        except CorruptFrameError:
            continue
    raise AssertionError(f"no usable frame in {tries} reads")


# ---------------------------------------------------------------------------- without Aravis


def test_config_checks_name_the_key():
    with pytest.raises(ConfigError, match=r"counts_per_trigger=10: a free-running camera"):
        AravisCameraConfig(exposure_us=100, counts_per_trigger=10)
    with pytest.raises(ConfigError, match=r"pixel_format='YUV422' is not allowed"):
        AravisCameraConfig(exposure_us=100, pixel_format="YUV422")
    with pytest.raises(ConfigError, match=r"exposure_us=nan is not a finite number"):
        AravisCameraConfig(exposure_us=float("nan"))
    with pytest.raises(ConfigError, match=r"packet_size=100 is out of range"):
        AravisCameraConfig(exposure_us=100, packet_size=100)
    # No default exposure: the line's configuration says so, with the key's path.
    with pytest.raises(ConfigError, match=r"camera: genicam.exposure_us is not set"):
        load_config(None, {"camera": {"source": "genicam"}})
    with pytest.raises(ConfigError, match=r"genicam.counts_per_trigger: the frames' counts come from the encoder"):
        load_config(
            None,
            {
                "camera": {
                    "source": "genicam",
                    "genicam": {"exposure_us": 100.0, "trigger": "line", "counts_per_trigger": 8},
                    "encoder": {"source": "modbus", "host": "127.0.0.1"},
                }
            },
        )
    cfg = load_config(EXAMPLE / "line.toml")
    assert cfg.camera.genicam.counts_per_trigger == 120 and "camera 'genicam'" in cfg.real_devices()


@pytest.mark.parametrize("fmt", [f for f in PIXEL_FORMATS if f.startswith("Bayer")])
def test_bayer_formats_give_the_right_colours(fmt):
    # A scene of red, green and blue quarters, mosaicked as the sensor of ``fmt`` sees it.
    h, w = 32, 32
    scene = np.zeros((h, w, 3), np.uint8)  # RGB
    scene[:, : w // 3, 0] = 200
    scene[:, w // 3 : 2 * w // 3, 1] = 200
    scene[:, 2 * w // 3 :, 2] = 200
    order = fmt[5:7]  # e.g. "RG": row 0 is R G R G…, row 1 G B G B…
    channel = {"R": 0, "G": 1, "B": 2}
    first = [channel[order[0]], channel[order[1]]]
    second = [1 if c != 1 else (2 if 0 in first else 0) for c in first]
    raw = np.zeros((h, w), np.uint8)
    for y in range(h):
        row = first if y % 2 == 0 else second
        for x in range(w):
            raw[y, x] = scene[y, x, row[x % 2]]
    bgr = cv2.cvtColor(raw, PIXEL_FORMATS[fmt][1])
    mid = h // 2
    assert bgr[mid, 4].argmax() == 2 and bgr[mid, w // 2].argmax() == 1 and bgr[mid, w - 5].argmax() == 0, fmt


def test_frame_counter_counts_lost_frames_across_the_16_bit_wrap():
    c = FrameCounter()
    assert [c.step(i) for i in (65533, 65534, 65535, 1, 2, 5)] == [1, 1, 1, 1, 1, 3]
    c.reset()
    assert [c.step(i) for i in (2**40, 2**40 + 2, 7)] == [1, 2, 1]  # 64-bit ids; 7: the camera restarted


def test_clock_map_takes_the_least_delayed_frame_and_restarts_with_the_camera():
    m = ClockMap(window=4)
    # True offset 100 s; transfer delays 5, 2, 9 ms: the 2 ms frame tells the offset best.
    assert m.host_time(1_000_000_000, 101.005) == pytest.approx(101.005)
    assert m.host_time(1_100_000_000, 101.102) == pytest.approx(101.102)
    assert m.host_time(1_200_000_000, 101.209) == pytest.approx(101.202)
    assert m.host_time(50_000_000, 200.05) == pytest.approx(200.05)  # camera clock went back: fresh start


# ---------------------------------------------------------------------------- Aravis's in-process Fake


@needs_aravis
def test_fake_camera_frames_are_stamped_counted_and_sized():
    # The Fake's Line0 fires at 25 Hz: an encoder divider at a steady belt speed.
    cam = fake(trigger="line", counts_per_trigger=120)
    cam.connect()
    try:
        assert cam.resolution == (320, 240)
        frames = []
        for _ in range(6):
            before = time.monotonic()
            f = read_frame(cam)
            frames.append((before, time.monotonic(), f))
    finally:
        cam.disconnect()
    for i, (_, after, f) in enumerate(frames):
        assert f.image.shape == (240, 320, 3) and f.image.dtype == np.uint8
        assert f.index == i and f.source == "genicam Fake_1"
        # On the host's monotonic clock, taken before the read returned, and not long before.
        assert after - 5.0 < f.timestamp <= after
    counts = [f.encoder for _, _, f in frames]
    ids = [f.extra["frame_id"] for _, _, f in frames]
    assert counts[0] == 120  # the first trigger
    assert np.all(np.diff(counts) == 120 * np.diff(ids))  # one divider step per trigger
    # Stamped by the camera's clock, not by our reads: the steps between frames are the
    # camera's own (the Fake stamps arrival and exposure alike, so the offset is constant).
    dt = np.diff([f.timestamp for _, _, f in frames])
    dcam = np.diff([f.extra["camera_ns"] for _, _, f in frames]) / 1e9
    assert np.all(dcam > 0) and np.allclose(dt, dcam, atol=1e-3), (dt, dcam)


@needs_aravis
def test_fake_camera_frames_the_host_had_no_buffer_for_are_counted_and_reported():
    cam = fake(fps=200.0, buffers=2)
    cam.connect()
    try:
        read_frame(cam)
        time.sleep(0.2)  # ~40 frames come with 2 buffers to hold them
        with pytest.raises(FramesLostError) as e:
            for _ in range(3):
                cam.read()
        assert e.value.n >= 10 and "lost" in str(e.value)
        after = cam.read()  # the good frame after the gap is not thrown away
        assert after.image.shape == (240, 320, 3)
        assert cam.lost >= 10 and cam.dropped == cam.lost + cam.incomplete
    finally:
        cam.disconnect()


@needs_aravis
def test_fake_camera_refuses_what_it_cannot_do_naming_the_key():
    for kw, match in (
        ({"pixel_format": "BGR8"}, r"camera.genicam.pixel_format='BGR8': the camera offers .*RGB8"),
        ({"exposure_us": 5.0}, r"camera.genicam.exposure_us=5.0 is out of range: allowed 10\.\.1e\+07"),
        ({"trigger": "line", "trigger_source": "Line7"}, r"trigger_source='Line7': .* offers Line0, Software"),
        ({"size": (4096, 100)}, r"region 4096x100 at \(0, 0\) does not fit the 2048x2048 sensor"),
    ):
        cam = fake(**kw)
        with pytest.raises(ConfigError, match=match):
            cam.connect()
        cam.disconnect()
    with pytest.raises(CameraNotFoundError, match="cannot open"):
        AravisCamera(AravisCameraConfig(device="Fake_9", exposure_us=100.0)).connect()


@needs_aravis
def test_fake_camera_reconnects_when_control_is_lost_and_the_count_carries_on():
    cam = fake(trigger="line", counts_per_trigger=50)
    cam.connect()
    try:
        first = [read_frame(cam) for _ in range(3)]
        # What Aravis signals when a camera's heartbeat goes unanswered.
        cam._cam.get_device().emit("control-lost")
        t0 = time.monotonic()
        after = read_frame(cam)
        assert cam.reconnects == 1
        # The count across the outage: the belt's last rate over the time it lasted, in triggers.
        a, b = first[-2], first[-1]
        rate = (b.encoder - a.encoder) / (b.timestamp - a.timestamp)
        assert after.encoder - b.encoder == pytest.approx(rate * (after.timestamp - b.timestamp), abs=50)
        assert after.encoder > first[-1].encoder and time.monotonic() - t0 < 2.0
    finally:
        cam.disconnect()


# ---------------------------------------------------------------------------- the GigE Vision simulator


class GvSim:
    """``arv-fake-gv-camera-0.8`` on 127.0.0.1 (GVCP port 3956), started and stopped by the test."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.proc: subprocess.Popen | None = None

    def start(self) -> GvSim:
        self.proc = subprocess.Popen(
            [GV_SIM, "-i", "127.0.0.1", *self.args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        Aravis = load_aravis()
        deadline = time.monotonic() + 5.0
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"the GigE simulator exited: {self.proc.stderr.read()}")
            try:
                Aravis.Camera.new("127.0.0.1")
                return self
            except Exception:
                if time.monotonic() > deadline:
                    raise AssertionError("the GigE simulator does not answer on 127.0.0.1") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc.stderr.close()
            self.proc = None


@pytest.fixture
def gv_sim():
    sims: list[GvSim] = []

    def start(*args: str) -> GvSim:
        sims.append(GvSim(*args).start())
        return sims[-1]

    yield start
    for s in sims:
        s.stop()


def gv_camera(fps: float = 0.0, **kw) -> AravisCamera:
    cfg = AravisCameraConfig(
        **{"device": "127.0.0.1", "exposure_us": 200.0, "pixel_format": "Mono8", "timeout_s": 0.3, **kw}
    )
    return AravisCamera(cfg, width=256, height=128, fps=fps)


@needs_gv_sim
def test_gige_software_trigger_stands_in_for_the_encoder_trigger(gv_sim):
    gv_sim()
    cam = gv_camera(trigger="software", counts_per_trigger=64)
    cam.connect()
    try:
        with pytest.raises(FrameTimeoutError, match="no trigger"):
            cam.read()  # no trigger, no frame: a stopped belt
        for k in range(1, 6):
            t_trigger = time.monotonic()
            cam.trigger()
            f = cam.read()
            t_read = time.monotonic()
            assert f.encoder == 64 * k and f.image.shape == (128, 256, 3)
            # The simulator looks for a trigger once per frame period (40 ms) and stamps the frame
            # when it takes it: after the trigger, before the read returned.
            assert t_trigger - 0.005 <= f.timestamp <= t_read, (f.timestamp - t_trigger, t_read - t_trigger)
        # The trigger from another thread while a read waits for its frame (a PLC-less bench).
        timer = threading.Timer(0.05, cam.trigger)
        timer.start()
        assert cam.read().encoder == 64 * 6
        timer.join()
        assert cam.lost == 0 and cam.incomplete == 0
    finally:
        cam.disconnect()


@needs_gv_sim
def test_gige_lost_packets_make_incomplete_frames_that_are_counted(gv_sim):
    gv_sim("-r", "100")  # the simulator loses 10 % of its stream packets
    Aravis = load_aravis()
    cam = gv_camera(fps=50.0)
    cam.connect()
    try:
        # No resend requests: every lost packet costs its frame (a network with no time to resend).
        cam._stream.set_property("packet-resend", Aravis.GvStreamPacketResend.NEVER)
        bad = good = 0
        for _ in range(20):
            try:
                cam.read()
                good += 1
            except IncompleteFrameError as e:
                assert "incomplete" in str(e)
                bad += 1
            except (FramesLostError, FrameTimeoutError):
                bad += 1
        assert bad > 0 and cam.incomplete + cam.lost > 0
        assert cam.dropped == cam.incomplete + cam.lost
    finally:
        cam.disconnect()


@needs_gv_sim
def test_gige_camera_that_goes_away_is_reconnected_when_it_is_back(gv_sim):
    sim = gv_sim()
    cam = gv_camera(fps=20.0)
    cam.connect()
    try:
        read_frame(cam)
        sim.stop()
        # A frame the stream delivered just before the stop may still be read (20 fps: one
        # can land between the read above and the stop); then one read without a frame is
        # not yet a lost camera.
        for _ in range(5):
            try:
                cam.read()
            except FrameTimeoutError:
                break
            except CorruptFrameError:
                continue
        else:
            pytest.fail("frames kept coming after the camera stopped")
        t0 = time.monotonic()
        with pytest.raises(CameraNotFoundError, match="stopped answering"):
            cam.read()  # the second asks the network: the camera is gone
        assert time.monotonic() - t0 < 3.0  # the line hears of it at once, not after Aravis's retries
        gv_sim()
        deadline = time.monotonic() + 10.0
        while True:
            try:
                f = cam.read()
                break
            except CameraError:
                assert time.monotonic() < deadline, "no frame 10 s after the camera came back"
        assert f.image.shape == (128, 256, 3) and cam.reconnects == 1
    finally:
        cam.disconnect()


# ---------------------------------------------------------------------------- scallop run


@needs_aravis
def test_scallop_run_runs_the_line_from_the_fake_camera(tmp_path):
    """The documented command (docs/cameras.md): the example configuration, its arm on loopback."""
    from scallop.robot.clock import SystemClock
    from scallop.robot.config import ArmConfig
    from scallop.sim.arm import SimArm

    port = free_port()
    line_toml = (EXAMPLE / "line.toml").read_text().replace("port = 5020", f"port = {port}")
    (tmp_path / "line.toml").write_text(line_toml)
    shutil.copy(EXAMPLE / "calibration.json", tmp_path)
    arm = SimArm(ArmConfig(name="sim"), clock=SystemClock(), port=port).start()
    try:
        p = subprocess.run(
            [sys.executable, "-m", "scallop", "run", "--config", "line.toml", "--duration", "3", "--no-browser"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=60,
        )
    finally:
        arm.close()
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    # 25 Hz for 3 s, each frame with its count: analysed, or dropped when analysis falls behind.
    assert summary["frames"] >= 10 and 50 <= summary["frames"] + summary["frames_dropped"] <= 100, summary
    assert summary["seen"] == 0  # a test pattern, not a belt


@needs_aravis
def test_scallop_doctor_opens_the_genicam_camera_the_line_would():
    """The doctor read 'genicam' as an OpenCV device name and failed a working camera."""
    from scallop.app.doctor import OK, check_camera

    check = check_camera(load_config(EXAMPLE / "line.toml"))
    assert (check.status, check.found) == (OK, "GenICam camera gives 640x480 frames")


@needs_aravis
def test_scallop_doctor_says_to_fix_the_configuration_when_the_camera_refuses_a_setting(tmp_path):
    from scallop.app.doctor import FAIL, check_camera

    toml = tmp_path / "line.toml"
    toml.write_text((EXAMPLE / "line.toml").read_text().replace("width = 640", "width = 9999"))
    cfg = load_config(toml)
    check = check_camera(cfg)
    assert check.status == FAIL and "9999" in check.found and "fix [camera] / [camera.genicam]" in check.todo
