"""The family contract for draft trees (`sjd-pac`): tree masks, depth-based positions, scratch slots, and
the KV copy of an accepted off-path branch.

`assert_tree_matches_chains(model, prefix, total, seq)` (called by `assert_window_matches_stepwise`, so
every family runs it): after a committed context, one forward of a binary tree of depth 2 (8 nodes,
K = 2, D = 2: its off-path nodes write to scratch slots) must give, at every node, the logits of the
chain made of that node's path; then the KV of an accepted off-path branch is copied to its canonical
slots (`cache.copy_slots`), and a chain window fed after it must match the chain that committed that
branch directly.
"""

from __future__ import annotations

import torch

from sjd_batch.decoding.protocol import ImageTokenModel, Prefix, decode_window, prefill_window
from sjd_batch.decoding.tree import accepted_kv_moves, build, tree_window

WIDTH, DEPTH, WINDOW = 2, 2, 8


def assert_tree_matches_chains(
    model: ImageTokenModel, prefix: Prefix, seq: torch.Tensor, others: torch.Tensor, atol: float, rtol: float
) -> None:
    """seq [R, n] valid tokens (the main path continues them); others [R, n]: other valid tokens for
    the off-path nodes at the same offsets. The root is seq[:, 1] (offset 1)."""
    topo = build(WINDOW, WIDTH, DEPTH)
    nodes = _node_tokens(topo, seq, others)  # [R, L]
    total = prefix.length + model.layout.length + 2 * WINDOW
    scratch = total - WINDOW
    cache, tree = _tree_forward(model, prefix, seq, nodes, topo, total, scratch)
    leaves = [w for w in range(WINDOW) if not (topo.parent == w).any()]
    for leaf in leaves:
        path = [int(v) for v in reversed(topo.ancestors[leaf].nonzero()[:, 0].tolist())]
        path.sort(key=lambda v: int(topo.depth[v]))
        chain = _chain(model, prefix, torch.cat([seq[:, :1], nodes[:, path]], 1), total)
        got = tree[:, path]
        torch.testing.assert_close(got, chain[:, 1:], atol=atol, rtol=rtol,
                                   msg=lambda m, leaf=leaf: f"tree node path to {leaf} vs chain: {m}")
    branch = WINDOW - 1  # the last node: rank 1 under the root's rank-1 child, wholly off the main path
    _assert_copied_branch(model, prefix, cache, seq, nodes, topo, branch, total, scratch, atol, rtol)


def _node_tokens(topo, seq: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    at = 1 + topo.depth  # the root sits at offset 1
    return torch.where(topo.rank > 0, others[:, at], seq[:, at])


def _tree_forward(model, prefix, seq, nodes, topo, total, scratch):
    rows = prefix.rows
    cache = model.new_cache(rows, total)
    with torch.inference_mode():
        model.forward(cache, prefix.ids, prefill_window(prefix, total))
        model.forward(cache, seq[:, :1], _at(prefix, 0, 1, total))
        root = torch.full((rows,), prefix.length + 1, device=seq.device)
        window = tree_window(
            root, prefix.start, topo.depth.expand(rows, -1), topo.main.expand(rows, -1),
            topo.ancestors.expand(rows, -1, -1), scratch, total,
        )
        logits = model.forward(cache, nodes, window).float()
    return cache, logits


def _chain(model, prefix, tokens: torch.Tensor, total: int) -> torch.Tensor:
    """Logits of `tokens` fed as one chain window at offsets 0 .. on a fresh cache."""
    cache = model.new_cache(prefix.rows, total)
    with torch.inference_mode():
        model.forward(cache, prefix.ids, prefill_window(prefix, total))
        return model.forward(cache, tokens, _at(prefix, 0, tokens.shape[1], total)).float()


def _assert_copied_branch(model, prefix, cache, seq, nodes, topo, branch, total, scratch, atol, rtol):
    rows = prefix.rows
    path = torch.full((rows, WINDOW), -1, dtype=torch.long, device=seq.device)
    for v in topo.ancestors[branch].nonzero()[:, 0].tolist():
        path[:, int(topo.depth[v])] = v
    root = torch.full((rows,), prefix.length + 1, device=seq.device)
    src, dst = accepted_kv_moves(path, topo.main.expand(rows, -1), root, scratch, DEPTH)
    assert (src != dst).any(), "the chosen branch should leave the main path"
    cache.copy_slots(src, dst)
    branch_tokens = nodes[:, path[0, 1 : DEPTH + 1]]
    after = seq[:, 2 + DEPTH : 5 + DEPTH]  # the next window: offsets 1 + DEPTH + 1 .. (any valid ids)
    with torch.inference_mode():
        got = model.forward(cache, after, _at(prefix, 2 + DEPTH, after.shape[1], total)).float()
    want = _chain(model, prefix, torch.cat([seq[:, :2], branch_tokens, after], 1), total)[:, 2 + DEPTH :]
    torch.testing.assert_close(got, want, atol=atol, rtol=rtol, msg=lambda m: f"after the KV copy: {m}")


def _at(prefix: Prefix, offset: int, width: int, total: int):
    first = torch.full((prefix.rows,), prefix.length + offset, device=prefix.ids.device)
    return decode_window(first, prefix.start, width, total)
