"""What the line does when its inputs fail: the belt count checked against the image
(scallop/app/line/beltcheck.py), a camera reconnected with back-off and the state saying so
(scallop/app/line/frames.py), and figures that are not known shown as unknown."""

from __future__ import annotations

import math
import sqlite3
import time

import numpy as np
import pytest

from scallop.app.alarms import Alarms
from scallop.app.line.beltcheck import FROZEN, IMPOSSIBLE, MISMATCH, SCALE, BeltCheck
from scallop.app.line.frames import FrameReader
from scallop.app.stats import Stats
from scallop.robot.belt import Belt
from scallop.sim.clock import VirtualClock
from scallop.vision.camera import Camera, CameraNotFoundError, CameraStalledError, Frame

BELT = Belt(counts_per_mm=10.0, direction=1)


def scene(travel_mm: float, *ys) -> np.ndarray:
    """Whole scallops at material positions (u, y) seen after ``travel_mm`` of belt travel."""
    pts = {50: -200.0, -30: -120.0, 90: -310.0}
    return np.array([[pts[y] + travel_mm, y] for y in ys]).reshape(-1, 2)


def run(check: BeltCheck, steps, counted, seen, ys=(50, -30)):
    """Frames 0.1 s apart (after the check's last one): the belt has really moved ``seen(k)`` mm,
    the counter says ``counted(k)``."""
    t0 = check._prev[0] + 0.1 if check._prev is not None else 0.0
    return [check.update(t0 + 0.1 * k, int(round(counted(k) * 10)), scene(seen(k), *ys)) for k in range(steps)]


def test_counts_that_agree_with_the_image_are_trusted_and_a_stopped_belt_is_no_fault():
    check = BeltCheck(BELT)
    assert run(check, 20, lambda k: 30.0 * k, lambda k: 30.0 * k) == [None] * 20 and check.trusted
    # The belt stops, and the counter with it: both agree.
    assert run(check, 10, lambda k: 570.0, lambda k: 570.0) == [None] * 10 and check.trusted
    # Nothing on the belt: nothing to check, nothing to fault.
    assert run(check, 10, lambda k: 570.0 + 30 * k, lambda k: 0.0, ys=()) == [None] * 10


def test_a_frozen_counter_is_caught_in_three_frames_and_clears_when_counts_move_again():
    check = BeltCheck(BELT)
    run(check, 5, lambda k: 30.0 * k, lambda k: 30.0 * k)
    faults = run(check, 6, lambda k: 120.0, lambda k: 120.0 + 30.0 * (k + 1))  # the register stops changing
    assert faults[:2] == [None, None] and not check.trusted  # suspect from the first pair: nothing tracked
    assert faults[2].kind == FROZEN and "not changing while the camera sees the belt move" in faults[2].text
    assert "counts +0 mm, image +30 mm" in faults[2].text
    # Counting again (from where it stood): three agreeing frame pairs clear it.
    faults = run(check, 4, lambda k: 120.0 + 30.0 * k, lambda k: 300.0 + 30.0 * k)
    assert faults[-1] is None and check.trusted


def test_a_counter_at_the_wrong_scale_is_a_mismatch_and_impossible_counts_fault_at_once():
    check = BeltCheck(BELT)
    faults = run(check, 6, lambda k: 15.0 * k, lambda k: 30.0 * k)  # a prescaler changed: half the counts
    assert faults[-1].kind == MISMATCH and "disagrees with the camera" in faults[-1].text
    check = BeltCheck(BELT)
    run(check, 3, lambda k: 30.0 * k, lambda k: 30.0 * k)
    fault = check.update(0.3, 100_000, scene(90.0, 50))  # 10 m in 0.1 s
    assert fault.kind == IMPOSSIBLE and "counts jumped +99400 (+9940 mm) in 0.100 s" in fault.text
    assert check.update(0.4, 100_300, np.zeros((0, 2))).kind == IMPOSSIBLE
    # Backwards by more than 5 mm is impossible too; plausible counts clear it.
    assert check.update(0.5, 100_200, np.zeros((0, 2))).kind == IMPOSSIBLE
    for k in range(3):
        fault = check.update(0.6 + 0.1 * k, 100_500 + 300 * k, np.zeros((0, 2)))
    assert fault is None


