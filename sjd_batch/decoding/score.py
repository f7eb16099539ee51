"""Teacher-forced laws of given sequences, and the model-based statistics built on them.

`teacher_forced_laws` computes, for every offset t of given token sequences, the law P_t that plain
AR would sample offset t from after the prompt and tokens[:t] (same forward, same `processed_probs`).
It is the exact-law oracle of the losslessness tests and the basis of two checks of any sampler:

- off-support tokens: a token x_t with P_t(x_t) = 0 can never come from AR. No method may emit one.
- the NLL gap, per image: mean over image codes of  -log P_t(x_t) - H(P_t). Given the prefix, an
  exact sampler draws x_t from P_t, so E[-log P_t(x_t) | prefix] = H(P_t): every term has conditional
  mean 0 (a martingale difference), and so does the per-image mean. A sampler with the wrong law
  shifts it: too greedy (a lower temperature, a bias toward likely tokens) makes it negative, too
  flat makes it positive. Averaged over N images its standard error shrinks as 1/sqrt(N), which gives
  `eval` a test with far more power than histogram comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sjd_batch.decoding.protocol import ImageTokenModel, Prefix, decode_window, prefill_window
from sjd_batch.decoding.sampling import Grammar, SamplingConfig, processed_probs


@torch.inference_mode()
def teacher_forced_laws(
    model: ImageTokenModel, prefix: Prefix, tokens: torch.Tensor, sampling: SamplingConfig
) -> torch.Tensor:
    """P [B, T, V]: the law of offset t given the prompt and tokens[:, :t], for tokens [B, T].

    One prefill and one window over the whole sequence (the position-indexed cache makes that the
    same computation as T single-token steps, up to float rounding).
    """
    batch, length = tokens.shape
    total = prefix.length + length + 1
    cache = model.new_cache(prefix.rows, total)
    first = model.forward(cache, prefix.ids, prefill_window(prefix, total))[:, -1:]
    inputs = tokens[:, :-1].to(prefix.ids.device)
    if sampling.uses_cfg:
        inputs = inputs.repeat(2, 1)
    starts = torch.full((prefix.rows,), prefix.length, dtype=torch.long, device=prefix.ids.device)
    logits = [first]
    if length > 1:
        logits.append(model.forward(cache, inputs, decode_window(starts, prefix.start, length - 1, total)))
    offsets = torch.arange(length, device=prefix.ids.device).expand(batch, length)
    grammar = Grammar(model.layout, model.vocab_size, model.device)
    return processed_probs(torch.cat(logits, 1), offsets, grammar, sampling)


@dataclass
class SequenceScore:
    """Per-sequence statistics of tokens against their teacher-forced laws."""

    nll_gap: torch.Tensor  # [B] mean over free (image-code) offsets of -log P(x) - H(P)
    off_support: torch.Tensor  # [B] long: tokens with P(x) = 0 (any offset, forced ones included)


def score_sequences(laws: torch.Tensor, tokens: torch.Tensor, free: torch.Tensor) -> SequenceScore:
    """laws [B, T, V] (from `teacher_forced_laws`), tokens [B, T], free [T] bool (image-code offsets)."""
    tokens = tokens.to(laws.device)
    px = laws.gather(-1, tokens[..., None])[..., 0]
    tiny = torch.finfo(laws.dtype).tiny
    entropy = -(laws * laws.clamp_min(tiny).log()).sum(-1)
    gap = -px.clamp_min(tiny).log() - entropy  # an off-support token counts as -log(tiny), huge
    free = free.to(laws.device)
    return SequenceScore(nll_gap=gap[:, free].mean(1), off_support=(px <= 0).sum(1))
