"""The options of a LlamaGen model folder (`sjd_batch.json`), parsed and checked, and the family defaults.

See `adapter.py` for the folder layout. Every field has a default except the four that name the files
and the resolution; unknown keys, a bad kind or a size dict with foreign fields fail naming the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from sjd_batch.models.llamagen import C2I_DEFAULTS, FAMILY
from sjd_batch.models.llamagen.gpt import GPTConfig
from sjd_batch.models.llamagen.vq import VQ_SIZES, VQConfig

# The authors' sampling, declared once in the package's FAMILY (t2i) and C2I_DEFAULTS.
DEFAULT_SAMPLING = {"t2i": FAMILY.defaults.sampling(), "c2i": C2I_DEFAULTS.sampling()}
T5_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class LlamaGenSpec:
    """The fields of a LlamaGen `sjd_batch.json` (see the module docstring)."""

    kind: str
    gpt: str
    vq: str
    image_size: int
    gpt_model: str | dict = "GPT-XL"
    vq_model: str | dict = "VQ-16"
    t5: str | None = None
    cls_token_num: int | None = None
    num_classes: int = 1000
    codebook_size: int = 16384
    codebook_embed_dim: int = 8
    t5_max_length: int = 120
    t5_dtype: str | None = None
    name: str | None = None
    sampling: dict = field(default_factory=dict)
    trust_checkpoint: bool = False

    @classmethod
    def parse(cls, options: dict[str, Any], where: str) -> LlamaGenSpec:
        options = {k: v for k, v in options.items() if k != "family"}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"{where}: unknown LlamaGen option(s) {unknown}; allowed: {sorted(known)}")
        required = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        absent = [k for k in required if k not in options]
        if absent:
            raise ValueError(f"{where}: missing LlamaGen option(s) {absent}")
        spec = cls(**options)
        if spec.kind not in DEFAULT_SAMPLING:
            raise ValueError(f"{where}: kind must be 't2i' or 'c2i', got {spec.kind!r}")
        if spec.kind == "t2i" and not spec.t5:
            raise ValueError(f'{where}: a t2i model needs "t5": the folder of its T5 text encoder')
        if spec.kind == "t2i" and spec.condition_tokens != spec.t5_max_length:
            raise ValueError(
                f"{where}: cls_token_num {spec.condition_tokens} must equal "
                f"t5_max_length {spec.t5_max_length}"
            )
        return spec

    @property
    def condition_tokens(self) -> int:
        return self.cls_token_num or (120 if self.kind == "t2i" else 1)

    def vq_config(self) -> VQConfig:
        codebook = {"codebook_size": self.codebook_size, "codebook_embed_dim": self.codebook_embed_dim}
        if isinstance(self.vq_model, dict):
            fields = dict(self.vq_model)
            if "ch_mult" in fields:
                fields["ch_mult"] = tuple(fields["ch_mult"])
            _check_keys("vq_model", fields, VQConfig, set(codebook))
            return VQConfig(**fields, **codebook)
        if self.vq_model not in VQ_SIZES:
            raise ValueError(f"unknown LlamaGen VQ model {self.vq_model!r}; choose one of {sorted(VQ_SIZES)}")
        return VQConfig(ch_mult=VQ_SIZES[self.vq_model], **codebook)

    def gpt_config(self, grid: int, caption_dim: int) -> GPTConfig:
        fields = dict(
            vocab_size=self.codebook_size,
            block_size=grid * grid,
            cls_token_num=self.condition_tokens,
            model_type=self.kind,
            num_classes=self.num_classes,
            caption_dim=caption_dim,
            caption_tokens=self.t5_max_length,
        )
        if isinstance(self.gpt_model, dict):
            _check_keys("gpt_model", self.gpt_model, GPTConfig, set(fields))
            return GPTConfig(**self.gpt_model, **fields)
        return GPTConfig.named(self.gpt_model, **fields)


def _check_keys(option: str, given: dict, config: type, derived: set[str]) -> None:
    """A size dict may set the architecture fields of `config`, not the ones derived from other options."""
    allowed = {f.name for f in dataclasses.fields(config)} - derived
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ValueError(f"{option}: unknown field(s) {unknown}; allowed: {sorted(allowed)}")
