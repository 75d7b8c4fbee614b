"""Recordings of a line with the fluorescence channel (vision/recording.py, version 2): each
frame's partner exposure kept as taken beside it, played back with it, and a replay that pairs
and registers it as the line did; recordings and configurations that do not agree are refused
by name."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from scallop.app.backends import check_recording_channel, open_camera
from scallop.app.config import load_config
from scallop.errors import ConfigError
from scallop.sim.clock import VirtualClock
from scallop.vision.camera import Frame
from scallop.vision.channels import ChannelExposure
from scallop.vision.recording import RecordingCamera, RecordingError, RecordingWriter, read_index, recording_setup


def _frame(k: int, t: float, count: int, uv: bool = True) -> Frame:
    img = np.zeros((48, 64, 3), np.uint8)
    cv2.putText(img, str(k), (5, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (255, 255, 255), 2)
    f = Frame(image=img, timestamp=t, encoder=count, index=k, source="test", timestamp_error_s=0.001)
    if uv:
        mono = np.full((30, 40), 10 * k, np.uint8)
        mono[5:9, 5 + k : 9 + k] = 200  # a glow that moves: each exposure its own
        f.extra["fluorescence"] = ChannelExposure(mono, t + 0.002, count + 3, 100 + k)
    else:
        f.extra["fluorescence_missing"] = "the UV light did not fire"
    return f


def _write(folder: Path, n: int = 5, setup: str = "second_camera", missing: int = 2) -> None:
    with RecordingWriter(folder, "rtsp://cam", "latched", "png", fluorescence=setup) as w:
        for k in range(n):
            w.add(_frame(k, 20.0 + 0.1 * k, 1000 + 30 * k, uv=k != missing))


def test_each_frame_keeps_its_fluorescence_exposure_as_taken_and_plays_back_with_it(tmp_path):
    rec = tmp_path / "rec"
    _write(rec)
    meta, frames = read_index(rec)
    assert meta["version"] == 2 and recording_setup(rec) == "second_camera"
    assert meta["fluorescence"] == {"setup": "second_camera", "resolution": [40, 30], "frames": 4, "missing": 1}
    assert (rec / "fluorescence" / "000000.png").is_file() and not (rec / "fluorescence" / "000002.png").exists()
    assert frames[2].uv is None and frames[2].uv_missing == "the UV light did not fire"
    assert frames[1].uv.counts == 1033 and frames[1].uv.index == 101
    assert frames[1].uv.time_s == pytest.approx(0.102, abs=1e-6)

    clock = VirtualClock(start=7.0)
    with RecordingCamera(rec, clock) as cam:
        assert cam.setup == "second_camera"
        got = [cam.read() for _ in range(5)]
    for k, f in enumerate(got):
        if k == 2:
            assert "fluorescence" not in f.extra and f.extra["fluorescence_missing"] == "the UV light did not fire"
            continue
        ex = f.extra["fluorescence"]
        assert np.array_equal(ex.image, _frame(k, 0, 0).extra["fluorescence"].image)  # lossless, one plane
        assert ex.timestamp == pytest.approx(f.timestamp + 0.002, abs=1e-6)  # on the replay's clock
        assert ex.encoder == 1003 + 30 * k and ex.index == 100 + k
    # Frames only (a rehearsal pairs them with a live counter): no counts on either exposure.
    with RecordingCamera(rec, VirtualClock(), with_counts=False) as cam:
        f = cam.read()
        assert f.encoder is None and f.extra["fluorescence"].encoder is None


def test_a_recording_without_the_channel_stays_version_1(tmp_path):
    rec = tmp_path / "rec"
    with RecordingWriter(rec, "0", "camera") as w:
        w.add(_frame(0, 1.0, 5))  # a partner offered to a colour-only recording is not kept
    meta, frames = read_index(rec)
    assert meta["version"] == 1 and "fluorescence" not in meta and frames[0].uv is None
    assert (rec / "frames.csv").read_text().splitlines()[0] == "image,counts,time_s,stamp_error_s,index"
    assert not (rec / "fluorescence").exists() and recording_setup(rec) == "none"
    with RecordingCamera(rec, VirtualClock()) as cam:
        assert cam.read().extra == {}


def test_a_damaged_partner_leaves_its_frame_without_the_channel_and_says_why(tmp_path):
    rec = tmp_path / "rec"
    _write(rec, n=7)
    uv = rec / "fluorescence"
    (uv / "000001.png").unlink()
    cv2.imwrite(str(uv / "000003.png"), np.zeros((20, 20), np.uint8))
    cv2.imwrite(str(uv / "000004.jpg"), np.zeros((30, 40), np.uint8))
    (uv / "000004.jpg").rename(uv / "000004.png")  # JPEG bytes under the PNG name
    cv2.imwrite(str(uv / "000005.png"), np.zeros((30, 40, 3), np.uint8))  # three planes
    cv2.imwrite(str(uv / "000006.png"), np.zeros((30, 40), np.uint16))  # 16 bits
    with RecordingCamera(rec, VirtualClock()) as cam:
        got = [cam.read() for _ in range(7)]
    assert "fluorescence" in got[0].extra
    why = [g.extra.get("fluorescence_missing", "") for g in got]
    assert why[1].startswith("the recorded fluorescence frame cannot be used") and "000001.png" in why[1]
    assert "is 20x20 but the recording's fluorescence frames is 40x30" in why[3]
    assert "JPEG" in why[4]
    assert "this PNG holds 8-bit colour (RGB) data" in why[5]
    assert "this PNG holds 16-bit grey data" in why[6]
    assert all("fluorescence" not in g.extra for g in got[1:])


def test_an_odd_exposure_costs_its_pair_never_the_recording(tmp_path):
    rec = tmp_path / "rec"
    frames = [_frame(k, 1.0 + 0.1 * k, 10 * k) for k in range(4)]
    frames[1].extra["fluorescence"] = ChannelExposure(np.zeros((60, 80), np.uint8), 1.102, 13, 1)  # another size
    frames[2].extra["fluorescence"] = ChannelExposure(np.zeros((30, 40, 3), np.uint8), 1.202, 23, 2)  # colour
    frames[3].extra["fluorescence"] = ChannelExposure(np.zeros((30, 40), np.uint8), math.nan, 33, 3)  # no time
    with RecordingWriter(rec, "0", "latched", "png", fluorescence="alternate") as w:
        for f in frames:
            w.add(f)
    assert (w.frames, w.uv_frames, w.uv_missing) == (4, 1, 3)
    _, got = read_index(rec)
    assert got[0].uv is not None
    assert got[1].uv_missing == "its fluorescence exposure came 80x60, the recording's are 40x30"
    assert got[2].uv_missing == "its fluorescence exposure came as (30, 40, 3) uint8, not one 8-bit plane"
    assert got[3].uv_missing == "its fluorescence exposure's time is not known"


def test_files_named_outside_the_recording_are_refused(tmp_path):
    rec = tmp_path / "rec"
    _write(rec)
    index = rec / "frames.csv"
    rows = index.read_text().splitlines()
    for bad in ("../outside.png", "/tmp/outside.png"):
        index.write_text("\n".join([rows[0], rows[1].replace("fluorescence/000000.png", bad)]) + "\n")
        with pytest.raises(RecordingError, match=r"row 2: uv_image=.* is not a file inside the recording"):
            read_index(rec)
    index.write_text("\n".join([rows[0], rows[1].replace("frames/000000.png", "../x.png")]) + "\n")
    with pytest.raises(RecordingError, match=r"row 2: image='../x.png' is not a file inside the recording"):
        read_index(rec)


def test_a_malformed_version_2_recording_is_refused_by_name(tmp_path):
    rec = tmp_path / "rec"
    _write(rec)
    meta = json.loads((rec / "recording.json").read_text())
    (rec / "recording.json").write_text(json.dumps(meta | {"fluorescence": {"setup": "uv"}}))
    with pytest.raises(RecordingError, match=r"version 2 needs \"fluorescence\": \{\"setup\": one of second_camera"):
        read_index(rec)
    bad = meta | {"fluorescence": meta["fluorescence"] | {"resolution": "x"}}
    (rec / "recording.json").write_text(json.dumps(bad))
    with pytest.raises(RecordingError, match=r"\"resolution\" in recording.json is 'x': expected \[width, height\]"):
        read_index(rec)
    (rec / "recording.json").write_text(json.dumps(meta | {"version": True}))
    with pytest.raises(RecordingError, match="version True; this program reads"):
        read_index(rec)
    (rec / "recording.json").write_text(json.dumps(meta | {"version": 3}))
    with pytest.raises(RecordingError, match="version 3; this program reads 'scallop-recording' versions 1 and 2"):
        read_index(rec)
    (rec / "recording.json").write_text(json.dumps(meta))
    index = rec / "frames.csv"
    rows = index.read_text().splitlines()
    index.write_text("\n".join(r.rsplit(",", 5)[0] for r in rows) + "\n")  # the fluorescence columns gone
    with pytest.raises(RecordingError, match="lacks the columns uv_image, uv_counts, uv_time_s, uv_index, uv_missing"):
        read_index(rec)
    index.write_text("\n".join([rows[0], rows[1].replace(",1003,", ",x,")]) + "\n")
    with pytest.raises(RecordingError, match="row 2: its fluorescence columns are not numbers"):
        read_index(rec)
    with pytest.raises(ValueError, match="fluorescence='uv' is not allowed"):
        RecordingWriter(tmp_path / "new", "0", "camera", fluorescence="uv")


def _config(tmp_path: Path, source: Path, setup: str):
    toml = f'[camera]\nsource = "{source}"\n'
    if setup == "second_camera":
        toml += (
            '[camera.fluorescence]\nsetup = "second_camera"\nsource = "uv-cam"\nmax_pair_ms = 4\n'
            "alarm_after = 5\nregister_height_mm = 0\n"
        )
    elif setup == "alternate":
        toml += '[camera.fluorescence]\nsetup = "alternate"\nmax_pair_ms = 40\nalarm_after = 5\n'
    path = tmp_path / f"line-{setup}.toml"
    path.write_text(toml)
    return load_config(path)


def test_the_line_takes_a_recordings_pairs_as_they_are_and_refuses_what_does_not_agree(tmp_path):
    with_uv, colour = tmp_path / "with-uv", tmp_path / "colour"
    _write(with_uv)
    with RecordingWriter(colour, "0", "latched") as w:
        w.add(_frame(0, 1.0, 5, uv=False))
    clock = VirtualClock()
    # Its own set-up: the recording is the camera, not wrapped to be paired again.
    cfg = _config(tmp_path, with_uv, "second_camera")
    assert check_recording_channel(cfg) == "second_camera"
    cam = open_camera(cfg, clock)
    assert isinstance(cam, RecordingCamera)
    with cam:
        assert "fluorescence" in cam.read().extra
    # Without the channel in the configuration the recording plays colour only (the line ignores the partner).
    assert check_recording_channel(_config(tmp_path, with_uv, "none")) == "second_camera"
    with pytest.raises(
        ConfigError, match=r"made with setup = 'second_camera', but camera.fluorescence.setup = 'alternate'"
    ):
        check_recording_channel(_config(tmp_path, with_uv, "alternate"))
    with pytest.raises(
        ConfigError, match=r"made without the fluorescence channel, but .*a line reads it with setup = 'none'"
    ):
        open_camera(_config(tmp_path, colour, "second_camera"), clock)
    with pytest.raises(ConfigError, match="made without the fluorescence channel"):
        check_recording_channel(replace(_config(tmp_path, colour, "alternate")))


def _sim_shift(tmp_path: Path, seconds: float):
    """The simulator's two cameras recorded as 'scallop capture' records a real pair, with the
    line configuration and calibration that read it; returns (writer, config path)."""
    from scallop.app.backends import default_sim_arms
    from scallop.app.commands.sim_commission import SECOND_CAMERA
    from scallop.sim.camera import SimCamera
    from scallop.sim.commission import line_toml, true_calibration
    from scallop.sim.config import FluorescenceConfig, SimConfig
    from scallop.sim.world import SimWorld

    sim = SimConfig(fluorescence=FluorescenceConfig(**SECOND_CAMERA))
    clock = VirtualClock()
    cam = SimCamera(SimWorld(sim, seed=5, clock=clock))
    cam.connect()
    with RecordingWriter(tmp_path / "shift", "sim", "latched", "jpg", fluorescence="second_camera") as w:
        while clock.now() < seconds:
            w.add(cam.read())
    arms = default_sim_arms(1)
    true_calibration(sim, arms).save(tmp_path / "line.json")
    cfg = tmp_path / "line.toml"
    cfg.write_text(line_toml(arms, str(tmp_path / "line.json"), fluorescence=sim.fluorescence))
    return w, cfg


def test_a_replay_of_a_line_with_the_channel_pairs_and_registers_it_as_live(tmp_path):
    """A recording of a second camera's pairs replayed by a line configured for that camera: its
    pairs are checked and registered with the calibration, none dropped, and the four-channel
    model runs."""
    from scallop.app.commands.replay import replay

    w, cfg = _sim_shift(tmp_path, 20.0)
    assert w.uv_frames == w.frames >= 20 and w.uv_missing == 0
    out = replay(load_config(cfg), tmp_path / "shift", tmp_path / "r.sqlite")
    ch = out["channel"]
    assert ch["setup"] == "second_camera" and ch["pairs"] >= 20 and not ch["lost"] and not ch["dark"]
    assert sum(ch["dropped"].values()) == 0
    assert out["seen"] >= 8 and out["picked"] >= 4 and math.isfinite(out["seen"])


def test_scallop_capture_keeps_the_channel_of_a_line_that_has_it(tmp_path, capsys):
    """'scallop capture' of a line configured with the channel (here a recording with it as the
    camera: the path a live pair takes, less the devices) keeps every partner, and says so."""
    from scallop.app.cli import main

    src = tmp_path / "src"
    _write(src)
    cfg = _config(tmp_path, src, "second_camera").camera  # checked: the file below is the same
    assert cfg.fluorescence.setup == "second_camera"
    toml = tmp_path / "line-second_camera.toml"
    rc = main(["capture", "--config", str(toml), "--out", str(tmp_path / "again"), "--duration", "3", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["frames"] == 5
    assert out["fluorescence"] == {"setup": "second_camera", "frames": 4, "missing": 1}
    meta, frames = read_index(tmp_path / "again")
    assert meta["version"] == 2 and [f.uv is None for f in frames] == [False, False, True, False, False]
    assert frames[2].uv_missing == "the UV light did not fire"
    a = cv2.imread(str(src / "fluorescence" / "000004.png"), cv2.IMREAD_UNCHANGED)
    b = cv2.imread(str(tmp_path / "again" / frames[4].uv.image), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(a, b)
    # Told the line has no channel, capture records colour only (version 1), as before.
    plain = tmp_path / "line-none.toml"
    _config(tmp_path, src, "none")
    assert main(["capture", "--config", str(plain), "--out", str(tmp_path / "colour"), "--duration", "3"]) == 0
    assert read_index(tmp_path / "colour")[0]["version"] == 1
    assert "with their fluorescence frames" not in capsys.readouterr().out


def test_the_doctor_takes_the_channel_from_a_recording_not_from_the_device(tmp_path):
    from scallop.app.doctor import FAIL, OK, check_fluorescence_camera

    rec = tmp_path / "rec"
    _write(rec)
    c = check_fluorescence_camera(_config(tmp_path, rec, "second_camera"))  # its source "uv-cam" is never opened
    assert c.status == OK and c.found == "from the recording: each frame's partner as taken (second_camera)"
    c = check_fluorescence_camera(_config(tmp_path, rec, "alternate"))
    assert c.status == FAIL and "made with setup = 'second_camera'" in c.found


def test_a_hostile_recording_cannot_make_the_replay_read_what_it_should_not(tmp_path):
    """A partner declaring a huge image is refused from its header; a link leading out of the
    recording is not followed; a row short of fields is a malformed index, said so."""
    rec = tmp_path / "rec"
    _write(rec)
    meta = json.loads((rec / "recording.json").read_text())
    huge = meta | {"fluorescence": meta["fluorescence"] | {"resolution": [10000, 10000]}}
    (rec / "recording.json").write_text(json.dumps(huge))
    with pytest.raises(RecordingError, match=r"\"resolution\" in recording.json is \[10000, 10000\]"):
        read_index(rec)
    (rec / "recording.json").write_text(
        json.dumps(meta | {"fluorescence": meta["fluorescence"] | {"resolution": None}})
    )
    big = np.zeros((8000, 8000), np.uint8)  # 64 MP, a few hundred kB of PNG
    cv2.imwrite(str(rec / "fluorescence" / "000000.png"), big)
    outside = tmp_path / "outside.png"
    cv2.imwrite(str(outside), np.full((30, 40), 77, np.uint8))
    (rec / "fluorescence" / "000001.png").unlink()
    (rec / "fluorescence" / "000001.png").symlink_to(outside)
    with RecordingCamera(rec, VirtualClock()) as cam:
        a, b = cam.read(), cam.read()
    assert "above the 50 megapixel limit" in a.extra["fluorescence_missing"]
    assert "leads outside the recording" in b.extra["fluorescence_missing"] and "fluorescence" not in b.extra
    index = rec / "frames.csv"
    rows = index.read_text().splitlines()
    index.write_text("\n".join([rows[0], "frames/000000.png,5"]) + "\n")
    with pytest.raises(RecordingError, match="row 2 is not numbers"):
        read_index(rec)


def test_an_empty_first_exposure_does_not_set_the_recordings_size(tmp_path):
    rec = tmp_path / "rec"
    frames = [_frame(k, 1.0 + 0.1 * k, 10 * k) for k in range(3)]
    frames[0].extra["fluorescence"] = ChannelExposure(np.zeros((0, 0), np.uint8), 1.002, 3, 0)
    with RecordingWriter(rec, "0", "latched", "png", fluorescence="alternate") as w:
        for f in frames:
            w.add(f)
    meta, got = read_index(rec)
    assert got[0].uv_missing == "its fluorescence exposure came empty"
    assert got[1].uv is not None and got[2].uv is not None and meta["fluorescence"]["resolution"] == [40, 30]


def test_the_doctor_says_when_a_recordings_partners_do_not_fit_the_calibration(tmp_path, monkeypatch):
    from scallop.app import doctor

    rec = tmp_path / "rec"
    _write(rec)
    monkeypatch.setattr(doctor, "_registered_fluorescence_size", lambda cfg: (1280, 960))
    c = doctor.check_fluorescence_camera(_config(tmp_path, rec, "second_camera"))
    assert c.status == doctor.FAIL and "are 40x30, but the calibration registered 1280x960" in c.found


def test_a_recorder_killed_mid_row_leaves_every_row_before_it_readable(tmp_path):
    rec = tmp_path / "rec"
    w = RecordingWriter(rec, "0", "latched", "png", fluorescence="second_camera")
    for k in range(4):
        w.add(_frame(k, 1.0 + 0.1 * k, 10 * k))
    # Killed: no close(), the description still says what it said at the start, and the last
    # row is cut part-way. Every row is on disk as its frame was written.
    text = (rec / "frames.csv").read_text()
    assert text.count("\n") == 5
    (rec / "frames.csv").write_text(text[: text.rfind("fluorescence/000003")])
    meta, frames = read_index(rec)
    assert meta["version"] == 2 and meta["frames"] == 0 and len(frames) == 3
    with RecordingCamera(rec, VirtualClock()) as cam:
        assert "fluorescence" in cam.read().extra  # the size comes from the first partner kept
    w.close()


def test_a_replay_says_the_alarms_the_screen_would_have_shown(tmp_path, capsys):
    """Every partner of the recording gone: the channel is lost, and the replay prints why in the
    operator's words (they were only in the record, a temporary one by default)."""
    from scallop.app.cli import main

    _sim_shift(tmp_path, 6.0)
    for p in (tmp_path / "shift" / "fluorescence").iterdir():
        p.unlink()
    assert main(["replay", str(tmp_path / "shift"), "--config", str(tmp_path / "line.toml")]) == 0
    out = capsys.readouterr().out
    assert "'lost': True" in out and "alarm (critical): fluorescence channel lost" in out, out
    assert main(["replay", str(tmp_path / "shift"), "--config", str(tmp_path / "line.toml"), "--json"]) == 0
    alarms = json.loads(capsys.readouterr().out)["alarms"]
    assert any(a["severity"] == "critical" and a["source"] == "camera" for a in alarms), alarms
