"""Object candidates above the table plane and push / grasp action choice (ROS-free).

Paper 003 (Sec. III-A) samples pushes "horizontally and parallel to the table
plane, which we segment using depth", and requires pushes that "move objects
into free space and keep them within it", avoiding pushing objects into each
other; paper 001 grasps at a hypothesised object pixel and places the object
elsewhere. Neither gives the sampler, so ours is:

* **Candidates**: pixels higher than ``min_object_height`` above the plane (and
  below ``max_object_height``), connected components (8-connectivity) with at
  least ``min_candidate_area_px`` pixels (given at 640x480, scaled by the pixel
  count), each with its world points. Candidates can instead come from a
  segmentation model's masks (:func:`candidates_from_masks`), so the robot tests
  its own belief (paper 001, "active hypothesis testing").
* **Push** (:func:`plan_push`): for each candidate and each of ``num_directions``
  horizontal directions d (random phase), with s = (p - c) . d over the object's
  world points p (centroid c):
  contact = c + min(s) d, start = contact - ``behind_margin`` d,
  end = contact + ``push_distance`` d. Feasible when (a) the object's footprint
  shifted by ``push_distance`` d stays inside the workspace shrunk by
  ``edge_margin`` (stays on the table), (b) no other candidate's point lies in
  the swept corridor (the object's footprint swept from 0 to
  ``push_distance + clearance`` along d, widened by ``clearance``), (c) the
  finger disc of radius ``finger_radius + clearance`` around the start point is
  free, (d) start and end lie within the reach bounds. Score = the smallest
  distance from any other object point to the corridor, capped at
  ``score_distance_cap`` and divided by it (1 = plenty of free space), plus a
  jitter of ``1e-3 * U(0, 1)`` to break ties reproducibly.
* **Grasp** (:func:`plan_grasp`): pick at the world point above the candidate's
  centroid at the top (``top_quantile`` of heights), place at the free spot
  (of ``place_samples`` uniform samples in the workspace) farthest from every
  object point.

All world coordinates: z up, metres. Deterministic given the ``np.random.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

from selfsup_perception.core.geometry.camera import backproject, project, transform_points
from selfsup_perception.core.geometry.table_plane import TablePlane
from selfsup_perception.core.types import RgbdFrame

REFERENCE_PIXELS = 640 * 480  # pixel counts below are given for this resolution and scaled


@dataclass(frozen=True)
class PlannerConfig:
    """Workspace and action parameters (world frame, metres)."""

    workspace_x: tuple[float, float] = (0.35, 0.75)
    workspace_y: tuple[float, float] = (-0.25, 0.25)
    edge_margin: float = 0.02  # pushed object footprint stays this far inside the workspace
    reach_margin: float = 0.08  # start/end may lie this far outside the workspace
    min_object_height: float = 0.01  # above the plane
    max_object_height: float = 0.4
    min_candidate_area_px: int = 150  # at 640x480, scaled by H*W / 640*480
    push_distance: float = 0.06  # how far the finger travels past the object's contact edge
    behind_margin: float = 0.03  # start this far behind the object's back edge
    clearance: float = 0.02  # free space required around the swept object and the finger
    finger_radius: float = 0.012
    contact_height: float = 0.02  # z of the push line above the table
    num_directions: int = 16
    score_distance_cap: float = 0.10
    top_quantile: float = 0.9  # grasp height: this quantile of the candidate's heights
    place_samples: int = 200
    place_clearance: float = 0.03  # required free radius beyond the object's own radius

    def __post_init__(self) -> None:
        if self.workspace_x[0] >= self.workspace_x[1] or self.workspace_y[0] >= self.workspace_y[1]:
            raise ValueError(f"empty workspace {self.workspace_x} x {self.workspace_y}")
        if self.num_directions < 1 or self.push_distance <= 0:
            raise ValueError("num_directions must be >= 1 and push_distance > 0")
        if self.min_object_height >= self.max_object_height:
            raise ValueError("min_object_height must be below max_object_height")


@dataclass
class ObjectCandidate:
    """A hypothesised object: its pixels in the frame and their world points."""

    candidate_id: int
    mask: np.ndarray  # (H, W) bool
    points_world: np.ndarray  # (N, 3) world points of the mask's valid pixels
    centroid_world: np.ndarray  # (3,)
    pixel_centroid: tuple[float, float]  # (u, v)
    top_height: float  # metres above the plane (top_quantile of the heights)
    score: float = 1.0  # 1 for depth candidates; the model's score for mask hypotheses

    @property
    def area(self) -> int:
        return int(self.mask.sum())


@dataclass
class PushAction:
    """A straight horizontal push; ``action_pixel`` is the contact point on the object in the frame."""

    start_point: tuple[float, float, float]
    end_point: tuple[float, float, float]
    action_pixel: tuple[float, float]  # (u, v), snapped onto the candidate's pixels
    start_pixel: tuple[float, float]  # (u, v) of start_point projected (may be off the object)
    candidate_id: int
    score: float
    direction: tuple[float, float]  # unit (dx, dy) in the world


@dataclass
class GraspAction:
    """Top-down pick at ``pick_point`` and release above ``place_point``."""

    pick_point: tuple[float, float, float]
    place_point: tuple[float, float, float]
    action_pixel: tuple[float, float]  # (u, v) of the pick on the object
    candidate_id: int
    score: float


def _scaled_area(area_at_640x480: float, shape: tuple[int, int]) -> float:
    return area_at_640x480 * shape[0] * shape[1] / REFERENCE_PIXELS


def _world_points(frame: RgbdFrame) -> np.ndarray:
    return transform_points(frame.camera_to_world, backproject(frame.depth, frame.intrinsics))


def _make_candidate(cid: int, mask: np.ndarray, world: np.ndarray, height: np.ndarray,
                    config: PlannerConfig, score: float) -> Optional[ObjectCandidate]:
    sel = mask & np.isfinite(height)
    if not sel.any():
        return None
    pts = world[sel]
    vv, uu = np.nonzero(mask)
    return ObjectCandidate(
        candidate_id=cid, mask=mask, points_world=pts, centroid_world=pts.mean(axis=0),
        pixel_centroid=(float(uu.mean()), float(vv.mean())),
        top_height=float(np.quantile(height[sel], config.top_quantile)), score=float(score),
    )


def find_object_candidates(frame: RgbdFrame, plane: TablePlane,
                           config: Optional[PlannerConfig] = None) -> list[ObjectCandidate]:
    """Connected components of pixels between ``min_object_height`` and ``max_object_height`` above ``plane``.

    Components smaller than ``min_candidate_area_px`` (scaled to the image size)
    are dropped, and so are components whose centroid lies outside the workspace
    widened by ``reach_margin`` (the robot's own base, things beyond the table); ids
    are 1..K in order of decreasing area.
    """
    config = config or PlannerConfig()
    frame.validate()
    height = plane.height_image(frame)
    with np.errstate(invalid="ignore"):
        above = (height > config.min_object_height) & (height < config.max_object_height)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(above.astype(np.uint8), connectivity=8)
    min_area = _scaled_area(config.min_candidate_area_px, frame.shape)
    order = [i for i in np.argsort(-stats[1:, cv2.CC_STAT_AREA]) + 1 if stats[i, cv2.CC_STAT_AREA] >= min_area]
    world = _world_points(frame)
    out = []
    for i in order:
        cand = _make_candidate(len(out) + 1, labels == i, world, height, config, 1.0)
        if cand is not None and _inside(cand.centroid_world[:2], config.workspace_x, config.workspace_y,
                                        -config.reach_margin):
            out.append(cand)
    return out


def candidates_from_masks(frame: RgbdFrame, plane: TablePlane, masks: Sequence[np.ndarray],
                          scores: Optional[Sequence[float]] = None,
                          config: Optional[PlannerConfig] = None) -> list[ObjectCandidate]:
    """Candidates from a segmentation model's hypotheses ((H, W) bool masks with scores).

    Pixels of a mask on the table (height <= ``min_object_height``) or with invalid
    depth are ignored for the geometry (the mask itself is kept as given); masks with
    no pixel above the table are dropped. Ids are the masks' indices + 1.
    """
    config = config or PlannerConfig()
    frame.validate()
    if scores is not None and len(scores) != len(masks):
        raise ValueError(f"{len(masks)} masks but {len(scores)} scores")
    height = plane.height_image(frame)
    with np.errstate(invalid="ignore"):
        above = (height > config.min_object_height) & (height < config.max_object_height)
    world = _world_points(frame)
    out = []
    for i, m in enumerate(masks):
        m = np.asarray(m)
        if m.shape != frame.shape:
            raise ValueError(f"mask {i} has shape {m.shape}, the frame is {frame.shape}")
        m = m.astype(bool)
        geom = m & above
        if not geom.any():
            continue
        h = np.where(geom, height, np.nan)
        cand = _make_candidate(i + 1, m, world, h, config, 1.0 if scores is None else scores[i])
        if cand is not None:
            out.append(cand)
    return out


def _pixel_on_candidate(frame: RgbdFrame, cand: ObjectCandidate, point_world: np.ndarray) -> tuple[float, float]:
    """Project a world point and snap it to the nearest pixel of the candidate's mask."""
    pc = transform_points(np.linalg.inv(frame.camera_to_world), np.asarray(point_world, float)[None])
    uv, _ = project(pc, frame.intrinsics)
    u, v = uv[0]
    vv, uu = np.nonzero(cand.mask)
    if not np.isfinite(u):
        u, v = cand.pixel_centroid
    k = int(np.argmin((uu - u) ** 2 + (vv - v) ** 2))
    return float(uu[k]), float(vv[k])


def _project_uv(frame: RgbdFrame, point_world: np.ndarray) -> tuple[float, float]:
    pc = transform_points(np.linalg.inv(frame.camera_to_world), np.asarray(point_world, float)[None])
    uv, _ = project(pc, frame.intrinsics)
    return float(uv[0, 0]), float(uv[0, 1])


def _inside(xy: np.ndarray, x_rng: tuple[float, float], y_rng: tuple[float, float], margin: float) -> bool:
    xy = np.atleast_2d(xy)
    return bool(np.all((xy[:, 0] >= x_rng[0] + margin) & (xy[:, 0] <= x_rng[1] - margin)
                       & (xy[:, 1] >= y_rng[0] + margin) & (xy[:, 1] <= y_rng[1] - margin)))


def evaluate_push(cand: ObjectCandidate, others_xy: np.ndarray, direction: np.ndarray,
                  config: PlannerConfig) -> Optional[tuple[np.ndarray, np.ndarray, np.ndarray, float]]:
    """(start_xy, contact_xy, end_xy, free_distance) of pushing ``cand`` along ``direction``, or None if infeasible.

    ``others_xy`` (M, 2) are the world xy of every other candidate's points.
    """
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    perp = np.array([-d[1], d[0]])
    xy = cand.points_world[:, :2]
    c = cand.centroid_world[:2]
    s = (xy - c) @ d
    t = (xy - c) @ perp
    contact = c + s.min() * d  # on the line through the centroid (limits rotation)
    start = contact - config.behind_margin * d
    end = contact + config.push_distance * d
    # (a) the pushed footprint stays on the table (inside the shrunk workspace).
    if not _inside(xy + config.push_distance * d, config.workspace_x, config.workspace_y, config.edge_margin):
        return None
    # (d) reachable start / end.
    if not _inside(np.stack([start, end]), config.workspace_x, config.workspace_y, -config.reach_margin):
        return None
    free = config.score_distance_cap
    if len(others_xy):
        os_ = (others_xy - c) @ d
        ot = (others_xy - c) @ perp
        # (b) swept corridor: along d from the back edge to the front edge + push + clearance,
        # across d the object's width + clearance on both sides.
        lo_s, hi_s = s.min() - config.behind_margin, s.max() + config.push_distance + config.clearance
        lo_t, hi_t = t.min() - config.clearance, t.max() + config.clearance
        # distance of each other point to the corridor rectangle (0 inside)
        ds = np.maximum(np.maximum(lo_s - os_, os_ - hi_s), 0.0)
        dt = np.maximum(np.maximum(lo_t - ot, ot - hi_t), 0.0)
        dist = np.hypot(ds, dt)
        if np.any(dist <= 0.0):
            return None
        # (c) the finger's descent disc at the start point is free.
        if np.min(np.linalg.norm(others_xy - start, axis=1)) < config.finger_radius + config.clearance:
            return None
        free = min(free, float(dist.min()) + config.clearance)
    return start, contact, end, free


def plan_push(frame: RgbdFrame, candidates: Sequence[ObjectCandidate], rng: np.random.Generator,
              config: Optional[PlannerConfig] = None,
              candidate_id: Optional[int] = None) -> Optional[PushAction]:
    """Best feasible push over all candidates (or only ``candidate_id``) and sampled directions; None if none.

    Directions: ``num_directions`` evenly spaced angles with a random phase from ``rng``.
    """
    config = config or PlannerConfig()
    if not candidates:
        return None
    pool = [c for c in candidates if candidate_id is None or c.candidate_id == candidate_id]
    if not pool:
        raise ValueError(f"no candidate with id {candidate_id}")
    phase = rng.uniform(0.0, 2 * math.pi / config.num_directions)
    angles = phase + 2 * math.pi * np.arange(config.num_directions) / config.num_directions
    best: Optional[PushAction] = None
    for cand in pool:
        others = [o.points_world[:, :2] for o in candidates if o.candidate_id != cand.candidate_id]
        others_xy = np.concatenate(others) if others else np.zeros((0, 2))
        if len(others_xy) > 4000:  # subsample for speed; deterministic
            others_xy = others_xy[rng.choice(len(others_xy), 4000, replace=False)]
        for ang in angles:
            d = np.array([math.cos(ang), math.sin(ang)])
            res = evaluate_push(cand, others_xy, d, config)
            if res is None:
                continue
            start, contact, end, free = res
            score = cand.score * free / config.score_distance_cap + 1e-3 * float(rng.uniform())
            if best is not None and score <= best.score:
                continue
            z = config.contact_height
            contact_z = min(z, max(cand.top_height, 0.0))
            best = PushAction(
                start_point=(float(start[0]), float(start[1]), z),
                end_point=(float(end[0]), float(end[1]), z),
                action_pixel=_pixel_on_candidate(frame, cand, np.array([contact[0], contact[1], contact_z])),
                start_pixel=_project_uv(frame, np.array([start[0], start[1], z])),
                candidate_id=cand.candidate_id, score=float(score), direction=(float(d[0]), float(d[1])),
            )
    return best


def plan_grasp(frame: RgbdFrame, candidates: Sequence[ObjectCandidate], rng: np.random.Generator,
               config: Optional[PlannerConfig] = None,
               candidate_id: Optional[int] = None) -> Optional[GraspAction]:
    """Pick the highest-scoring candidate (or ``candidate_id``) at its top; place at the freest sampled spot.

    Ties between candidate scores are broken by ``rng``. Returns None when no
    placement keeps ``place_clearance`` plus the object's radius from every
    other object point.
    """
    config = config or PlannerConfig()
    if not candidates:
        return None
    pool = [c for c in candidates if candidate_id is None or c.candidate_id == candidate_id]
    if not pool:
        raise ValueError(f"no candidate with id {candidate_id}")
    jitter = rng.uniform(0, 1e-3, size=len(pool))
    cand = pool[int(np.argmax([c.score + j for c, j in zip(pool, jitter)]))]
    c = cand.centroid_world
    radius = float(np.max(np.linalg.norm(cand.points_world[:, :2] - c[:2], axis=1)))
    pick = np.array([c[0], c[1], cand.top_height])
    others = [o.points_world[:, :2] for o in candidates if o.candidate_id != cand.candidate_id]
    others_xy = np.concatenate(others) if others else np.zeros((0, 2))
    m = radius + config.edge_margin
    xs = rng.uniform(config.workspace_x[0] + m, config.workspace_x[1] - m, config.place_samples)
    ys = rng.uniform(config.workspace_y[0] + m, config.workspace_y[1] - m, config.place_samples)
    spots = np.stack([xs, ys], axis=1)
    # The place must not overlap the object's own current footprint either.
    own = cand.points_world[:, :2]
    blockers = np.concatenate([others_xy, own]) if len(others_xy) else own
    dist = np.min(np.linalg.norm(spots[:, None, :] - blockers[None, ::4, :], axis=2), axis=1)
    k = int(np.argmax(dist))
    if dist[k] < radius + config.place_clearance:
        return None
    return GraspAction(
        pick_point=tuple(float(v) for v in pick),
        place_point=(float(spots[k, 0]), float(spots[k, 1]), float(cand.top_height)),
        action_pixel=_pixel_on_candidate(frame, cand, pick),
        candidate_id=cand.candidate_id,
        score=float(cand.score * min(dist[k], config.score_distance_cap) / config.score_distance_cap),
    )
