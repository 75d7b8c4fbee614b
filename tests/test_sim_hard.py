"""The simulator's named hard conditions (scallop.sim.scene.hard): each does what the
appearance spec's edge asks for, and nothing else moves."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scallop.sim.dataset import DatasetSettings, random_sample, write_dataset
from scallop.sim.scene import BACKGROUND, HARD_CONDITIONS, bgr_to_lab

SMALL = dict(resolutions=[(640, 480)], mm_per_px=(0.5, 0.5), scallops=(4, 8))


def _pair(cond: str, index: int, seed: int = 11):
    plain = random_sample(index, seed, DatasetSettings(**SMALL))
    hard = random_sample(index, seed, DatasetSettings(**SMALL, hard=(cond,)))
    return plain, hard


def test_unknown_condition_is_refused_by_name():
    with pytest.raises(ValueError, match="'fog'"):
        DatasetSettings(hard=("glare", "fog"))


def test_debris_paints_dark_fragments_on_the_belt_only():
    plain, hard = _pair("debris", 2)
    # A separate generator: labels and every scallop stay exactly where they were.
    assert np.array_equal(plain.truth.parts, hard.truth.parts)
    assert np.array_equal(plain.truth.instances, hard.truth.instances)
    belt = hard.truth.parts == BACKGROUND
    changed = np.abs(plain.image.astype(int) - hard.image.astype(int)).max(axis=2) > 40
    assert changed[belt].sum() > 20 and not changed[~belt].any()
    # Some fragments are as dark as a uro (appearance spec: L 15–35): hard negatives.
    dark = bgr_to_lab(hard.image)[..., 0] < 40
    assert (dark & belt & changed).sum() > 5


def test_mantle_flap_hides_most_of_the_uro():
    vis = {}
    for cond in ("lighting", "mantle_flap"):  # lighting leaves the geometry alone: the baseline
        px = 0
        for i in range(3):
            px += sum(f.uro_px for f in random_sample(i, 5, DatasetSettings(**SMALL, hard=(cond,))).truth.scallops)
        vis[cond] = px
    assert 0 < vis["mantle_flap"] < 0.75 * vis["lighting"]


def test_glare_and_lighting_sit_at_the_envelope_edges():
    for i in range(4):
        look = random_sample(i, 3, DatasetSettings(**SMALL, hard=("glare", "lighting"))).truth.look
        assert look.water_film >= 0.8 and 4.0 <= look.droplets_per_dm2 <= 8.0
        assert look.brightness <= 0.8 or look.brightness >= 1.2
        assert look.color_temp_k <= 4300 or look.color_temp_k >= 6200
        assert look.vignetting >= 0.3


def test_tight_touching_puts_scallops_against_each_other():
    def touching(hard):
        n = 0
        for i in range(4):
            sc = random_sample(i, 8, DatasetSettings(**SMALL, hard=hard)).truth.scallops
            n += sum(f.visible_fraction < 0.999 and not f.cut_by_border for f in sc)
        return n

    assert touching(("tight_touching",)) > touching(())


def test_conditions_are_written_into_the_labels(tmp_path):
    write_dataset(tmp_path / "s", 1, seed=1, settings=DatasetSettings(**SMALL, hard=HARD_CONDITIONS))
    labels = json.loads(next((tmp_path / "s" / "labels").glob("*.json")).read_text())
    assert labels["conditions"] == [f"hard:{c}" for c in HARD_CONDITIONS]
