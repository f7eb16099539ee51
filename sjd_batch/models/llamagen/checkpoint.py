"""Read LlamaGen's `.pt` checkpoints and load them key for key, failing loudly on any mismatch.

Containers, as LlamaGen's sampling scripts read them: a GPT checkpoint is `{"model": ...}` (DDP),
`{"module": ...}` (DeepSpeed), `{"state_dict": ...}`, or a bare state dict (FSDP); a VQ checkpoint
is `{"model": ...}` (what `sample_t2i.py` loads), else `{"ema": ...}` or `{"state_dict": ...}`.
Training checkpoints also pickle `argparse.Namespace` args, which the safe loader is allowed to
rebuild; anything else needs `"trust_checkpoint": true` in `sjd_batch.json`.

LlamaGen itself loads GPTs with `strict=False`; we are strict, so a wrong size, kind or layout is
an error naming the keys, instead of a silently half-random model.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

import torch
from torch import nn

GPT_CONTAINERS = ("model", "module", "state_dict")
VQ_CONTAINERS = ("model", "ema", "state_dict")
_SHOWN = 6  # keys listed per kind of mismatch


def read_state_dict(path: Path, containers: tuple[str, ...], trust: bool = False) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint file, from the first container key present."""
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    raw = _torch_load(path, trust)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a dict checkpoint, got {type(raw).__name__}")
    for key in containers:
        if key in raw and isinstance(raw[key], dict):
            return raw[key]
    if raw and all(isinstance(v, torch.Tensor) for v in raw.values()):
        return raw  # a bare state dict
    raise ValueError(
        f"{path}: no state dict under any of {list(containers)} and not a bare state dict "
        f"(top-level keys: {sorted(raw)[:_SHOWN]})"
    )


def _torch_load(path: Path, trust: bool):
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=not trust, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):  # legacy (non-zip) files cannot be memory-mapped
            raise
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=not trust)


def load_exact(
    module: nn.Module,
    state: dict[str, torch.Tensor],
    path: Path,
    what: str,
    ignore: Callable[[str], bool] = lambda key: False,
) -> None:
    """Load `state` into `module` (built on the meta device) by assignment; every key must match.

    Raises:
        ValueError: naming missing keys, unexpected keys and shape mismatches, with the file.
    """
    state = {k: v for k, v in state.items() if not ignore(k)}
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = {
        k: (tuple(state[k].shape), tuple(expected[k].shape))
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    }
    if missing or unexpected or shapes:
        problems = []
        if missing:
            problems.append(f"missing keys {_few(missing)}")
        if unexpected:
            problems.append(f"unexpected keys {_few(unexpected)}")
        if shapes:
            shown = dict(list(shapes.items())[:_SHOWN])
            problems.append(f"shape mismatches (checkpoint vs model) {shown} ({len(shapes)} in all)")
        raise ValueError(
            f"{path}: does not match the LlamaGen {what} described by sjd_batch.json: "
            + "; ".join(problems)
            + ". Check the size name, kind, image_size and codebook settings."
        )
    module.load_state_dict(state, strict=True, assign=True)


def _few(keys: list[str]) -> str:
    more = f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return f"{keys[:_SHOWN]}{more}"
