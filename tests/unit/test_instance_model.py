"""Instance segmentation model, task loss, collate and inference."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from selfsup_perception.core.learning.tasks.instance import (
    InstanceSegmentationTask,
    InstanceTaskConfig,
    collate_samples,
    jitter_colors,
    synthetic_items,
)
from selfsup_perception.core.learning.models.instance_segmentation import (
    CoTeachingPair,
    InferenceConfig,
    InstanceSegConfig,
    InstanceSegNet,
    mask_nms,
    predict_instances,
)
from selfsup_perception.core.learning.tasks.base import TrainingTask

TINY = InstanceSegConfig(widths=(8, 8, 16, 16), decoder_channels=8, embedding_dim=8)


def test_shapes_and_depth_channel():
    torch.manual_seed(0)
    net = InstanceSegNet(TINY)
    out = net(torch.randint(0, 255, (2, 3, 36, 52), dtype=torch.uint8))
    assert out["objectness"].shape == (2, 1, 9, 13)
    assert out["embedding"].shape == (2, 8, 9, 13)
    torch.testing.assert_close(out["embedding"].norm(dim=1), torch.ones(2, 9, 13))
    net_d = InstanceSegNet(InstanceSegConfig(widths=(8, 8, 16, 16), decoder_channels=8, use_depth=True))
    depth = torch.full((1, 32, 32), float("nan"))
    assert net_d(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), depth)["objectness"].shape == (1, 1, 8, 8)
    with pytest.raises(ValueError, match="pass depth"):
        net_d(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_mask_logits_follow_the_formula():
    torch.manual_seed(0)
    net = InstanceSegNet(TINY)
    emb = torch.nn.functional.normalize(torch.randn(1, 8, 4, 4), dim=1)
    with torch.no_grad():
        net.locality.fill_(2.0)
    # query at the centre of stride-4 cell (row 0, col 1) of a 16x16 image: e(q) = emb[:, :, 0, 1]
    q = torch.tensor([[[5.5, 1.5]]])
    with torch.no_grad():
        logits = net.mask_logits(emb, q, (16, 16))
        eq = emb[0, :, 0, 1]
        centres = torch.arange(4) * 4 + 1.5
        dist2 = (centres[None, :] - 5.5) ** 2 + (centres[:, None] - 1.5) ** 2
        g = torch.nn.functional.softplus(torch.tensor(2.0))
        expected = net.mask_scale.exp() * torch.einsum("d,dhw->hw", eq, emb[0]) + net.mask_bias - g * dist2 / 512.0
        torch.testing.assert_close(logits[0, 0], expected, atol=1e-5, rtol=1e-5)
        assert float(logits[0, 0, 0, 1]) == pytest.approx(float(net.mask_scale.exp() + net.mask_bias), abs=1e-5)
    with pytest.raises(ValueError, match="queries"):
        net.mask_logits(emb, torch.zeros(2, 1, 2), (16, 16))


def test_task_satisfies_protocol_and_loss_variants():
    items = synthetic_items(4, height=32, width=40, negative_fraction=0.5, seed=0)
    batch = collate_samples(items, hflip_prob=0.0, rng=np.random.default_rng(0))
    for kw in (
        {"mask_loss": "bce", "objectness_loss": "bce"},
        {"mask_loss": "robust_set"},
        {"mask_loss": "soft_iou"},
        {"co_teaching": True},
    ):
        task = InstanceSegmentationTask(InstanceTaskConfig(model=TINY, **kw))
        assert isinstance(task, TrainingTask)
        torch.manual_seed(0)
        model = task.build_model()
        assert isinstance(model, CoTeachingPair) == kw.get("co_teaching", False)
        loss, metrics = task.compute_loss(model, {**batch, "step": 3})
        assert loss.dim() == 0 and torch.isfinite(loss)
        loss.backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad and p.dim() > 1)
        assert "loss_objectness" in metrics


def test_task_rejects_bad_batches():
    task = InstanceSegmentationTask(InstanceTaskConfig(model=TINY))
    model = task.build_model()
    batch = collate_samples(synthetic_items(2, height=32, width=40), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="lacks 'mask'"):
        task.compute_loss(model, {k: v for k, v in batch.items() if k != "mask"})
    with pytest.raises(ValueError, match="does not match"):
        task.compute_loss(model, {**batch, "mask": batch["mask"][:, :-1]})
    with pytest.raises(ValueError, match="mask_loss"):
        InstanceTaskConfig(mask_loss="huber")


def test_collate_flips_and_crops_keep_labels_aligned():
    rgb = np.zeros((20, 30, 3), np.uint8)
    mask = np.zeros((20, 30), bool)
    mask[5:9, 20:25] = True
    rgb[mask] = 200
    item = (rgb, mask, (22.0, 6.0), False)
    b = collate_samples([item], hflip_prob=1.0, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(b["mask"][0].numpy(), mask[:, ::-1])
    assert b["action_pixel"][0].tolist() == [7.0, 6.0]
    for seed in range(20):
        b = collate_samples([item], crop_size=(10, 12), hflip_prob=0.0, rng=np.random.default_rng(seed))
        u, v = b["action_pixel"][0].tolist()
        assert 0 <= u < 12 and 0 <= v < 10
        assert b["mask"][0, int(v), int(u)]  # the action pixel still lies on the (cropped) object
        assert (b["rgb"][0, 0][b["mask"][0]] == 200).all() and b["valid"].all()
    big = collate_samples([item], crop_size=(24, 32), hflip_prob=0.0, rng=np.random.default_rng(1))
    assert int(big["valid"].sum()) == 20 * 30 and int(big["mask"].sum()) == int(mask.sum())
    with pytest.raises(ValueError, match="crop_size"):
        collate_samples([item, (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), bool), (1, 1), True)])


def test_mask_nms_suppresses_overlaps():
    m = np.zeros((3, 10, 10), bool)
    m[0, 0:5, 0:5] = True
    m[1, 0:5, 0:4] = True  # IoU 0.8 with m[0]
    m[2, 6:9, 6:9] = True
    assert mask_nms(m, np.array([0.9, 0.95, 0.5]), 0.4) == [1, 2]


def test_predict_instances_on_a_learned_blob_map():
    """A hand-set network: objectness/embedding depend only on colour, two coloured squares."""
    torch.manual_seed(0)
    net = InstanceSegNet(TINY).eval()
    rgb = np.full((40, 48, 3), 100, np.uint8)
    rgb[4:16, 4:16] = (250, 0, 0)
    rgb[24:36, 30:42] = (0, 0, 250)

    def fake_forward(x, depth=None):
        img = x.float()[:, :, 1::4, 1::4] / 255.0  # (1, 3, 10, 12) colour at stride 4
        red, blue = img[:, 0] > 0.8, img[:, 2] > 0.8
        obj = torch.where(red | blue, 4.0, -4.0)[:, None]
        emb = torch.stack([red.float(), blue.float(), (~red & ~blue).float()], 1)
        emb = torch.cat([emb, torch.zeros(1, 5, *emb.shape[-2:])], 1)
        return {"objectness": obj, "embedding": torch.nn.functional.normalize(emb + 1e-6, dim=1)}

    net.forward = fake_forward
    with torch.no_grad():
        net.locality.fill_(-20.0)
    inst = predict_instances(net, rgb, config=InferenceConfig(min_area=10))
    assert len(inst) == 2
    boxes = sorted(i.box for i in inst)
    assert boxes[0][0] <= 6 and boxes[0][2] >= 14 and boxes[1][0] >= 26
    for i in inst:
        assert i.mask.shape == (40, 48) and 0.5 < i.score <= 1.0
    with pytest.raises(ValueError, match="uint8"):
        predict_instances(net, rgb.astype(np.float32))
    assert predict_instances(net, rgb, score_threshold=1.01) == []


def _one_positive_batch():
    """A 32x32 image whose labelled object covers 2x2 cells of the 8x8 stride-4 grid (1/16 of the pixels)."""
    rgb = np.full((32, 32, 3), 100, np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[8:16, 8:16] = True
    return collate_samples([(rgb, mask, (10.0, 10.0), False)], hflip_prob=0.0, rng=np.random.default_rng(0))


def _objectness_loss_for_constant_logit(task_config, logit: float) -> float:
    """loss_objectness of a network whose objectness is ``logit`` everywhere (reference: plain BCE sums)."""
    torch.manual_seed(0)
    task = InstanceSegmentationTask(task_config)
    net = task.build_model()
    real_forward = net.forward

    def forward(x, depth=None):
        out = real_forward(x, depth)
        return {**out, "objectness": torch.full_like(out["objectness"], logit)}

    net.forward = forward
    _, metrics = task.compute_loss(net, {**_one_positive_batch(), "step": 0})
    return metrics["loss_objectness"]


def test_balanced_objectness_weights_the_object_like_the_rest_of_the_image():
    logit = 0.3
    p = 1 / (1 + np.exp(-logit))
    pos_bce, neg_bce = -np.log(p), -np.log(1 - p)
    plain = InstanceTaskConfig(model=TINY, objectness_loss="bce", balance_objectness=False, unlabelled_weight=1.0)
    # 4 of 64 cells are object: plain mean BCE
    assert _objectness_loss_for_constant_logit(plain, logit) == pytest.approx((4 * pos_bce + 60 * neg_bce) / 64, rel=1e-5)
    balanced = replace(plain, balance_objectness=True)
    assert _objectness_loss_for_constant_logit(balanced, logit) == pytest.approx((pos_bce + neg_bce) / 2, rel=1e-5)
    # unlabelled pixels at weight 0.25: 60 * 0.25 = 15 units of background against 15 of object
    weak = replace(balanced, unlabelled_weight=0.25)
    assert _objectness_loss_for_constant_logit(weak, logit) == pytest.approx((pos_bce + neg_bce) / 2, rel=1e-5)
    weak_unbalanced = replace(plain, unlabelled_weight=0.25)
    assert _objectness_loss_for_constant_logit(weak_unbalanced, logit) == pytest.approx(
        (4 * pos_bce + 15 * neg_bce) / 19, rel=1e-5)


def test_output_stride_2_doubles_the_map_resolution():
    torch.manual_seed(0)
    cfg = InstanceSegConfig(widths=(8, 8, 16, 16), decoder_channels=8, embedding_dim=8, output_stride=2)
    net = InstanceSegNet(cfg)
    out = net(torch.randint(0, 255, (1, 3, 36, 52), dtype=torch.uint8))
    assert out["objectness"].shape == (1, 1, 18, 26) and out["embedding"].shape == (1, 8, 18, 26)
    assert net.mask_logits(out["embedding"], torch.tensor([[[10.0, 10.0]]]), (36, 52)).shape == (1, 1, 18, 26)
    assert InstanceSegConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="output_stride"):
        InstanceSegNet(InstanceSegConfig(widths=(8, 8, 16, 16), output_stride=8))
    task = InstanceSegmentationTask(InstanceTaskConfig(model=cfg))
    loss, _ = task.compute_loss(task.build_model(), {**collate_samples(synthetic_items(2, height=32, width=40),
                                                                        rng=np.random.default_rng(0)), "step": 0})
    assert torch.isfinite(loss)


def test_every_peak_proposes_a_mask_without_greedy_cover():
    """Two objectness peaks on one object: greedy cover queries it once; without it, NMS removes the duplicate."""
    torch.manual_seed(0)
    net = InstanceSegNet(TINY).eval()
    rgb = np.full((40, 48, 3), 100, np.uint8)

    def fake_forward(x, depth=None):
        obj = torch.full((1, 1, 10, 12), -4.0)
        obj[0, 0, 2:5, 2:9] = 2.0  # one wide object, cells (2..4, 2..8)
        obj[0, 0, 3, 3], obj[0, 0, 3, 7] = 4.0, 3.5  # two separated local maxima on it
        same = torch.zeros(1, 8, 10, 12)
        same[0, 0] = (obj[0, 0] > 0).float()
        same[0, 1] = (obj[0, 0] <= 0).float()
        return {"objectness": obj, "embedding": same}

    net.forward = fake_forward
    with torch.no_grad():
        net.locality.fill_(-20.0)
    for cover in (True, False):
        inst = predict_instances(net, rgb, config=InferenceConfig(min_area=10, greedy_cover=cover, peak_window=3))
        assert len(inst) == 1
        assert inst[0].box[0] <= 10 and inst[0].box[2] >= 32  # the whole object, from either peak


def test_small_loss_selection_drops_the_worst_samples_of_the_batch():
    """With small_loss_forget_rate the task's loss is the mean of its k smallest per-sample losses."""
    items = synthetic_items(8, height=32, width=40, negative_fraction=0.25, seed=1)
    batch = collate_samples(items, hflip_prob=0.0, rng=np.random.default_rng(0))
    plain_task = InstanceSegmentationTask(InstanceTaskConfig(model=TINY))
    torch.manual_seed(0)
    net = plain_task.build_model()
    torch.manual_seed(1)  # same random query pixels in both calls
    per_sample, _ = plain_task._per_sample_loss(net, batch["rgb"], None, batch, plain_task._sample_queries(batch))
    task = InstanceSegmentationTask(InstanceTaskConfig(model=TINY, small_loss_forget_rate=0.25, forget_ramp_steps=100))
    torch.manual_seed(1)
    loss, metrics = task.compute_loss(net, {**batch, "step": 200})  # ramp done: rate 0.25, int(0.75 * 8) = 6 kept
    assert metrics["kept"] == 6 and metrics["forget_rate"] == pytest.approx(0.25)
    expected = torch.sort(per_sample.detach()).values[:6].mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    torch.manual_seed(1)
    loss0, metrics0 = task.compute_loss(net, {**batch, "step": 0})  # ramp start: nothing forgotten
    assert metrics0["kept"] == 8 and float(loss0) == pytest.approx(float(per_sample.mean()), rel=1e-5)
    with pytest.raises(ValueError, match="small_loss_forget_rate"):
        InstanceTaskConfig(small_loss_forget_rate=1.0)


