"""Emu3-Gen through transformers' `Emu3ForConditionalGeneration` and `Emu3Processor` (docs/model-families.md).

Prompt: `processor(text, return_for_image_generation=True)` gives `[BOS] text <|image start|>{h}*{w}<|image
token|>`; the authors append " masterpiece, film grained, best quality." to every prompt. CFG mixes
log-softmaxed logits (HF's `UnbatchedClassifierFreeGuidanceLogitsProcessor`) against a negative prompt
that gets the same image-start suffix, so this family's default `cfg_mode` is "log-softmax".

Layout (HF's `prefix_allowed_tokens_fn` for Emu3): h rows of (w visual tokens + EOL `<|extra_200|>`), then EOF
`<|extra_201|>`, `<|image end|>` and EOS. Visual tokens are a contiguous id range at the end of the
vocabulary. `decode_image_tokens` takes the whole layout (it drops the 3-token tail and the EOL column).

The text model runs through `hf_causal.forward_window`: Emu3's decoder is Llama-shaped and accepts the
duck-typed `SlotCache`, a 4-D boolean mask and explicit `position_ids` (checked by the contract tests).

`sjd_batch.models.emu3.tiny` writes a random-weight Emu3 folder for the CPU tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from sjd_batch.decoding.protocol import Layout, Prefix, Window
from sjd_batch.decoding.sampling import SamplingConfig
from sjd_batch.models.blocks.hf_causal import SlotCache, forward_window, new_slot_cache
from sjd_batch.models.blocks.hf_generate import generate_layout
from sjd_batch.models.blocks.llama_t2i import left_pad
from sjd_batch.models.emu3 import FAMILY

# The authors' prompt decoration (BAAI/Emu3 image_generation.py)
POSITIVE_SUFFIX = " masterpiece, film grained, best quality."
NEGATIVE_PROMPT = (
    "lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, cropped, "
    "worst quality, low quality, normal quality, jpeg artifacts, signature, watermark, username, blurry."
)
DEFAULT_IMAGE_AREA = 720 * 720  # 90x90 latent codes with the processor's factor 8


@dataclass(frozen=True)
class Emu3Tokens:
    """The special ids the layout and the prompt need, read from the tokenizer."""

    eol: int
    eof: int
    eoi: int
    eos: int
    pad: int
    image_start: int  # first visual token id (inclusive)
    image_end: int  # one past the last

    @staticmethod
    def read(model: Any, tokenizer: Any) -> Emu3Tokens:
        mapping = model.vocabulary_mapping
        visual = mapping.image_tokens  # sorted ids of every `<|visual token NNNNNN|>`
        if not visual or visual[-1] - visual[0] + 1 != len(visual):
            raise ValueError(f"Emu3 visual tokens must form one contiguous id range, got {len(visual)} ids")
        return Emu3Tokens(
            eol=mapping.eol_token_id,
            eof=tokenizer.convert_tokens_to_ids(tokenizer.eof_token),
            eoi=tokenizer.convert_tokens_to_ids(tokenizer.eoi_token),
            eos=tokenizer.eos_token_id,
            pad=tokenizer.pad_token_id,
            image_start=visual[0],
            image_end=visual[-1] + 1,
        )


def emu3_layout(height: int, width: int, ids: Emu3Tokens) -> Layout:
    """h rows of (w codes + EOL), then EOF, EOI, EOS."""
    forced = ([-1] * width + [ids.eol]) * height + [ids.eof, ids.eoi, ids.eos]
    return Layout(height, width, tuple(forced), ids.image_start, ids.image_end, row_stride=width + 1)


class Emu3T2IModel:
    """`ImageTokenModel` over an HF `Emu3ForConditionalGeneration` and its `Emu3Processor`."""

    def __init__(
        self,
        name: str,
        model: torch.nn.Module,
        processor: Any,
        image_area: int = DEFAULT_IMAGE_AREA,
        negative_prompt: str = NEGATIVE_PROMPT,
        positive_suffix: str = POSITIVE_SUFFIX,
    ) -> None:

        self.name = name
        self.model = model.eval()
        self.processor = processor
        self.image_area = image_area
        self.negative_prompt = negative_prompt
        self.positive_suffix = positive_suffix
        self.ids = Emu3Tokens.read(model, processor.tokenizer)
        self.latent = processor.calculate_generate_size("1:1", image_area, processor.downsample_ratio)
        self.layout = emu3_layout(*self.latent, self.ids)
        self.vocab_size = model.config.text_config.vocab_size
        self.default_sampling: SamplingConfig = FAMILY.defaults.sampling()
        self.has_uncond = True
        self.text_model = model.model.text_model  # sizes the KV cache
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype

    def tokenize(self, text: str) -> list[int]:
        """`[BOS] text <|image start|>{h}*{w}<|image token|>`, as the processor builds it."""
        out = self.processor(text=[text], return_for_image_generation=True, image_area=self.image_area)
        return list(out["input_ids"][0])

    def encode(
        self, prompts: Sequence[str], negative_prompts: Sequence[str | None] | None, with_uncond: bool
    ) -> Prefix:
        rows = [self.tokenize(p + self.positive_suffix) for p in prompts]
        if with_uncond:
            negatives = negative_prompts or [None] * len(prompts)
            rows += [self.tokenize(self.negative_prompt if n is None else n) for n in negatives]
        return left_pad(rows, self.device)

    def new_cache(self, rows: int, slots: int) -> SlotCache:
        return new_slot_cache(self.text_model, rows, slots)

    def forward(self, cache: SlotCache, ids: torch.Tensor, window: Window) -> torch.Tensor:
        return forward_window(self.model, cache, ids, window)

    @torch.inference_mode()
    def decode_pixels(self, tokens: torch.Tensor) -> torch.Tensor:
        """The whole layout [B, T] -> uint8 [B, H, W, 3] (Emu3's VQ gives (B, 3, H, W) in [-1, 1])."""
        height, width = self.latent
        tokens = tokens.to(self.device)
        image = self.model.decode_image_tokens(image_tokens=tokens, height=height, width=width)
        pixels = ((image.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return pixels.permute(0, 2, 3, 1)

    @torch.inference_mode()
    def hf_generate(self, prompts: Sequence[str], seed: int, sampling: SamplingConfig) -> torch.Tensor:
        """Tokens [B, T] from transformers' own `generate()` (the bench baseline), set up as the HF Emu3
        docs do: negative-prompt CFG (unbatched, log-softmax), the layout as `prefix_allowed_tokens_fn`."""
        rows = self.encode(prompts, None, with_uncond=True)  # the uncond rows our engine uses too
        return generate_layout(self.model, rows, self.layout, range(self.ids.image_start, self.ids.image_end),
                               self.ids.pad, self.ids.eos, seed, sampling)


def load(
    source: str,
    device: torch.device,
    dtype: torch.dtype,
    image_area: int = DEFAULT_IMAGE_AREA,
    negative_prompt: str = NEGATIVE_PROMPT,
    positive_suffix: str = POSITIVE_SUFFIX,
) -> Emu3T2IModel:
    """The `emu3` family loader: a local folder or hub id holding an Emu3-Gen-hf checkpoint and its processor.

    Raises:
        ValueError: when the folder lacks the processor files, or an option has the wrong type.
    """
    from transformers import Emu3ForConditionalGeneration, Emu3Processor

    from sjd_batch.models.sources import display_name

    if not isinstance(image_area, int) or image_area <= 0:
        raise ValueError(f"emu3 option image_area: expected a positive int (pixels), got {image_area!r}")
    try:
        processor = Emu3Processor.from_pretrained(source)
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(
            f"model {source}: no usable Emu3Processor (tokenizer + image processor files) there: {e}"
        ) from e
    processor.tokenizer.padding_side = "left"
    try:
        model = Emu3ForConditionalGeneration.from_pretrained(source, dtype=dtype, attn_implementation="sdpa")
    except OSError as e:  # no weights, a partial download, ...
        raise ValueError(f"model {source}: cannot load the Emu3 checkpoint: {e}") from e
    model = model.to(device)
    return Emu3T2IModel(display_name(source), model, processor, image_area, negative_prompt, positive_suffix)
