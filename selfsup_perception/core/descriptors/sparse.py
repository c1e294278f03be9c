"""Descriptors for robot loops without full-resolution descriptor images (ROS-free).

A descriptor network outputs a low-resolution map (D, h, w) at its output stride; the dense
descriptor image is that map upsampled bilinearly (``align_corners=False``) to the image size
and renormalised (:func:`~.matching.compute_descriptor_image`). The network may run on the image
resized to the size it was trained at (``input_size``, from the checkpoint's metadata, as
segmentation does): the map still covers the whole image, so it is sampled at full-resolution
pixel coordinates either way. Everything here samples the same bilinear interpolation *only
where it is needed*, so the values equal the dense image's at those pixels (up to float
rounding) while memory and time scale with the number of pixels asked for, not with the image:

* :func:`sample_descriptor_map`: descriptors at arbitrary (sub-)pixels;
* :func:`descriptor_grid`: every ``stride``-th pixel (= ``dense[::stride, ::stride]``);
* :func:`pick_keypoints`: well-textured pixels (Shi-Tomasi corners) when the caller has none;
* :func:`match_on_grid`: correspondences by a softmax heatmap over the target's descriptors on a
  strided grid (half a map cell by default; argmax and spread, as
  :func:`~.matching.find_correspondences` does on the dense image), then local refinement
  around each of the ``top_k`` best grid positions: every pixel within one grid step for grid
  steps up to 4; larger windows searched at half their radius, then shrunk around the best
  position until they are that small (16 px grid: 5 x 5, 5 x 5, then 9 x 9 positions). Not guaranteed
  identical to the exhaustive dense search (the dense argmax can lie outside every refined
  window when the map has several near-equal maxima); on a shifted image it finds the shift
  exactly (tests/unit/test_sparse_descriptors.py).
"""

from __future__ import annotations


import cv2
import numpy as np
import torch
import torch.nn.functional as F

from selfsup_perception.core.descriptors.matching import network_input
from selfsup_perception.core.descriptors.spatial_expectation import DEFAULT_TEMPERATURE
from selfsup_perception.core.learning.models.backbone import normalize_image


def compute_descriptor_map(model: torch.nn.Module, rgb: np.ndarray, device: str | torch.device = "cpu",
                           input_size: tuple[int, int] | None = None) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> low-resolution unit-norm descriptor map (D, h, w) float32 on the CPU.

    ``input_size`` = (width, height) the network runs at (:func:`~.matching.network_input`); None:
    the image's own size. The map covers the whole image either way.
    """
    x_rgb = network_input(rgb, input_size)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = normalize_image(torch.from_numpy(x_rgb).permute(2, 0, 1).unsqueeze(0)).to(device)  # (1, 3, h', w')
            desc = F.normalize(model(x), dim=1)  # (1, D, h, w)
    finally:
        model.train(was_training)
    return desc[0].float().cpu().contiguous()


def sample_descriptor_map(desc_map: torch.Tensor, pixels: np.ndarray, image_size: tuple[int, int],
                          image_name: str = "image") -> np.ndarray:
    """Unit-norm descriptors (N, D) float32 at (x, y) ``pixels`` (N, 2) of an image of ``image_size`` = (H, W).

    Equals the dense image (bilinear upsampling with ``align_corners=False``, then renormalisation)
    at integer pixels; pixels outside the image are refused.
    """
    h_img, w_img = image_size
    px = np.asarray(pixels, dtype=np.float64)
    if px.ndim != 2 or px.shape[1] != 2:
        raise ValueError(f"pixels must be (N, 2), got {px.shape}")
    if not np.isfinite(px).all():
        raise ValueError("pixels contain NaN or inf")
    if len(px) and ((px[:, 0] < 0).any() or (px[:, 0] > w_img - 1).any() or (px[:, 1] < 0).any()
                    or (px[:, 1] > h_img - 1).any()):
        raise ValueError(f"pixels must lie inside the {w_img}x{h_img} {image_name}")
    d = desc_map.shape[0]
    if len(px) == 0:
        return np.zeros((0, d), dtype=np.float32)
    g = torch.from_numpy(np.stack([(px[:, 0] + 0.5) / w_img * 2 - 1, (px[:, 1] + 0.5) / h_img * 2 - 1], -1))
    grid = g.to(desc_map.dtype).view(1, 1, -1, 2)  # (1, 1, N, 2)
    with torch.no_grad():
        out = F.grid_sample(desc_map.unsqueeze(0), grid, mode="bilinear", padding_mode="border",
                            align_corners=False)  # (1, D, 1, N)
        out = F.normalize(out[0, :, 0].T.contiguous(), dim=1)  # (N, D)
    return out.numpy().astype(np.float32)


def descriptor_grid(desc_map: torch.Tensor, image_size: tuple[int, int], stride: int) -> np.ndarray:
    """Descriptors (ceil(H/stride), ceil(W/stride), D) at pixels (x, y) = (j * stride, i * stride)."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    h_img, w_img = image_size
    ys, xs = np.mgrid[0:h_img:stride, 0:w_img:stride]
    px = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    return sample_descriptor_map(desc_map, px, image_size).reshape(xs.shape[0], xs.shape[1], -1)