def test_color_jitter_changes_colours_only():
    rng = np.random.default_rng(0)
    rgb = rng.integers(40, 200, (24, 32, 3), dtype=np.uint8)
    assert jitter_colors(rgb, 0.0, rng) is rgb
    out = jitter_colors(rgb, 0.3, np.random.default_rng(1))
    assert out.shape == rgb.shape and out.dtype == np.uint8 and not np.array_equal(out, rgb)
    # the same draws as the formula: exposure x white balance gain, then contrast about the mean
    r = np.random.default_rng(1)
    gain = r.uniform(0.7, 1.3) * r.uniform(0.85, 1.15, 3)
    x = rgb.astype(np.float32) * gain.astype(np.float32)
    x = (x - x.mean()) * np.float32(r.uniform(0.7, 1.3)) + x.mean()
    np.testing.assert_array_equal(out, np.clip(x + 0.5, 0, 255).astype(np.uint8))
    # a jittered image keeps the order of its pixels' brightness within a channel (a monotone map)
    a, b = rgb[..., 0].astype(int).ravel(), out[..., 0].astype(int).ravel()
    assert np.all(np.diff(b[np.argsort(a, kind="stable")]) >= 0)
    with pytest.raises(ValueError, match="jitter"):
        jitter_colors(rgb, 1.0, rng)
    items = synthetic_items(3, height=32, width=40, seed=2)
    plain = collate_samples(items, hflip_prob=0.0, rng=np.random.default_rng(5))
    jittered = collate_samples(items, hflip_prob=0.0, rng=np.random.default_rng(5), color_jitter=0.3)
    assert torch.equal(plain["mask"], jittered["mask"]) and torch.equal(plain["action_pixel"], jittered["action_pixel"])
    assert not torch.equal(plain["rgb"], jittered["rgb"])


