"""Serving helpers: descriptor images and correspondences of query pixels (ROS-free).

``find_correspondences`` returns, for each query pixel of the reference image,
the pixel of the target image whose descriptor is nearest (L2) to the query's
descriptor (the inference rule of the cycle-correspondence paper, Sec. III-A),
and a confidence from the spread of the match heatmap
``P = softmax(-||d - D_target||^2 / tau)``:
``confidence = 1 / (1 + std)``, ``std = sqrt(var_x + var_y)`` in target pixels.
A sharp, unique match gives std ~ 0 -> confidence ~ 1; a match spread over many
similar pixels (no correspondence, repeated texture) gives a small confidence.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from selfsup_perception.core.descriptors.spatial_expectation import (
    DEFAULT_TEMPERATURE,
    expectation_and_variance_from_log_probs,
    heatmap_log_probs,
    sample_descriptors,
)
from selfsup_perception.core.learning.device import autocast
from selfsup_perception.core.learning.models.backbone import normalize_image


def validated_rgb(rgb: np.ndarray) -> np.ndarray:
    """``rgb`` as an array, or ValueError unless it is a non-empty (H, W, 3) uint8 image."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"rgb must be a non-empty (H, W, 3) image, got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be uint8, got {rgb.dtype}")
    return rgb


def network_input(rgb: np.ndarray, input_size: tuple[int, int] | None) -> np.ndarray:
    """``rgb`` (validated) resized to ``input_size`` = (width, height) for the network; None: unchanged.

    Area averaging when shrinking, bilinear when enlarging (as the trainer resizes its images).
    Pixel centres map linearly ((x + 0.5) / W is the same point in both images), so a descriptor
    map of the resized image is sampled at full-resolution coordinates with ``align_corners=False``.
    """
    rgb = validated_rgb(rgb)
    if input_size is None:
        return rgb
    iw, ih = (int(v) for v in input_size)
    if iw < 1 or ih < 1:
        raise ValueError(f"input_size must be positive, got {input_size}")
    h, w = rgb.shape[:2]
    if (w, h) == (iw, ih):
        return rgb
    shrink = iw * ih < w * h
    return cv2.resize(rgb, (iw, ih), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def compute_descriptor_image(model: torch.nn.Module, rgb: np.ndarray, device: str | torch.device = "cpu",
                             input_size: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W, D) float32 descriptor image, upsampled to the image size, unit L2 norm.

    ``model`` is a :class:`~selfsup_perception.core.learning.models.descriptor_net.DescriptorNet`
    (anything returning (B, D, h, w) from ``forward``). The network runs on the image resized to
    ``input_size`` = (width, height) (:func:`network_input`; None: the image's own size), in eval
    mode without gradients; its map is upsampled bilinearly (``align_corners=False``) to H x W and
    renormalised.
    """
    rgb = validated_rgb(rgb)
    x_rgb = network_input(rgb, input_size)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast(device):  # float16 on CUDA
            x = normalize_image(torch.from_numpy(x_rgb).permute(2, 0, 1).unsqueeze(0)).to(device)  # (1, 3, h', w')
            low = model(x).float()  # (1, D, h, w)
            desc = F.normalize(F.interpolate(low, size=rgb.shape[:2], mode="bilinear", align_corners=False), dim=1)
    finally:
        model.train(was_training)
    return desc[0].permute(1, 2, 0).contiguous().cpu().numpy()  # (H, W, D)


def find_correspondences(desc_ref: np.ndarray, desc_target: np.ndarray, pixels_ref: np.ndarray, *,
                         temperature: float = DEFAULT_TEMPERATURE, chunk_size: int = 64,
                         coarse_stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Matches of ``pixels_ref`` (N, 2) (x, y) of the reference image in the target image.

    desc_ref (H, W, D), desc_target (H', W', D) float descriptor images. The query descriptor is sampled
    bilinearly at each (sub-pixel) reference pixel. Returns ``pixels_target`` (N, 2) float64 = the nearest
    descriptor's pixel (argmax of the heatmap) and ``confidence`` (N,) float64 in (0, 1] = ``1 / (1 + std)``.

    ``coarse_stride`` s > 1 searches coarse-to-fine: the heatmap (and the spread for the confidence, in
    full-resolution pixels) over every s-th target pixel, then the best descriptor within ±s pixels of
    the coarse match. The networks' descriptors come from a stride-8 grid, so s = 8 loses little while
    scoring s² times fewer pixels; s = 1 is the exhaustive search.
    """
    if coarse_stride < 1:
        raise ValueError(f"coarse_stride must be >= 1, got {coarse_stride}")
    dr, dt = np.asarray(desc_ref), np.asarray(desc_target)
    if dr.ndim != 3 or dt.ndim != 3 or dr.shape[2] != dt.shape[2]:
        raise ValueError(f"descriptor images must be (H, W, D) with equal D; got {dr.shape} and {dt.shape}")
    if min(dr.shape[:2]) == 0 or min(dt.shape[:2]) == 0:
        raise ValueError("empty descriptor image")
    px = np.asarray(pixels_ref, dtype=np.float64)
    if px.ndim != 2 or px.shape[1] != 2:
        raise ValueError(f"pixels_ref must be (N, 2), got {px.shape}")
    if not np.isfinite(px).all():
        raise ValueError("pixels_ref contains NaN or inf")
    h, w = dr.shape[:2]
    if (px[:, 0] < 0).any() or (px[:, 0] > w - 1).any() or (px[:, 1] < 0).any() or (px[:, 1] > h - 1).any():
        raise ValueError(f"pixels_ref must lie inside the {w}x{h} reference image")
    n = len(px)
    if n == 0:
        return np.zeros((0, 2)), np.zeros(0)
    ref = torch.from_numpy(np.ascontiguousarray(dr, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)  # (1, D, H, W)
    full = torch.from_numpy(np.ascontiguousarray(dt, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)  # (1, D, H', W')
    tgt = full[..., ::coarse_stride, ::coarse_stride]  # (1, D, H'/s, W'/s)
    wt = tgt.shape[-1]
    out_px = np.zeros((n, 2))
    out_conf = np.zeros(n)
    with torch.no_grad():
        queries = sample_descriptors(ref, torch.from_numpy(px).float().unsqueeze(0))  # (1, N, D)
        for start in range(0, n, chunk_size):
            q = queries[:, start:start + chunk_size]
            log_p = heatmap_log_probs(q, tgt, temperature)  # (1, n, H', W')
            best = log_p.reshape(1, q.shape[1], -1).argmax(-1)[0]
            _, var = expectation_and_variance_from_log_probs(log_p)
            std = torch.sqrt(var[0].sum(-1)) * coarse_stride  # full-resolution pixels
            out_px[start:start + len(best), 0] = (best % wt).numpy() * coarse_stride
            out_px[start:start + len(best), 1] = (best // wt).numpy() * coarse_stride
            out_conf[start:start + len(best)] = (1.0 / (1.0 + std)).double().numpy()
        if coarse_stride > 1:
            _refine(out_px, queries[0].numpy(), dt, coarse_stride)
    return out_px, out_conf


def _refine(pixels: np.ndarray, queries: np.ndarray, desc_target: np.ndarray, radius: int) -> None:
    """In place: move each match to the best-scoring target pixel within ``radius`` of it."""
    ht, wt = desc_target.shape[:2]
    for i, (x, y) in enumerate(pixels.astype(int)):
        x0, x1 = max(x - radius, 0), min(x + radius + 1, wt)
        y0, y1 = max(y - radius, 0), min(y + radius + 1, ht)
        window = desc_target[y0:y1, x0:x1]  # (h, w, D)
        scores = 2.0 * (window @ queries[i]) - (window * window).sum(-1)  # = |q|^2 - |q - d|^2
        dy, dx = np.unravel_index(int(np.argmax(scores)), scores.shape)
        pixels[i] = (x0 + dx, y0 + dy)
