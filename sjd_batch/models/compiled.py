"""`torch.compile` for a model's window forward, behind the job key `model.compile` (off by default).

Only `forward` is compiled: it is the one call per decode iteration, and the sampling around it is
already a handful of fused element-wise kernels. Window shapes vary (the prompt prefill, the
window, a shorter last window), so the compiled function is marked dynamic instead of re-tracing
per shape. The win is on GPUs, where a small model's forward is launch-bound; on CPU compiling costs
tens of seconds and buys little, which is why it is opt-in.
"""

from __future__ import annotations

import torch

from sjd_batch.decoding.protocol import ImageTokenModel


def compile_forward(model: ImageTokenModel, mode: str | None = None) -> ImageTokenModel:
    """Replace `model.forward` by a compiled version (same signature and results) and return the model."""
    model.forward = torch.compile(model.forward, dynamic=True, mode=mode)  # type: ignore[method-assign]
    model.plain_tensors = True  # type: ignore[attr-defined]  # the engine then leaves inference mode off
    return model
