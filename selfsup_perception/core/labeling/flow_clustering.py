"""Clustering of the (table-filtered) flow field into motion segments.

Reference (``aeitel/self_deepmask``, ``mask_generation/create_masks.py``; paper
003 Sec. III-B): colour-code the flow (divided by the largest magnitude), SLIC
superpixels (compactness 30, ~400 segments), region adjacency graph by mean
colour, normalized cut (scikit-image ``graph.rag_mean_color`` +
``graph.cut_normalized``); background blanked before and after.

Where we deviate, for speed (whole labeling <= 50 ms at 640x480 on a CPU core):

* Clustering runs at ``scale`` of the image (default 1/4: 160x120 for 640x480)
  and only on the bounding box of the moving pixels (plus a margin), at a lower
  resolution still when that crop would exceed ``max_cluster_pixels``, with at
  most ``max_segments`` superpixels (bounded time on real images); SLIC gets
  ``mask=moving`` so superpixels never straddle background (the reference blanks
  the background in the image instead). The number of superpixels is the
  reference density, ``slic_segments * crop_area / image_area`` (>= 2), so a
  superpixel covers the same fraction of the scene as in the reference.
* The low-resolution segment labels are brought back to full resolution by
  nearest-neighbour upsampling; full-resolution moving pixels take the label of
  the nearest labelled low-resolution pixel (a distance transform), so the mask
  boundary is the full-resolution moving-pixel boundary.
* The normalized cut is scikit-image's algorithm without networkx (:func:`normalized_cut`: same matrices,
  same ARPACK calls and start vectors, same labels; the graph building was most of the clustering time).
* Segment merging (``merge_flow_px``): the N-cut splits one object whenever a
  cheap cut exists -- at the smoothed flow boundary of a translating object, or
  anywhere across a rotating object, whose pieces then each pass the rotation
  (std) filter. Adjacent segments whose mean flow vectors differ by less than
  max(``merge_flow_px``, ``merge_relative`` * the larger of their mean flow
  magnitudes) are merged (union-find over the segment adjacency), so a
  rigid object is one segment again while touching objects that move
  differently stay apart.
* ``method='components'``: a cheaper alternative that skips SLIC/N-cut and
  uses 8-connected components of the moving pixels (touching objects that move
  differently are then not separated).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np
from scipy import sparse
from scipy.sparse import linalg as sparse_linalg
from skimage import graph
from skimage._shared.compat import SCIPY_GE_1_17_0_DEV0
from skimage.graph import _graph_cut, _ncut_cy
from skimage.segmentation import slic

from selfsup_perception.core.labeling.optical_flow import flow_to_color


@dataclass(frozen=True)
class ClusterConfig:
    """Parameters of :func:`cluster_flow` (reference values where the reference has them)."""

    method: str = "ncut"  # 'ncut' (SLIC + RAG + normalized cut, as the reference) | 'components'
    scale: float = 0.25  # clustering resolution as a fraction of the image size
    slic_segments: int = 400  # reference: ~400 superpixels over the whole image
    slic_compactness: float = 30.0  # reference value
    ncut_threshold: float = 0.001  # scikit-image default (stop splitting above this N-cut value)
    ncut_num_cuts: int = 10  # scikit-image default
    crop_margin: int = 4  # pixels (at the clustering resolution) around the moving bounding box
    seed: int = 0  # for the N-cut eigen-solver start vector
    # Deviation: after the cut, adjacent segments whose mean flow vectors differ by less than this
    # (pixels at 640x480, scaled) are merged (single linkage). None = the reference (no merge).
    merge_flow_px: Optional[float] = 4.0
    merge_relative: float = 0.5  # ... or by less than this fraction of the larger mean flow magnitude
    # Bounds on the work when much of the image moves (real images: up to 2.2 s in the N-cut without them):
    # the crop is clustered at a lower resolution when it would exceed max_cluster_pixels at ``scale``,
    # and SLIC makes at most max_segments superpixels.
    max_cluster_pixels: int = 4800
    max_segments: int = 150

    def __post_init__(self) -> None:
        if self.method not in ("ncut", "components"):
            raise ValueError(f"method must be 'ncut' or 'components', got {self.method!r}")
        if not 0 < self.scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {self.scale}")
        if self.slic_segments < 1 or self.max_segments < 2 or self.max_cluster_pixels < 16:
            raise ValueError("slic_segments must be >= 1, max_segments >= 2 and max_cluster_pixels >= 16")


def _components(moving: np.ndarray) -> np.ndarray:
    _, labels = cv2.connectedComponents(moving.astype(np.uint8), connectivity=8)
    return labels.astype(np.int32)


def _rag_arrays(image: np.ndarray, labels: np.ndarray, sigma: float = 255.0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Region adjacency of ``labels`` (> 0) with scikit-image's mean-colour similarity weights, as arrays.

    Returns (nodes (N,) sorted labels with pixels, pairs (E, 2) sorted label pairs of 8-adjacent regions,
    weights (E,) exp(-|c_a - c_b|^2 / sigma), counts, totals (n, 3) per label).
    """
    n = int(labels.max()) + 1
    flat = labels.ravel()
    cnt = np.bincount(flat, minlength=n).astype(np.float64)
    total = np.stack([np.bincount(flat, weights=image[..., c].ravel().astype(np.float64), minlength=n)
                      for c in range(image.shape[-1])], axis=1)  # (n, 3)
    mean = total / np.maximum(cnt, 1.0)[:, None]
    pairs = np.concatenate([
        np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], 1),
        np.stack([labels[:-1, :].ravel(), labels[1:, :].ravel()], 1),
        np.stack([labels[:-1, :-1].ravel(), labels[1:, 1:].ravel()], 1),
        np.stack([labels[:-1, 1:].ravel(), labels[1:, :-1].ravel()], 1),
    ])
    pairs = pairs[(pairs[:, 0] > 0) & (pairs[:, 1] > 0) & (pairs[:, 0] != pairs[:, 1])]
    pairs = np.unique(np.sort(pairs, axis=1), axis=0)
    d2 = ((mean[pairs[:, 0]] - mean[pairs[:, 1]]) ** 2).sum(axis=1)
    nodes = np.flatnonzero(cnt[1:]) + 1
    return nodes, pairs, np.exp(-d2 / sigma), cnt, total


