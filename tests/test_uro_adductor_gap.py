"""The uro must touch the adductor (appearance spec): the gap the pipeline measures."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from scallop.vision.grasp import uro_adductor_gap
from scallop.vision.pipeline import PipelineConfig


def _masks(gap_px: int):
    add = np.zeros((80, 80), bool)
    add[20:60, 10:30] = True  # adductor: columns 10..29
    uro = np.zeros((80, 80), np.uint8)
    uro[35:45, 30 + gap_px : 40 + gap_px] = 1
    return uro, cv2.boundingRect(uro), add


@pytest.mark.parametrize("gap_px", [0, 3, 8])
def test_gap_is_the_distance_from_the_uro_to_the_adductor(gap_px):
    uro, box, add = _masks(gap_px)
    got = uro_adductor_gap(uro, box, add, reach_px=20)
    # Pixel centres: a uro starting right after the adductor's last column is 1 px away.
    assert got == pytest.approx(gap_px + 1, abs=0.05)


def test_a_uro_overlapping_the_adductor_mask_is_at_zero():
    """The pipeline passes the wider "might be adductor" mask, which often overlaps the uro:
    the distance is then 0, as the transform gives it."""
    uro, box, add = _masks(0)
    add[38, 30] = True  # one adductor pixel under the uro
    assert uro_adductor_gap(uro, box, add, reach_px=20) == 0.0
    d = cv2.distanceTransform(cv2.compare(add.view(np.uint8), 0, cv2.CMP_EQ), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    assert float(d[uro > 0].min()) == 0.0


def test_no_adductor_within_reach_is_infinite():
    uro, box, add = _masks(30)
    assert math.isinf(uro_adductor_gap(uro, box, add, reach_px=5))
    assert math.isinf(uro_adductor_gap(uro, box, np.zeros_like(add), reach_px=50))


@pytest.mark.parametrize("bad", [-1.0, float("nan"), 1e9])
def test_the_threshold_is_range_checked(bad):
    with pytest.raises(ValueError, match="max_uro_adductor_gap_mm"):
        PipelineConfig(max_uro_adductor_gap_mm=bad)
