"""LlamaGen (FoundationVision/LlamaGen): GPT, VQ tokenizer, T5 conditioning and the family adapter.

`load(source, device, dtype, **options)` reads a model folder holding the official checkpoints
(see `adapter.py` for the folder layout). Nothing here runs at import time.
"""

from sjd_batch.models.llamagen.adapter import LlamaGenModel, load

__all__ = ["LlamaGenModel", "load"]
