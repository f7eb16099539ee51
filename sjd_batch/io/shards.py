"""A job's shard plan: which rows of which input file each shard holds.

`ShardSpec` is one shard; `ShardPlan` is all of them, stored as one `InputFile` per input file (O(files)
memory). Pure data: reading the files is `sjd_batch.io.prompts`' job.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Iterator


@dataclass(frozen=True, slots=True)
class ShardSpec:
    """Rows `[row_start, row_end)` of the Parquet file at URI `source`; `index` is the shard number."""

    index: int
    source: str
    row_start: int
    row_end: int

    @property
    def num_rows(self) -> int:
        return self.row_end - self.row_start


@dataclass(frozen=True, slots=True)
class InputFile:
    """One input file of a plan, as its footer describes it: `footer` is 16 hex digits of a digest
    of the Parquet footer (schema, row groups, statistics), so with `size` it identifies the content."""

    uri: str
    rows: int
    has_id: bool
    size: int
    footer: str


@dataclass(frozen=True)
class ShardPlan:
    """Every shard of a job as row ranges of its files, in O(files) memory: shard specs are computed
    on demand (`plan[i]`, `iter(plan)`), never stored. Shard numbers run through the files in order;
    file k's shards are `shards_of(k)`."""

    files: tuple[InputFile, ...]
    shard_size: int
    _first: tuple[int, ...] = field(init=False, repr=False, compare=False)  # first shard of each file
    _row0: tuple[int, ...] = field(init=False, repr=False, compare=False)  # first global row of each file

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")
        first, row0, shards, rows = [], [], 0, 0
        for f in self.files:
            first.append(shards)
            row0.append(rows)
            shards += -(-f.rows // self.shard_size)
            rows += f.rows
        object.__setattr__(self, "_first", (*first, shards))
        object.__setattr__(self, "_row0", (*row0, rows))

    def __len__(self) -> int:
        return self._first[-1]

    @property
    def rows(self) -> int:
        return self._row0[-1]

    def __getitem__(self, index: int) -> ShardSpec:
        if not 0 <= index < len(self):
            raise IndexError(f"shard {index} is not in this plan of {len(self)} shards")
        k = bisect.bisect_right(self._first, index) - 1
        start = (index - self._first[k]) * self.shard_size
        f = self.files[k]
        return ShardSpec(index, f.uri, start, min(start + self.shard_size, f.rows))

    def __iter__(self) -> Iterator[ShardSpec]:
        return (self[i] for i in range(len(self)))

    def shards_of(self, file_index: int) -> range:
        return range(self._first[file_index], self._first[file_index + 1])

    def first_rows(self) -> tuple[int, ...]:
        """Global row number of each file's row 0, plus the total: global row = first_rows()[k] + row."""
        return self._row0
