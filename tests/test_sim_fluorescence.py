"""The fluorescence channel of the simulator (scallop.sim.scene.fluorescence): every grey level
inside the appearance spec's table ("Second channel: fluorescence"), measured on rendered
images; registered to the colour render; reproducible per seed."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from scallop.app.config import build
from scallop.calibration.camera_model import CameraModel
from scallop.errors import ConfigError
from scallop.sim.camera import SimCamera
from scallop.sim.clock import VirtualClock
from scallop.sim.config import SimConfig
from scallop.sim.fluorescence import encoder_shift_mm
from scallop.sim.scene import (
    ADDUCTOR,
    BACKGROUND,
    GILL,
    GONAD,
    LEVELS,
    MANTLE,
    URO,
    FluorescenceLook,
    FluorescenceRenderer,
    LookParams,
    Placed,
    ScallopGlow,
    ScallopModel,
    ScallopSpec,
    SceneRenderer,
    motion_kernel,
)
from scallop.sim.scene.fluorescence import FLAP_KEEP, URO_CENTRE
from scallop.sim.scene.hard import Debris
from scallop.sim.world import SimWorld

# 256 × 192 mm of belt: two rows of three scallops with room around each.
CAMERA = CameraModel.looking_down((640, 480), 0.4)
SPOTS = [(-80.0, -45.0), (0.0, -45.0), (80.0, -45.0), (-80.0, 45.0), (0.0, 45.0), (80.0, 45.0)]
QUIET = FluorescenceLook(noise_sigma=3.0, exposure_ratio=2.0, motion_blur_px=0.0, belt_level=4.0)


@pytest.fixture(scope="module")
def scene() -> SceneRenderer:
    return SceneRenderer(CAMERA)


def _specs(seed: int, **override) -> list[ScallopSpec]:
    """Six scallops that show every part: uro on top, females and males, gills on half."""
    out = []
    for k, (x, y) in enumerate(SPOTS):
        sp = ScallopSpec.random(np.random.default_rng([seed, k]), k + 1, x, y, diameter_mm=58.0)
        changes = dict(upside_down=False, uro=True, uro_hidden=0.0, gills=k % 2 == 0, eye_dots=0)
        changes["gonad"] = "male" if k % 3 == 1 else "female"
        changes.update(override)
        out.append(ScallopSpec(**{**sp.to_dict(), **changes}))
    return out


def _render(scene, specs, look=QUIET, seed=0, debris=()):
    models = [ScallopModel(s) for s in specs]
    placed = [Placed(m, m.spec.id, m.spec.id) for m in models]
    colour = scene.render(placed, 0.0, LookParams(), np.random.default_rng(seed))
    fl = FluorescenceRenderer(scene).render(placed, 0.0, look, np.random.default_rng(seed), debris=list(debris))
    return models, colour, fl


def _core(mask: np.ndarray, px: int = 2) -> np.ndarray:
    """The mask less ``px`` pixels at its edges: part boundaries are blended in both images."""
    return cv2.erode(mask.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)) > 0


# ------------------------------------------------------------------ shape, levels, reproducibility
def test_shape_dtype_and_registration_with_the_colour_render(scene):
    _, colour, fl = _render(scene, _specs(1))
    assert fl.image.shape == (480, 640) and fl.image.dtype == np.uint8
    assert fl.level.shape == (480, 640) and fl.level.dtype == np.float32
    assert fl.under_flap.shape == (480, 640) and fl.under_flap.dtype == bool
    # Registered: the glow sits on the colour render's uro pixels, nowhere else brighter.
    uro = _core(colour.parts == URO)
    assert uro.sum() > 300 and fl.level[uro].min() >= LEVELS["uro"][0]
    assert fl.level[_core(colour.parts != URO, 2)].max() < LEVELS["uro"][0]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_levels_per_part_stay_inside_the_spec(scene, seed):
    specs = _specs(seed)
    _, colour, fl = _render(scene, specs, seed=seed)
    parts, inst, level = colour.parts, colour.instances, fl.level
    measured = {}
    for key, part, which in (
        ("uro", URO, None),
        ("gill", GILL, None),
        ("adductor", ADDUCTOR, None),
        ("mantle", MANTLE, None),
        ("gonad_female", GONAD, "female"),
        ("gonad_male", GONAD, "male"),
    ):
        mask = parts == part
        if which is not None:
            mask &= np.isin(inst, [s.id for s in specs if s.gonad == which])
        mask = _core(mask)
        assert mask.sum() > 50, key
        lo, hi = LEVELS[key]
        # Every pixel before noise, and the mean of what the camera gives.
        assert lo <= level[mask].min() and level[mask].max() <= hi, (key, level[mask].min(), level[mask].max())
        measured[key] = float(fl.image[mask].mean())
        assert lo <= measured[key] <= hi, (key, measured[key])
    belt = _core(parts == BACKGROUND, 6)
    assert level[belt].max() <= LEVELS["belt"][1] and fl.image[belt].mean() <= LEVELS["belt"][1]
    # The uro outshines everything else; the gills are the brightest hard negative.
    assert measured["uro"] > LEVELS["gill"][1] and measured["gill"] > measured["adductor"]


def test_same_seed_same_image_other_seed_other_noise_same_levels(scene):
    specs = _specs(4)
    _, _, a = _render(scene, specs, seed=5)
    _, _, b = _render(scene, specs, seed=5)
    _, _, c = _render(scene, specs, seed=6)
    assert a.image.tobytes() == b.image.tobytes() and a.image.tobytes() != c.image.tobytes()
    assert np.array_equal(a.level, c.level)  # the scallops glow the same; only the sensor's noise differs
    assert ScallopGlow.of(specs[0]) == ScallopGlow.of(ScallopSpec(**specs[0].to_dict()))
    assert ScallopGlow.of(specs[0]) != ScallopGlow.of(specs[1])


def test_scallops_glow_differently_within_the_spec_spread():
    glows = [ScallopGlow.of(ScallopSpec.random(np.random.default_rng(i), i, 0.0, 0.0)) for i in range(400)]
    uro = np.array([g.uro for g in glows])
    # ±40 % from one scallop to the next around the middle of the range.
    assert uro.min() < 0.65 * URO_CENTRE and uro.max() > 1.35 * URO_CENTRE
    assert 0.6 * URO_CENTRE <= uro.min() and uro.max() <= 1.4 * URO_CENTRE
    keep = np.array([g.flap_keep for g in glows])
    assert FLAP_KEEP[0] <= keep.min() < 0.15 and 0.45 < keep.max() <= FLAP_KEEP[1]
    for g in glows:
        assert LEVELS["mantle"][0] <= g.mantle <= LEVELS["mantle"][1]
        assert LEVELS["eye"][0] <= g.eyes < g.mantle


def test_uro_is_patchy_within_the_spec(scene):
    specs = _specs(7)
    _, colour, fl = _render(scene, specs)
    spreads = []
    for sp in specs:
        mask = _core((colour.parts == URO) & (colour.instances == sp.id))
        if mask.sum() < 80:
            continue
        v = fl.level[mask]
        mean = ScallopGlow.of(sp).uro
        lo, hi = max(LEVELS["uro"][0], 0.75 * mean), min(LEVELS["uro"][1], 1.25 * mean)
        assert lo - 0.5 <= v.min() and v.max() <= hi + 0.5  # ±25 % around its own level
        spreads.append((np.percentile(v, 95) - np.percentile(v, 5)) / v.mean())
    assert len(spreads) >= 4
    assert 0.08 < np.median(spreads) < 0.5  # patchy, not flat, and not beyond ±25 %


# ------------------------------------------------------------------ the hard cases
def test_a_mantle_flap_keeps_its_share_of_the_uro_glow(scene):
    open_specs = _specs(8)
    hid_specs = [ScallopSpec(**{**s.to_dict(), "uro_hidden": 0.6}) for s in open_specs]
    _, _, fo = _render(scene, open_specs)
    _, colour, fh = _render(scene, hid_specs)
    checked = 0
    for sp in hid_specs:
        under = _core(fh.under_flap & (colour.instances == sp.id), 1)
        if under.sum() < 20:
            continue
        # Under the flap: what the open uro glows, times the scallop's flap share.
        ratio = fh.level[under] / fo.level[under]
        keep = ScallopGlow.of(sp).flap_keep
        assert np.median(ratio) == pytest.approx(keep, rel=0.02)
        # Dimmer than the visible rest of its uro; the label there is mantle.
        visible = _core((colour.parts == URO) & (colour.instances == sp.id))
        if visible.sum() >= 20:
            assert fh.level[under].mean() < 0.55 * fh.level[visible].mean()
        assert np.all(colour.parts[under] == MANTLE)
        checked += 1
    assert checked >= 4
    assert fo.under_flap.sum() == 0


def test_gills_are_striated_and_the_adductor_is_not(scene):
    specs = _specs(9, gills=True)
    models, colour, fl = _render(scene, specs)
    crossings = []
    for m in models:
        # Along an arc through the middle of the gill band, the stripes' pitch apart.
        rho = m.a0 + 0.5 * m.gill_t0
        arc = np.linspace(-0.6 * m.gill_half, 0.6 * m.gill_half, 400) + m.gonad_dir + np.pi
        pq = m.add_centre + rho * np.column_stack([np.cos(arc), np.sin(arc)])
        px = CAMERA.project_belt(m.to_belt(pq) + [m.spec.x_mm, m.spec.y_mm])
        vals = cv2.remap(fl.level, px[:, 0:1].astype(np.float32), px[:, 1:2].astype(np.float32), cv2.INTER_LINEAR)
        vals = vals.ravel()
        assert LEVELS["gill"][0] <= vals.min() and vals.max() <= LEVELS["gill"][1]
        signs = np.sign(vals - np.median(vals))
        expected = 2 * rho * (arc[-1] - arc[0]) / m.gill_pitch
        crossings.append(np.count_nonzero(np.diff(signs[signs != 0])) / expected)
    assert 0.7 < np.median(crossings) < 1.3
    for sp in specs:  # within one scallop: stripes across the gills, a plain adductor
        gill = _core((colour.parts == GILL) & (colour.instances == sp.id))
        add = _core((colour.parts == ADDUCTOR) & (colour.instances == sp.id))
        # (At 0.4 mm/px the 1.1–1.8 mm stripes are 3–4.5 px apart: resampling halves their swing.)
        assert fl.level[gill].std() > 4.0 > 3 * fl.level[add].std()


def test_mantle_eyes_are_dark_dots(scene):
    specs = _specs(10, eye_dots=24)
    _, colour, fl = _render(scene, specs)
    bare = _render(scene, _specs(10))[2]
    eyes = (colour.parts == MANTLE) & (bare.level - fl.level > 1.0)
    assert eyes.sum() > 100
    centres = eyes & (fl.level <= LEVELS["eye"][1])
    n, _ = cv2.connectedComponents(centres.astype(np.uint8))
    assert n - 1 >= 0.5 * 24 * len(specs)
    assert fl.level[eyes].min() >= LEVELS["eye"][0]


def test_upside_down_and_pulled_uros_do_not_glow(scene):
    specs = _specs(11)
    specs[0] = ScallopSpec(**{**specs[0].to_dict(), "upside_down": True})
    specs[1] = ScallopSpec(**{**specs[1].to_dict(), "uro": False})
    models = [ScallopModel(s) for s in specs]
    models[2].uro_present = False  # an arm pulled it
    placed = [Placed(m, m.spec.id, m.spec.id) for m in models]
    colour = scene.render(placed, 0.0, LookParams(), np.random.default_rng(0))
    fl = FluorescenceRenderer(scene).render(placed, 0.0, QUIET, np.random.default_rng(0))
    for sp in specs[:3]:
        assert fl.level[colour.instances == sp.id].max() <= LEVELS["gill"][1]
    for sp in specs[3:]:
        assert fl.level[colour.instances == sp.id].max() >= LEVELS["uro"][0]


def test_debris_grit_stays_dark_torn_uro_glows():
    scene = SceneRenderer(CAMERA)
    pieces = [
        Debris(
            x_mm=-60.0 + 30 * k, y_mm=0.0, length_mm=6.0, width_mm=4.0, angle_deg=20.0 * k, lab=(25, 2, 7), dark=True
        )
        for k in range(3)
    ] + [
        Debris(x_mm=-60.0 + 30 * k, y_mm=40.0, length_mm=4.0, width_mm=3.0, angle_deg=0.0, lab=(75, 1, 8), dark=False)
        for k in range(3)
    ]
    fl = FluorescenceRenderer(scene).render([], 0.0, QUIET, np.random.default_rng(0), debris=pieces)
    centres = np.round(CAMERA.project_belt([[d.x_mm, d.y_mm] for d in pieces])).astype(int)
    at = fl.level[centres[:, 1], centres[:, 0]]
    assert np.all((LEVELS["uro_debris"][0] <= at[:3]) & (at[:3] <= LEVELS["uro_debris"][1]))
    assert np.all(at[3:] <= LEVELS["grit"][1]) and len(set(np.round(at[:3], 3))) == 3
    # The same piece glows the same in a later frame, where the belt has carried it.
    later = FluorescenceRenderer(scene).render([], 15.0, QUIET, np.random.default_rng(1), debris=pieces)
    moved = np.round(CAMERA.project_belt([[d.x_mm + 15.0, d.y_mm] for d in pieces[:3]])).astype(int)
    assert later.level[moved[:, 1], moved[:, 0]] == pytest.approx(at[:3], abs=0.5)


# ------------------------------------------------------------------ the camera: noise and blur
def test_noise_and_the_longer_blur_along_the_travel(scene):
    specs = _specs(12)
    for sigma in (3.0, 8.0):
        look = FluorescenceLook(noise_sigma=sigma, exposure_ratio=3.0, motion_blur_px=0.0, belt_level=6.0)
        _, colour, fl = _render(scene, specs, look)
        # Where the level is well clear of 0 and 255 (8 bits clip the noise on a dark belt).
        mid = (fl.level > 40) & (fl.level < 200)
        resid = fl.image[mid].astype(np.float64) - fl.level[mid]
        assert mid.sum() > 2000 and resid.std() == pytest.approx(sigma, rel=0.1)
        belt = _core(colour.parts == BACKGROUND, 6)
        assert fl.image[belt].mean() <= LEVELS["belt"][1]
    # 9 px: three times the colour camera's 3 px. The image is the levels smeared along image x
    # (the travel), not along y, plus the noise.
    _, _, fl = _render(scene, specs, FluorescenceLook(noise_sigma=3.0, exposure_ratio=3.0, motion_blur_px=9.0))
    k = motion_kernel(9.0)
    along = cv2.filter2D(fl.level, -1, k, borderType=cv2.BORDER_REFLECT)
    across = cv2.filter2D(fl.level, -1, k.T, borderType=cv2.BORDER_REFLECT)
    mid = (along > 40) & (along < 200)
    assert (fl.image[mid] - along[mid]).std() == pytest.approx(3.0, rel=0.1)
    assert np.abs(fl.image[mid] - across[mid]).mean() > 3 * np.abs(fl.image[mid] - along[mid]).mean()


def test_look_refuses_values_outside_the_spec_naming_them():
    with pytest.raises(ConfigError, match=r"noise_sigma=nan is not a finite number: allowed 3\.\.8"):
        FluorescenceLook(noise_sigma=math.nan)
    with pytest.raises(ConfigError, match=r"exposure_ratio=5 is out of range: allowed 2\.\.4"):
        FluorescenceLook(exposure_ratio=5)
    with pytest.raises(ConfigError, match=r"belt_level=12 is out of range: allowed 0\.\.10"):
        FluorescenceLook(belt_level=12)
    rng = np.random.default_rng(0)
    for _ in range(50):
        look = FluorescenceLook.random(rng, colour_blur_px=3.0)
        assert 3 <= look.noise_sigma <= 8 and 2 <= look.exposure_ratio <= 4
        assert look.motion_blur_px == pytest.approx(3.0 * look.exposure_ratio)


# ------------------------------------------------------------------ the two set-ups in the world
ALTERNATE = {"setup": "alternate", "exposure_ratio": 3.0, "noise_sigma": 5.0, "frame_interval_ms": 20.0}
SECOND = {
    "setup": "second_camera",
    "exposure_ratio": 2.5,
    "noise_sigma": 4.0,
    "width": 800,
    "height": 600,
    "mm_per_px": 0.45,
    "center_x_mm": 6.0,
    "center_y_mm": -8.0,
    "tilt_deg": 5.0,
    "yaw_deg": 2.0,
}


def _world(fluorescence: dict | None, seed: int = 7) -> SimWorld:
    data = {
        "camera": {"width": 640, "height": 480, "mm_per_px": 0.5},
        "arrivals": {"rate_per_s": 3.0, "touch_share": 0.0},
        "product": {"upside_down_share": 0.0, "no_uro_share": 0.0, "hidden_uro_share": 0.0},
    }
    if fluorescence is not None:
        data["fluorescence"] = fluorescence
    return SimWorld(build(SimConfig, data), seed=seed, clock=VirtualClock())


def _with_uro(world: SimWorld, times=np.arange(1.0, 4.0, 0.25)):
    """A colour frame with plenty of visible uro, its time and its uro core."""
    for t in times:
        image, truth = world.render(float(t))
        uro = _core(truth.parts == URO)
        if uro.sum() > 150:
            return float(t), truth, uro
    raise AssertionError("no frame with a visible uro")


def test_without_the_channel_nothing_changes():
    w = _world(None)
    assert w.config.fluorescence.setup == "none" and w.fluorescence is None
    with pytest.raises(ConfigError, match=r"sim\.fluorescence\.setup is 'none'"):
        w.render_fluorescence(1.0)
    cam = SimCamera(w)
    cam.connect()
    frame = cam.read()
    assert "uv" not in frame.extra and "fluorescence" not in frame.extra
    # The colour frames are those of a world with the channel: it draws on its own generators.
    a = _world(None).render(2.0)[0]
    b = _world(ALTERNATE).render(2.0)[0]
    assert a.tobytes() == b.tobytes()


def test_config_refuses_a_channel_without_its_physical_quantities():
    def refused(fl: dict, pattern: str, **camera):
        data = {"fluorescence": fl, **({"camera": camera} if camera else {})}
        with pytest.raises(ConfigError, match=pattern):
            build(SimConfig, data)

    refused({"setup": "alternate"}, r"fluorescence: exposure_ratio is required with setup='alternate': allowed 2\.\.4")
    refused({**ALTERNATE, "frame_interval_ms": None}, r"frame_interval_ms is required with setup='alternate'")
    refused(
        {**ALTERNATE, "noise_sigma": math.nan}, r"fluorescence: noise_sigma=nan is not a finite number: allowed 3\.\.8"
    )
    refused({**ALTERNATE, "exposure_ratio": 6}, r"exposure_ratio=6\.0 is out of range: allowed 2\.\.4")
    refused({**ALTERNATE, "setup": "uv"}, r"fluorescence\.setup='uv' is not allowed")
    refused({**ALTERNATE, "strobe": True}, r"fluorescence\.strobe: unknown key")
    refused(
        {k: v for k, v in SECOND.items() if k != "center_x_mm"}, r"center_x_mm is required with setup='second_camera'"
    )
    refused({**SECOND, "width": 4000}, r"fluorescence: width=4000 is out of range: allowed 320\.\.1920")
    # Resolution on the belt 0.5–1.5× the colour camera's (here 0.5 mm/px: 0.333..1 mm/px).
    refused({**SECOND, "mm_per_px": 1.2}, r"fluorescence\.mm_per_px=1\.2 gives 0\.42× .* allowed 0\.5\.\.1\.5×")
    refused(
        {**ALTERNATE, "frame_interval_ms": 2.0},
        r"frame_interval_ms=2 must be longer than camera\.exposure_ms=4",
        exposure_ms=4.0,
    )
    refused(
        {**ALTERNATE, "frame_interval_ms": 120.0},
        r"must be shorter than the colour frame period 100 ms",
        trigger="fps",
        fps=10.0,
    )
    # Another set-up's keys are not silently ignored.
    refused(
        {**ALTERNATE, "mm_per_px": 0.5},
        r"mm_per_px=0\.5 is a setting of setup='second_camera', not of setup='alternate'",
    )
    refused({**SECOND, "frame_interval_ms": 20.0}, r"frame_interval_ms=20\.0 is a setting of setup='alternate'")
    # Off, nothing is required; what is given is still checked.
    assert build(SimConfig, {"fluorescence": {"setup": "none"}}).fluorescence.enabled is False
    refused({"setup": "none", "noise_sigma": 20}, r"noise_sigma=20\.0 is out of range")


def test_alternate_frames_see_the_belt_moved_by_speed_times_the_interval():
    w = _world(ALTERNATE)
    t, truth, uro = _with_uro(w)
    fr = w.render_fluorescence(t)
    assert fr.setup == "alternate" and fr.image.shape == (480, 640) and fr.image.dtype == np.uint8
    assert fr.camera is w.camera_model and fr.timestamp == pytest.approx(t + 0.020)
    # 300 mm/s × 20 ms = 6 mm = 12 px at 0.5 mm/px; the encoder tells it to within a count.
    assert fr.shift_mm == pytest.approx(6.0, abs=1e-9)
    assert fr.colour_encoder == truth.encoder and fr.encoder - fr.colour_encoder == 60
    assert encoder_shift_mm(fr, w) == pytest.approx(fr.shift_mm, abs=1 / w.config.encoder.counts_per_mm)
    # A straight-down camera: the homography is the shift, 12 px back against the travel.
    assert fr.homography == pytest.approx(np.array([[1, 0, -12.0], [0, 1, 0], [0, 0, 1]]), abs=1e-6)
    # As taken, the glow is 12 px downstream of the colour frame's uro; registered, on it.
    downstream = np.zeros_like(uro)
    downstream[:, 12:] = uro[:, :-12]
    assert fr.image[downstream].mean() > LEVELS["uro"][0] and fr.registered[uro].mean() > LEVELS["uro"][0]
    assert fr.image[uro & ~downstream].mean() < fr.image[downstream].mean() - 40
    belt = _core(truth.parts == BACKGROUND, 8) & fr.coverage
    assert fr.registered[belt].mean() <= LEVELS["belt"][1]
    # The longer exposure: 3 × 1 ms at 300 mm/s = 0.9 mm = 1.8 px (the colour frame's 0.6 px).
    assert fr.look.motion_blur_px == pytest.approx(1.8) and fr.look.noise_sigma == 5.0


def test_a_second_camera_has_its_own_pixels_and_a_belt_homography():
    w = _world(SECOND)
    t, truth, uro = _with_uro(w)
    fr = w.render_fluorescence(t)
    assert fr.setup == "second_camera" and fr.image.shape == (600, 800) and fr.camera.image_size == (800, 600)
    assert fr.timestamp == t and fr.shift_mm == 0.0 and fr.encoder == fr.colour_encoder == truth.encoder
    assert fr.registered.shape == (480, 640) and fr.coverage.mean() > 0.97
    # The homography carries its pixels onto the colour pixels of the same belt point.
    pts = np.random.default_rng(0).uniform([-150, -110], [150, 110], (200, 2))
    src = fr.camera.project_belt(pts)
    dst = cv2.perspectiveTransform(src.reshape(-1, 1, 2), fr.homography).reshape(-1, 2)
    assert np.abs(dst - w.camera_model.project_belt(pts)).max() < 1e-6
    # A consumer warping with it gets the simulator's own registration (no lens distortion here).
    warped = cv2.warpPerspective(fr.image, fr.homography, (640, 480), flags=cv2.INTER_LINEAR)
    inner = _core(fr.coverage, 3)
    assert np.abs(warped[inner].astype(float) - fr.registered[inner]).mean() < 1.0
    assert fr.registered[uro].mean() > LEVELS["uro"][0]
    assert fr.registered[_core(truth.parts == BACKGROUND, 8) & inner].mean() <= LEVELS["belt"][1]
    # Its own exposure: 2.5 × 1 ms at 300 mm/s over its 0.45 mm/px.
    assert fr.look.motion_blur_px == pytest.approx(0.75 / fr.camera.mm_per_px_center())


def test_world_channel_is_reproducible_and_follows_the_scallops():
    a, b, c = _world(ALTERNATE, seed=3), _world(ALTERNATE, seed=3), _world(ALTERNATE, seed=4)
    t, truth, uro = _with_uro(a)
    fa, fb, fc = a.render_fluorescence(t), b.render_fluorescence(t), c.render_fluorescence(t)
    assert fa.image.tobytes() == fb.image.tobytes() and fa.image.tobytes() != fc.image.tobytes()
    # An arm pulls the uro: its glow is gone from the next frames.
    sid = next(f.id for f in truth.scallops if f.uro_px > 150)
    a.remove_uro(sid)
    after = a.render_fluorescence(t)
    mine = uro & (truth.instances == (sid - 1) % 65535 + 1)
    assert fa.registered[mine].mean() > LEVELS["uro"][0] > LEVELS["gill"][1] > after.registered[mine].mean()


def test_sim_camera_frames_carry_the_pair():
    w = _world(ALTERNATE)
    cam = SimCamera(w)
    cam.connect()
    for _ in range(3):
        frame = cam.read()
        fr = frame.extra["fluorescence"]
        # As taken: the line registers it itself (scallop.app.line.channel).
        assert "uv" not in frame.extra and fr.image.dtype == np.uint8 and fr.image.ndim == 2
        assert fr.colour_encoder == frame.encoder and fr.encoder > frame.encoder
        # The pair is delivered once its second exposure is over.
        assert w.clock.now() >= fr.timestamp == pytest.approx(frame.timestamp + 0.020)


def test_a_second_camera_upstream_sees_scallops_the_colour_camera_has_not_reached():
    w = _world({**SECOND, "center_x_mm": -300.0, "tilt_deg": 0.0, "yaw_deg": 0.0})
    colour_lo = w.renderer.x_lo
    fr = w.render_fluorescence(1.0)
    lo, hi = fr.camera.view_x_range()
    r_max = w.config.product.diameter_mm[1] / 2 + 5
    # Scallops are made for its view too, not only for the colour camera's.
    upstream = [s for s in w.scallops_at(1.0) if lo + r_max < s.center_B[0] < colour_lo - 2 * r_max]
    assert upstream
    glowing = sum(
        fr.image[int(round(p[1])), int(round(p[0]))] > LEVELS["gill"][1]
        for p in fr.camera.project_belt([s.uro_center_B for s in upstream if s.uro_center_B is not None])
    )
    assert glowing >= 1
    assert 0.0 < fr.coverage.mean() < 0.6  # only the overlap of the two views is registered
