"""LlamaGen's VQ tokenizer (VQ-16 / VQ-8): codebook lookup and the convolutional decoder.

Module names follow FoundationVision/LlamaGen `tokenizer/tokenizer_image/vq_model.py` (itself a
taming-transformers descendant; the residual, attention and resampling blocks come from
`sjd_batch.models.blocks.vqgan_blocks`), so `vq_ds16_t2i.pt` / `vq_ds16_c2i.pt` load key for key:
`encoder.*`, `decoder.{conv_in,mid.N,conv_blocks.N.{res,attn}.M,conv_blocks.N.upsample.conv,
norm_out,conv_out}`, `quantize.embedding.weight`, `quantize.codebook_used`, `quant_conv`,
`post_quant_conv`. Our own code.

Generation only needs the decoder. The encoder is built on request (`with_encoder=True`); without
it, the checkpoint's `encoder.*` and `quant_conv.*` keys are expected and dropped.
The codebook is l2-normalised at lookup time (LlamaGen's `codebook_l2_norm=True`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# The taming building blocks (and their parameter names: norm1/conv1/norm2/conv2/nin_shortcut,
# norm/q/k/v/proj_out, conv) are the same in LlamaGen's VQ as in Chameleon's VQGAN; only the way
# they are grouped into levels and the quantizer differ.
from sjd_batch.models.blocks.vqgan_blocks import AttnBlock, Downsample, ResnetBlock, Upsample, run_level

# LlamaGen's `VQ_models`: channel multipliers per resolution level (the downsampling factor is
# 2 ** (levels - 1)).
VQ_SIZES: dict[str, tuple[int, ...]] = {"VQ-16": (1, 1, 2, 2, 4), "VQ-8": (1, 2, 2, 4)}


@dataclass(frozen=True)
class VQConfig:
    """LlamaGen's VQ `ModelArgs` plus the Encoder/Decoder constructor defaults it does not expose.

    `ch` must be a multiple of 32: every norm is GroupNorm(32).
    """

    codebook_size: int = 16384
    codebook_embed_dim: int = 8
    ch_mult: tuple[int, ...] = VQ_SIZES["VQ-16"]
    z_channels: int = 256
    ch: int = 128
    num_res_blocks: int = 2
    codebook_usage_slots: int = 65536  # length of the `codebook_used` buffer in the checkpoints

    def __post_init__(self) -> None:
        widths = [self.ch * m for m in self.ch_mult]
        if any(w % 32 for w in widths):
            raise ValueError(f"VQ channel widths {widths} must be multiples of 32 (GroupNorm(32))")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


def _level(blocks: list[nn.Module], attn: list[nn.Module]) -> nn.Module:
    level = nn.Module()
    level.res = nn.ModuleList(blocks)
    level.attn = nn.ModuleList(attn)
    return level


def _mid(channels: int) -> nn.ModuleList:
    return nn.ModuleList(
        [ResnetBlock(channels, channels), AttnBlock(channels), ResnetBlock(channels, channels)]
    )


class Encoder(nn.Module):
    def __init__(self, config: VQConfig) -> None:
        super().__init__()
        c = config
        self.conv_in = nn.Conv2d(3, c.ch, 3, padding=1)
        self.conv_blocks = nn.ModuleList()
        cin = c.ch
        last = len(c.ch_mult) - 1
        for i, mult in enumerate(c.ch_mult):
            blocks, attn = [], []
            for _ in range(c.num_res_blocks):
                blocks.append(ResnetBlock(cin, c.ch * mult))
                cin = c.ch * mult
                if i == last:  # attention only at the lowest resolution
                    attn.append(AttnBlock(cin))
            level = _level(blocks, attn)
            if i != last:
                level.downsample = Downsample(cin)
            self.conv_blocks.append(level)
        self.mid = _mid(cin)
        self.norm_out = _norm(cin)
        self.conv_out = nn.Conv2d(cin, c.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.conv_blocks:
            h = run_level(level.res, level.attn, h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        for block in self.mid:
            h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, config: VQConfig) -> None:
        super().__init__()
        c = config
        cin = c.ch * c.ch_mult[-1]
        self.conv_in = nn.Conv2d(c.z_channels, cin, 3, padding=1)
        self.mid = _mid(cin)
        self.conv_blocks = nn.ModuleList()
        last = len(c.ch_mult) - 1
        for i in reversed(range(len(c.ch_mult))):  # lowest resolution first
            blocks, attn = [], []
            for _ in range(c.num_res_blocks + 1):
                blocks.append(ResnetBlock(cin, c.ch * c.ch_mult[i]))
                cin = c.ch * c.ch_mult[i]
                if i == last:
                    attn.append(AttnBlock(cin))
            level = _level(blocks, attn)
            if i != 0:
                level.upsample = Upsample(cin)
            self.conv_blocks.append(level)
        self.norm_out = _norm(cin)
        self.conv_out = nn.Conv2d(cin, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        for block in self.mid:
            h = block(h)
        for level in self.conv_blocks:
            h = run_level(level.res, level.attn, h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    def __init__(self, config: VQConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(config.codebook_size, config.codebook_embed_dim)
        # Training-time usage statistics; kept only so the checkpoint's key has a home.
        self.register_buffer("codebook_used", torch.zeros(config.codebook_usage_slots))

    def codebook(self) -> torch.Tensor:
        return F.normalize(self.embedding.weight, p=2, dim=-1)  # [N, C]

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, h, w] -> latents [B, C, h, w] from the l2-normalised codebook."""
        return self.codebook()[codes].permute(0, 3, 1, 2).contiguous()

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Latents [B, C, h, w] -> nearest codes [B, h, w] by cosine (both sides l2-normalised)."""
        zf = F.normalize(z.permute(0, 2, 3, 1), p=2, dim=-1)
        return (zf @ self.codebook().T).argmax(-1)


class VQModel(nn.Module):
    """LlamaGen's `VQModel` for inference: `decode_codes` always, `encode_codes` with the encoder."""

    def __init__(self, config: VQConfig, with_encoder: bool = False) -> None:
        super().__init__()
        self.config = config
        if with_encoder:
            self.encoder = Encoder(config)
            self.quant_conv = nn.Conv2d(config.z_channels, config.codebook_embed_dim, 1)
        self.decoder = Decoder(config)
        self.quantize = VectorQuantizer(config)
        self.post_quant_conv = nn.Conv2d(config.codebook_embed_dim, config.z_channels, 1)

    @property
    def has_encoder(self) -> bool:
        return hasattr(self, "encoder")

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, h, w] -> images [B, 3, h*f, w*f], roughly in [-1, 1] (LlamaGen `decode_code`)."""
        assert codes.ndim == 3, "codes must be [B, h, w]"
        return self.decoder(self.post_quant_conv(self.quantize.lookup(codes)))

    def encode_codes(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] in [-1, 1] -> codes [B, H/f, W/f]."""
        if not self.has_encoder:
            raise ValueError("this VQ model was loaded without its encoder; load it with with_encoder=True")
        return self.quantize.nearest(self.quant_conv(self.encoder(images)))


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [-1, 1] -> uint8 [B, H, W, 3], LlamaGen's mapping (x * 127.5 + 128, clamped)."""
    return images.float().mul(127.5).add(128.0).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
