"""The ``realistic`` simulated world: mesh objects, textured table/floor/walls, clutter that touches and leans.

Used by :class:`~selfsup_perception.sim.tabletop.TabletopSim` when ``SimConfig.world ==
"realistic"``; the sensor and mount models it adds live in :mod:`selfsup_perception.sim.sensor`.

Objects (all from ``pybullet_data``, nothing downloaded):

* ``blob``: the 1,000 procedurally generated concave meshes of ``random_urdfs/`` (their OBJ
  files are convex decompositions, so collisions are concave);
* ``household``: duck, mug, torus (train); teddy, bunny, soccer ball (test);
* ``block``: lego brick, concave box (train); jenga block, shape sorter (test).

Train and test sets are disjoint by mesh (blob meshes 000-499 train, 500-999 test; the
everyday models as listed), by size (the longest side falls in interleaved bands, see
:data:`SIZE_BANDS`) and by texture (different photos and pattern kinds, see
:mod:`selfsup_perception.sim.textures`). Finishes: photo texture, procedural pattern, plain
colour, and the hard textureless ones: ``dark`` (little light returned: depth goes missing
too), ``white`` and ``shiny`` (strong specular highlights).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# Semantic classes of the realistic world (index = class id; the first four as in the simple world).
REALISTIC_SEMANTIC_CLASSES: tuple[str, ...] = (
    "unknown", "floor", "table", "robot", "wall", "blob", "household", "block",
)
REALISTIC_CLUTTER_LEVELS: dict[str, tuple[int, int]] = {"low": (3, 4), "medium": (5, 7), "high": (8, 10)}

# Size of an object (metres, see :func:`size_measure`); train and test bands interleave and never overlap.
SIZE_BANDS: dict[str, tuple[tuple[float, float], ...]] = {
    "train": ((0.05, 0.065), (0.08, 0.095), (0.11, 0.125)),
    "test": ((0.065, 0.08), (0.095, 0.11)),
}
FINISHES: tuple[tuple[str, float], ...] = (
    ("photo", 0.32), ("pattern", 0.25), ("plain", 0.15), ("dark", 0.1), ("white", 0.09), ("shiny", 0.09),
)


@dataclass(frozen=True)
class MeshSource:
    name: str
    visual: str  # OBJ path relative to pybullet_data
    collision: str  # OBJ path relative to pybullet_data (convex decomposition where one ships)
    family: str  # semantic class
    upright_rpy: tuple[float, float, float] = (0.0, 0.0, 0.0)  # rotation that stands the model up
    tumble: bool = False  # random full orientation (blobs) instead of upright + yaw


_HALF_PI = math.pi / 2
EVERYDAY_MODELS: dict[str, tuple[MeshSource, ...]] = {
    "train": (
        MeshSource("duck", "duck.obj", "duck_vhacd.obj", "household", (_HALF_PI, 0.0, 0.0)),
        MeshSource("mug", "objects/mug.obj", "objects/mug_col.obj", "household"),
        MeshSource("torus", "torus/torus_textured.obj", "torus/torus_textured.obj", "household"),
        MeshSource("lego", "lego/lego.obj", "lego/lego_vhacd.obj", "block", (_HALF_PI, 0.0, 0.0)),
        MeshSource("concave_box", "toys/concave_box.obj", "toys/concave_box.obj", "block"),
    ),
    "test": (
        MeshSource("teddy", "teddy2_VHACD_CHs.obj", "teddy2_VHACD_CHs.obj", "household", (_HALF_PI, 0.0, 0.0)),
        MeshSource("bunny", "bunny.obj", "bunny.obj", "household", (_HALF_PI, 0.0, 0.0)),
        MeshSource("soccerball", "soccerball.obj", "soccerball.obj", "household"),
        MeshSource("jenga", "jenga/jenga.obj", "jenga/jenga.obj", "block"),
        MeshSource("shape_sorter", "toys/shape_sorter.obj", "toys/shape_sorter.obj", "block"),
    ),
}
BLOB_RANGE: dict[str, tuple[int, int]] = {"train": (0, 500), "test": (500, 1000)}


def pybullet_data_path() -> str:
    import pybullet_data

    return pybullet_data.getDataPath()


def blob_source(i: int) -> MeshSource:
    rel = f"random_urdfs/{i:03d}/{i:03d}.obj"
    return MeshSource(f"blob{i:03d}", rel, rel, "blob", tumble=True)


@lru_cache(maxsize=256)
def read_obj(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (N, 3) float64 and triangles (M, 3) int of an OBJ file (polygons fan-triangulated)."""
    verts, tris = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("v "):
                verts.append([float(x) for x in line.split()[1:4]])
            elif line.startswith("f "):
                idx = [int(tok.split("/")[0]) for tok in line.split()[1:]]
                idx = [i - 1 if i > 0 else len(verts) + i for i in idx]
                for k in range(1, len(idx) - 1):
                    tris.append([idx[0], idx[k], idx[k + 1]])
    if not verts or not tris:
        raise ValueError(f"{path}: no vertices or faces")
    return np.asarray(verts, np.float64), np.asarray(tris, np.int64)


