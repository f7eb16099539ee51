"""Write `jobs/prompts/demo.parquet`, the demo job's prompts (run from the repo root).

Captions use the `shapes-t2i` grammar ("a large red circle at top left and ..."), so the demo's images
can be checked by the shapes checker once that model is registered. The file is committed; rerun this
script only to change it. Columns: `id`, `prompt`, and `seed` (null: derived from the job seed).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SHAPES = ("circle", "square", "triangle", "cross")
COLORS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")
SIZES = ("small", "large")
POSITIONS = ("top left", "top middle", "top right", "middle left", "center", "middle right",
             "bottom left", "bottom middle", "bottom right")


def caption(rng: random.Random) -> str:
    cells = rng.sample(range(len(POSITIONS)), rng.randint(1, 3))
    return " and ".join(
        f"a {rng.choice(SIZES)} {rng.choice(COLORS)} {rng.choice(SHAPES)} at {POSITIONS[c]}" for c in cells
    )


def main(out: str = "jobs/prompts/demo.parquet", count: int = 24, seed: int = 0) -> None:
    rng = random.Random(seed)
    table = pa.table({
        "id": [f"demo-{i:04d}" for i in range(count)],
        "prompt": [caption(rng) for _ in range(count)],
        "seed": pa.array([None] * count, pa.int64()),
    })
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out, compression="zstd")
    print(f"wrote {count} prompts to {out}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
