"""`shapes-t2i`: a small text-to-image model that sjd-batch trains itself on procedural captioned shapes.

Modules: `captions` (the caption language, and the generator's caption stream that bench and eval
prompts come from), `tokenizer` (k-means patch codebook), `model` (loads the shipped assets as a
`LlamaT2IModel`) and `tiny` (`tiny-random`, a random-weight model with the same layout). The
captioned-image generator, the checker, the trainer and the model card are training code, in
`sjd_batch.training.shapes`.

`FAMILY` and `TINY_RANDOM` are the family's one declaration of its defaults. A trained model's sampling
defaults are measured after training and stored in its folder (`vocabulary.json`); the registry reads
the shipped folder's, and `model.load_shapes` the loaded folder's, so they are written once, there.
Importing this package reads that small file and imports nothing heavy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sjd_batch.models.family import Defaults, Family

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "shapes-t2i"
ASSETS_TEXTURES = ASSETS.parent / "textures-t2i"  # textures-t2i: same format and loader


def folder_defaults(folder: Path) -> Defaults:
    """The defaults a shapes model folder states: its layout (rows of codes + end-of-line, then
    end-of-image) and the sampling measured for it."""
    meta = json.loads((folder / "vocabulary.json").read_text())
    h, w, patch = meta["height"], meta["width"], meta["patch"]
    layout = f"{h}·{w + 1} + 1 = {h * (w + 1) + 1}"
    return Defaults(tokens_per_image=layout, resolution=f"{w * patch}x{h * patch}", top_k=meta["top_k"],
                    top_p=meta.get("top_p", 1.0), cfg_scale=meta["cfg_scale"])


def load_folder(source: str, device: Any, dtype: Any) -> Any:
    """The `shapes` family loader: a folder like sjd_batch/assets/shapes-t2i."""
    from sjd_batch.models.shapes.model import load_shapes

    return load_shapes(device=device, dtype=dtype, assets=Path(source))


FAMILY = Family(
    name="shapes",
    loader="sjd_batch.models.shapes:load_folder",
    summary="sjd-batch's own text-to-image Llama with k-means patch codes (shapes-t2i, textures-t2i)",
    loads_from="local folder: config.json + model.safetensors + codebook + vocabulary.json",
    defaults=folder_defaults(ASSETS),
)
TINY_RANDOM = Defaults(tokens_per_image="8·9 + 1 = 73", resolution="32x32", top_k=0, cfg_scale=3.0)