def drift(check: BeltCheck, steps: int, camera: float, counts: float = 1.0, start: int = 0):
    """Frames 0.1 s apart, the belt 30 mm a frame: the camera sees ``camera`` × the true
    millimetres (a calibration off in scale), the counter counts ``counts`` × the true travel."""
    out = []
    for k in range(start, start + steps):
        true = scene(30.0 * k, 50, -30, 90)
        out.append(check.update(0.1 * k, int(round(30.0 * k * counts * 10)), camera * true))
    return out


def test_a_scallop_leaving_the_view_is_not_paired_with_one_entering_its_lane():
    # Frames 183 mm apart, the view from -320 to 320 mm: the scallop at 104 mm is cut by the
    # downstream edge in the next frame, and a new one in its lane sits at 230 mm (vision did not
    # see it whole upstream). Counted as a disagreement, the frame would go untracked.
    leaving, entering = np.array([[104.1, -71.2]]), np.array([[230.5, -72.9]])
    for view, suspect in ((None, True), ((-320.0, 320.0), False)):
        check = BeltCheck(BELT, view_x=view, radius_mm=37.5)
        check.update(0.0, 0, leaving)
        check.update(0.6, 1830, entering)
        assert check.suspect is suspect
    # A counter that froze is still caught with the view known: the scallop stays in view.
    check = BeltCheck(BELT, view_x=(-320.0, 320.0), radius_mm=37.5)
    faults = run(check, 6, lambda k: 0.0, lambda k: 30.0 * k)
    assert faults[-1].kind == FROZEN


def test_camera_and_counts_at_one_scale_read_a_ratio_of_one():
    check = BeltCheck(BELT)
    assert drift(check, 30, 1.0) == [None] * 30
    assert check.scale_ratio == pytest.approx(1.0, abs=1e-9) and check.faults == []


def test_a_camera_off_in_scale_by_8_percent_stops_picking_though_every_frame_pair_agrees():
    check = BeltCheck(BELT)
    # 2.4 mm a frame: inside the per-frame tolerance (5 mm + 5 %), so the counts stay trusted.
    assert drift(check, 30, 1.08) == [None] * 30 and check.trusted
    assert [f.kind for f in check.faults] == [SCALE]
    assert "camera sees the belt move +8.0 % farther than the encoder counts" in check.faults[0].text
    assert check.scale_ratio == pytest.approx(1.08, abs=1e-6)
    # Set right again (a camera remounted): fresh pairs take it back, stale ones do not.
    drift(check, 3, 1.0, start=30)
    assert check.faults
    drift(check, 20, 1.0, start=33)
    assert check.faults == [] and check.scale_ratio == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("camera, counts, fault", [(1.04, 1.0, False), (1.0, 0.92, True), (0.93, 1.0, True)])
def test_the_scale_check_allows_5_percent_either_way(camera, counts, fault):
    # 4 % is what an outline 25 mm above the belt reads under a camera 650 mm up; a slipping
    # wheel counting 8 % short reads 1/0.92 = +8.7 %.
    check = BeltCheck(BELT)
    drift(check, 40, camera, counts)
    assert check.scale_ratio == pytest.approx(camera / counts, abs=1e-3)
    assert bool(check.faults) is fault


def test_a_change_of_scale_while_the_line_runs_is_held_to_the_runs_own_first_reading():
    # 4 % off 1 is inside what a real line's parallax needs; 4 % off what this run read is not.
    check = BeltCheck(BELT)
    drift(check, 30, 1.0)
    assert check.scale_baseline == pytest.approx(1.0, abs=1e-9) and check.faults == []
    drift(check, 30, 1.04, start=30)
    assert [f.kind for f in check.faults] == [SCALE]
    assert "+4.0 % farther than the encoder counts, +4.0 % since the start of this run" in check.faults[0].text
    # A line that starts 4 % off reads that as its own and is held to it.
    check = BeltCheck(BELT)
    drift(check, 60, 1.04)
    assert check.faults == [] and check.scale_baseline == pytest.approx(1.04, abs=1e-6)


