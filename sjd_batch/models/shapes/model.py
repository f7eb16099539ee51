"""Load the shipped `shapes-t2i` assets as a `LlamaT2IModel`; loading never touches the network.

Assets (in `sjd_batch/assets/shapes-t2i/`): `config.json` + `model.safetensors` (a transformers
`LlamaForCausalLM`, read with `from_pretrained` on a local folder), `codebook.safetensors` (the
k-means patch codebook, which is also the pixel decoder) and `vocabulary.json` (caption words, grid
size and the measured default sampling settings) and `grid_positions.safetensors` (the learned
row/column tables of `GridPositions`; optional, older asset folders have none).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import LlamaForCausalLM

from sjd_batch.decoding.sampling import SamplingConfig
from sjd_batch.models.blocks.llama_t2i import GridPositions, LlamaT2IModel, Vocabulary, row_layout
from sjd_batch.models.shapes.captions import generator_captions
from sjd_batch.models.shapes.tokenizer import PatchTokenizer

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "shapes-t2i"
NAME = "shapes-t2i"
GRID_FILE = "grid_positions.safetensors"


@dataclass(frozen=True)
class ShapesMeta:
    """The contents of `vocabulary.json`."""

    words: tuple[str, ...]
    num_codes: int
    height: int
    width: int
    patch: int
    cfg_scale: float
    top_k: int
    top_p: float = 1.0
    row_markers: int = 0  # see Vocabulary.row_markers
    positions: tuple[str, ...] = ()  # place names of position-bound caption tokens (Vocabulary.positions)
    name: str = NAME  # the model's name (textures-t2i shares this format and loader)

    @classmethod
    def read(cls, path: Path) -> ShapesMeta:
        raw = json.loads(path.read_text())
        return cls(**{**raw, "words": tuple(raw["words"]), "positions": tuple(raw.get("positions", ()))})

    def write(self, path: Path) -> None:
        raw = {**self.__dict__, "words": list(self.words), "positions": list(self.positions)}
        path.write_text(json.dumps(raw, indent=1) + "\n")

    @property
    def vocab(self) -> Vocabulary:
        return Vocabulary(self.words, self.num_codes, row_markers=self.row_markers, positions=self.positions)


def load_tokenizer(assets: Path = ASSETS) -> PatchTokenizer:
    """The patch tokenizer stored with the model."""
    meta = ShapesMeta.read(assets / "vocabulary.json")
    return PatchTokenizer(load_file(str(assets / "codebook.safetensors"))["codebook"], meta.patch)


def load_grid(assets: Path = ASSETS) -> GridPositions | None:
    """The row/column position tables stored with the model, or None for a folder without them."""
    path = assets / GRID_FILE
    return GridPositions.from_state(load_file(str(path))) if path.exists() else None


def load_shapes(
    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, assets: Path = ASSETS
) -> LlamaT2IModel:
    """Build `shapes-t2i` from its asset folder.

    Raises:
        FileNotFoundError: when the weights were never trained into `assets` (run `sjd-batch train-shapes`).
    """
    if not (assets / "model.safetensors").exists():
        raise FileNotFoundError(
            f"{assets}/model.safetensors is missing; train it with `sjd-batch train-shapes`"
        )
    meta = ShapesMeta.read(assets / "vocabulary.json")
    lm = LlamaForCausalLM.from_pretrained(str(assets), local_files_only=True, torch_dtype=dtype)
    lm.config._attn_implementation = "sdpa"
    lm = lm.to(device)
    tokenizer = load_tokenizer(assets)
    codebook = tokenizer.codebook.to(device)
    return LlamaT2IModel(
        name=meta.name,
        lm=lm,
        vocab=meta.vocab,
        layout=row_layout(meta.height, meta.width, meta.vocab),
        pixels=lambda codes: PatchTokenizer(codebook, meta.patch).decode(codes),
        default_sampling=SamplingConfig(top_k=meta.top_k, top_p=meta.top_p, cfg_scale=meta.cfg_scale),
        prompt_sampler=generator_captions,
        grid=load_grid(assets),
    )