def rag_mean_color(image: np.ndarray, labels: np.ndarray, sigma: float = 255.0) -> graph.RAG:
    """The region adjacency graph of scikit-image's ``graph.rag_mean_color(image, labels, connectivity=2,
    mode='similarity', sigma)`` without label 0, built with numpy.

    Same nodes ('labels', 'pixel count', 'total color', 'mean color'), 8-neighbour adjacency and edge
    weights exp(-|c_a - c_b|^2 / sigma) of the mean colours; scikit-image loops over pixels in Python.
    (:func:`normalized_cut` works on the arrays directly; this graph is for comparison and inspection.)
    """
    nodes, pairs, weights, cnt, total = _rag_arrays(image, labels, sigma)
    mean = total / np.maximum(cnt, 1.0)[:, None]
    rag = graph.RAG()
    for i in nodes:
        rag.add_node(int(i), **{"labels": [int(i)], "pixel count": int(cnt[i]), "total color": total[i],
                                "mean color": mean[i]})
    rag.add_edges_from((int(a), int(b), {"weight": float(wt)}) for (a, b), wt in zip(pairs, weights))
    return rag


def normalized_cut(labels: np.ndarray, image: np.ndarray, thresh: float, num_cuts: int,
                   rng: np.random.Generator, max_edge: float = 1.0, sigma: float = 255.0) -> np.ndarray:
    """scikit-image's ``graph.cut_normalized(labels, rag_mean_color(image, labels), thresh, num_cuts,
    max_edge, rng=rng)`` without networkx: the same weight matrices (CSC, nodes in label order, self edges of
    ``max_edge``), the same ARPACK calls with the same start vectors in the same (depth-first) order, the
    same cut search -- so the same labels -- at a fraction of the time (networkx graph building and
    subgraph copies were most of the clustering time on real frames). Label 0 takes no part.
    """
    nodes, pairs, weights, _, _ = _rag_arrays(image, labels, sigma)
    m = len(nodes)
    out_map = np.zeros(int(labels.max()) + 1, dtype=labels.dtype)
    if m == 0:
        return out_map[labels]
    pos = np.zeros(int(labels.max()) + 1, dtype=np.int64)
    pos[nodes] = np.arange(m)
    a, b = pos[pairs[:, 0]], pos[pairs[:, 1]]
    diag = np.arange(m)
    # as networkx.to_scipy_sparse_array of the RAG with self edges: symmetric entries, diagonal max_edge
    rows = np.concatenate([a, b, diag])
    cols = np.concatenate([b, a, diag])
    data = np.concatenate([weights, weights, np.full(m, float(max_edge))])
    w_all = sparse.coo_array((data, (rows, cols)), shape=(m, m), dtype=np.float64).tocsc()

    def relabel(idx: np.ndarray) -> None:
        k = len(idx)
        if k > 2:
            w = w_all if k == m else w_all[idx][:, idx].tocsc()
            w.sort_indices()
            entries = w.sum(axis=0)  # D's diagonal
            cols = np.repeat(np.arange(k), np.diff(w.indptr))
            off = w.indices != cols
            diag_w = np.zeros(k)
            diag_w[w.indices[~off]] = w.data[~off]
            # scikit-image's "(D != W).nnz > 0" (a cut exists): a non-zero edge, or a degree other than the self edge
            if (w.data[off] != 0).any() or (entries != diag_w).any():
                d = sparse.dia_array((entries, 0), shape=w.shape).tocsc()
                d2 = np.reciprocal(np.sqrt(entries))
                # D^-1/2 (D - W) D^-1/2 with scikit-image's sparse structure and arithmetic, built directly:
                # entries (d2_i * (D - W)_ij) * d2_j, exact zeros of D - W dropped (as the sparse difference does)
                x = np.where(off, -w.data, entries[cols] - w.data)
                keep = x != 0
                vals_ = (d2[w.indices[keep]] * x[keep]) * d2[cols[keep]]
                indptr = np.concatenate([[0], np.cumsum(np.bincount(cols[keep], minlength=k))])
                mat = sparse.csc_array((vals_, w.indices[keep], indptr), shape=(k, k))
                v0 = rng.random(k)
                rng_kw = {"rng": rng} if SCIPY_GE_1_17_0_DEV0 else {}
                vals, vectors = sparse_linalg.eigsh(mat, which="SM", v0=v0, k=min(100, k - 2), **rng_kw)
                vals, vectors = np.real(vals), np.real(vectors)
                ev = vectors[:, _ncut_cy.argmin2(vals)]
                cut_mask, mcut = _graph_cut.get_min_ncut(ev, d, w, num_cuts)
                if mcut < thresh:
                    relabel(idx[cut_mask])
                    relabel(idx[~cut_mask])
                    return
        out_map[nodes[idx]] = nodes[idx[0]]  # the group takes its smallest label (as scikit-image)

    relabel(np.arange(m))
    return out_map[labels]


