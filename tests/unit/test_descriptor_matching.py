import cv2
import numpy as np
import pytest
import torch

from selfsup_perception.core.descriptors.augmentation import (
    AugmentationConfig,
    apply_homography,
    augment_batch,
    random_homography,
    warp_images,
)
from selfsup_perception.core.descriptors.classical_baseline import match_classical
from selfsup_perception.core.descriptors.matching import compute_descriptor_image, find_correspondences
from selfsup_perception.core.descriptors.metrics import (
    image_diagonal,
    matching_metrics,
    normalized_mean_error,
    pck,
    pck_auc,
    pixel_errors,
)
from selfsup_perception.core.learning.tasks.descriptors import (
    DescriptorTask,
    DescriptorTaskConfig,
    descriptor_model_from_config,
)
from selfsup_perception.core.learning.models.backbone import BackboneConfig
from selfsup_perception.core.learning.models.descriptor_net import DescriptorNet, DescriptorNetConfig

TINY = DescriptorNetConfig(descriptor_dim=8, head_channels=16, backbone=BackboneConfig(widths=(8, 8, 16, 16)))


def unique_field(h, w, d=24, seed=0):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(h, w, d))
    return (f / np.linalg.norm(f, axis=-1, keepdims=True)).astype(np.float32)


def test_pck_check_vector_from_references():
    err = pixel_errors(np.array([[10.0, 10.0]]), np.array([[13.0, 14.0]]))  # true shift (3, 4), identity prediction
    assert err[0] == pytest.approx(5.0)
    assert pck(err, 5) == 1.0 and pck(err, 4.99) == 0.0


def test_auc_and_normalised_error():
    err = np.array([0.0, 2.5, 30.0, np.nan])
    # PCK@k for k = 1..50: 0.25 at k = 1, 2; 0.5 for k = 3..29; 0.75 for k = 30..50
    expected = (2 * 0.25 + 27 * 0.5 + 21 * 0.75) / 50
    assert pck_auc(err) == pytest.approx(expected)
    diag = image_diagonal(640, 480)
    assert diag == pytest.approx(800.0)
    assert normalized_mean_error(err, diag) == pytest.approx((0 + 2.5 + 30 + 800) / 4 / 800)
    m = matching_metrics(err, 640, 480)
    assert m["pck@3"] == 0.5 and m["pck@50"] == 0.75 and m["n"] == 4


def test_find_correspondences_recovers_a_shift_with_high_confidence():
    h, w = 20, 24
    field = unique_field(h, w + 3)
    ref, tgt = field[:, 3:], field[:, :w]  # target = reference shifted right by 3 px
    px = np.array([[0.0, 0.0], [5.0, 7.0], [20.0, 19.0]])
    out, conf = find_correspondences(ref, tgt, px)
    assert np.array_equal(out, px + np.array([3.0, 0.0]))
    assert (conf > 0.99).all()
    # a query whose descriptor is absent from the target: lower confidence than true matches
    absent, conf_absent = find_correspondences(unique_field(h, w, seed=7), tgt, px[:1], temperature=1.0)
    _, conf_true = find_correspondences(ref, tgt, px[:1], temperature=1.0)
    assert conf_absent[0] < conf_true[0]


def test_find_correspondences_validation():
    f = unique_field(5, 5)
    with pytest.raises(ValueError, match="inside"):
        find_correspondences(f, f, np.array([[5.0, 0.0]]))
    with pytest.raises(ValueError, match="equal D"):
        find_correspondences(f, f[..., :3], np.array([[1.0, 1.0]]))
    with pytest.raises(ValueError, match="NaN"):
        find_correspondences(f, f, np.array([[np.nan, 1.0]]))


def test_compute_descriptor_image_shape_norm_and_mode_restored():
    model = DescriptorNet(TINY)
    model.train()
    rgb = np.random.default_rng(0).integers(0, 255, size=(40, 56, 3), dtype=np.uint8)
    d = compute_descriptor_image(model, rgb)
    assert d.shape == (40, 56, 8) and d.dtype == np.float32
    assert np.allclose(np.linalg.norm(d, axis=-1), 1.0, atol=1e-5)
    assert model.training
    with pytest.raises(ValueError, match="uint8"):
        compute_descriptor_image(model, rgb.astype(np.float32))


def test_homography_warp_moves_pixels_where_the_mapping_says():
    rng = np.random.default_rng(0)
    hom = random_homography(64, 48, rng, AugmentationConfig())
    img = torch.zeros(1, 1, 48, 64, dtype=torch.float64)
    img[0, 0, 20, 30] = 1.0
    img[0, 0, 21, 30] = 1.0
    warped = warp_images(img, torch.from_numpy(hom).unsqueeze(0))
    target = apply_homography(hom, np.array([[30.0, 20.5]]))[0]
    ys, xs = np.nonzero(warped[0, 0].numpy() > 0)
    wts = warped[0, 0].numpy()[ys, xs]
    centroid = np.array([(xs * wts).sum(), (ys * wts).sum()]) / wts.sum()
    assert np.linalg.norm(centroid - target) < 0.6
    back = apply_homography(np.linalg.inv(hom), apply_homography(hom, np.array([[3.0, 4.0]])))
    assert np.allclose(back, [[3.0, 4.0]])
    x, homs = augment_batch(torch.rand(2, 3, 48, 64), rng, AugmentationConfig())
    assert x.shape == (2, 3, 48, 64) and homs.shape == (2, 3, 3) and float(x.min()) >= 0 and float(x.max()) <= 1