def mesh_extent(source: MeshSource) -> tuple[np.ndarray, np.ndarray]:
    """(bbox centre, bbox size) of the visual mesh in its native units, after the upright rotation."""
    v, _ = read_obj(os.path.join(pybullet_data_path(), source.visual))
    v = v @ _euler_matrix(source.upright_rpy).T
    lo, hi = v.min(0), v.max(0)
    return (lo + hi) / 2, hi - lo


def _euler_matrix(rpy) -> np.ndarray:
    r, p, y = rpy
    cx, sx, cy, sy, cz, sz = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def write_textured_obj(source: MeshSource, scale: float, out_path: str) -> None:
    """The visual mesh, stood up, centred on its bounding box and scaled, with triplanar UVs and
    smooth normals (so any texture wraps it the same way), written as a triangle OBJ."""
    v, f = read_obj(os.path.join(pybullet_data_path(), source.visual))
    v = v @ _euler_matrix(source.upright_rpy).T
    lo, hi = v.min(0), v.max(0)
    v = (v - (lo + hi) / 2) * scale
    span = float((hi - lo).max() * scale)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    fn = np.cross(b - a, c - a)  # area-weighted face normals
    axis = np.abs(fn).argmax(1)
    # one output vertex per (input vertex, projection axis)
    keys = np.stack([f, np.repeat(axis[:, None], 3, 1)], -1).reshape(-1, 2)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    pos = v[uniq[:, 0]]
    normals = np.zeros_like(pos)
    np.add.at(normals, inverse, np.repeat(fn, 3, 0))
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    other = np.array([[1, 2], [0, 2], [0, 1]])[uniq[:, 1]]
    uv = np.take_along_axis(pos, other, 1) / span + 0.5
    tri = inverse.reshape(-1, 3) + 1
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in pos]
    lines += [f"vt {s:.5f} {t:.5f}" for s, t in uv]
    lines += [f"vn {x:.5f} {y:.5f} {z:.5f}" for x, y, z in normals]
    lines += [f"f {i}/{i}/{i} {j}/{j}/{j} {k}/{k}/{k}" for i, j, k in tri]
    tmp = out_path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    os.replace(tmp, out_path)


def size_measure(extent) -> float:
    """The size the bands bound: the middle bounding-box side, or 1/1.6 of the longest side if that is
    more (spiky blobs stay graspable, long blocks stay on the table)."""
    e = np.sort(np.asarray(extent, np.float64))
    return float(max(e[1], e[2] / 1.6))


def _pick_band(rng: np.random.Generator, split: str) -> float:
    bands = SIZE_BANDS[split]
    widths = np.array([hi - lo for lo, hi in bands])
    k = int(rng.choice(len(bands), p=widths / widths.sum()))
    return float(rng.uniform(*bands[k]))