def test_a_first_reading_from_a_camera_already_moved_is_warned_and_dropped_when_it_is_set_back():
    """An outside try moved the camera 4 % before the run's first reading: no fault (within 5 %),
    and once set back a "changed since the start" fault that never cleared, the line waiting with
    a camera in order. The reading is suspect from the start, and dropped when fresh pairs agree
    with the calibration."""
    check = BeltCheck(BELT)
    drift(check, 60, 1.04)
    assert check.faults == [] and check.scale_baseline == pytest.approx(1.04, abs=1e-6)
    assert "+4.0 % off the calibration" in check.scale_warning
    seen = []
    for k in range(60, 130):  # set back: off the run's reading by -3.8 %
        drift(check, 1, 1.0, start=k)
        seen.append(bool(check.faults))
    # The fault comes (a change the line cannot tell from a knock), then goes on fresh pairs.
    assert any(seen) and not seen[-1] and seen.index(True) < 20
    assert check.faults == [] and check.rebased == 1 and check.scale_warning == ""
    assert check.scale_baseline == pytest.approx(1.0, abs=1e-6)  # taken again on fresh pairs
    # A first reading within the drift of 1 is the set-up's own: a change from it is not undone so.
    check = BeltCheck(BELT)
    drift(check, 60, 1.02)
    drift(check, 30, 0.99, start=60)
    drift(check, 60, 0.99, start=90)
    assert [f.kind for f in check.faults] == [SCALE] and check.rebased == 0 and check.scale_warning == ""


def test_a_knocked_camera_is_caught_by_five_pairs_off_the_same_way_and_one_odd_frame_is_not():
    """The window's median turns only when half its 24 pairs are new (about 10 s on a line): the
    recent pairs, five from three sightings or more all past the drift one way, stop it sooner."""
    check = BeltCheck(BELT)
    drift(check, 60, 1.0)
    assert check.scale_baseline == pytest.approx(1.0) and not check.faults
    seen = None
    for k in range(60, 90):
        drift(check, 1, 1.03, start=k)
        if check.faults and seen is None:
            seen = k - 60
    # Three scallops a sighting, a sighting every other frame: the third sighting after the move.
    assert seen is not None and seen <= 6, seen
    assert "median of 9 recent scallop pairs, each off the same way" in check.faults[0].text, check.faults[0].text
    # One frame whose scallops all read 6 % off (a glitch) is one sighting: no fault.
    check = BeltCheck(BELT)
    drift(check, 60, 1.0)
    for k in range(60, 100):
        true = scene(30.0 * k, 50, -30, 90)
        check.update(0.1 * k, 300 * k, true * (1.06 if k == 70 else 1.0))
    assert check.faults == []


def test_a_stopped_belt_adds_no_copies_of_one_pair():
    check = BeltCheck(BELT)
    drift(check, 16, 1.0)
    n = len(check._ratios)
    for k in range(100):  # the belt stands, the camera runs on; one frame reads its scallops 4 mm off
        shift = 4.0 if k == 3 else 0.0
        check.update(2.0 + 0.1 * k, 4500, scene(450.0 + shift, 50, -30, 90))
    assert len(check._ratios) == n and check.faults == []


def test_scallops_a_pair_could_mix_up_are_left_out_of_the_scale():
    check = BeltCheck(BELT)
    for k in range(30):
        # Two scallops in one lane 10 mm apart: each has two candidates 60 mm back.
        pts = np.array([[-200.0 + 30 * k, 50.0], [-190.0 + 30 * k, 50.0]])
        check.update(0.1 * k, 300 * k, pts)
    assert check.scale_ratio is None


