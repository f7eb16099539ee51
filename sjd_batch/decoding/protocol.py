"""The only seam between the decoding algorithms and a model family.

The core owns the geometry of the static, position-indexed KV cache; a model owns tokenisation,
its network and its pixel decoder. Every tensor the core hands a model is described by a `Window`.

Cache geometry (shared by every family, docs/design.md, section 8):

    slot:    0 ........ start_r ...... P-1 | P ......... P+T-1 | P+T .. P+T+L-1
    content: left padding | prompt row r   | generated offsets  | room for the last window

Generated offset `a` (0-based position in the image layout) is *input* at slot `P + a`; the output
of the forward at slot `P + a - 1` is the law of offset `a`. A row's key slot `j` is visible to a
query at slot `q` iff `start_r <= j <= q`, so stale KV of rejected drafts (slots past the row's
frontier) is never read and is simply overwritten later: rollback is free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import torch

from sjd_batch.decoding.layout import Layout

if TYPE_CHECKING:
    from sjd_batch.decoding.sampling import SamplingConfig


class PromptRejected(ValueError):
    """A model cannot take one prompt (too many tokens, a negative prompt it does not support, ...).

    The one error a batch job turns into a skipped sample: the runner decodes the batch again row by
    row, records the rejected row with this message in the stats `error` column and commits the rest.
    Any other exception from a model is a bug or a broken environment and fails the shard attempt, so
    it is retried and then reported, never recorded as a lost sample.
    """


@dataclass
class Prefix:
    """Tokenised prompts, left-padded to a common length P.

    Rows [0, B) are conditional; when CFG is on, rows [B, 2B) are the unconditional contexts of the
    same samples, in the same order.
    """

    ids: torch.Tensor  # [R, P] long
    start: torch.Tensor  # [R] long: first real slot of each row (= number of pad tokens)

    @property
    def rows(self) -> int:
        return self.ids.shape[0]

    @property
    def length(self) -> int:
        return self.ids.shape[1]


@dataclass
class Window:
    """Where a forward pass writes and what it may read, for R rows of W tokens.

    `slots` is where each token sits in its row's sequence (what AR would use: positions, layout
    offsets); `write_slots` is where its KV goes. They differ only for the off-path nodes of a draft
    tree (SJD-PAC), which write to scratch slots past the image; `visible` then encodes the tree.
    """

    slots: torch.Tensor  # [R, W] long: the token's slot in its row's sequence
    positions: torch.Tensor  # [R, W] long: position ids (slot - start)
    visible: torch.Tensor  # [R, 1, W, S] bool: key slot j visible to query w
    generated: bool  # True for image-layout tokens, False for the prompt prefill
    # P, the slot of generated offset 0 (models that map slots to layout offsets read it; None:
    # a caller that does not say, and such a model remembers P from its prefill)
    prefix: int | None = None
    write_slots: torch.Tensor | None = None  # [R, W] long: cache slot written (default: `slots`)

    def __post_init__(self) -> None:
        if self.write_slots is None:
            self.write_slots = self.slots


class ImageTokenModel(Protocol):
    """What the decoding core needs from a model family (docs/model-families.md, "The contract")."""

    name: str
    layout: Layout
    vocab_size: int
    device: torch.device
    dtype: torch.dtype
    default_sampling: SamplingConfig
    has_uncond: bool  # whether `encode(..., with_uncond=True)` is meaningful (CFG is possible)

    def encode(
        self, prompts: Sequence[str], negative_prompts: Sequence[str | None] | None, with_uncond: bool
    ) -> Prefix:
        """Tokenise B prompts into a Prefix of B rows, or 2B rows (cond then uncond) for CFG; raise
        `PromptRejected` (naming the prompt's index) for a prompt the model cannot take."""
        ...

    def new_cache(self, rows: int, slots: int) -> Any:
        """Allocate a KV cache for `rows` sequences of `slots` positions, once per batch.

        For draft trees (`sjd-pac`) the cache also has `copy_slots(src, dst)`: copy every layer's
        KV at slots src [R, C] to slots dst [R, C] (SlotCache has it).
        """
        ...

    def forward(self, cache: Any, ids: torch.Tensor, window: Window) -> torch.Tensor:
        """Run ids [R, W] at `window`, writing their KV into `cache`; return logits [R, W, V]."""
        ...

    def decode_pixels(self, tokens: torch.Tensor) -> torch.Tensor:
        """Turn generated token ids [B, T] into uint8 images [B, H, W, 3]."""
        ...


def prefill_window(prefix: Prefix, total_slots: int, end: int | None = None) -> Window:
    """The window of the prompt prefill: every prompt token at its own slot, the last one at `end - 1`.

    `end` (default: the prefix length) is P, the slot of generated offset 0. The engine writes every
    prompt right-aligned at a fixed P, so a sample's cache geometry never depends on its batch-mates.
    The real tokens of row r then start at slot `end - length + prefix.start[r]`.
    """
    rows, length = prefix.ids.shape
    end = length if end is None else end
    slots = (end - length + torch.arange(length, device=prefix.ids.device)).expand(rows, length)
    return _window(slots, prefix.start + (end - length), total_slots, generated=False, prefix=end)


def decode_window(
    first_slot: torch.Tensor, start: torch.Tensor, width: int, total_slots: int, prefix: int | None = None
) -> Window:
    """The window of one decode iteration: `width` tokens from each row's `first_slot` on."""
    slots = first_slot[:, None] + torch.arange(width, device=first_slot.device)
    return _window(slots, start, total_slots, generated=True, prefix=prefix)


def _window(
    slots: torch.Tensor, start: torch.Tensor, total_slots: int, generated: bool, prefix: int | None
) -> Window:
    keys = torch.arange(total_slots, device=slots.device)
    visible = (keys >= start[:, None, None]) & (keys <= slots[:, :, None])  # [R, W, S]
    # A left-padding query would see no key at all, and softmax over nothing is NaN; let it see
    # itself. Its output is never read.
    visible |= keys == slots[:, :, None]
    positions = (slots - start[:, None]).clamp_min(0)
    return Window(slots, positions, visible[:, None], generated, prefix)


def stack_prefixes(prefixes: list[Prefix], rows_per: int) -> Prefix:
    """One Prefix of G samples' rows (cond rows first, then uncond), left-padded to the longest."""
    if len(prefixes) == 1:
        return prefixes[0]
    width = max(p.length for p in prefixes)
    ids, start = [], []
    for half in range(rows_per):
        for p in prefixes:
            pad = width - p.length
            ids.append(torch.nn.functional.pad(p.ids[half], (pad, 0)))
            start.append(p.start[half] + pad)
    return Prefix(ids=torch.stack(ids), start=torch.stack(start))
