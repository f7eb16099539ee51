"""One decode iteration over B slots, each at its own pace: plain AR, or Jacobi / SJD / SJD-VP / MC-SJD.

Vocabulary (used everywhere in sjd-batch; docs/design.md, section 3):
    window, L     the tokens fed to one forward: the last committed token plus L-1 drafts.
    forward       one network call on the whole batch; the cond/uncond CFG pair is one doubled batch and
                  counts once. The prefill is a forward. NFE = the number of forwards.
    iteration     one Jacobi iteration: a forward over every row's window, then verify, commit, redraft.
                  A sample's NFE is 1 (the prefill) + its iterations.
    draft         a proposed token for an uncommitted offset, stored with the law Q it was drawn from.
    accepted      a draft that passed the test u * Q(x) < P(x) and is committed.
    resampled     at the first rejection, the token drawn from norm(max(0, P - Q)) and committed.
    bonus         when every draft passes, a fresh draw from P of the slot after the last draft.
    accept length tokens committed by one forward: accepted drafts + 1 (the resampled or bonus token),
                  in [1, L]; the prefill's is 1, and a sample's accept lengths sum to its tokens.
    step compression  AR forwards / method forwards for the same sample ("step" means nothing else).
    init scheme   how a draft entering the window for the first time is chosen.

Each slot b keeps its own committed count n_b and advances by its own accept length, unlike the
reference code, which moves the whole batch at its slowest row's pace (docs/design.md, section 8). The loop
around these functions (slots, prefills, refills, statistics) is `engine.py`.

Per iteration: one forward, one call of `processed_probs` (its few passes over [B, L, V]: CFG mix,
grammar, top-k / top-p, softmax), then a fixed number of passes to verify and redraft (one cumulative
sum for the draft draws; SJD-VP and MC-SJD add theirs), about 220 small torch operators in all for an
SJD iteration (docs/benchmarks.md counts them). Every uniform of an iteration comes from one
`rng.uniforms` call; draft laws stay compact (`DraftLaws`); on a GPU nothing reads the device from the
host (on the CPU, with no device to wait for, MC-SJD picks the drafts to redraw on the host).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from sjd_batch.decoding import rng
from sjd_batch.decoding.drafting import DraftDraws, carried_drafts, draft_law, init_drafts
from sjd_batch.decoding.methods import DecodeConfig
from sjd_batch.decoding.protocol import ImageTokenModel, Window
from sjd_batch.decoding.sampling import Grammar, SamplingConfig, processed_probs
from sjd_batch.decoding.state import ONEHOT, UNIFORM, DraftLaws, IterationResult, JacobiState, row_index
from sjd_batch.decoding.verify import VerifyDraws, verify


def synced_clock(device: torch.device) -> float:
    """`time.perf_counter()` after the device's queued work is done (a no-op wait on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