def pick_keypoints(rgb: np.ndarray, max_keypoints: int, min_distance: float = 8.0) -> np.ndarray:
    """(N, 2) float (x, y) Shi-Tomasi corners of ``rgb``, strongest first, N <= max_keypoints (maybe 0)."""
    if max_keypoints < 1:
        raise ValueError("max_keypoints must be >= 1")
    gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    corners = cv2.goodFeaturesToTrack(gray, maxCorners=int(max_keypoints), qualityLevel=0.01,
                                      minDistance=float(min_distance), blockSize=5)
    if corners is None:
        return np.zeros((0, 2))
    return corners.reshape(-1, 2).astype(np.float64)


def match_on_grid(ref_map: torch.Tensor, ref_size: tuple[int, int], tgt_map: torch.Tensor,
                  tgt_size: tuple[int, int], pixels_ref: np.ndarray, *, coarse_stride: int = 0,
                  temperature: float = DEFAULT_TEMPERATURE, top_k: int = 5,
                  chunk_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Matches (N, 2) float64 (x, y) in the target and confidences (N,) in (0, 1] of ``pixels_ref`` (N, 2).

    Coarse: heatmap ``softmax(-||q - d||^2 / tau)`` over the target's descriptors at every
    ``coarse_stride``-th pixel (0 = half the map's cell size, at least 1): its argmax candidates and
    its spread (in target pixels, ``confidence = 1 / (1 + std)`` as in
    :func:`~.matching.find_correspondences`). Fine: the best-scoring pixel within ``coarse_stride``
    of each of the ``top_k`` best coarse positions (searched in levels when ``coarse_stride`` > 4,
    see the module docstring).
    """
    if top_k < 1:
        raise ValueError("top_k must be >= 1")
    if ref_map.shape[0] != tgt_map.shape[0]:
        raise ValueError(f"descriptor dimensions differ: {ref_map.shape[0]} and {tgt_map.shape[0]}")
    queries = sample_descriptor_map(ref_map, pixels_ref, ref_size, "reference image")  # (N, D), validates them
    n = len(queries)
    if n == 0:
        return np.zeros((0, 2)), np.zeros(0)
    d, h, w = tgt_map.shape
    ht, wt = tgt_size
    cell = max(wt / w, ht / h)  # target pixels per map cell
    stride = int(coarse_stride) if coarse_stride > 0 else max(int(cell // 2), 1)
    grid_hwd = torch.from_numpy(descriptor_grid(tgt_map, tgt_size, stride))  # (H/s, W/s, D), unit norm
    gh, gw = grid_hwd.shape[:2]
    grid = grid_hwd.reshape(-1, d).T.contiguous()  # (D, P)
    ys, xs = torch.meshgrid(torch.arange(gh, dtype=torch.float32), torch.arange(gw, dtype=torch.float32),
                            indexing="ij")
    gx, gy = xs.reshape(-1), ys.reshape(-1)  # (P,) grid coordinates
    k = min(top_k, gh * gw)
    out_px = np.zeros((n, 2))
    out_conf = np.zeros(n)
    q_all = torch.from_numpy(queries)
    with torch.no_grad():
        for start in range(0, n, chunk_size):
            q = q_all[start:start + chunk_size]  # (n, D)
            # unit-norm q and d: -||q - d||^2 / tau = (2 q.d - 2) / tau; the constant cancels in the softmax
            logits = (q @ grid) * (2.0 / temperature)  # (n, P)
            p = torch.softmax(logits, dim=-1)
            mx, my = p @ gx, p @ gy
            var = (p @ (gx * gx) - mx * mx) + (p @ (gy * gy) - my * my)  # grid steps^2
            std = torch.sqrt(var.clamp_min(0.0)) * stride  # target pixels
            best = logits.topk(k, dim=-1).indices.numpy()  # (n, k)
            centres = (np.stack([best % gw, best // gw], -1) * stride).astype(np.float64)  # (n, k, 2)
            out_px[start:start + len(q)] = _refine_on_map(tgt_map, tgt_size, q.numpy(), centres, stride)
            out_conf[start:start + len(q)] = (1.0 / (1.0 + std)).double().numpy()
    return out_px, out_conf


def _refine_on_map(tgt_map: torch.Tensor, tgt_size: tuple[int, int], queries: np.ndarray, centres: np.ndarray,
                   radius: int) -> np.ndarray:
    """(n, 2) best-scoring target pixels near ``centres`` (n, k, 2) for unit-norm ``queries`` (n, D).

    Every pixel within +-``radius`` of every centre when ``radius`` <= 4; larger windows are searched
    at half their radius and the best position's window shrunk (radius = that step) until it is.
    """
    ht, wt = tgt_size
    n = len(queries)
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))  # (n, D)
    while True:
        step = 1 if radius <= 4 else radius // 2
        offs = np.arange(-radius, radius + 1, step)
        oy, ox = np.meshgrid(offs, offs, indexing="ij")
        window = np.stack([ox.ravel(), oy.ravel()], 1)  # (M, 2)
        cand = (centres[:, :, None, :] + window[None, None]).reshape(n, -1, 2)  # (n, k * M, 2)
        cand[..., 0] = np.clip(cand[..., 0], 0, wt - 1)
        cand[..., 1] = np.clip(cand[..., 1], 0, ht - 1)
        best = cand[np.arange(n), _scores(tgt_map, tgt_size, cand, q).argmax(1).numpy()]  # (n, 2)
        if step == 1:
            return best
        centres, radius = best[:, None, :], step


def _scores(desc_map: torch.Tensor, image_size: tuple[int, int], pixels: np.ndarray, queries: torch.Tensor
            ) -> torch.Tensor:
    """(n, m) cosine similarity of ``queries`` (n, D) and the map sampled as :func:`sample_descriptor_map` does
    at ``pixels`` (n, m, 2) inside the image (no transposed copy of the samples)."""
    h_img, w_img = image_size
    n, m = pixels.shape[:2]
    g = np.stack([(pixels[..., 0] + 0.5) / w_img * 2 - 1, (pixels[..., 1] + 0.5) / h_img * 2 - 1], -1)
    grid = torch.from_numpy(g.reshape(1, 1, n * m, 2)).to(desc_map.dtype)
    with torch.no_grad():
        samples = F.grid_sample(desc_map.unsqueeze(0), grid, mode="bilinear", padding_mode="border",
                                align_corners=False)[0, :, 0].view(-1, n, m)  # (D, n, m)
        dots = torch.einsum("dnm,nd->nm", samples, queries.to(samples.dtype))
        norms = (samples * samples).sum(0).sqrt()  # (n, m); summing rows, faster than norm(dim=0) here
        return dots / norms.clamp_min(1e-12)
