"""Synthetic registered views: cameras translating in front of a tiled plane (exact geometry)."""

import numpy as np

from selfsup_perception.core.registration import view_overlap
from selfsup_perception.core.registration.pair_store import PairStore, StoredPair, pair_id_of
from selfsup_perception.core.types import CameraIntrinsics, RgbdFrame

W, H = 32, 24
K = CameraIntrinsics(30.0, 30.0, 15.5, 11.5, W, H)
PALETTE = np.random.default_rng(7).integers(0, 256, size=(64, 3), dtype=np.uint8)


def tiles(tx: float, scale: int = 1) -> np.ndarray:
    """Tile id (0.25 m tiles on the plane z = 1 m) seen by each pixel of a camera at x = ``tx``;
    ``scale`` > 1 gives the map at 1/scale resolution (pixel centres of the full-resolution grid)."""
    u, v = np.meshgrid(np.arange(W // scale) * scale + (scale - 1) / 2, np.arange(H // scale) * scale + (scale - 1) / 2)
    x_world = (u - K.cx) / K.fx + tx  # depth 1 m
    y_world = (v - K.cy) / K.fy
    return (np.floor(x_world / 0.25).astype(np.int64) % 8) * 8 + (np.floor(y_world / 0.25).astype(np.int64) % 8)


def plane_view(tx: float, stamp: float = 0.0) -> RgbdFrame:
    """A camera at x = ``tx`` looking at a fronto-parallel plane 1 m away, textured with 0.25 m tiles."""
    t = np.eye(4)
    t[0, 3] = tx
    depth = np.ones((H, W), np.float32)
    depth[0, 0] = np.nan
    return RgbdFrame(PALETTE[tiles(tx)], depth, K, t, stamp=stamp, frame_id="cam")


def add_plane_view(store: PairStore, tx: float, with_regions: bool) -> str:
    frame = plane_view(tx)
    vid = store.next_view_id()
    regions = None
    if with_regions:  # precomputed at half resolution: the trainer resizes them (nearest)
        regions = tiles(tx, scale=2)
    store.write_view(vid, frame, regions)
    others = store.registered_view_ids()
    pairs = []
    for o in others:
        f = store.read_view(o)
        iou = view_overlap(f.depth, f.intrinsics, f.camera_to_world, frame.depth, frame.intrinsics,
                           frame.camera_to_world)
        if 0.3 <= iou <= 0.9:
            pairs.append(StoredPair(pair_id_of(o, vid), o, vid, iou))
    store.register_view(vid, pairs)
    return vid
