"""transformers' own `generate()` under an image layout: the baseline `bench --methods hf-generate` times.

Set up as a transformers user would for a decoder-only text-to-image LM (the HF Emu3 docs' recipe):
- the layout's grammar as `prefix_allowed_tokens_fn`: the forced id at an offset, else any image id;
- classifier-free guidance by HF's unbatched guidance (`negative_prompt_ids` + `guidance_scale`): a
  second forward on the uncond rows per token and a log-softmax mix, which gives the same law as our raw
  mix (they differ by a per-row constant, docs/design.md section 4);
- every sampling field set: an unset one would come from the checkpoint's generation_config.json, then
  from HF's defaults (top_k None means 50).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from sjd_batch.decoding.protocol import Layout, Prefix
from sjd_batch.decoding.sampling import SamplingConfig


def attention_mask(prefix: Prefix) -> torch.Tensor:
    """HF attention mask of a left-padded prefix: 1 on real tokens."""
    slots = torch.arange(prefix.length, device=prefix.ids.device)
    return (slots[None, :] >= prefix.start[:, None]).long()


def layout_allowed(layout: Layout, image_ids: range, prompt_length: int,
                   pad: int) -> Callable[[int, torch.Tensor], list[int]]:
    """HF's per-step grammar: the forced id at this offset, else every image id (pad past the end)."""
    free = list(image_ids)
    forced = layout.forced

    def allowed(batch_id: int, input_ids: torch.Tensor) -> list[int]:
        offset = input_ids.shape[-1] - prompt_length
        if offset >= len(forced):
            return [pad]
        return [forced[offset]] if forced[offset] >= 0 else free

    return allowed


def generate_layout(lm: Any, rows: Prefix, layout: Layout, image_ids: range, pad: int, eos: int | None,
                    seed: int, sampling: SamplingConfig) -> torch.Tensor:
    """Tokens [B, T] of `lm.generate()`. `rows`: the model's CFG prefix, B cond rows then B uncond rows
    (`encode(..., with_uncond=True)`); the uncond half becomes HF's negative prompt."""
    from transformers import GenerationConfig

    count = rows.ids.shape[0] // 2
    cond, uncond = (Prefix(ids=rows.ids[half], start=rows.start[half])
                    for half in (slice(0, count), slice(count, None)))
    fields = {} if sampling.greedy else {"top_k": sampling.top_k, "top_p": sampling.top_p,
                                         "temperature": sampling.temperature}
    config = GenerationConfig(max_new_tokens=layout.length, do_sample=not sampling.greedy, pad_token_id=pad,
                              eos_token_id=eos, **fields)
    extra: dict[str, Any] = {}
    if sampling.uses_cfg:
        config.guidance_scale = sampling.cfg_scale
        extra = {"negative_prompt_ids": uncond.ids, "negative_prompt_attention_mask": attention_mask(uncond)}
    allowed = layout_allowed(layout, image_ids, cond.length, pad)
    devices = [cond.ids.device] if cond.ids.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # the caller's random state is left as it was
        torch.manual_seed(seed)
        out = lm.generate(input_ids=cond.ids, attention_mask=attention_mask(cond), generation_config=config,
                          prefix_allowed_tokens_fn=allowed, **extra)
    return out[:, cond.length :]
