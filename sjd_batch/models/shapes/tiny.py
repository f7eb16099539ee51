"""`tiny-random`: a small random-weight Llama with the row layout, for plumbing tests and demos.

Its acceptance statistics mean nothing: a random model's next-token law is near-uniform, so almost
every random draft passes (docs/model-families.md, "Tiny random models"). Use it to test that things run and
agree, never to report speed-ups.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from sjd_batch.models.blocks.llama_t2i import LlamaT2IModel, Vocabulary, row_layout
from sjd_batch.models.shapes import TINY_RANDOM


@dataclass(frozen=True)
class TinySpec:
    """Shape of a tiny random model. The defaults make `tiny-random`."""

    height: int = 8
    width: int = 8
    num_codes: int = 64
    num_words: int = 32
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    patch: int = 4
    logit_scale: float = 1.0  # multiplies the LM head: > 1 makes P peakier (less uniform)
    seed: int = 0
    intermediate: int = 0  # MLP width; 0: 2 x hidden
    max_positions: int = 512
    # Build the weights on `device` (a real-size model for timing: fast on a GPU, but the random
    # weights then come from that device's generator, so they differ from a CPU build's)
    init_on_device: bool = False
    name: str = "tiny-random"


def build_tiny(
    spec: TinySpec = TinySpec(), device: str | torch.device = "cpu", dtype=torch.float32
) -> LlamaT2IModel:
    """Build a seeded random model; the same spec always gives the same weights."""
    vocab = Vocabulary(tuple(f"w{i}" for i in range(spec.num_words)), spec.num_codes, hash_words=True)
    config = LlamaConfig(
        vocab_size=vocab.size,
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate or 2 * spec.hidden,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        max_position_embeddings=spec.max_positions,
        tie_word_embeddings=False,
    )
    config._attn_implementation = "sdpa"
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(spec.seed)  # weights are a pure function of the spec
    with torch.device(device if spec.init_on_device else "cpu"):
        lm = LlamaForCausalLM(config)
    palette = torch.randint(0, 256, (spec.num_codes, 3), dtype=torch.uint8)
    torch.random.set_rng_state(generator_state)
    with torch.no_grad():
        lm.lm_head.weight.mul_(spec.logit_scale)
    lm = lm.to(device=device, dtype=dtype)
    return LlamaT2IModel(
        name=spec.name,
        lm=lm,
        vocab=vocab,
        layout=row_layout(spec.height, spec.width, vocab),
        pixels=lambda codes: palette_pixels(codes, palette.to(codes.device), spec.patch),
        default_sampling=TINY_RANDOM.sampling(),
    )


def palette_pixels(codes: torch.Tensor, palette: torch.Tensor, patch: int) -> torch.Tensor:
    """Codes [B, H, W] -> uint8 [B, H*patch, W*patch, 3]: each code paints a flat patch."""
    rgb = palette[codes]  # [B, H, W, 3]
    return rgb.repeat_interleave(patch, dim=1).repeat_interleave(patch, dim=2)
