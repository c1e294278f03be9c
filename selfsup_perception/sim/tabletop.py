"""A simulated tabletop (pybullet, headless): table, Panda arm, RGB-D camera, objects with ground truth.

ROS-free. The ROS adapter is :mod:`selfsup_perception.nodes.sim_world_node`.

World frame: z up, the table top is the plane z = 0, the arm base stands at the
origin on the table edge, the workspace is x in [0.35, 0.75], y in [-0.25, 0.25].

Everything the learner may see comes out of :meth:`TabletopSim.render` as an
:class:`~selfsup_perception.core.types.RgbdFrame`; ground truth (instance and
semantic label images, object poses) comes out of :meth:`TabletopSim.ground_truth`
and is meant for evaluation only.

Determinism: a scene is a pure function of ``(seed, split, clutter)``; physics
in DIRECT mode is deterministic, so the same sequence of calls gives the same
images.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from selfsup_perception.core.types import CameraIntrinsics, RgbdFrame
from selfsup_perception.core.geometry.camera_poses import look_at  # noqa: F401 - re-exported

# Semantic classes of the simulated world (index = class id). 0 is reserved for "unknown".
SEMANTIC_CLASSES: tuple[str, ...] = (
    "unknown",
    "floor",
    "table",
    "robot",
    "box",
    "cylinder",
    "prism",
    "capsule",
)
OBJECT_CATEGORIES: tuple[str, ...] = ("box", "cylinder", "prism", "capsule")

CLUTTER_LEVELS: dict[str, tuple[int, int]] = {"low": (2, 3), "medium": (4, 6), "high": (7, 9)}

WORKSPACE_X = (0.35, 0.75)
WORKSPACE_Y = (-0.25, 0.25)
TABLE_HALF_EXTENTS = (0.55, 0.5, 0.02)  # x, y, z half sizes of the table top
TABLE_CENTER_XY = (0.45, 0.0)
PANDA_EE_LINK = 11
PANDA_ARM_JOINTS = tuple(range(7))
PANDA_FINGER_JOINTS = (9, 10)
# Folded pose that keeps the arm out of the default camera's view.
PANDA_HOME = (0.0, -1.6, 0.0, -2.9, 0.0, 1.6, 0.78)


@dataclass(frozen=True)
class CameraConfig:
    width: int = 640
    height: int = 480
    vertical_fov_deg: float = 45.0
    eye: tuple[float, float, float] = (1.05, 0.0, 0.62)
    target: tuple[float, float, float] = (0.52, 0.0, 0.0)
    near: float = 0.05
    far: float = 4.0
    depth_noise_std: float = 0.0  # metres, Gaussian, applied per pixel when > 0


@dataclass(frozen=True)
class Appearance:
    """Lighting and colours for one rendering of a scene (the layout stays the same)."""

    light_direction: tuple[float, float, float] = (0.4, -0.3, 1.0)
    light_color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    ambient: float = 0.55
    diffuse: float = 0.6
    specular: float = 0.05
    table_rgb: tuple[float, float, float] = (0.78, 0.7, 0.58)
    floor_rgb: tuple[float, float, float] = (0.35, 0.35, 0.38)
    object_hue_shift: float = 0.0  # rotates every object's hue (0..1)


@dataclass(frozen=True)
class SimConfig:
    seed: int = 0
    camera: CameraConfig = field(default_factory=CameraConfig)
    time_step: float = 1.0 / 240.0
    push_speed: float = 0.12  # m/s along the push line
    textured_objects: bool = True
    with_arm: bool = True


@dataclass(frozen=True)
class ObjectModel:
    """A procedurally generated object: category, size, colour, texture."""

    model_id: str
    category: str
    size: tuple[float, float, float]  # bounding box x, y, z in metres
    rgb: tuple[float, float, float]
    texture_seed: int  # < 0: plain colour
    mass: float = 0.15


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


def make_object_set(split: str, count: int = 40, seed: int = 0) -> list[ObjectModel]:
    """Procedural object models; ``train`` and ``test`` are disjoint (different sizes, colours, textures).

    The sets draw from disjoint random streams and disjoint hue bands, so no test
    object equals a training object; they share the semantic categories so that
    semantic segmentation can be evaluated on novel instances.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    rng = np.random.default_rng([seed, 0 if split == "train" else 1, 7919])
    models = []
    for i in range(count):
        category = OBJECT_CATEGORIES[i % len(OBJECT_CATEGORIES)]
        if category == "box":
            size = (rng.uniform(0.04, 0.08), rng.uniform(0.04, 0.08), rng.uniform(0.04, 0.09))
        elif category == "cylinder":
            d = rng.uniform(0.045, 0.075)
            size = (d, d, rng.uniform(0.05, 0.1))
        elif category == "prism":
            d = rng.uniform(0.05, 0.08)
            size = (d, d, rng.uniform(0.04, 0.08))
        else:  # capsule lying on its side: length along x
            r = rng.uniform(0.02, 0.03)
            size = (rng.uniform(0.07, 0.1), 2 * r, 2 * r)
        # Train hues in [0, 0.5) shifted by category, test hues interleaved in the other half-bands.
        band = rng.uniform(0.0, 0.25) + (0.0 if split == "train" else 0.25) + 0.5 * (i % 2)
        rgb = _hsv_to_rgb(band % 1.0, rng.uniform(0.5, 0.95), rng.uniform(0.45, 0.95))
        texture_seed = int(rng.integers(0, 2**31 - 1)) if rng.uniform() < 0.6 else -1
        models.append(
            ObjectModel(f"{split}_{i:03d}_{category}", category, tuple(float(s) for s in size), rgb, texture_seed)
        )
    return models


