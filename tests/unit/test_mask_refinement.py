"""Edge-aware mask refinement: a blocky coarse mask snaps to the object's true edge at full resolution."""

import cv2
import numpy as np
import pytest

from selfsup_perception.core.learning.serving.mask_refinement import (
    MaskRefinementConfig,
    gray_image,
    guided_filter,
    refine_mask,
)


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_guided_filter_of_a_constant_is_the_constant_and_it_keeps_edges():
    guide = np.zeros((40, 40), np.float32)
    guide[:, 20:] = 1.0
    np.testing.assert_allclose(guided_filter(guide, np.full_like(guide, 0.3), 3, 1e-3), 0.3, atol=1e-5)
    out = guided_filter(guide, guide.copy(), 4, 1e-4)  # filtering the guide itself keeps its step
    assert out[:, :19].max() < 0.05 and out[:, 21:].min() > 0.95


def test_refinement_recovers_a_disc_from_its_16_pixel_blocky_mask():
    h, w = 480, 640
    yy, xx = np.mgrid[0:h, 0:w]
    disc = (yy - 230) ** 2 + (xx - 310) ** 2 < 70 ** 2
    rgb = np.full((h, w, 3), 60, np.uint8)
    rgb[disc] = (200, 180, 40)
    rng = np.random.default_rng(0)
    rgb = np.clip(rgb + rng.normal(0, 4, rgb.shape), 0, 255).astype(np.uint8)  # a little sensor noise
    coarse_grid = cv2.resize(disc.astype(np.uint8), (40, 30), interpolation=cv2.INTER_AREA) > 0  # 16-px cells
    small = cv2.resize(coarse_grid.astype(np.uint8), (160, 120), interpolation=cv2.INTER_NEAREST).astype(bool)
    nearest = cv2.resize(small.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    refined = refine_mask(small, gray_image(rgb), cell_px=16.0)
    assert _iou(refined, disc) > _iou(nearest, disc) + 0.05
    assert _iou(refined, disc) > 0.9


def test_empty_mask_and_bad_config():
    assert not refine_mask(np.zeros((12, 16), bool), np.zeros((48, 64), np.float32), 4.0).any()
    with pytest.raises(ValueError):
        MaskRefinementConfig(eps=0.0)
