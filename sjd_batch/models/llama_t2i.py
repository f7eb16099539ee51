"""A transformers `LlamaForCausalLM` over [special | word | image-code] tokens: the family of the
models sjd-batch builds itself (`tiny-random`, and the trained `shapes-t2i`).

Sequence: `[BOS] caption words [BOI]` then the image layout of Lumina-mGPT and Emu3: H rows of
W codes, each row followed by an end-of-line token, then an end-of-image token. Image ids sit in
their own range at the end of the vocabulary. The unconditional context for CFG is the empty
caption `[BOS] [BOI]`, which caption dropout trains.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Sequence

import torch

from sjd_batch.decoding.protocol import Layout, Prefix, Window
from sjd_batch.decoding.sampling import SamplingConfig
from sjd_batch.models.hf_causal import SlotCache, forward_window, new_slot_cache

PAD, BOS, BOI, EOI, EOL, UNK = 0, 1, 2, 3, 4, 5
NUM_SPECIAL = 6
_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class Vocabulary:
    """Word-level text vocabulary plus image codes.

    Attributes:
        words: known words; ids NUM_SPECIAL .. NUM_SPECIAL+len(words)-1.
        num_codes: image codebook size; codes live at the end of the vocabulary.
        hash_words: map unknown words to a stable hashed known id instead of UNK (for random models
            that have no meaningful vocabulary).
        row_markers: 0 for one shared end-of-line id (EOL) after every row, as Lumina-mGPT and Emu3
            do; R > 0 for R distinct end-of-line ids, one per row, appended after the codes. They
            are still forced tokens, so decoding is unchanged, but they tell a small model which
            row it is in without counting: at 16 rows, RoPE distance to [BOI] alone resolves rows
            poorly for a 1M-parameter model, and the grid cell is what the caption names.
    """

    words: tuple[str, ...]
    num_codes: int
    hash_words: bool = False
    row_markers: int = 0

    @property
    def code_start(self) -> int:
        return NUM_SPECIAL + len(self.words)

    @property
    def code_end(self) -> int:
        return self.code_start + self.num_codes

    @property
    def size(self) -> int:
        return self.code_end + self.row_markers

    def eol(self, row: int) -> int:
        """The end-of-line id that closes image row `row`."""
        if not self.row_markers:
            return EOL
        if not 0 <= row < self.row_markers:
            raise ValueError(f"row {row} has no end-of-line marker (the vocabulary has {self.row_markers})")
        return self.code_end + row

    @cached_property
    def _index(self) -> dict[str, int]:
        return {w: i + NUM_SPECIAL for i, w in enumerate(self.words)}

    def word_ids(self, text: str) -> list[int]:
        return [self._index.get(w, self._unknown(w)) for w in _WORD.findall(text.lower())]

    def _unknown(self, word: str) -> int:
        if not self.hash_words or not self.words:
            return UNK
        digest = hashlib.blake2b(word.encode(), digest_size=4).digest()
        return NUM_SPECIAL + int.from_bytes(digest, "little") % len(self.words)


def row_layout(height: int, width: int, vocab: Vocabulary) -> Layout:
    """H rows of (W free code slots + the row's end-of-line id), then EOI."""
    forced = [t for row in range(height) for t in [-1] * width + [vocab.eol(row)]] + [EOI]
    return Layout(height, width, tuple(forced), vocab.code_start, vocab.code_end, row_stride=width + 1)


class LlamaT2IModel:
    """`ImageTokenModel` over an HF Llama; `pixels` turns codes [B, H, W] into uint8 [B, h, w, 3]."""

    def __init__(
        self,
        name: str,
        lm: torch.nn.Module,
        vocab: Vocabulary,
        layout: Layout,
        pixels: Callable[[torch.Tensor], torch.Tensor],
        default_sampling: SamplingConfig,
        max_prompt_tokens: int = 64,
        prompt_sampler: Callable[[int, int], list[str]] | None = None,
    ) -> None:
        if lm.config.vocab_size != vocab.size:
            raise ValueError(f"{name}: LM vocab {lm.config.vocab_size} != tokenizer vocab {vocab.size}")
        self.name = name
        self.lm = lm.eval()
        self.vocab = vocab
        self.layout = layout
        self.vocab_size = vocab.size
        self.default_sampling = default_sampling
        self.max_prompt_tokens = max_prompt_tokens
        self.has_uncond = True
        self._pixels = pixels
        self._prompt_sampler = prompt_sampler
        param = next(lm.parameters())
        self.device, self.dtype = param.device, param.dtype

    def example_prompts(self, count: int, seed: int = 0) -> list[str]:
        """`count` captions in the model's own language (benchmarks use them); deterministic in `seed`."""
        if self._prompt_sampler is not None:
            return self._prompt_sampler(count, seed)
        words = self.vocab.words or ("image",)
        return [" ".join(words[(seed + i + j) % len(words)] for j in range(4)) for i in range(count)]

    def tokenize(self, prompt: str, index: int = 0) -> list[int]:
        """[BOS] words [BOI]; raises ValueError naming the prompt when it is too long."""
        ids = self.vocab.word_ids(prompt)
        if len(ids) > self.max_prompt_tokens:
            raise ValueError(
                f"prompt {index} has {len(ids)} tokens; model {self.name} accepts at most "
                f"{self.max_prompt_tokens}"
            )
        return [BOS, *ids, BOI]

    def encode(
        self, prompts: Sequence[str], negative_prompts: Sequence[str | None] | None, with_uncond: bool
    ) -> Prefix:
        rows = [self.tokenize(p, i) for i, p in enumerate(prompts)]
        if with_uncond:
            negatives = negative_prompts or [None] * len(prompts)
            rows += [self.tokenize(n or "", i) for i, n in enumerate(negatives)]
        return left_pad(rows, self.device)

    def new_cache(self, rows: int, slots: int) -> SlotCache:
        return new_slot_cache(self.lm, rows, slots)

    def forward(self, cache: SlotCache, ids: torch.Tensor, window: Window) -> torch.Tensor:
        return forward_window(self.lm, cache, ids, window)

    def codes(self, tokens: torch.Tensor) -> torch.Tensor:
        """Generated tokens [B, T] -> code indices [B, H, W] (0-based in the codebook)."""
        offsets = torch.tensor(self.layout.code_offsets(), device=tokens.device)
        codes = tokens.index_select(1, offsets) - self.vocab.code_start
        return codes.clamp(0, self.vocab.num_codes - 1).view(-1, self.layout.height, self.layout.width)

    def decode_pixels(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._pixels(self.codes(tokens.to(self.device)))


def left_pad(rows: list[list[int]], device: torch.device, multiple: int = 8) -> Prefix:
    """Left-pad to a length rounded up to `multiple`, so most batches share one cache geometry."""
    longest = max(len(r) for r in rows)
    length = -(-longest // multiple) * multiple
    ids = torch.full((len(rows), length), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, length - len(r) :] = torch.tensor(r)
    start = torch.tensor([length - len(r) for r in rows], dtype=torch.long)
    return Prefix(ids=ids.to(device), start=start.to(device))
