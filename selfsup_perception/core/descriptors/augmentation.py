"""Image augmentations with a known pixel mapping (torch + OpenCV for the homography fit).

Used by identical-view pre-training and the cycle-correspondence loss
(Adrian et al., Sec. III-C.1: "affine transformations (rotation, scale),
perspective distortion, and color jitter"). Each geometric augmentation is a
3x3 homography ``H`` mapping a source pixel ``p = (x, y, 1)`` to the augmented
image: ``p' ~ H p``. Pixel centres are at integer coordinates. Pixels of the
augmented image whose source falls outside the source image are zero
(black) and reported in ``valid`` masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentationConfig:
    max_rotation_deg: float = 30.0  # uniform in [-max, max] about the image centre
    scale_range: tuple[float, float] = (0.8, 1.25)  # log-uniform
    max_translation_frac: float = 0.08  # of width / height
    perspective: float = 0.08  # corner jitter as a fraction of width / height
    brightness: float = 0.3  # multiplicative factor in [1 - b, 1 + b]
    contrast: float = 0.3  # blend with the mean grey level, factor in [1 - c, 1 + c]
    saturation: float = 0.2  # blend with the grey image, factor in [1 - s, 1 + s]

    def __post_init__(self) -> None:
        if self.scale_range[0] <= 0 or self.scale_range[0] > self.scale_range[1]:
            raise ValueError(f"scale_range must be 0 < lo <= hi, got {self.scale_range}")
        for name in ("max_rotation_deg", "max_translation_frac", "perspective", "brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")


def random_homography(width: int, height: int, rng: np.random.Generator, config: AugmentationConfig) -> np.ndarray:
    """A random rotation/scale/translation about the image centre followed by a perspective jitter, (3, 3) float64."""
    if width < 2 or height < 2:
        raise ValueError(f"image must be at least 2x2, got {width}x{height}")
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    angle = math.radians(rng.uniform(-config.max_rotation_deg, config.max_rotation_deg))
    scale = math.exp(rng.uniform(math.log(config.scale_range[0]), math.log(config.scale_range[1])))
    tx = rng.uniform(-1, 1) * config.max_translation_frac * width
    ty = rng.uniform(-1, 1) * config.max_translation_frac * height
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    affine = np.array([[c, -s, cx - c * cx + s * cy + tx], [s, c, cy - s * cx - c * cy + ty], [0, 0, 1.0]])
    if config.perspective <= 0:
        return affine
    corners = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], dtype=np.float64)
    jitter = rng.uniform(-1, 1, size=(4, 2)) * config.perspective * np.array([width, height])
    persp = cv2.getPerspectiveTransform(corners.astype(np.float32), (corners + jitter).astype(np.float32))
    return persp @ affine


def apply_homography(homography: np.ndarray | torch.Tensor, points: np.ndarray | torch.Tensor):
    """Map points (..., N, 2) through homographies (..., 3, 3); works on numpy arrays and torch tensors."""
    if isinstance(points, torch.Tensor):
        hom = torch.as_tensor(homography, dtype=points.dtype, device=points.device)
        ones = torch.ones_like(points[..., :1])
        q = torch.cat([points, ones], -1) @ hom.transpose(-1, -2)
        return q[..., :2] / q[..., 2:3]
    pts = np.asarray(points, dtype=np.float64)
    hom = np.asarray(homography, dtype=np.float64)
    q = np.concatenate([pts, np.ones_like(pts[..., :1])], -1) @ np.swapaxes(hom, -1, -2)
    return q[..., :2] / q[..., 2:3]


def inside_image(points: torch.Tensor, width: int, height: int, margin: float = 0.0) -> torch.Tensor:
    """Boolean (...,) for points (..., 2) inside [margin, W-1-margin] x [margin, H-1-margin]."""
    x, y = points[..., 0], points[..., 1]
    return (x >= margin) & (x <= width - 1 - margin) & (y >= margin) & (y <= height - 1 - margin) & torch.isfinite(x) & torch.isfinite(y)


def warp_images(images: torch.Tensor, homographies: torch.Tensor) -> torch.Tensor:
    """Warp (B, C, H, W) images by (B, 3, 3) source->target homographies (bilinear, zeros outside).

    Each output pixel q samples the source at ``H^-1 q``.
    """
    if images.dim() != 4 or homographies.shape != (images.shape[0], 3, 3):
        raise ValueError(f"need images (B, C, H, W) and homographies (B, 3, 3); got {tuple(images.shape)}, {tuple(homographies.shape)}")
    b, _, h, w = images.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    grid = torch.stack([xs, ys], -1).reshape(1, h * w, 2).expand(b, -1, -1)  # (B, HW, 2), CPU float64
    inv = torch.linalg.inv(homographies.detach().cpu().to(torch.float64))
    src = apply_homography(inv, grid)  # (B, HW, 2)
    gx = 2.0 * src[..., 0] / (w - 1) - 1.0
    gy = 2.0 * src[..., 1] / (h - 1) - 1.0
    sample = torch.stack([gx, gy], -1).reshape(b, h, w, 2).to(device=images.device, dtype=images.dtype)
    return F.grid_sample(images, sample, mode="bilinear", padding_mode="zeros", align_corners=True)


def color_jitter(images: torch.Tensor, rng: np.random.Generator, config: AugmentationConfig) -> torch.Tensor:
    """Brightness, contrast, saturation jitter of (B, 3, H, W) images in [0, 1], one draw per image; clamped to [0, 1]."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    b = images.shape[0]
    def factors(amount: float) -> torch.Tensor:
        return torch.tensor(rng.uniform(1 - amount, 1 + amount, size=b), dtype=images.dtype,
                            device=images.device).view(b, 1, 1, 1)
    out = images * factors(config.brightness)
    grey = (0.299 * out[:, 0:1] + 0.587 * out[:, 1:2] + 0.114 * out[:, 2:3])  # (B, 1, H, W)
    out = grey.mean(dim=(2, 3), keepdim=True) + factors(config.contrast) * (out - grey.mean(dim=(2, 3), keepdim=True))
    grey = (0.299 * out[:, 0:1] + 0.587 * out[:, 1:2] + 0.114 * out[:, 2:3])
    out = grey + factors(config.saturation) * (out - grey)
    return out.clamp(0.0, 1.0)


def augment_batch(images: torch.Tensor, rng: np.random.Generator, config: AugmentationConfig,
                  geometric: bool = True, photometric: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment (B, 3, H, W) images in [0, 1]; returns (augmented, homographies (B, 3, 3) float64 source->augmented)."""
    b, _, h, w = images.shape
    if geometric:
        homs = torch.from_numpy(np.stack([random_homography(w, h, rng, config) for _ in range(b)]))
        out = warp_images(images, homs)
    else:
        homs = torch.eye(3, dtype=torch.float64).expand(b, 3, 3).clone()
        out = images
    if photometric:
        out = color_jitter(out, rng, config)
    return out, homs
