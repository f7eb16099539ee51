"""LlamaGen's GPT (class- and text-conditional) driven through the project's slot-indexed KV cache.

The module tree mirrors FoundationVision/LlamaGen `autoregressive/models/gpt.py`, so the official
checkpoints (`c2i_*.pt`, `t2i_XL_stage*_*.pt`) load key for key: `cls_embedding.embedding_table`
(c2i) or `cls_embedding.cap_proj.fc{1,2}` + the buffer `cls_embedding.uncond_embedding` (t2i),
`tok_embeddings`, `layers.N.attention.{wqkv,wo}`, `layers.N.feed_forward.{w1,w2,w3}`,
`layers.N.{attention_norm,ffn_norm}`, `norm`, `output`. The code is our own; the architecture
is LlamaGen's (itself adapted from gpt-fast and Llama).

Two LlamaGen details that the checkpoints depend on, kept on purpose:
- RoPE is **2-D** over the image grid (half the rotary pairs rotate with the row, half with the
  column), indexed by the absolute sequence index, with the condition tokens first. The table's
  rows for the condition tokens are all zeros (not the identity rotation), so their queries and
  keys are zero: image tokens attend to every condition token with logit 0 and read them through
  the values only.
- Dropout and drop-path exist only in training and have no weights, so they are left out here.

The prefix (condition tokens) goes through `embed_condition`; image codes through `tok_embeddings`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sjd_batch.decoding.protocol import Window
from sjd_batch.models.blocks.hf_causal import SlotCache

# (n_layer, n_head, dim) of LlamaGen's `GPT_models` registry, by the names its scripts use.
GPT_SIZES: dict[str, tuple[int, int, int]] = {
    "GPT-B": (12, 12, 768),
    "GPT-L": (24, 16, 1024),
    "GPT-XL": (36, 20, 1280),
    "GPT-XXL": (48, 24, 1536),
    "GPT-XXXL": (48, 40, 2560),
    "GPT-1B": (22, 32, 2048),
    "GPT-3B": (24, 32, 3200),
    "GPT-7B": (32, 32, 4096),
}
MODEL_TYPES = ("c2i", "t2i")


@dataclass(frozen=True)
class GPTConfig:
    """LlamaGen's `ModelArgs`, inference fields only.

    Attributes:
        dim, n_layer, n_head, n_kv_head: transformer width, depth, heads (n_kv_head None = n_head).
        multiple_of, ffn_dim_multiplier: SwiGLU hidden size rounding, as in Llama.
        vocab_size: codebook size; the GPT predicts codes directly.
        block_size: image tokens per sample (a square grid).
        cls_token_num: condition tokens before the image (1 for c2i, 120 for t2i).
        model_type: "c2i" or "t2i".
        num_classes: c2i classes; the null class is index num_classes.
        caption_dim: width of the text-encoder states (2048 for flan-t5-xl).
        caption_tokens: rows of the learned null caption (`uncond_embedding`); 120 in LlamaGen.
    """

    dim: int
    n_layer: int
    n_head: int
    n_kv_head: int | None = None
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    vocab_size: int = 16384
    block_size: int = 256
    cls_token_num: int = 1
    model_type: str = "c2i"
    num_classes: int = 1000
    caption_dim: int = 2048
    caption_tokens: int = 120

    def __post_init__(self) -> None:
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"GPT model_type must be one of {MODEL_TYPES}, got {self.model_type!r}")
        if self.dim % self.n_head:
            raise ValueError(f"GPT dim {self.dim} is not divisible by n_head {self.n_head}")
        if int(self.grid**2) != self.block_size:
            raise ValueError(f"GPT block_size {self.block_size} is not a square number of image tokens")
        if self.head_dim % 4:
            raise ValueError(f"GPT head dim {self.head_dim} must be a multiple of 4 for 2-D RoPE")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def grid(self) -> int:
        return round(self.block_size**0.5)

    @property
    def ffn_hidden(self) -> int:
        hidden = int(2 * (4 * self.dim) / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return -(-hidden // self.multiple_of) * self.multiple_of

    @classmethod
    def named(cls, name: str, **fields) -> GPTConfig:
        """A config from LlamaGen's size name ("GPT-XL", ...) plus the remaining fields."""
        if name not in GPT_SIZES:
            raise ValueError(f"unknown LlamaGen GPT size {name!r}; choose one of {sorted(GPT_SIZES)}")
        n_layer, n_head, dim = GPT_SIZES[name]
        return cls(dim=dim, n_layer=n_layer, n_head=n_head, **fields)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32, then scale in the model dtype (LlamaGen's order).
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class MLP(nn.Module):
    """The caption projection: Linear -> GELU(tanh) -> Linear, no biases."""

    def __init__(self, in_features: int, hidden: int, out_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class LabelEmbedder(nn.Module):
    """c2i condition: one embedding row per class, plus the null class at index num_classes."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.embedding_table = nn.Embedding(config.num_classes + 1, config.dim)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:  # [R, 1] -> [R, 1, dim]
        return self.embedding_table(labels)


class CaptionEmbedder(nn.Module):
    """t2i condition: text-encoder states projected to the model width; a learned null caption."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.cap_proj = MLP(config.caption_dim, config.dim, config.dim)
        # A buffer in LlamaGen (not a parameter), so it is in the checkpoint under this name.
        self.register_buffer("uncond_embedding", torch.zeros(config.caption_tokens, config.caption_dim))

    def forward(self, states: torch.Tensor) -> torch.Tensor:  # [R, N, caption_dim] -> [R, N, dim]
        return self.cap_proj(states)


class FeedForward(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(config.dim, config.ffn_hidden, bias=False)
        self.w3 = nn.Linear(config.dim, config.ffn_hidden, bias=False)
        self.w2 = nn.Linear(config.ffn_hidden, config.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Attention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        kv = config.kv_heads * config.head_dim
        self.wqkv = nn.Linear(config.dim, config.dim + 2 * kv, bias=False)
        self.wo = nn.Linear(config.dim, config.dim, bias=False)

    def forward(
        self, x: torch.Tensor, rope: torch.Tensor, cache: SlotCache, layer: int, visible: torch.Tensor
    ) -> torch.Tensor:
        c = self.config
        rows, width, _ = x.shape
        kv = c.kv_heads * c.head_dim
        q, k, v = self.wqkv(x).split([c.dim, kv, kv], dim=-1)
        q = apply_rope(q.view(rows, width, c.n_head, c.head_dim), rope).transpose(1, 2)
        k = apply_rope(k.view(rows, width, c.kv_heads, c.head_dim), rope).transpose(1, 2)
        v = v.view(rows, width, c.kv_heads, c.head_dim).transpose(1, 2)
        keys, values = cache.update(k, v, layer)  # [R, H_kv, S, D]: every slot, stale ones masked
        if c.kv_heads != c.n_head:
            keys = keys.repeat_interleave(c.n_head // c.kv_heads, dim=1)
            values = values.repeat_interleave(c.n_head // c.kv_heads, dim=1)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=visible)
        return self.wo(out.transpose(1, 2).reshape(rows, width, c.dim))


class TransformerBlock(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.attention = Attention(config)
        self.feed_forward = FeedForward(config)
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)

    def forward(self, x, rope, cache, layer, visible) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), rope, cache, layer, visible)
        return h + self.feed_forward(self.ffn_norm(h))


class LlamaGenGPT(nn.Module):
    """LlamaGen's `Transformer`, with the forward split into condition and image-token embedding."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.cls_embedding = LabelEmbedder(config) if config.model_type == "c2i" else CaptionEmbedder(config)
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(TransformerBlock(config) for _ in range(config.n_layer))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = nn.Linear(config.dim, config.vocab_size, bias=False)
        # Not a buffer (as in LlamaGen): it never enters a state dict and stays fp32 under `.to(bf16)`.
        self.rope_table = rope_table_2d(config.grid, config.head_dim, config.rope_base, config.cls_token_num)

    def new_cache(self, rows: int, slots: int) -> SlotCache:
        c, param = self.config, self.tok_embeddings.weight
        return SlotCache(c.n_layer, rows, c.kv_heads, slots, c.head_dim, param.dtype, param.device)

    def embed_condition(self, cond: torch.Tensor) -> torch.Tensor:
        """Class labels [R, 1] (c2i) or caption states [R, N, caption_dim] (t2i) -> [R, cls_tokens, dim]."""
        return self.cls_embedding(cond)[:, : self.config.cls_token_num]

    def forward(
        self, cache: SlotCache, h: torch.Tensor, window: Window, last_only: bool = False
    ) -> torch.Tensor:
        """Embeddings h [R, W, dim] at `window.slots` -> logits [R, W, V] in fp32 ([R, 1, V] if last_only)."""
        assert h.ndim == 3 and h.shape[:2] == window.slots.shape, "h must be [R, W, dim] matching the window"
        if self.rope_table.device != h.device:  # a plain fp32 attribute: `.to(dtype)` must not round it
            self.rope_table = self.rope_table.to(h.device)
        table = self.rope_table
        # The RoPE index is the absolute sequence index (LlamaGen's input_pos), which is the slot:
        # the prefix is always exactly cls_token_num long, padding only hides keys. Slots past the
        # grid (room for the last window) are never read by a real position, so clamping is safe.
        rope = table[window.slots.clamp(max=table.shape[0] - 1)]  # [R, W, D/2, 2]
        cache.begin(window.write_slots)
        for i, layer in enumerate(self.layers):
            h = layer(h, rope, cache, i, window.visible)
        if last_only:  # a prefill needs only the law of the first image token
            h = h[:, -1:]
        return self.output(self.norm(h)).float()


def rope_table_2d(grid: int, head_dim: int, base: float, cond_tokens: int) -> torch.Tensor:
    """(cos, sin) pairs [cond_tokens + grid**2, head_dim/2, 2] for LlamaGen's 2-D RoPE.

    The first half of the rotary pairs turns with the row index, the second with the column index;
    the condition rows are zeros (see the module docstring). Idea from LlamaGen
    `precompute_freqs_cis_2d`.
    """
    cpu = torch.device("cpu")  # explicit, so building the model under a meta device still gets real values
    half = head_dim // 2
    inv_freq = 1.0 / (base ** (torch.arange(0, half, 2, device=cpu)[: half // 2].float() / half))  # [D/4]
    angles = torch.outer(torch.arange(grid, device=cpu).float(), inv_freq)  # [grid, D/4]
    rows = angles[:, None, :].expand(grid, grid, -1)
    cols = angles[None, :, :].expand(grid, grid, -1)
    grid_angles = torch.cat([rows, cols], dim=-1).flatten(0, 1)  # [grid**2, D/2]
    table = torch.stack([grid_angles.cos(), grid_angles.sin()], dim=-1)
    return torch.cat([torch.zeros(cond_tokens, half, 2, device=cpu), table])


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs of x [R, W, H, D] by rope [R, W, D/2, 2], in fp32 (as LlamaGen does)."""
    pairs = x.float().unflatten(-1, (-1, 2))  # [R, W, H, D/2, 2]
    cos, sin = rope[:, :, None, :, 0], rope[:, :, None, :, 1]
    re, im = pairs[..., 0], pairs[..., 1]
    out = torch.stack([re * cos - im * sin, im * cos + re * sin], dim=-1)
    return out.flatten(-2).type_as(x)
