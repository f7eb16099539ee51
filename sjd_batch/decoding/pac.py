"""SJD-PAC's Proactive Drafting: after a rejection the next window is a shallow draft tree.

SJD-PAC (Kang et al., arXiv 2603.18599; code KangJialiang/SJD-PAC) pairs two ideas. Adaptive
Continuation is maximal coupling of the carried drafts (`drafting.carried_drafts`, shared with
MC-SJD). Proactive Drafting, here: when an iteration ends in a rejection, the laws it computed for
the next positions are stale (they saw the rejected draft) but still informative, so the next
window spends some of its L slots on K drafts per depth for the first D depths, drawn without
replacement from those laws, under every parent (a full K-ary tree), and one chain after it.

sjd-batch's own design: every row picks its shape per iteration (a chain after a fully accepted
window, a tree after a rejection), all rows run in one forward with a per-row tree mask and
depth-based positions, off-path nodes write their KV to scratch slots and the accepted ones are
copied to their canonical slots (`tree.accepted_kv_moves`), and siblings are verified by textbook
recursive rejection sampling with a fresh u each (`tree_verify.py`), which is exactly lossless.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from sjd_batch.decoding import rng
from sjd_batch.decoding.drafting import carried_drafts, draft_law, init_drafts
from sjd_batch.decoding.jacobi import Context, next_laws, previous_laws
from sjd_batch.decoding.methods import DecodeConfig
from sjd_batch.decoding.sampling import processed_probs
from sjd_batch.decoding.state import IterationResult, JacobiState, row_index
from sjd_batch.decoding.tree import RowTopology, Shapes, TreeState, accepted_kv_moves, tree_window
from sjd_batch.decoding.tree_verify import TreeVerdict, verify_tree


def forward_width(config: DecodeConfig) -> int:
    """Tokens one tree forward feeds: the window's L plus the tree's off-path nodes."""
    return shapes_for(config.window, config.tree_width, config.tree_depth, "cpu").size


@lru_cache(maxsize=16)
def shapes_for(window: int, width: int, depth: int, device: str) -> Shapes:
    return Shapes(window, width, depth, torch.device(device))


def initial_tree(batch: int, config: DecodeConfig, device: torch.device) -> TreeState:
    """Every slot starts with a chain (no iteration has been rejected yet); `reset_tree` at refill."""
    zeros = torch.zeros(batch, dtype=torch.long, device=device)
    siblings = torch.zeros(batch, config.tree_depth, config.tree_width - 1, dtype=torch.long, device=device)
    return TreeState(siblings, zeros.bool(), zeros, zeros.clone())


def reset_tree(tree: TreeState, slots: torch.Tensor) -> None:
    """New samples in `slots`: their first window is a chain, their counters start at 0."""
    tree.branching[slots], tree.trees[slots], tree.sibling_accepts[slots] = False, 0, 0


def tree_step(ctx: Context, state: JacobiState) -> IterationResult:
    """One forward over every slot's chain or tree, then verify, commit, move KV and redraft."""
    assert state.tree is not None and state.laws is not None
    config, width, n = ctx.config, ctx.width, state.n
    topo = shapes_for(width, config.tree_width, config.tree_depth, str(n.device)).rows(state.tree.branching)
    x = node_tokens(state.seq, state.tree.siblings, n, topo)
    drafts = state.seq.gather(1, n[:, None] + ctx.span[:-1])  # the rank-0 drafts, offsets n .. n+L-2
    q = state.laws.rows(ctx.span[:-1].expand_as(drafts), drafts, ctx.grammar.image)  # dense [B, L-1, V]
    root = ctx.prefix_slots - 1 + n
    scratch = ctx.total_slots - x.shape[1]  # off-path node w writes its KV at scratch + w
    p = _forward(ctx, x, root, topo, scratch, n)
    limit = (ctx.length - n).clamp(0, width)
    verdict = verify_tree(p, x, q, topo, n, limit, ctx.seeds)
    src, dst = accepted_kv_moves(verdict.path, topo.main, root, scratch, config.tree_depth)
    ctx.cache.copy_slots(*_doubled(ctx, src, dst))
    seq = _commit(state.seq, x, verdict, n, width)
    seq, laws, prev_src = _redraft(ctx, state, seq, drafts, p, _carry(topo, verdict, limit, width), verdict.m)
    nxt = n + verdict.m + 1
    offsets = nxt[:, None] + torch.arange(config.tree_depth, device=n.device)
    depth_k = torch.arange(config.tree_depth, device=n.device).expand_as(offsets)
    next_drafts = seq.gather(1, nxt[:, None] + ctx.span[:-1])
    law = laws.rows(depth_k, next_drafts, ctx.grammar.image)  # [B, D, V]
    siblings = draw_siblings(law, seq.gather(1, offsets), offsets, state.forwards, ctx.seeds, config)
    tree = TreeState(siblings, ~verdict.bonus, topo.branching.long(), verdict.siblings)
    k = ctx.span[:-1]
    tested = (k < limit[:, None] - 1) & (k <= verdict.m[:, None])
    accepted = k < verdict.m[:, None]
    prev_p = p if config.vp_lambda > 0 else state.prev_p
    return IterationResult(seq, verdict.m, tested, accepted, laws, prev_p, prev_src, tree)


