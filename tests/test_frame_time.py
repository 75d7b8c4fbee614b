"""When a frame was exposed: the stamps of free-running cameras (vision/stamps.py), the pace of
video files and image folders (vision/camera.py), recordings written and played back
(vision/recording.py), and the commands around them (scallop capture, scallop replay)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from scallop.sim.clock import VirtualClock
from scallop.vision.camera import EndOfStreamError, Frame, OpenCVCamera, OpenCVCameraConfig
from scallop.vision.recording import RecordingCamera, RecordingError, RecordingWriter, read_index
from scallop.vision.stamps import FrameStamper

PERIOD = 0.1  # the synthetic camera's frame period
LATENCY = 0.05  # its pipeline delay


def reads(delays, queued=(), driver=None, period=PERIOD):
    """Feed a FrameStamper what a reader of a free-running camera sees: frame k exposed at
    k·period arrives LATENCY + delays[k] later; the reader waits for it (t_before 60 ms ahead)
    unless k is in ``queued`` (taken at once from the driver's queue). ``driver(k)``: the
    driver's timestamp of frame k. Returns (stamper, [(k, stamp - exposure - LATENCY, error)])."""
    st = FrameStamper()
    out = []
    t_prev = -1.0
    for k, d in enumerate(delays):
        arrival = k * period + LATENCY + d
        t_before = arrival - 0.0005 if k in queued else max(t_prev + 0.001, arrival - 0.06)
        t_after = max(arrival, t_before + 0.0005)
        t, err, _ = st.stamp(t_before, t_after, None if driver is None else driver(k))
        out.append((k, t - k * period - LATENCY, err))
        t_prev = t_after
    return st, out


def used(out):
    return [(k, e, b) for k, e, b in out if math.isfinite(b)]


# ------------------------------------------------------------------ the camera's cadence
@pytest.mark.parametrize("mean_delay_s, share", [(0.002, 0.9), (0.015, 0.5)])
def test_cadence_stamps_do_not_carry_the_delivery_jitter(mean_delay_s, share):
    rng = np.random.default_rng(4)
    st, out = reads(rng.exponential(mean_delay_s, 400))
    ok = used(out)
    # With heavy jitter a frame may follow a late one so closely that it looks queued: unused.
    assert len(ok) > share * 400
    # The stamps sit on the cadence: delivery delays of ~15 ms mean (up to ~90 ms) leave < 7 ms.
    errors = np.abs([e for _, e, _ in ok])
    assert errors.max() < 0.007 and np.median(errors) < 0.002
    assert all(b >= 0 for _, _, b in ok) and st.grid.period_s == pytest.approx(PERIOD, rel=1e-3)


def test_first_frames_and_queued_frames_have_no_known_time():
    delays = np.full(120, 0.002)
    st, out = reads(delays, queued={60, 61, 62})
    assert all(math.isinf(b) for k, _, b in out if k < 15)  # the cadence is being learnt
    assert all(math.isinf(out[k][2]) for k in (60, 61, 62)) and st.queued == 3
    assert math.isfinite(out[70][2]) and out[70][1] == pytest.approx(0.002)  # the constant delay: latency_s


def test_a_frame_more_than_a_period_late_is_not_taken_for_the_next_one():
    delays = np.full(60, 0.002)
    delays[40] = 0.125  # frame 40 arrives after slot 41's time; frame 41 is then queued behind it
    _, out = reads(delays, queued={41})
    assert math.isinf(out[40][2]) and math.isinf(out[41][2])
    assert all(abs(e - 0.002) < 0.001 for _, e, _ in used(out))


def test_erratic_delivery_gives_no_trusted_stamp():
    rng = np.random.default_rng(2)
    _, out = reads(rng.exponential(0.05, 300))  # delays of half a period on average
    assert len(used(out)) < 30


def test_driver_timestamps_keep_queued_frames_true_and_a_wrong_driver_clock_is_dropped():
    rng = np.random.default_rng(5)
    delays = rng.exponential(0.004, 200)
    delays[100:110] += np.linspace(0.5, 0.05, 10)  # a backlog: ten frames delivered late, queued
    st, out = reads(delays, queued=set(range(101, 110)), driver=lambda k: 1000.0 + k * PERIOD)
    assert st.driver_clock
    # The queued frames keep their true times, not their arrival (the one that held the queue up,
    # over the lag allowed, is not trusted: a hiccup of the link looks like a wrong clock at first).
    late = [out[k] for k in range(101, 110)]
    assert all(math.isfinite(b) and abs(e) < 0.005 for _, e, b in late), late
    # A demuxer counting frames at a nominal 25 fps when 10 come a second: not a clock.
    st, out = reads(np.full(80, 0.002), driver=lambda k: 1.0 + k * 0.04)
    assert not st.driver_clock
    assert all(abs(e - 0.002) < 0.001 for _, e, _ in used(out)) and len(used(out)) > 50


# ------------------------------------------------------------------ files keep their pace
def test_video_files_and_image_folders_play_at_their_own_pace(tmp_path):
    video = tmp_path / "belt.avi"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 20.0, (64, 48))
    for k in range(10):
        vw.write(np.full((48, 64, 3), 20 * k, np.uint8))
    vw.release()
    clock = VirtualClock(start=100.0)
    cam = OpenCVCamera(OpenCVCameraConfig(source=str(video)), clock=clock.now, sleep=clock.sleep)
    with cam:
        stamps = [cam.read().timestamp for _ in range(10)]
        with pytest.raises(EndOfStreamError):
            cam.read()
    assert stamps == pytest.approx([100.0 + k / 20.0 for k in range(10)])
    assert clock.now() == pytest.approx(100.45)  # read at its pace, not as fast as possible

    folder = tmp_path / "photos"
    folder.mkdir()
    for k in range(4):
        cv2.imwrite(str(folder / f"p{k}.png"), np.full((48, 64, 3), 50 * k, np.uint8))
    clock = VirtualClock(start=5.0)
    with OpenCVCamera(OpenCVCameraConfig(source=str(folder), fps=2.0, loop=True), clock.now, clock.sleep) as cam:
        assert [cam.read().timestamp for _ in range(6)] == pytest.approx([5.0, 5.5, 6.0, 6.5, 7.0, 7.5])
    with OpenCVCamera(OpenCVCameraConfig(source=str(folder)), clock.now, clock.sleep) as cam:
        t = clock.now()
        assert [cam.read().timestamp for _ in range(4)] == [t] * 4  # photos: the time they are read


