"""A transformers `LlamaForCausalLM` over [special | word | image-code] tokens: the family of the
models sjd-batch builds itself (`tiny-random`, and the trained `shapes-t2i`).

Sequence: `[BOS] caption words [BOI]` then the image layout of Lumina-mGPT and Emu3: H rows of
W codes, each row followed by an end-of-line token, then an end-of-image token. Image ids sit in
their own range at the end of the vocabulary. The unconditional context for CFG is the empty
caption `[BOS] [BOI]`, which caption dropout trains.

Optionally (`GridPositions`) each image-layout token's input embedding also gets a learned row and
column vector, an absolute 2-D position. The LM is still a plain `LlamaForCausalLM` (fed
`inputs_embeds`); the two small tables are stored beside it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Sequence

import torch

from sjd_batch.decoding.protocol import Layout, Prefix, PromptRejected, Window
from sjd_batch.decoding.sampling import SamplingConfig
from sjd_batch.models.blocks.hf_causal import SlotCache, forward_window, new_slot_cache
from sjd_batch.models.blocks.hf_generate import generate_layout

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
        positions: place names ("top left", ...). When given, a caption phrase "<words> at <place>"
            is tokenised into position-bound tokens "<word>@<place>", one per word except "a",
            appended after the row markers (see `bound_words`). Phrases without a known place keep
            plain word ids.
    """

    words: tuple[str, ...]
    num_codes: int
    hash_words: bool = False
    row_markers: int = 0
    positions: tuple[str, ...] = ()

    @property
    def code_start(self) -> int:
        return NUM_SPECIAL + len(self.words)

    @property
    def code_end(self) -> int:
        return self.code_start + self.num_codes

    @property
    def size(self) -> int:
        return self.code_end + self.row_markers + len(self.bound_words)

    @cached_property
    def bound_words(self) -> tuple[str, ...]:
        """Position-bound token names "<word>@<place>", place-major, over the attribute words.

        Why: a caption binds attributes to places through phrase structure ("a red circle at top
        left and a blue square at center"). Real text-to-image models leave that binding to a large
        text encoder (T5 in LlamaGen, the LLM itself in Lumina-mGPT); a 1M-parameter decoder without
        one learnt colours and rows but kept drawing each object into several cells. With bound
        tokens, the image token of a cell finds its object's attributes by content in one attention
        hop. The tokens are still read from the caption text alone.
        """
        place_words = {w for p in self.positions for w in p.split()}
        attributes = [w for w in self.words if w not in place_words and w not in _GLUE]
        return tuple(f"{w}@{p}" for p in self.positions for w in attributes)

    def eol(self, row: int) -> int:
        """The end-of-line id that closes image row `row`."""
        if not self.row_markers:
            return EOL
        if not 0 <= row < self.row_markers:
            raise ValueError(f"row {row} has no end-of-line marker (the vocabulary has {self.row_markers})")
        return self.code_end + row

    @cached_property
    def _index(self) -> dict[str, int]:
        first_bound = self.code_end + self.row_markers
        return {w: i + NUM_SPECIAL for i, w in enumerate(self.words)} | {
            w: first_bound + i for i, w in enumerate(self.bound_words)}

    def word_ids(self, text: str) -> list[int]:
        """Caption ids: plain word ids, or bound ids per "... at <place>" phrase (with `positions`)."""
        words = _WORD.findall(text.lower())
        if not self.positions:
            return [self._plain(w) for w in words]
        ids: list[int] = []
        for phrase in _phrases(words):
            place = _place(phrase, self.positions)
            if place is None:
                ids += [self._plain(w) for w in phrase]
            else:  # "a large red circle at top left" -> large@top left, red@top left, circle@top left
                attrs = phrase[: len(phrase) - len(place.split()) - 1]
                ids += [self._index.get(f"{w}@{place}", self._plain(w)) for w in attrs if w != "a"]
        return ids

    def _plain(self, word: str) -> int:
        return self._index.get(word, self._unknown(word))

    def _unknown(self, word: str) -> int:
        if not self.hash_words or not self.words:
            return UNK
        digest = hashlib.blake2b(word.encode(), digest_size=4).digest()
        return NUM_SPECIAL + int.from_bytes(digest, "little") % len(self.words)


_GLUE = ("a", "at", "and")  # words that carry no attribute of their own


def _phrases(words: list[str]) -> list[list[str]]:
    """Split a word list at "and" (the caption grammar's phrase separator)."""
    out: list[list[str]] = [[]]
    for w in words:
        if w == "and":
            out.append([])
        else:
            out[-1].append(w)
    return [p for p in out if p]


def _place(phrase: list[str], positions: tuple[str, ...]) -> str | None:
    """The place a phrase ends with ("... at top left" -> "top left"), or None."""
    for place in sorted(positions, key=len, reverse=True):
        n = len(place.split())
        if len(phrase) > n and phrase[-n - 1] == "at" and " ".join(phrase[-n:]) == place:
            return place
    return None


