"""sjd-batch: batch text-to-image generation with Speculative Jacobi Decoding.

Public names: `load_model`, `generate`, `GenerationResult`. Importing this package loads nothing
heavy; the names resolve on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["GenerationResult", "generate", "load_model"]

if TYPE_CHECKING:
    from sjd_batch.api import GenerationResult, generate
    from sjd_batch.models.loading import load_model


def __getattr__(name: str) -> Any:
    if name in ("generate", "GenerationResult"):
        from sjd_batch import api

        return getattr(api, name)
    if name == "load_model":
        from sjd_batch.models.loading import load_model

        return load_model
    raise AttributeError(f"module 'sjd_batch' has no attribute {name!r}")
