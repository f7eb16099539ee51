"""The caption language of `shapes-t2i` (and of `textures-t2i`, which keeps its captions): what a caption
can say, and the caption stream that the model samples its bench and eval prompts from.

A caption names one to three objects, each by size, colour, shape and cell of a 3×3 grid, joined by
"and". `generator_captions(count, seed)` gives the captions of the training generator's stream `seed`
(`sjd_batch.training.shapes.data.make_sample`) without drawing their images: the generator draws the
objects first, from the same seeded stream, so the captions agree exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRID = 3
SHAPES = ("circle", "square", "triangle", "cross")
SIZES = {"small": 5.5, "large": 9.0}  # half-extent in pixels
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (225, 40, 40),
    "orange": (245, 140, 25),
    "yellow": (235, 225, 40),
    "green": (45, 195, 60),
    "cyan": (40, 205, 215),
    "blue": (55, 85, 235),
    "purple": (155, 60, 215),
    "pink": (245, 115, 190),
}
POSITIONS = (
    "top left", "top middle", "top right",
    "middle left", "center", "middle right",
    "bottom left", "bottom middle", "bottom right",
)  # row-major over the 3×3 grid

@dataclass(frozen=True)
class ShapeObject:
    """One captioned object."""

    shape: str
    color: str
    size: str
    cell: int  # 0..8, row-major

    def phrase(self) -> str:
        return f"a {self.size} {self.color} {self.shape} at {POSITIONS[self.cell]}"


def caption_of(objects: tuple[ShapeObject, ...] | list[ShapeObject]) -> str:
    """The canonical caption: object phrases joined by "and"."""
    return " and ".join(o.phrase() for o in objects)


def sample_objects(rng: np.random.Generator, max_objects: int = 3) -> tuple[ShapeObject, ...]:
    """One to `max_objects` objects in distinct cells, attributes drawn uniformly."""
    count = int(rng.integers(1, max_objects + 1))
    cells = rng.choice(GRID * GRID, size=count, replace=False)
    return tuple(
        ShapeObject(
            shape=SHAPES[rng.integers(len(SHAPES))],
            color=list(COLORS)[rng.integers(len(COLORS))],
            size=list(SIZES)[rng.integers(len(SIZES))],
            cell=int(c),
        )
        for c in cells
    )


def caption_words() -> tuple[str, ...]:
    """Every word a caption can use, in a fixed order (the model's word vocabulary)."""
    words = ["a", "at", "and", *SIZES, *COLORS, *SHAPES]
    for p in POSITIONS:
        words += [w for w in p.split() if w not in words]
    return tuple(dict.fromkeys(words))


def generator_captions(count: int, seed: int) -> list[str]:
    """Captions of the generator stream `seed` (bench and eval prompts): sample i is (seed, i)."""
    return [caption_of(sample_objects(np.random.default_rng([seed, i]))) for i in range(count)]
