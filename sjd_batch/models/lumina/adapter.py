"""Lumina-mGPT (Alpha-VLLM): text-to-image on the Chameleon backbone, decoded by Meta's VQGAN.

transformers' `ChameleonForConditionalGeneration` loads the checkpoint, but its head sets every
image-token logit to the dtype minimum and it has no VQ decoder (docs/model-families.md). So this adapter
runs the backbone (`hf.model`) on a `SlotCache`, applies `lm_head` to the final hidden states itself
(image logits unmasked, as Lumina's own Chameleon copy with `mask_image_logits=False` does), and
decodes with `sjd_batch.models.blocks.vqgan`, loaded from Meta's `vqgan.ckpt` + `vqgan.yaml`.

CFG follows `LLMImageStartTriggeredUnbatchedClassifierFreeGuidanceLogitsProcessor`: the
unconditional context is the generated tokens from `<racm3:break>` on, with no text, at positions
from 0; logits mix raw. Here an uncond row is an empty prompt (all padding), so the engine's shared
generated tokens are its whole context. Lumina then masks to the image ids and takes image top-k
2000; the engine's order (CFG, grammar mask, temperature, top-k) gives the same law.

A model folder holds the HF checkpoint (`config.json` with `vocabulary_map`, weights, tokenizer
files), Meta's `vqgan.ckpt` and `vqgan.yaml`, and `sjd_batch.json`:
`{"family": "lumina-mgpt", "resolution": 768}`. `sjd_batch.models.lumina.tiny` writes a random one
for tests.

The prompt and generated token sequence, the image-token names and `ChameleonTokens` live in
`tokens.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from sjd_batch.decoding.protocol import Prefix, PromptRejected, Window
from sjd_batch.decoding.sampling import SamplingConfig
from sjd_batch.models.blocks.hf_causal import SlotCache, backbone_hidden, new_slot_cache
from sjd_batch.models.blocks.llama_t2i import left_pad
from sjd_batch.models.blocks.vqgan import VQGAN, load_vqgan, to_uint8
from sjd_batch.models.lumina import FAMILY
from sjd_batch.models.lumina.tokens import ChameleonTokens, lumina_layout

NAME = "lumina-mgpt"
LOAD_OPTIONS = ("resolution", "vqgan")
DEFAULT_RESOLUTION = 768
DECODE_CHUNK = 4  # images per VQGAN decoder call
PROMPT = "Generate an image of {width}x{height} according to the following prompt:\n{caption}"
LUMINA_SAMPLING = FAMILY.defaults.sampling()  # declared once, in the package's FAMILY

_EXAMPLE_PROMPTS = (
    "a red apple on a wooden table",
    "a lighthouse on a cliff at sunset",
    "a small blue bird on a branch",
    "an old stone bridge over a river in autumn",
    "a cat sleeping on a windowsill",
    "a bowl of ramen, studio photo",
)


class LuminaMGPT:
    """`ImageTokenModel` over a transformers Chameleon checkpoint and Meta's VQGAN decoder."""

    def __init__(
        self,
        name: str,
        hf: torch.nn.Module,
        tokenizer: Any,
        vqgan: VQGAN,
        height: int,
        width: int,
        default_sampling: SamplingConfig = LUMINA_SAMPLING,
    ) -> None:
        where = f"model {name}"
        self.name = name
        self.hf = hf.eval()
        self.tokenizer = tokenizer
        self.vqgan = vqgan.eval()
        self.height, self.width = height, width
        self.tokens = ChameleonTokens.from_vocabulary_map(
            hf.config.vocabulary_map, vqgan.config.n_embed, where
        )
        rows, cols = _latent_grid(height, width, vqgan.config.downsample, where)
        self.layout = lumina_layout(self.tokens, rows, cols, where)
        self.vocab_size = hf.config.vocab_size
        self.default_sampling = default_sampling
        self.has_uncond = True
        self.bos_id = _special_id(tokenizer, "bos_token", where)
        param = next(hf.parameters())
        self.device, self.dtype = param.device, param.dtype
        self._code_of_id = self.tokens.code_of_id.to(self.device)

    def example_prompts(self, count: int, seed: int = 0) -> list[str]:
        """`count` captions for benchmarks; deterministic in `seed`."""
        return [_EXAMPLE_PROMPTS[(seed + i) % len(_EXAMPLE_PROMPTS)] for i in range(count)]

    def prompt_ids(self, caption: str) -> list[int]:
        """BOS, the templated human turn, then the end-of-turn token (the assistant answers next)."""
        text = PROMPT.format(width=self.width, height=self.height, caption=caption)
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return [self.bos_id, *ids, self.tokens.turn_end]

    def encode(
        self, prompts: Sequence[str], negative_prompts: Sequence[str | None] | None, with_uncond: bool
    ) -> Prefix:
        """B templated prompts; with CFG, B empty uncond rows (the image tokens are their only context)."""
        if negative_prompts is not None and any(negative_prompts):
            raise PromptRejected(
                f"{self.name}: negative prompts are not supported; Lumina-mGPT's unconditional context is "
                "the image tokens alone (no text). Drop the negative_prompt column or use cfg_scale=1"
            )
        rows = [self.prompt_ids(p) for p in prompts]
        if with_uncond:
            rows += [[] for _ in prompts]
        return left_pad(rows, self.device)  # pad id 0; padded slots are never visible

    def new_cache(self, rows: int, slots: int) -> SlotCache:
        return new_slot_cache(self.hf, rows, slots)

    @torch.no_grad()  # not inference_mode: see hf_causal.forward_window
    def forward(self, cache: SlotCache, ids: torch.Tensor, window: Window) -> torch.Tensor:
        """Backbone on the slot cache, then `lm_head` on the hidden states: no image-logit mask."""
        return self.hf.lm_head(backbone_hidden(self.hf.model, cache, window, input_ids=ids))

    def codes(self, tokens: torch.Tensor) -> torch.Tensor:
        """Generated tokens [B, T] -> VQ codes [B, h, w]: drop the header and EOL column, apply bpe2img."""
        if tokens.ndim != 2 or tokens.shape[1] != self.layout.length:
            raise ValueError(
                f"{self.name}: expected tokens [B, {self.layout.length}], got {tuple(tokens.shape)}"
            )
        offsets = torch.tensor(self.layout.code_offsets(), device=tokens.device)
        ids = tokens.index_select(1, offsets)
        inside = (ids >= self.tokens.code_start) & (ids < self.tokens.code_end)
        if not bool(inside.all()):
            raise ValueError(
                f"{self.name}: a code slot holds a non-image id; tokens do not follow the layout"
            )
        codes = self._code_of_id.to(tokens.device)[ids - self.tokens.code_start]
        return codes.view(-1, self.layout.height, self.layout.width)

    def decode_pixels(self, tokens: torch.Tensor) -> torch.Tensor:
        """Generated tokens [B, T] -> uint8 [B, height, width, 3] through the VQGAN decoder.

        Decodes DECODE_CHUNK images at a time: at 768 px the fp32 decoder's activations take about a
        gigabyte per image, so a whole batch at once could exceed what the freed KV cache left.
        """
        codes = self.codes(tokens.to(self.vqgan.post_quant_conv.weight.device))
        return torch.cat([to_uint8(self.vqgan.decode_codes(c)) for c in codes.split(DECODE_CHUNK)])


