"""Dense descriptor network: RGB -> L2-normalised D-dimensional descriptor image.

Shared :class:`Backbone` (random init, output stride 8 by default) + a small
head (3x3 conv, ReLU, 1x1 conv to D) and L2 normalisation along D. As in the
cycle-correspondence paper (Sec. IV-C), training uses the low-resolution
(stride-s) descriptor image and serving upsamples it bilinearly to the input
size (then renormalises).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from selfsup_perception.core.learning.models.backbone import Backbone, BackboneConfig


@dataclass(frozen=True)
class DescriptorNetConfig:
    descriptor_dim: int = 64
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head_channels: int = 128

    def __post_init__(self) -> None:
        if self.descriptor_dim < 1 or self.head_channels < 1:
            raise ValueError("descriptor_dim and head_channels must be positive")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["backbone"]["widths"] = list(self.backbone.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DescriptorNetConfig":
        bb = dict(d.get("backbone", {}))
        if "widths" in bb:
            bb["widths"] = tuple(bb["widths"])
        return cls(descriptor_dim=int(d.get("descriptor_dim", 64)), backbone=BackboneConfig(**bb),
                   head_channels=int(d.get("head_channels", 128)))


class DescriptorNet(nn.Module):
    """forward: normalised image (B, 3, H, W) -> descriptors (B, D, H/s, W/s), unit L2 norm along D."""

    def __init__(self, config: DescriptorNetConfig | None = None):
        super().__init__()
        self.config = config or DescriptorNetConfig()
        self.backbone = Backbone(self.config.backbone)
        c = self.backbone.out_channels[-1]
        self.head = nn.Sequential(
            nn.Conv2d(c, self.config.head_channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(self.config.head_channels, self.config.descriptor_dim, 1),
        )

    @property
    def stride(self) -> int:
        return self.config.backbone.output_stride

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(descriptors (B, D, H/s, W/s), backbone stage features) -- the features feed cross-appearance alignment."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"input must be (B, 3, H, W), got {tuple(x.shape)}")
        feats = self.backbone(x)
        desc = F.normalize(self.head(feats[-1]), dim=1)  # (B, D, H/s, W/s)
        return desc, feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]

    def dense(self, x: torch.Tensor) -> torch.Tensor:
        """Descriptors upsampled (bilinear, align_corners=False) to the input size and renormalised: (B, D, H, W)."""
        desc = self.forward(x)
        up = F.interpolate(desc, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return F.normalize(up, dim=1)


def descriptor_model_from_config(config: dict) -> DescriptorNet:
    """Rebuild the network from :meth:`DescriptorTask.model_config` (for inference from a checkpoint)."""
    return DescriptorNet(DescriptorNetConfig.from_dict(config["descriptor_net"]))