@dataclass
class SceneObject:
    instance_id: int  # 1..N in ground-truth label images
    body_id: int
    model: ObjectModel


class TabletopSim:
    """Headless pybullet tabletop. Not thread-safe: call from one thread."""

    def __init__(self, config: Optional[SimConfig] = None):
        import pybullet as p  # local: keep the core importable where pybullet is missing
        import pybullet_data

        self.config = config or SimConfig()
        self._p = p
        self._client = p.connect(p.DIRECT)
        p.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=self._client)
        p.setGravity(0, 0, -9.81, physicsClientId=self._client)
        p.setTimeStep(self.config.time_step, physicsClientId=self._client)
        self._texture_dir = tempfile.mkdtemp(prefix="selfsup_sim_textures_")
        self._texture_cache: dict[int, int] = {}
        self.objects: list[SceneObject] = []
        self.appearance = Appearance()
        self.intrinsics = CameraIntrinsics.from_fov(
            self.config.camera.width, self.config.camera.height, self.config.camera.vertical_fov_deg
        )
        self.camera_to_world = look_at(np.array(self.config.camera.eye), np.array(self.config.camera.target))
        self._rng = np.random.default_rng(self.config.seed)
        self._sim_time = 0.0
        self._build_static_world()

    # ------------------------------------------------------------------ world
    def _build_static_world(self) -> None:
        p, c = self._p, self._client
        floor_z = -0.75
        floor_col = p.createCollisionShape(p.GEOM_PLANE, physicsClientId=c)
        floor_vis = p.createVisualShape(p.GEOM_BOX, halfExtents=[5, 5, 0.001], physicsClientId=c)
        self.floor_id = p.createMultiBody(0, floor_col, floor_vis, [0, 0, floor_z], physicsClientId=c)
        hx, hy, hz = TABLE_HALF_EXTENTS
        table_col = p.createCollisionShape(p.GEOM_BOX, halfExtents=[hx, hy, hz], physicsClientId=c)
        table_vis = p.createVisualShape(p.GEOM_BOX, halfExtents=[hx, hy, hz], physicsClientId=c)
        self.table_id = p.createMultiBody(
            0, table_col, table_vis, [TABLE_CENTER_XY[0], TABLE_CENTER_XY[1], -hz], physicsClientId=c
        )
        p.changeDynamics(self.table_id, -1, lateralFriction=0.5, physicsClientId=c)
        leg_vis = p.createVisualShape(p.GEOM_BOX, halfExtents=[0.03, 0.03, (0.75 - 2 * hz) / 2], physicsClientId=c)
        self.leg_ids = []
        for sx in (-1, 1):
            for sy in (-1, 1):
                pos = [TABLE_CENTER_XY[0] + sx * (hx - 0.05), sy * (hy - 0.05), -2 * hz - (0.75 - 2 * hz) / 2]
                self.leg_ids.append(p.createMultiBody(0, -1, leg_vis, pos, physicsClientId=c))
        self.arm_id: Optional[int] = None
        if self.config.with_arm:
            self.arm_id = p.loadURDF(
                "franka_panda/panda.urdf", [-0.05, 0, 0], useFixedBase=True, physicsClientId=c
            )
            self.move_arm_home()
        self.set_appearance(self.appearance)

    def _make_texture(self, seed: int) -> int:
        """A random procedural texture (stripes, checks or blobs), cached by seed."""
        if seed in self._texture_cache:
            return self._texture_cache[seed]
        import cv2

        rng = np.random.default_rng(seed)
        size = 64
        yy, xx = np.mgrid[0:size, 0:size]
        kind = rng.integers(0, 3)
        c1, c2 = rng.integers(40, 255, size=3), rng.integers(40, 255, size=3)
        if kind == 0:
            period = rng.integers(6, 20)
            sel = ((xx * math.cos(rng.uniform(0, math.pi)) + yy * math.sin(rng.uniform(0, math.pi))) // period) % 2
        elif kind == 1:
            period = rng.integers(8, 24)
            sel = ((xx // period) + (yy // period)) % 2
        else:
            noise = rng.uniform(size=(8, 8))
            sel = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC) > 0.5
        img = np.where(sel[..., None].astype(bool), c1, c2).astype(np.uint8)
        path = os.path.join(self._texture_dir, f"tex_{seed}.png")
        cv2.imwrite(path, img[..., ::-1])
        tex = self._p.loadTexture(path, physicsClientId=self._client)
        self._texture_cache[seed] = tex
        return tex

    def _create_object(self, model: ObjectModel, position, yaw: float) -> int:
        p, c = self._p, self._client
        sx, sy, sz = model.size
        if model.category == "box":
            col = p.createCollisionShape(p.GEOM_BOX, halfExtents=[sx / 2, sy / 2, sz / 2], physicsClientId=c)
            vis = p.createVisualShape(p.GEOM_BOX, halfExtents=[sx / 2, sy / 2, sz / 2], physicsClientId=c)
            orn = p.getQuaternionFromEuler([0, 0, yaw])
        elif model.category == "cylinder":
            col = p.createCollisionShape(p.GEOM_CYLINDER, radius=sx / 2, height=sz, physicsClientId=c)
            vis = p.createVisualShape(p.GEOM_CYLINDER, radius=sx / 2, length=sz, physicsClientId=c)
            orn = p.getQuaternionFromEuler([0, 0, yaw])
        elif model.category == "prism":
            n = 3 + (model.texture_seed % 4 if model.texture_seed >= 0 else 3)  # 3..6 sides
            r = sx / 2
            verts = []
            for z in (-sz / 2, sz / 2):
                for k in range(n):
                    a = 2 * math.pi * k / n
                    verts.append([r * math.cos(a), r * math.sin(a), z])
            col = p.createCollisionShape(p.GEOM_MESH, vertices=verts, physicsClientId=c)
            indices = []
            for k in range(n):
                a, b = k, (k + 1) % n
                indices += [a, b, n + b, a, n + b, n + a]
            for k in range(1, n - 1):
                indices += [0, k + 1, k, n, n + k, n + k + 1]
            vis = p.createVisualShape(p.GEOM_MESH, vertices=verts, indices=indices, physicsClientId=c)
            orn = p.getQuaternionFromEuler([0, 0, yaw])
        elif model.category == "capsule":
            r = sy / 2
            length = max(sx - 2 * r, 0.01)
            col = p.createCollisionShape(p.GEOM_CAPSULE, radius=r, height=length, physicsClientId=c)
            vis = p.createVisualShape(p.GEOM_CAPSULE, radius=r, length=length, physicsClientId=c)
            orn = p.getQuaternionFromEuler([0, math.pi / 2, yaw])
        else:
            raise ValueError(f"unknown object category {model.category!r}")
        body = p.createMultiBody(model.mass, col, vis, list(position), orn, physicsClientId=c)
        p.changeDynamics(body, -1, lateralFriction=0.6, rollingFriction=0.002, spinningFriction=0.002,
                         physicsClientId=c)
        return body

    def _apply_object_colour(self, obj: SceneObject) -> None:
        p, c = self._p, self._client
        h_shift = self.appearance.object_hue_shift
        rgb = obj.model.rgb
        if h_shift:
            import colorsys

            h, s, v = colorsys.rgb_to_hsv(*rgb)
            rgb = colorsys.hsv_to_rgb((h + h_shift) % 1.0, s, v)
        kwargs = {}
        if self.config.textured_objects and obj.model.texture_seed >= 0:
            kwargs["textureUniqueId"] = self._make_texture(obj.model.texture_seed + int(h_shift * 1000))
        p.changeVisualShape(obj.body_id, -1, rgbaColor=[*rgb, 1.0], physicsClientId=c, **kwargs)

    def set_appearance(self, appearance: Appearance) -> None:
        """Change lighting and colours without moving anything (pixel-aligned variants)."""
        p, c = self._p, self._client
        self.appearance = appearance
        p.changeVisualShape(self.table_id, -1, rgbaColor=[*appearance.table_rgb, 1], physicsClientId=c)
        for leg in self.leg_ids:
            p.changeVisualShape(leg, -1, rgbaColor=[0.3, 0.25, 0.2, 1], physicsClientId=c)
        p.changeVisualShape(self.floor_id, -1, rgbaColor=[*appearance.floor_rgb, 1], physicsClientId=c)
        for obj in self.objects:
            self._apply_object_colour(obj)

    @staticmethod
    def random_appearance(rng: np.random.Generator) -> Appearance:
        """A random lighting/colour variant (used for cross-appearance learning)."""
        d = rng.normal(size=3)
        d[2] = abs(d[2]) + 0.5
        return Appearance(
            light_direction=tuple(float(v) for v in d / np.linalg.norm(d)),
            light_color=tuple(float(v) for v in rng.uniform(0.6, 1.0, size=3)),
            ambient=float(rng.uniform(0.3, 0.8)),
            diffuse=float(rng.uniform(0.3, 0.8)),
            specular=float(rng.uniform(0.0, 0.3)),
            table_rgb=tuple(float(v) for v in rng.uniform(0.3, 0.9, size=3)),
            floor_rgb=tuple(float(v) for v in rng.uniform(0.1, 0.6, size=3)),
            object_hue_shift=float(rng.uniform(0.0, 1.0)),
        )

    def clear_objects(self) -> None:
        for obj in self.objects:
            self._p.removeBody(obj.body_id, physicsClientId=self._client)
        self.objects = []

    def reset_scene(self, seed: int, split: str = "train", clutter: str = "low",
                    num_objects: Optional[int] = None) -> list[SceneObject]:
        """Place a fresh random set of objects; deterministic in (seed, split, clutter)."""
        if clutter not in CLUTTER_LEVELS:
            raise ValueError(f"clutter must be one of {sorted(CLUTTER_LEVELS)}, got {clutter!r}")
        rng = np.random.default_rng([seed, 104729])
        self._rng = rng
        self.clear_objects()
        self.move_arm_home()
        models = make_object_set(split)
        lo, hi = CLUTTER_LEVELS[clutter]
        n = num_objects if num_objects is not None else int(rng.integers(lo, hi + 1))
        chosen = rng.choice(len(models), size=n, replace=False)
        min_gap = {"low": 0.05, "medium": 0.025, "high": 0.012}[clutter]
        placed: list[tuple[float, float, float]] = []
        for k, idx in enumerate(chosen):
            model = models[int(idx)]
            radius = 0.5 * math.hypot(model.size[0], model.size[1])
            for _ in range(200):
                x = rng.uniform(WORKSPACE_X[0] + radius, WORKSPACE_X[1] - radius)
                y = rng.uniform(WORKSPACE_Y[0] + radius, WORKSPACE_Y[1] - radius)
                if all(math.hypot(x - px, y - py) > radius + pr + min_gap for px, py, pr in placed):
                    break
            else:
                continue  # no room left: fewer objects
            placed.append((x, y, radius))
            body = self._create_object(model, (x, y, model.size[2] / 2 + 0.002), rng.uniform(-math.pi, math.pi))
            obj = SceneObject(instance_id=len(self.objects) + 1, body_id=body, model=model)
            self.objects.append(obj)
            self._apply_object_colour(obj)
        self.settle()
        return list(self.objects)

    # ----------------------------------------------------------------- physics
    def step(self, n: int = 1) -> None:
        for _ in range(n):
            self._p.stepSimulation(physicsClientId=self._client)
        self._sim_time += n * self.config.time_step

    def settle(self, max_steps: int = 480, speed_tol: float = 2e-3) -> None:
        """Step until the objects rest (or ``max_steps``), then reset the ones that left the table."""
        for i in range(0, max_steps, 24):
            self.step(24)
            speeds = [np.linalg.norm(self._p.getBaseVelocity(o.body_id, physicsClientId=self._client)[0])
                      for o in self.objects]
            if not speeds or max(speeds) < speed_tol:
                break
        self.reset_fallen_objects()

    def reset_fallen_objects(self) -> list[int]:
        """Objects that left the table are placed back at a random free spot; returns their instance ids."""
        reset = []
        for obj in self.objects:
            pos, _ = self._p.getBasePositionAndOrientation(obj.body_id, physicsClientId=self._client)
            on_table = (abs(pos[0] - TABLE_CENTER_XY[0]) < TABLE_HALF_EXTENTS[0]
                        and abs(pos[1] - TABLE_CENTER_XY[1]) < TABLE_HALF_EXTENTS[1] and pos[2] > -0.01)
            if not on_table:
                x = self._rng.uniform(*WORKSPACE_X)
                y = self._rng.uniform(*WORKSPACE_Y)
                self._p.resetBasePositionAndOrientation(
                    obj.body_id, [x, y, obj.model.size[2] / 2 + 0.01], [0, 0, 0, 1], physicsClientId=self._client)
                self._p.resetBaseVelocity(obj.body_id, [0, 0, 0], [0, 0, 0], physicsClientId=self._client)
                reset.append(obj.instance_id)
        if reset:
            self.step(120)
        return reset

    @property
    def sim_time(self) -> float:
        return self._sim_time

    # -------------------------------------------------------------------- arm
    def _set_arm_joints(self, q) -> None:
        for j, v in zip(PANDA_ARM_JOINTS, q):
            self._p.resetJointState(self.arm_id, j, v, physicsClientId=self._client)
        self._p.setJointMotorControlArray(self.arm_id, list(PANDA_ARM_JOINTS), self._p.POSITION_CONTROL,
                                          targetPositions=list(q), forces=[200.0] * 7,
                                          physicsClientId=self._client)

    def _set_fingers(self, width: float) -> None:
        for j in PANDA_FINGER_JOINTS:
            self._p.resetJointState(self.arm_id, j, width / 2, physicsClientId=self._client)
            self._p.setJointMotorControl2(self.arm_id, j, self._p.POSITION_CONTROL, width / 2, force=40,
                                          physicsClientId=self._client)

    def move_arm_home(self) -> None:
        """Fold the arm out of the camera's view (a free-space move, no contact)."""
        if self.arm_id is None:
            return
        self._set_arm_joints(PANDA_HOME)
        self._set_fingers(0.0)

    def _ik(self, position) -> list[float]:
        down = self._p.getQuaternionFromEuler([math.pi, 0, 0])
        q = self._p.calculateInverseKinematics(
            self.arm_id, PANDA_EE_LINK, list(position), down, maxNumIterations=100, residualThreshold=1e-4,
            physicsClientId=self._client)
        return list(q[:7])

    def end_effector_position(self) -> np.ndarray:
        state = self._p.getLinkState(self.arm_id, PANDA_EE_LINK, computeForwardKinematics=True,
                                     physicsClientId=self._client)
        return np.array(state[4])

    def is_reachable(self, point, tolerance: float = 0.02) -> bool:
        """True when IK puts the end effector within ``tolerance`` of ``point``."""
        if self.arm_id is None:
            return False
        saved = [self._p.getJointState(self.arm_id, j, physicsClientId=self._client)[0] for j in PANDA_ARM_JOINTS]
        self._set_arm_joints(self._ik(point))
        err = float(np.linalg.norm(self.end_effector_position() - np.asarray(point)))
        self._set_arm_joints(saved)
        return err < tolerance

    def _teleport_above(self, point, height: float) -> None:
        target = [point[0], point[1], point[2] + height]
        for _ in range(3):  # IK refinement from the previous solution
            self._set_arm_joints(self._ik(target))

    def _drive_linear(self, start, end, speed: float) -> float:
        """Drive the end effector along a straight line with position control under physics.

        Returns the largest tracking error (metres)."""
        start, end = np.asarray(start, float), np.asarray(end, float)
        dist = float(np.linalg.norm(end - start))
        steps = max(int(dist / speed / self.config.time_step), 1)
        max_err = 0.0
        for i in range(1, steps + 1):
            target = start + (end - start) * (i / steps)
            q = self._ik(target)
            self._p.setJointMotorControlArray(self.arm_id, list(PANDA_ARM_JOINTS), self._p.POSITION_CONTROL,
                                              targetPositions=q, forces=[250.0] * 7,
                                              physicsClientId=self._client)
            self.step(1)
            if i % 24 == 0 or i == steps:
                max_err = max(max_err, float(np.linalg.norm(self.end_effector_position() - target)))
        return max_err

    def execute_push(self, start, end, contact_height: float = 0.02) -> tuple[bool, str]:
        """Push along the table from ``start`` to ``end`` (world xy, z ignored) with closed fingers.

        The arm approaches from above, descends at ``start``, drives a straight line
        to ``end`` under physics, lifts and folds back out of view.
        """
        if self.arm_id is None:
            return False, "the simulation has no arm"
        s = np.array([start[0], start[1], contact_height])
        e = np.array([end[0], end[1], contact_height])
        for name, pt in (("start", s), ("end", e)):
            if not self.is_reachable(pt + [0, 0, 0.0]):
                self.move_arm_home()
                return False, f"push {name} point {np.round(pt, 3).tolist()} is unreachable"
        self._set_fingers(0.0)
        self._teleport_above(s, 0.15)
        self._drive_linear(s + [0, 0, 0.15], s, speed=0.3)
        err = self._drive_linear(s, e, speed=self.config.push_speed)
        self._drive_linear(e, e + [0, 0, 0.15], speed=0.3)
        self.move_arm_home()
        self.settle()
        if err > 0.05:
            return True, f"push executed with tracking error {err:.3f} m (blocked?)"
        return True, "push executed"

    def execute_grasp(self, pick, place, grasp_height: Optional[float] = None) -> tuple[bool, str]:
        """Top-down grasp at ``pick`` (world xy), carry and release above ``place``."""
        if self.arm_id is None:
            return False, "the simulation has no arm"
        p, c = self._p, self._client
        z = 0.02 if grasp_height is None else grasp_height
        a = np.array([pick[0], pick[1], z])
        b = np.array([place[0], place[1], z + 0.05])
        for name, pt in (("pick", a), ("place", b)):
            if not self.is_reachable(pt):
                self.move_arm_home()
                return False, f"grasp {name} point {np.round(pt, 3).tolist()} is unreachable"
        self._set_fingers(0.08)
        self._teleport_above(a, 0.2)
        self._drive_linear(a + [0, 0, 0.2], a, speed=0.3)
        for j in PANDA_FINGER_JOINTS:
            p.setJointMotorControl2(self.arm_id, j, p.POSITION_CONTROL, 0.0, force=60, physicsClientId=c)
        self.step(120)
        held = None
        contacts = {pt[2] for j in PANDA_FINGER_JOINTS
                    for pt in p.getContactPoints(bodyA=self.arm_id, linkIndexA=j, physicsClientId=c)}
        for obj in self.objects:
            if obj.body_id in contacts:
                held = obj
                break
        constraint = None
        if held is not None:
            # Grasp stabilisation: pybullet's finger friction alone drops light primitives.
            ee = p.getLinkState(self.arm_id, PANDA_EE_LINK, physicsClientId=c)
            obj_pos, obj_orn = p.getBasePositionAndOrientation(held.body_id, physicsClientId=c)
            inv_pos, inv_orn = p.invertTransform(ee[4], ee[5])
            rel_pos, rel_orn = p.multiplyTransforms(inv_pos, inv_orn, obj_pos, obj_orn)
            constraint = p.createConstraint(self.arm_id, PANDA_EE_LINK, held.body_id, -1, p.JOINT_FIXED,
                                            [0, 0, 0], rel_pos, [0, 0, 0], rel_orn, physicsClientId=c)
        self._drive_linear(a, a + [0, 0, 0.2], speed=0.3)
        self._drive_linear(a + [0, 0, 0.2], b + [0, 0, 0.15], speed=0.4)
        self._drive_linear(b + [0, 0, 0.15], b, speed=0.3)
        if constraint is not None:
            p.removeConstraint(constraint, physicsClientId=c)
        self._set_fingers(0.08)
        self.step(60)
        self._drive_linear(b, b + [0, 0, 0.15], speed=0.3)
        self.move_arm_home()
        self.settle()
        if held is None:
            return True, "grasp executed but nothing was held"
        return True, f"grasped and moved object {held.instance_id}"

    # ----------------------------------------------------------------- camera
    def set_camera_pose(self, camera_to_world: np.ndarray) -> None:
        t = np.asarray(camera_to_world, dtype=np.float64)
        if t.shape != (4, 4):
            raise ValueError("camera_to_world must be 4x4")
        self.camera_to_world = t.copy()

    def _view_projection(self) -> tuple[list[float], list[float]]:
        cam = self.config.camera
        k = self.intrinsics
        t = self.camera_to_world
        # OpenGL camera looks along -z with y up: flip y and z of the optical frame.
        world_to_gl = np.linalg.inv(t @ np.diag([1.0, -1.0, -1.0, 1.0]))
        view = world_to_gl.T.reshape(-1).tolist()  # column-major
        w, h, n, f = k.width, k.height, cam.near, cam.far
        proj = np.zeros((4, 4))
        proj[0, 0] = 2 * k.fx / w
        proj[1, 1] = 2 * k.fy / h
        proj[0, 2] = 1 - 2 * (k.cx + 0.5) / w
        proj[1, 2] = 2 * (k.cy + 0.5) / h - 1
        proj[2, 2] = -(f + n) / (f - n)
        proj[2, 3] = -2 * f * n / (f - n)
        proj[3, 2] = -1
        return view, proj.T.reshape(-1).tolist()

    def render(self) -> RgbdFrame:
        """Render RGB and metric depth from the current camera pose."""
        frame, _ = self._render(with_segmentation=False)
        return frame

    def _render(self, with_segmentation: bool):
        p, c = self._p, self._client
        cam, a = self.config.camera, self.appearance
        view, proj = self._view_projection()
        flags = 0 if with_segmentation else p.ER_NO_SEGMENTATION_MASK
        w, h, rgba, depth_buf, seg = p.getCameraImage(
            self.intrinsics.width, self.intrinsics.height, viewMatrix=view, projectionMatrix=proj,
            renderer=p.ER_TINY_RENDERER, lightDirection=list(a.light_direction), lightColor=list(a.light_color),
            lightAmbientCoeff=a.ambient, lightDiffuseCoeff=a.diffuse, lightSpecularCoeff=a.specular,
            shadow=1, flags=flags, physicsClientId=c)
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(h, w, 4)[..., :3].copy()
        zbuf = np.asarray(depth_buf, dtype=np.float64).reshape(h, w)
        depth = (cam.far * cam.near / (cam.far - (cam.far - cam.near) * zbuf)).astype(np.float32)
        depth[zbuf >= 1.0] = np.nan  # nothing rendered: no return
        if cam.depth_noise_std > 0:
            depth += self._rng.normal(0, cam.depth_noise_std, size=depth.shape).astype(np.float32)
        frame = RgbdFrame(rgb=rgb, depth=depth, intrinsics=self.intrinsics,
                          camera_to_world=self.camera_to_world.copy(), stamp=self._sim_time)
        seg_arr = np.asarray(seg, dtype=np.int64).reshape(h, w) if with_segmentation else None
        return frame, seg_arr

    def render_with_ground_truth(self) -> tuple[RgbdFrame, dict]:
        """One render and the ground truth that matches it pixel for pixel (evaluation only)."""
        frame, seg = self._render(with_segmentation=True)
        return frame, self._ground_truth_from_segmentation(seg)

    def _ground_truth_from_segmentation(self, seg: np.ndarray) -> dict:
        body = np.where(seg >= 0, seg & ((1 << 24) - 1), -1)
        instance = np.zeros(seg.shape, dtype=np.uint16)
        semantic = np.zeros(seg.shape, dtype=np.uint8)
        semantic[body == self.floor_id] = SEMANTIC_CLASSES.index("floor")
        semantic[body == self.table_id] = SEMANTIC_CLASSES.index("table")
        for leg in self.leg_ids:
            semantic[body == leg] = SEMANTIC_CLASSES.index("table")
        if self.arm_id is not None:
            semantic[body == self.arm_id] = SEMANTIC_CLASSES.index("robot")
        for obj in self.objects:
            m = body == obj.body_id
            instance[m] = obj.instance_id
            semantic[m] = SEMANTIC_CLASSES.index(obj.model.category)
        return {
            "instance_mask": instance,
            "semantic_mask": semantic,
            "object_poses": self.object_poses(),
            "object_categories": {o.instance_id: o.model.category for o in self.objects},
            "object_models": {o.instance_id: o.model.model_id for o in self.objects},
        }

    def ground_truth(self) -> dict:
        """Ground truth for the current camera (evaluation only): label images and object poses."""
        return self.render_with_ground_truth()[1]

    def object_poses(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """instance id -> (position (3,), orientation quaternion xyzw (4,))."""
        out = {}
        for obj in self.objects:
            pos, orn = self._p.getBasePositionAndOrientation(obj.body_id, physicsClientId=self._client)
            out[obj.instance_id] = (np.array(pos), np.array(orn))
        return out

    def project(self, point_world) -> tuple[float, float]:
        """(u, v) of a world point in the current camera."""
        pw = np.append(np.asarray(point_world, dtype=np.float64), 1.0)
        pc = np.linalg.inv(self.camera_to_world) @ pw
        k = self.intrinsics
        return (k.fx * pc[0] / pc[2] + k.cx, k.fy * pc[1] / pc[2] + k.cy)

    def close(self) -> None:
        if self._client is not None and self._p.isConnected(self._client):
            self._p.disconnect(self._client)
        self._client = None
        shutil.rmtree(self._texture_dir, ignore_errors=True)

    def __enter__(self) -> "TabletopSim":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def replace_camera(config: SimConfig, **changes) -> SimConfig:
    """A copy of ``config`` with camera fields changed (e.g. width/height)."""
    return dataclasses.replace(config, camera=dataclasses.replace(config.camera, **changes))