def _latent_grid(height: int, width: int, downsample: int, where: str) -> tuple[int, int]:
    """Latent rows and columns; each must be even, since the size tokens count 2-cell patches."""
    step = 2 * downsample
    if height < step or width < step or height % step or width % step:
        raise ValueError(
            f"{where}: resolution {width}x{height} must be a positive multiple of {step} px on each side "
            f"(the VQGAN downsamples by {downsample} and the size tokens count patches of 2 latent cells)"
        )
    return height // downsample, width // downsample


def _special_id(tokenizer: Any, attr: str, where: str) -> int:
    token_id = getattr(tokenizer, f"{attr}_id", None)
    if token_id is None:
        raise ValueError(
            f"{where}: the tokenizer has no {attr}; the checkpoint's tokenizer files are incomplete"
        )
    return int(token_id)


def parse_resolution(value: Any) -> tuple[int, int]:
    """`768` -> (768, 768); `"1024x512"` (width x height) -> (512, 1024) as (height, width)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, str) and "x" in value:
        w, _, h = value.partition("x")
        if w.strip().isdigit() and h.strip().isdigit():
            return int(h), int(w)
    raise ValueError(
        f"option resolution: expected pixels (768) or 'WIDTHxHEIGHT' ('1024x512'), got {value!r}"
    )


def load(
    source: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, **options: Any
) -> LuminaMGPT:
    """Load a Lumina-mGPT checkpoint folder (or hub id) with Meta's VQGAN.

    Options (from the folder's `sjd_batch.json` or a job's `model.options`):
        resolution: pixels of a square image (768 by default; 512 and 1024 for those checkpoints), or
            "WIDTHxHEIGHT".
        vqgan: a folder holding `vqgan.ckpt` and `vqgan.yaml` (default: the model folder itself; required
            for a hub id, since the Lumina-mGPT repos do not ship Meta's tokenizer).

    The VQGAN stays in float32 whatever `dtype` the language model uses.

    Raises:
        ValueError: an unknown option, a bad resolution, a missing or incomplete folder, or a checkpoint
            that is not a Chameleon with a `vocabulary_map`, naming the source.
        FileNotFoundError: a missing `vqgan.ckpt` or `vqgan.yaml`.
    """
    from transformers import AutoTokenizer, ChameleonForConditionalGeneration

    unknown = sorted(set(options) - set(LOAD_OPTIONS))
    if unknown:
        raise ValueError(f"{NAME} model {source}: unknown option(s) {unknown}; allowed: {list(LOAD_OPTIONS)}")
    height, width = parse_resolution(options.get("resolution", DEFAULT_RESOLUTION))
    location, folder = _location(str(source))
    vq_folder = Path(options["vqgan"]).expanduser() if options.get("vqgan") else folder
    if vq_folder is None:
        raise ValueError(
            f"{NAME} model {source}: a hub id needs the option vqgan=<folder with Meta's vqgan.ckpt and "
            "vqgan.yaml>; the Lumina-mGPT hub repos do not ship the image tokenizer"
        )
    vqgan = load_vqgan(vq_folder, device=device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        hf = ChameleonForConditionalGeneration.from_pretrained(
            location, dtype=dtype, attn_implementation="sdpa"
        )
    except (OSError, ValueError) as e:
        raise ValueError(
            f"{NAME} model {source}: could not load the Chameleon checkpoint and tokenizer: {e}"
        ) from e
    if not getattr(hf.config, "vocabulary_map", None):
        raise ValueError(
            f"{NAME} model {source}: config.json has no vocabulary_map (a converted Chameleon has one)"
        )
    name = folder.name if folder is not None else location
    return LuminaMGPT(name, hf.to(torch.device(device)), tokenizer, vqgan, height, width)


def _location(source: str) -> tuple[str, Path | None]:
    """(what from_pretrained reads, the local folder or None for a hub id)."""
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(
                f"{NAME} model folder {path} has no config.json; expected an HF Chameleon checkpoint"
            )
        return str(path), path
    owner, sep, repo = source.partition("/")
    if sep and owner and repo and "/" not in repo and not source.startswith((".", "~")):
        return source, None
    raise ValueError(
        f"{NAME} model {source}: no such folder; give a local checkpoint folder or a hub id such as "
        "Alpha-VLLM/Lumina-mGPT-7B-768"
    )
