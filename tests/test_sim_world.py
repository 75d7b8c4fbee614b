"""The simulated line: belt, encoder, arrivals, rendering, the camera and the referee."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from scallop.app.config import ConfigError, build
from scallop.sim.arrivals import overlap_share
from scallop.sim.camera import CameraTimeoutError, SimCamera
from scallop.sim.clock import VirtualClock
from scallop.sim.config import (
    ArrivalConfig,
    BeltConfig,
    EncoderConfig,
    LookConfig,
    SimCameraConfig,
    SimConfig,
    SpeedSegment,
)
from scallop.sim.scene import ADDUCTOR, URO
from scallop.sim.world import SimWorld, SpeedProfile
from scallop.vision.camera import CameraNotConnectedError, CorruptFrameError

SMALL = SimCameraConfig(width=640, height=480, mm_per_px=0.5)


def small_config(**kw) -> SimConfig:
    return SimConfig(camera=kw.pop("camera", SMALL), **kw)


@pytest.fixture(scope="module")
def world() -> SimWorld:
    # Busy enough that the view always holds a few scallops. Tests using it ask for times
    # in increasing order, as the line does (scallops far downstream are forgotten).
    cfg = small_config(arrivals=ArrivalConfig(rate_per_s=3.0, touch_share=0.0))
    return SimWorld(cfg, seed=7, clock=VirtualClock())


# ------------------------------------------------------------------ configuration
def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"belt: speed_mm_s=1500\.0 is out of range: allowed 0\.\.1000"):
        build(SimConfig, {"belt": {"speed_mm_s": 1500}})
    with pytest.raises(ConfigError, match=r"encoder: direction=2 is not allowed"):
        build(SimConfig, {"encoder": {"direction": 2}})
    with pytest.raises(ConfigError, match=r"camera: mm_per_px=2\.0 is out of range: allowed 0\.3\.\.1"):
        build(SimConfig, {"camera": {"mm_per_px": 2.0}})
    with pytest.raises(ConfigError, match=r"camera\.fov: unknown key"):
        build(SimConfig, {"camera": {"fov": 60}})
    with pytest.raises(ConfigError, match=r"arrivals\.pattern='random' is not allowed"):
        build(SimConfig, {"arrivals": {"pattern": "random"}})
    with pytest.raises(ConfigError, match=r"belt\.profile\[1\]: speed_mm_s=-5"):
        build(
            SimConfig,
            {"belt": {"profile": [{"duration_s": 1, "speed_mm_s": 100}, {"duration_s": 1, "speed_mm_s": -5}]}},
        )
    with pytest.raises(ValueError, match=r"rate_per_s=0\.6 needs belt\.speed_mm_s > 0"):
        SimConfig(belt=BeltConfig(speed_mm_s=0.0))


def test_config_builds_from_toml_tables():
    cfg = build(
        SimConfig,
        {
            "belt": {"speed_mm_s": 250, "profile": [{"duration_s": 2, "speed_mm_s": 0, "end_speed_mm_s": 250}]},
            "camera": {"width": 1920, "height": 1080, "distortion": [-0.1, 0, 0, 0, 0]},
            "look": {"belt_colour": "blue"},
        },
    )
    assert cfg.belt.profile[0].end_speed == 250 and cfg.camera.distortion[0] == -0.1
    assert cfg.look.belt_colour == "blue"


def test_default_config_is_the_documented_line():
    cfg = SimConfig()
    assert (cfg.camera.width, cfg.camera.height, cfg.camera.mm_per_px) == (1280, 720, 0.5)
    assert cfg.belt.speed_mm_s == 300 and cfg.arrivals.rate_per_s == 0.6 and cfg.encoder.counts_per_mm == 10


# ------------------------------------------------------------------ belt and encoder
def test_speed_profile_travel_with_ramps_and_stops():
    belt = BeltConfig(
        profile=[
            SpeedSegment(1.0, 0.0, 300.0),
            SpeedSegment(2.0, 300.0),
            SpeedSegment(1.0, 0.0),
            SpeedSegment(0.5, 300.0, 100.0),
        ]
    )
    p = SpeedProfile(belt)
    assert p.travel(0.5) == pytest.approx(0.5 * 150.0 * 0.5)  # ramp: ½·a·t², a = 300/s²
    assert p.travel(1.0) == pytest.approx(150.0)
    assert p.travel(3.0) == pytest.approx(750.0)
    assert p.travel(3.7) == pytest.approx(750.0) and p.speed(3.5) == 0.0
    assert p.travel(4.5) == pytest.approx(750.0 + 100.0)  # ramp down 300→100 over 0.5 s
    assert p.travel(5.5) == pytest.approx(850.0 + 100.0)  # holds the last speed
    assert p.time_to_reach(450.0, 0.0, 10.0) == pytest.approx(2.0, abs=1e-6)
    assert p.time_to_reach(800.0, 3.0, 0.5) is None  # stopped within the horizon
    # 50 mm into the 300→100 ramp (a = −400 mm/s²): 300τ − 200τ² = 50
    assert p.time_to_reach(800.0, 3.0, 2.0) == pytest.approx(4.0 + (300 - math.sqrt(50000)) / 400, abs=1e-6)
    rep = SpeedProfile(replace(belt, repeat_profile=True))
    assert rep.travel(4.5 + 1.0) == pytest.approx(850.0 + 150.0)


@pytest.mark.parametrize("direction", [1, -1])
def test_encoder_counts_follow_travel_both_directions(direction):
    cfg = small_config(encoder=EncoderConfig(counts_per_mm=12.5, direction=direction, offset=1000))
    w = SimWorld(cfg, seed=0)
    for t in (0.0, 0.37, 1.0, 5.123):
        count = w.encoder_at(t)
        assert count == round(direction * w.travel_mm(t) * 12.5) + 1000
        assert w.travel_from_encoder(count) == pytest.approx(w.travel_mm(t), abs=0.5 / 12.5 + 1e-9)
    assert (w.encoder_at(2.0) - w.encoder_at(1.0)) * direction > 0


def test_camera_model_round_trips_belt_points_with_tilt_and_distortion():
    cam_cfg = SimCameraConfig(
        width=800, height=600, mm_per_px=0.6, tilt_deg=10.0, distortion=(-0.2, 0.05, 0.001, -0.001, 0.0)
    )
    w = SimWorld(small_config(camera=cam_cfg), seed=0)
    cm = w.camera_model
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(-200, 200, 200), rng.uniform(-150, 150, 200)])
    px = cm.project_belt(pts)
    inside = (px[:, 0] > 0) & (px[:, 0] < 799) & (px[:, 1] > 0) & (px[:, 1] < 599)
    back = cm.pixel_to_belt(px[inside])
    assert inside.sum() > 100 and np.abs(back - pts[inside]).max() < 0.1


# ------------------------------------------------------------------ arrivals
@pytest.mark.parametrize("pattern", ["steady", "bursts", "gaps"])
def test_arrival_rate_overlap_and_lane(pattern):
    cfg = small_config(
        arrivals=ArrivalConfig(
            rate_per_s=1.5, pattern=pattern, touch_share=0.3, max_overlap=0.1, lane_mm=(-100.0, 100.0)
        )
    )
    w = SimWorld(cfg, seed=3)
    w.scallops_at(0.0)
    first = w._arrivals.next_id
    states = w.scallops_at(120.0)
    rate = (w._arrivals.next_id - first) / 120.0
    assert rate == pytest.approx(1.5, rel=0.2)
    specs = [w.scallop(s.id).spec for s in states]
    assert all(-100.0 - 1e-9 <= s.y_mm <= 100.0 + 1e-9 for s in specs)
    worst = max(
        overlap_share(math.hypot(a.x_mm - b.x_mm, a.y_mm - b.y_mm), a.diameter_mm / 2, b.diameter_mm / 2)
        for i, a in enumerate(specs)
        for b in specs[i + 1 :]
    )
    assert worst <= 0.1 + 1e-6


def test_scallops_enter_upstream_and_leave_downstream(world):
    t = 1.0
    states = world.scallops_at(t)
    ids = [s.id for s in states]
    assert ids == sorted(ids)
    later = {s.id: s for s in world.scallops_at(t + 0.5)}
    for s in states:
        if s.id in later:  # rigid on the belt: moved by exactly the travel
            dx = later[s.id].center_B[0] - s.center_B[0]
            assert dx == pytest.approx(world.travel_mm(t + 0.5) - world.travel_mm(t))
            assert later[s.id].center_B[1] == s.center_B[1]


def test_arrivals_enter_upstream_and_are_forgotten_downstream():
    cfg = small_config(arrivals=ArrivalConfig(rate_per_s=2.0), belt=BeltConfig(keep_downstream_mm=100.0))
    w = SimWorld(cfg, seed=4)
    x_lo, x_hi = w.renderer.x_lo, w.renderer.x_hi
    known: dict[int, float] = {s.id: s.center_B[0] for s in w.scallops_at(0.0)}
    for t in np.arange(0.1, 4.0, 0.1):
        now = {s.id: s for s in w.scallops_at(t)}
        for sid, s in now.items():
            if sid not in known:  # new arrivals appear before the view, never inside it
                assert s.center_B[0] + s.diameter_mm / 2 < x_lo + 30.0 + 1e-6
        for sid in set(known) - set(now):  # forgotten only once well past the view
            assert known[sid] + 30.0 > x_hi + 100.0
        known = {sid: s.center_B[0] for sid, s in now.items()}


# ------------------------------------------------------------------ rendering and truth
def test_same_seed_same_frames_different_seed_different():
    cfg = small_config()
    a, b, c = (SimWorld(cfg, seed=s) for s in (5, 5, 6))
    for t in (0.0, 1.3):
        ia, ta = a.render(t)
        ib, tb = b.render(t)
        assert ia.tobytes() == ib.tobytes() and ta.instances.tobytes() == tb.instances.tobytes()
    assert a.render(2.0)[0].tobytes() != c.render(2.0)[0].tobytes()


def test_truth_is_consistent_with_the_maps(world):
    for t in (2.0, 3.0, 4.0):
        image, truth = world.render(t)
        h, w = truth.parts.shape
        assert image.shape == (h, w, 3) and truth.instances.dtype == np.uint16
        assert truth.encoder == world.encoder_at(t) and truth.travel_mm == world.travel_mm(t)
        assert len(truth.scallops) >= 2
        seen = set(np.unique(truth.instances)) - {0}
        assert seen == {f.instance for f in truth.scallops}
        for f in truth.scallops:
            mask = truth.instances == f.instance
            assert mask.sum() == f.visible_px and 0.0 <= f.visible_fraction <= 1.0
            ys, xs = np.nonzero(mask)
            assert (xs.min(), ys.min(), xs.max(), ys.max()) == f.bbox_px
            touches = xs.min() == 0 or ys.min() == 0 or xs.max() == w - 1 or ys.max() == h - 1
            assert f.cut_by_border or not touches
            uro = mask & (truth.parts == URO)
            assert f.uro_px == uro.sum() and f.uro_present == bool(uro.any())
            if f.uro_present:
                assert np.allclose(f.uro_centroid_px, (xs[uro[ys, xs]].mean(), ys[uro[ys, xs]].mean()))
            state = next(s for s in world.scallops_at(t) if s.id == f.id)
            assert np.allclose(f.center_B, state.center_B)


def test_visible_scallops_match_rendered_ones(world):
    for t in (5.0, 5.6):
        _, truth = world.render(t)
        vis = {s.id for s in world.visible_scallops(t)}
        assert {f.id for f in truth.scallops} <= vis


def test_lighting_drift_and_set_look():
    w = SimWorld(small_config(arrivals=ArrivalConfig(rate_per_s=0.1)), seed=1)
    base = w.look_at(0.0)
    dim = w.render(0.5)[0].mean()
    w.set_look(replace(base, brightness=1.2))
    bright = w.render(0.5)[0].mean()
    assert bright / dim == pytest.approx(1.2, rel=0.05)
    w.set_look_schedule(lambda t: replace(base, color_temp_k=4000.0 if t < 1 else 6500.0))
    warm, cool = w.render(0.5)[0].mean(axis=(0, 1)), w.render(1.5)[0].mean(axis=(0, 1))
    assert warm[2] - warm[0] > cool[2] - cool[0] + 10  # BGR: red over blue under warm light
    drifting = SimWorld(small_config(look=LookConfig(drift_brightness=0.2, drift_period_s=40.0)), seed=1)
    levels = [drifting.look_at(t).brightness for t in np.linspace(0, 40, 41)]
    assert max(levels) == pytest.approx(1.2, abs=0.01) and min(levels) == pytest.approx(0.8, abs=0.01)


def test_motion_blur_follows_belt_speed():
    cam = replace(SMALL, exposure_ms=4.0)
    w = SimWorld(small_config(camera=cam, belt=BeltConfig(speed_mm_s=300.0)), seed=0)
    assert w.look_at(0.0).motion_blur_px == pytest.approx(2.4)  # 300 mm/s · 4 ms / 0.5 mm/px
    w2 = SimWorld(small_config(camera=cam, belt=BeltConfig(speed_mm_s=500.0)), seed=0)
    assert w2.look_at(0.0).motion_blur_px == 3.0  # capped


# ------------------------------------------------------------------ the referee
def _upright_with_visible_uro(world, t):
    # the one furthest upstream stays in view longest
    for s in sorted(world.visible_scallops(t), key=lambda s: s.center_B[0]):
        if s.has_uro and not s.upside_down and world.part_at(s.uro_center_B, t) == (URO, s.id):
            return s
    raise AssertionError("no scallop with a visible uro in view")


def test_grade_pick_results(world):
    t = 6.0
    s = _upright_with_visible_uro(world, t)
    uro, add, c = (np.array(v) for v in (s.uro_center_B, s.adductor_center_B, s.center_B))
    away = uro - add
    assert world.grade_pick(add, t, away).result == "adductor_hit"
    into = world.grade_pick(uro, t, -away)
    assert into.result == "adductor_hit" and "into the adductor" in into.detail
    # other meat of this scallop, opposite its uro: the uro stays on
    rim = c - 0.8 * (s.diameter_mm / 2) * (uro - c) / np.linalg.norm(uro - c)
    lab, owner = world.part_at(rim, t)
    assert owner == s.id and lab not in (0, URO, ADDUCTOR)
    assert world.grade_pick(rim, t, away).result == "missed"
    # a belt point far from everything
    empty = next(p for p in ([x, 230.0] for x in np.linspace(-150, 150, 31)) if world.part_at(p, t) == (0, 0))
    assert world.grade_pick(empty, t, (1.0, 0.0)).result == "empty"
    # later, where the belt has carried it: the uro comes off, then it is gone
    t2 = t + 0.25
    moved = uro + [world.travel_mm(t2) - world.travel_mm(t), 0.0]
    g = world.grade_pick(moved, t2, away)
    assert g.result == "uro_removed" and g.scallop_id == s.id
    _, truth = world.render(t2 + 0.01)
    f = truth.by_id(s.id)
    assert f is not None and not f.uro_present and f.uro_px == 0 and not f.has_uro
    assert world.grade_pick(moved, t2, away).result == "meat_hit"
    assert world.grades["uro_removed"] >= 1


def test_grade_pick_needs_the_uro_centre_within_a_millimetre(world):
    t = 8.0
    s = _upright_with_visible_uro(world, t)
    m = world.scallop(s.id)
    away = np.array(s.uro_center_B) - np.array(s.adductor_center_B)
    away /= np.linalg.norm(away)
    # walk outwards from the uro's centre until the point is no longer uro: 2 mm past its edge
    p = np.array(s.uro_center_B)
    while world.part_at(p, t)[0] == URO:
        p = p + 0.1 * away
    off = p + 2.0 * away
    assert world.grade_pick(off, t, away).result in ("missed", "empty")
    assert m.uro_present
    with pytest.raises(ValueError, match="pull_dir_B"):
        world.grade_pick(s.uro_center_B, t, (0.0, 0.0))


def test_remove_uro_unknown_scallop(world):
    with pytest.raises(KeyError, match="scallop 999999 is not on the belt"):
        world.remove_uro(999999)


# ------------------------------------------------------------------ the camera
def test_sim_camera_encoder_trigger_spacing():
    w = SimWorld(small_config(), seed=2, clock=VirtualClock())
    cam = SimCamera(w, trigger_mm=100.0)
    with pytest.raises(CameraNotConnectedError):
        cam.read()
    with cam:
        frames = [cam.read() for _ in range(6)]
    ts = np.array([f.timestamp for f in frames])
    enc = np.array([f.encoder for f in frames])
    assert [f.index for f in frames] == list(range(6))
    assert np.allclose(np.diff(ts), 100.0 / 300.0) and np.all(np.diff(enc) == 1000)
    assert w.clock.now() == pytest.approx(ts[-1])  # read() advanced virtual time to the exposure
    assert all(f.source == "sim" and f.extra["truth"].timestamp == f.timestamp for f in frames)
    assert cam.resolution == (640, 480) and frames[0].image.shape == (480, 640, 3)


def test_default_trigger_sees_each_scallop_three_or_four_times():
    w = SimWorld(small_config(), seed=2)
    cam = SimCamera(w)
    sightings = (w.view_length_mm + 60.0) / cam.trigger_mm
    assert 3.0 <= sightings <= 4.5


def test_sim_camera_falls_back_to_max_interval_on_a_stopped_belt():
    belt = BeltConfig(profile=[SpeedSegment(1.0, 300.0), SpeedSegment(3.0, 0.0), SpeedSegment(5.0, 300.0)])
    w = SimWorld(small_config(belt=belt), seed=2)
    with SimCamera(w, trigger_mm=150.0, max_interval_s=0.5) as cam:
        ts = [cam.read().timestamp for _ in range(10)]
    gaps = np.diff(ts)
    assert np.allclose(gaps[:1], 0.5)  # moving: 150 mm at 300 mm/s
    assert np.isclose(gaps, 0.5).sum() >= 6  # stopped: one frame per max interval
    assert gaps.max() <= 0.5 + 1e-9


def test_sim_camera_fps_mode_and_reverse_encoder():
    cfg = small_config(encoder=EncoderConfig(direction=-1))
    w = SimWorld(cfg, seed=2)
    with SimCamera(w, trigger="fps", fps=20.0) as cam:
        frames = [cam.read() for _ in range(4)]
    assert np.allclose(np.diff([f.timestamp for f in frames]), 0.05)
    assert all(np.diff([f.encoder for f in frames]) == -150)  # 300 mm/s · 0.05 s · 10/mm, counting down


def test_sim_camera_faults():
    w = SimWorld(small_config(), seed=2, clock=VirtualClock())
    with SimCamera(w, trigger_mm=100.0, read_timeout_s=0.5) as cam:
        assert cam.read().index == 0
        cam.drop_next(2)
        f = cam.read()
        assert f.index == 3 and cam.dropped == 2
        cam.corrupt_next()
        with pytest.raises(CorruptFrameError, match="frame 4"):
            cam.read()
        assert cam.read().index == 5
        t_stall = w.clock.now()
        cam.stall(2.0)
        with pytest.raises(CameraTimeoutError, match="no frame within 0.5 s"):
            cam.read()
        assert w.clock.now() == pytest.approx(t_stall + 0.5)
        for _ in range(2):
            with pytest.raises(CameraTimeoutError):
                cam.read()
        f = cam.read()  # the stall is over: exposures resume after its end
        assert f.timestamp > t_stall + 2.0 and f.index == 6


def test_sim_camera_buffer_drops_old_exposures_for_a_slow_reader():
    clock = VirtualClock()
    w = SimWorld(small_config(), seed=2, clock=clock)
    with SimCamera(w, trigger_mm=30.0, buffer_frames=2) as cam:
        cam.read()
        clock.advance(1.0)  # ten exposures happen while nobody reads
        f = cam.read()
        assert f.timestamp < clock.now() and f.index >= 8 and cam.dropped >= 8
        assert cam.read().timestamp == pytest.approx(f.timestamp + 0.1)