def test_sift_and_orb_find_a_translation_on_a_textured_image():
    rng = np.random.default_rng(0)
    noise = cv2.GaussianBlur(rng.random((120, 160)), (0, 0), 2.0)
    big = ((noise - noise.min()) / np.ptp(noise) * 255).astype(np.uint8)  # smooth random texture
    big = np.stack([big] * 3, -1)
    ref, tgt = big[:, 6:140], big[:, 0:134]  # target = ref shifted right by 6 px
    px = np.array([[40.0, 40.0], [70.0, 60.0], [90.0, 80.0]])
    for method in ("sift", "orb"):
        out, conf = match_classical(ref, tgt, px, method=method, grid_step=1)
        err = np.linalg.norm(out - (px + [6, 0]), axis=1)
        assert np.nanmax(err) <= 1.5, method
        assert (conf >= 0).all() and (conf <= 1).all()
    with pytest.raises(ValueError, match="method"):
        match_classical(ref, tgt, px, method="surf")


def test_task_model_config_round_trip_and_loss_runs():
    task = DescriptorTask(DescriptorTaskConfig(mode="cycle_identical", model=TINY, num_keypoints=16,
                                               alignment_weight=1.0))
    model = task.build_model()
    rebuilt = descriptor_model_from_config(task.model_config())
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randint(0, 255, (2, 3, 32, 40), dtype=torch.uint8)
    batch = {"rgb_a": x, "rgb_b": x.flip(-1), "rgb_a_alt": 255 - x}
    loss, stats = task.compute_loss(model, batch)
    loss.backward()
    assert torch.isfinite(loss) and {"identical", "cycle", "alignment", "loss"} <= set(stats)
    assert stats["loss"] == pytest.approx(stats["cycle"] + 0.1 * stats["identical"] + stats["alignment"], rel=1e-5)
    with pytest.raises(ValueError, match="rgb_b"):
        task.compute_loss(model, {"rgb_a": x})
    with pytest.raises(ValueError, match="mode"):
        DescriptorTaskConfig(mode="triplet")


def test_trained_checkpoint_round_trip_and_cycle_init_from_identical(tmp_path):
    """Trainer -> save_checkpoint -> load_model_for_inference serves the trained weights; a cycle task with
    init_checkpoint starts from them (the paper initialises CCL from the identical-view checkpoint)."""
    from selfsup_perception.core.learning.serving import checkpoints as ckpt
    from selfsup_perception.core.learning.training.trainer import Trainer, TrainerConfig

    x = torch.randint(0, 255, (2, 3, 32, 40), dtype=torch.uint8)
    ident = DescriptorTaskConfig(mode="identical", model=TINY, num_keypoints=16)
    trainer = Trainer(DescriptorTask(ident), TrainerConfig(warmup_steps=0, log_every=0))
    records = trainer.train_steps(iter([{"rgb_a": x}] * 2), 2)
    assert [r["step"] for r in records] == [1, 2] and all(np.isfinite(r["identical"]) for r in records)
    version_dir = trainer.save_checkpoint(tmp_path)
    served, meta = ckpt.load_model_for_inference(version_dir)
    assert meta["model_config"]["mode"] == "identical" and meta["step"] == 2
    rgb = x[0].permute(1, 2, 0).numpy()
    assert np.array_equal(compute_descriptor_image(served, rgb), compute_descriptor_image(trainer.model, rgb))

    for where in (version_dir, tmp_path, tmp_path / "descriptors"):  # version dir, checkpoint root, task dir
        cyc = DescriptorTask(DescriptorTaskConfig(mode="cycle", model=TINY, init_checkpoint=str(where)))
        state = cyc.build_model().state_dict()
        assert all(torch.equal(state[k], v) for k, v in trainer.model.state_dict().items())
    other = DescriptorNetConfig(descriptor_dim=4, head_channels=16, backbone=TINY.backbone)
    with pytest.raises(ValueError, match="not the configured"):
        DescriptorTask(DescriptorTaskConfig(model=other, init_checkpoint=str(version_dir))).build_model()
    with pytest.raises(ValueError, match="no descriptors checkpoint"):
        DescriptorTask(DescriptorTaskConfig(model=TINY, init_checkpoint=str(tmp_path / "nothing"))).build_model()


def test_coarse_to_fine_search_finds_the_exhaustive_match_on_a_stride_8_field():
    # Like a network's output: a stride-8 descriptor grid upsampled bilinearly to full resolution.
    rng = np.random.default_rng(3)
    grid = torch.from_numpy(rng.normal(size=(1, 16, 12, 16)).astype(np.float32))
    field = torch.nn.functional.interpolate(grid, size=(96, 128), mode="bilinear", align_corners=False)
    field = field[0].permute(1, 2, 0).numpy().copy()
    field /= np.linalg.norm(field, axis=-1, keepdims=True)
    target = np.roll(field, (5, 11), axis=(0, 1))  # known shift
    pixels = np.stack([rng.uniform(20, 100, 60), rng.uniform(20, 70, 60)], axis=1).round()
    exact, conf_exact = find_correspondences(field, target, pixels)
    coarse, conf_coarse = find_correspondences(field, target, pixels, coarse_stride=8)
    np.testing.assert_array_equal(exact, pixels + [11, 5])
    assert (np.abs(coarse - exact).max(axis=1) == 0).mean() >= 0.95
    assert ((conf_coarse > 0) & (conf_coarse <= 1)).all()
    with pytest.raises(ValueError, match="coarse_stride"):
        find_correspondences(field, target, pixels, coarse_stride=0)
