"""LlamaGen (FoundationVision/LlamaGen) as an `ImageTokenModel`, and `load()` for a LlamaGen model folder.

Model folder (a local path, or an s3:// prefix fetched first), described by `sjd_batch.json`:

    t2i:  {"family": "llamagen", "kind": "t2i", "gpt": "t2i_XL_stage2_512.pt", "gpt_model": "GPT-XL",
           "vq": "vq_ds16_t2i.pt", "t5": "flan-t5-xl", "image_size": 512}
    c2i:  {"family": "llamagen", "kind": "c2i", "gpt": "c2i_B_256.pt", "gpt_model": "GPT-B",
           "vq": "vq_ds16_c2i.pt", "image_size": 256}

`gpt`, `vq` are the official checkpoint files; `t5` is a transformers T5 folder (config, weights and
tokenizer, e.g. a copy of google/flan-t5-xl). Paths are relative to the folder. Optional keys:
`vq_model` ("VQ-16" | "VQ-8" | a dict of `VQConfig` fields), `gpt_model` may also be a dict of
`GPTConfig` size fields, `cls_token_num` (default 120 for t2i, 1 for c2i), `num_classes` (1000),
`codebook_size` (16384), `codebook_embed_dim` (8), `t5_max_length` (120), `t5_dtype`, `name`,
`sampling` (overrides of the defaults below), `trust_checkpoint` (allow full unpickling).

Decoding geometry: the prefix is the condition, exactly `cls_token_num` slots (class id for c2i;
T5 ids left-padded to 120 for t2i, see `text.py`); the layout is the H x W code grid in raster
order with no forced tokens, the vocabulary is the codebook. CFG (raw logits, batched) uses the
null class (c2i) or the learned null caption over the same span as the prompt (t2i), as LlamaGen's
`generate` does. Defaults: t2i cfg 7.5, top-k 1000; c2i cfg 4.0, top-k 2000; top-p 1, T 1.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

import torch

from sjd_batch.decoding.protocol import Layout, Prefix, Window
from sjd_batch.decoding.sampling import SamplingConfig
from sjd_batch.models.blocks.hf_causal import SlotCache
from sjd_batch.models.llamagen.checkpoint import GPT_CONTAINERS, VQ_CONTAINERS, load_exact, read_state_dict
from sjd_batch.models.llamagen.gpt import GPTConfig, LlamaGenGPT
from sjd_batch.models.llamagen.spec import DEFAULT_SAMPLING, T5_DTYPES, LlamaGenSpec
from sjd_batch.models.llamagen.text import NULL_CAPTION, PAD, CaptionEncoder
from sjd_batch.models.llamagen.vq import VQModel, to_uint8

MANIFEST = "sjd_batch.json"
_CAPTIONS = (
    "a red vintage car parked in front of a brick wall",
    "a bowl of ramen with an egg on a wooden table",
    "a lighthouse on a cliff at sunset",
    "an astronaut riding a horse in a forest",
    "a cat sleeping on a stack of books",
    "a watercolor painting of a mountain lake",
    "a robot playing the violin on a stage",
    "a snowy village street at night with warm lights",
)


class LlamaGenModel:
    """`ImageTokenModel` over LlamaGen's GPT, VQ decoder and (t2i) T5 caption encoder."""

    def __init__(
        self,
        name: str,
        gpt: LlamaGenGPT,
        vq: VQModel,
        text: CaptionEncoder | None,
        default_sampling: SamplingConfig,
    ) -> None:
        config = gpt.config
        self.name = name
        self.gpt, self.vq, self.text = gpt.eval(), vq.eval(), text
        self.kind = config.model_type
        self.vocab_size = config.vocab_size
        grid = config.grid
        self.layout = Layout(grid, grid, (-1,) * (grid * grid), 0, config.vocab_size, row_stride=grid)
        self.image_size = grid * vq.config.downsample
        self.default_sampling = default_sampling
        self.has_uncond = True
        param = gpt.tok_embeddings.weight
        self.device, self.dtype = param.device, param.dtype

    @property
    def max_prompt_length(self) -> int:
        """The condition takes exactly `cls_token_num` slots, 0 .. cls_token_num-1 (its RoPE reads slots)."""
        return self.gpt.config.cls_token_num

    # -- conditioning ----------------------------------------------------------------------------

    def encode(
        self, prompts: Sequence[str], negative_prompts: Sequence[str | None] | None, with_uncond: bool
    ) -> Prefix:
        """c2i: class ids [R, 1]; t2i: T5 ids left-padded to 120 [R, 120]. Uncond rows use the null."""
        for i, negative in enumerate(negative_prompts or []):
            if negative:
                raise ValueError(
                    f"negative prompt {i} ({negative!r}): LlamaGen's unconditional context is its learned "
                    "null embedding; negative prompts are not supported"
                )
        rows = (
            self._class_rows(prompts, with_uncond)
            if self.kind == "c2i"
            else self._caption_rows(prompts, with_uncond)
        )
        start = (rows == PAD).sum(1)
        return Prefix(ids=rows.to(self.device), start=start.to(self.device))

    def _class_rows(self, prompts: Sequence[str], with_uncond: bool) -> torch.Tensor:
        labels = [self.class_index(p, i) for i, p in enumerate(prompts)]
        if with_uncond:
            labels += [self.gpt.config.num_classes] * len(prompts)  # the null class
        return torch.tensor(labels, dtype=torch.long)[:, None]

    def class_index(self, prompt: str, index: int = 0) -> int:
        """A c2i prompt is a class index written as an integer ("207")."""
        classes = self.gpt.config.num_classes
        text = prompt.strip()
        if not (text.isdigit() and int(text) < classes):
            raise ValueError(
                f"prompt {index} ({prompt!r}): model {self.name} is class-conditional; a prompt must be "
                f"a class index, an integer in [0, {classes})"
            )
        return int(text)

    def _caption_rows(self, prompts: Sequence[str], with_uncond: bool) -> torch.Tensor:
        assert self.text is not None
        rows = self.text.left_padded_rows(prompts)
        if with_uncond:  # the null caption over the same span, so both halves see the same keys
            rows = torch.cat([rows, self.text.left_padded_rows(prompts, null=True)])
        return rows

    def _condition(self, ids: torch.Tensor) -> torch.Tensor:
        """Prefix ids [R, P] -> condition embeddings [R, P, dim] (the prefill's input)."""
        if self.kind == "c2i":
            return self.gpt.embed_condition(ids)
        assert self.text is not None
        null = ids[:, -1] == NULL_CAPTION  # [R]: unconditional rows
        states = self.gpt.cls_embedding.uncond_embedding.expand(ids.shape[0], -1, -1).clone()
        if (~null).any():
            cond = self.text.states(ids[~null])
            states[~null] = cond.to(states.dtype)
        return self.gpt.embed_condition(states)

    # -- the decoding protocol ---------------------------------------------------------------------

    def new_cache(self, rows: int, slots: int) -> SlotCache:
        return self.gpt.new_cache(rows, slots)

    @torch.no_grad()  # not inference_mode: see hf_causal.forward_window
    def forward(self, cache: SlotCache, ids: torch.Tensor, window: Window) -> torch.Tensor:
        """ids [R, W] at `window` -> logits [R, W, V]; a prefill (the condition) returns [R, 1, V]."""
        if window.generated:
            return self.gpt(cache, self.gpt.tok_embeddings(ids), window)
        if ids.shape[1] != self.gpt.config.cls_token_num:
            raise ValueError(
                f"prefix has {ids.shape[1]} slots; LlamaGen {self.name} expects "
                f"{self.gpt.config.cls_token_num}"
            )
        return self.gpt(cache, self._condition(ids), window, last_only=True)

    @torch.inference_mode()
    def decode_pixels(self, tokens: torch.Tensor) -> torch.Tensor:
        """Codes [B, T] -> uint8 [B, image_size, image_size, 3] through the VQ decoder (fp32)."""
        grid = self.layout.height
        codes = tokens.to(self.vq.post_quant_conv.weight.device).view(-1, grid, grid)
        return to_uint8(self.vq.decode_codes(codes.clamp(0, self.vocab_size - 1)))

    def example_prompts(self, count: int, seed: int = 0) -> list[str]:
        """Benchmark prompts: captions (t2i) or class indices (c2i); deterministic in `seed`."""
        if self.kind == "c2i":
            g = torch.Generator().manual_seed(seed)
            labels = torch.randint(0, self.gpt.config.num_classes, (count,), generator=g)
            return [str(c) for c in labels.tolist()]
        return [_CAPTIONS[(seed + i) % len(_CAPTIONS)] for i in range(count)]


