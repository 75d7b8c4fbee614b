"""Scallop geometry, colours, the look and rendering through the camera model."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from scallop.calibration.camera_model import CameraModel
from scallop.sim.config import ProductConfig
from scallop.sim.scene import (
    ADDUCTOR,
    GONAD,
    LAB_RANGES,
    MANTLE,
    URO,
    CameraEffects,
    LookParams,
    Placed,
    ScallopModel,
    ScallopSpec,
    SceneRenderer,
    bgr_to_lab,
    draw_truth,
    field_gain,
    interpolated_belt_maps,
    lab_to_bgr,
    motion_kernel,
    white_balance_gains,
)

# A look with nothing between the paint and the pixels: for colour checks "before noise".
NEUTRAL = LookParams(
    brightness=1.0,
    color_temp_k=5200.0,
    vignetting=0.0,
    gradient=0.0,
    noise_sigma=0.0,
    motion_blur_px=0.0,
    droplets_per_dm2=0.0,
    water_film=0.0,
)


@pytest.fixture(scope="module")
def small_camera() -> CameraModel:
    return CameraModel.looking_down((640, 480), 0.5)


@pytest.fixture(scope="module")
def renderer(small_camera) -> SceneRenderer:
    return SceneRenderer(small_camera)


def _spec(seed: int, **kw) -> ScallopSpec:
    rng = np.random.default_rng(seed)
    spec = ScallopSpec.random(rng, kw.pop("id", 1), kw.pop("x", 0.0), kw.pop("y", 0.0), **kw)
    return spec


def _render_one(renderer, spec, look=NEUTRAL, seed=0):
    m = ScallopModel(spec)
    res = renderer.render([Placed(m, spec.id, spec.id)], 0.0, look, np.random.default_rng(seed))
    return m, res


# ------------------------------------------------------------------ colour
def test_lab_to_bgr_known_values_and_round_trip():
    grey = lab_to_bgr(np.array([50.0, 0.0, 0.0]))
    assert np.allclose(grey, grey[0], atol=0.5) and 117 <= grey[0] <= 121  # sRGB mid grey
    lab = np.array([[62.0, 28.0, 38.0], [24.0, 2.0, 7.0], [84.0, 1.0, 13.0]], np.float32)
    back = bgr_to_lab(lab_to_bgr(lab))
    assert np.abs(back - lab).max() < 0.8


def test_random_specs_stay_inside_the_appearance_spec():
    rng = np.random.default_rng(3)
    for i in range(300):
        sp = ScallopSpec.random(rng, i + 1, 0.0, 0.0)
        assert 40 <= sp.diameter_mm <= 75
        assert 8 <= sp.uro_length_mm <= 18 and 5 <= sp.uro_width_mm <= 10
        assert 0.38 - 1e-9 <= sp.adductor_frac <= 0.55 or sp.adductor_frac < 0.38  # shrunk only to fit
        assert 100 <= sp.gonad_arc_deg <= 170 and 10 <= sp.eye_dots <= 30
        gonad_key = "gonad_male" if sp.gonad == "male" else "gonad_female"
        for field, key in (
            ("mantle_lab", "mantle"),
            ("adductor_lab", "adductor"),
            ("uro_lab", "uro"),
            ("gill_lab", "gill"),
            ("gonad_lab", gonad_key),
        ):
            lo, hi = LAB_RANGES[key]
            v = getattr(sp, field)
            assert all(a <= x <= b for x, a, b in zip(v, lo, hi)), (field, v)
        m = ScallopModel(sp)
        assert m.uro_L == pytest.approx(sp.uro_length_mm)  # the drawn uro fits the meat


def test_product_shares_are_honoured():
    rng = np.random.default_rng(5)
    pr = ProductConfig(male_share=0.3, upside_down_share=0.1, gill_share=0.5)
    specs = [ScallopSpec.random(rng, i, 0, 0, pr) for i in range(1500)]
    assert np.mean([s.gonad == "male" for s in specs]) == pytest.approx(0.3, abs=0.04)
    assert np.mean([s.upside_down for s in specs]) == pytest.approx(0.1, abs=0.025)
    assert np.mean([s.gills for s in specs]) == pytest.approx(0.5, abs=0.04)


def test_spec_and_look_errors_name_the_field():
    with pytest.raises(ValueError, match=r"diameter_mm=120 is out of range: allowed 30\.\.90"):
        ScallopSpec(id=7, x_mm=0, y_mm=0, diameter_mm=120)
    with pytest.raises(ValueError, match=r"noise_sigma=12 is out of range"):
        LookParams(noise_sigma=12)
    with pytest.raises(ValueError, match="belt_colour='green'"):
        LookParams(belt_colour="green")


def test_random_looks_cover_the_envelope():
    rng = np.random.default_rng(11)
    looks = [LookParams.random(rng) for _ in range(400)]
    b = np.array([lk.brightness for lk in looks])
    assert b.min() < 0.78 and b.max() > 1.22 and np.all((b >= 0.75) & (b <= 1.25))
    ct = np.array([lk.color_temp_k for lk in looks])
    assert ct.min() < 4150 and ct.max() > 6350
    assert {lk.belt_colour for lk in looks} == {"white", "blue", "grey"}
    q = np.array([lk.jpeg_quality for lk in looks])
    assert q.min() == 75 and (q == 100).any() and (q < 100).mean() > 0.5
    assert max(lk.motion_blur_px for lk in looks) > 2.8
    pitch = np.array([lk.hinge_pitch_mm for lk in looks])
    assert pitch.min() >= 25 and pitch.max() <= 50


# ------------------------------------------------------------------ geometry
def test_part_geometry_matches_the_spec(renderer):
    spec = _spec(2, diameter_mm=62.0)
    spec.upside_down, spec.uro, spec.uro_hidden = False, True, 0.0
    m, res = _render_one(renderer, spec)
    mm2 = renderer.mm_per_px**2
    add_area = (res.parts == ADDUCTOR).sum() * mm2
    expect = math.pi * (spec.adductor_frac * spec.diameter_mm / 2) ** 2
    assert add_area == pytest.approx(expect, rel=0.08)
    meat = (res.instances == 1).sum() * mm2
    assert meat == pytest.approx(math.pi * (spec.diameter_mm / 2) ** 2, rel=0.1)
    # The uro touches the adductor: one dilation of the uro mask reaches adductor pixels.
    uro = (res.parts == URO).astype(np.uint8)
    assert uro.sum() * mm2 > 0.4 * spec.uro_length_mm * spec.uro_width_mm
    grown = cv2.dilate(uro, np.ones((3, 3), np.uint8), iterations=2)
    assert (grown.astype(bool) & (res.parts == ADDUCTOR)).any()
    # The gonad crescent spans about its arc around the adductor's centre.
    ys, xs = np.nonzero(res.parts == GONAD)
    c = renderer.camera.project_belt([np.array([spec.x_mm, spec.y_mm]) + m.adductor_centre_offset()])[0]
    ang = np.degrees(np.arctan2(ys - c[1], xs - c[0]))
    centre = np.degrees(np.angle(np.mean(np.exp(1j * np.radians(ang)))))
    spread = np.abs((ang - centre + 180) % 360 - 180)
    assert 2 * spread.max() == pytest.approx(spec.gonad_arc_deg, abs=20)


def test_upside_down_shows_no_uro_and_no_gonad(renderer):
    spec = _spec(4)
    spec.upside_down = True
    m, res = _render_one(renderer, spec)
    assert not (res.parts == URO).any() and not (res.parts == GONAD).any()
    assert (res.parts == ADDUCTOR).any()
    f = res.scallops[0]
    assert f.upside_down and not f.uro_present and f.uro_centroid_px is None and not f.has_uro


def test_eye_dots_are_dark_spots_on_the_mantle(renderer):
    spec = _spec(6, diameter_mm=70.0)
    spec.eye_dots = 24
    _, res = _render_one(renderer, spec)
    L = bgr_to_lab(res.image)[..., 0]
    dark = ((L < 35) & (res.parts == MANTLE)).astype(np.uint8)
    n, _ = cv2.connectedComponents(dark)
    assert 0.5 * spec.eye_dots <= n - 1 <= spec.eye_dots + 2


def test_hidden_uro_shows_less_of_itself(renderer):
    spec = _spec(8, diameter_mm=70.0)
    spec.upside_down, spec.uro = False, True
    spec.uro_hidden = 0.0
    _, open_res = _render_one(renderer, spec)
    spec2 = ScallopSpec(**{**spec.to_dict(), "uro_hidden": 0.45})
    _, hid_res = _render_one(renderer, spec2)
    a, b = (open_res.parts == URO).sum(), (hid_res.parts == URO).sum()
    assert 0.3 * a < b < 0.85 * a
    assert hid_res.scallops[0].uro_hidden and hid_res.scallops[0].uro_present


def test_part_at_agrees_with_the_rendered_labels(renderer):
    spec = _spec(9, diameter_mm=66.0, x=20.0, y=-10.0)
    m, res = _render_one(renderer, spec)
    rng = np.random.default_rng(0)
    pts = rng.uniform(-40, 40, (600, 2))
    labels = m.part_at(pts)
    px = np.round(renderer.camera.project_belt(pts + [spec.x_mm, spec.y_mm])).astype(int)
    drawn = res.parts[px[:, 1], px[:, 0]]
    assert (labels == drawn).mean() > 0.97  # they differ only on boundaries


# ------------------------------------------------------------------ colours as drawn
@pytest.mark.parametrize("seed", [10, 11, 12, 13])
def test_uro_is_dark_and_adductor_bright_before_noise(renderer, seed):
    spec = _spec(seed)
    spec.upside_down, spec.uro = False, True
    _, res = _render_one(renderer, spec)
    L = bgr_to_lab(res.image)[..., 0]
    assert L[res.parts == URO].mean() < 40
    assert L[res.parts == ADDUCTOR].mean() > 70
    assert L[res.parts == ADDUCTOR].mean() - L[res.parts == URO].mean() > 35


def test_male_gonad_is_close_to_the_adductor_female_is_not(renderer):
    def gap(gonad):
        spec = _spec(21)
        spec.upside_down = False
        spec = ScallopSpec(
            **{
                **spec.to_dict(),
                "gonad": gonad,
                "gonad_lab": (80.0, 2.5, 20.0) if gonad == "male" else (62.0, 28.0, 38.0),
                "adductor_lab": (83.0, 1.0, 14.0),
            }
        )
        _, res = _render_one(renderer, spec)
        lab = bgr_to_lab(res.image)
        return np.linalg.norm(lab[res.parts == GONAD].mean(0) - lab[res.parts == ADDUCTOR].mean(0))

    assert gap("male") < 12 < gap("female")


# ------------------------------------------------------------------ rendering through the camera
def test_scallop_appears_where_the_camera_model_projects_it():
    cam = CameraModel.looking_down((800, 600), 0.6, tilt_deg=12, dist=(-0.25, 0.05, 0.001, -0.001, 0.0))
    r = SceneRenderer(cam)
    spec = _spec(30, x=60.0, y=-40.0)
    _, res = _render_one(r, spec)
    f = res.scallops[0]
    expect = cam.project_belt([[spec.x_mm, spec.y_mm]])[0]
    assert np.allclose(f.center_px, expect)
    ys, xs = np.nonzero(res.instances == 1)
    assert abs(xs.mean() - expect[0]) < 3 and abs(ys.mean() - expect[1]) < 3
    assert f.visible_fraction == pytest.approx(1.0, abs=0.02) and not f.cut_by_border


def test_interpolated_maps_match_belt_maps():
    cam = CameraModel.looking_down(
        (640, 480), 0.7, tilt_deg=-10, dist=(-0.3, 0.08, 0.002, -0.002, 0.0), focal_px=600, yaw_deg=4
    )
    bx, by = interpolated_belt_maps(cam)
    ex, ey = cam.belt_maps()
    assert bx.shape == ex.shape == (480, 640)
    assert max(np.abs(bx - ex).max(), np.abs(by - ey).max()) < 0.05  # mm, at 0.7 mm/px


def test_overlap_z_order_and_visible_fraction(renderer):
    a = _spec(40, id=1, x=-20.0, y=0.0, diameter_mm=60.0)
    b = _spec(41, id=2, x=30.0, y=0.0, diameter_mm=60.0)  # 50 mm apart: discs overlap ~5 %
    ma, mb = ScallopModel(a), ScallopModel(b)
    res = renderer.render([Placed(ma, 1, 1), Placed(mb, 2, 2)], 0.0, NEUTRAL, np.random.default_rng(0))
    fa, fb = res.scallops
    assert fb.visible_fraction == pytest.approx(1.0, abs=0.02)  # on top
    assert 0.85 < fa.visible_fraction < 0.995  # partly covered
    # where both outlines claim a pixel, the later one owns it
    both = (mb.part_at(np.array([[5.0, 0.0]]) - [30.0, 0.0])[0] > 0) and (ma.part_at(np.array([[25.0, 0.0]]))[0] > 0)
    assert both
    px = np.round(renderer.camera.project_belt([[5.0, 0.0]])[0]).astype(int)
    assert res.instances[px[1], px[0]] == 2


def test_cut_by_border_and_every_instance_inside_or_cut(renderer):
    x_edge = renderer.x_hi  # the image's right edge on the belt
    spec = _spec(50, x=x_edge - 10.0, y=0.0)
    _, res = _render_one(renderer, spec)
    f = res.scallops[0]
    assert f.cut_by_border and f.visible_fraction < 0.8
    assert f.bbox_px[2] == 639


def test_draw_truth_marks_parts_and_uro(renderer):
    spec = _spec(60)
    spec.upside_down, spec.uro = False, True
    _, res = _render_one(renderer, spec)
    from scallop.sim.scene import FrameTruth

    out = draw_truth(res.image, FrameTruth(res.parts, res.instances, res.scallops))
    assert out.shape == res.image.shape and (out != res.image).any()
    cx, cy = (int(round(v)) for v in res.scallops[0].uro_centroid_px)
    assert tuple(out[cy, cx]) == (0, 255, 255)  # the yellow cross at the uro centroid


# ------------------------------------------------------------------ camera effects
def test_noise_sigma_brightness_and_colour_temperature():
    fx = CameraEffects((320, 240))
    grey = np.full((240, 320, 3), 128, np.uint8)
    look = LookParams(noise_sigma=3.0, vignetting=0.0, gradient=0.0, color_temp_k=5200.0)
    out = fx.apply(grey, look, np.random.default_rng(0)).astype(np.float64)
    assert out.std() == pytest.approx(3.0, rel=0.1) and out.mean() == pytest.approx(128, abs=0.5)
    bright = fx.apply(
        grey,
        LookParams(brightness=1.2, noise_sigma=0, vignetting=0, gradient=0, color_temp_k=5200.0),
        np.random.default_rng(0),
    )
    assert bright.mean() == pytest.approx(128 * 1.2, abs=1.0)
    warm, cool = white_balance_gains(4000.0), white_balance_gains(6500.0)
    assert warm[2] > warm[0] and cool[0] > cool[2]  # BGR: warm light reads red, cool reads blue


def test_field_gain_and_motion_kernel():
    g = field_gain((200, 100), vignetting=0.3, gradient=0.0, angle_deg=0.0)
    assert g[50, 100] == pytest.approx(1.0, abs=0.01) and g[0, 0] == pytest.approx(0.7, abs=0.02)
    k = motion_kernel(3.0)
    assert k.shape[0] == 1 and k.sum() == pytest.approx(1.0)
    assert (k > 0).sum() in (3, 4, 5) and motion_kernel(0.1) is None
    # blur length: a one-pixel line spreads to about the kernel's length along x only
    img = np.zeros((9, 21), np.float32)
    img[:, 10] = 1.0
    blurred = cv2.filter2D(img, -1, k)
    assert (blurred[4] > 0.05).sum() == 3 and np.allclose(blurred[0], blurred[8])


def test_render_is_deterministic_and_seed_dependent(renderer):
    spec = _spec(70)
    m = ScallopModel(spec)
    look = LookParams(noise_sigma=2.0)
    a = renderer.render([Placed(m, 1, 1)], 12.5, look, np.random.default_rng(1)).image
    b = renderer.render([Placed(m, 1, 1)], 12.5, look, np.random.default_rng(1)).image
    c = renderer.render([Placed(m, 1, 1)], 12.5, look, np.random.default_rng(2)).image
    assert a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes()


def test_belt_texture_is_seamless_across_its_loop(renderer):
    belt = renderer.belt(LookParams(droplets_per_dm2=5.0, water_film=1.0))
    p = belt.period_px
    wrapped = belt.strip(p - 20, 40)
    direct = belt.strip(-20, 40)
    assert np.array_equal(wrapped, direct)
    # the tile's last and first columns are neighbours on the belt: no jump between them
    jump = np.abs(belt.tile[:, -1].astype(int) - belt.tile[:, 0].astype(int)).mean()
    typical = np.abs(np.diff(belt.tile.astype(int), axis=1)).mean()
    assert jump < 4 * typical + 2