@dataclass
class Context:
    """What stays fixed while the slots decode: model, cache, settings, geometry; plus per-slot keys.

    Cache geometry: every sample's prompt ends at slot P (`prefix_slots`, the same for every sample),
    generated offset a sits at slot P + a, and cache row r sees keys from `start[r]` on. So a
    sample's arithmetic does not depend on which slot it occupies or on its neighbours.
    """

    model: ImageTokenModel
    cache: object
    grammar: Grammar
    sampling: SamplingConfig
    config: DecodeConfig
    prefix_slots: int
    total_slots: int
    start: torch.Tensor  # [R] long: first visible key slot of each cache row (set at refill)
    seeds: torch.Tensor  # [B, 2] int64: seed words of the sample in each slot (set at refill)

    def __post_init__(self) -> None:
        device = self.seeds.device
        self.width = 1 if self.config.method == "ar" else self.config.window
        self.span = torch.arange(self.width, device=device)
        self.next_span = 1 + self.span[:-1]  # 1 .. L-1: next-draft j sits 1 + j past the new token
        self.rows = torch.arange(self.seeds.shape[0], device=device)
        self.keys = torch.arange(self.total_slots, device=device)
        self.length = self.model.layout.length
        self.streams = _StreamTable(self.width, self.config.coupling, device)

    def forward_probs(self, tokens: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        """Feed tokens [B, W] at offsets n-1 .. n+W-2; return P [B, W, V] for offsets n .. n+W-1."""
        offsets = n[:, None] + self.span  # [B, W]: the offsets these laws predict
        slots = offsets + (self.prefix_slots - 1)
        ids = tokens
        if self.sampling.uses_cfg:  # both halves receive the same tokens (and the same drafts)
            ids, slots = torch.cat([tokens, tokens]), torch.cat([slots, slots])
        visible = (self.keys <= slots[..., None]) & (self.keys >= self.start[:, None, None])  # [R, W, S]
        window = Window(slots, slots - self.start[:, None], visible[:, None], True, self.prefix_slots)
        logits = self.model.forward(self.cache, ids, window)
        return processed_probs(logits, offsets, self.grammar, self.sampling)


class _StreamTable:
    """Column layout of the one `rng.uniforms` call per iteration: (stream, window slot, keyed by step).

    Sections, for window slots s (offset n + s): ACCEPT s < L-1; RESIDUAL and AR (the bonus) s < L;
    DRAFT s < L and INIT s < 2L-1, keyed by the slot's iteration count; COUPLE and COUPLE_RESIDUAL
    s < L (MC-SJD only), keyed by the iteration count. Gumbel coupling adds race keys (not uniforms)
    GUMBEL s < 2L-1, keyed by the offset only: the same noise at every iteration.
    """

    def __init__(self, width: int, coupling: str, device: torch.device) -> None:
        coupled = coupling == "maximal"
        self.gumbel = 2 * width - 1 if coupling == "gumbel" else 0
        sections = [(rng.ACCEPT, width - 1, 0), (rng.RESIDUAL, width, 0), (rng.AR, width, 0),
                    (rng.DRAFT, width, 1), (rng.INIT, 2 * width - 1, 1)]
        if coupled:
            sections += [(rng.COUPLE, width, 1), (rng.COUPLE_RESIDUAL, width, 1)]
        self.sizes = [size for _, size, _ in sections]
        cols = [(stream, s, stepped) for stream, size, stepped in sections for s in range(size)]
        self.stream, self.slot, self.stepped = (
            torch.tensor(c, dtype=torch.long, device=device) for c in zip(*cols, strict=True)
        )

    def draw(self, seeds: torch.Tensor, n: torch.Tensor, step: torch.Tensor):
        u = rng.uniforms(seeds, self.stream, n[:, None] + self.slot, step[:, None] * self.stepped)
        parts = list(u.split(self.sizes, dim=1)) + [None, None]
        accept, residual, bonus, draft, init, couple, couple_res = parts[:7]
        gumbel = None
        if self.gumbel:
            gumbel = rng.key(seeds, rng.GUMBEL, n[:, None] + torch.arange(self.gumbel, device=n.device))
        return VerifyDraws(accept, residual, bonus), DraftDraws(draft, init, couple, couple_res, gumbel)


def ar_step(ctx: Context, state: JacobiState) -> IterationResult:
    """Plain sampling, one token per forward: the reference law every method must reproduce."""
    n = state.n
    p = ctx.forward_probs(state.seq.gather(1, (n - 1)[:, None]), n)[:, 0]  # law of offset n
    # the uniform of (sample, AR, n), hashed for the whole sample at its refill (`ar_uniforms`): one
    # lookup here instead of the hash's two dozen small ops on one number per row
    x = rng.categorical(p, state.ar_u.gather(1, n[:, None])[:, 0])
    empty = torch.zeros(n.shape[0], 0, dtype=torch.bool, device=n.device)
    seq = state.seq.scatter(1, n[:, None], x[:, None])
    return IterationResult(seq, torch.zeros_like(n), empty, empty, None, state.prev_p, state.prev_src)


def ar_uniforms(seeds: torch.Tensor, length: int) -> torch.Tensor:
    """[K, T+1] float64: plain AR's uniform of every offset 0 .. T-1 for K samples (column T pads the
    index of a finished slot, n = T). The same numbers as drawing them one offset at a time."""
    offsets = torch.arange(length + 1, device=seeds.device).expand(seeds.shape[0], -1)
    return rng.uniforms(seeds, rng.AR, offsets)


def jacobi_step(ctx: Context, state: JacobiState) -> IterationResult:
    """One forward over every slot's window, then verify, commit and redraft."""
    config, width, n = ctx.config, ctx.width, state.n
    tokens = state.seq.gather(1, (n - 1)[:, None] + ctx.span)  # last committed token + L-1 drafts
    drafts = tokens[:, 1:]
    p = ctx.forward_probs(tokens, n)  # [B, L, V]
    limit = (ctx.length - n).clamp(0, width)  # laws that exist: never predict past the layout end
    u_verify, u_draft = ctx.streams.draw(ctx.seeds, n, state.forwards)
    verdict = verify(p, drafts, state.laws, n, limit, ctx.seeds, config.verifier == "exact",
                     u_verify, ctx.grammar.image)
    m = verdict.m
    seq = state.seq.scatter(1, (n + m)[:, None], verdict.new[:, None])
    # Redraft: a next draft for every window slot, then keep those past the accepted prefix.
    law = draft_law(p, *previous_laws(state, p, config), config)
    x_all = carried_drafts(law, drafts, state.laws, u_draft, ctx.grammar.image, config)
    table = p if config.vp_lossy else law  # LOSSY mode verifies against P_t
    src = m[:, None] + ctx.next_span  # window slot whose law covers next-draft j
    carried, take = src < limit[:, None], src.clamp(max=width - 1)
    x_next = x_all.gather(1, take)
    offsets = n[:, None] + src
    seq = seq.scatter(1, offsets, torch.where(carried, x_next, 0))
    frontier_p = p[ctx.rows, (limit - 1).clamp_min(0)]
    gumbel = None if u_draft.gumbel is None else u_draft.gumbel.gather(1, src)
    x_init, uniform = init_drafts(seq, offsets, n + limit, frontier_p, u_draft.init.gather(1, src),
                                  ctx.grammar, config, gumbel)
    x = torch.where(carried, x_next, x_init)
    seq = seq.scatter(1, offsets, x)
    laws = next_laws(table, x_all, take, carried, uniform, ctx.grammar.num_image_ids)
    prev_p, prev_src = _shift_laws(p, m, limit, state, config)
    return IterationResult(seq, m, verdict.tested, verdict.accepted, laws, prev_p, prev_src)


def next_laws(table, x_all, take, carried, uniform, num_image_ids: int) -> DraftLaws:
    """Compact laws of the next drafts: carried ones point into `table`, entering ones are implicit."""
    q_carried = table.gather(-1, x_all[..., None]).squeeze(-1).gather(1, take)
    q_init, src_init = _implicit_laws(uniform, num_image_ids, table.dtype)
    return DraftLaws(torch.where(carried, q_carried, q_init), torch.where(carried, take, src_init), table)


def previous_laws(state: JacobiState, p: torch.Tensor, config: DecodeConfig):
    """SJD-VP's p_{t-1} aligned to this window ([B, L, V]) and where it exists ([B, L] bool)."""
    if config.vp_lambda == 0:
        return state.prev_p, state.prev_src >= 0
    rows = row_index(p.shape[0], p.device)
    return state.prev_p[rows, state.prev_src.clamp_min(0)], state.prev_src >= 0


def _shift_laws(p: torch.Tensor, m: torch.Tensor, limit: torch.Tensor, state: JacobiState,
                config: DecodeConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """This iteration's P by reference, and for each next window slot the row that predicted it."""
    if config.vp_lambda == 0:
        return state.prev_p, state.prev_src
    src = m[:, None] + 1 + torch.arange(p.shape[1], device=p.device)
    return p, torch.where(src < limit[:, None], src, -1)


def first_drafts(ctx: Context, seq: torch.Tensor, p0: torch.Tensor, seeds: torch.Tensor):
    """Drafts for offsets 1 .. L-1 after a prefill committed offset 0, and their (implicit) laws.

    Args:
        seq: [K, T+L] rows holding the first token at offset 0.
        p0: [K, V] the law of offset 0.
        seeds: [K, 2] the rows' seed words.
    """
    count, width = seq.shape[0], ctx.width - 1
    offsets = 1 + ctx.span[:-1].expand(count, width)
    u = rng.uniforms(seeds, rng.INIT, offsets, torch.zeros_like(offsets))
    one = torch.ones(count, dtype=torch.long, device=seq.device)
    gumbel = rng.key(seeds, rng.GUMBEL, offsets) if ctx.config.coupling == "gumbel" else None
    x, uniform = init_drafts(seq, offsets, one, p0, u, ctx.grammar, ctx.config, gumbel)
    return x, _implicit_laws(uniform, ctx.grammar.num_image_ids, p0.dtype)


def _implicit_laws(uniform: torch.Tensor, num_image_ids: int, dtype: torch.dtype):
    q_x = torch.where(uniform, 1.0 / num_image_ids, 1.0).to(dtype)
    return q_x, torch.where(uniform, UNIFORM, ONEHOT)