# ------------------------------------------------------------------ recordings
def frame(k: int, t: float, count: int | None, err: float = 0.0) -> Frame:
    img = np.full((48, 64, 3), (7 * k) % 255, np.uint8)
    cv2.putText(img, str(k), (5, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (255, 255, 255), 2)
    return Frame(image=img, timestamp=t, encoder=count, index=k, source="test", timestamp_error_s=err)


def test_a_recording_plays_back_at_its_times_with_its_counts(tmp_path):
    rec = tmp_path / "rec"
    with RecordingWriter(rec, "rtsp://cam", "sampled: plc", "png") as w:
        for k in range(8):
            w.add(frame(k, 50.0 + 0.1 * k, 1000 + 30 * k, math.inf if k == 3 else 0.001))
    meta, frames = read_index(rec)
    assert meta["t0"] == 50.0 and meta["frames"] == 8 and meta["resolution"] == [64, 48]
    assert [f.counts for f in frames] == [1000 + 30 * k for k in range(8)] and math.isinf(frames[3].stamp_error_s)
    # The encoder step reads its image,counts columns as they are.
    header = (rec / "frames.csv").read_text().splitlines()[0]
    assert header.startswith("image,counts,")

    clock = VirtualClock(start=7.0)
    cam = RecordingCamera(rec, clock)
    with cam:
        assert cam.next_frame_time() == 7.0
        got = [cam.read() for _ in range(8)]
        with pytest.raises(EndOfStreamError):
            cam.read()
    assert [f.timestamp for f in got] == pytest.approx([7.0 + 0.1 * k for k in range(8)])
    assert [f.encoder for f in got] == [1000 + 30 * k for k in range(8)]
    assert np.array_equal(got[5].image, frame(5, 0, 0).image)  # lossless: PNG

    # A reader more than the camera's buffer behind loses the oldest frames, as on the line.
    clock = VirtualClock(start=0.0)
    with RecordingCamera(rec, clock, buffer_frames=2) as cam:
        clock.advance(0.55)
        assert cam.read().index == 4 and cam.dropped == 4  # the older of the two it holds


def test_a_damaged_recording_is_refused_by_name(tmp_path):
    rec = tmp_path / "rec"
    with RecordingWriter(rec, "0", "camera") as w:
        w.add(frame(0, 1.0, 5))
        w.add(frame(1, 1.1, 6))
    index = rec / "frames.csv"
    lines = index.read_text().splitlines()
    index.write_text("\n".join([lines[0], lines[2], lines[1]]) + "\n")  # out of time order
    with pytest.raises(RecordingError, match=r"frames.csv row 3: time_s=0.0 is not after 0.1"):
        read_index(rec)
    meta = json.loads((rec / "recording.json").read_text()) | {"version": 9}
    (rec / "recording.json").write_text(json.dumps(meta))
    with pytest.raises(RecordingError, match="version 9; this program reads 'scallop-recording' versions 1 and 2"):
        read_index(rec)
    with pytest.raises(FileExistsError, match="not empty"):
        RecordingWriter(rec, "0", "camera")


def sim_recording(folder: Path, seconds: float, seed: int = 3) -> dict:
    """The simulator's camera recorded, as 'scallop capture' would record a latched camera."""
    from scallop.sim.camera import SimCamera
    from scallop.sim.world import SimWorld

    clock = VirtualClock()
    world = SimWorld(seed=seed, clock=clock)
    cam = SimCamera(world)
    cam.connect()
    with RecordingWriter(folder, "sim", "latched", "jpg") as w:
        while clock.now() < seconds:
            w.add(cam.read())
    return {"seed": seed, "frames": w.frames}


def test_scallop_replay_reproduces_the_line_offline(tmp_path, capsys):
    from scallop.app.backends import default_sim_arms
    from scallop.app.cli import main
    from scallop.app.commands.replay import replay
    from scallop.app.config import load_config
    from scallop.sim.commission import line_toml, true_calibration
    from scallop.sim.config import SimConfig

    sim_recording(tmp_path / "shift", 25.0)
    arms = default_sim_arms(1)
    true_calibration(SimConfig(), arms).save(tmp_path / "line.json")
    cfg = tmp_path / "line.toml"
    cfg.write_text(line_toml(arms, str(tmp_path / "line.json")))
    a = replay(load_config(cfg), tmp_path / "shift", tmp_path / "r.sqlite")
    assert a["seen"] >= 8 and a["picked"] >= 4 and a["uro_removed"] is None
    rc = main(["replay", str(tmp_path / "shift"), "--config", str(cfg), "--json"])
    b = json.loads(capsys.readouterr().out)
    keys = ("seen", "picked", "skipped_by_reason")
    assert rc == 0 and {k: a[k] for k in keys} == {k: b[k] for k in keys}  # the same shift, the same decisions
    # A plain image folder has no counts: it is not a recording, and is refused as one.
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((720, 1280, 3), np.uint8))
    rc = main(["replay", str(folder), "--config", str(cfg)])
    assert rc == 4 and "photos: not a recording folder (no recording.json and frames.csv)" in capsys.readouterr().err


