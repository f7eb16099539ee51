"""Verify a tree window (SJD-PAC's Proactive Drafting) in one pass over every row.

Siblings are verified by recursive rejection sampling without replacement (Jeon et al., "Recursive
Speculative Decoding", arXiv 2402.14160), in its textbook form with a fresh u per sibling. Under a
parent whose law is p, siblings x_0, x_1, ... were drawn without replacement from the stale law Q:
    target_0 = p, q_0 = Q
    sibling r passes iff u_r * q_r(x_r) < target_r(x_r)
    target_{r+1} = norm(max(0, target_r - q_r)),  q_{r+1} = norm(q_r without x_r)
The first passing sibling is accepted and the walk descends; if none passes, the committed token is
drawn from target_K. Exact for any Q: given that x_r was rejected, the rest outputs target_{r+1}
whatever x_r was, because target_{r+1} does not depend on x_r, and min(target_r, q_r) +
max(0, target_r - q_r) = target_r. A chain node is the case K = 1: SJD's test and residual.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sjd_batch.decoding import rng
from sjd_batch.decoding.tree import RowTopology
from sjd_batch.decoding.verify import residual_law


@dataclass
class TreeVerdict:
    """Outcome of verifying one tree (or chain) window per row."""

    m: torch.Tensor  # [B] accepted depth: drafts committed before the new token
    new: torch.Tensor  # [B] the resampled or bonus token, committed at offset n + m
    last: torch.Tensor  # [B] the deepest accepted node (0: the root)
    path: torch.Tensor  # [B, L] accepted node at each depth (-1 below m; path[:, 0] = 0)
    bonus: torch.Tensor  # [B] bool: the last accepted node had no child to test
    siblings: torch.Tensor  # [B] accepted nodes of rank > 0 (what proactive drafting bought)


def verify_tree(
    p: torch.Tensor,  # [B, L, V] law after each node, given the path to it
    x: torch.Tensor,  # [B, L] node tokens (x[:, 0] is the last committed token)
    q: torch.Tensor,  # [B, L-1, V] the law of the rank-0 draft at depth d is q[:, d-1]
    topo: RowTopology,
    n: torch.Tensor,  # [B] committed tokens
    limit: torch.Tensor,  # [B] laws that exist: min(L, T - n)
    seeds: torch.Tensor,
) -> TreeVerdict:
    """Walk every row's tree from the root along the first passing child; commit one more token."""
    batch, width, vocab = p.shape
    depth, rank = topo.depth, topo.rank
    support = (q > 0).sum(-1)  # [B, L-1]: how many siblings a depth's law can give
    at_depth = (depth - 1).clamp_min(0)
    valid = (depth > 0) & (depth <= limit[:, None] - 1) & (rank < support.gather(1, at_depth))
    valid &= (rank == 0) | topo.branching[:, None]  # a chain row's off-path nodes are not drafts
    target, prop, tail = _sibling_laws(p, x, q, topo)
    u = _uniforms(seeds, n[:, None] - 1 + depth, rank)
    passed = valid & (u * prop < target)
    first = passed & ~(torch.bmm(topo.earlier.float(), passed.float()[..., None])[..., 0] > 0)
    first[:, 0] = True  # the root is committed
    chosen = torch.bmm(topo.ancestors.float(), (~first).float()[..., None])[..., 0] == 0
    last = torch.where(chosen, depth, -1).argmax(1)
    rows = torch.arange(batch, device=p.device)
    m = depth[rows, last]
    child = topo.first_child[rows, last]
    bonus = (child < 0) | (m > limit - 2)
    family = topo.family[rows, last]
    chain_residual = residual_law(p[rows, last], q[rows, m.clamp(max=q.shape[1] - 1)])
    siblings_tested = (family >= 0) & topo.branching
    residual = torch.where(siblings_tested[:, None], tail[rows, family.clamp_min(0)], chain_residual)
    new = torch.where(
        bonus,
        rng.race(p[rows, last], rng.key(seeds, rng.BONUS, n + m)),
        rng.race(residual, rng.key(seeds, rng.RESIDUAL, n + m)),
    )
    path = torch.full_like(depth, -1).scatter_reduce(
        1, depth, torch.where(chosen, torch.arange(width, device=p.device), -1), "amax"
    )
    siblings = (chosen & (rank > 0)).sum(1)
    return TreeVerdict(m=m, new=new, last=last, path=path, bonus=bonus, siblings=siblings)


def _uniforms(seeds: torch.Tensor, offsets: torch.Tensor, rank: torch.Tensor) -> torch.Tensor:
    """u per node: rank 0 draws the chain's ACCEPT uniform of its offset, rank r a SIBLING one."""
    chain = rng.uniform(rng.key(seeds, rng.ACCEPT, offsets))
    sibling = rng.uniform(rng.key(seeds, rng.SIBLING_ACCEPT, offsets * 8 + rank))
    return torch.where(rank > 0, sibling, chain)


def _sibling_laws(
    p: torch.Tensor, x: torch.Tensor, q: torch.Tensor, topo: RowTopology
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """target_r(x) and q_r(x) at every node [B, L], and each branching parent's final residual [B, F, V].

    Rank-0 nodes read p of their parent and Q of their depth directly; ranks r > 0 exist only under
    branching parents and read the recursion of the module docstring.
    """
    batch, width, vocab = p.shape
    flat_p, flat_q = p.reshape(batch, -1), q.reshape(batch, -1)
    at_depth = (topo.depth - 1).clamp_min(0)
    target = flat_p.gather(1, topo.parent.clamp_min(0) * vocab + x)
    prop = flat_q.gather(1, at_depth * vocab + x)
    parents, kids = topo.parents, topo.children  # [B, F], [B, F, K]
    if parents.shape[1] == 0:
        return target, prop, p[:, :0]
    rows = torch.arange(batch, device=p.device)[:, None]
    t_r = p[rows, parents]  # [B, F, V]
    q_r = q[rows, topo.depth[rows, parents]]  # children of a parent at depth d sit at depth d + 1
    sx = x.gather(1, kids.flatten(1)).view_as(kids)  # [B, F, K] sibling tokens by rank
    support = (q_r > 0).sum(-1)
    t_at, q_at = [], []
    for r in range(kids.shape[2]):  # K is 3 or 4: a static loop over ranks, vectorised over rows
        xr = sx[..., r : r + 1]
        t_at.append(t_r.gather(-1, xr)[..., 0])
        q_at.append(q_r.gather(-1, xr)[..., 0])
        live = (support > r)[..., None]
        res = (t_r - q_r).clamp_min(0)
        z = res.sum(-1, keepdim=True)
        t_r = torch.where(live & (z > 0), res / z.clamp_min(1e-300), t_r)
        q_r = q_r.scatter(-1, xr, 0.0)
        q_r = torch.where(live, q_r / q_r.sum(-1, keepdim=True).clamp_min(1e-300), q_r)
    node = kids.flatten(1)  # each child's (family, rank) value goes to its node; chain rows keep theirs
    tree = topo.branching[:, None]
    t_new, q_new = torch.stack(t_at, -1).flatten(1), torch.stack(q_at, -1).flatten(1)
    target = target.scatter(1, node, torch.where(tree, t_new, target.gather(1, node)))
    prop = prop.scatter(1, node, torch.where(tree, q_new, prop.gather(1, node)))
    return target, prop, t_r
