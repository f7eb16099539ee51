"""The engine's steps under `torch.inference_mode`, the caller's code between them in its own mode.

A decode never needs autograd, and outside inference mode every torch operator still pays for its
bookkeeping (version counters, autograd dispatch). A small model's decode is thousands of small
operators per image, so on the CPU inference mode makes it 10-17% faster (shapes-t2i, batch 1, the
same tokens; `sjd-batch bench-modes`, docs/benchmarks.md); the bookkeeping is a fixed cost per
operator, so at large batches the gain is small. It is off when the model sets `plain_tensors`, as
`model.compile` does: a compiled forward writes the KV cache in place, which needs ordinary tensors.

Only the generator's own steps run in inference mode (the request source too, since the engine pulls
requests inside its steps): the consumer's code between results runs in the caller's mode, and tokens
leave as ordinary tensors (an inference tensor cannot be changed in place outside inference mode).
"""

from __future__ import annotations

import dataclasses
from typing import Generator, Iterator, TypeVar

import torch

T = TypeVar("T")


def needs_plain_tensors(model: object) -> bool:
    """Whether the model asks for the engine outside inference mode (`model.plain_tensors`): set by
    `models.compiled.compile_forward`, and by `sjd-batch bench-modes` to time the engine without it."""
    return bool(getattr(model, "plain_tensors", False))


def inference_steps(steps: Generator[T, None, None], enabled: bool = True) -> Iterator[T]:
    """Yield what `steps` yields, advancing it under `torch.inference_mode(enabled)`; closing this
    closes `steps` at once (as `yield from` would)."""
    try:
        while True:
            with torch.inference_mode(enabled):
                item = next(steps, _DONE)
            if item is _DONE:
                return
            yield _ordinary(item)
    finally:
        steps.close()


_DONE = object()


def _ordinary(item: T) -> T:
    """`item` with its `tokens` (when it has them) as an ordinary tensor."""
    tokens = getattr(item, "tokens", None)
    if isinstance(tokens, torch.Tensor) and tokens.is_inference():
        return dataclasses.replace(item, tokens=tokens.clone())  # type: ignore[type-var]
    return item
