"""The decode loop: B slots decode B samples, each at its own pace, refilled from a stream of requests.

Continuous batching: when a slot's sample is done, its tokens and statistics are handed back and the
slot takes the next request at once (a prefill of that sample alone, while the other slots keep
their state), so no forward is spent on finished rows except in the final drain. `schedule="fixed"`
is the old way, kept for comparison: refill only once every slot is done.

A sample's output depends only on (its prompt, its seed, the settings), never on its slot, its
neighbours or when it started:
  * randomness is keyed by (sample seed, stream, offset, the sample's own iteration count);
  * the cache geometry is the same for every sample: its prompt is prefilled alone, right-aligned at
    the fixed slot P (`prompt_room`), in a cache of its own, then copied into the slot's rows;
    generated offset a sits at slot P + a; the key length is P + T + L for every forward;
  * every other operation is row-wise. On this project's CPU build, matrix products of 8 rows or more
    (fp32; 4 in fp64) give each row bit-identical results whatever the other rows are, so a window of
    L >= 8 tokens decodes bit-identically alone and in any stream (tests/decoding/test_engine.py).
    Smaller products (AR's one-token forwards, windows below 8) take another kernel: alone and in a
    batch then agree only up to float rounding, and a token can differ at a near-tie. GPU kernels are
    not batch-invariant either; there the same holds up to rounding.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import torch

from sjd_batch.decoding import rng
from sjd_batch.decoding.inference import inference_steps, needs_plain_tensors
from sjd_batch.decoding.jacobi import Context, ar_step, ar_uniforms, first_drafts, jacobi_step, synced_clock
from sjd_batch.decoding.methods import DecodeConfig
from sjd_batch.decoding.pac import forward_width, initial_tree, reset_tree, tree_step
from sjd_batch.decoding.protocol import ImageTokenModel, Prefix, PromptRejected, prefill_window
from sjd_batch.decoding.protocol import stack_prefixes as _stack
from sjd_batch.decoding.sampling import Grammar, SamplingConfig, processed_probs
from sjd_batch.decoding.state import JacobiState, SampleStats

DEFAULT_PROMPT_ROOM = 256  # prompt slots for a model that does not say (`max_prompt_length`)
SCHEDULES = ("continuous", "fixed")
# What a request source may yield instead of a Request: "nothing to start yet, keep decoding" (one
# engine serves an actor's shards back to back: a slot freed late in a shard waits for the next one).
HOLD = object()


@dataclass
class Request:
    """One sample to decode. `tag` is the caller's handle, handed back untouched with the result.

    `prefix`, when given, holds the sample's already-tokenised rows (1, or 2 with CFG) and replaces
    `prompt` and `negative`.
    """

    prompt: str
    seed: int
    negative: str | None = None
    tag: Any = None
    prefix: Prefix | None = None


@dataclass
class Finished:
    """A request's outcome: tokens [T] (CPU) and statistics, or the error that refused it."""

    request: Request
    tokens: torch.Tensor | None
    stats: SampleStats | None
    error: str | None = None

    @property
    def tag(self) -> Any:
        return self.request.tag


@dataclass
class EngineStats:
    """Counters over one stream (read after it is exhausted)."""

    slots: int = 0
    iterations: int = 0  # decode forwards (prefills not included)
    prefills: int = 0
    idle: Any = 0  # slot-iterations spent on a slot with no unfinished sample (a device tensor)
    idle_while_pending: Any = 0  # ... of which while requests were still waiting (not the drain)

    @property
    def idle_share(self) -> float:
        """Share of slot-forwards spent on finished or empty slots (0 when nothing ran)."""
        total = self.iterations * self.slots
        return int(self.idle) / total if total else 0.0


def prompt_room(model: ImageTokenModel) -> int:
    """P, the slots reserved for a prompt: the model's `max_prompt_length`, else DEFAULT_PROMPT_ROOM."""
    return int(getattr(model, "max_prompt_length", DEFAULT_PROMPT_ROOM))


