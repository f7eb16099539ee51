"""Drive a transformers causal LM through the decoding protocol with a position-indexed KV cache.

transformers' own caches share one `cache_position` across the batch, which cannot express rows
that advance at different speeds. `SlotCache` is a static cache indexed by absolute slot, per row
(adapted from the idea of pytorch-labs/gpt-fast `KVCache.update`, here with a per-row scatter):
each forward writes its keys and values at `window.slots` and returns the whole buffer; the
4-D boolean `window.visible` mask hides padding and stale slots. The HF modules (projections,
RoPE, MLPs, norms, head) run unchanged, so real checkpoints load through `from_pretrained`.
"""

from __future__ import annotations

import torch

from sjd_batch.decoding.protocol import Window


class SlotCache:
    """Static KV buffers [R, H_kv, S, D] per layer, written by slot. Duck-types HF's `Cache.update`."""

    def __init__(
        self, layers: int, rows: int, kv_heads: int, slots: int, head_dim: int, dtype, device
    ) -> None:
        shape = (rows, kv_heads, slots, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self._index: torch.Tensor | None = None
        self.prefix_length = 0  # slots of the prompt prefill; models that need layout offsets set it

    def begin(self, slots: torch.Tensor) -> None:
        """Set where the next forward writes: slots [R, W]."""
        _, heads, _, dim = self.keys[0].shape
        self._index = slots[:, None, :, None].expand(-1, heads, -1, dim)

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        assert self._index is not None and key.shape[2] == self._index.shape[2], "call begin() first"
        self.keys[layer_idx].scatter_(2, self._index, key)
        self.values[layer_idx].scatter_(2, self._index, value)
        return self.keys[layer_idx], self.values[layer_idx]

    def copy_slots(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        """Copy every layer's keys and values at slots src [R, C] to slots dst [R, C] (the accepted
        path of a draft tree moves from scratch slots to its canonical ones)."""
        _, heads, _, dim = self.keys[0].shape
        take = src[:, None, :, None].expand(-1, heads, -1, dim)
        put = dst[:, None, :, None].expand(-1, heads, -1, dim)
        for buffers in (self.keys, self.values):
            for b in buffers:
                b.scatter_(2, put, b.gather(2, take))

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.keys[layer_idx].shape[2]

    def load_prefix(self, src: SlotCache, rows: torch.Tensor, slots: int) -> None:
        """Copy slots [0, slots) of every row of `src` into rows `rows` [G] of this cache.

        The engine prefills one sample at a time into a small cache of its own and moves its prompt
        KV into the sample's rows of the decode cache, while the other rows go on decoding.
        """
        for dst, part in zip(self.keys + self.values, src.keys + src.values, strict=True):
            dst[rows, :, :slots] = part[:, :, :slots]


def new_slot_cache(lm: torch.nn.Module, rows: int, slots: int) -> SlotCache:
    """A SlotCache sized for the HF causal LM `lm`."""
    cfg = lm.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    param = next(lm.parameters())
    return SlotCache(cfg.num_hidden_layers, rows, kv_heads, slots, head_dim, param.dtype, param.device)


@torch.no_grad()  # not inference_mode: compiled forwards (model.compile) mutate the KV cache
def forward_window(
    lm: torch.nn.Module,
    cache: SlotCache,
    ids: torch.Tensor,
    window: Window,
    embeds: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits [R, W, V] for ids [R, W] written at `window.slots` (only the last one for a prefill).

    `embeds` [R, W, hidden], when given, replaces the embedding lookup of `ids`.
    """
    cache.begin(window.write_slots)
    inputs = {"input_ids": ids} if embeds is None else {"inputs_embeds": embeds}
    out = lm(
        **inputs,
        position_ids=window.positions,
        attention_mask=window.visible,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=0 if window.generated else 1,
    )
    return out.logits


def backbone_hidden(backbone: torch.nn.Module, cache: SlotCache, window: Window, **inputs) -> torch.Tensor:
    """Final hidden states of an HF decoder `backbone` run on the slot cache at `window`.

    For families whose logits do not come from the HF causal-LM head (Janus' generation head,
    Lumina's unmasked `lm_head`). `inputs` is `input_ids=` or `inputs_embeds=`. After a prefill only
    the last position is returned: it is the only law the engine reads.
    """
    cache.begin(window.write_slots)
    hidden = backbone(
        **inputs,
        position_ids=window.positions,
        attention_mask=window.visible,
        past_key_values=cache,
        use_cache=True,
    ).last_hidden_state
    return hidden if window.generated else hidden[:, -1:]
