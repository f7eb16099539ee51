"""`Layout`: where every generated token of an image goes, and which of them the grammar forces.

Its own module so that the sampler (which builds the grammar from it) and the model protocol (which
hands it over) both import it, and not each other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    """Where every generated token goes.

    Attributes:
        height: rows of image codes.
        width: image codes per row (the end-of-line column is not counted).
        forced: one entry per generated offset: -1 for a free image slot, else the token id that the
            grammar forces there (end-of-line, header, end-of-image, ...). Its length is T.
        image_start: first image-code id in the model's vocabulary (inclusive).
        image_end: one past the last image-code id.
        row_stride: generated offsets between vertically adjacent codes (width plus EOL column).
    """

    height: int
    width: int
    forced: tuple[int, ...]
    image_start: int
    image_end: int
    row_stride: int

    @property
    def length(self) -> int:
        return len(self.forced)

    @property
    def num_image_ids(self) -> int:
        return self.image_end - self.image_start

    def code_offsets(self) -> list[int]:
        """Offsets of the free (image-code) slots, in raster order."""
        return [a for a, f in enumerate(self.forced) if f < 0]

    def __post_init__(self) -> None:
        codes = sum(1 for f in self.forced if f < 0)
        if codes != self.height * self.width:
            raise ValueError(
                f"Layout has {codes} free slots, expected height*width={self.height * self.width}"
            )
        if not 0 <= self.image_start < self.image_end:
            raise ValueError(f"Layout image range [{self.image_start}, {self.image_end}) is empty")
