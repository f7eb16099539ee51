"""A programmatic judge of caption adherence for `shapes-t2i` images.

It reads decoded pixels only. Objects are the bright, saturated pixels (the generator keeps every
background channel at or below `BACKGROUND_MAX`). Each 3×3 grid cell is judged on its own: a cell with
enough object pixels holds one object, whose colour is the nearest palette colour (after brightness
normalisation, since the generator dims objects at random) and whose shape and size come from the
best-IoU template among all shapes, sizes and jitter offsets the generator can draw. An image matches
its caption when the detected (shape, colour, cell) set equals the caption's, with no extra objects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from sjd_batch.training.shapes.data import (
    COLORS,
    GRID,
    IMAGE_SIZE,
    JITTER,
    POSITIONS,
    SHAPES,
    SIZES,
    ShapeObject,
    cell_center,
    shape_mask,
)

MIN_BRIGHT = 130  # object pixels: max channel at least this (backgrounds stay <= 110)
MIN_CHROMA = 60  # and max - min channel at least this (muted strokes never reach it)
MIN_PIXELS = 20  # fewer object pixels than this in a cell: the cell is empty
MIN_IOU = 0.45  # a blob that fits no template this well is a malformed object
_PHRASE = re.compile(r"a (\w+) (\w+) (\w+) at ([a-z ]+?)(?= and a |$)")


@dataclass(frozen=True)
class Detection:
    """An object found in one cell; `shape` is "unknown" when no template fits."""

    shape: str
    color: str
    size: str
    cell: int
    iou: float


@dataclass(frozen=True)
class Verdict:
    """Whether an image matches its caption, and how.

    Attributes:
        ok: the detected (shape, colour, cell) set equals the caption's, with nothing extra.
        size_ok: ok, and every size matches too.
        shape_ok, color_ok, position_ok: per-attribute agreement over the caption's objects.
    """

    ok: bool
    size_ok: bool
    shape_ok: bool
    color_ok: bool
    position_ok: bool
    detections: tuple[Detection, ...]


def parse_caption(caption: str) -> tuple[ShapeObject, ...]:
    """Caption -> objects; raises ValueError for a caption the generator could not have written."""
    objects = []
    for size, color, shape, pos in _PHRASE.findall(caption.strip().lower()):
        if size not in SIZES or color not in COLORS or shape not in SHAPES or pos not in POSITIONS:
            raise ValueError(f"caption phrase {(size, color, shape, pos)} uses an unknown word: {caption!r}")
        objects.append(ShapeObject(shape, color, size, POSITIONS.index(pos)))
    if not objects:
        raise ValueError(f"caption names no object: {caption!r}")
    return tuple(objects)


@lru_cache(maxsize=1)
def cell_regions() -> np.ndarray:
    """Boolean [9, 4096]: which pixels belong to which cell."""
    step = IMAGE_SIZE / GRID
    idx = ((np.arange(IMAGE_SIZE) + 0.5) // step).astype(int)
    cell = idx[:, None] * GRID + idx[None, :]
    return np.stack([(cell == c).reshape(-1) for c in range(GRID * GRID)])


@lru_cache(maxsize=1)
def _templates() -> tuple[list[np.ndarray], list[tuple[str, str]]]:
    """Per cell, a template bank [M, pixels of the cell] over every shape, size and jitter offset.

    Every template lies inside its cell (the generator's jitter keeps it there), so cropping the
    bank to the cell's pixels loses nothing and makes the IoU a small matrix-vector product.
    """
    labels, banks = [], []
    j = max(JITTER.values())
    for cell, region in enumerate(cell_regions()):
        cx, cy = cell_center(cell)
        masks = []
        for shape in SHAPES:
            for size, r in SIZES.items():
                for dy in range(-j, j + 1):
                    for dx in range(-j, j + 1):
                        masks.append(shape_mask(shape, cx + dx, cy + dy, r).reshape(-1)[region])
                        if cell == 0:
                            labels.append((shape, size))
        banks.append(np.stack(masks).astype(np.float32))
    return banks, labels


def object_mask(pixels: np.ndarray) -> np.ndarray:
    """Boolean [H, W]: bright, saturated pixels."""
    px = pixels.astype(np.int32)
    hi, lo = px.max(-1), px.min(-1)
    return (hi >= MIN_BRIGHT) & (hi - lo >= MIN_CHROMA)


def _color_name(rgb: np.ndarray) -> str:
    """Nearest palette colour after scaling both to unit max channel."""
    names = list(COLORS)
    palette = np.array([COLORS[n] for n in names], dtype=np.float32)
    palette /= palette.max(1, keepdims=True)
    v = rgb / max(float(rgb.max()), 1.0)
    return names[int(np.argmin(((palette - v) ** 2).sum(1)))]


def detect(pixels: np.ndarray) -> tuple[Detection, ...]:
    """Find at most one object per cell in a uint8 [64, 64, 3] image."""
    banks, labels = _templates()
    mask = object_mask(pixels).reshape(-1)
    flat = pixels.reshape(-1, 3).astype(np.float32)
    found = []
    for cell, region in enumerate(cell_regions()):
        m = mask & region
        count = int(m.sum())
        if count < MIN_PIXELS:
            continue
        inter = banks[cell] @ m[region].astype(np.float32)
        iou = inter / (banks[cell].sum(1) + count - inter)
        best = int(iou.argmax())
        shape, size = labels[best] if iou[best] >= MIN_IOU else ("unknown", "unknown")
        bright = flat[m]
        top = bright[bright.max(1) >= np.median(bright.max(1))]  # edge pixels blend with the background
        found.append(Detection(shape, _color_name(np.median(top, 0)), size, cell, float(iou[best])))
    return tuple(found)


def check(pixels: np.ndarray, caption: str) -> Verdict:
    """Judge one uint8 [64, 64, 3] image against its caption."""
    want = parse_caption(caption)
    got = detect(np.asarray(pixels))
    by_cell = {d.cell: d for d in got}
    hits = [by_cell.get(o.cell) for o in want]
    shape_ok = all(d is not None and d.shape == o.shape for o, d in zip(want, hits, strict=False))
    color_ok = all(d is not None and d.color == o.color for o, d in zip(want, hits, strict=False))
    position_ok = {o.cell for o in want} == set(by_cell)
    ok = shape_ok and color_ok and position_ok
    size_ok = ok and all(d.size == o.size for o, d in zip(want, hits, strict=False))
    return Verdict(ok, size_ok, shape_ok, color_ok, position_ok, got)


def mismatched_caption(objects: tuple[ShapeObject, ...], rng: np.random.Generator) -> str:
    """A caption that differs from `objects` in exactly one way the checker must notice.

    One of: another colour, another shape, another (free) cell for one object, an extra object,
    or (with two or more objects) a missing one.
    """
    objs = list(objects)
    kinds = ["color", "shape", "cell", "extra"] + (["drop"] if len(objs) > 1 else [])
    kind = kinds[rng.integers(len(kinds))]
    i = int(rng.integers(len(objs)))
    free = [c for c in range(GRID * GRID) if c not in {o.cell for o in objs}]
    o = objs[i]
    if kind == "color":
        objs[i] = ShapeObject(o.shape, _other(rng, list(COLORS), o.color), o.size, o.cell)
    elif kind == "shape":
        objs[i] = ShapeObject(_other(rng, list(SHAPES), o.shape), o.color, o.size, o.cell)
    elif kind == "cell":
        objs[i] = ShapeObject(o.shape, o.color, o.size, int(rng.choice(free)))
    elif kind == "extra":
        objs.append(ShapeObject(SHAPES[rng.integers(4)], list(COLORS)[rng.integers(8)], "large",
                                int(rng.choice(free))))
    else:
        objs.pop(i)
    return " and ".join(x.phrase() for x in objs)


def _other(rng: np.random.Generator, choices: list[str], current: str) -> str:
    rest = [c for c in choices if c != current]
    return rest[int(rng.integers(len(rest)))]
