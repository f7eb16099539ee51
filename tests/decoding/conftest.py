"""Toy models for the decoding tests: real `LlamaT2IModel`s (the production interface) with tiny
random weights, built from a spec so every test gets the same weights."""

from __future__ import annotations

import pytest
import torch

from sjd_batch.models.shapes.tiny import TinySpec, build_tiny


@pytest.fixture(scope="session")
def tiny32():
    """fp32, 8x8 codes + EOL + EOI (73 tokens), peaky enough that greedy ties are rare."""
    return build_tiny(TinySpec(logit_scale=20.0), dtype=torch.float32)


def _small(**shape) -> TinySpec:
    """A float64-sized toy: 2 layers, hidden 32, 4 heads over 2 KV heads, plus the given shape."""
    return TinySpec(hidden=32, layers=2, heads=4, kv_heads=2, **shape)


@pytest.fixture(scope="session")
def toy64():
    """float64, 2x2 codes over 3 image ids, EOL per row: 81 free outcomes, enumerable exactly."""
    spec = _small(height=2, width=2, num_codes=3, num_words=8, logit_scale=6.0, seed=3)
    return build_tiny(spec, dtype=torch.float64)


@pytest.fixture(scope="session")
def small64():
    """float64, 4x4 codes over 16 ids: long enough for windows to matter, for batch-independence tests."""
    spec = _small(height=4, width=4, num_codes=16, num_words=16, logit_scale=8.0, seed=5)
    return build_tiny(spec, dtype=torch.float64)