def _redraft(ctx: Context, state: JacobiState, seq: torch.Tensor, drafts: torch.Tensor, p: torch.Tensor,
             carry: tuple[torch.Tensor, torch.Tensor, torch.Tensor], m: torch.Tensor):
    """The next window's drafts (as `jacobi_step` draws them, from the laws down the accepted path),
    their compact laws and SJD-VP's rows of p for the next window. Returns (seq, laws, prev_src)."""
    config, width, n = ctx.config, ctx.width, state.n
    node, has, frontier = carry  # [B, L] node covering next offset n' + j, whether it exists; [B]
    span = ctx.span
    # This window's slot s (offset n + s) takes its law from the node covering that offset.
    j = (span - m[:, None] - 1).clamp(0, width - 1)
    p_slot = p[row_index(n.shape[0], n.device), node.gather(1, j)]  # whole rows by indexing
    law = draft_law(p_slot, *previous_laws(state, p_slot, config), config)
    _, u_draft = ctx.streams.draw(ctx.seeds, n, state.forwards)
    x_all = carried_drafts(law, drafts, state.laws, u_draft, ctx.grammar.image, config)
    src = m[:, None] + 1 + span[:-1]
    carried, take = has[:, :-1], src.clamp(max=width - 1)
    x_next = x_all.gather(1, take)
    offsets = (n + m + 1)[:, None] + span[:-1]
    seq = seq.scatter(1, offsets, torch.where(carried, x_next, 0))  # spatial init reads carried drafts
    gumbel = None if u_draft.gumbel is None else u_draft.gumbel.gather(1, src)
    x_init, uniform = init_drafts(seq, offsets, offsets[:, 0] + carried.sum(1), p[ctx.rows, frontier],
                                  u_draft.init.gather(1, src), ctx.grammar, config, gumbel)
    seq = seq.scatter(1, offsets, torch.where(carried, x_next, x_init))
    table = p_slot if config.vp_lossy else law  # LOSSY mode verifies against P_t
    laws = next_laws(table, x_all, take, carried, uniform, ctx.grammar.num_image_ids)
    prev_src = torch.where(has, node, -1) if config.vp_lambda > 0 else state.prev_src
    return seq, laws, prev_src


def node_tokens(
    seq: torch.Tensor, siblings: torch.Tensor, n: torch.Tensor, topo: RowTopology
) -> torch.Tensor:
    """[B, L] token of every node: rank 0 reads the chain of drafts in `seq` at its depth, rank r > 0
    the depth's r-th sibling."""
    depth, rank = topo.depth, topo.rank
    chain = seq.gather(1, n[:, None] - 1 + depth)
    per_depth = siblings.shape[2]
    if per_depth == 0:
        return chain
    index = (depth - 1).clamp(0, siblings.shape[1] - 1) * per_depth + (rank - 1).clamp_min(0)
    return torch.where(rank > 0, siblings.flatten(1).gather(1, index), chain)