class FlakyCamera(Camera):
    """A camera that goes away while ``away`` and comes back when reconnected after it."""

    def __init__(self, clock) -> None:
        super().__init__()
        self.clock = clock
        self.away = False
        self.connects = []
        self.k = 0

    @property
    def resolution(self):
        return (32, 24)

    def connect(self) -> None:
        self.connects.append(self.clock.now())
        if self.away:
            raise CameraNotFoundError("camera 'rtsp://cam': cannot open stream")
        self._connected = True

    def disconnect(self) -> None:
        self._connected = False

    def read(self) -> Frame:
        self._require_connected("'rtsp://cam'")
        if self.away:
            raise CameraStalledError("camera 'rtsp://cam': no frame delivered")
        self.k += 1
        self.clock.advance(0.1)
        return Frame(np.zeros((24, 32, 3), np.uint8), self.clock.now(), encoder=self.k, index=self.k)


def test_a_camera_that_goes_away_is_reconnected_with_back_off_and_its_alarm_names_it():
    clock = VirtualClock()
    cam = FlakyCamera(clock)
    cam.connect()
    alarms = Alarms()
    reader = FrameReader(
        cam, alarms, Stats(), clock, 2.0, reconnect_min_s=0.5, reconnect_max_s=2.0, name="camera 'rtsp://cam'"
    )
    assert reader.read() is not None and reader.usable
    cam.away = True
    t_lost = clock.now()
    while clock.now() < t_lost + 7.0:
        assert reader.read() is None
        clock.advance(0.05)
    assert not reader.usable and alarms.is_active("camera.no_frames")
    text = alarms.visible()[0].text
    assert text.startswith("camera 'rtsp://cam' delivers no frames (camera 'rtsp://cam': no frame delivered)")
    # Tries after 0.5 s, then doubling up to 2 s.
    tries = np.diff([t - t_lost for t in cam.connects[1:]])
    assert cam.connects[1] - t_lost == pytest.approx(0.5, abs=0.06)
    assert list(np.round(tries, 1)) == [1.0, 2.0, 2.0]
    cam.away = False
    clock.advance(2.0)
    assert reader.read() is not None and reader.usable and reader.reconnects == 1
    assert not alarms.is_active("camera.no_frames") and len(alarms.visible()) == 1  # kept until acknowledged


def test_the_state_says_waiting_camera_and_figures_not_known_are_unknown(tmp_path):
    """The hardware backend on a replayed recording: no pick verifier, so what picks did to the
    uros is unknown everywhere; a recording that goes away makes the line wait for it."""
    from scallop.app.backends import ReplayBackend, default_sim_arms
    from scallop.app.build import build_line
    from scallop.app.config import CameraSection, LineConfig, RuntimeSection
    from scallop.app.metrics import SnapshotCollector, render
    from scallop.app.record import Record
    from scallop.sim.commission import true_calibration
    from scallop.sim.config import SimConfig
    from tests.test_frame_time import sim_recording

    sim_recording(tmp_path / "rec", 16.0)
    arms = default_sim_arms(1)
    true_calibration(SimConfig(), arms).save(tmp_path / "line.json")
    cfg = LineConfig(
        camera=CameraSection(source=str(tmp_path / "rec")),
        arms=arms,
        runtime=RuntimeSection(calibration=str(tmp_path / "line.json")),
    )
    backend = ReplayBackend(cfg)
    line = build_line(cfg, tmp_path / "record.sqlite", clock=backend.clock, backend=backend)
    try:
        line.open()
        line.start("test")
        line.run_stepped(6.0)
        (tmp_path / "rec").rename(tmp_path / "away")  # the recording's share goes away for a while
        line.run_stepped(3.0)
        assert line.state == "waiting_camera" and line.alarms.is_active("camera.no_frames")
        assert line.snapshot().state == "waiting_camera"
        assert "the recording is gone" in line.alarms.get("camera.no_frames").text
        # No PLC, so no gate: what passed under the camera meanwhile went on unchecked, and says so.
        assert line.alarms.is_active("plc.blind_no_gate.1")
        (tmp_path / "away").rename(tmp_path / "rec")
        line.run_stepped(7.0)
        assert line.state == "running" and not line.alarms.is_active("camera.no_frames")
        snap = line.snapshot()
    finally:
        line.close()
    assert snap.picked > 0
    assert snap.uro_removed is None and snap.missed is None and snap.adductor_hits is None
    assert snap.removal_rate is None and all(a.uro_removed is None for a in snap.arms)
    text = render(SnapshotCollector(snap))
    assert "scallop_picked_total" in text and "scallop_uro_removed_total" not in text
    assert "scallop_uro_removal_ratio" not in text and "scallop_arm_uro_removed_total{" not in text
    summary = line.summary()
    assert summary["seen"] == snap.seen + snap.tracking and summary["uro_removed"] is None
    with Record(tmp_path / "record.sqlite") as rec:
        day = rec.summary(0.0, time.time() + 60)
        rows = rec.scallops()
    assert day.picked == summary["picked"] and day.uro_removed is None and day.removal_rate is None
    report = day.format()
    assert "uro removed        unknown" in report and "picks not graded: no pick verifier" in report
    assert "0.0 %" not in report
    picked = [r for r in rows if r["result"] == "picked"]
    assert all(r["uro_removed"] is None for r in picked)
    # What vision knows is in the record: size, detection score, the uro's place.
    assert all(40 <= r["diameter_mm"] <= 80 and 0.5 <= r["score"] <= 1 for r in picked)
    assert all(math.hypot(r["uro_x_mm"] - r["grasp_x_mm"], r["uro_y_mm"] - r["grasp_y_mm"]) < 8 for r in picked)
    con = sqlite3.connect(tmp_path / "record.sqlite")
    assert con.execute("SELECT COUNT(*) FROM scallops WHERE uro_found = 1 AND uro_x_mm IS NULL").fetchone()[0] == 0
    con.close()


