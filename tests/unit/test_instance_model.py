"""Instance segmentation model, task loss, collate and inference."""

import numpy as np
import pytest
import torch

from selfsup_perception.core.learning.instance_task import (
    InstanceSegmentationTask,
    InstanceTaskConfig,
    collate_samples,
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
from selfsup_perception.core.learning.task import TrainingTask

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
