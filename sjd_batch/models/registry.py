"""Model families and registered models: what `load_model(source)` can load, and how.

A *family* is one kind of model (an architecture, its tokenizer, layout and pixel decoder): `shapes`,
`emu3`, ... Each has a lazily imported loader, `load(source, device, dtype, **options)`, where `source` is
a local folder or a hub id. A *registered model* is a short name (`tiny-random`, `shapes-t2i`,
`emu3-gen`) for a factory or for a source of some family.

Each family package declares its `Family` (and the defaults of its registered models) in its
`__init__.py`; this module only collects them into `FAMILIES` and `MODELS`. `loading.load_model` and a
job's `model.name` accept a registered name, `family:source`, a local folder, an `s3://` prefix or a hub
id; `sources` resolves them (folder manifests, the HF cache, offline handling).

Loaders are "module:function" strings, so `import sjd_batch` and `sjd-batch --help` import no model
code. A registry dict of named entries (like LlamaGen's `GPT_models`), never dispatch on substrings.
"""

from __future__ import annotations

import torch

from sjd_batch.models import emu3, janus, llamagen, lumina, shapes
from sjd_batch.models.family import MANIFEST, Defaults, Family, ModelSourceError, RegisteredModel

__all__ = ["DTYPES", "FAMILIES", "MANIFEST", "MODELS", "Defaults", "Family", "ModelSourceError",
           "RegisteredModel"]


DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "float64": torch.float64,
}

FAMILIES: dict[str, Family] = {
    f.name: f for f in (shapes.FAMILY, emu3.FAMILY, janus.FAMILY, llamagen.FAMILY, lumina.FAMILY)
}

MODELS: dict[str, RegisteredModel] = {
    "tiny-random": RegisteredModel(
        name="tiny-random",
        family="shapes",
        summary="random-weight Llama with the shapes layout, for plumbing tests (acceptance meaningless)",
        defaults=shapes.TINY_RANDOM,
        factory="sjd_batch.models.shapes.tiny:build_tiny",
    ),
    "shapes-t2i": RegisteredModel(
        name="shapes-t2i",
        family="shapes",
        summary="the trained model shipped in sjd_batch/assets/shapes-t2i (see its model card)",
        source=f"shapes:{shapes.ASSETS}",
    ),
    "textures-t2i": RegisteredModel(
        name="textures-t2i",
        family="shapes",
        summary="the trained model shipped in sjd_batch/assets/textures-t2i: shapes-t2i's captions over "
        "textures, decoding statistics like real models' (see its model card)",
        defaults=shapes.folder_defaults(shapes.ASSETS_TEXTURES),
        source=f"shapes:{shapes.ASSETS_TEXTURES}",
    ),
    "emu3-gen": RegisteredModel(
        name="emu3-gen",
        family="emu3",
        summary="BAAI/Emu3-Gen-hf from the Hugging Face hub (or its local cache)",
        source="emu3:BAAI/Emu3-Gen-hf",
    ),
}
