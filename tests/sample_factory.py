"""Small interaction samples for tests."""

import numpy as np

from selfsup_perception.core.types import (
    CameraIntrinsics,
    InteractionKind,
    InteractionOutcome,
    InteractionSample,
    RgbdFrame,
)


def make_sample(sample_id="s1", h=12, w=16, seed=0):
    rng = np.random.default_rng(seed)
    k = CameraIntrinsics(20.0, 20.0, 7.5, 5.5, w, h)

    def frame():
        depth = rng.uniform(0.5, 1.0, size=(h, w)).astype(np.float32)
        depth[0, 0] = np.nan
        return RgbdFrame(rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8), depth, k, np.eye(4), stamp=1.5)

    return InteractionSample(sample_id, InteractionKind.PUSH, frame(), frame(), (3.0, 4.0), (0.5, 0.0, 0.02),
                             (0.4, 0.0, 0.02), InteractionOutcome.EXECUTED, "push executed",
                             ground_truth={"instance_mask_before": np.ones((h, w), np.uint16), "moved_instance": 2})
