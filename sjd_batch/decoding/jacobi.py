"""Autoregressive and Speculative Jacobi decoding over a batch, each row at its own pace.

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

Each row b keeps its own committed count n_b and advances by its own accept length, unlike the
reference code, which moves the whole batch at its slowest row's pace (docs/design.md, section 8).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import torch

from sjd_batch.decoding import rng
from sjd_batch.decoding.drafting import carried_drafts, draft_law, init_drafts
from sjd_batch.decoding.methods import DecodeConfig
from sjd_batch.decoding.protocol import ImageTokenModel, Prefix, decode_window, prefill_window
from sjd_batch.decoding.sampling import Grammar, SamplingConfig, processed_probs
from sjd_batch.decoding.state import IterationResult, JacobiState, SampleStats
from sjd_batch.decoding.verify import verify


@dataclass
class DecodeOutput:
    tokens: torch.Tensor  # [B, T] long, on the CPU
    stats: list[SampleStats]


@dataclass
class _Run:
    """Everything fixed for one batch: the model, its cache and the settings."""

    model: ImageTokenModel
    cache: object
    prefix: Prefix
    grammar: Grammar
    sampling: SamplingConfig
    seeds: torch.Tensor  # [B, 2]
    total_slots: int

    @property
    def batch(self) -> int:
        return self.seeds.shape[0]

    def forward_probs(self, tokens: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        """Feed tokens [B, W] at offsets n-1 .. n+W-2; return P [B, W, V] for offsets n .. n+W-1."""
        width = tokens.shape[1]
        ids, first = tokens, self.prefix.length + n - 1
        if self.sampling.uses_cfg:  # both halves receive the same tokens (and the same drafts)
            ids, first = torch.cat([tokens, tokens]), torch.cat([first, first])
        window = decode_window(first, self.prefix.start, width, self.total_slots)
        logits = self.model.forward(self.cache, ids, window)
        offsets = n[:, None] + torch.arange(width, device=n.device)
        return processed_probs(logits, offsets, self.grammar, self.sampling)


def decode(
    model: ImageTokenModel,
    prefix: Prefix,
    seeds: torch.Tensor,
    sampling: SamplingConfig,
    config: DecodeConfig,
) -> DecodeOutput:
    """Decode one batch with the method named in `config`."""
    if config.verifier == "exact" and not sampling.greedy:
        raise ValueError(
            "method 'jacobi' uses the exact-match test and is only defined for greedy decoding; "
            "set top_k=1 or temperature=0, or use 'sjd' for sampling"
        )
    if config.method == "ar":
        return autoregressive_decode(model, prefix, seeds, sampling, config)
    return speculative_jacobi_decode(model, prefix, seeds, sampling, config)


def _start(model: ImageTokenModel, prefix: Prefix, seeds: torch.Tensor, sampling: SamplingConfig, room: int):
    """Allocate the cache once and run the prefill; it commits offset 0 (stream AR, like plain AR)."""
    if prefix.rows != seeds.shape[0] * (2 if sampling.uses_cfg else 1):
        raise ValueError(
            f"prefix has {prefix.rows} rows for {seeds.shape[0]} seeds (cfg={sampling.uses_cfg})"
        )
    grammar = Grammar(model.layout, model.vocab_size, model.device)
    total = prefix.length + model.layout.length + room
    run = _Run(model, model.new_cache(prefix.rows, total), prefix, grammar, sampling, seeds, total)
    logits = model.forward(run.cache, prefix.ids, prefill_window(prefix, total))[:, -1:]
    zero = torch.zeros(run.batch, 1, dtype=torch.long, device=seeds.device)
    p0 = processed_probs(logits, zero, grammar, sampling)  # [B, 1, V]
    first = rng.race(p0[:, 0], rng.key(seeds, rng.AR, zero[:, 0]))
    return run, p0[:, 0], first


def synced_clock(device: torch.device) -> float:
    """`time.perf_counter()` after the device's queued work is done (a no-op wait on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def autoregressive_decode(
    model: ImageTokenModel,
    prefix: Prefix,
    seeds: torch.Tensor,
    sampling: SamplingConfig,
    config: DecodeConfig | None = None,
) -> DecodeOutput:
    """Plain sampling, one token per forward: the reference law every method must reproduce."""
    config = config or DecodeConfig(method="ar")
    t0 = synced_clock(model.device)
    run, _, first = _start(model, prefix, seeds, sampling, room=1)
    t1 = synced_clock(model.device)
    length = model.layout.length
    tokens = torch.empty(run.batch, length, dtype=torch.long, device=seeds.device)
    tokens[:, 0] = first
    for a in range(1, length):
        # Feed offset a-1, read the law of offset a, draw from it with the AR stream.
        n = torch.full((run.batch,), a, dtype=torch.long, device=seeds.device)
        p = run.forward_probs(tokens[:, a - 1 : a], n)
        tokens[:, a] = rng.race(p[:, 0], rng.key(seeds, rng.AR, n))
    t2 = synced_clock(model.device)
    stats = [_ar_stats(length, config, sampling, run.batch, t1 - t0, t2 - t1) for _ in range(run.batch)]
    return DecodeOutput(tokens=tokens.cpu(), stats=stats)


