"""Counter-based randomness: every random number is a pure function of (sample seed, stream, position, ...).

Why not `torch.Generator`s: a counter-based hash needs no state, no host sync and no per-row Python
loop, it gives the same numbers on CPU and GPU, and a sample's numbers do not depend on its
batch-mates or on how many iterations they needed (docs/design.md, section 8). Distinct streams keep the
draft, the acceptance test and the residual independent, which losslessness needs (section 7).

The mixer is a 32-bit xorshift-multiply hash from Chris Wellons' hash-prospector search (public
domain; constants 16 21f0aaad 15 735a2d97 15), evaluated on int64 tensors holding 32-bit values.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import torch

MASK32 = 0xFFFFFFFF

# Streams (docs/design.md, section 8): each kind of random decision draws from its own stream.
ACCEPT = 1  # u of the speculative test, once per position
RESIDUAL = 2  # residual race at the first rejection, once per position
DRAFT = 3  # draft race, every iteration (keyed by the row's iteration count)
INIT = 4  # random init of a draft entering the window
COUPLE = 5  # maximal-coupling keep test
COUPLE_RESIDUAL = 6  # maximal-coupling residual race
AR = 7  # plain autoregressive sampling (and the prefill token of every method)
BONUS = 8  # bonus token when a whole window passes
MAX_POSITION = 1 << 14  # `uniforms` packs (position, step, stream) into 32 bits: 14 + 14 + 4
GUMBEL = 9  # Gumbel-coupled drafts: keyed by position only, the same noise at every iteration
SIBLING = 10  # siblings of a tree depth, drawn without replacement (keyed by the iteration count)
SIBLING_ACCEPT = 11  # u of a sibling's test (rank > 0), once per position and rank


def sample_seed(job_seed: int, sample_id: str) -> int:
    """A stable 64-bit seed for one sample; never Python's salted `hash()`."""
    digest = hashlib.blake2b(f"{job_seed}\x1f{sample_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def seed_tensor(seeds: list[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """Split 64-bit seeds into [B, 2] int64 (low, high 32-bit words)."""
    words = [[s & MASK32, (s >> 32) & MASK32] for s in seeds]
    return torch.tensor(words, dtype=torch.int64, device=device)


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit integer hash on int64 tensors holding values in [0, 2**32).

    Both multipliers are below 2**31, so every product stays below 2**63: no int64 overflow, no
    split multiplication, five cheap tensor ops.
    """
    x = x ^ (x >> 16)
    x.mul_(0x21F0AAAD).bitwise_and_(MASK32)
    x.bitwise_xor_(x >> 15)
    x.mul_(0x735A2D97).bitwise_and_(MASK32)
    return x.bitwise_xor_(x >> 15)


def key(
    seeds: torch.Tensor, stream: int, position: torch.Tensor, step: torch.Tensor | None = None
) -> torch.Tensor:
    """Hash key per (row, position[, step]).

    Row-level inputs (the seed words and the row's step) are hashed once per row; the per-element
    work is two mixes, which matters when keys cover [B, L] windows every iteration.

    Args:
        seeds: [B, 2] int64 seed words.
        stream: one of the stream constants above.
        position: [B, ...] absolute generated offsets.
        step: optional [B] iteration counters.

    Returns:
        int64 keys in [0, 2**32), shaped like `position`.
    """
    row = mix32(mix32(seeds[:, 1] ^ 0x3C6EF372) ^ seeds[:, 0])  # [B]
    if step is not None:
        row = row ^ mix32((step & MASK32) + 0x632BE5AB)
    extra = (1,) * (position.dim() - 1)
    h = mix32((position & MASK32) ^ (stream * 0x9E3779B9 & MASK32))
    return mix32(h.bitwise_xor_(row.view(-1, *extra)))


def uniform(k: torch.Tensor) -> torch.Tensor:
    """One float64 uniform in (0, 1) per key."""
    return (mix32(k ^ 0x5BD1E995).double() + 0.5) / 2.0**32


def uniforms(
    seeds: torch.Tensor, stream: torch.Tensor | int, position: torch.Tensor, step: torch.Tensor | None = None
) -> torch.Tensor:
    """One float64 uniform in (0, 1) per (sample, stream, position[, step]): the engine's draws.

    Cheaper than `uniform(key(...))` (two mixes per element, no per-row hashing), and one call can
    serve several streams at once (`stream` [N] against `position` [B, N]), which is how the engine
    draws every uniform of an iteration in a handful of tensor ops. (position, step, stream) is packed
    injectively into 32 bits (positions and steps below 2**14, streams below 16), so within one sample
    no two draws share a key; the sample's two seed words are mixed in one after the other.

    Args:
        seeds: [B, 2] int64 seed words.
        stream: a stream constant, or [N] int64 stream constants (one per column of `position`).
        position: [B, N] absolute generated offsets, < MAX_POSITION.
        step: optional iteration counters (< MAX_POSITION): [B], or shaped like `position` (give 0
            in the columns of a stream that is not keyed by the step; see `jacobi._StreamTable`).

    Returns:
        [B, N] float64 in (0, 1).
    """
    extra = (1,) * (position.dim() - 1)
    packed = position | (stream << 28)
    if step is not None:
        packed = packed | ((step.view(-1, *extra) if step.dim() == 1 else step) << 14)
    h = mix32(packed ^ seeds[:, 0].view(-1, *extra))
    h = mix32(h.bitwise_xor_(seeds[:, 1].view(-1, *extra)))
    return (h.double() + 0.5) * 2.0**-32


def categorical(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Sample one index per row of `probs` by inverse CDF: the first v with cumsum(p)[v] > u * sum(p).

    Exact like the race (index v is drawn with probability p(v) / sum(p), up to float64 rounding
    of the cumulative sums), but it needs one uniform per draw instead of one per (draw, v): one
    cumulative sum and a binary search instead of hashing [..., V] keys. A zero-probability index
    is never drawn (its cumulative sum equals its predecessor's), and u < 1 keeps the search
    inside the row. No host sync.

    Args:
        probs: [..., V] non-negative weights (need not be normalised), some positive per row.
        u: [...] float64 uniforms in (0, 1).

    Returns:
        [...] int64 indices.
    """
    cdf = probs.double().cumsum(-1)  # the same sums as cumsum(dtype=float64), 25% faster on the CPU
    target = (u * cdf[..., -1]).unsqueeze(-1)
    return torch.searchsorted(cdf, target, right=True).squeeze(-1)


@lru_cache(maxsize=16)
def _vocab_keys(vocab: int, device: str) -> torch.Tensor:
    return mix32(torch.arange(vocab, dtype=torch.int64, device=device) + 0x27D4EB2F)


def race(probs: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Sample one index per row of `probs` by an exponential race: argmax_v p(v) / E_v.

    E_v = -log U_v with U_v a uniform in (0, 1) hashed from (key, v). This is an exact categorical
    draw (the Gumbel-max trick in another guise) and, unlike `torch.multinomial`, it never syncs.

    Args:
        probs: [..., V] non-negative weights (need not be normalised), any float dtype.
        k: [...] int64 keys.

    Returns:
        [...] int64 indices; never one of weight 0 unless the whole row is 0.
    """
    return race_scores(probs, k).argmax(-1)


def race_scores(probs: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The race's scores p(v) / E_v [..., V]: argmax is a draw from p, and the order of the top K is a
    draw of K indices without replacement (the Gumbel-top-k trick, Kool et al. arXiv 1903.06059)."""
    vk = _vocab_keys(probs.shape[-1], str(probs.device))
    return race_bits_scores(probs, mix32(k[..., None] ^ vk))


def race_bits(probs: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """The race of `race` from given 32-bit hashes bits [..., V] (exposed to test the extremes)."""
    return race_bits_scores(probs, bits).argmax(-1)


def race_bits_scores(probs: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    work = torch.float64 if probs.dtype == torch.float64 else torch.float32
    return probs.to(work) / exponentials(bits, work)


def exponentials(bits: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Exponential variates E = -log U from 32-bit hashes, with U strictly inside (0, 1).

    U = (b + 1/2) 2^-23 from the top 23 bits b: every value, 1/2 included, is exact in float32, so
    U lies in [2^-24, 1 - 2^-24] and E in (0, 17) whatever the dtype of the weights. (Computing U in
    the weights' own dtype, as before, rounded U to exactly 1 (E = 0, so 0/0 = NaN won the argmax
    for a zero-weight index) in float32 at the largest 24-bit value, often in bfloat16, and
    overflowed to inf in float16.)
    """
    u = ((bits >> 9).to(dtype) + 0.5) * 2.0**-23
    return -torch.log(u)