def test_scallop_capture_records_the_configured_camera(tmp_path, capsys):
    """A recording as the configured camera plays at its true pace with its counts; capturing it
    gives the same frames, times and counts (the path a live camera takes, less the device)."""
    from scallop.app.cli import main

    rec = tmp_path / "rec"
    with RecordingWriter(rec, "rtsp://cam", "latched") as w:
        for k in range(6):
            w.add(frame(k, 10.0 + 0.2 * k, 500 + 60 * k))
    cfg = tmp_path / "line.toml"
    cfg.write_text(f'[camera]\nsource = "{rec}"\n')
    t0 = time.monotonic()
    rc = main(["capture", "--config", str(cfg), "--out", str(tmp_path / "again"), "--duration", "5", "--json"])
    took = time.monotonic() - t0
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["frames"] == 6 and out["skipped"] == 0
    assert 0.9 <= took < 4.0  # at the recording's pace (1 s), not as fast as it can be read
    meta, frames = read_index(tmp_path / "again")
    assert [f.counts for f in frames] == [500 + 60 * k for k in range(6)]
    assert [f.time_s for f in frames] == pytest.approx([0.2 * k for k in range(6)], abs=1e-6)
    cfg.write_text('[camera]\nsource = "sim"\n')
    assert main(["capture", "--config", str(cfg), "--out", str(tmp_path / "x")]) == 2
    assert "records a real camera" in capsys.readouterr().err


def test_a_replay_whose_line_stops_on_a_fault_is_not_a_result(tmp_path, monkeypatch, capsys):
    """A stage that crashes stops the line part-way through the recording: the replay says so
    and exits non-zero, rather than printing the summary of half a shift as if it were whole."""
    from scallop.app.backends import default_sim_arms
    from scallop.app.cli import main
    from scallop.sim.commission import line_toml, true_calibration
    from scallop.sim.config import SimConfig
    from scallop.vision.pipeline import Pipeline

    sim_recording(tmp_path / "shift", 8.0)
    arms = default_sim_arms(1)
    true_calibration(SimConfig(), arms).save(tmp_path / "line.json")
    cfg = tmp_path / "line.toml"
    cfg.write_text(line_toml(arms, str(tmp_path / "line.json")))

    def broken(self, *a, **kw):
        raise RuntimeError("the model's session died")

    monkeypatch.setattr(Pipeline, "detect", broken)
    rc = main(["replay", str(tmp_path / "shift"), "--config", str(cfg)])
    err = capsys.readouterr().err
    assert rc == 1 and "the line stopped on a fault part-way: vision (10 frames in a row) stage crashed" in err
    assert "the model's session died" in err and "internal error" not in err  # the line's fault, said plainly
