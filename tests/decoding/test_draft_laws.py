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


def _coupling_case(seed: int):
    """Random MC-SJD redraw inputs: laws [B, J, V], drafts, compact old laws of every kind, uniforms."""
    gen = torch.Generator().manual_seed(seed)
    batch, count, vocab = 6, 9, 41
    head = torch.rand(batch, count, vocab, generator=gen).softmax(-1)
    image = torch.arange(vocab) >= 5
    drafts = torch.randint(5, vocab, (batch, count), generator=gen)
    table = torch.rand(batch, count + 1, vocab, generator=gen).softmax(-1)
    src = torch.randint(-2, count + 1, (batch, count), generator=gen)
    # one pair whose residual is empty (old law = new law = one-hot at the draft): the fallback row
    head[0, 3] = torch.nn.functional.one_hot(drafts[0, 3], vocab).float()
    src[0, 3] = ONEHOT
    laws = DraftLaws(torch.ones(batch, count), src, table)
    u = torch.rand(batch, count, generator=gen, dtype=torch.float64)
    move = torch.rand(batch, count, generator=gen) < 0.5
    return head, drafts, laws, u, image, move


def test_moved_rows_draw_the_dense_paths_tokens_where_a_draft_moves():
    # the CPU path redraws only the pairs that move; the GPU path draws all of them: where it matters
    # (a moving draft past slot 0) the tokens are the same, and the others keep their draft
    from sjd_batch.decoding.drafting import moved_dense, moved_rows

    for seed in range(5):
        head, drafts, laws, u, image, move = _coupling_case(seed)
        dense = moved_dense(head, drafts, laws, u, image)
        sparse = moved_rows(head, drafts, laws, u, image, move)
        used = move
        assert used.any() and torch.equal(sparse[used], dense[used])
        assert torch.equal(sparse[~used], drafts[~used])
        # negative control: other uniforms for the moving pairs give other tokens somewhere
        assert not torch.equal(moved_rows(head, drafts, laws, 1 - u, image, move)[used], dense[used])
