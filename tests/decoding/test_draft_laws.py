"""Compact draft laws expand to exactly the rows they stand for (table rows, one-hot, uniform)."""

from __future__ import annotations

import torch

from sjd_batch.decoding.state import ONEHOT, UNIFORM, DraftLaws


def _reference(laws: DraftLaws, k: torch.Tensor, drafts: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """The rows by definition, one (row, draft) at a time."""
    batch, count = k.shape
    out = torch.empty(batch, count, laws.table.shape[-1], dtype=laws.table.dtype)
    for b in range(batch):
        for i in range(count):
            src, x = int(laws.src[b, k[b, i]]), int(drafts[b, k[b, i]])
            if src == ONEHOT:
                out[b, i] = torch.nn.functional.one_hot(torch.tensor(x), laws.table.shape[-1]).to(out.dtype)
            elif src == UNIFORM:
                out[b, i] = image.to(out.dtype) / image.sum()
            else:
                out[b, i] = laws.table[b, src]
    return out


def test_rows_equal_the_laws_they_stand_for_bit_for_bit():
    gen = torch.Generator().manual_seed(0)
    batch, width, vocab = 5, 7, 53
    table = torch.rand(batch, width, vocab, generator=gen).softmax(-1)
    image = torch.arange(vocab) >= 11
    drafts = torch.randint(11, vocab, (batch, width - 1), generator=gen)
    src = torch.randint(-2, width, (batch, width - 1), generator=gen)  # table rows and both implicit laws
    assert {ONEHOT, UNIFORM} <= set(src.flatten().tolist()) and (src >= 0).any()
    before = table.clone()
    laws = DraftLaws(torch.ones(batch, width - 1), src, table)
    k = torch.randint(0, width - 1, (batch, 4), generator=gen)
    assert torch.equal(laws.rows(k, drafts, image), _reference(laws, k, drafts, image))
    # the table is read, never written
    assert torch.equal(table, before)