def _point_batch(action=(10.0, 10.0)):
    rgb = np.full((32, 32, 3), 100, np.uint8)
    item = {"rgb": rgb, "mask": np.zeros((32, 32), bool), "action_pixel": action, "is_negative": False, "is_point": True}
    return collate_samples([item], hflip_prob=0.0, rng=np.random.default_rng(0))


def test_point_label_trains_objectness_at_the_action_pixel_only():
    batch = _point_batch()
    assert batch["is_point"].tolist() == [True]
    cfg = InstanceTaskConfig(model=TINY, objectness_loss="bce", point_radius=3.0)
    for logit in (-1.0, 0.5):
        torch.manual_seed(0)
        task = InstanceSegmentationTask(cfg)
        net = task.build_model()
        real_forward = net.forward
        obj = torch.full((1, 1, 8, 8), -20.0)  # "background" everywhere: huge loss if any such cell had a target of 1
        # the cells whose centres (4 i + 1.5) lie within 3 px of (10, 10): only (2, 2) at (9.5, 9.5)
        obj[0, 0, 2, 2] = logit

        def forward(x, depth=None, obj=obj):
            out = real_forward(x, depth)
            return {**out, "objectness": obj.clone().requires_grad_(True)}

        net.forward = forward
        _, metrics = task.compute_loss(net, {**batch, "step": 0})
        assert metrics["loss_objectness"] == pytest.approx(float(-np.log(1 / (1 + np.exp(-logit)))), rel=1e-5)
        assert metrics["loss_mask"] == 0.0 and "mask_iou" not in metrics  # no mask is trained
    # a radius below the cell spacing still takes the nearest cell; a mixed batch trains and backpropagates
    items = synthetic_items(3, height=32, width=40, negative_fraction=0.0, seed=4)
    items.append({**items[0], "mask": np.zeros((32, 40), bool), "is_point": True})
    mixed = collate_samples(items, hflip_prob=0.0, rng=np.random.default_rng(0))
    assert mixed["is_point"].tolist() == [False, False, False, True]
    task = InstanceSegmentationTask(InstanceTaskConfig(model=TINY, point_radius=0.0))
    torch.manual_seed(0)
    model = task.build_model()
    loss, _ = task.compute_loss(model, {**mixed, "step": 5})
    assert torch.isfinite(loss)
    loss.backward()
    with pytest.raises(ValueError, match="is_point"):
        task.compute_loss(model, {**mixed, "is_point": mixed["is_point"][:2]})
