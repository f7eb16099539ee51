"""`decode()`: one batch of already tokenised prompts through the slot engine, all in flight at once.

For callers that hold a batched `Prefix` (tests, tools, the exact-enumeration harness); `generate()`
and the job worker stream requests instead (`engine.decode_stream`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sjd_batch.decoding.engine import Request, decode_stream
from sjd_batch.decoding.methods import DecodeConfig
from sjd_batch.decoding.protocol import ImageTokenModel, Prefix
from sjd_batch.decoding.sampling import SamplingConfig
from sjd_batch.decoding.state import SampleStats


@dataclass
class DecodeOutput:
    tokens: torch.Tensor  # [B, T] long, on the CPU
    stats: list[SampleStats]


def decode(model: ImageTokenModel, prefix: Prefix, seeds: torch.Tensor, sampling: SamplingConfig,
           config: DecodeConfig) -> DecodeOutput:
    """Decode one batch of tokenised prompts, every sample in flight at once (B slots).

    Args:
        prefix: B rows (2B with CFG: cond rows, then uncond rows), left-padded to a common length.
        seeds: [B, 2] per-sample seed words (`rng.seed_tensor`).

    Returns:
        tokens [B, T] and one `SampleStats` per row, in row order.
    """
    batch, rows_per = seeds.shape[0], 2 if sampling.uses_cfg else 1
    if prefix.rows != batch * rows_per:
        raise ValueError(f"prefix has {prefix.rows} rows for {batch} seeds (cfg={sampling.uses_cfg})")
    requests = [
        Request("", lo | hi << 32, tag=i, prefix=Prefix(prefix.ids[i::batch], prefix.start[i::batch]))
        for i, (lo, hi) in enumerate(seeds.tolist())
    ]
    stream = decode_stream(model, requests, sampling, config, batch, prefill="together")
    out = sorted(stream, key=lambda f: f.tag)
    for f in out:
        if f.error is not None:
            raise ValueError(f"sample {f.tag}: {f.error}")
    return DecodeOutput(torch.stack([f.tokens for f in out]), [f.stats for f in out])