def decode_stream(
    model: ImageTokenModel,
    requests: Iterable[Request],
    sampling: SamplingConfig,
    config: DecodeConfig,
    slots: int,
    schedule: str = "continuous",
    counters: EngineStats | None = None,
    prefill: str = "alone",
) -> Iterator[Finished]:
    """Decode a stream of requests with `slots` samples in flight; yields each as it finishes.

    Results come in finishing order, not request order (use `Request.tag`). A request whose prompt the
    model rejects (`PromptRejected` from its tokeniser, or a prompt longer than `prompt_room`) comes
    back with `error` set and does not stop the stream; any other error propagates.
    `prefill="together"` runs the prefills of the samples that start in the same round as one forward
    (faster for one big batch, but a sample's prompt KV then depends on its group up to float
    rounding); the default prefills each alone.
    `requests` may yield `HOLD` (nothing to start now): the engine goes on decoding what it holds and
    asks again after the next iteration; a source that yields HOLD while the engine is empty is asked
    again at once, so it should block instead (the job worker's source does).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if config.verifier == "exact" and not sampling.greedy:
        raise ValueError(
            "method 'jacobi' uses the exact-match test and is only defined for greedy decoding; "
            "set top_k=1 or temperature=0, or use 'sjd' for sampling"
        )
    engine = _Engine(model, sampling, config, slots, counters or EngineStats(), prefill == "together")
    yield from inference_steps(engine.run(iter(requests), schedule), not needs_plain_tensors(model))


@dataclass
class _Occupant:
    request: Request
    started: int  # iteration count when the sample entered its slot
    prefill_s: float
    t_start: float


class _Engine:
    def __init__(self, model, sampling: SamplingConfig, config: DecodeConfig, slots: int,
                 counters: EngineStats, together: bool) -> None:
        if slots < 1:
            raise ValueError(f"slots (batch size) must be >= 1, got {slots}")
        self.model, self.sampling, self.config, self.slots = model, sampling, config, slots
        self.counters = counters
        counters.slots = slots
        counters.idle = torch.zeros((), dtype=torch.long, device=model.device)
        counters.idle_while_pending = counters.idle.clone()
        self.rows_per = 2 if sampling.uses_cfg else 1
        width = 1 if config.method == "ar" else config.window
        length, prefix = model.layout.length, prompt_room(model)
        if length + 2 * width >= rng.MAX_POSITION:
            raise ValueError(f"layout of {length} tokens + 2 windows of {width} reaches {rng.MAX_POSITION}")
        total = prefix + length + width + (forward_width(config) if config.branching else 0)  # tree scratch
        device = model.device
        self.ctx = Context(model, model.new_cache(slots * self.rows_per, total),
                           Grammar(model.layout, model.vocab_size, device), sampling, config, prefix, total,
                           torch.zeros(slots * self.rows_per, dtype=torch.long, device=device),
                           torch.zeros(slots, 2, dtype=torch.long, device=device))
        self.scratch: dict[int, Any] = {}  # prefill caches of P slots, by group size
        self.together = together
        work = torch.float64 if model.dtype == torch.float64 else torch.float32  # the dtype of P
        self.state = JacobiState.empty(slots, length, width, model.vocab_size, config.vp_lambda > 0, work,
                                       device)
        if config.branching:
            self.state.tree = initial_tree(slots, config, device)
        if config.method == "ar":
            self.state.ar_u = torch.zeros(slots, length + 1, dtype=torch.float64, device=device)
        self.step = ar_step if config.method == "ar" else tree_step if config.branching else jacobi_step
        self.occupants: list[_Occupant | None] = [None] * slots
        self.flags = HostFlags(lag=1 if device.type == "cuda" else 0)
        # built once: `asdict` per finished sample cost as much as its decode on small models
        self.params = config.params() | {f"sampling_{k}": v for k, v in vars(sampling).items()}

    def run(self, pending: Iterator[Request], schedule: str) -> Iterator[Finished]:
        exhausted = False
        while True:
            free = [b for b, o in enumerate(self.occupants) if o is None]
            if free and not exhausted and (schedule == "continuous" or len(free) == self.slots):
                starts = []
                for b in free:
                    request = next(pending, None)
                    if request is None:
                        exhausted = True
                        break
                    if request is HOLD:
                        break
                    starts.append((b, request))
                if starts:
                    yield from self._start(starts)
            if all(o is None for o in self.occupants):
                if exhausted:
                    return
                continue  # every request so far was refused: take the next ones
            idle = (~self.state.active).sum()
            self.counters.idle += idle
            if not exhausted:
                self.counters.idle_while_pending += idle
            self.state.observe_iteration(self.step(self.ctx, self.state), self.ctx.length)
            self.counters.iterations += 1
            yield from self._harvest(self.flags(self.counters.iterations, self.state.active))

    def _start(self, starts: list[tuple[int, Request]]) -> Iterator[Finished]:
        """Prefill the requests into their slots (alone, or together); refused ones come back as errors."""
        t0 = synced_clock(self.model.device)
        ready = []
        for slot, request in starts:
            prefix, error = self._encode(request)
            if error is not None:
                yield Finished(request, None, None, error)
            else:
                ready.append((slot, request, prefix))
        groups = [ready] if self.together and ready else [[r] for r in ready]
        for group in groups:
            laws0 = self._prefill([slot for slot, _, _ in group], [r.seed for _, r, _ in group],
                                  [prefix for _, _, prefix in group])
            self._reset([slot for slot, _, _ in group], laws0)
            self.counters.prefills += len(group)
        t1 = synced_clock(self.model.device)
        for slot, request, _ in ready:
            self.occupants[slot] = _Occupant(request, self.counters.iterations, (t1 - t0) / len(ready), t1)

    def _encode(self, request: Request) -> tuple[Prefix | None, str | None]:
        """The request's rows, or why the model rejects its prompt (`PromptRejected`; others propagate)."""
        try:
            prefix = request.prefix or self.model.encode(
                [request.prompt], [request.negative] if request.negative else None, self.sampling.uses_cfg)
        except PromptRejected as e:
            return None, str(e)
        if prefix.rows != self.rows_per:
            raise ValueError(f"prefix has {prefix.rows} rows, expected {self.rows_per}")
        if prefix.length > self.ctx.prefix_slots:
            return None, (f"the prompt takes {prefix.length} slots; model {self.model.name} leaves room "
                          f"for {self.ctx.prefix_slots} (its max_prompt_length)")
        return prefix, None

    def _prefill(self, slots: list[int], seeds: list[int], prefixes: list[Prefix]) -> torch.Tensor:
        """The samples' prompt KV into their cache rows; returns the laws of offset 0, [G, V]."""
        ctx, room, group = self.ctx, self.ctx.prefix_slots, len(slots)
        prefix = _stack(prefixes, self.rows_per)
        rows = torch.tensor([b + i * self.slots for i in range(self.rows_per) for b in slots],
                            device=ctx.start.device)
        if group not in self.scratch:
            self.scratch[group] = self.model.new_cache(group * self.rows_per, room)
        scratch = self.scratch[group]
        logits = self.model.forward(scratch, prefix.ids, prefill_window(prefix, room, end=room))[:, -1:]
        if hasattr(ctx.cache, "load_prefix"):
            ctx.cache.load_prefix(scratch, rows, room)
        ctx.start[rows] = prefix.start + (room - prefix.length)
        index = torch.tensor(slots, device=ctx.seeds.device)
        ctx.seeds[index] = rng.seed_tensor(seeds, ctx.seeds.device)
        zero = torch.zeros(group, 1, dtype=torch.long, device=ctx.start.device)
        return processed_probs(logits, zero, ctx.grammar, self.sampling)[:, 0]

    def _reset(self, slots: list[int], p0: torch.Tensor) -> None:
        """Offset 0 committed (AR stream, like plain AR), offsets 1 .. L-1 drafted; counters zeroed.

        One call per prefill group: draws are keyed by seed words and offsets (rng.py), so G rows at
        once give the tokens of G calls of one row (20,000 rows one at a time spent 12 s here)."""
        ctx, s = self.ctx, self.state
        index = torch.tensor(slots, device=s.n.device)
        seeds = ctx.seeds.index_select(0, index)
        zero = torch.zeros(len(slots), 1, dtype=torch.long, device=seeds.device)
        rows = torch.zeros(len(slots), s.seq.shape[1], dtype=s.seq.dtype, device=s.seq.device)
        if s.ar_u is not None:
            s.ar_u[index] = ar_uniforms(seeds, ctx.length)
        rows[:, 0] = rng.categorical(p0, rng.uniforms(seeds, rng.AR, zero)[:, 0])
        if ctx.width > 1:
            x, (q_x, src) = first_drafts(ctx, rows, p0, seeds)
            rows[:, 1 : ctx.width] = x
            s.laws.q_x[index], s.laws.src[index] = q_x, src
        s.seq[index] = rows
        s.n[index], s.forwards[index], s.active[index] = 1, 1, True
        s.accept_lens[index] = 0
        s.accept_lens[index, 0] = 1
        s.tested[index], s.accepted[index], s.prev_src[index] = 0, 0, -1
        if s.tree is not None:
            reset_tree(s.tree, index)

    def _harvest(self, seen: tuple[int, list[bool]] | None) -> Iterator[Finished]:
        """Hand back every sample the host now knows is done, and free its slot."""
        if seen is None:
            return
        when, active = seen
        done = [b for b, o in enumerate(self.occupants)
                if o is not None and not active[b] and when > o.started]
        if not done:
            return
        s, index = self.state, torch.tensor(done, device=self.state.n.device)
        tokens = s.seq.index_select(0, index)[:, : self.ctx.length].cpu()
        forwards, accept_lens, tested, accepted = (
            t.index_select(0, index).tolist() for t in (s.forwards, s.accept_lens, s.tested, s.accepted))
        extras = _tree_counters(s, index)
        t = synced_clock(self.model.device)
        for i, b in enumerate(done):
            occupant, self.occupants[b] = self.occupants[b], None
            stats = self._stats(forwards[i], accept_lens[i], tested[i], accepted[i], occupant, t)
            stats.extra = extras[i]
            yield Finished(occupant.request, tokens[i], stats)

    def _stats(self, nfe: int, accept_lens: list[int], tested: list[int], accepted: list[int],
               occupant: _Occupant, now: float) -> SampleStats:
        length = self.ctx.length
        params = dict(self.params)  # a copy per sample: a caller may edit its own
        return SampleStats(tokens=length, nfe=nfe, ar_steps=length, accept_lens=accept_lens[:nfe],
                           drafts_tested=sum(tested), drafts_accepted=sum(accepted),
                           accepted_by_offset=accepted, tested_by_offset=tested, method=self.config.method,
                           params=params, batch_size=self.slots, prefill_s=occupant.prefill_s,
                           decode_s=now - occupant.t_start)


