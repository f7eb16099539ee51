"""Procedural captioned images for `shapes-t2i`, deterministic from (seed, index).

Each 64×64 RGB image holds one to three saturated objects, each in its own cell of a 3×3 grid, on a
dark, desaturated background. The caption names every object's size, colour, shape and cell; it
never names the background. The background is spatially correlated on purpose (smooth noise fields,
gradients, oriented stripes, and muted strokes that cross patch borders), so that image tokens have
real entropy *and* depend on their neighbours, as real VQ tokens do (docs/model-families.md). Objects stay
bright and saturated while the background never is, which is what lets the checker separate them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sjd_batch.models.shapes.captions import (
    COLORS,
    GRID,
    POSITIONS,
    SHAPES,
    SIZES,
    ShapeObject,
    caption_of,
    caption_words,
    sample_objects,
)

# The caption language is the model's (models/shapes/captions.py); it is re-exported here so that
# generator users import one module.
__all__ = ["BACKGROUND_MAX", "COLORS", "GRID", "IMAGE_SIZE", "JITTER", "POSITIONS", "SHAPES", "SIZES",
           "Sample", "ShapeObject", "caption_of", "caption_words", "cell_center", "make_batch", "make_sample",
           "render", "sample_objects", "shape_mask"]

IMAGE_SIZE = 64
BACKGROUND_MAX = 110  # no background channel exceeds this; objects are far brighter
JITTER = {"small": 2, "large": 1}  # integer position jitter; large objects must stay inside their cell


@dataclass(frozen=True)
class Sample:
    """One generated image with its caption and the objects it names."""

    pixels: np.ndarray  # [64, 64, 3] uint8
    caption: str
    objects: tuple[ShapeObject, ...]


def cell_center(cell: int) -> tuple[float, float]:
    """(x, y) of a grid cell's centre, in continuous pixel coordinates."""
    step = IMAGE_SIZE / GRID
    return (cell % GRID + 0.5) * step, (cell // GRID + 0.5) * step


def shape_mask(shape: str, cx: float, cy: float, r: float, size: int = IMAGE_SIZE) -> np.ndarray:
    """Boolean [size, size] mask of a shape centred at (cx, cy) with half-extent r (pixel centres)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dx, dy = xs - cx, ys - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (np.abs(dx) <= r * 0.85) & (np.abs(dy) <= r * 0.85)  # 0.85: area closer to the circle's
    if shape == "triangle":  # apex up, base at the bottom of the box
        inside_y = (dy >= -r) & (dy <= r)
        return inside_y & (np.abs(dx) <= (dy + r) / 2)
    if shape == "cross":
        arm = r / 3
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))
    raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")


def _upsample(grid: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Bilinear upsampling of a coarse [g, g, C] grid to [size, size, C]: a smooth field."""
    g = grid.shape[0]
    t = (np.arange(size) + 0.5) / size * (g - 1)
    i0 = np.clip(np.floor(t).astype(int), 0, g - 2)
    f = (t - i0)[:, None]
    rows = grid[i0] * (1 - f[..., None]) + grid[i0 + 1] * f[..., None]  # [size, g, C]
    cols = rows[:, i0] * (1 - f[None, :, :]) + rows[:, i0 + 1] * f[None, :, :]
    return cols


def _dark_color(rng: np.random.Generator) -> np.ndarray:
    """A dark, weakly tinted colour: never mistaken for an object."""
    base = rng.uniform(15, 75)
    return np.clip(base + rng.uniform(-20, 20, size=3), 0, BACKGROUND_MAX)


def _background(rng: np.random.Generator) -> np.ndarray:
    """One of three spatially correlated backgrounds, float [64, 64, 3]."""
    kind = rng.integers(3)
    if kind == 0:  # smooth noise field: coarse random colours, bilinearly upsampled
        g = int(rng.integers(3, 7))
        grid = np.stack([_dark_color(rng) for _ in range(g * g)]).reshape(g, g, 3)
        return _upsample(grid)
    ys, xs = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    along = (xs * np.cos(angle) + ys * np.sin(angle)) / IMAGE_SIZE
    a, b = _dark_color(rng), _dark_color(rng)
    if kind == 1:  # linear gradient between two dark colours
        t = (along - along.min()) / (along.max() - along.min())
        return a * (1 - t[..., None]) + b * t[..., None]
    period = rng.uniform(5, 12) / IMAGE_SIZE  # stripes: a texture that continues across patches
    t = 0.5 + 0.5 * np.sin(2 * np.pi * along / period + rng.uniform(0, 2 * np.pi))
    return a * (1 - t[..., None]) + b * t[..., None]


def _strokes(img: np.ndarray, rng: np.random.Generator) -> None:
    """Draw 0-3 muted quadratic curves, 1-2 px wide, that cross many patch borders (in place)."""
    for _ in range(int(rng.integers(0, 4))):
        p0, p1, p2 = rng.uniform(-4, IMAGE_SIZE + 4, size=(3, 2))
        t = np.linspace(0, 1, 160)[:, None]
        pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        color = np.clip(rng.uniform(60, 110) + rng.uniform(-15, 15, size=3), 0, BACKGROUND_MAX)
        width = int(rng.integers(1, 3))
        for x, y in pts.astype(int):
            img[max(y, 0) : y + width, max(x, 0) : x + width] = color


def _paint_objects(img: np.ndarray, objects: tuple[ShapeObject, ...], rng: np.random.Generator) -> None:
    """Paint each object flat, with an uncaptioned brightness jitter (in place)."""
    for o in objects:
        cx, cy = cell_center(o.cell)
        j = JITTER[o.size]
        cx, cy = cx + rng.integers(-j, j + 1), cy + rng.integers(-j, j + 1)
        mask = shape_mask(o.shape, cx, cy, SIZES[o.size])
        img[mask] = np.asarray(COLORS[o.color], dtype=np.float64) * rng.uniform(0.85, 1.0)


def render(objects: tuple[ShapeObject, ...], rng: np.random.Generator) -> np.ndarray:
    """Background, then strokes, then objects on top: uint8 [64, 64, 3]."""
    img = _background(rng)
    _strokes(img, rng)
    _paint_objects(img, objects, rng)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_sample(seed: int, index: int, max_objects: int = 3) -> Sample:
    """Sample `index` of the stream `seed`: a pure function of (seed, index)."""
    rng = np.random.default_rng([seed, index])
    objects = sample_objects(rng, max_objects)
    return Sample(render(objects, rng), caption_of(objects), objects)


def make_batch(seed: int, start: int, count: int) -> tuple[np.ndarray, list[str], list[Sample]]:
    """Samples start .. start+count-1: pixels [count, 64, 64, 3] uint8, captions, samples."""
    samples = [make_sample(seed, start + i) for i in range(count)]
    return np.stack([s.pixels for s in samples]), [s.caption for s in samples], samples
