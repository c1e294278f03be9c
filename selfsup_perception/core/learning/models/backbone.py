"""A small residual encoder with a configurable output stride, trained from random weights.

Shared by the instance-segmentation, semantic-segmentation and descriptor
networks. No pretrained weights are downloaded anywhere in this stack; the
networks are sized to train on a 2-core CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class BackboneConfig:
    in_channels: int = 3
    widths: tuple[int, ...] = (32, 64, 96, 128)  # channels after the stem and each stage
    output_stride: int = 8  # 4, 8 or 16
    dilate_last: bool = True  # keep resolution in the last stage with dilation (DeepLab style)


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


IMAGE_MEAN = 0.45  # of RGB / 255, every channel
IMAGE_STD = 0.25


def normalize_image(rgb_uint8: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 or float in [0, 255] -> float normalised to about zero mean, unit variance."""
    x = rgb_uint8.float() / 255.0
    return (x - IMAGE_MEAN) / IMAGE_STD
