"""Window topologies for proactive drafting (SJD-PAC): a chain, or a shallow tree then a chain.

A window of L nodes is fed in one forward. In a *chain* node w sits at depth w (the last committed
token, then L-1 drafts). In a *tree* (SJD-PAC's Proactive Drafting, Kang et al. arXiv 2603.18599)
the root (the last committed token) has K children at depth 1, drawn without replacement; every
node above depth D has K children the same way, for a full K-ary tree of depth D; then the
rank-0 path (the *main path*) continues as a chain to the end of the window. Siblings at one depth
are the same K tokens under every parent, so a depth needs only one list of drafts.

Node order: the main path first (node w at depth w for w < M), then the other tree nodes
breadth-first. Main-path nodes write their KV at their canonical cache slot (where AR would write
that position); the others write to scratch slots, and the accepted path's KV is copied back
(`accepted_kv_moves`). Every topology here is built once per (L, K, D) on the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from sjd_batch.decoding.protocol import Window


@dataclass(frozen=True)
class Topology:
    """One window shape, as index tensors over its L nodes (node 0 is the root).

    Attributes:
        depth: [L] depth below the root (the node predicts the position after its own).
        rank: [L] sibling rank under its parent (0 on the main path and the chain).
        parent: [L] parent node, -1 for the root.
        main: [L] bool, on the main path (canonical cache slot).
        ancestors: [L, L] bool, [w, v] = v is an ancestor of w or w itself.
        earlier: [L, L] bool, [w, v] = v is a sibling of w with a lower rank.
        family: [L] index of the node as a branching parent (K children), -1 otherwise.
        parents: [F] the branching parents; children: [F, K] their children, by rank.
        first_child: [L] the rank-0 child of each node, -1 for a leaf.
        chain_from: [L, L] [w, j] = the j-th node of the rank-0 path down from w (j = 0: w), or -1.
    """

    depth: torch.Tensor
    rank: torch.Tensor
    parent: torch.Tensor
    main: torch.Tensor
    ancestors: torch.Tensor
    earlier: torch.Tensor
    family: torch.Tensor
    parents: torch.Tensor
    children: torch.Tensor
    first_child: torch.Tensor
    chain_from: torch.Tensor

    @property
    def size(self) -> int:
        """Nodes of the window (the last dimension of every per-node field)."""
        return self.depth.shape[-1]


def tree_nodes(width: int, depth: int) -> int:
    """Nodes of a full `width`-ary tree of `depth` levels below the root, root included."""
    return sum(width**d for d in range(depth + 1))


@lru_cache(maxsize=32)
def build(window: int, width: int, depth: int) -> Topology:
    """The chain (width 1 or depth 0) or tree topology of a window of `window` nodes, on the CPU."""
    if width <= 1 or depth <= 0:
        width, depth = 1, 0
    if tree_nodes(width, depth) > window:
        raise ValueError(
            f"a {width}-ary tree of depth {depth} needs {tree_nodes(width, depth)} window slots; window "
            f"{window} is too small (use a larger window, a narrower or a shallower tree)"
        )
    parent, rank, node_depth = _layout(window, width, depth)
    return _tensors(parent, rank, node_depth, width)


def _layout(window: int, width: int, depth: int) -> tuple[list[int], list[int], list[int]]:
    """Parents, ranks and depths: the main path first, then the other tree nodes breadth-first."""
    main = window - (tree_nodes(width, depth) - 1 - depth)
    parent, rank, node_depth = [-1] + list(range(main - 1)), [0] * main, list(range(main))
    level = [0]
    for d in range(depth):  # every node above depth D has `width` children
        nxt = []
        for p in level:
            kids = [p + 1] if p < main else []  # a main node's rank-0 child is the next main node
            for r in range(len(kids), width):
                parent.append(p)
                rank.append(r)
                node_depth.append(d + 1)
                kids.append(len(parent) - 1)
            nxt += kids
        level = nxt
    assert len(parent) == window, (len(parent), window)
    return parent, rank, node_depth


def _tensors(parent: list[int], rank: list[int], node_depth: list[int], width: int) -> Topology:
    size = len(parent)
    anc = torch.zeros(size, size, dtype=torch.bool)
    for w in range(size):
        v = w
        while v >= 0:
            anc[w, v] = True
            v = parent[v]
    earlier = torch.zeros(size, size, dtype=torch.bool)
    kids: dict[int, list[int]] = {}
    for w in range(1, size):
        kids.setdefault(parent[w], []).append(w)
    for group in kids.values():
        for a in group:
            for b in group:
                earlier[a, b] = rank[b] < rank[a]
    branching = sorted(p for p, g in kids.items() if len(g) > 1)
    family = torch.full((size,), -1, dtype=torch.long)
    children = torch.full((len(branching), width), -1, dtype=torch.long)
    for f, p in enumerate(branching):
        family[p] = f
        for w in kids[p]:
            children[f, rank[w]] = w
    first_child = torch.full((size,), -1, dtype=torch.long)
    for p, group in kids.items():
        first_child[p] = next(w for w in group if rank[w] == 0)
    chain_from = torch.full((size, size), -1, dtype=torch.long)
    for w in range(size):
        v, j = w, 0
        while v >= 0:
            chain_from[w, j], v, j = v, int(first_child[v]), j + 1
    main = torch.tensor([all(rank[v] == 0 for v in _path(parent, w)) for w in range(size)])
    return Topology(
        depth=torch.tensor(node_depth),
        rank=torch.tensor(rank),
        parent=torch.tensor(parent),
        main=main,
        ancestors=anc,
        earlier=earlier,
        family=family,
        parents=torch.tensor(branching, dtype=torch.long),
        children=children[: len(branching)],
        first_child=first_child,
        chain_from=chain_from,
    )


def _path(parent: list[int], w: int) -> list[int]:
    out = []
    while w >= 0:
        out.append(w)
        w = parent[w]
    return out


@dataclass(frozen=True)
class RowTopology(Topology):
    """Each row's window shape for one iteration: the chain or the tree, picked per row.

    The fields of `Topology` with a leading batch dimension ([B, L], [B, L, L]; `parents` [B, F] and
    `children` [B, F, K] are the tree's in every row), and `branching` [B]: which rows really are trees.
    """

    branching: torch.Tensor


class Shapes:
    """The window shape of one (L, K, D), on the decode device: a main path of L nodes (the chain SJD
    would feed) plus the tree's off-path nodes, `size` = L + (1 + K + ... + K^D) - 1 - D in all.

    Every row feeds the same shape (static shapes, one forward); a row whose last iteration was fully
    accepted (`branching` False) has no sibling laws yet, so its off-path nodes ride along unverified.
    """

    PER_ROW = (
        "depth", "rank", "parent", "main", "ancestors", "earlier", "family", "first_child", "chain_from"
    )

    def __init__(self, window: int, width: int, depth: int, device: torch.device) -> None:
        extra = tree_nodes(width, depth) - 1 - depth if width > 1 else 0
        tree = build(window + extra, width, depth)
        self.tensors = {k: getattr(tree, k).to(device) for k in self.PER_ROW}
        self.parents, self.children = tree.parents.to(device), tree.children.to(device)
        self.size = tree.size

    def rows(self, branching: torch.Tensor) -> RowTopology:
        batch = branching.shape[0]
        return RowTopology(
            **{k: v.expand(batch, *v.shape) for k, v in self.tensors.items()},
            parents=self.parents.expand(batch, -1),
            children=self.children.expand(batch, -1, -1),
            branching=branching,
        )


def tree_window(
    root_slot: torch.Tensor,  # [R] slot of each row's root (its last committed token)
    start: torch.Tensor,  # [R] first real slot of each row
    depth: torch.Tensor,  # [R, L]
    main: torch.Tensor,  # [R, L] bool
    ancestors: torch.Tensor,  # [R, L, L] bool
    scratch: int,  # first scratch slot; off-path node w writes at scratch + w
    total_slots: int,
    prefix: int | None = None,  # P, the slot of generated offset 0 (`Window.prefix`)
) -> Window:
    """The window of a tree (or chain) forward: node w sits at root_slot + depth[w] in its row's
    sequence (position ids and layout offsets follow from it) and sees the committed context plus
    its own ancestors. Main-path nodes write their KV at that slot, the others at a scratch slot."""
    rows, width = depth.shape
    slots = root_slot[:, None] + depth
    write = torch.where(main, slots, scratch + torch.arange(width, device=depth.device))
    keys = torch.arange(total_slots, device=depth.device)
    context = (keys >= start[:, None]) & (keys < root_slot[:, None])  # [R, S]
    visible = context[:, None, :].expand(rows, width, total_slots).clone()
    visible.scatter_(2, write[:, None, :].expand(rows, width, width), ancestors)
    positions = (slots - start[:, None]).clamp_min(0)
    return Window(slots, positions, visible[:, None], True, prefix, write)


def accepted_kv_moves(
    path: torch.Tensor, main: torch.Tensor, root_slot: torch.Tensor, scratch: int, depth: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(src, dst) slots [R, D]: the accepted off-path nodes' KV, moved to their canonical slots.

    path [R, L] is the accepted node per depth (-1 past the accepted depth); depths past it, and
    main-path nodes, copy a slot onto itself (a no-op that keeps the shapes fixed).
    """
    levels = torch.arange(1, depth + 1, device=path.device)
    node = path[:, 1 : depth + 1]
    canonical = root_slot[:, None] + levels
    moved = (node >= 0) & ~main.gather(1, node.clamp_min(0))
    return torch.where(moved, scratch + node, canonical), canonical


@dataclass
class TreeState:
    """Per-row state of a tree decode (on the device), beside `JacobiState`.

    siblings: [B, D, K-1] the next tree's drafts of rank 1 .. K-1 at depths 1 .. D.
    branching: [B] bool, the next window is a tree (the last iteration ended in a rejection).
    trees: [B] long, forwards that fed a tree; sibling_accepts: [B] long, accepted rank > 0 drafts.
    """

    siblings: torch.Tensor
    branching: torch.Tensor
    trees: torch.Tensor
    sibling_accepts: torch.Tensor

    def observe(self, active: torch.Tensor, step: TreeState) -> None:
        """Take one iteration's proposal for the active rows; `step`'s counters are increments."""
        self.siblings = torch.where(active[:, None, None], step.siblings, self.siblings)
        self.branching = torch.where(active, step.branching, self.branching)
        self.trees = self.trees + (step.trees * active)
        self.sibling_accepts = self.sibling_accepts + (step.sibling_accepts * active)