def _ar_stats(
    length: int, config: DecodeConfig, sampling: SamplingConfig, batch: int, pre: float, dec: float
):
    return SampleStats(
        tokens=length,
        nfe=length,
        ar_steps=length,
        accept_lens=[1] * length,
        drafts_tested=0,
        drafts_accepted=0,
        accepted_by_offset=[],
        tested_by_offset=[],
        method=config.method,
        params=_params(config, sampling),
        batch_size=batch,
        prefill_s=pre,
        decode_s=dec,
    )


def _params(config: DecodeConfig, sampling: SamplingConfig) -> dict[str, object]:
    params = config.params()
    params.update({f"sampling_{k}": v for k, v in vars(sampling).items()})
    return params


def speculative_jacobi_decode(
    model: ImageTokenModel,
    prefix: Prefix,
    seeds: torch.Tensor,
    sampling: SamplingConfig,
    config: DecodeConfig,
) -> DecodeOutput:
    """Jacobi / SJD / SJD-VP / MC-SJD, as configured by `config` (see `methods.py`).

    Args:
        model: any `ImageTokenModel`.
        prefix: B (or 2B with CFG) tokenised prompts.
        seeds: [B, 2] per-sample seed words (`rng.seed_tensor`).
        sampling: how logits become P.
        config: the method.

    Returns:
        tokens [B, T] and one `SampleStats` per row.
    """
    t0 = synced_clock(model.device)
    run, p0, first = _start(model, prefix, seeds, sampling, room=config.window)
    t1 = synced_clock(model.device)
    state = _initial_state(run, p0, first, config)
    length = model.layout.length
    done = DoneCheck(lag=1 if model.device.type == "cuda" else 0)
    active = state.n < length
    while not done(active):
        state.observe_iteration(active, _iteration(run, state, config))  # finished rows stay frozen
        active = state.n < length
    t2 = synced_clock(model.device)
    return DecodeOutput(
        tokens=state.seq[:, :length].cpu(), stats=_stats(state, run, config, t1 - t0, t2 - t1)
    )


class DoneCheck:
    """Are all rows finished? The loop's only host read.

    With lag 1 (the CUDA default) the flag is copied to the host asynchronously and read one
    iteration later, so the host keeps enqueueing work instead of waiting for the device; the price is
    at most one extra iteration in which every row is frozen (it changes no token and no statistic).
    """

    def __init__(self, lag: int) -> None:
        self.lag = lag
        self.pending: deque[tuple[torch.Tensor, torch.cuda.Event | None]] = deque()

    def __call__(self, active: torch.Tensor) -> bool:
        flag = active.any()
        if self.lag == 0:
            return not bool(flag)
        on_cuda = flag.device.type == "cuda"
        host = torch.empty((), dtype=torch.bool, pin_memory=on_cuda)
        host.copy_(flag, non_blocking=on_cuda)
        event = torch.cuda.Event() if on_cuda else None
        if event is not None:
            event.record()
        self.pending.append((host, event))
        if len(self.pending) <= self.lag:
            return False
        host, event = self.pending.popleft()
        if event is not None:
            event.synchronize()
        return not bool(host)


def _initial_state(run: _Run, p0: torch.Tensor, first: torch.Tensor, config: DecodeConfig) -> JacobiState:
    """After the prefill: offset 0 committed, offsets 1 .. L-1 drafted by the init scheme."""
    batch, width = run.batch, config.window - 1
    length, vocab, device = run.model.layout.length, run.model.vocab_size, run.seeds.device
    seq = torch.zeros(batch, length + config.window, dtype=torch.long, device=device)
    seq[:, 0] = first
    one = torch.ones(batch, dtype=torch.long, device=device)
    offsets = 1 + torch.arange(width, device=device).expand(batch, width)
    x, q = init_drafts(seq, offsets, one, p0, 0 * one, run.seeds, run.grammar, config, p0.dtype)
    seq[:, 1 : 1 + width] = x
    vp_vocab = vocab if config.vp_lambda > 0 else 1  # p_{t-1} is only kept for SJD-VP
    return JacobiState(
        seq=seq,
        n=one.clone(),
        q=q,
        prev_p=torch.zeros(batch, config.window, vp_vocab, dtype=p0.dtype, device=device),
        prev_valid=torch.zeros(batch, config.window, dtype=torch.bool, device=device),
        forwards=one.clone(),
        accept_lens=torch.nn.functional.pad(one[:, None], (0, length)),
        tested=torch.zeros(batch, width, dtype=torch.long, device=device),
        accepted=torch.zeros(batch, width, dtype=torch.long, device=device),
    )


