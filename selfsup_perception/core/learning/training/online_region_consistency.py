"""Online RegConsist pre-training from a growing :class:`PairStore` (ROS-free).

The semantic-segmentation counterpart of :class:`~selfsup_perception.core.learning.training.online.
OnlineInstanceTrainer`, for the pre-training stage: each :meth:`OnlineRegionConsistencyTrainer.train_round`
picks up view pairs the registration node stored since the last round, takes ``steps_per_round``
steps of :class:`RegionConsistencyTask` (Barlow Twins on positive pixel pairs) on random batches of all
pairs so far, and writes a new ``semantic_segmentation`` checkpoint version atomically (rebuilt by
:func:`~selfsup_perception.core.learning.serving.checkpoints.build_model_from_meta`). After a restart
:meth:`resume` continues from the newest valid checkpoint; the data is re-read from the store.

Views are resized to ``input_width`` x ``input_height`` (RGB area-averaged, depth nearest, intrinsics
scaled). Regions come from the store when the node precomputed them (resized nearest), else
Felzenszwalb runs here once per view at the input size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterator, Optional

import cv2
import numpy as np
import torch

from selfsup_perception.core.learning.tasks.region_consistency import (
    RegionConsistencyConfig,
    RegionConsistencyData,
    RegionConsistencyDataConfig,
    RegionConsistencyTask,
)
from selfsup_perception.core.learning.training.online import OnlineTrainer
from selfsup_perception.core.learning.training.trainer import Trainer, TrainerConfig
from selfsup_perception.core.registration.pair_store import PairStore
from selfsup_perception.core.registration.regions import felzenszwalb_regions
from selfsup_perception.core.registration.view_pairs import ViewPair
from selfsup_perception.core.types import RgbdFrame

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class OnlineRegionConsistencyConfig:
    dataset_dir: str = "data/registration"  # the registration node's PairStore
    checkpoint_dir: str = "data/checkpoints"
    input_width: int = 160  # views are resized to this before pre-training
    input_height: int = 120
    batch_size: int = 4  # directed view pairs per step (pixel pairs per view pair: data.sampler.num_pairs)
    steps_per_round: int = 20
    min_pairs: int = 1  # usable view pairs needed before the first round
    data: RegionConsistencyDataConfig = field(default_factory=RegionConsistencyDataConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.input_width < 16 or self.input_height < 16:
            raise ValueError("input size must be at least 16x16")
        if self.batch_size < 1 or self.steps_per_round < 1 or self.min_pairs < 1:
            raise ValueError("batch_size, steps_per_round and min_pairs must be >= 1")


def resize_frame(frame: RgbdFrame, size: tuple[int, int]) -> RgbdFrame:
    """``frame`` at ``size`` = (width, height): RGB area-averaged, depth nearest (no mixed depths)."""
    w, h = size
    if frame.shape == (h, w):
        return frame
    rgb = cv2.resize(frame.rgb, (w, h), interpolation=cv2.INTER_AREA)
    depth = cv2.resize(frame.depth, (w, h), interpolation=cv2.INTER_NEAREST)
    return RgbdFrame(rgb, depth.astype(np.float32), frame.intrinsics.scaled(w, h), frame.camera_to_world,
                     frame.stamp, frame.frame_id).validate()


def resize_regions(regions: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    w, h = size
    if regions.shape == (h, w):
        return regions
    return cv2.resize(regions.astype(np.int32), (w, h), interpolation=cv2.INTER_NEAREST).astype(np.int64)


class IncrementalViewPairs:
    """The view pairs of a :class:`PairStore`, taken in as they are stored (:meth:`refresh`).

    Each view is loaded once (:meth:`_load_view`, cached in ``views``) and shared by its pairs; a pair
    whose view is missing or corrupt, or that :meth:`_add` refuses, counts in ``num_unusable``. Subclasses
    say what a view becomes and what a pair adds.
    """

    def __init__(self, store: PairStore, size: tuple[int, int]):
        self.store = store
        self.size = size  # (width, height)
        self.views: dict[str, object] = {}
        self._seen: set[str] = set()
        self.num_unusable = 0

    def _load_view(self, view_id: str):
        """What a view becomes (None when it is missing or corrupt: the store quarantines it)."""
        raise NotImplementedError

    def _add(self, pair, view_a, view_b) -> bool:
        """Take in one pair of loaded views; False when it is not usable."""
        raise NotImplementedError

    def _view(self, view_id: str):
        if view_id not in self.views:
            loaded = self._load_view(view_id)
            if loaded is None:
                return None
            self.views[view_id] = loaded
        return self.views[view_id]

    def refresh(self) -> int:
        """Load the pairs stored since the last call; returns how many usable pairs were added."""
        self.store.reload()
        added = 0
        for p in self.store.pairs():
            if p.pair_id in self._seen:
                continue
            self._seen.add(p.pair_id)
            a, b = self._view(p.view_a), self._view(p.view_b)
            if a is None or b is None:
                LOG.warning("skipping view pair %s: a view is missing or corrupt", p.pair_id)
                self.num_unusable += 1
            elif self._add(p, a, b):
                added += 1
            else:
                self.num_unusable += 1
        return added


class RegisteredPairDataset(IncrementalViewPairs):
    """View pairs of a :class:`PairStore`, loaded incrementally; one :class:`RegionConsistencyData` per pair.

    Keeping one small ``RegionConsistencyData`` per view pair lets new pairs be added without
    recomputing the correspondences and region matches of the old ones. ``num_unusable``: pairs without
    enough correspondences / matched regions, or with a lost view.
    """

    def __init__(self, store: PairStore, size: tuple[int, int], config: RegionConsistencyDataConfig):
        super().__init__(store, size)
        self.config = config
        self.items: list[RegionConsistencyData] = []
        self.pair_ids: list[str] = []

    def _load_view(self, view_id: str) -> Optional[tuple[RgbdFrame, np.ndarray]]:
        loaded = self.store.load_view_or_quarantine(view_id, with_regions=True)
        if loaded is None:
            return None
        frame, regions = loaded
        frame = resize_frame(frame, self.size)
        regions = (resize_regions(regions, self.size) if regions is not None
                   else felzenszwalb_regions(frame.rgb, self.config.felzenszwalb))
        return frame, regions

    def _add(self, pair, view_a, view_b) -> bool:
        try:
            data = RegionConsistencyData([view_a[0], view_b[0]], [ViewPair(0, 1, pair.iou)], self.config,
                                         regions=[view_a[1], view_b[1]])
        except ValueError as exc:
            LOG.info("pair %s not usable: %s", pair.pair_id, exc)
            return False
        self.items.append(data)
        self.pair_ids.append(pair.pair_id)
        return True

    def __len__(self) -> int:
        return len(self.items)

    def sample_batch(self, batch_size: int, rng: np.random.Generator) -> dict:
        """``batch_size`` view pairs (uniform over pairs, random direction) for RegionConsistencyTask."""
        idx = rng.choice(len(self.items), size=batch_size, replace=len(self.items) < batch_size)
        parts = [self.items[int(i)].sample_batch(1, rng) for i in idx]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def batches(self, batch_size: int, rng: np.random.Generator) -> Iterator[dict]:
        while True:
            yield self.sample_batch(batch_size, rng)


class OnlineRegionConsistencyTrainer(OnlineTrainer):
    """Same surface as OnlineInstanceTrainer: ``resume()``, ``train_round()``, ``version``, ``trainer``,
    ``dataset``, ``last_round``."""

    def __init__(self, config: OnlineRegionConsistencyConfig = OnlineRegionConsistencyConfig(),
                 task_config: RegionConsistencyConfig = RegionConsistencyConfig(),
                 trainer_config: Optional[TrainerConfig] = None):
        self.config = config
        self.task = RegionConsistencyTask(task_config)
        tc = trainer_config or TrainerConfig(lr=1e-3, warmup_steps=20, seed=config.seed, grad_clip_norm=5.0)
        self.trainer = Trainer(self.task, self._serving_config(tc))
        self.store = PairStore(config.dataset_dir)
        self.dataset = RegisteredPairDataset(self.store, (config.input_width, config.input_height), config.data)
        self._init_round_state()

    def ready(self) -> bool:
        return len(self.dataset) >= self.config.min_pairs

    def _batches(self):
        return self.dataset.batches(self.config.batch_size, self._rng)

    def _round_info(self) -> dict:
        return {"pairs": len(self.dataset), "views": len(self.dataset.views)}