def load(
    source: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, **options: Any
):
    """Load a LlamaGen model folder (see the module docstring).

    Args:
        source: the model folder.
        device, dtype: where and in what precision the GPT (and T5) run; the VQ decoder stays fp32.
        **options: `sjd_batch.json` fields; they override the folder's own manifest.

    Raises:
        ValueError: for a bad manifest, a missing file, or a checkpoint whose keys or shapes do not
            match the described architecture (naming the keys).
    """
    folder, device = Path(source), torch.device(device)
    where = str(folder / MANIFEST)
    manifest = json.loads((folder / MANIFEST).read_text()) if (folder / MANIFEST).exists() else {}
    spec = LlamaGenSpec.parse({**manifest, **options}, where)
    vq = _load_vq(folder / spec.vq, spec)
    if spec.image_size % vq.config.downsample:
        raise ValueError(f"{where}: image_size {spec.image_size} is not a multiple of {vq.config.downsample}")
    text = None
    if spec.kind == "t2i":
        t5_dtype = _t5_dtype(spec, dtype)
        text = CaptionEncoder(folder / spec.t5, device, t5_dtype, spec.t5_max_length)
    config = spec.gpt_config(spec.image_size // vq.config.downsample, text.width if text else 2048)
    gpt = _load_gpt(folder / spec.gpt, config, spec.trust_checkpoint).to(device=device, dtype=dtype)
    sampling = dataclasses.replace(DEFAULT_SAMPLING[spec.kind], **spec.sampling)
    name = spec.name or f"llamagen-{spec.kind}-{spec.image_size}"
    return LlamaGenModel(name, gpt, vq.to(device), text, sampling)


def _t5_dtype(spec: LlamaGenSpec, dtype: torch.dtype) -> torch.dtype:
    if spec.t5_dtype:
        if spec.t5_dtype not in T5_DTYPES:
            raise ValueError(f"t5_dtype must be one of {sorted(T5_DTYPES)}, got {spec.t5_dtype!r}")
        return T5_DTYPES[spec.t5_dtype]
    return torch.float32 if dtype == torch.float16 else dtype  # T5 overflows in fp16


def _load_gpt(path: Path, config: GPTConfig, trust: bool) -> LlamaGenGPT:
    with torch.device("meta"):  # no random init of a 775M model only to overwrite it
        gpt = LlamaGenGPT(config)
    state = read_state_dict(path, GPT_CONTAINERS, trust)
    # Old LlamaGen checkpoints saved the RoPE table and, after setup_caches, the KV buffers.
    load_exact(gpt, state, path, f"GPT ({config.model_type})", ignore=_runtime_key)
    return gpt


def _runtime_key(key: str) -> bool:
    return key == "freqs_cis" or key == "causal_mask" or ".kv_cache." in key


def _load_vq(path: Path, spec: LlamaGenSpec) -> VQModel:
    config = spec.vq_config()
    with torch.device("meta"):
        vq = VQModel(config, with_encoder=False)
    state = read_state_dict(path, VQ_CONTAINERS, spec.trust_checkpoint)
    load_exact(vq, state, path, "VQ", ignore=lambda k: k.startswith(("encoder.", "quant_conv.")))
    return vq.float()