def _iteration(run: _Run, state: JacobiState, config: DecodeConfig) -> IterationResult:
    """One forward over every row's window, then verify, commit and redraft."""
    width = config.window
    n, length = state.n, run.model.layout.length
    span = torch.arange(width, device=n.device)
    # 1. The window: last committed token + L-1 drafts, all already sitting in `seq`.
    p = run.forward_probs(state.seq.gather(1, (n - 1)[:, None] + span), n)  # [B, L, V]
    limit = (length - n).clamp(0, width)  # laws that exist: never predict past the layout end
    # 2. Verify the drafts; commit the accepted prefix plus one resampled or bonus token.
    drafts = state.seq.gather(1, n[:, None] + span[:-1])
    verdict = verify(p, drafts, state.q, n, limit, run.seeds, exact=config.verifier == "exact")
    seq = state.seq.scatter(1, (n + verdict.m)[:, None], verdict.new[:, None])
    # 3. Redraft: offsets this window predicted are carried (drawn from this iteration's laws),
    #    the rest enter the window through the init scheme.
    nxt = n + verdict.m + 1
    src = verdict.m[:, None] + 1 + span[:-1]  # window slot whose law covers next-draft j
    carried = src < limit[:, None]
    law = draft_law(p, state.prev_p, state.prev_valid, config)
    offsets = nxt[:, None] + span[:-1]
    step = state.forwards  # this row's iteration counter keys the draft stream
    take = src.clamp(max=width - 1)[..., None].expand(-1, -1, p.shape[-1])
    law_next = law.gather(1, take)
    old = src.clamp(max=width - 2)
    x = carried_drafts(
        law_next,
        drafts.gather(1, old),
        state.q.gather(1, old[..., None].expand(-1, -1, p.shape[-1])),
        carried & (src <= width - 2),
        offsets,
        step,
        run.seeds,
        config,
    )
    seq = seq.scatter(1, offsets, torch.where(carried, x, 0))
    frontier_p = p[torch.arange(run.batch, device=n.device), (limit - 1).clamp_min(0)]
    x_init, q_init = init_drafts(
        seq, offsets, n + limit, frontier_p, step, run.seeds, run.grammar, config, p.dtype
    )
    seq = seq.scatter(1, offsets, torch.where(carried, x, x_init))
    q_carried = p.gather(1, take) if config.vp_lossy else law_next  # LOSSY mode verifies against P_t
    q = torch.where(carried[..., None], q_carried, q_init)
    prev_p, prev_valid = _shift_laws(p, verdict.m, limit, config)
    return IterationResult(seq, verdict.m, verdict.tested, verdict.accepted, q, prev_p, prev_valid)


def _shift_laws(p: torch.Tensor, m: torch.Tensor, limit: torch.Tensor, config: DecodeConfig):
    """This iteration's laws, re-aligned to the next window's offsets (for SJD-VP's p_{t-1})."""
    batch, width, _ = p.shape
    if config.vp_lambda == 0:
        return (
            torch.zeros(batch, width, 1, dtype=p.dtype, device=p.device),
            torch.zeros(batch, width, dtype=torch.bool, device=p.device),
        )
    src = m[:, None] + 1 + torch.arange(width, device=p.device)
    shifted = p.gather(1, src.clamp(max=width - 1)[..., None].expand_as(p))
    return shifted, src < limit[:, None]


def _stats(state: JacobiState, run: _Run, config: DecodeConfig, pre: float, dec: float) -> list[SampleStats]:
    forwards = state.forwards.tolist()
    accept_lens = state.accept_lens.tolist()
    tested, accepted = state.tested.tolist(), state.accepted.tolist()
    params = _params(config, run.sampling)
    length = run.model.layout.length
    return [
        SampleStats(
            tokens=length,
            nfe=forwards[b],
            ar_steps=length,
            accept_lens=accept_lens[b][: forwards[b]],
            drafts_tested=sum(tested[b]),
            drafts_accepted=sum(accepted[b]),
            accepted_by_offset=accepted[b],
            tested_by_offset=tested[b],
            method=config.method,
            params=params,
            batch_size=run.batch,
            prefill_s=pre,
            decode_s=dec,
        )
        for b in range(run.batch)
    ]
