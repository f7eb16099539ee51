"""The taming-transformers building blocks of the Chameleon VQGAN: `ResnetBlock`, `AttnBlock`,
`Downsample`, `Upsample`, and the `Encoder` / `Decoder` stacks built from them, with parameter names
that match Meta's `vqgan.ckpt` keys. `vqgan.py` assembles them into the `VQGAN` and loads checkpoints;
LlamaGen's VQ (`llamagen/vq.py`) reuses the blocks.

Structure learned from CompVis/taming-transformers `taming/modules/diffusionmodules/model.py`; the code
here is our own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from sjd_batch.models.blocks.vqgan_config import VQGANConfig


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


def _conv3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1)


class ResnetBlock(nn.Module):
    """norm-swish-conv twice plus a skip; `nin_shortcut` (1x1) when the width changes."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), _conv3(cin, cout)
        self.norm2, self.conv2 = _norm(cout), _conv3(cout, cout)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        skip = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return skip + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all spatial positions, with 1x1 convs as projections."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(channels, channels, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (m(y).reshape(b, 1, c, h * w).transpose(2, 3) for m in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # scale c^-0.5, as taming's bmm + softmax
        return x + self.proj_out(out.transpose(2, 3).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # taming pads right/bottom only


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = _conv3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def run_level(blocks: nn.ModuleList, attn: nn.ModuleList, h: torch.Tensor) -> torch.Tensor:
    """One resolution level: each residual block, followed by its attention block when the level has
    them (`attn` empty otherwise). Shared with llamagen/vq.py, whose checkpoints name `blocks` `res`."""
    for i, block in enumerate(blocks):
        h = block(h)
        if len(attn):
            h = attn[i](h)
    return h


class _Level(nn.Module):
    """One resolution of the encoder (`down.N`) or decoder (`up.N`): `block.M`, `attn.M`, resampler."""

    def __init__(self, widths: list[tuple[int, int]], attn: bool) -> None:
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(cin, cout) for cin, cout in widths)
        self.attn = nn.ModuleList(AttnBlock(cout) for _, cout in widths) if attn else nn.ModuleList()

    def run(self, h: torch.Tensor) -> torch.Tensor:
        return run_level(self.block, self.attn, h)


class _Middle(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class Encoder(nn.Module):
    """Pixels [B, in_ch, H, W] -> latents [B, z, H/f, W/f] (f = 2^(levels-1))."""

    def __init__(self, cfg: VQGANConfig) -> None:
        super().__init__()
        self.conv_in = _conv3(cfg.in_channels, cfg.ch)
        self.down = nn.ModuleList()
        cin, res = cfg.ch, cfg.resolution
        for i, mult in enumerate(cfg.ch_mult):
            cout = cfg.ch * mult
            widths = [(cin if j == 0 else cout, cout) for j in range(cfg.num_res_blocks)]
            level = _Level(widths, attn=res in cfg.attn_resolutions)
            if i < len(cfg.ch_mult) - 1:
                level.downsample = Downsample(cout)
                res //= 2
            self.down.append(level)
            cin = cout
        self.mid = _Middle(cin)
        self.norm_out = _norm(cin)
        self.conv_out = _conv3(cin, 2 * cfg.z_channels if cfg.double_z else cfg.z_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level.run(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    """Latents [B, z, h, w] -> pixels [B, out_ch, h*f, w*f], roughly in [-1, 1]."""

    def __init__(self, cfg: VQGANConfig) -> None:
        super().__init__()
        cin = cfg.ch * cfg.ch_mult[-1]
        res = cfg.resolution // cfg.downsample
        self.conv_in = _conv3(cfg.z_channels, cin)
        self.mid = _Middle(cin)
        levels: list[_Level] = []
        for i in reversed(range(len(cfg.ch_mult))):  # built coarse to fine, stored fine to coarse
            cout = cfg.ch * cfg.ch_mult[i]
            widths = [(cin if j == 0 else cout, cout) for j in range(cfg.num_res_blocks + 1)]
            level = _Level(widths, attn=res in cfg.attn_resolutions)
            if i > 0:
                level.upsample = Upsample(cout)
                res *= 2
            levels.insert(0, level)
            cin = cout
        self.up = nn.ModuleList(levels)  # up.0 is the finest level, as in taming's checkpoints
        self.norm_out = _norm(cin)
        self.conv_out = _conv3(cin, cfg.out_ch)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level.run(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))
