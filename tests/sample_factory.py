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


def labeled_store(root, n=4, h=48, w=64, box=(2, 9, 1, 8), last_negative=False):
    """A SampleStore at ``root`` with ``n`` samples, each with a kept 'flow' label covering ``box``
    (y0, y1, x0, x1; around the action pixel (3, 4)); the last one a negative with ``last_negative``."""
    from selfsup_perception.core.dataset.sample_store import SampleStore
    from selfsup_perception.core.types import MaskLabel

    store = SampleStore(root)
    y0, y1, x0, x1 = box
    for i in range(n):
        s = make_sample(f"s{i}", h=h, w=w, seed=i)
        store.write_sample(s)
        m = np.zeros((h, w), bool)
        m[y0:y1, x0:x1] = True
        store.write_label(s.sample_id, MaskLabel(m, last_negative and i == n - 1, True, "test", "flow"))
    return store
