"""RegConsist pre-training task: Barlow Twins on positive pixel pairs of registered views.

Pipeline (RegConsist Sec. III, Fig. 2): view pairs with IoU in [iou_low, iou_high]
(:func:`~selfsup_perception.core.registration.view_pairs.select_view_pairs`) -> correspondences by
depth reprojection -> regions per view (Felzenszwalb, or ground-truth segments for the upper bound)
matched across the pair -> pixel pairs sampled (random/balanced x exact/region) -> strong photometric
augmentation of view A, weak of view B (the paper: strong/weak beats strong/strong) -> shared network
-> decoder features at the sampled pixels -> projector -> Barlow Twins loss (lambda = 0.005).

Augmentations are photometric only (colour jitter, grayscale, Gaussian blur), so the pixel
coordinates of the pairs stay valid. Gradient-norm clipping (the paper: 5) is the trainer's job.

Batch contract of :meth:`RegionConsistencyTask.compute_loss`::

    rgb_a, rgb_b   (B, 3, H, W) uint8 or float in [0, 255]
    pixels_a, pixels_b  (B, N, 2) long (u, v): pair n of view pair b is (pixels_a[b, n], pixels_b[b, n])

:class:`RegionConsistencyData` builds such batches from RGB-D views.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from selfsup_perception.core.learning.losses.barlow_twins import BarlowTwinsLoss
from selfsup_perception.core.learning.models.semantic_segmentation import (
    SemanticSegConfig,
    SemanticSegNet,
    sample_pixel_features,
)
from selfsup_perception.core.registration.pixel_sampling import PixelPairSamplerConfig, sample_pixel_pairs
from selfsup_perception.core.registration.regions import (
    FelzenszwalbConfig,
    RegionMatchConfig,
    felzenszwalb_regions,
    match_regions,
    relabel_consecutive,
)
from selfsup_perception.core.registration.reprojection import (
    DEFAULT_DEPTH_TOLERANCE,
    DEFAULT_RELATIVE_DEPTH_TOLERANCE,
    correspondences,
)
from selfsup_perception.core.registration.view_pairs import ViewLike, ViewPair


# ----------------------------------------------------------------------------- augmentation
@dataclass(frozen=True)
class PhotometricAugConfig:
    """Per-image photometric augmentation (torchvision-like semantics, implemented on tensors)."""

    jitter_prob: float = 0.8
    brightness: float = 0.4  # factor ~ U(1 - b, 1 + b)
    contrast: float = 0.4  # blend with the image mean grey level
    saturation: float = 0.4  # blend with the grey image
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 1.5)  # pixels


STRONG_AUG = PhotometricAugConfig()
WEAK_AUG = PhotometricAugConfig(jitter_prob=0.5, brightness=0.1, contrast=0.1, saturation=0.1,
                                grayscale_prob=0.0, blur_prob=0.0)


def _gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """(3, H, W) separable Gaussian blur, kernel radius ceil(3 sigma), reflect padding."""
    r = max(1, int(np.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, dtype=img.dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    img = img.unsqueeze(0)
    img = F.conv2d(F.pad(img, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    img = F.conv2d(F.pad(img, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
    return img.squeeze(0)


def photometric_augment(rgb: torch.Tensor, config: PhotometricAugConfig, generator: torch.Generator) -> torch.Tensor:
    """(B, 3, H, W) in [0, 255] -> augmented float (B, 3, H, W) in [0, 255]; geometry unchanged."""
    out = rgb.float() / 255.0
    imgs = []
    for img in out:
        def u(lo: float, hi: float) -> float:
            return float(lo + (hi - lo) * torch.rand((), generator=generator))

        if u(0, 1) < config.jitter_prob:
            img = img * u(1 - config.brightness, 1 + config.brightness)
            grey = (0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]).unsqueeze(0)
            c = u(1 - config.contrast, 1 + config.contrast)
            img = (c * img + (1 - c) * grey.mean()).clamp(0, 1)
            s = u(1 - config.saturation, 1 + config.saturation)
            img = (s * img + (1 - s) * grey).clamp(0, 1)
        if u(0, 1) < config.grayscale_prob:
            img = (0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]).expand(3, -1, -1)
        if u(0, 1) < config.blur_prob:
            img = _gaussian_blur(img.contiguous(), u(*config.blur_sigma))
        imgs.append(img)
    return torch.stack(imgs).clamp(0, 1) * 255.0


# ----------------------------------------------------------------------------- task
@dataclass(frozen=True)
class RegionConsistencyConfig:
    model: SemanticSegConfig = field(default_factory=SemanticSegConfig)
    lambda_offdiag: float = 0.005
    strong_aug: PhotometricAugConfig = field(default_factory=lambda: STRONG_AUG)
    weak_aug: PhotometricAugConfig = field(default_factory=lambda: WEAK_AUG)
    seed: int = 0


class RegionConsistencyTask:
    """TrainingTask for RegConsist pre-training; the model is a :class:`SemanticSegNet`.

    ``name`` is 'semantic_segmentation' because the checkpoint is a semantic-segmentation network
    (the fine-tuning task loads it); ``stage`` says 'pretrain'.
    """

    name = "semantic_segmentation"
    stage = "pretrain"

    def __init__(self, config: RegionConsistencyConfig = RegionConsistencyConfig()):
        self.config = config
        self.loss_fn = BarlowTwinsLoss(lambda_offdiag=config.lambda_offdiag)
        self._gen = torch.Generator().manual_seed(config.seed)

    def build_model(self) -> SemanticSegNet:
        return SemanticSegNet(self.config.model)

    def model_config(self) -> dict:
        return self.config.model.to_dict()

    def compute_loss(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        for key in ("rgb_a", "rgb_b", "pixels_a", "pixels_b"):
            if key not in batch:
                raise ValueError(f"region-consistency batch is missing {key!r}")
        rgb_a, rgb_b = batch["rgb_a"], batch["rgb_b"]
        if rgb_a.shape != rgb_b.shape:
            raise ValueError(f"rgb_a {tuple(rgb_a.shape)} and rgb_b {tuple(rgb_b.shape)} differ")
        pa, pb = batch["pixels_a"], batch["pixels_b"]
        if pa.shape != pb.shape or pa.dim() != 3 or pa.shape[0] != rgb_a.shape[0]:
            raise ValueError(f"pixels_a/pixels_b must both be (B, N, 2), got {tuple(pa.shape)}, {tuple(pb.shape)}")
        if pa.shape[0] * pa.shape[1] < 2:
            raise ValueError("need at least 2 pixel pairs per batch")
        b, _, h, w = rgb_a.shape
        x = torch.cat([photometric_augment(rgb_a, self.config.strong_aug, self._gen),
                       photometric_augment(rgb_b, self.config.weak_aug, self._gen)])  # (2B, 3, H, W)
        feats = model.features(x)  # (2B, Cd, H/4, W/4)
        fa = sample_pixel_features(feats[:b], pa, (h, w))  # (B*N, Cd)
        fb = sample_pixel_features(feats[b:], pb, (h, w))
        za, zb = model.project(torch.cat([fa, fb])).chunk(2)  # projector BN sees both views
        loss = self.loss_fn(za, zb)
        with torch.no_grad():
            on_diag = torch.diagonal(self.loss_fn.cross_correlation(za.detach(), zb.detach())).mean()
        return loss, {"barlow_twins": float(loss.detach()), "mean_c_ii": float(on_diag)}


# ----------------------------------------------------------------------------- data
@dataclass(frozen=True)
class RegionConsistencyDataConfig:
    sampler: PixelPairSamplerConfig = field(default_factory=PixelPairSamplerConfig)  # num_pairs per view pair
    felzenszwalb: FelzenszwalbConfig = field(default_factory=FelzenszwalbConfig)
    region_match: RegionMatchConfig = field(default_factory=RegionMatchConfig)
    depth_tolerance: float = DEFAULT_DEPTH_TOLERANCE
    relative_depth_tolerance: float = DEFAULT_RELATIVE_DEPTH_TOLERANCE
    min_correspondences: int = 100  # directed pairs with fewer are dropped


@dataclass
class _DirectedPair:
    a: int
    b: int
    corr: object
    matches: object


class RegionConsistencyData:
    """Pre-computes correspondences and region matches of view pairs (both directions); samples batches.

    ``views`` need ``rgb``, ``depth``, ``intrinsics``, ``camera_to_world`` (e.g. RgbdFrame).
    ``regions``: per-view (H, W) int region maps to use instead of Felzenszwalb (e.g. ground-truth
    segments for the paper's upper bound), or None.
    """

    def __init__(
        self,
        views: Sequence[ViewLike],
        pairs: Sequence[ViewPair],
        config: RegionConsistencyDataConfig = RegionConsistencyDataConfig(),
        regions: Optional[Sequence[np.ndarray]] = None,
    ):
        if len(views) == 0 or len(pairs) == 0:
            raise ValueError("need at least one view and one view pair")
        self.config = config
        self.views = list(views)
        shapes = {v.rgb.shape for v in self.views}
        if len(shapes) != 1:
            raise ValueError(f"all views must have the same image size, got {shapes}")
        if regions is None:
            self.regions = [felzenszwalb_regions(v.rgb, config.felzenszwalb) for v in self.views]
        else:
            if len(regions) != len(views):
                raise ValueError("regions must have one map per view")
            self.regions = [relabel_consecutive(r) for r in regions]
        needs_matches = config.sampler.matching == "region"
        self.pairs: list[_DirectedPair] = []
        for p in pairs:
            for a, b in ((p.index_a, p.index_b), (p.index_b, p.index_a)):
                va, vb = self.views[a], self.views[b]
                corr = correspondences(
                    va.depth, va.intrinsics, va.camera_to_world, vb.depth, vb.intrinsics, vb.camera_to_world,
                    depth_tolerance=config.depth_tolerance, relative_depth_tolerance=config.relative_depth_tolerance,
                )
                if len(corr) < config.min_correspondences:
                    continue
                matches = match_regions(self.regions[a], self.regions[b], corr, config.region_match) if needs_matches else None
                if matches is not None and matches.matched_regions.size == 0:
                    continue
                self.pairs.append(_DirectedPair(a, b, corr, matches))
        if not self.pairs:
            raise ValueError("no usable view pair (too few correspondences or no matched regions)")

    def __len__(self) -> int:
        return len(self.pairs)

    def sample_batch(self, batch_size: int, rng: np.random.Generator) -> dict:
        """A batch for :meth:`RegionConsistencyTask.compute_loss` of ``batch_size`` directed view pairs."""
        idx = rng.choice(len(self.pairs), size=batch_size, replace=len(self.pairs) < batch_size)
        rgb_a, rgb_b, pix_a, pix_b = [], [], [], []
        for i in idx:
            p = self.pairs[int(i)]
            s = sample_pixel_pairs(p.corr, self.config.sampler, regions_a=self.regions[p.a],
                                   regions_b=self.regions[p.b], matches=p.matches, rng=rng)
            rgb_a.append(self.views[p.a].rgb)
            rgb_b.append(self.views[p.b].rgb)
            pix_a.append(s.pixels_a)
            pix_b.append(s.pixels_b)
        to_img = lambda xs: torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).contiguous()  # noqa: E731
        return {
            "rgb_a": to_img(rgb_a),
            "rgb_b": to_img(rgb_b),
            "pixels_a": torch.from_numpy(np.stack(pix_a)),
            "pixels_b": torch.from_numpy(np.stack(pix_b)),
        }


def config_to_dict(config: RegionConsistencyConfig) -> dict:
    """JSON-serialisable description of a pre-training config (for checkpoint metadata)."""
    return asdict(config)