def draw_siblings(
    law: torch.Tensor,  # [B, D, V] laws of the next drafts at depths 1 .. D
    main: torch.Tensor,  # [B, D] the rank-0 drafts there
    offsets: torch.Tensor,  # [B, D]
    step: torch.Tensor,  # [B]
    seeds: torch.Tensor,
    config: DecodeConfig,
) -> torch.Tensor:
    """[B, D, K-1] drafts of ranks 1 .. K-1: the rest of a draw of K without replacement from `law`.

    Given the rank-0 draft x_0 ~ law, the others are the top K-1 of an exponential race over the
    law without x_0: the Gumbel-top-k trick samples without replacement. Under Gumbel coupling the
    race is the position's fixed one, whose winner x_0 already is. Ranks past the law's support are
    never accepted (`verify_tree` checks the support); they hold x_0 to keep the ids legal.
    """
    width = config.tree_width
    if config.coupling == "gumbel":
        k = rng.key(seeds, rng.GUMBEL, offsets)
    else:
        k = rng.key(seeds, rng.SIBLING, offsets, step)
    scores = rng.race_scores(law, k).scatter(-1, main[..., None], -1.0)
    picks = scores.topk(width - 1, dim=-1).indices
    exists = (law > 0).sum(-1, keepdim=True) > torch.arange(1, width, device=law.device)
    return torch.where(exists, picks, main[..., None])


def _forward(
    ctx: Context, x: torch.Tensor, root: torch.Tensor, topo: RowTopology, scratch: int, n: torch.Tensor
) -> torch.Tensor:
    """P [B, L, V] after every node, from one forward of every row's tree."""
    ids, parts = x, (root, topo.depth, topo.main, topo.ancestors)
    if ctx.sampling.uses_cfg:  # both halves receive the same trees
        ids, parts = torch.cat([x, x]), tuple(torch.cat([t, t]) for t in parts)
    window = tree_window(parts[0], ctx.start, *parts[1:], scratch, ctx.total_slots, ctx.prefix_slots)
    logits = ctx.model.forward(ctx.cache, ids, window)
    return processed_probs(logits, n[:, None] + topo.depth, ctx.grammar, ctx.sampling)


def _doubled(ctx: Context, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(torch.cat([t, t]) for t in tensors) if ctx.sampling.uses_cfg else tensors


def _commit(seq: torch.Tensor, x: torch.Tensor, verdict: TreeVerdict, n: torch.Tensor, width: int):
    """Write the accepted path's tokens at n .. n+m-1 (m < L) and the new token at n+m."""
    depth = torch.arange(1, width, device=x.device)
    at = n[:, None] - 1 + depth
    path = x.gather(1, verdict.path[:, 1:width].clamp_min(0))
    seq = seq.scatter(1, at, torch.where(depth <= verdict.m[:, None], path, seq.gather(1, at)))
    return seq.scatter(1, (n + verdict.m)[:, None], verdict.new[:, None])


def _carry(topo: RowTopology, verdict: TreeVerdict, limit: torch.Tensor, width: int):
    """The next window inherits the laws down the rank-0 path below the last accepted node: for next
    offsets n' + j, (node whose law covers it [B, L], whether that law exists [B, L], the node whose
    law covers the offset before the first init draft [B])."""
    rows = torch.arange(limit.shape[0], device=limit.device)
    child = topo.first_child[rows, verdict.last]
    src = topo.chain_from[rows, child.clamp_min(0), :width]  # [B, L]: a rank-0 path has at most L nodes
    k = torch.arange(src.shape[1], device=src.device)
    has = (src >= 0) & (verdict.m[:, None] + 1 + k <= limit[:, None] - 1) & ~verdict.bonus[:, None]
    last = (has.sum(1) - 1).clamp_min(0)
    frontier = torch.where(has.any(1), src.gather(1, last[:, None])[:, 0], verdict.last)
    return src.clamp_min(0), has, frontier
