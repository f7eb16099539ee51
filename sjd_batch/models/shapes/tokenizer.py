"""A k-means patch codebook: the image tokenizer of `shapes-t2i`.

An image is cut into 4×4 RGB patches (48 values each); a patch's token is the index of its nearest
codebook vector, and decoding is a lookup that pastes the vector back. Lloyd's algorithm runs in
torch from a seeded k-means++ start, so the same seed and data give the same codebook.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

PATCH = 4


@dataclass(frozen=True)
class KMeansConfig:
    """How the codebook is fitted.

    Attributes:
        num_codes: K, the codebook size.
        iterations: Lloyd iterations after k-means++ initialisation.
        seed: torch seed for the initialisation.
        chunk: patches per distance block (bounds memory).
    """

    num_codes: int = 512
    iterations: int = 30
    seed: int = 0
    chunk: int = 65536


def to_patches(pixels: torch.Tensor, patch: int = PATCH) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, H/p, W/p, p*p*3] in [0, 1]."""
    b, h, w, c = pixels.shape
    x = pixels.float().div(255).view(b, h // patch, patch, w // patch, patch, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h // patch, w // patch, patch * patch * c)


def from_patches(patches: torch.Tensor, patch: int = PATCH) -> torch.Tensor:
    """float [B, h, w, p*p*3] in [0, 1] -> uint8 [B, h*p, w*p, 3]."""
    b, h, w, _ = patches.shape
    x = patches.view(b, h, w, patch, patch, 3).permute(0, 1, 3, 2, 4, 5).reshape(b, h * patch, w * patch, 3)
    return x.clamp(0, 1).mul(255).round().to(torch.uint8)


def nearest(points: torch.Tensor, codebook: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """Index of the nearest code for each point. points: [N, D]; codebook: [K, D] -> [N] long."""
    c2 = codebook.pow(2).sum(1)
    out = []
    for block in points.split(chunk):
        # |x - c|^2 = |x|^2 - 2 x.c + |c|^2; |x|^2 does not change the argmin
        out.append((c2[None] - 2 * block @ codebook.T).argmin(1))
    return torch.cat(out)


def _kmeanspp(points: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) on a subsample, for a reproducible start."""
    centers = [points[torch.randint(len(points), (1,), generator=gen)]]
    dist = (points - centers[0]).pow(2).sum(1)
    for _ in range(1, k):
        idx = torch.multinomial(dist + 1e-12, 1, generator=gen)
        centers.append(points[idx])
        dist = torch.minimum(dist, (points - centers[-1]).pow(2).sum(1))
    return torch.cat(centers)


def fit_codebook(points: torch.Tensor, config: KMeansConfig = KMeansConfig()) -> torch.Tensor:
    """Fit a [K, D] codebook to points [N, D] with Lloyd's algorithm; empty codes are re-seeded."""
    gen = torch.Generator().manual_seed(config.seed)
    sub = points[torch.randperm(len(points), generator=gen)[: 40 * config.num_codes]]
    codebook = _kmeanspp(sub, config.num_codes, gen)
    for _ in range(config.iterations):
        assign = nearest(points, codebook, config.chunk)
        sums = torch.zeros_like(codebook).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=config.num_codes).to(points.dtype)
        empty = counts == 0
        codebook = torch.where(empty[:, None], codebook, sums / counts.clamp(min=1)[:, None])
        if empty.any():  # re-seed dead codes on random points so K stays fully used
            codebook[empty] = points[torch.randint(len(points), (int(empty.sum()),), generator=gen)]
    return codebook


class PatchTokenizer:
    """Encode uint8 images to code grids and back with a fixed codebook [K, p*p*3]."""

    def __init__(self, codebook: torch.Tensor, patch: int = PATCH) -> None:
        self.codebook = codebook.float()
        self.patch = patch

    @property
    def num_codes(self) -> int:
        return self.codebook.shape[0]

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] -> long codes [B, H/p, W/p]."""
        patches = to_patches(pixels, self.patch)
        b, h, w, d = patches.shape
        return nearest(patches.reshape(-1, d), self.codebook).view(b, h, w)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """long codes [B, h, w] -> uint8 [B, h*p, w*p, 3]."""
        return from_patches(self.codebook.to(codes.device)[codes], self.patch)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB between two uint8 image batches, over all pixels together."""
    mse = (a.float() - b.float()).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * float(np.log10(255.0**2 / mse))