def make_realistic_object_set(split: str, count: int = 60, seed: int = 0):
    """Mesh object models of ``split``: ~2/3 blobs, ~1/3 everyday models, each with a size, finish,
    texture, mass and friction. Deterministic in ``(split, count, seed)``; train and test disjoint."""
    from selfsup_perception.sim.scene_types import ObjectModel
    from selfsup_perception.sim.textures import PROCEDURAL_KINDS, available_photos

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    rng = np.random.default_rng([seed, 0 if split == "train" else 1, 4441])
    lo, hi = BLOB_RANGE[split]
    blobs = rng.permutation(np.arange(lo, hi))
    everyday = EVERYDAY_MODELS[split]
    photos = available_photos(split)
    names, probs = zip(*FINISHES)
    models = []
    for i in range(count):
        source = everyday[(i // 3) % len(everyday)] if i % 3 == 2 else blob_source(int(blobs[i]))
        _, extent = mesh_extent(source)
        scale = _pick_band(rng, split) / size_measure(extent)
        size = tuple(float(s) for s in extent * scale)
        finish = str(rng.choice(names, p=np.array(probs) / sum(probs)))
        if finish == "photo" and not photos:
            finish = "pattern"
        texture = ""
        if finish == "photo":
            texture = f"photo:{photos[int(rng.integers(len(photos)))]}"
        elif finish == "pattern":
            texture = f"pattern:{PROCEDURAL_KINDS[split][int(rng.integers(3))]}"
        if finish == "dark":
            rgb = tuple(float(c) for c in rng.uniform(0.02, 0.08, size=3))
        elif finish == "white":
            rgb = tuple(float(c) for c in rng.uniform(0.88, 0.97, size=3))
        else:
            rgb = tuple(float(c) for c in rng.uniform(0.15, 0.9, size=3))
        volume = size[0] * size[1] * size[2]
        mass = float(np.clip(volume * 0.45 * rng.uniform(300.0, 900.0), 0.03, 0.5))
        models.append(ObjectModel(
            model_id=f"{split}_{i:03d}_{source.name}", category=source.family, size=size, rgb=rgb,
            texture_seed=int(rng.integers(0, 2**31 - 1)) if texture else -1, mass=mass,
            mesh=source.name, mesh_scale=scale, finish=finish, texture=texture,
            friction=float(rng.uniform(0.4, 0.9))))
    return models


def mesh_source(name: str) -> MeshSource:
    """The :class:`MeshSource` of a model's ``mesh`` name."""
    if name.startswith("blob"):
        return blob_source(int(name[4:]))
    for split in EVERYDAY_MODELS.values():
        for s in split:
            if s.name == name:
                return s
    raise KeyError(f"unknown mesh {name!r}")


# ---------------------------------------------------------------------------------------------
# Building the world inside a TabletopSim (called by TabletopSim; ``sim`` is that simulator)

WALL_X = -1.0  # back wall behind the robot
WALL_Y = 1.4  # side walls at +-WALL_Y
FLOOR_Z = -0.75


def load_texture(sim, key: str, make) -> int:
    """pybullet texture id of the image ``make()`` returns, cached per simulator by ``key``."""
    import cv2

    cache = sim._texture_cache
    if key in cache:
        return cache[key]
    img = make()
    path = os.path.join(sim._texture_dir, f"tex_{len(cache)}.png")
    cv2.imwrite(path, np.ascontiguousarray(img[..., ::-1]))
    tex = sim._p.loadTexture(path, physicsClientId=sim._client)
    cache[key] = tex
    return tex


def _build_walls(sim) -> None:
    p, c = sim._p, sim._client
    height = 2.5
    specs = [([WALL_X, 0.0, FLOOR_Z + height / 2], [0.01, 3.0, height / 2])]
    for sy in (-1, 1):
        specs.append(([0.5, sy * WALL_Y, FLOOR_Z + height / 2], [3.0, 0.01, height / 2]))
    for pos, half in specs:
        vis = p.createVisualShape(p.GEOM_BOX, halfExtents=half, physicsClientId=c)
        sim.wall_ids.append(p.createMultiBody(0, -1, vis, pos, physicsClientId=c))


def dress_static_world(sim, seed: int) -> None:
    """Table, floor and wall textures and the lights of the scene ``seed`` (realistic world)."""
    from selfsup_perception.sim import textures as tx
    from selfsup_perception.sim.scene_types import Appearance

    p, c = sim._p, sim._client
    if not sim.wall_ids:
        _build_walls(sim)
    rng = np.random.default_rng([seed, 3301])
    table_kind = "wood" if rng.uniform() < 0.6 else "stone"
    tseed = int(rng.integers(0, 64))  # a bounded set of tables keeps the texture cache small
    make = tx.wood_texture if table_kind == "wood" else tx.stone_texture
    table_tex = load_texture(sim, f"table-{table_kind}-{tseed}", lambda: make(tseed))
    floor_kind = ("carpet", "stone", "wood")[int(rng.integers(3))]
    fseed = int(rng.integers(0, 32))
    floor_make = {"carpet": lambda: tx.carpet_texture(fseed), "stone": lambda: tx.stone_texture(fseed, 512),
                  "wood": lambda: tx.wood_texture(fseed, 512, planks=8)}[floor_kind]
    floor_tex = load_texture(sim, f"floor-{floor_kind}-{fseed}", floor_make)
    wseed = int(rng.integers(0, 32))
    wall_photo = "brick.png" if rng.uniform() < 0.35 else ""
    if wall_photo and os.path.exists(os.path.join(_skimage_dir(), wall_photo)):
        wall_tex = load_texture(sim, f"wall-brick-{wseed}", lambda: tx.photo_texture(wall_photo, wseed, 256))
    else:
        wall_tex = load_texture(sim, f"wall-plaster-{wseed}", lambda: tx.plaster_texture(wseed))
    white = [1.0, 1.0, 1.0, 1.0]
    p.changeVisualShape(sim.table_id, -1, rgbaColor=white, textureUniqueId=table_tex, physicsClientId=c)
    p.changeVisualShape(sim.floor_id, -1, rgbaColor=white, textureUniqueId=floor_tex, physicsClientId=c)
    for w in sim.wall_ids:
        p.changeVisualShape(w, -1, rgbaColor=white, textureUniqueId=wall_tex, physicsClientId=c)
    leg_rgb = rng.uniform(0.15, 0.5, size=3).tolist()
    for leg in sim.leg_ids:
        p.changeVisualShape(leg, -1, rgbaColor=[*leg_rgb, 1], physicsClientId=c)
    # key light from above at a random azimuth, a fill light from elsewhere
    az, el = rng.uniform(0, 2 * math.pi), rng.uniform(math.radians(35), math.radians(75))
    key = (math.cos(az) * math.cos(el), math.sin(az) * math.cos(el), math.sin(el))
    az2, el2 = az + rng.uniform(0.6 * math.pi, 1.4 * math.pi), rng.uniform(math.radians(40), math.radians(80))
    fill = (math.cos(az2) * math.cos(el2), math.sin(az2) * math.cos(el2), math.sin(el2))
    sim._extra_lights = [(fill, float(rng.uniform(0.25, 0.45)))]
    sim.appearance = Appearance(
        light_direction=key, light_color=tuple(float(v) for v in rng.uniform(0.85, 1.0, size=3)),
        ambient=float(rng.uniform(0.4, 0.6)), diffuse=float(rng.uniform(0.5, 0.8)),
        specular=float(rng.uniform(0.1, 0.4)), table_rgb=(1.0, 1.0, 1.0), floor_rgb=(1.0, 1.0, 1.0))


def _skimage_dir() -> str:
    try:
        import skimage

        return skimage.data_dir
    except ImportError:
        return ""


def create_mesh_object(sim, model, position, orientation) -> int:
    """A dynamic body of a mesh model: the prepared visual OBJ and the (decomposed) collision mesh."""
    p, c = sim._p, sim._client
    source = mesh_source(model.mesh)
    key = f"{model.mesh}@{model.mesh_scale:.6f}"
    if key not in sim._mesh_files:
        path = os.path.join(sim._texture_dir, f"mesh_{len(sim._mesh_files)}.obj")
        write_textured_obj(source, model.mesh_scale, path)
        sim._mesh_files[key] = path
    centre, _ = mesh_extent(source)
    # collision mesh in native coordinates: stand it up and centre it like the visual mesh
    col_orn = p.getQuaternionFromEuler(list(source.upright_rpy))
    col_pos = (-centre * model.mesh_scale).tolist()
    col = p.createCollisionShape(p.GEOM_MESH, fileName=os.path.join(pybullet_data_path(), source.collision),
                                 meshScale=[model.mesh_scale] * 3, collisionFramePosition=col_pos,
                                 collisionFrameOrientation=col_orn, physicsClientId=c)
    vis = p.createVisualShape(p.GEOM_MESH, fileName=sim._mesh_files[key], physicsClientId=c)
    body = p.createMultiBody(model.mass, col, vis, list(position), list(orientation), physicsClientId=c)
    p.changeDynamics(body, -1, lateralFriction=model.friction, rollingFriction=0.001, spinningFriction=0.001,
                     physicsClientId=c)
    return body


def apply_finish(sim, obj, hue_shift: float = 0.0) -> None:
    """Colour, texture and specularity of a realistic object."""
    from selfsup_perception.sim import textures as tx

    p, c = sim._p, sim._client
    m = obj.model
    rgb = m.rgb
    if hue_shift and m.finish not in ("dark", "white"):
        import colorsys

        h, s, v = colorsys.rgb_to_hsv(*rgb)
        rgb = colorsys.hsv_to_rgb((h + hue_shift) % 1.0, s, v)
    kwargs = {}
    if m.texture:
        kind, name = m.texture.split(":", 1)
        seed = m.texture_seed
        make = (lambda: tx.photo_texture(name, seed)) if kind == "photo" else (lambda: tx.pattern_texture(name, seed))
        kwargs["textureUniqueId"] = load_texture(sim, f"obj-{m.texture}-{seed}", make)
        rgb = (1.0, 1.0, 1.0)
    specular = {"shiny": [1.0, 1.0, 1.0], "white": [0.4, 0.4, 0.4]}.get(m.finish, [0.05, 0.05, 0.05])
    p.changeVisualShape(obj.body_id, -1, rgbaColor=[*rgb, 1.0], specularColor=specular, physicsClientId=c,
                        **kwargs)


def reset_realistic_scene(sim, seed: int, split: str, clutter: str, num_objects=None) -> list:
    """Drop a random set of mesh objects onto the table: apart in low clutter, touching, stacked
    and leaning in medium/high clutter; then let physics settle them."""
    from selfsup_perception.sim.scene_types import WORKSPACE_X, WORKSPACE_Y, SceneObject

    if clutter not in REALISTIC_CLUTTER_LEVELS:
        raise ValueError(f"clutter must be one of {sorted(REALISTIC_CLUTTER_LEVELS)}, got {clutter!r}")
    p = sim._p
    rng = np.random.default_rng([seed, 104729, 2])
    dress_static_world(sim, seed)
    models = make_realistic_object_set(split)
    lo, hi = REALISTIC_CLUTTER_LEVELS[clutter]
    n = num_objects if num_objects is not None else int(rng.integers(lo, hi + 1))
    chosen = rng.choice(len(models), size=min(n, len(models)), replace=False)
    min_gap = {"low": 0.04, "medium": 0.005, "high": -0.01}[clutter]
    p_stack = {"low": 0.0, "medium": 0.2, "high": 0.35}[clutter]
    placed: list[tuple[float, float, float, float]] = []  # x, y, footprint radius, top z
    for idx in chosen:
        model = models[int(idx)]
        source = mesh_source(model.mesh)
        radius_xy = 0.5 * math.hypot(model.size[0], model.size[1])
        bound = 0.5 * float(np.linalg.norm(model.size))  # bounding sphere: any orientation clears the table
        if source.tumble:
            q = rng.normal(size=4)
            orn = (q / np.linalg.norm(q)).tolist()
            r_foot, half_h = bound, bound
        else:
            orn = list(p.getQuaternionFromEuler([0.0, 0.0, rng.uniform(-math.pi, math.pi)]))
            r_foot, half_h = radius_xy, model.size[2] / 2
        pos = None
        if placed and rng.uniform() < p_stack:  # drop it onto / against an earlier object
            bx, by, br, btop = placed[int(rng.integers(len(placed)))]
            a = rng.uniform(0, 2 * math.pi)
            d = rng.uniform(0.3, 0.8) * br
            pos = (bx + d * math.cos(a), by + d * math.sin(a), btop + half_h + 0.005)
        else:
            for _ in range(200):
                x = rng.uniform(WORKSPACE_X[0] + r_foot, WORKSPACE_X[1] - r_foot)
                y = rng.uniform(WORKSPACE_Y[0] + r_foot, WORKSPACE_Y[1] - r_foot)
                if all(math.hypot(x - px, y - py) > r_foot + pr + min_gap for px, py, pr, _ in placed):
                    pos = (x, y, half_h + 0.003)
                    break
        if pos is None:
            continue  # no room left: fewer objects
        placed.append((pos[0], pos[1], r_foot, pos[2] + half_h))
        body = create_mesh_object(sim, model, pos, orn)
        obj = SceneObject(instance_id=len(sim.objects) + 1, body_id=body, model=model)
        sim.objects.append(obj)
        apply_finish(sim, obj)
    sim.settle(max_steps=1200)
    remove_restless_objects(sim)
    return list(sim.objects)


def _object_positions(sim) -> dict[int, np.ndarray]:
    return {o.body_id: np.asarray(sim._p.getBasePositionAndOrientation(o.body_id, physicsClientId=sim._client)[0])
            for o in sim.objects}


def remove_restless_objects(sim, *, check_steps: int = 240, tolerance_m: float = 0.002,
                            max_removals: int = 3) -> list[str]:
    """Remove objects that do not come to rest after the scene settled; returns their model ids.

    Meshes dropped into touching clutter can end up interpenetrating; pybullet then pushes them apart
    for ever and the pair slides across the table by itself. Measured on train scenes 1000-1011 (8 s
    of physics after the reset, nothing touching): objects drifting more than 5 mm, medium / high
    clutter, 4 of 63 / 8 of 95 (up to 38 cm) without this check, 0 of 61 / 2 of 93 with it (one
    slowly rolling pair, 1.6 and 2.8 cm); over 4 interactions on each of the high-clutter scenes
    1000-1007, objects moved more than 1 cm that started more than 15 cm from the push path: 12
    (up to 56 cm; 2 in touch-nothing motions) without, 1 (1.2 cm) with it. It costs 0.3 / 0.5 s CPU
    more per medium / high-clutter reset.

    Over ``check_steps`` steps every object must move less than ``tolerance_m``; otherwise the
    restless object placed last is removed, the rest settle and the check repeats (at most
    ``max_removals`` times). In a fresh simulator the same scene seed removes the same objects (after
    other scenes pybullet's contact solver can settle a scene differently, seen here). Instance ids
    are renumbered 1..N in placement order.
    """
    from selfsup_perception.sim.scene_types import SceneObject

    removed: list[str] = []
    while True:
        before = _object_positions(sim)
        sim.step(check_steps)
        after = _object_positions(sim)
        restless = [o for o in sim.objects if np.linalg.norm(after[o.body_id] - before[o.body_id]) > tolerance_m]
        if not restless or len(removed) >= max_removals:
            break
        victim = max(restless, key=lambda o: o.instance_id)
        sim._p.removeBody(victim.body_id, physicsClientId=sim._client)
        sim.objects.remove(victim)
        removed.append(victim.model.model_id)
        sim.settle()
    if removed:
        sim.objects[:] = [SceneObject(instance_id=k + 1, body_id=o.body_id, model=o.model)
                          for k, o in enumerate(sim.objects)]
    return removed