def _tree_counters(state: JacobiState, index: torch.Tensor) -> list[dict[str, object]]:
    """Per finished slot: forwards that fed a tree, accepted drafts of rank > 0 (sjd-pac only)."""
    if state.tree is None:
        return [{} for _ in range(index.shape[0])]
    trees = state.tree.trees.index_select(0, index).tolist()
    siblings = state.tree.sibling_accepts.index_select(0, index).tolist()
    return [{"tree_forwards": t, "sibling_accepts": a} for t, a in zip(trees, siblings, strict=True)]


class HostFlags:
    """Which slots are still decoding, as the host sees it: the loop's only read of the device.

    With lag 1 (the CUDA default) the flags are copied to the host asynchronously and read one
    iteration later, so the host keeps enqueueing work instead of waiting for the device; the price is
    at most one extra iteration in which a finished slot rides along frozen (it changes no token and
    no statistic). Returns (iteration the flags belong to, flags), or None while the pipe fills.
    """

    def __init__(self, lag: int) -> None:
        self.lag = lag
        self.pending: deque[tuple[int, torch.Tensor, Any]] = deque()

    def __call__(self, iteration: int, active: torch.Tensor) -> tuple[int, list[bool]] | None:
        if self.lag == 0:
            return iteration, active.tolist()
        on_cuda = active.device.type == "cuda"
        host = torch.empty(active.shape, dtype=torch.bool, pin_memory=on_cuda)
        host.copy_(active, non_blocking=on_cuda)
        event = torch.cuda.Event() if on_cuda else None
        if event is not None:
            event.record()
        self.pending.append((iteration, host, event))
        if len(self.pending) <= self.lag:
            return None
        when, host, event = self.pending.popleft()
        if event is not None:
            event.synchronize()
        return when, host.tolist()