def test_a_belt_scale_reading_is_kept_for_its_calibration_and_holds_the_next_run_from_its_start(tmp_path):
    """The run's first reading goes into the record for its calibration file; the next run with
    the same file starts from it (a camera moved while the line was off is held to 2.5 %, not
    5 %), one with another file or another encoder scale reads afresh."""
    from scallop.app.line.line import belt_scale_key, kept_belt_scale
    from scallop.sim.config import SimConfig
    from scallop.sim.world import camera_model_from_config
    from tests.helpers import make_line, write_line_calibration

    cal = tmp_path / "line-calibration.json"
    write_line_calibration(cal, camera_model_from_config(SimConfig().camera))
    over = {"runtime": {"tick_s": 0.02, "calibration": str(cal)}}
    line = make_line(tmp_path, overrides=over)
    try:
        assert line.belt_check.scale_baseline is None
        line.start("test")
        line.run_stepped(40.0)
        first = line.belt_check.scale_baseline
    finally:
        line.close()
    assert first == pytest.approx(1.0, abs=0.005)
    line = make_line(tmp_path, overrides=over)
    try:
        assert line.belt_check.scale_baseline == pytest.approx(first, abs=1e-5)
        key = line._scale_key
    finally:
        line.close()
    assert belt_scale_key("", BELT) == "" and key == belt_scale_key(str(cal), line.backend.belt)
    assert belt_scale_key(str(cal), Belt(counts_per_mm=10.5, direction=1)) != belt_scale_key(str(cal), BELT)
    # The kept reading names when it was taken, and a stranger's or a nonsense one is not used.
    rec = type("R", (), {"last_events": {"belt_scale": {"time": 0.0, "detail": {"calibration": "k", "ratio": 1.01}}}})
    assert kept_belt_scale(rec, "k")[0] == 1.01 and kept_belt_scale(rec, "other") == (None, "")
    rec.last_events["belt_scale"]["detail"]["ratio"] = float("nan")
    assert kept_belt_scale(rec, "k") == (None, "")
    # Held to it from the first pairs: 3 % off the kept reading is the fault at once.
    check = BeltCheck(BELT, kept_baseline=1.0, kept_note="2026-12-05 10:00")
    drift(check, 30, 1.03)
    assert [f.kind for f in check.faults] == [SCALE]
    assert "since the reading kept for this calibration (2026-12-05 10:00)" in check.faults[0].text