def row_layout(height: int, width: int, vocab: Vocabulary) -> Layout:
    """H rows of (W free code slots + the row's end-of-line id), then EOI."""
    forced = [t for row in range(height) for t in [-1] * width + [vocab.eol(row)]] + [EOI]
    return Layout(height, width, tuple(forced), vocab.code_start, vocab.code_end, row_stride=width + 1)


class GridPositions(torch.nn.Module):
    """Learned absolute 2-D positions of the image layout: row[r] + col[c] for layout offset t.

    Why: RoPE only gives relative distances, and the caption names absolute grid cells. A 1M-parameter
    model learnt the row (per-row end-of-line ids tell it) but not the column: it painted a named
    object into every cell of its row. Counting tokens since the last end-of-line through attention
    is hard for a small model; an additive column vector makes "which column am I in" one lookup.
    LlamaGen gets the same from 2-D RoPE (FoundationVision/LlamaGen); an additive table keeps the
    backbone a stock transformers Llama. Offset t of a layout with row stride S is row t // S,
    column t % S (the end-of-line is column W; the end-of-image token is row H, column 0).
    """

    def __init__(self, rows: int, row_stride: int, hidden: int) -> None:
        super().__init__()
        self.row_stride = row_stride
        self.row = torch.nn.Parameter(torch.zeros(rows + 1, hidden))
        self.col = torch.nn.Parameter(torch.zeros(row_stride, hidden))

    @property
    def length(self) -> int:
        return (self.row.shape[0] - 1) * self.row_stride + 1

    def forward(self, offsets: torch.Tensor) -> torch.Tensor:
        """[..., hidden] for layout offsets [...]; offsets outside the layout (the prompt) get zeros."""
        inside = (offsets >= 0) & (offsets < self.length)
        t = torch.where(inside, offsets, 0)
        vec = self.row[t // self.row_stride] + self.col[t % self.row_stride]
        return vec * inside.unsqueeze(-1).to(vec.dtype)

    def state(self) -> dict[str, torch.Tensor]:
        return {"row": self.row.detach().contiguous(), "col": self.col.detach().contiguous()}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> GridPositions:
        rows, hidden = state["row"].shape
        grid = cls(rows - 1, state["col"].shape[0], hidden)
        grid.load_state_dict(state)
        return grid


def image_offsets(ids: torch.Tensor) -> torch.Tensor:
    """Layout offset of every token of right-padded training rows [B, S]: position minus (BOI + 1).

    Prompt tokens (and BOI) get negative offsets, which `GridPositions` maps to zero vectors.
    """
    first = (ids == BOI).int().argmax(dim=1, keepdim=True) + 1
    return torch.arange(ids.shape[1], device=ids.device) - first


def input_embeds(lm: torch.nn.Module, ids: torch.Tensor, grid: GridPositions, offsets: torch.Tensor):
    """Token embeddings plus the grid positions of the layout tokens among them."""
    embeds = lm.get_input_embeddings()(ids)
    return embeds + grid(offsets).to(embeds.dtype)


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
        grid: GridPositions | None = None,
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
        if grid is not None and grid.length != layout.length:
            raise ValueError(
                f"{name}: grid positions cover {grid.length} offsets, layout has {layout.length}"
            )
        self.grid = grid.to(self.device, self.dtype).eval() if grid is not None else None

    @property
    def max_prompt_length(self) -> int:
        """Slots the longest prompt takes: its words plus [BOS] and [BOI], left-padded to a multiple of 8."""
        return -(-(self.max_prompt_tokens + 2) // 8) * 8

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
            raise PromptRejected(
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

    @property
    def hf_generate(self) -> Callable[[Sequence[str], int, SamplingConfig], torch.Tensor] | None:
        """transformers' own `generate()` on this LM (the bench baseline), or None for a model with grid
        positions: HF feeds token ids to the LM, and would leave out the row and column vectors."""
        return None if self.grid is not None else self._hf_generate

    @torch.inference_mode()
    def _hf_generate(self, prompts: Sequence[str], seed: int, sampling: SamplingConfig) -> torch.Tensor:
        rows = self.encode(prompts, None, with_uncond=True)  # the uncond rows (empty caption) ours use
        return generate_layout(self.lm, rows, self.layout, range(self.vocab.code_start, self.vocab.code_end),
                               PAD, EOI, seed, sampling)

    def new_cache(self, rows: int, slots: int) -> SlotCache:
        return new_slot_cache(self.lm, rows, slots)

    def forward(self, cache: SlotCache, ids: torch.Tensor, window: Window) -> torch.Tensor:
        if self.grid is None:
            return forward_window(self.lm, cache, ids, window)
        if not window.generated:  # the prefill: layout offset t is written at slot prefix_length + t
            cache.prefix_length = window.prefix if window.prefix is not None else ids.shape[1]
        prefix = window.prefix if window.prefix is not None else cache.prefix_length
        with torch.no_grad():
            embeds = input_embeds(self.lm, ids, self.grid, window.slots - prefix)
        return forward_window(self.lm, cache, ids, window, embeds=embeds)

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
