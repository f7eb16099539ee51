"""`torch.compile` for a model's window forward, behind the job key `model.compile` (off by default).

Only `forward` is compiled: it is the one call per decode iteration. The sampling, verification and
drafting around it (about 220 small torch operators per SJD iteration, docs/benchmarks.md) stay
eager: compiling the verification and drafting was measured on the CPU (the same tokens, 5-8% less
wall time at batch 1) and left out, for a compile per engine and exactness to prove against eager on
every change (docs/benchmarks.md, "The engine's overhead against its targets"). Window shapes vary
(the prompt prefill, the window, a shorter last window), so the compiled function is marked dynamic
instead of re-tracing per shape. The win is on GPUs, where a small model's forward is launch-bound; on
CPU compiling costs tens of seconds and buys little, which is why it is opt-in.
"""

from __future__ import annotations

import torch

from sjd_batch.decoding.protocol import ImageTokenModel


def compile_forward(model: ImageTokenModel, mode: str | None = None) -> ImageTokenModel:
    """Replace `model.forward` by a compiled version (same signature and results) and return the model."""
    model.forward = torch.compile(model.forward, dynamic=True, mode=mode)  # type: ignore[method-assign]
    model.plain_tensors = True  # type: ignore[attr-defined]  # the engine then leaves inference mode off
    return model
