"""Texture images for the realistic simulated world: procedural wood, stone, carpet, plaster, and photo crops.

Everything is generated from a seed (numpy) or cropped from images that installed packages
ship (scikit-image's bundled sample images); nothing is downloaded. Images are ``(H, W, 3)``
uint8 RGB.

Object textures come in two disjoint families per split (see :data:`PHOTO_SOURCES`): the
``train`` objects are textured with crops of one set of photos and with procedural patterns of
one set of kinds, the ``test`` objects with crops of other photos and other pattern kinds, so a
test object never wears a training texture.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache

import numpy as np

# Bundled scikit-image sample images (files in ``skimage.data_dir``), split disjointly.
PHOTO_SOURCES: dict[str, tuple[str, ...]] = {
    "train": ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png", "camera.png",
              "moon.png"),
    "test": ("retina.jpg", "hubble_deep_field.jpg", "ihc.png", "color.png", "coins.png", "page.png"),
}
# Procedural object pattern kinds, split disjointly.
PROCEDURAL_KINDS: dict[str, tuple[str, ...]] = {
    "train": ("stripes", "checks", "blobs"),
    "test": ("dots", "waves", "plaid"),
}


def _rng(seed) -> np.random.Generator:
    return np.random.default_rng(seed)


def fractal_noise(shape: tuple[int, int], rng: np.random.Generator, octaves: int = 5, base: int = 4,
                  persistence: float = 0.55) -> np.ndarray:
    """Sum of upsampled random grids (value noise), normalised to [0, 1]. ``(H, W)`` float32."""
    import cv2

    h, w = shape
    out = np.zeros(shape, np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        n = base * 2 ** o
        grid = rng.uniform(size=(max(2, n * h // max(h, w)), max(2, n * w // max(h, w)))).astype(np.float32)
        out += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= persistence
    out /= total
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / max(hi - lo, 1e-6)


def _colourise(t: np.ndarray, c0, c1) -> np.ndarray:
    c0, c1 = np.asarray(c0, np.float32), np.asarray(c1, np.float32)
    img = c0 + (c1 - c0) * t[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def wood_texture(seed: int, size: int = 1024, planks: int = 5) -> np.ndarray:
    """Planks of wood: growth rings bent by noise, fine grain streaks, seams between planks."""
    import cv2

    rng = _rng([seed, 11])
    base = rng.uniform([120, 70, 30], [200, 140, 90])  # a brown
    dark = base * rng.uniform(0.45, 0.7)
    img = np.zeros((size, size, 3), np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    edges = np.linspace(0, size, planks + 1).astype(int)
    for k in range(planks):
        a, b = edges[k], edges[k + 1]
        cx, cy = rng.uniform(-2 * size, 3 * size), rng.uniform(a - size, b + size)
        warp = fractal_noise((b - a, size), rng, octaves=4, base=3) * rng.uniform(20, 60)
        r = np.sqrt(((xx[a:b] - cx) * rng.uniform(0.05, 0.2)) ** 2 + (yy[a:b] - cy) ** 2) + warp
        rings = 0.5 + 0.5 * np.sin(r / rng.uniform(4.0, 9.0))
        streak = cv2.resize(rng.uniform(size=(b - a, 16)).astype(np.float32), (size, b - a),
                            interpolation=cv2.INTER_LINEAR)
        t = np.clip(0.65 * rings ** 1.5 + 0.35 * streak, 0, 1)
        tint = rng.uniform(0.9, 1.1)
        img[a:b] = (dark + (base - dark) * t[..., None]) * tint
        img[a:min(a + 2, b)] *= 0.55  # seam
    return np.clip(img, 0, 255).astype(np.uint8)


def stone_texture(seed: int, size: int = 1024) -> np.ndarray:
    """Granite / marble-like stone: fractal noise, veins and speckles."""
    rng = _rng([seed, 13])
    n = fractal_noise((size, size), rng, octaves=6, base=4)
    veins = np.abs(np.sin(8.0 * fractal_noise((size, size), rng, octaves=4, base=2) * math.pi))
    t = 0.6 * n + 0.4 * veins ** 0.3
    c0 = rng.uniform(60, 140, size=3)
    c1 = np.clip(c0 + rng.uniform(50, 110), 0, 255)
    img = _colourise(t, c0, c1).astype(np.float32)
    speck = rng.uniform(size=(size, size)) < rng.uniform(0.01, 0.04)
    img[speck] *= rng.uniform(0.3, 0.6)
    return np.clip(img, 0, 255).astype(np.uint8)


def carpet_texture(seed: int, size: int = 512) -> np.ndarray:
    """A floor covering: high-frequency fibre noise over a low-frequency pattern."""
    rng = _rng([seed, 17])
    fibres = rng.uniform(size=(size, size)).astype(np.float32)
    blotch = fractal_noise((size, size), rng, octaves=3, base=3)
    t = 0.5 * fibres + 0.5 * blotch
    c0 = rng.uniform(30, 110, size=3)
    return _colourise(t, c0, np.clip(c0 * rng.uniform(1.3, 1.8), 0, 255))


def plaster_texture(seed: int, size: int = 512) -> np.ndarray:
    """A painted wall: faint low-frequency stains and fine roughness."""
    rng = _rng([seed, 19])
    t = 0.7 * fractal_noise((size, size), rng, octaves=5, base=2) + 0.3 * rng.uniform(size=(size, size))
    c = rng.uniform(150, 235, size=3)
    return _colourise(t, c * 0.85, c)


@lru_cache(maxsize=32)
def _load_photo(name: str) -> np.ndarray:
    import cv2
    import skimage

    path = os.path.join(skimage.data_dir, name)
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"scikit-image sample image {path} is missing")
    return img[..., ::-1].copy()


def available_photos(split: str) -> tuple[str, ...]:
    """The bundled photos of ``split`` present in this installation."""
    try:
        import skimage
    except ImportError:
        return ()
    return tuple(n for n in PHOTO_SOURCES[split] if os.path.exists(os.path.join(skimage.data_dir, n)))


def photo_texture(name: str, seed: int, size: int = 128) -> np.ndarray:
    """A random square crop (a quarter to a half of the image side) of a bundled photo, resized."""
    import cv2

    img = _load_photo(name)
    rng = _rng([seed, 23])
    h, w = img.shape[:2]
    side = int(min(h, w) * rng.uniform(0.25, 0.5))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = img[y:y + side, x:x + side]
    if crop.std() < 1.0 or (crop.max(axis=2) - crop.min(axis=2)).mean() < 4:  # grey photo: tint it
        tint = rng.uniform(0.5, 1.0, size=3)
        crop = np.clip(crop * tint, 0, 255).astype(np.uint8)
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def pattern_texture(kind: str, seed: int, size: int = 128) -> np.ndarray:
    """A procedural object pattern of ``kind`` (see :data:`PROCEDURAL_KINDS`)."""
    import cv2

    rng = _rng([seed, 29])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c1, c2 = rng.integers(30, 240, size=3), rng.integers(30, 240, size=3)
    if kind == "stripes":
        a = rng.uniform(0, math.pi)
        sel = ((xx * math.cos(a) + yy * math.sin(a)) // rng.integers(5, 16)) % 2 > 0
    elif kind == "checks":
        p = int(rng.integers(8, 24))
        sel = ((xx // p) + (yy // p)) % 2 > 0
    elif kind == "blobs":
        sel = cv2.resize(rng.uniform(size=(8, 8)).astype(np.float32), (size, size),
                         interpolation=cv2.INTER_CUBIC) > 0.5
    elif kind == "dots":
        p = float(rng.integers(10, 22))
        sel = (np.mod(xx, p) - p / 2) ** 2 + (np.mod(yy, p) - p / 2) ** 2 < (p * rng.uniform(0.2, 0.4)) ** 2
    elif kind == "waves":
        f = rng.uniform(0.1, 0.3)
        sel = np.sin(xx * f + 4 * np.sin(yy * f * 0.5)) > 0
    elif kind == "plaid":
        p1, p2 = int(rng.integers(10, 20)), int(rng.integers(4, 9))
        sel = ((xx % p1) < p2) ^ ((yy % p1) < p2)
    else:
        raise ValueError(f"unknown pattern kind {kind!r}")
    img = np.where(sel[..., None], c1, c2).astype(np.float32)
    img *= (0.85 + 0.3 * fractal_noise((size, size), rng, octaves=3, base=4))[..., None]  # print wear
    return np.clip(img, 0, 255).astype(np.uint8)
