"""Shared prompts and seeds for the decoding tests."""

from __future__ import annotations

import torch

from sjd_batch.decoding.rng import sample_seed, seed_tensor

PROMPTS = [
    "a red circle",
    "two blue squares at the top left and a green cross at the bottom right of the picture",
    "w1 w2",
    "",
    "a small yellow triangle",
    "w7 w3 w30 w12 w5",
    "purple",
    "the quick brown fox jumps over the lazy dog",
]


def seeds_for(ids: list[str], job_seed: int = 0) -> torch.Tensor:
    return seed_tensor([sample_seed(job_seed, i) for i in ids])
