"""DeepLabV3+-style semantic segmentation network with a pixel-embedding projection head.

Architecture (:class:`SemanticSegNet`, RegConsist Fig. 2 uses DeepLabV3+ with ResNet-50; here the
shared small :class:`Backbone`, random init)::

    rgb (B,3,H,W) in [0,255] -> normalize_image -> Backbone (output stride 8, dilated last stage)
      last stage (B, w3, H/8, W/8) -> ASPP: 1x1, 3x3 at rates r1..rk, image pooling -> 1x1 -> (B, A, H/8, W/8)
      stride-4 stage (B, w1, H/4, W/4) -> 1x1 -> (B, L, H/4, W/4)            (low-level skip)
      concat(upsample(ASPP), skip) -> 2 x [3x3 conv, BN, ReLU] -> F (B, Cd, H/4, W/4)   "features"
      F -> 1x1 classifier -> bilinear upsample -> logits (B, num_classes, H, W)

Pre-training takes F -- the output before the final layer, as in the paper -- at sampled pixels with
nearest-neighbour lookup (equivalent to the paper's nearest resize of the feature map to the input
resolution, without materialising it) and passes it through a small MLP projector (Linear-BN-ReLU-
Linear, as the Barlow Twins reference; ``projector_dim = 0`` disables it and uses F directly, as the
paper's text). The projector is not used for segmentation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from selfsup_perception.core.learning.models.backbone import Backbone, BackboneConfig, normalize_image


@dataclass(frozen=True)
class SemanticSegConfig:
    num_classes: int = 8
    widths: tuple[int, ...] = (16, 32, 48, 64)  # backbone: stem (/2), stage1 (/4), stage2 (/8), stage3 (/8 dilated)
    aspp_channels: int = 64
    aspp_rates: tuple[int, ...] = (2, 4, 6)  # scaled down from DeepLab's (6, 12, 18) at /16 for small inputs
    low_level_channels: int = 24
    decoder_channels: int = 64
    projector_hidden: int = 128
    projector_dim: int = 64  # embedding size for the pair loss; 0 = no projector

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError("num_classes must be >= 1")
        if len(self.widths) < 3:
            raise ValueError("widths needs at least 3 entries (stem, stride-4 stage, last stage)")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"], d["aspp_rates"] = list(self.widths), list(self.aspp_rates)
        return d

    def backbone_config(self) -> BackboneConfig:
        """The backbone this network builds (what :attr:`InstanceSegConfig.widths` must match to reuse it)."""
        return BackboneConfig(in_channels=3, widths=self.widths, output_stride=8, dilate_last=True)

    @classmethod
    def from_dict(cls, d: dict) -> "SemanticSegConfig":
        d = dict(d)
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown SemanticSegConfig keys: {sorted(unknown)}")
        for key in ("widths", "aspp_rates"):
            if key in d:
                d[key] = tuple(int(v) for v in d[key])
        return cls(**d)


def _conv_bn_relu(cin: int, cout: int, k: int = 3, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, 1, pad, dilation=dilation, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabV3): parallel 1x1, dilated 3x3 and image-pooling branches."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, ...]):
        super().__init__()
        self.branches = nn.ModuleList([_conv_bn_relu(cin, cout, 1)] + [_conv_bn_relu(cin, cout, 3, r) for r in rates])
        # No BN on the pooled branch: it sees one value per image (BN would fail with batch size 1).
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1), nn.ReLU(inplace=True))
        self.project = _conv_bn_relu(cout * (len(rates) + 2), cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches]
        outs.append(self.pool(x).expand(-1, -1, x.shape[2], x.shape[3]))
        return self.project(torch.cat(outs, dim=1))


class SemanticSegNet(nn.Module):
    def __init__(self, config: SemanticSegConfig = SemanticSegConfig()):
        super().__init__()
        self.config = config
        w = config.widths
        self.backbone = Backbone(config.backbone_config())
        self.aspp = ASPP(w[-1], config.aspp_channels, config.aspp_rates)
        self.low_level = _conv_bn_relu(w[1], config.low_level_channels, 1)
        self.decoder = nn.Sequential(
            _conv_bn_relu(config.aspp_channels + config.low_level_channels, config.decoder_channels),
            _conv_bn_relu(config.decoder_channels, config.decoder_channels),
        )
        self.classifier = nn.Conv2d(config.decoder_channels, config.num_classes, 1)
        if config.projector_dim > 0:
            self.projector: nn.Module = nn.Sequential(
                nn.Linear(config.decoder_channels, config.projector_hidden, bias=False),
                nn.BatchNorm1d(config.projector_hidden),
                nn.ReLU(inplace=True),
                nn.Linear(config.projector_hidden, config.projector_dim),
            )
        else:
            self.projector = nn.Identity()

    def features(self, rgb: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8/float in [0, 255] -> decoder features (B, Cd, ceil(H/4), ceil(W/4))."""
        if rgb.dim() != 4 or rgb.shape[1] != 3:
            raise ValueError(f"rgb must be (B, 3, H, W), got {tuple(rgb.shape)}")
        if rgb.shape[2] < 16 or rgb.shape[3] < 16:
            raise ValueError(f"image too small for a stride-8 network: {tuple(rgb.shape[2:])}")
        feats = self.backbone(normalize_image(rgb))
        low = self.low_level(feats[1])  # (B, L, H/4, W/4)
        high = self.aspp(feats[-1])  # (B, A, H/8, W/8)
        high = F.interpolate(high, size=low.shape[2:], mode="bilinear", align_corners=False)
        return self.decoder(torch.cat([high, low], dim=1))  # (B, Cd, H/4, W/4)

    def classify(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Decoder features -> logits (B, num_classes, H, W) at ``size`` (bilinear)."""
        return F.interpolate(self.classifier(features), size=size, mode="bilinear", align_corners=False)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes, H, W)."""
        return self.classify(self.features(rgb), tuple(rgb.shape[2:]))

    def project(self, pixel_features: torch.Tensor) -> torch.Tensor:
        """(N, Cd) sampled features -> (N, projector_dim) embeddings for the pair loss."""
        return self.projector(pixel_features)


def sample_pixel_features(features: torch.Tensor, pixels: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Features at input pixels by nearest-neighbour lookup: (B, C, h, w), (B, N, 2) (u, v) -> (B*N, C).

    Same as ``F.interpolate(features, size=image_size, mode='nearest')[b, :, v, u]``: source index
    ``floor(dst * in / out)``.
    """
    b, c, h, w = features.shape
    height, width = image_size
    if pixels.dim() != 3 or pixels.shape[0] != b or pixels.shape[2] != 2:
        raise ValueError(f"pixels must be (B={b}, N, 2), got {tuple(pixels.shape)}")
    u, v = pixels[..., 0].long(), pixels[..., 1].long()
    if (u < 0).any() or (u >= width).any() or (v < 0).any() or (v >= height).any():
        raise ValueError(f"pixels outside the {width}x{height} image")
    fu = torch.div(u * w, width, rounding_mode="floor")
    fv = torch.div(v * h, height, rounding_mode="floor")
    flat = features.flatten(2)  # (B, C, h*w)
    idx = (fv * w + fu).unsqueeze(1).expand(-1, c, -1)  # (B, C, N)
    return flat.gather(2, idx).permute(0, 2, 1).reshape(-1, c)  # (B*N, C)


@torch.no_grad()
def predict(model: torch.nn.Module, rgb: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """(B, 3, H, W) -> (B, H, W) long argmax classes (model in eval mode)."""
    was_training = model.training
    model.eval()
    out = [model(rgb[i:i + batch_size].float()).argmax(1) for i in range(0, rgb.shape[0], batch_size)]
    model.train(was_training)
    return torch.cat(out)


def semantic_model_from_config(model_config: dict) -> SemanticSegNet:
    """Rebuild the network from its checkpoint ``model_config`` (:meth:`SemanticSegConfig.to_dict`)."""
    return SemanticSegNet(SemanticSegConfig.from_dict(model_config))