def _ncut_labels(color: np.ndarray, moving: np.ndarray, n_segments: int, config: ClusterConfig) -> np.ndarray:
    """SLIC on the moving pixels of a colour-coded flow crop, then RAG + normalized cut; 0 = not moving."""
    sp = slic(color, n_segments=n_segments, compactness=config.slic_compactness, mask=moving,
              start_label=1, channel_axis=-1)
    n_sp = int(sp.max())
    if n_sp <= 1:
        return sp.astype(np.int32)
    # background (label 0, masked out) takes no part in the cut
    cut = normalized_cut(sp, color, config.ncut_threshold, config.ncut_num_cuts, np.random.default_rng(config.seed))
    # Relabel the cut to 1..K on moving pixels, 0 elsewhere.
    _, inv = np.unique(cut[moving], return_inverse=True)
    out = np.zeros(moving.shape, dtype=np.int32)
    out[moving] = inv.reshape(-1) + 1
    return out


def merge_similar_segments(labels: np.ndarray, flow: np.ndarray, max_diff: float,
                           relative: float = 0.0) -> np.ndarray:
    """Merge 4-adjacent segments (labels > 0) whose mean flow vectors m_a, m_b satisfy
    |m_a - m_b| < max(``max_diff``, ``relative`` * max(|m_a|, |m_b|)).

    Single linkage (union-find), so chains of similar neighbours merge; returns labels 1..K'.
    """
    n = int(labels.max())
    if n <= 1:
        return labels
    flat = labels.ravel()
    cnt = np.bincount(flat, minlength=n + 1).astype(np.float64)
    mean = np.stack([np.bincount(flat, weights=flow[..., i].ravel(), minlength=n + 1) for i in range(2)], 1)
    mean /= np.maximum(cnt, 1.0)[:, None]
    pairs = np.concatenate([
        np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], 1),
        np.stack([labels[:-1, :].ravel(), labels[1:, :].ravel()], 1),
    ])
    pairs = pairs[(pairs[:, 0] > 0) & (pairs[:, 1] > 0) & (pairs[:, 0] != pairs[:, 1])]
    pairs = np.unique(np.sort(pairs, axis=1), axis=0)
    parent = np.arange(n + 1)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        limit = max(max_diff, relative * max(np.linalg.norm(mean[a]), np.linalg.norm(mean[b])))
        if np.linalg.norm(mean[a] - mean[b]) < limit:
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(i) for i in range(n + 1)])
    _, relabel = np.unique(roots, return_inverse=True)  # root 0 (background) -> 0
    return relabel[labels].astype(np.int32)


