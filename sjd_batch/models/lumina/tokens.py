"""Lumina-mGPT's token vocabulary: Chameleon's image-token names, the special and size tokens, the
`ChameleonTokens` ids read from a checkpoint's `vocabulary_map`, and `lumina_layout` (the forced
sequence the adapter in `adapter.py` generates).

Sequence (Alpha-VLLM/Lumina-mGPT `data/item_processor.py`, `data/convertsation.py`,
`inference_solver.py`; the ids come from the checkpoint's `vocabulary_map`, never hard-coded):

    prompt:    <s> "Generate an image of {W}x{H} according to the following prompt:\\n{caption}"
               <reserved08706>
    generated: <racm3:break> <reserved{8800+h/2}> <reserved{8800+w/2}>      (h, w: latent rows, columns)
               h x (w image codes, <reserved08799>)  <eoss>  <reserved08706>

Every generated token but the codes is forced. The last one, `<reserved08706>` (id 8710), ends the
assistant turn: it is the stop id of `FlexARInferenceSolver.generate`. Image codes are the BPE
tokens named `IMGIMG` + the code's decimal digits spelled A-J + `Z` (code 12 -> `IMGIMGBCZ`); their
ids form one contiguous range, in an order that only the names give (the `bpe2img` map).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

from sjd_batch.decoding.protocol import Layout

IMAGE_START, IMAGE_END = "<racm3:break>", "<eoss>"
NEW_LINE, TURN_END = "<reserved08799>", "<reserved08706>"
IMAGE_PREFIX, IMAGE_SUFFIX = "IMGIMG", "Z"
_DIGIT_LETTERS = "ABCDEFGHIJ"


def grid_token(cells: int) -> str:
    """The size token for `cells` patches of 32 px (two latent cells), e.g. 24 -> `<reserved08824>`."""
    return f"<reserved{8800 + cells:05d}>"


def image_token_name(code: int) -> str:
    """BPE name of VQ code `code` in Chameleon's vocabulary (12 -> `IMGIMGBCZ`)."""
    return IMAGE_PREFIX + "".join(_DIGIT_LETTERS[int(d)] for d in str(code)) + IMAGE_SUFFIX


def _code_of_name(name: str) -> int | None:
    body = name[len(IMAGE_PREFIX) : -len(IMAGE_SUFFIX)]
    if not name.startswith(IMAGE_PREFIX) or not name.endswith(IMAGE_SUFFIX) or not body:
        return None
    if any(c not in _DIGIT_LETTERS for c in body):
        return None
    return int("".join(str(_DIGIT_LETTERS.index(c)) for c in body))


@dataclass(frozen=True)
class ChameleonTokens:
    """The ids this family needs, looked up by name in the checkpoint's `vocabulary_map`.

    Attributes:
        vocab: name -> id, the whole map (size tokens are looked up on demand).
        image_start, image_end, new_line, turn_end: `<racm3:break>`, `<eoss>`, EOL, end of turn.
        code_start, code_end: the image ids form exactly [code_start, code_end).
        code_of_id: [code_end - code_start] long: VQ code of image id `code_start + i` (bpe2img).
    """

    vocab: Mapping[str, int]
    image_start: int
    image_end: int
    new_line: int
    turn_end: int
    code_start: int
    code_end: int
    code_of_id: torch.Tensor

    @classmethod
    def from_vocabulary_map(cls, vocab: Mapping[str, int], num_codes: int, where: str) -> ChameleonTokens:
        """Raises ValueError naming `where` when a name is missing or the image ids are not codes 0..n-1."""
        special = {n: _lookup(vocab, n, where) for n in (IMAGE_START, IMAGE_END, NEW_LINE, TURN_END)}
        images = {i: c for n, i in vocab.items() if (c := _code_of_name(n)) is not None}
        if not images:
            raise ValueError(
                f"{where}: vocabulary_map has no image tokens named {IMAGE_PREFIX}...{IMAGE_SUFFIX}"
            )
        lo, hi = min(images), max(images) + 1
        if hi - lo != len(images) or sorted(images.values()) != list(range(num_codes)):
            raise ValueError(
                f"{where}: the {len(images)} {IMAGE_PREFIX}* tokens must be one contiguous id range holding "
                f"codes 0..{num_codes - 1} of the VQGAN codebook (n_embed={num_codes}); got ids "
                f"[{lo}, {hi}) and codes [{min(images.values())}, {max(images.values())}]"
            )
        code_of_id = torch.tensor([images[i] for i in range(lo, hi)], dtype=torch.long)
        return cls(
            vocab,
            special[IMAGE_START],
            special[IMAGE_END],
            special[NEW_LINE],
            special[TURN_END],
            lo,
            hi,
            code_of_id,
        )

    def grid(self, cells: int, where: str) -> int:
        return _lookup(self.vocab, grid_token(cells), where)


def _lookup(vocab: Mapping[str, int], name: str, where: str) -> int:
    if name not in vocab:
        raise ValueError(f"{where}: vocabulary_map has no token {name!r}, which the Lumina-mGPT layout needs")
    return int(vocab[name])


def lumina_layout(tokens: ChameleonTokens, rows: int, cols: int, where: str) -> Layout:
    """Header, `rows` x (`cols` codes + EOL), `<eoss>`, end of turn: all forced but the codes."""
    header = [tokens.image_start, tokens.grid(rows // 2, where), tokens.grid(cols // 2, where)]
    body = ([-1] * cols + [tokens.new_line]) * rows
    forced = (*header, *body, tokens.image_end, tokens.turn_end)
    return Layout(rows, cols, forced, tokens.code_start, tokens.code_end, row_stride=cols + 1)
