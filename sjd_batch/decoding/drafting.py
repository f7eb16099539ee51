"""Draft strategies: the law a carried draft is drawn from, how it is coupled to the previous draft at
the same position, and how a position entering the window for the first time is initialised.

Every draft stores the law Q it was *actually* drawn from; the speculative test then makes the
output exact whatever that law is (docs/design.md, section 7). That is what keeps SJD-VP and MC-SJD lossless.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sjd_batch.decoding import rng
from sjd_batch.decoding.methods import DecodeConfig
from sjd_batch.decoding.sampling import Grammar
from sjd_batch.decoding.state import DraftLaws
from sjd_batch.decoding.verify import residual_law


def draft_law(
    p: torch.Tensor, prev_p: torch.Tensor, prev_valid: torch.Tensor, config: DecodeConfig
) -> torch.Tensor:
    """The law carried drafts are drawn from: P itself, or SJD-VP's q~ favouring rising tokens.

    SJD-VP (Shan et al., arXiv 2603.27115) only states the idea: tokens whose probability rises
    across iterations are likelier to pass verification. The two forms below are sjd-batch's own
    definition (docs/design.md, section 6):
      exp: q~ ∝ p_t * exp(lambda * clip(log p_t - log p_{t-1}, -c, c)) on supp(p_t)
      add: q~ ∝ p_t + lambda * max(0, p_t - p_{t-1})
    Where p_{t-1} is undefined (the offset just entered the prediction range), q~ = p_t.

    Args:
        p: [B, L, V] this iteration's processed laws.
        prev_p: [B, L, V] the previous iteration's laws at the same offsets.
        prev_valid: [B, L] bool.
    """
    if config.vp_lambda == 0:
        return p
    valid = prev_valid[..., None]
    if config.vp_form == "add":
        rise = (p - prev_p).clamp_min(0) * valid
        return normalise(p + config.vp_lambda * rise)
    tiny = torch.finfo(p.dtype).tiny
    change = (p.clamp_min(tiny).log() - prev_p.clamp_min(tiny).log()).clamp(-config.vp_clip, config.vp_clip)
    change = torch.where(valid, change, 0.0)
    return normalise(p * torch.exp(config.vp_lambda * change))


def normalise(w: torch.Tensor) -> torch.Tensor:
    """Stored laws must sum to one: the test compares q(x) with p(x) directly."""
    return w / w.sum(-1, keepdim=True)


@dataclass
class DraftDraws:
    """The uniforms of one redraft, keyed (stream, offset n + s, step) for every window slot s.

    `init` covers the slots a window can reach after the shift, s in [0, 2L-1).
    """

    draft: torch.Tensor  # [B, L] float64 (DRAFT)
    init: torch.Tensor  # [B, 2L-1] float64 (INIT)
    couple: torch.Tensor | None = None  # [B, L] float64 (COUPLE): MC-SJD only
    couple_residual: torch.Tensor | None = None  # [B, L] float64 (COUPLE_RESIDUAL): MC-SJD only
    gumbel: torch.Tensor | None = None  # [B, 2L-1] int64 GUMBEL race keys, not keyed by step: gumbel only


def carried_drafts(
    law: torch.Tensor,  # [B, L, V] target law at each window slot's offset
    drafts: torch.Tensor,  # [B, L-1] the current drafts (slot s holds offset n + s)
    laws: DraftLaws,  # their laws
    draws: DraftDraws,
    image: torch.Tensor,  # [V] bool
    config: DecodeConfig,
) -> torch.Tensor:
    """A next draft for every window slot s, drawn from `law[:, s]`; [B, L]. The caller keeps the
    slots past the accepted prefix (shifted left) and drops the others; slot 0 (offset n, which this
    iteration commits) is never kept, and the sampling couplings leave the current draft there
    instead of drawing one.

    independent: a fresh draw every iteration (SJD). maximal: maximal-coupling resampling (MC-SJD,
    So et al. arXiv 2510.24211): keep the old draft x at the same offset with probability
    min(1, law(x) / old_q(x)), else draw from norm(max(0, law - old_q)); the last slot has no old
    draft and draws fresh. gumbel (the same paper's Gumbel coupling, stateless here): argmax_v
    law(v) / E(a, v), an exponential race whose noise depends on the sample and the offset a only,
    so consecutive drafts agree wherever the law moved little. Either way the draft's law given
    everything at earlier offsets is exactly `law`: the noise of offset a never influenced a law at
    a (those see earlier offsets only), and a is tested once (docs/methods.md, section 3).
    """
    if config.verifier == "exact":
        return law.argmax(-1)  # plain Jacobi: the fixed-point iteration on greedy guesses
    if config.coupling == "gumbel":
        return rng.race(law, draws.gumbel[:, : law.shape[1]])
    if config.coupling == "independent":  # slot 0 is never carried: only slots 1 .. L-1 are drawn
        return torch.cat([drafts[:, :1], rng.categorical(law[:, 1:], draws.draft[:, 1:])], 1)
    # maximal: only the last slot draws fresh (the others couple to their old draft), so only its law
    # is summed (a row's draw reads that row alone: the same token as slicing a full draw)
    fresh = rng.categorical(law[:, -1:], draws.draft[:, -1:])
    head = law[:, :-1]
    keep = draws.couple[:, :-1] * laws.q_x < head.gather(-1, drafts[..., None]).squeeze(-1)
    u = draws.couple_residual[:, :-1]
    if law.device.type == "cpu":  # where the rows that move can be read without a device sync
        move = ~keep
        move[:, 0] = False  # draft 0 (offset n) is committed this iteration, never carried
        moved = moved_rows(head, drafts, laws, u, image, move)
    else:
        moved = moved_dense(head, drafts, laws, u, image)
    return torch.cat([torch.where(keep, drafts, moved), fresh], 1)


def moved_dense(head, drafts, laws: DraftLaws, u, image) -> torch.Tensor:
    """MC-SJD's residual redraw at every (slot, draft) pair: static shapes, no device sync (GPU)."""
    k = torch.arange(drafts.shape[1], device=head.device).expand_as(drafts)
    return rng.categorical(residual_law(head, laws.rows(k, drafts, image)), u)


def moved_rows(head, drafts, laws: DraftLaws, u, image, move) -> torch.Tensor:
    """MC-SJD's residual redraws for the (slot, draft) pairs in `move` only, the others left as they
    were: about half of a textures-t2i window keeps its draft, and the residual law and its running
    sum are the iteration's largest pass on a CPU. Row for row the same arithmetic as the dense path
    (each draw reads its own row), so the same tokens."""
    b, k = move.nonzero(as_tuple=True)
    moved = drafts.clone()
    if b.numel():
        x = drafts[b, k]
        moved[b, k] = rng.categorical(residual_law(head[b, k], laws.rows_at(b, k, x, image)), u[b, k])
    return moved


def init_drafts(
    seq: torch.Tensor,  # [B, T+L] committed tokens and carried drafts (read for spatial schemes)
    offsets: torch.Tensor,  # [B, J] offsets to initialise
    first_new: torch.Tensor,  # [B] first offset with no carried draft
    frontier_p: torch.Tensor,  # [B, V] law of offset first_new - 1
    u: torch.Tensor,  # [B, J] float64 INIT uniforms keyed (offset, step)
    grammar: Grammar,
    config: DecodeConfig,
    gumbel: torch.Tensor | None = None,  # [B, J] GUMBEL keys of the offsets (gumbel coupling)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial drafts for positions entering the window (docs/design.md, section 5), and whether each one's
    law is the UNIFORM law over the image ids (else it is ONEHOT at the draft).

    Forced offsets get the forced token with a one-hot law (they always pass). `random` draws
    uniformly over the image ids; the spatial schemes copy a known neighbour (Q one-hot, exact
    because the test is exact conditionally on any draft that does not depend on the test's own
    randomness) and fall back to random where the neighbour is not an image code:
      horizontal: the token at the frontier (the last committed or carried offset), repeated;
      horizontal-sample: the argmax of the frontier's law;
      vertical: the nearest known token in the same column above.
    Under Gumbel coupling a random draft is the offset's own race over the image ids (still a uniform
    draw), so the draft that later replaces it (the race over P) starts from the same noise.
    """
    if gumbel is not None:
        random_x = rng.race(grammar.image.float().expand(*offsets.shape, -1), gumbel)
    else:
        pick = (u * grammar.num_image_ids).long().clamp(max=grammar.num_image_ids - 1)
        random_x = grammar.image_start + pick
    spatial = _spatial_source(seq, offsets, first_new, frontier_p, grammar, config)
    use_spatial = grammar.image[spatial.clamp(0, grammar.vocab - 1)] & (spatial >= 0)
    x = torch.where(use_spatial, spatial, random_x)
    forced = grammar.forced_at(offsets)
    x = torch.where(forced >= 0, forced, x)
    uniform_law = ~use_spatial & (forced < 0) & (config.init_law == "uniform")
    return x, uniform_law


def _spatial_source(
    seq: torch.Tensor,
    offsets: torch.Tensor,
    first_new: torch.Tensor,
    frontier_p: torch.Tensor,
    grammar: Grammar,
    config: DecodeConfig,
) -> torch.Tensor:
    """Candidate token of a spatial init scheme, or -1 where there is none."""
    none = torch.full_like(offsets, -1)
    if config.init == "random":
        return none
    if config.init == "horizontal-sample":
        image_p = frontier_p.masked_fill(~grammar.image, -1.0)
        return image_p.argmax(-1)[:, None].expand_as(offsets)
    if config.init == "horizontal":
        src = (first_new - 1)[:, None].expand_as(offsets)
    else:  # vertical: step up whole rows until the source is a known (committed or carried) offset
        stride = grammar.row_stride
        rows_up = torch.div(offsets - first_new[:, None] + stride, stride, rounding_mode="floor")
        src = offsets - stride * rows_up
    known = src >= 0
    return torch.where(known, seq.gather(1, src.clamp_min(0)), none)
