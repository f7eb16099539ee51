"""The training sequences of `shapes-t2i` and the losses over them (shared by its trainer, its model
card and textures-t2i's trainer).

Sequence per image: `[BOS] caption tokens [BOI]`, then the image tokens in the decoder's layout (rows
of codes, each followed by its end-of-line marker, then EOI), right-padded. Labels cover the image
tokens only; caption and padding labels are `IGNORE`.
"""

from __future__ import annotations

import torch
from transformers import LlamaForCausalLM

from sjd_batch.models.blocks.llama_t2i import (
    BOI,
    BOS,
    EOI,
    PAD,
    GridPositions,
    Vocabulary,
    image_offsets,
    input_embeds,
)
from sjd_batch.training.shapes.data import JITTER, SIZES, Sample, cell_center

IGNORE = -100  # the label HF's causal-LM loss skips


def image_tokens(codes: torch.Tensor, vocab: Vocabulary) -> torch.Tensor:
    """codes [B, H, W] -> the generated layout [B, H*(W+1)+1]: rows + their end-of-line id, then EOI."""
    b, h, _ = codes.shape
    eol = torch.tensor([vocab.eol(r) for r in range(h)], dtype=torch.long).view(1, h, 1).expand(b, h, 1)
    rows = torch.cat([codes + vocab.code_start, eol], dim=2).reshape(b, -1)
    return torch.cat([rows, torch.full((b, 1), EOI, dtype=torch.long)], dim=1)


def sequences(
    captions: list[str], codes: torch.Tensor, vocab: Vocabulary, drop: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and labels [B, S]; rows with drop[i] get the empty caption."""
    image = image_tokens(codes, vocab)
    pairs = zip(captions, drop.tolist(), strict=True)
    prefixes = [[BOS, BOI] if d else [BOS, *vocab.word_ids(c), BOI] for c, d in pairs]
    length = max(len(p) for p in prefixes) + image.shape[1]
    ids = torch.full((len(captions), length), PAD, dtype=torch.long)
    labels = torch.full_like(ids, IGNORE)
    for i, p in enumerate(prefixes):
        n = len(p)
        ids[i, :n] = torch.tensor(p)
        ids[i, n : n + image.shape[1]] = image[i]
        labels[i, n : n + image.shape[1]] = image[i]
    return ids, labels


def next_logits(lm: LlamaForCausalLM, grid: GridPositions | None, ids: torch.Tensor) -> torch.Tensor:
    """Float logits [B, S-1, V] of the next token at every position but the last."""
    if grid is None:
        return lm(input_ids=ids).logits[:, :-1].float()
    return lm(inputs_embeds=input_embeds(lm, ids, grid, image_offsets(ids))).logits[:, :-1].float()


@torch.no_grad()
def code_nll(
    lm: LlamaForCausalLM,
    grid: GridPositions | None,
    ids: torch.Tensor,
    labels: torch.Tensor,
    vocab: Vocabulary,
) -> float:
    """Mean NLL (nats) over image-code targets only (EOL/EOI are forced at sampling time)."""
    logits = next_logits(lm, grid, ids)
    target = labels[:, 1:]
    is_code = (target >= vocab.code_start) & (target < vocab.code_end)
    nll = torch.nn.functional.cross_entropy(logits[is_code], target[is_code])
    return float(nll)


def object_weights(samples: list[Sample], drop: torch.Tensor, labels: torch.Tensor, weight: float,
                   grid: int, patch: int) -> torch.Tensor:
    """Per-label loss weights [B, S]: `weight` on the code slots of each named object's box, else 1.

    Most of the loss is uncaptioned background texture, so the few codes that carry the caption
    get little gradient and conditioning is learnt slowly. Up-weighting them speeds it up without
    biasing the model: the box comes from the caption alone (the named cell and size, padded by
    the jitter), never from the target pixels, so the weight is a function of the context and each
    context's cross-entropy minimiser is still the true conditional law. Rows whose caption was
    dropped keep weight 1 (their context does not name the objects).
    """
    weights = (labels != IGNORE).float()
    if weight == 1.0:
        return weights
    for i, sample in enumerate(samples):
        if drop[i]:
            continue
        first = int((labels[i] != IGNORE).nonzero()[0])  # label index of image code (0, 0)
        for obj in sample.objects:
            cx, cy = cell_center(obj.cell)
            extent = SIZES[obj.size] + JITTER[obj.size] + 2
            cols = range(max(int((cx - extent) // patch), 0), min(int((cx + extent) // patch) + 1, grid))
            for r in range(max(int((cy - extent) // patch), 0), min(int((cy + extent) // patch) + 1, grid)):
                weights[i, [first + r * (grid + 1) + c for c in cols]] = weight
    return weights


def weighted_loss(
    lm: LlamaForCausalLM, grid: GridPositions | None, ids: torch.Tensor, labels: torch.Tensor,
    weights: torch.Tensor,
):
    """Next-token cross-entropy, averaged with per-label weights."""
    logits = next_logits(lm, grid, ids)
    target, w = labels[:, 1:], weights[:, 1:]
    ce = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), target, ignore_index=IGNORE, reduction="none"
    )
    return (ce * w).sum() / w.sum()
