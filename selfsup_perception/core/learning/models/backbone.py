"""A small residual encoder with a configurable output stride, and moving its weights between networks.

Shared by the instance-segmentation, semantic-segmentation and descriptor
networks. No pretrained weights are downloaded anywhere in this stack; the
networks are sized to train on a 2-core CPU. A backbone trained by one task
(region-consistency or descriptor pre-training on the robot's own registered
views) can start another (the instance network): :func:`backbone_weights` takes
its config and weights out of a model, :func:`load_backbone_weights` puts them
into another model's :class:`Backbone`. The two must have been built from the
*same* :class:`BackboneConfig` (input channels, widths, output stride,
dilation); anything else is refused with :class:`BackboneMismatchError` naming
the fields that differ -- a partial or shape-coerced copy is never made.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Mapping

import torch
from torch import nn


@dataclass(frozen=True)
class BackboneConfig:
    in_channels: int = 3
    widths: tuple[int, ...] = (32, 64, 96, 128)  # channels after the stem and each stage
    output_stride: int = 8  # 4, 8 or 16
    dilate_last: bool = True  # keep resolution in the last stage with dilation (DeepLab style)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "BackboneConfig":
        d = dict(d)
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown BackboneConfig keys: {sorted(unknown)}")
        if "widths" in d:
            d["widths"] = tuple(int(w) for w in d["widths"])
        return cls(**d)


class ResidualBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.skip = (
            nn.Identity()
            if stride == 1 and in_ch == out_ch
            else nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + self.skip(x))


class Backbone(nn.Module):
    """Encoder returning a list of feature maps, one per stage (strides 2, 4, 8, ... capped at output_stride)."""

    def __init__(self, config: BackboneConfig = BackboneConfig()):
        super().__init__()
        if config.output_stride not in (4, 8, 16):
            raise ValueError(f"output_stride must be 4, 8 or 16, got {config.output_stride}")
        self.config = config
        w = config.widths
        self.stem = nn.Sequential(
            nn.Conv2d(config.in_channels, w[0], 3, 2, 1, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU(inplace=True)
        )
        stages = []
        stride, dilation = 2, 1
        for i in range(1, len(w)):
            if stride < config.output_stride:
                s, stride = 2, stride * 2
            else:
                s = 1
                if config.dilate_last:
                    dilation *= 2
            stages.append(nn.Sequential(ResidualBlock(w[i - 1], w[i], s, 1), ResidualBlock(w[i], w[i], 1, dilation)))
        self.stages = nn.ModuleList(stages)
        self.out_channels = list(w)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(x)]  # (B, w0, H/2, W/2)
        for stage in self.stages:
            feats.append(stage(feats[-1]))
        return feats


class BackboneMismatchError(ValueError):
    """Backbone weights made for one :class:`BackboneConfig` offered to a backbone built from another."""


def config_differences(a: BackboneConfig, b: BackboneConfig) -> list[str]:
    """``['widths: (16, 32) vs (32, 64)', ...]``, one entry per field in which ``a`` and ``b`` differ."""
    return [f"{f.name}: {getattr(a, f.name)!r} vs {getattr(b, f.name)!r}" for f in fields(BackboneConfig)
            if getattr(a, f.name) != getattr(b, f.name)]


def backbones(model: nn.Module) -> list[Backbone]:
    """Every :class:`Backbone` inside ``model``, in module order (a co-teaching pair has two: net_a's first)."""
    return [m for m in model.modules() if isinstance(m, Backbone)]


def backbone_weights(model: nn.Module) -> tuple[BackboneConfig, dict[str, torch.Tensor]]:
    """(config, detached CPU copy of the state dict) of the first :class:`Backbone` in ``model``.

    The state dict holds the convolution weights and the BatchNorm statistics; its keys are
    relative to the backbone (``stem.0.weight``, ``stages.0.0.conv1.weight``, ...).
    """
    found = backbones(model)
    if not found:
        raise ValueError(f"{type(model).__name__} has no Backbone")
    bb = found[0]
    return bb.config, {k: v.detach().cpu().clone() for k, v in bb.state_dict().items()}


def load_backbone_weights(model: nn.Module, config: BackboneConfig, state: Mapping[str, torch.Tensor],
                          source: str = "the given weights") -> int:
    """Copy a backbone's weights (from :func:`backbone_weights`) into every :class:`Backbone` of ``model``.

    ``config`` is the :class:`BackboneConfig` the weights were made for; it must equal the target's,
    else :class:`BackboneMismatchError` lists the differing fields and nothing is changed. The copy
    is strict (every key, every shape). Returns the number of backbones loaded (2 for a
    co-teaching pair: both networks start from the same features, their heads differ).
    """
    targets = backbones(model)
    if not targets:
        raise BackboneMismatchError(f"cannot load the backbone of {source}: {type(model).__name__} has no Backbone")
    for bb in targets:
        diff = config_differences(config, bb.config)
        if diff:
            raise BackboneMismatchError(
                f"cannot load the backbone of {source} into this {type(model).__name__}: it was made for "
                f"{config}, this model's backbone is {bb.config} (differs in {'; '.join(diff)}); "
                f"pre-train with the same backbone settings")
    own = targets[0].state_dict()
    missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    reshaped = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
                if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or reshaped:  # checked before anything is copied: a refusal changes nothing
        raise BackboneMismatchError(
            f"the backbone weights of {source} do not fit {config}: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, other shapes {reshaped[:5]}")
    for bb in targets:
        bb.load_state_dict(dict(state), strict=True)
    return len(targets)


def share_backbone(source: nn.Module, target: nn.Module) -> int:
    """Make every :class:`Backbone` of ``target`` the *same module* as the first backbone of ``source``.

    For training several heads on one backbone (``training/multitask.py``): a step of either
    model updates the shared weights. Same config check as :func:`load_backbone_weights`
    (:class:`BackboneMismatchError`, nothing changed). Returns the number of backbones replaced.
    Build optimizers after sharing: one made before still holds the replaced parameters.
    """
    found = backbones(source)
    if not found:
        raise BackboneMismatchError(f"{type(source).__name__} has no Backbone to share")
    shared = found[0]
    slots = [(parent, name) for parent in target.modules() for name, child in parent.named_children()
             if isinstance(child, Backbone)]
    if not slots:
        raise BackboneMismatchError(f"{type(target).__name__} has no Backbone to replace")
    for parent, name in slots:
        diff = config_differences(shared.config, getattr(parent, name).config)
        if diff:
            raise BackboneMismatchError(f"cannot share the backbone of {type(source).__name__} with "
                                        f"{type(target).__name__}: differs in {'; '.join(diff)}")
    for parent, name in slots:
        setattr(parent, name, shared)
    return len(slots)


IMAGE_MEAN = 0.45  # of RGB / 255, every channel
IMAGE_STD = 0.25


def normalize_image(rgb_uint8: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 or float in [0, 255] -> float normalised to about zero mean, unit variance."""
    x = rgb_uint8.float() / 255.0
    return (x - IMAGE_MEAN) / IMAGE_STD
