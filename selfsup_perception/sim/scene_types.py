"""Plain types shared by the simulated worlds (``tabletop.py`` and ``realistic.py``): object models,
scene objects, appearance, the workspace. Re-exported by :mod:`selfsup_perception.sim.tabletop`."""

from __future__ import annotations

from dataclasses import dataclass

WORKSPACE_X = (0.35, 0.75)
WORKSPACE_Y = (-0.25, 0.25)


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
class ObjectModel:
    """A procedurally generated object: category, size, colour, texture."""

    model_id: str
    category: str
    size: tuple[float, float, float]  # bounding box x, y, z in metres
    rgb: tuple[float, float, float]
    texture_seed: int  # < 0: plain colour
    mass: float = 0.15
    # realistic world only (see selfsup_perception.sim.realistic)
    mesh: str = ""  # mesh name, e.g. 'blob123' or 'duck'; '' = a primitive of ``category``
    mesh_scale: float = 1.0
    finish: str = "plain"  # photo | pattern | plain | dark | white | shiny
    texture: str = ""  # 'photo:<sample image>' or 'pattern:<kind>'
    friction: float = 0.6


@dataclass
class SceneObject:
    instance_id: int  # 1..N in ground-truth label images
    body_id: int
    model: ObjectModel