def cluster_flow(flow: np.ndarray, moving: np.ndarray, config: Optional[ClusterConfig] = None,
                 pixel_scale: float = 1.0) -> np.ndarray:
    """Segment labels (H, W) int32 of the moving pixels (0 = static/background, 1..K segments).

    ``flow`` (H, W, 2) in pixels, ``moving`` (H, W) bool: the pixels that may
    belong to a segment (after the table / invalid-depth / magnitude filters).
    Segments are spatially connected at the clustering resolution only through
    the normalized cut's region adjacency; use the label at a pixel, not the count.
    ``pixel_scale`` multiplies ``merge_flow_px`` (the labeler passes sqrt(HW / 640x480)).
    """
    config = config or ClusterConfig()
    flow = np.asarray(flow, dtype=np.float32)
    moving = np.asarray(moving, dtype=bool)
    if flow.ndim != 3 or flow.shape[2] != 2 or flow.shape[:2] != moving.shape:
        raise ValueError(f"flow {flow.shape} must be (H, W, 2) matching moving {moving.shape}")
    h, w = moving.shape
    if not moving.any():
        return np.zeros((h, w), dtype=np.int32)
    if config.method == "components":
        return _components(moving)

    # Low-resolution crop around the moving pixels; the resolution drops below ``scale`` when the crop
    # would have more than ``max_cluster_pixels`` pixels.
    bx, by, bw, bh = cv2.boundingRect(moving.astype(np.uint8))
    sc = min(config.scale, math.sqrt(config.max_cluster_pixels / max(bw * bh, 1)))
    m = int(math.ceil(config.crop_margin / sc))
    x0, y0, x1, y1 = max(bx - m, 0), max(by - m, 0), min(bx + bw + m, w), min(by + bh + m, h)
    cw, ch = x1 - x0, y1 - y0
    sw, sh = max(int(round(cw * sc)), 4), max(int(round(ch * sc)), 4)
    crop_flow = cv2.resize(flow[y0:y1, x0:x1], (sw, sh), interpolation=cv2.INTER_AREA)
    mov_u8 = moving[y0:y1, x0:x1].astype(np.uint8)
    crop_mov = cv2.resize(mov_u8, (sw, sh), interpolation=cv2.INTER_AREA) > 0
    if not crop_mov.any():
        crop_mov = cv2.resize(mov_u8, (sw, sh), interpolation=cv2.INTER_NEAREST) > 0
    if not crop_mov.any():
        return _components(moving)
    mag = np.linalg.norm(crop_flow, axis=2)
    color = flow_to_color(np.where(crop_mov[..., None], crop_flow, 0.0), max_magnitude=float(mag[crop_mov].max()))
    color[~crop_mov] = 0  # background blanked, as the reference
    n_seg = min(config.max_segments, max(2, int(round(config.slic_segments * cw * ch / (w * h)))))
    crop_lab = _ncut_labels(color, crop_mov, n_seg, config)
    if config.merge_flow_px is not None:
        crop_lab = merge_similar_segments(crop_lab, crop_flow, config.merge_flow_px * pixel_scale,
                                          config.merge_relative)

    # Back to full resolution: full-res moving pixels within 2 low-res pixels of a labelled pixel take
    # the nearest label; moving blobs that vanished at low resolution become their own components.
    up = np.zeros((h, w), dtype=np.int32)
    crop_up = cv2.resize(crop_lab, (cw, ch), interpolation=cv2.INTER_NEAREST)  # (ch, cw)
    crop_moving = moving[y0:y1, x0:x1]  # every moving pixel lies inside the crop
    unlabeled = crop_moving & (crop_up == 0)
    if unlabeled.any() and (crop_up != 0).any():
        dist, idx = cv2.distanceTransformWithLabels((crop_up == 0).astype(np.uint8), cv2.DIST_L2, 3,
                                                    labelType=cv2.DIST_LABEL_PIXEL)
        # idx enumerates the zero pixels of the input (= the labelled pixels here): map index -> label
        zy, zx = np.nonzero(crop_up != 0)
        lut = np.zeros(int(idx.max()) + 1, dtype=np.int32)
        lut[idx[zy, zx]] = crop_up[zy, zx]
        near = unlabeled & (dist <= 2.0 / sc)
        crop_up[near] = lut[idx[near]]
    far = crop_moving & (crop_up == 0)
    if far.any():
        comp = _components(far)
        crop_up[far] = comp[far] + crop_up.max()
    up[y0:y1, x0:x1] = crop_up
    up[~moving] = 0
    return up
