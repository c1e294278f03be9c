"""Training task for dense descriptors (identical-view, cycle-correspondence, both, or geometric supervision).

Implements the :class:`~selfsup_perception.core.learning.tasks.base.TrainingTask` protocol.

Batch contract (tensors, B images of equal size H x W):

* ``rgb_a``: (B, 3, H, W) uint8 (or float in [0, 255]) -- always required;
* ``rgb_b``: (B, 3, H, W) another image with (partly) the same content (another viewpoint or arrangement);
  required for ``cycle``, ``cycle_identical`` and ``geometric``; correspondences unknown except in ``geometric``;
* ``corr_a``, ``corr_b``: (B, M, 2) float (x, y) image pixels of known matches A <-> B and ``corr_valid`` (B, M)
  bool -- ``geometric`` only (e.g. from depth + poses via ``core.registration``);
* ``rgb_a_alt``: (B, 3, H, W) optional pixel-aligned appearance variant of ``rgb_a`` (other lighting/colours):
  when present and ``alignment_weight > 0``, multi-layer features of A and A_alt are aligned
  (Montalvo et al.);
* ``semantic_a``: (B, H, W) optional labels of A: when present and ``mix_probability > 0`` the appearance variant
  is replaced, per image with that probability, by the ClassMix of A and A_alt (still pixel-aligned with A).

Per step: A and A_hat are two independent augmentations of ``rgb_a`` (homography + colour jitter, known
mapping); B is augmented too. Keypoints are sampled uniformly in A where they stay inside both views.
Losses (docs/descriptors.md has the formulas):

* ``identical``: ``L_identical = KL(q || p)`` A -> A_hat (eq. 10);
* ``cycle``: ``L_cycle`` A -> B -> A_hat with quantile drop + detached variance scaling (eq. 9);
* ``cycle_identical``: ``L_cycle + lambda L_identical``, lambda = 0.1 (paper Sec. IV-A);
* ``geometric``: distributional loss on the given A <-> B matches.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from selfsup_perception.core.descriptors.augmentation import (
    AugmentationConfig,
    apply_homography,
    augment_batch,
    color_jitter,
    inside_image,
    warp_images,
)
from selfsup_perception.core.descriptors.spatial_expectation import image_to_grid
from selfsup_perception.core.learning.serving import checkpoints as ckpt
from selfsup_perception.core.learning.losses.alignment import FeatureAlignmentLoss, class_mix
from selfsup_perception.core.learning.losses.correspondence import (
    CycleCorrespondenceLoss,
    GeometricCorrespondenceLoss,
    IdenticalViewLoss,
)
from selfsup_perception.core.learning.models.backbone import normalize_image
from selfsup_perception.core.learning.models.descriptor_net import (  # noqa: F401 - re-exported
    DescriptorNet,
    DescriptorNetConfig,
    descriptor_model_from_config,
)

MODES = ("identical", "cycle", "cycle_identical", "geometric")


@dataclass(frozen=True)
class DescriptorTaskConfig:
    mode: str = "cycle_identical"
    model: DescriptorNetConfig = field(default_factory=DescriptorNetConfig)
    temperature: float = 0.03  # tau of the heatmap softmax (paper: 0.03 by grid search)
    num_keypoints: int = 200  # per image (paper: 500)
    quantile: float = 0.35  # fraction of most confident cycle keypoints kept (paper: 35 %)
    variance_scaling: bool = True
    identical_weight: float = 0.1  # lambda in L_cycle + lambda L_identical (paper: 0.1)
    sigma: float = 1.0  # std of the distributional target, in descriptor-grid cells
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    alignment_weight: float = 0.0  # > 0 enables cross-appearance alignment when rgb_a_alt is given
    alignment_metric: str = "cosine"  # 'cosine' | 'l2' | 'mmd'
    mix_probability: float = 0.0  # ClassMix of A and A_alt when semantic_a is given
    ignore_index: int = 255
    seed: int = 0
    # initial weights: a descriptors checkpoint version directory (or a checkpoint root / task directory, newest
    # version); "" = random init. The paper initialises CCL from the identical-view checkpoint (Sec. IV-C).
    init_checkpoint: str = ""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.num_keypoints < 1:
            raise ValueError("num_keypoints must be >= 1")
        if self.alignment_weight < 0 or self.identical_weight < 0 or not 0 <= self.mix_probability <= 1:
            raise ValueError("weights must be >= 0 and mix_probability in [0, 1]")


def resolve_descriptor_checkpoint(path: str | Path) -> Path:
    """The version directory meant by ``path``: a version directory itself, or the newest valid ``descriptors``
    version under a checkpoint root (``<root>/descriptors/v*``) or a task directory. ValueError if there is none."""
    path = Path(path)
    if (path / ckpt.META_FILE).is_file():
        return path
    info = ckpt.latest_version(path, DescriptorTask.name)  # path = checkpoint root
    if info is None and path.name == DescriptorTask.name:  # path = <root>/descriptors
        info = ckpt.latest_version(path.parent, DescriptorTask.name)
    if info is not None:
        return info.path
    raise ValueError(f"no descriptors checkpoint at {path}")


def load_initial_weights(model: DescriptorNet, path: str | Path) -> Path:
    """Load a descriptors checkpoint into ``model`` (strict); ValueError if it is not a descriptors model of the
    same architecture. Returns the version directory used."""
    version_dir = resolve_descriptor_checkpoint(path)
    try:
        meta = ckpt.validate_version(version_dir, DescriptorTask.name)
        saved = DescriptorNetConfig.from_dict(meta["model_config"]["descriptor_net"])
    except (ckpt.CheckpointError, KeyError, TypeError) as e:
        raise ValueError(f"{version_dir} is not a usable descriptors checkpoint: {e}") from e
    if saved != model.config:
        raise ValueError(f"{version_dir} holds a {saved} network, not the configured {model.config}")
    model.load_state_dict(ckpt.load_state_dict(version_dir), strict=True)
    return version_dir


def _images(batch: dict, key: str) -> torch.Tensor:
    if key not in batch:
        raise ValueError(f"batch is missing {key!r}")
    x = batch[key]
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3 or x.shape[0] == 0 or x.shape[2] < 8 or x.shape[3] < 8:
        raise ValueError(f"batch[{key!r}] must be a (B, 3, H, W) tensor with H, W >= 8, got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x)}")
    return x.float() / 255.0  # [0, 1]


class DescriptorTask:
    name = "descriptors"

    def __init__(self, config: DescriptorTaskConfig | None = None):
        self.config = config or DescriptorTaskConfig()
        c = self.config
        self._rng = np.random.default_rng(c.seed)
        self._gen = torch.Generator().manual_seed(c.seed)
        self.identical_loss = IdenticalViewLoss(temperature=c.temperature, sigma=c.sigma)
        self.cycle_loss = CycleCorrespondenceLoss(temperature=c.temperature, quantile=c.quantile,
                                                  variance_scaling=c.variance_scaling)
        self.geometric_loss = GeometricCorrespondenceLoss(temperature=c.temperature, sigma=c.sigma)
        self.alignment_loss = FeatureAlignmentLoss(metric=c.alignment_metric)

    def build_model(self) -> torch.nn.Module:
        """A fresh network: random init, or the weights of ``config.init_checkpoint``."""
        model = DescriptorNet(self.config.model)
        if self.config.init_checkpoint:
            load_initial_weights(model, self.config.init_checkpoint)
        return model

    def model_config(self) -> dict:
        return {"descriptor_net": self.config.model.to_dict(), "mode": self.config.mode,
                "temperature": self.config.temperature}

    # ----------------------------------------------------------------- helpers
    def _sample_keypoints(self, h1: torch.Tensor, h2: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, ...]:
        """Keypoints in the source image mapped into two views; (kp_1, kp_2, valid), each (B, N, ...)."""
        b, n = h1.shape[0], self.config.num_keypoints
        cand = torch.rand(b, 4 * n, 2, generator=self._gen, dtype=torch.float64) * torch.tensor([width - 1, height - 1])
        p1, p2 = apply_homography(h1, cand), apply_homography(h2, cand)
        ok = inside_image(p1, width, height) & inside_image(p2, width, height)  # (B, 4N)
        order = torch.argsort((~ok).to(torch.int8), dim=1, stable=True)[:, :n]  # valid candidates first
        take = lambda t: torch.gather(t, 1, order.unsqueeze(-1).expand(-1, -1, 2))  # noqa: E731
        return take(p1), take(p2), torch.gather(ok, 1, order)

    def _appearance_variant(self, batch: dict, x_a: torch.Tensor) -> torch.Tensor | None:
        c = self.config
        if c.alignment_weight <= 0 or "rgb_a_alt" not in batch:
            return None
        alt = _images(batch, "rgb_a_alt")
        if alt.shape != x_a.shape:
            raise ValueError(f"rgb_a_alt {tuple(alt.shape)} must match rgb_a {tuple(x_a.shape)}")
        if c.mix_probability > 0 and "semantic_a" in batch:
            sem = batch["semantic_a"]
            mixed = []
            for i in range(len(alt)):
                if self._rng.random() < c.mix_probability:
                    mixed.append(class_mix(x_a[i], alt[i], sem[i], self._rng, c.ignore_index)[0])
                else:
                    mixed.append(alt[i])
            alt = torch.stack(mixed)
        return alt

    # -------------------------------------------------------------------- loss
    def compute_loss(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        x_a = _images(batch, "rgb_a")  # (B, 3, H, W) in [0, 1]
        b, _, h, w = x_a.shape
        aug = c.augmentation
        needs_b = c.mode != "identical"
        x_b = _images(batch, "rgb_b") if needs_b else None
        if x_b is not None and x_b.shape != x_a.shape:
            raise ValueError(f"rgb_b {tuple(x_b.shape)} must match rgb_a {tuple(x_a.shape)}")
        alt = self._appearance_variant(batch, x_a)

        # phase: views with known mappings
        a1, hom1 = augment_batch(x_a, self._rng, aug)  # A, (B, 3, 3) source -> A
        views = [a1]
        if c.mode != "geometric":
            a_hat, hom2 = augment_batch(x_a, self._rng, aug)  # A_hat
            views.append(a_hat)
        if needs_b:
            b1, hom_b = augment_batch(x_b, self._rng, aug)
            views.append(b1)
        if alt is not None:
            views.append(color_jitter(warp_images(alt, hom1), self._rng, aug))  # pixel-aligned with A
        # phase: forward (one pass so BatchNorm sees all views)
        desc, feats = model.forward_features(normalize_image(torch.cat(views) * 255.0))  # (V*B, D, h', w')
        stride = h / desc.shape[-2]
        chunks = list(desc.split(b))
        d_a = chunks.pop(0)
        d_ah = chunks.pop(0) if c.mode != "geometric" else None
        d_b = chunks.pop(0) if needs_b else None

        stats: dict[str, float] = {}
        total = desc.new_zeros(())
        # phase: correspondence losses
        if c.mode == "geometric":
            for key in ("corr_a", "corr_b", "corr_valid"):
                if key not in batch:
                    raise ValueError(f"geometric mode needs batch[{key!r}]")
            ca = apply_homography(hom1, batch["corr_a"].detach().cpu().to(torch.float64))
            cb = apply_homography(hom_b, batch["corr_b"].detach().cpu().to(torch.float64))
            valid = batch["corr_valid"].detach().cpu().bool() & inside_image(ca, w, h) & inside_image(cb, w, h)
            m = ca.shape[1]
            if m > c.num_keypoints:
                idx = torch.randperm(m, generator=self._gen)[: c.num_keypoints]
                ca, cb, valid = ca[:, idx], cb[:, idx], valid[:, idx]
            dev = dict(device=desc.device, dtype=desc.dtype)
            geo = self.geometric_loss(descriptors_a=d_a, descriptors_b=d_b, keypoints_a=image_to_grid(ca, stride).to(**dev),
                                      keypoints_b=image_to_grid(cb, stride).to(**dev), valid=valid.to(desc.device))
            total = total + geo
            stats["geometric"] = float(geo.detach())
        else:
            kp_a, kp_ah, valid = self._sample_keypoints(hom1, hom2, w, h)
            g_a = image_to_grid(kp_a, stride).to(device=desc.device, dtype=desc.dtype)
            g_ah = image_to_grid(kp_ah, stride).to(device=desc.device, dtype=desc.dtype)
            valid = valid.to(desc.device)
            if c.mode in ("identical", "cycle_identical"):
                ident = self.identical_loss(descriptors_a=d_a, descriptors_b=d_ah, keypoints_a=g_a, keypoints_b=g_ah, valid=valid)
                total = total + (ident if c.mode == "identical" else c.identical_weight * ident)
                stats["identical"] = float(ident.detach())
            if c.mode in ("cycle", "cycle_identical"):
                t = self.cycle_loss.terms(descriptors_a=d_a, descriptors_b=d_b, descriptors_a_hat=d_ah,
                                          keypoints_a=g_a, keypoints_a_hat=g_ah, valid=valid)
                n_kept = t.kept.sum()
                cyc = (t.weights * t.errors).sum() / n_kept.clamp_min(1)
                total = total + cyc
                stats["cycle"] = float(cyc.detach())
                stats["cycle_kept_error_px"] = float((t.errors[t.kept].mean() * stride).detach()) if n_kept > 0 else float("nan")
                stats["cycle_variance"] = float(t.variances[valid].mean()) if valid.any() else float("nan")
        # phase: cross-appearance alignment on all backbone stages + descriptors
        if alt is not None:
            layers = [f.split(b) for f in feats] + [desc.split(b)]
            fa = [lay[0] for lay in layers]
            falt = [lay[-1] for lay in layers]
            al = self.alignment_loss(features_a=fa, features_b=falt)
            total = total + c.alignment_weight * al
            stats["alignment"] = float(al.detach())
        stats["loss"] = float(total.detach())
        return total, stats


def task_config_to_dict(config: DescriptorTaskConfig) -> dict:
    """JSON-serialisable view of the task configuration (for logs / checkpoint metadata)."""
    d = asdict(config)
    d["model"] = config.model.to_dict()
    return d
