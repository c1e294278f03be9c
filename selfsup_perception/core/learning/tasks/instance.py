"""Instance segmentation as a :class:`~selfsup_perception.core.learning.tasks.base.TrainingTask`.

Batch format (``compute_loss``), B samples of H x W pixels, built by :func:`collate_samples`:

=================  ====================  ===========================================================
key                shape / dtype          meaning
=================  ====================  ===========================================================
``rgb``            (B, 3, H, W) uint8     before-interaction image
``mask``           (B, H, W) bool         self-supervised mask of the moved object (empty if negative)
``action_pixel``   (B, 2) float32         (u, v) where the robot acted, in this (cropped) image
``is_negative``    (B,) bool              nothing moved: the action pixel is background
``valid``          (B, H, W) bool         pixels to train on (False = padding); optional
``is_point``       (B,) bool              point label: an object lies at the action pixel, its mask is
                                          unknown (a push that moved something, discarded by the
                                          labeler); optional
``depth``          (B, H, W) float32      metres, NaN invalid; only if the model uses depth
``step``           int                    added by the trainer (co-teaching ramp)
=================  ====================  ===========================================================

Training signal per sample, at stride 4 (targets are area-downsampled masks > 0.5):

* objectness o: positives -> target = mask over all valid pixels (other objects are
  unlabelled, hence hard bootstrapping, Eitel et al. Sec. III-C, and ``unlabelled_weight`` < 1
  on the pixels outside the mask); with ``balance_objectness`` the mask pixels are up-weighted
  to carry as much weight as the rest of the image (our addition); negatives -> target 0,
  with weight ``1 + negative_weight`` in a disk of ``negative_radius`` px around the action
  pixel (known background: pushing there moved nothing), which bootstrapping never ignores.
* point-conditioned mask m_q (positives only): ``queries_per_sample`` query pixels -- the
  action pixel (or the mask pixel nearest to it) plus random mask pixels -- each trained to
  predict the whole labelled mask; BCE, robust set loss (Pathak et al. Sec. 3.1), or BCE plus
  the soft-IoU hinge. A negative's mask is not trained: with embedding masks the query pixel
  is always in its own mask, so "no object here" is the objectness head's job.
* point labels (``is_point``): objectness target 1 at the stride-4 cells within ``point_radius``
  of the action pixel (at least the nearest cell), every other pixel unweighted; no mask loss.
  A push moves the object under its start pixel (118 of the 120 pushes of ``bench/ap_table.py``'s
  realistic collection), so a push whose mask the labeler could not trust still says where an
  object is.
* per-sample loss = objectness_weight * L_obj + mask_weight * L_mask; with co-teaching two
  networks exchange their (1 - forget) small-loss samples (Han et al. 2018); with
  ``small_loss_forget_rate`` one network keeps its own (1 - forget) small-loss samples.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from selfsup_perception.core.learning.losses.noisy_labels import (
    CoTeachingLoss,
    SoftIoUHingeLoss,
    binary_iou,
    forget_rate_schedule,
    hard_bootstrap_targets,
    robust_set_refine,
    small_loss_mean,
    weighted_bce,
)
from selfsup_perception.core.learning.models.instance_segmentation import (  # noqa: F401 - re-exported
    CoTeachingPair,
    InstanceSegConfig,
    InstanceSegNet,
    build_instance_model,
)
from selfsup_perception.core.learning.tasks.backbone_transfer import (
    RANDOM_INIT,
    FineTuneConfig,
    fine_tune_param_groups,
    initialize_backbone,
)


@dataclass(frozen=True)
class InstanceTaskConfig:
    model: InstanceSegConfig = field(default_factory=InstanceSegConfig)
    # 'bce' | 'robust_set' | 'soft_iou' (BCE + soft-IoU hinge); soft_iou measured best from random
    # weights on the simulated tabletop (docs/learning.md, bench/ap_table.py)
    mask_loss: str = "soft_iou"
    objectness_loss: str = "bootstrap"  # 'bce' | 'bootstrap'
    bootstrap_beta: float = 0.7  # Reed et al. / aeitel/self_deepmask
    ignore_confident_foreground: bool = True  # Eitel et al. Sec. III-C
    robust_step: float = 0.1  # robust set loss, reference defaults
    robust_iou_threshold: float = 0.75
    robust_max_iterations: int = 25
    co_teaching: bool = False
    forget_rate: float = 0.1  # aeitel/self_deepmask
    forget_ramp_steps: int = 500  # linear ramp from 0 (Han et al.: over 10 epochs)
    # one network, small-loss selection: each step trains on the int((1 - r) * B) samples of the batch with
    # the smallest loss, r ramped from 0 like co-teaching's (losses/noisy_labels.small_loss_mean); 0 = off.
    # Ignored with co_teaching (which selects by the peer's losses).
    small_loss_forget_rate: float = 0.0
    queries_per_sample: int = 4
    objectness_weight: float = 1.0
    mask_weight: float = 1.0
    negative_radius: float = 12.0  # px, full resolution
    negative_weight: float = 4.0
    point_radius: float = 3.0  # px of the training image: objectness target 1 around a point label's action pixel
    # objectness class balance: labelled-mask pixels of a positive are up-weighted so that they
    # carry as much total weight as the rest of that image (one object is ~1 % of the pixels;
    # unbalanced BCE learns "nothing is an object" and no query point reaches the peak threshold)
    balance_objectness: bool = True
    # weight of the unlabelled pixels (outside the labelled mask) of a positive sample, before
    # balancing; < 1 treats them as the weak negatives they are (other objects are unlabelled)
    unlabelled_weight: float = 0.3
    # plain BCE for this many steps before the noisy-label losses switch on: both papers apply
    # them to a pre-trained network (COCO DeepMask; passive pre-training), and on a random
    # network the robust-set refinement and bootstrapping act on meaningless predictions
    noisy_loss_warmup_steps: int = 0
    # start the backbone from another task's checkpoint: a version directory (<root>/<task>/vNNNNN) or a
    # task directory (its newest valid version), e.g. region-consistency pre-training on the robot's
    # registered views; its BackboneConfig must equal model.backbone_config() (tasks/backbone_transfer.py).
    # "" = random weights. The heads always start from random weights.
    pretrained_backbone: str = ""
    # how that backbone is fine-tuned (learning rate relative to the heads, frozen steps, stages transferred);
    # ignored from random weights (tasks/backbone_transfer.py)
    fine_tune: FineTuneConfig = field(default_factory=FineTuneConfig)

    def __post_init__(self) -> None:
        if self.mask_loss not in ("bce", "robust_set", "soft_iou"):
            raise ValueError(f"mask_loss must be 'bce', 'robust_set' or 'soft_iou', got {self.mask_loss!r}")
        if self.objectness_loss not in ("bce", "bootstrap"):
            raise ValueError(f"objectness_loss must be 'bce' or 'bootstrap', got {self.objectness_loss!r}")
        if self.queries_per_sample < 1:
            raise ValueError("queries_per_sample must be >= 1")
        if self.point_radius < 0:
            raise ValueError(f"point_radius must be >= 0, got {self.point_radius}")
        if not 0.0 <= self.small_loss_forget_rate < 1.0:
            raise ValueError(f"small_loss_forget_rate must be in [0, 1), got {self.small_loss_forget_rate}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        return d


def _check_batch(batch: dict) -> None:
    for key in ("rgb", "mask", "action_pixel", "is_negative"):
        if key not in batch:
            raise ValueError(f"batch lacks {key!r}")
    rgb, mask = batch["rgb"], batch["mask"]
    if rgb.dim() != 4 or rgb.shape[1] != 3:
        raise ValueError(f"batch['rgb'] must be (B, 3, H, W), got {tuple(rgb.shape)}")
    b, _, h, w = rgb.shape
    if b == 0:
        raise ValueError("empty batch")
    if mask.shape != (b, h, w):
        raise ValueError(f"batch['mask'] {tuple(mask.shape)} does not match rgb {tuple(rgb.shape)}")
    if batch["action_pixel"].shape != (b, 2) or batch["is_negative"].shape != (b,):
        raise ValueError("batch['action_pixel'] must be (B, 2) and batch['is_negative'] (B,)")
    if "valid" in batch and batch["valid"].shape != (b, h, w):
        raise ValueError(f"batch['valid'] {tuple(batch['valid'].shape)} does not match rgb")
    if "is_point" in batch and batch["is_point"].shape != (b,):
        raise ValueError(f"batch['is_point'] must be (B,), got {tuple(batch['is_point'].shape)}")


class InstanceSegmentationTask:
    """TrainingTask for :class:`InstanceSegNet` (or a :class:`CoTeachingPair` with ``co_teaching``)."""

    name = "instance_segmentation"

    def __init__(self, config: InstanceTaskConfig = InstanceTaskConfig()) -> None:
        self.config = config
        self._coteach = CoTeachingLoss(forget_rate=config.forget_rate, ramp_steps=config.forget_ramp_steps)
        self._soft_iou = SoftIoUHingeLoss(iou_threshold=config.robust_iou_threshold, reduction="none")
        self._initialization: dict = dict(RANDOM_INIT)

    def build_model(self) -> nn.Module:
        """A fresh network; its backbone from ``config.pretrained_backbone`` when set (BackboneMismatchError,
        a ValueError, when that backbone was built for another config)."""
        model = build_instance_model(self.model_config())
        self._initialization = initialize_backbone(model, self.config.pretrained_backbone,
                                                   self.config.fine_tune.transfer_stages)
        return model

    def param_groups(self, model: nn.Module) -> list[dict] | None:
        """Optimizer groups (``Trainer``): backbone and heads with ``config.fine_tune``'s learning-rate scale
        and frozen steps when the backbone is pre-trained; None (one group) from random weights."""
        if not self.config.pretrained_backbone:
            return None
        return fine_tune_param_groups(model, self.config.fine_tune)

    def initialization(self) -> dict:
        """Where the weights of the last built model came from (``meta.json`` ``initialization``)."""
        return dict(self._initialization)

    def model_config(self) -> dict:
        return {"model": self.config.model.to_dict(), "co_teaching": self.config.co_teaching}

    # ------------------------------------------------------------------ loss
    def compute_loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        _check_batch(batch)
        c = self.config
        rgb = batch["rgb"]
        b, _, h, w = rgb.shape
        depth = batch.get("depth")
        queries = self._sample_queries(batch)  # (B, Q, 2)
        if c.co_teaching:
            if not isinstance(model, CoTeachingPair):
                raise TypeError("co_teaching=True needs a CoTeachingPair model (build_model())")
            loss_a, m_a = self._per_sample_loss(model.net_a, rgb, depth, batch, queries)
            loss_b, _ = self._per_sample_loss(model.net_b, rgb, depth, batch, queries)
            loss, info = self._coteach(loss_a=loss_a, loss_b=loss_b, step=int(batch.get("step", 0)))
            m_a.update(info)
            return loss, m_a
        net = model.net_a if isinstance(model, CoTeachingPair) else model
        per_sample, metrics = self._per_sample_loss(net, rgb, depth, batch, queries)
        if c.small_loss_forget_rate > 0:
            rate = forget_rate_schedule(int(batch.get("step", 0)), forget_rate=c.small_loss_forget_rate,
                                        ramp_steps=c.forget_ramp_steps)
            loss, picks = small_loss_mean(per_sample, rate)
            metrics.update(forget_rate=float(rate), kept=float(picks.numel()))
            return loss, metrics
        return per_sample.mean(), metrics

    def _noisy_losses_on(self, batch: dict) -> bool:
        return int(batch.get("step", 0)) >= self.config.noisy_loss_warmup_steps

    def _sample_queries(self, batch: dict) -> torch.Tensor:
        """(B, Q, 2) query pixels (u, v): the action pixel snapped into the mask, then random mask pixels."""
        mask, ap, neg = batch["mask"].bool(), batch["action_pixel"].float(), batch["is_negative"].bool()
        q = self.config.queries_per_sample
        out = ap[:, None, :].repeat(1, q, 1).clone()
        for i in range(mask.shape[0]):
            if neg[i]:
                continue
            vs, us = torch.nonzero(mask[i], as_tuple=True)
            if len(vs) == 0:
                continue
            d2 = (us.float() - ap[i, 0]) ** 2 + (vs.float() - ap[i, 1]) ** 2
            j = int(torch.argmin(d2))
            out[i, 0, 0], out[i, 0, 1] = us[j].float(), vs[j].float()
            if q > 1:
                r = torch.randint(0, len(vs), (q - 1,), device=mask.device)
                out[i, 1:, 0], out[i, 1:, 1] = us[r].float(), vs[r].float()
        return out

    def _per_sample_loss(
        self, net: InstanceSegNet, rgb: torch.Tensor, depth: torch.Tensor | None, batch: dict, queries: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        noisy_on = self._noisy_losses_on(batch)
        b, _, h, w = rgb.shape
        out = net(rgb, depth)
        obj = out["objectness"][:, 0]  # (B, h4, w4)
        h4, w4 = obj.shape[-2:]
        mask4 = F.interpolate(batch["mask"].float()[:, None], size=(h4, w4), mode="area")[:, 0] > 0.5  # (B, h4, w4)
        valid = batch.get("valid")
        valid4 = (
            torch.ones_like(mask4, dtype=torch.float32)
            if valid is None
            else (F.interpolate(valid.float()[:, None], size=(h4, w4), mode="area")[:, 0] > 0.5).float()
        )
        neg = batch["is_negative"].bool()
        point = batch["is_point"].bool() & ~neg if "is_point" in batch else torch.zeros_like(neg)  # (B,)
        labelled = neg | point | mask4.flatten(1).any(1)  # positives whose mask vanished at stride 4 carry no signal
        # known background: disk around a negative's action pixel
        ys = (torch.arange(h4, device=obj.device, dtype=torch.float32) + 0.5) * (h / h4) - 0.5
        xs = (torch.arange(w4, device=obj.device, dtype=torch.float32) + 0.5) * (w / w4) - 0.5
        ap = batch["action_pixel"].float()
        d2 = (xs[None, None, :] - ap[:, 0, None, None]) ** 2 + (ys[None, :, None] - ap[:, 1, None, None]) ** 2
        known_bg = (d2 <= c.negative_radius**2) & neg[:, None, None]  # (B, h4, w4)
        # known object: the cells around a point label's action pixel (at least the nearest one)
        reach2 = d2.flatten(1).min(1).values.clamp_min(c.point_radius**2)  # (B,)
        known_fg = (d2 <= reach2[:, None, None]) & point[:, None, None]  # (B, h4, w4)
        target = (mask4 & ~neg[:, None, None] & ~point[:, None, None]) | known_fg
        pos_px = target & (valid4 > 0)  # (B, h4, w4)
        unl_w = torch.where(neg[:, None, None], torch.ones_like(valid4), torch.full_like(valid4, c.unlabelled_weight))
        unl_w = torch.where(point[:, None, None], torch.zeros_like(unl_w), unl_w)  # a point label says nothing else
        base_w = valid4 * torch.where(target, torch.ones_like(valid4), unl_w)
        base_w = base_w * (1.0 + c.negative_weight * known_bg.float()) * labelled[:, None, None].float()
        if c.balance_objectness:
            n_pos = pos_px.flatten(1).sum(1).float()  # (B,)
            rest = (base_w * (~pos_px).float()).flatten(1).sum(1)  # (B,)
            scale = torch.where(n_pos > 0, rest / n_pos.clamp_min(1.0), torch.ones_like(rest)).clamp_min(1.0)
            base_w = torch.where(pos_px, base_w * scale[:, None, None], base_w)

        # -- objectness
        if c.objectness_loss == "bootstrap" and noisy_on:
            t, bw = hard_bootstrap_targets(
                obj, target.float(), beta=c.bootstrap_beta, ignore_confident_foreground=c.ignore_confident_foreground
            )
            bw = torch.maximum(bw, known_bg.float())
            loss_obj = weighted_bce(obj, t, bw * base_w, "none")  # (B,)
        else:
            loss_obj = weighted_bce(obj, target.float(), base_w, "none")

        # -- point-conditioned mask (positives only)
        pos = ~neg & ~point & labelled
        loss_mask = torch.zeros(b, device=obj.device)
        metrics: dict[str, float] = {}
        if pos.any():
            q = queries.shape[1]
            logits = net.mask_logits(out["embedding"][pos], queries[pos], (h, w))  # (P, Q, h4, w4)
            p = logits.shape[0]
            flat = logits.reshape(p * q, h4, w4)
            tgt = mask4[pos][:, None].expand(p, q, h4, w4).reshape(p * q, h4, w4)
            vw = valid4[pos][:, None].expand(p, q, h4, w4).reshape(p * q, h4, w4)
            if c.mask_loss == "robust_set" and noisy_on:
                refined, iters, _ = robust_set_refine(
                    flat, tgt, step=c.robust_step, iou_threshold=c.robust_iou_threshold, max_iterations=c.robust_max_iterations
                )
                per_q = weighted_bce(flat, refined.float(), vw, "none")
                metrics["robust_iterations"] = float(iters.float().mean())
            elif c.mask_loss == "soft_iou" and noisy_on:
                per_q = weighted_bce(flat, tgt.float(), vw, "none") + self._soft_iou(logits=flat, targets=tgt)
            else:
                per_q = weighted_bce(flat, tgt.float(), vw, "none")
            loss_mask = loss_mask.index_put((torch.nonzero(pos)[:, 0],), per_q.reshape(p, q).mean(1))
            with torch.no_grad():
                metrics["mask_iou"] = float(binary_iou(logits[:, 0] > 0, mask4[pos]).mean())
        per_sample = c.objectness_weight * loss_obj + c.mask_weight * loss_mask
        with torch.no_grad():
            metrics["loss_objectness"] = float(loss_obj.mean())
            metrics["loss_mask"] = float(loss_mask[pos].mean()) if pos.any() else 0.0
        return per_sample, metrics


# --------------------------------------------------------------------------- collate


def _as_item(item) -> dict:
    if isinstance(item, dict):
        return item
    rgb, mask, action_pixel, is_negative = item[:4]
    return {"rgb": rgb, "mask": mask, "action_pixel": action_pixel, "is_negative": is_negative}


def collate_samples(
    items: Sequence,
    *,
    crop_size: tuple[int, int] | None = None,
    hflip_prob: float = 0.5,
    vflip_prob: float = 0.0,
    rng: np.random.Generator | None = None,
    color_jitter: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Stack labelled samples into a training batch, with random flips and crops.

    Args:
        items: each a dict {'rgb' (H,W,3) uint8, 'mask' (H,W) bool, 'action_pixel' (u,v),
            'is_negative' bool[, 'depth' (H,W) float32][, 'is_point' bool]} or a tuple (rgb, mask,
            action_pixel, is_negative).
        crop_size: (h, w) of a random crop that keeps the action pixel inside; images smaller
            than it are padded (``valid`` False there). None: all images must share one size.
        hflip_prob / vflip_prob: probability of a horizontal / vertical flip (u -> W-1-u / v -> H-1-v).
        color_jitter: strength s of a photometric jitter per image (:func:`jitter_colors`: exposure,
            contrast and white balance as a camera changes them); 0 = off.
    Returns:
        the batch dict documented in the module docstring.
    """
    if len(items) == 0:
        raise ValueError("collate_samples: no items")
    rng = rng if rng is not None else np.random.default_rng()
    items = [_as_item(it) for it in items]
    if crop_size is None:
        shapes = {it["rgb"].shape[:2] for it in items}
        if len(shapes) != 1:
            raise ValueError(f"images differ in size {sorted(shapes)}; pass crop_size")
        crop_size = next(iter(shapes))
    ch, cw = crop_size
    has_depth = all("depth" in it and it["depth"] is not None for it in items)
    rgbs, masks, valids, aps, negs, depths = [], [], [], [], [], []
    has_points = any("is_point" in it for it in items)
    for it in items:
        rgb, mask = np.asarray(it["rgb"]), np.asarray(it["mask"]).astype(bool)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or rgb.size == 0:
            raise ValueError(f"rgb must be non-empty (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
        if mask.shape != rgb.shape[:2]:
            raise ValueError(f"mask {mask.shape} does not match rgb {rgb.shape[:2]}")
        h, w = mask.shape
        u, v = (float(x) for x in it["action_pixel"])
        if not (np.isfinite(u) and np.isfinite(v)):
            raise ValueError(f"action_pixel must be finite, got {(u, v)}")
        depth = np.asarray(it["depth"], dtype=np.float32) if has_depth else None
        if depth is not None and depth.shape != (h, w):
            raise ValueError(f"depth {depth.shape} does not match rgb {rgb.shape[:2]}")
        if color_jitter > 0:
            rgb = jitter_colors(rgb, color_jitter, rng)
        if rng.random() < hflip_prob:
            rgb, mask, u = rgb[:, ::-1], mask[:, ::-1], (w - 1) - u
            depth = depth[:, ::-1] if depth is not None else None
        if rng.random() < vflip_prob:
            rgb, mask, v = rgb[::-1], mask[::-1], (h - 1) - v
            depth = depth[::-1] if depth is not None else None
        # crop window [y0, y0+ch) x [x0, x0+cw) in image coordinates (may extend past the image)
        x0 = _crop_start(w, cw, u, rng)
        y0 = _crop_start(h, ch, v, rng)
        out_rgb = np.zeros((ch, cw, 3), np.uint8)
        out_mask = np.zeros((ch, cw), bool)
        out_valid = np.zeros((ch, cw), bool)
        out_depth = np.full((ch, cw), np.nan, np.float32)
        sx0, sy0 = max(0, x0), max(0, y0)
        sx1, sy1 = min(w, x0 + cw), min(h, y0 + ch)
        dx0, dy0 = sx0 - x0, sy0 - y0
        out_rgb[dy0 : dy0 + sy1 - sy0, dx0 : dx0 + sx1 - sx0] = rgb[sy0:sy1, sx0:sx1]
        out_mask[dy0 : dy0 + sy1 - sy0, dx0 : dx0 + sx1 - sx0] = mask[sy0:sy1, sx0:sx1]
        out_valid[dy0 : dy0 + sy1 - sy0, dx0 : dx0 + sx1 - sx0] = True
        if depth is not None:
            out_depth[dy0 : dy0 + sy1 - sy0, dx0 : dx0 + sx1 - sx0] = depth[sy0:sy1, sx0:sx1]
            depths.append(out_depth)
        rgbs.append(out_rgb)
        masks.append(out_mask)
        valids.append(out_valid)
        aps.append((u - x0, v - y0))
        negs.append(bool(it["is_negative"]))
    batch = {
        "rgb": torch.from_numpy(np.stack(rgbs)).permute(0, 3, 1, 2).contiguous(),
        "mask": torch.from_numpy(np.stack(masks)),
        "valid": torch.from_numpy(np.stack(valids)),
        "action_pixel": torch.tensor(aps, dtype=torch.float32),
        "is_negative": torch.tensor(negs, dtype=torch.bool),
    }
    if has_depth:
        batch["depth"] = torch.from_numpy(np.stack(depths))
    if has_points:
        batch["is_point"] = torch.tensor([bool(it.get("is_point", False)) for it in items], dtype=torch.bool)
    return batch


def jitter_colors(rgb: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8 with a random exposure, contrast and white balance, as a camera changes them.

    out = clip((g_c * x - m) * k + m),  x in [0, 255], gain g_c = e * w_c per channel with exposure
    e ~ U(1 - s, 1 + s) and white balance w_c ~ U(1 - s/2, 1 + s/2), contrast k ~ U(1 - s, 1 + s)
    about the image mean m of g_c * x. Masks and geometry are unchanged. s = 0 returns the image.
    """
    if not 0.0 <= strength < 1.0:
        raise ValueError(f"color jitter strength must be in [0, 1), got {strength}")
    if strength == 0:
        return rgb
    gain = rng.uniform(1 - strength, 1 + strength) * rng.uniform(1 - strength / 2, 1 + strength / 2, 3)
    x = rgb.astype(np.float32) * gain.astype(np.float32)  # (H, W, 3)
    m = x.mean()
    x = (x - m) * np.float32(rng.uniform(1 - strength, 1 + strength)) + m
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def _crop_start(size: int, crop: int, centre: float, rng: np.random.Generator) -> int:
    """Start of a length-``crop`` window that contains pixel ``centre`` (and the image if it is smaller)."""
    if crop >= size:
        return -int(rng.integers(0, crop - size + 1))
    c = int(round(min(max(centre, 0), size - 1)))
    lo, hi = max(0, c - crop + 1), min(size - crop, c)
    return int(rng.integers(lo, hi + 1))


# --------------------------------------------------------------------------- synthetic data (tests, benches)


def synthetic_items(
    n: int,
    *,
    height: int = 64,
    width: int = 80,
    objects: tuple[int, int] = (2, 4),
    negative_fraction: float = 0.2,
    label_noise: float = 0.1,
    seed: int = 0,
) -> list[dict]:
    """Toy tabletop images for tests and benchmarks (not a substitute for the simulator).

    Each: textured grey background, 2-4 coloured rectangles/ellipses; one labelled object
    per image (the "pushed" one) with a noisy mask (random dilation/erosion and
    ``label_noise`` fraction of flipped pixels near the object), or a negative (action pixel on
    background, empty mask). Items carry 'gt_instances' (H, W) uint16 for evaluation.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    out = []
    for _ in range(n):
        rgb = (rng.normal(110, 8, (height, width, 1)) + np.array([0, 5, 10])).clip(0, 255)
        inst = np.zeros((height, width), np.uint16)
        k = int(rng.integers(objects[0], objects[1] + 1))
        for i in range(1, k + 1):
            for _attempt in range(20):
                rh, rw = rng.integers(height // 8, height // 4 + 1), rng.integers(width // 8, width // 4 + 1)
                cy, cx = rng.integers(rh, height - rh), rng.integers(rw, width - rw)
                if rng.random() < 0.5:
                    m = (np.abs(yy - cy) <= rh) & (np.abs(xx - cx) <= rw)
                else:
                    m = ((yy - cy) / rh) ** 2 + ((xx - cx) / rw) ** 2 <= 1.0
                if not (inst[m] > 0).any():
                    break
            inst[m] = i
            rgb[m] = rng.uniform(0, 255, 3) + rng.normal(0, 6, (int(m.sum()), 3))
        rgb = rgb.clip(0, 255).astype(np.uint8)
        present = [i for i in range(1, k + 1) if (inst == i).any()]
        if rng.random() < negative_fraction or not present:
            bg_v, bg_u = np.nonzero(inst == 0)
            j = int(rng.integers(len(bg_v)))
            out.append(
                {"rgb": rgb, "mask": np.zeros((height, width), bool), "action_pixel": (float(bg_u[j]), float(bg_v[j])),
                 "is_negative": True, "gt_instances": inst}
            )
            continue
        target = int(rng.choice(present))
        obj = inst == target
        vs, us = np.nonzero(obj)
        j = int(rng.integers(len(vs)))
        noisy = obj.copy()
        shift = int(rng.integers(-2, 3))
        noisy = np.roll(noisy, shift, axis=int(rng.integers(2)))
        ring = (np.abs(yy - vs.mean()) <= (np.ptp(vs) + 6)) & (np.abs(xx - us.mean()) <= (np.ptp(us) + 6))
        flip = ring & (rng.random((height, width)) < label_noise)
        noisy ^= flip
        out.append(
            {"rgb": rgb, "mask": noisy, "action_pixel": (float(us[j]), float(vs[j])), "is_negative": False,
             "gt_instances": inst}
        )
    return out
