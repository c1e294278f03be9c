"""Class-agnostic, point-conditioned instance segmentation that learns from one noisy mask per image.

Architecture (:class:`InstanceSegNet`)::

    rgb (B,3,H,W) [+ depth]  ->  Backbone (stride 8)  ->  FPN-style fuse of strides 8 and 4
        -> F (B, C, H/4, W/4)
        -> objectness head: o (B, 1, H/4, W/4)   logit of "this pixel is on a movable object"
        -> embedding head:  e (B, D, H/4, W/4)   L2-normalised per pixel

Point-conditioned mask for a query pixel q (the object containing q)::

    m_q(x) = s * <e(x), e(q)> + b - g * ||x - q||^2 / diag^2

with learned scale s > 0, bias b and locality weight g >= 0 (softplus). A query costs one
D-dimensional dot product per stride-4 pixel, so proposals from many points stay cheap on a
CPU (the DeepMask-style alternative, a conv head per query, costs a full conv stack per point).

This replaces DeepMask's patch score/mask networks (Eitel et al. fine-tune DeepMask): the
objectness map plays the role of DeepMask's score head ("the centre pixel is on an object"),
the point-conditioned mask the role of its mask head. No COCO pre-training is available here:
the network starts from random weights, or its backbone starts from one pre-trained
self-supervised on the robot's registered views (``InstanceTaskConfig.pretrained_backbone``,
``models/backbone.py``, ``tasks/backbone_transfer.py``).

Inference (:func:`predict_instances`): query points are local maxima of the objectness map,
visited in decreasing objectness (optionally greedy cover: a point already inside an accepted
mask is skipped; off by default); each gives a mask, score = objectness(q) * mean mask probability inside the mask;
masks are filtered by area and suppressed by mask-IoU NMS (0.4, as ``aeitel/self_deepmask``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from selfsup_perception.core.learning.models.backbone import Backbone, BackboneConfig, normalize_image


@dataclass(frozen=True)
class InstanceSegConfig:
    widths: tuple[int, ...] = (16, 32, 48, 64)  # backbone widths (stem, stage1 stride 4, stage2 stride 8, stage3)
    decoder_channels: int = 32
    embedding_dim: int = 16
    output_stride: int = 4  # 4, or 2 (adds the stem's stride-2 features: finer masks of small objects)
    use_depth: bool = False  # 4th input channel: depth in metres, (d - 1.0) / 0.5, NaN -> 0 (off by default)
    init_scale: float = 10.0  # initial s
    init_bias: float = -5.0  # initial b (so <e(x), e(q)> > 0.5 means "same object" at start)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    def backbone_config(self) -> BackboneConfig:
        """The backbone this network builds: a pre-trained backbone must have exactly this config."""
        return BackboneConfig(in_channels=4 if self.use_depth else 3, widths=self.widths, output_stride=8)

    @classmethod
    def from_dict(cls, d: dict) -> "InstanceSegConfig":
        d = dict(d)
        if "widths" in d:
            d["widths"] = tuple(int(w) for w in d["widths"])
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown InstanceSegConfig keys: {sorted(unknown)}")
        return cls(**d)


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def prepare_input(rgb: torch.Tensor, depth: torch.Tensor | None, use_depth: bool) -> torch.Tensor:
    """(B,3,H,W) uint8/float rgb [+ (B,H,W) float depth metres, NaN invalid] -> network input."""
    if rgb.dim() != 4 or rgb.shape[1] != 3:
        raise ValueError(f"rgb must be (B, 3, H, W), got {tuple(rgb.shape)}")
    if rgb.shape[2] < 8 or rgb.shape[3] < 8:
        raise ValueError(f"image too small for a stride-8 network: {tuple(rgb.shape[2:])}")
    x = normalize_image(rgb)
    if not use_depth:
        return x
    if depth is None:
        raise ValueError("this model was built with use_depth=True; pass depth")
    if depth.shape != (rgb.shape[0], rgb.shape[2], rgb.shape[3]):
        raise ValueError(f"depth {tuple(depth.shape)} does not match rgb {tuple(rgb.shape)}")
    d = torch.nan_to_num((depth.float() - 1.0) / 0.5, nan=0.0, posinf=0.0, neginf=0.0)
    return torch.cat([x, d[:, None]], dim=1)


class InstanceSegNet(nn.Module):
    """See module docstring. ``forward`` returns {'objectness': (B,1,H/4,W/4), 'embedding': (B,D,H/4,W/4)}."""

    def __init__(self, config: InstanceSegConfig = InstanceSegConfig()) -> None:
        super().__init__()
        if len(config.widths) < 3:
            raise ValueError("widths needs at least 3 entries (stride 2, 4, 8)")
        self.config = config
        self.backbone = Backbone(config.backbone_config())
        c = config.decoder_channels
        self.lateral8 = nn.Conv2d(config.widths[-1], c, 1)
        self.lateral4 = nn.Conv2d(config.widths[1], c, 1)
        self.fuse = _conv_bn_relu(c, c)
        self.objectness_head = nn.Conv2d(c, 1, 1)
        self.embedding_head = nn.Conv2d(c, config.embedding_dim, 1)
        self.mask_scale = nn.Parameter(torch.tensor(math.log(config.init_scale)))  # s = exp(.)
        self.mask_bias = nn.Parameter(torch.tensor(float(config.init_bias)))
        self.locality = nn.Parameter(torch.tensor(0.0))  # g = softplus(.)
        if config.output_stride not in (2, 4):
            raise ValueError(f"output_stride must be 2 or 4, got {config.output_stride}")
        if config.output_stride == 2:
            self.lateral2 = nn.Conv2d(config.widths[0], c, 1)
            self.fuse2 = _conv_bn_relu(c, c)
        nn.init.constant_(self.objectness_head.bias, -2.0)  # start mostly "background"

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x = prepare_input(rgb, depth, self.config.use_depth)
        feats = self.backbone(x)
        f4, f8 = feats[1], feats[-1]  # (B, w1, H/4, W/4), (B, w_last, H/8, W/8)
        top = F.interpolate(self.lateral8(f8), size=f4.shape[-2:], mode="bilinear", align_corners=False)
        f = self.fuse(top + self.lateral4(f4))  # (B, C, H/4, W/4)
        if self.config.output_stride == 2:
            f2 = feats[0]  # (B, w0, H/2, W/2)
            up = F.interpolate(f, size=f2.shape[-2:], mode="bilinear", align_corners=False)
            f = self.fuse2(up + self.lateral2(f2))  # (B, C, H/2, W/2)
        emb = F.normalize(self.embedding_head(f), dim=1)  # (B, D, H/4, W/4)
        return {"objectness": self.objectness_head(f), "embedding": emb}

    def mask_logits(
        self, embedding: torch.Tensor, queries: torch.Tensor, image_size: tuple[int, int]
    ) -> torch.Tensor:
        """Mask logits at stride 4 for query pixels.

        Args:
            embedding: (B, D, h, w) from ``forward``.
            queries: (B, Q, 2) query pixels (u, v) in full-image coordinates.
            image_size: (H, W) of the input image.
        Returns:
            (B, Q, h, w) logits m_q(x) (see module docstring).
        """
        b, d, h, w = embedding.shape
        if queries.dim() != 3 or queries.shape[0] != b or queries.shape[2] != 2:
            raise ValueError(f"queries must be (B={b}, Q, 2), got {tuple(queries.shape)}")
        big_h, big_w = image_size
        q = queries.to(embedding.dtype)
        # pixel centre (u, v) -> grid_sample coordinates in [-1, 1] (align_corners=False)
        grid = torch.stack([(2 * q[..., 0] + 1) / big_w - 1, (2 * q[..., 1] + 1) / big_h - 1], dim=-1)
        eq = F.grid_sample(embedding, grid[:, :, None, :], mode="bilinear", align_corners=False)  # (B, D, Q, 1)
        eq = F.normalize(eq[..., 0].transpose(1, 2), dim=-1)  # (B, Q, D)
        sim = torch.einsum("bqd,bdhw->bqhw", eq, embedding)  # (B, Q, h, w)
        # stride-4 pixel centres in full-image coordinates
        ys = (torch.arange(h, dtype=q.dtype, device=q.device) + 0.5) * (big_h / h) - 0.5
        xs = (torch.arange(w, dtype=q.dtype, device=q.device) + 0.5) * (big_w / w) - 0.5
        diag2 = float(big_h**2 + big_w**2)
        dist2 = (xs[None, None, None, :] - q[..., 0, None, None]) ** 2 + (ys[None, None, :, None] - q[..., 1, None, None]) ** 2
        return self.mask_scale.exp() * sim + self.mask_bias - F.softplus(self.locality) * dist2 / diag2

    @classmethod
    def from_config(cls, model_config: dict) -> "InstanceSegNet":
        return cls(InstanceSegConfig.from_dict(model_config))


class CoTeachingPair(nn.Module):
    """Two independently initialised networks for co-teaching; inference uses ``net_a``."""

    def __init__(self, config: InstanceSegConfig = InstanceSegConfig()) -> None:
        super().__init__()
        self.config = config
        self.net_a = InstanceSegNet(config)
        self.net_b = InstanceSegNet(config)

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.net_a(rgb, depth)


def inference_net(model: nn.Module) -> InstanceSegNet:
    """The network that serves predictions (``net_a`` of a co-teaching pair)."""
    if isinstance(model, CoTeachingPair):
        return model.net_a
    if isinstance(model, InstanceSegNet):
        return model
    raise TypeError(f"expected InstanceSegNet or CoTeachingPair, got {type(model).__name__}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- inference


@dataclass
class Instance:
    """One predicted object: ``mask`` (H, W) bool, ``score`` in [0, 1], ``box`` (x0, y0, x1, y1) inclusive pixels."""

    mask: np.ndarray
    score: float
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class InferenceConfig:
    score_threshold: float = 0.3  # keep instances scoring at least this
    max_instances: int = 20
    peak_threshold: float = 0.3  # objectness probability for a query point
    peak_window: int = 3  # local-maximum window in output cells (odd); 5 merged adjacent small objects
    max_queries: int = 64
    mask_threshold: float = 0.5  # mask probability
    nms_iou: float = 0.4  # as aeitel/self_deepmask
    min_area: int = 30  # pixels at full resolution
    max_area_fraction: float = 0.25  # drop masks larger than this fraction of the image (reference: 0.1 at 640x480)
    # skip a query point already inside an accepted mask; False: a mask from every peak, then NMS
    # (an accepted mask that spills onto a neighbour no longer hides the neighbour's peak)
    greedy_cover: bool = False


def mask_iou_matrix(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> (N, N) IoU."""
    flat = masks.reshape(masks.shape[0], -1).astype(np.float32)
    inter = flat @ flat.T
    area = flat.sum(1)
    union = area[:, None] + area[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def mask_nms(masks: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy NMS by mask IoU; returns kept indices in decreasing score."""
    order = np.argsort(-scores, kind="stable")
    if len(order) == 0:
        return []
    iou = mask_iou_matrix(masks)
    keep: list[int] = []
    for i in order:
        if all(iou[i, j] <= iou_threshold for j in keep):
            keep.append(int(i))
    return keep


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


@torch.no_grad()
def predict_instances(
    model: nn.Module,
    rgb: np.ndarray,
    depth: np.ndarray | None = None,
    score_threshold: float | None = None,
    max_instances: int | None = None,
    config: InferenceConfig = InferenceConfig(),
) -> list[Instance]:
    """Instances in one image, highest score first.

    Args:
        model: an :class:`InstanceSegNet` or :class:`CoTeachingPair` (``net_a`` is used).
        rgb: (H, W, 3) uint8.
        depth: (H, W) float32 metres (NaN invalid); required only if the model uses depth.
        score_threshold, max_instances: override ``config`` when given.
    """
    net = inference_net(model)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError("rgb image is empty")
    if depth is not None and depth.shape != rgb.shape[:2]:
        raise ValueError(f"depth {depth.shape} does not match rgb {rgb.shape[:2]}")
    score_threshold = config.score_threshold if score_threshold is None else score_threshold
    max_instances = config.max_instances if max_instances is None else max_instances
    was_training = net.training
    net.eval()
    try:
        device = next(net.parameters()).device
        h, w = rgb.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].to(device)
        dt = None if depth is None else torch.from_numpy(depth.astype(np.float32))[None].to(device)
        out = net(x, dt)
        obj = torch.sigmoid(out["objectness"][0, 0])  # (h4, w4)
        h4, w4 = obj.shape
        k = config.peak_window
        peaks = (obj == F.max_pool2d(obj[None, None], k, 1, k // 2)[0, 0]) & (obj >= config.peak_threshold)
        ys, xs = torch.nonzero(peaks, as_tuple=True)
        if len(ys) == 0:
            return []
        vals = obj[ys, xs]
        order = torch.argsort(vals, descending=True)[: config.max_queries]
        ys, xs, vals = ys[order], xs[order], vals[order]
        # stride-4 cell centre -> full-image pixel
        qu = (xs.to(torch.float32) + 0.5) * (w / w4) - 0.5
        qv = (ys.to(torch.float32) + 0.5) * (h / h4) - 0.5
        queries = torch.stack([qu, qv], dim=-1)[None]  # (1, Q, 2)
        probs = torch.sigmoid(net.mask_logits(out["embedding"], queries, (h, w)))[0]  # (Q, h4, w4)
        binm = probs > config.mask_threshold
        # greedy cover at stride 4
        covered = torch.zeros((h4, w4), dtype=torch.bool, device=device)
        chosen: list[int] = []
        for i in range(len(ys)):
            if (config.greedy_cover and covered[ys[i], xs[i]]) or not binm[i].any():
                continue
            chosen.append(i)
            covered |= binm[i]
        if not chosen:
            return []
        sel = torch.tensor(chosen, device=device)
        full = F.interpolate(probs[sel][None], size=(h, w), mode="bilinear", align_corners=False)[0]  # (K, H, W)
        masks = (full > config.mask_threshold).cpu().numpy()
        mean_prob = [
            float(full[j][masks[j]].mean()) if masks[j].any() else 0.0 for j in range(len(chosen))
        ]
        scores = vals[sel].cpu().numpy() * np.asarray(mean_prob, dtype=np.float32)
        area = masks.reshape(len(chosen), -1).sum(1)
        ok = (area >= config.min_area) & (area <= config.max_area_fraction * h * w) & (scores >= score_threshold)
        idx = np.nonzero(ok)[0]
        if len(idx) == 0:
            return []
        keep = mask_nms(masks[idx], scores[idx], config.nms_iou)[:max_instances]
        return [Instance(mask=masks[idx[j]], score=float(scores[idx[j]]), box=_box(masks[idx[j]])) for j in keep]
    finally:
        net.train(was_training)


def build_instance_model(model_config: dict) -> nn.Module:
    """Model from ``InstanceSegmentationTask.model_config()`` ({'model': {...}, 'co_teaching': bool})."""
    if "model" not in model_config:
        raise ValueError("instance model_config needs a 'model' entry")
    cfg = InstanceSegConfig.from_dict(model_config["model"])
    return CoTeachingPair(cfg) if model_config.get("co_teaching", False) else InstanceSegNet(cfg)
