"""Janus / Janus-Pro text-to-image through transformers' `JanusForConditionalGeneration`.

Janus does not generate images with its text head. A separate `generation_head` scores the VQ codes
(16,384 for the released checkpoints), and a sampled code re-enters the language model as a
*generation embedding* (`generation_embeddings` + `generation_aligner`), never as a text id
(docs/model-families.md). So for this family the decoding core's token ids are plain code indices: the
layout is H x W free slots over the id range [0, codes), with no forced tokens and no end-of-line
column. `forward` embeds a prefill through the text table and every generated window through the
generation embeddings, then runs the Llama backbone on a `SlotCache`.

Prompts use the checkpoint's own processor: its chat template, then `<begin_of_image>` (the
processor's image generation mode). CFG follows the authors: the unconditional context is the same
prompt with every token but BOS and `<begin_of_image>` replaced by pad, and those pads are attended
(the deepseek-ai/Janus `generation_inference.py` idea, also what HF `generate` does).

`sjd_batch.models.janus.tiny` writes a random Janus folder for the CPU tests; `hf_generate` runs transformers'
own `generate(generation_mode="image")`, the baseline the bench puts next to our `ar`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from sjd_batch.decoding.protocol import Layout, Prefix, Window
from sjd_batch.decoding.sampling import SamplingConfig
from sjd_batch.models.blocks.hf_causal import SlotCache, backbone_hidden, new_slot_cache
from sjd_batch.models.blocks.llama_t2i import left_pad
from sjd_batch.models.janus import FAMILY  # the authors' sampling and the loader options, declared once

_EXAMPLE_PROMPTS = (
    "a red apple on a wooden table",
    "a lighthouse on a cliff at sunset",
    "a small blue bird on a branch",
    "a bowl of ramen, studio photo",
    "a snowy mountain village at night",
    "a cat wearing a tiny hat",
    "an astronaut riding a horse on the moon",
    "a watercolor painting of a fox in a forest",
)


class JanusT2I:
    """`ImageTokenModel` over a transformers `JanusForConditionalGeneration` and its `JanusProcessor`."""

    def __init__(
        self,
        name: str,
        hf: torch.nn.Module,
        processor: Any,
        default_sampling: SamplingConfig | None = None,
    ) -> None:
        self.name = name
        self.hf = hf.eval()
        self.processor = processor
        self.lm = hf.model.language_model  # the Llama backbone, without the text head
        self.default_sampling = default_sampling or FAMILY.defaults.sampling()
        self.has_uncond = True
        vq = hf.config.vq_config
        side = vq.num_patches  # JanusConfig sets it to vision image_size // patch_size
        tokens = hf.config.vision_config.num_image_tokens
        if tokens != side * side:
            raise ValueError(
                f"{name}: vision_config.num_image_tokens={tokens} but the VQ grid is {side}x{side}; "
                "HF generate and our layout would disagree"
            )
        self.vocab_size = vq.num_embeddings
        self.layout = Layout(side, side, (-1,) * tokens, 0, vq.num_embeddings, row_stride=side)
        # Each up block but the last doubles the VQ decoder's resolution.
        self.image_size = side * 2 ** (len(vq.channel_multiplier) - 1)
        tok = processor.tokenizer
        self.bos_id = _token_id(tok, tok.bos_token, "bos_token")
        self.pad_id = _token_id(tok, tok.pad_token, "pad_token")
        self.boi_id = _token_id(tok, processor.image_start_token, "boi_token (<begin_of_image>)")
        param = next(hf.parameters())
        self.device, self.dtype = param.device, param.dtype

    def example_prompts(self, count: int, seed: int = 0) -> list[str]:
        """`count` captions for benchmarks; deterministic in `seed`."""
        return [_EXAMPLE_PROMPTS[(seed + i) % len(_EXAMPLE_PROMPTS)] for i in range(count)]

    def chat_text(self, prompt: str) -> str:
        """The prompt as one user turn of the checkpoint's chat template, ready for the assistant."""
        messages = [{"role": "user", "content": [{"type": "text", "text": prompt}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True)

    def prompt_ids(self, prompt: str) -> list[int]:
        """BOS, the chat-templated prompt, then `<begin_of_image>`: the processor's image mode."""
        text = self.chat_text(prompt)
        ids = self.processor(text=text, generation_mode="image", return_tensors="pt")["input_ids"][0]
        return ids.tolist()

    def uncond_ids(self, cond: list[int]) -> list[int]:
        """The authors' unconditional context: the same length, every token but BOS and BOI set to pad."""
        return [t if t in (self.bos_id, self.boi_id) else self.pad_id for t in cond]

    def encode(
        self, prompts: Sequence[str], negative_prompts: Sequence[str | None] | None, with_uncond: bool
    ) -> Prefix:
        """B cond rows, then (with CFG) B uncond rows; a given negative prompt replaces the pad-masked row."""
        rows = [self.prompt_ids(p) for p in prompts]
        if with_uncond:
            negatives = negative_prompts or [None] * len(prompts)
            rows += [
                self.prompt_ids(n) if n else self.uncond_ids(c)
                for c, n in zip(rows[: len(prompts)], negatives, strict=True)
            ]
        prefix = left_pad(rows, self.device)
        # left_pad fills with the Llama family's pad 0; give the slots this tokenizer's pad instead.
        # They are never visible, so this only keeps the tensor honest.
        padding = torch.arange(prefix.length, device=self.device) < prefix.start[:, None]
        prefix.ids.masked_fill_(padding, self.pad_id)
        return prefix

    def new_cache(self, rows: int, slots: int) -> SlotCache:
        return new_slot_cache(self.lm, rows, slots)

    @torch.no_grad()  # not inference_mode: see hf_causal.forward_window
    def forward(self, cache: SlotCache, ids: torch.Tensor, window: Window) -> torch.Tensor:
        """Prefill ids are text ids; generated ids are codes and enter as generation embeddings."""
        if window.generated:
            embeds = self.hf.prepare_embeddings_for_image_generation(ids)
        else:
            embeds = self.hf.get_input_embeddings()(ids)
        return self.hf.model.generation_head(backbone_hidden(self.lm, cache, window, inputs_embeds=embeds))

    def decode_pixels(self, tokens: torch.Tensor) -> torch.Tensor:
        """Codes [B, H*W] -> uint8 [B, S, S, 3] through the VQ decoder (channels-last, in [-1, 1])."""
        tokens = tokens.to(self.device)
        if tokens.ndim != 2 or tokens.shape[1] != self.layout.length:
            raise ValueError(
                f"{self.name}: expected codes [B, {self.layout.length}], got {tuple(tokens.shape)}"
            )
        if tokens.min() < 0 or tokens.max() >= self.vocab_size:
            raise ValueError(
                f"{self.name}: codes must lie in [0, {self.vocab_size}), got "
                f"[{int(tokens.min())}, {int(tokens.max())}]"
            )
        with torch.inference_mode():
            x = self.hf.decode_image_tokens(tokens).float()
        # The authors' mapping (truncating cast after clipping), as in deepseek-ai/Janus.
        return ((x + 1) / 2 * 255).clamp(0, 255).to(torch.uint8)

    def hf_generate(self, prompts: Sequence[str], seed: int, sampling: SamplingConfig) -> torch.Tensor:
        """Codes [B, H*W] from transformers' own `generate(generation_mode="image")`, the bench baseline.

        HF batches cond and uncond rows (pad-masked the same way), mixes raw logits, then applies
        temperature, top-k and top-p: the order of `SamplingConfig`, so both sample the same law (with
        different random streams). A log-softmax mix differs from the raw one by a per-row constant
        only (docs/design.md, section 4), so either `cfg_mode` gives this law. Unset fields would come from
        the checkpoint's generation_config.json and then HF's global defaults (top_k None means 50), so every
        SamplingConfig field is set here.
        """
        from transformers import GenerationConfig

        if sampling.cfg_scale <= 1:
            # HF doubles the batch for CFG but only merges the halves when guidance_scale > 1.
            raise ValueError(
                f"hf_generate: transformers' Janus generate needs cfg_scale > 1, got {sampling.cfg_scale}"
            )
        texts = [self.chat_text(p) for p in prompts]
        inputs = self.processor(text=texts, generation_mode="image", return_tensors="pt", padding=True)
        config = GenerationConfig(
            do_sample=not sampling.greedy,
            temperature=sampling.temperature if not sampling.greedy else None,
            top_k=sampling.top_k,  # 0 disables; None would let HF fall back to its default of 50
            top_p=sampling.top_p,
            guidance_scale=sampling.cfg_scale,
            bos_token_id=self.bos_id,
            pad_token_id=self.pad_id,
            generation_kwargs={"boi_token_id": self.boi_id},
        )
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return self.hf.generate(
                inputs["input_ids"].to(self.device),
                attention_mask=inputs["attention_mask"].to(self.device),
                generation_mode="image",
                generation_config=config,
            )


def _token_id(tokenizer: Any, token: str | None, what: str) -> int:
    ids = tokenizer.convert_tokens_to_ids(token) if token is not None else None
    if ids is None or (ids == tokenizer.unk_token_id and token != tokenizer.unk_token):
        raise ValueError(
            f"Janus tokenizer has no {what} (got {token!r}); the checkpoint's processor is incomplete"
        )
    return int(ids)


def load(
    source: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, **options: Any
) -> JanusT2I:
    """Load a Janus checkpoint: a local folder (from `save_pretrained`) or a hub id like
    `deepseek-community/Janus-Pro-7B` (which needs network access or a warm HF cache).

    Options: `attn_implementation` (default "sdpa"; the 4-D boolean window mask needs sdpa or eager).

    Raises:
        ValueError: for an unknown option, a missing folder, a folder without a checkpoint, or a hub
            id that cannot be loaded, naming the source.
    """
    from transformers import AutoProcessor, JanusForConditionalGeneration

    unknown = sorted(set(options) - set(FAMILY.options))
    if unknown:
        raise ValueError(
            f"Janus model {source}: unknown option(s) {unknown}; allowed: {list(FAMILY.options)}"
        )
    where = _checkpoint_location(str(source))
    try:
        processor = AutoProcessor.from_pretrained(where)
        hf = JanusForConditionalGeneration.from_pretrained(
            where, dtype=dtype, attn_implementation=options.get("attn_implementation", "sdpa")
        )
    except (OSError, ValueError) as e:
        raise ValueError(f"Janus model {source}: could not load the checkpoint and processor: {e}") from e
    name = Path(where).name if Path(where).is_dir() else where
    return JanusT2I(name, hf.to(torch.device(device)), processor)


def _checkpoint_location(source: str) -> str:
    """A local folder that holds a checkpoint, or a hub id; anything that looks like a path must exist."""
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ValueError(
                f"Janus model folder {path} has no config.json; expected a save_pretrained checkpoint"
            )
        return str(path)
    looks_like_path = source.startswith(("/", ".", "~")) or source.count("/") != 1 or path.exists()
    if looks_like_path:
        raise ValueError(
            f"Janus model {source}: no such folder; give a local checkpoint folder or a hub id "
            "such as deepseek-community/Janus-Pro-7B"
        )
    return source
