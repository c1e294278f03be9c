"""Sparse, grid and grid-matched descriptors equal the dense descriptor image where they are taken."""

import cv2
import numpy as np
import pytest
import torch

from selfsup_perception.core.descriptors.matching import compute_descriptor_image, find_correspondences, network_input
from selfsup_perception.core.descriptors.sparse import (
    compute_descriptor_map,
    descriptor_grid,
    match_on_grid,
    pick_keypoints,
    sample_descriptor_map,
)
from selfsup_perception.core.learning.models.backbone import BackboneConfig
from selfsup_perception.core.learning.models.descriptor_net import DescriptorNet, DescriptorNetConfig

H, W, SHIFT = 64, 80, 8  # SHIFT: a multiple of the output stride


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return DescriptorNet(DescriptorNetConfig(descriptor_dim=16, head_channels=16,
                                             backbone=BackboneConfig(widths=(8, 16, 16, 16), output_stride=4)))


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(0)
    big = cv2.GaussianBlur(rng.random((H, W + SHIFT, 3)).astype(np.float32), (0, 0), 1.5)
    big = ((big - big.min()) / np.ptp(big) * 255).astype(np.uint8)
    return np.ascontiguousarray(big[:, SHIFT:]), np.ascontiguousarray(big[:, :W])


def test_sampled_and_grid_descriptors_equal_the_dense_image(net, scene):
    ref, _ = scene
    dense = compute_descriptor_image(net, ref)
    dmap = compute_descriptor_map(net, ref)
    assert dmap.shape == (16, H // 4, W // 4)
    ys, xs = np.mgrid[0:H, 0:W]
    px = np.stack([xs.ravel(), ys.ravel()], 1)
    sampled = sample_descriptor_map(dmap, px, (H, W)).reshape(H, W, -1)
    assert np.allclose(sampled, dense, atol=1e-5)  # every pixel, borders included
    for stride in (1, 3, 8):
        assert np.allclose(descriptor_grid(dmap, (H, W), stride), dense[::stride, ::stride], atol=1e-5)
    # sub-pixel positions interpolate (unit norm) and out-of-image pixels are refused
    half = sample_descriptor_map(dmap, np.array([[10.5, 20.25]]), (H, W))
    assert np.isclose(np.linalg.norm(half), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="inside"):
        sample_descriptor_map(dmap, np.array([[W, 0.0]]), (H, W))
    with pytest.raises(ValueError, match="NaN"):
        sample_descriptor_map(dmap, np.array([[np.nan, 0.0]]), (H, W))


def test_match_on_grid_finds_the_shift_and_agrees_with_the_exhaustive_search(net, scene):
    ref, tgt = scene
    ys, xs = np.mgrid[16:48:4, 16:60:4]
    px = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    matched, conf = match_on_grid(compute_descriptor_map(net, ref), (H, W), compute_descriptor_map(net, tgt), (H, W), px)
    err = np.linalg.norm(matched - (px + [SHIFT, 0]), axis=1)
    assert np.median(err) == 0.0 and np.mean(err <= 2.0) >= 0.95, err
    assert ((conf > 0) & (conf <= 1)).all()
    exhaustive, conf_dense = find_correspondences(compute_descriptor_image(net, ref), compute_descriptor_image(net, tgt), px)
    assert np.mean(np.all(matched == exhaustive, axis=1)) >= 0.95
    assert np.corrcoef(conf, conf_dense)[0, 1] > 0.5  # the same spread, measured on cells instead of pixels


def test_keypoints_lie_on_texture(scene):
    ref, _ = scene
    kp = pick_keypoints(ref, 20)
    assert 0 < len(kp) <= 20 and (kp[:, 0] >= 0).all() and (kp[:, 0] <= W - 1).all()
    assert len(pick_keypoints(np.full((H, W, 3), 128, np.uint8), 20)) == 0  # a flat image has none


def test_served_at_the_training_size_the_map_covers_the_full_image(net, scene):
    """The network runs on the image resized to its training size; full-resolution pixels sample that map."""
    ref, tgt = scene
    scale = 4
    big_ref, big_tgt = (cv2.resize(im, (W * scale, H * scale), interpolation=cv2.INTER_LINEAR) for im in (ref, tgt))
    dmap = compute_descriptor_map(net, big_ref, input_size=(W, H))
    assert dmap.shape == (16, H // 4, W // 4)  # the map of the training-size image
    assert torch.allclose(dmap, compute_descriptor_map(net, network_input(big_ref, (W, H))), atol=1e-6)
    dense = compute_descriptor_image(net, big_ref, input_size=(W, H))  # (4H, 4W, D): upsampled to the image
    assert dense.shape == (H * scale, W * scale, 16)
    ys, xs = np.mgrid[0:H * scale:7, 0:W * scale:5]
    px = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    assert np.allclose(sample_descriptor_map(dmap, px, big_ref.shape[:2]), dense[ys.ravel(), xs.ravel()], atol=1e-5)
    # matching at full resolution: grid steps of 8 px are refined in two levels down to single pixels
    ys, xs = np.mgrid[16:48:4, 16:60:4]
    px = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64) * scale
    tmap = compute_descriptor_map(net, big_tgt, input_size=(W, H))
    matched, conf = match_on_grid(dmap, big_ref.shape[:2], tmap, big_tgt.shape[:2], px)
    err = np.linalg.norm(matched - (px + [SHIFT * scale, 0]), axis=1)
    assert np.median(err) <= 1.0 and np.mean(err <= scale) >= 0.9, err
    assert ((conf > 0) & (conf <= 1)).all()


def test_network_input_resizes_only_when_asked(scene):
    ref, _ = scene
    assert network_input(ref, None) is ref and network_input(ref, (W, H)) is ref
    assert network_input(ref, (W // 2, H // 2)).shape == (H // 2, W // 2, 3)
    assert network_input(ref, (W * 2, H * 2)).shape == (H * 2, W * 2, 3)
    with pytest.raises(ValueError, match="positive"):
        network_input(ref, (0, H))
