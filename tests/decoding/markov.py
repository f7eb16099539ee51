"""A first-order Markov "model" implementing the `ImageTokenModel` protocol.

Its law at every slot is a fixed function of the token fed there, so context dependence is as
strong as we like and the exact joint law is a product of table lookups. The transformer toy
checks the KV-cache path; this one makes biased samplers (lossy SJD-VP in particular) visibly
biased, because a changed draft changes the next law a lot.
"""

from __future__ import annotations

from typing import Sequence

import torch

from sjd_batch.decoding.protocol import Layout, Prefix, Window
from sjd_batch.decoding.sampling import SamplingConfig

PAD, EOL, EOI, COND, UNCOND = 0, 1, 2, 3, 4
FIRST_CODE = 5


class NoCache:
    """A first-order model keeps no keys or values: nothing to move when a tree path is accepted."""

    def copy_slots(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        pass


class MarkovToy:
    name = "markov-toy"
    has_uncond = True

    def __init__(
        self, height: int = 2, width: int = 3, codes: int = 3, scale: float = 3.0, seed: int = 0
    ) -> None:
        self.vocab_size = FIRST_CODE + codes
        forced = ([-1] * width + [EOL]) * height + [EOI]
        self.layout = Layout(height, width, tuple(forced), FIRST_CODE, self.vocab_size, row_stride=width + 1)
        gen = torch.Generator().manual_seed(seed)
        self.table = torch.randn(self.vocab_size, self.vocab_size, generator=gen, dtype=torch.float64) * scale
        self.device, self.dtype = torch.device("cpu"), torch.float64
        self.default_sampling = SamplingConfig()

    def encode(self, prompts: Sequence[str], negative_prompts, with_uncond: bool) -> Prefix:
        # a prompt is one token: COND, shifted by the prompt's length so prompts differ
        rows = [[PAD, COND + 0]] * 0 + [
            [PAD, FIRST_CODE + len(p) % (self.vocab_size - FIRST_CODE)] for p in prompts
        ]
        if with_uncond:
            rows += [[PAD, UNCOND]] * len(prompts)
        ids = torch.tensor(rows)
        return Prefix(ids=ids, start=torch.zeros(len(rows), dtype=torch.long))

    def new_cache(self, rows: int, slots: int) -> NoCache:
        return NoCache()

    def forward(self, cache: NoCache, ids: torch.Tensor, window: Window) -> torch.Tensor:
        logits = self.table[ids]
        return logits if window.generated else logits[:, -1:]

    def decode_pixels(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.zeros(tokens.shape[0], 1, 1, 3, dtype=torch.uint8)
