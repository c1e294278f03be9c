"""A sample store of toy tabletop interactions (rgb, one labelled object per push) for promotion-gate tests."""

import numpy as np

from selfsup_perception.core.dataset.sample_store import SampleStore
from selfsup_perception.core.learning.tasks.instance import synthetic_items
from selfsup_perception.core.learning.training.online import LabeledDataset
from selfsup_perception.core.types import (
    CameraIntrinsics,
    InteractionKind,
    InteractionOutcome,
    InteractionSample,
    MaskLabel,
    RgbdFrame,
)

H, W = 48, 64


def _frame(rgb):
    h, w = rgb.shape[:2]
    return RgbdFrame(rgb, np.full((h, w), 0.8, np.float32), CameraIntrinsics(60.0, 60.0, (w - 1) / 2, (h - 1) / 2, w, h))


def toy_store(root, n=24, seed=0, labeler="flow"):
    """``n`` stored pushes with clean flow-like labels; ground truth kept apart (the learner never reads it).

    Returns (store, ids).
    """
    store = SampleStore(root)
    ids = []
    for i, item in enumerate(synthetic_items(n, height=H, width=W, seed=seed, label_noise=0.0)):
        sid = f"toy{seed}_{i:03d}"
        sample = InteractionSample(sid, InteractionKind.PUSH, _frame(item["rgb"]), _frame(item["rgb"]),
                                   item["action_pixel"], (0.5, 0.0, 0.02), (0.4, 0.0, 0.02),
                                   InteractionOutcome.EXECUTED, "push executed",
                                   ground_truth={"instance_mask_before": item["gt_instances"]})
        store.write_sample(sample)
        store.write_label(sid, MaskLabel(item["mask"], bool(item["is_negative"]), True, "test", labeler))
        ids.append(sid)
    return store, ids


def validation_ids(store, fraction, min_positives=2, reserve_after=4, labeler="flow"):
    """The sample ids the online trainer holds out (hash + quota, as OnlineInstanceTrainer splits them)."""
    ds = LabeledDataset(store, labeler, (W, H), validation_fraction=fraction, min_validation_positives=min_positives,
                        reserve_after=reserve_after)
    ds.refresh()
    return {it["sample_id"] for it in ds.validation}


def corrupt_training_labels(store, ids, fraction, labeler="flow", seed=0):
    """Replace every *training* label (not held out) by a wrong mask: a box away from the object."""
    rng = np.random.default_rng(seed)
    held_out = validation_ids(store, fraction, labeler=labeler)
    for sid in ids:
        if sid in held_out:
            continue
        label = store.read_label(sid, labeler)
        wrong = np.zeros_like(label.mask)
        y, x = int(rng.integers(0, H - 16)), int(rng.integers(0, W - 16))
        wrong[y:y + 16, x:x + 16] = True
        store.write_label(sid, MaskLabel(wrong, False, True, "corrupted by the test", labeler), overwrite=True)
