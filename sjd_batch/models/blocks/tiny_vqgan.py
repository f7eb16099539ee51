"""The test fixtures' VQGAN: `TINY_CONFIG` (tiny sizes) and `random_vqgan`, a seeded random
`sjd_batch.models.blocks.vqgan.VQGAN` with its encoder (used by `lumina.tiny` and
tests/models/test_vqgan.py)."""

from __future__ import annotations

import torch

from sjd_batch.models.blocks.vqgan import VQGAN
from sjd_batch.models.blocks.vqgan_config import VQGANConfig

# The test fixture's VQGAN (tiny sizes; attention at 16 px so that attn blocks are exercised).
TINY_CONFIG = VQGANConfig(
    embed_dim=8,
    n_embed=64,
    z_channels=8,
    resolution=32,
    ch=32,
    ch_mult=(1, 2),
    num_res_blocks=1,
    attn_resolutions=(16,),
)


def random_vqgan(cfg: VQGANConfig, seed: int = 0) -> VQGAN:
    """A seeded random VQGAN with its encoder (fixtures); the same seed gives the same weights."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = VQGAN(cfg, with_encoder=True)
    with torch.no_grad():  # spread the codebook so that nearest-code lookups are well separated
        model.quantize.embedding.weight.normal_()
    torch.random.set_rng_state(generator_state)
    return model.eval()
