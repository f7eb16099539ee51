"""LlamaGen's text conditioning: a T5 encoder (flan-t5-xl for the released t2i models) through transformers.

As in FoundationVision/LlamaGen `language/t5.py` + `autoregressive/sample/sample_t2i.py`: a caption is
tokenised with EOS, truncated to `max_length` (120) tokens, encoded by `T5EncoderModel` with the
usual right padding and attention mask, and then the valid states are moved to the *end* of the
120 rows ("left padding") with the padded rows zeroed. The GPT hides the padded rows from attention.

Prefix encoding used by the adapter: a row of `max_length` ids holding `PAD` on the left, then the
row's T5 token ids, or `NULL_CAPTION` in their place for the unconditional row of CFG (which uses
the learned null caption over the same span, as LlamaGen's `generate` does).

Caption cleaning is lowercase, strip and whitespace collapse only; LlamaGen's PixArt-style
`clean_caption` (ftfy, BeautifulSoup, URL and markup regexes) is not reproduced, so prompts with
markup, URLs or odd punctuation tokenise differently from the original.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

PAD = -2  # left padding of a caption row: hidden from attention
NULL_CAPTION = -1  # a row position that takes the learned null caption (CFG's unconditional row)


def clean_caption(text: str) -> str:
    return " ".join(text.lower().split())


class CaptionEncoder:
    """A transformers T5 tokenizer + `T5EncoderModel` read from a local folder."""

    def __init__(self, folder: Path, device: torch.device, dtype: torch.dtype, max_length: int) -> None:
        from transformers import AutoTokenizer, T5EncoderModel

        if not (folder / "config.json").exists():
            raise ValueError(
                f"T5 folder {folder} has no config.json; it must hold a transformers T5 encoder and its "
                "tokenizer (e.g. a copy of google/flan-t5-xl)"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.model = T5EncoderModel.from_pretrained(str(folder), local_files_only=True, dtype=dtype)
        self.model = self.model.to(device).eval()
        self.max_length = max_length
        if self.tokenizer.pad_token_id is None:
            raise ValueError(f"T5 tokenizer in {folder} has no pad token")

    @property
    def width(self) -> int:
        return self.model.config.d_model

    def token_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        """T5 ids per prompt, EOS included, truncated to `max_length` (never empty: EOS remains)."""
        texts = [clean_caption(p) for p in prompts]
        out = self.tokenizer(texts, max_length=self.max_length, truncation=True, add_special_tokens=True)
        return [list(ids) for ids in out["input_ids"]]

    def left_padded_rows(self, prompts: Sequence[str], null: bool = False) -> torch.Tensor:
        """[B, max_length] long prefix rows: PAD then the ids (or NULL_CAPTION over the same span)."""
        rows = torch.full((len(prompts), self.max_length), PAD, dtype=torch.long)
        for i, ids in enumerate(self.token_ids(prompts)):
            rows[i, self.max_length - len(ids) :] = NULL_CAPTION if null else torch.tensor(ids)
        return rows

    @torch.inference_mode()
    def states(self, rows: torch.Tensor) -> torch.Tensor:
        """Left-padded id rows [R, L] (no NULL_CAPTION) -> T5 states [R, L, C], zero on the padding."""
        length = rows.shape[1]
        valid = rows != PAD
        count = valid.sum(1, keepdim=True)  # [R, 1]
        start = length - count
        ar = torch.arange(length, device=rows.device)[None]
        # Run T5 exactly as LlamaGen does, on right-padded ids with an attention mask ...
        right = rows.gather(1, (ar + start) % length)
        mask = ar < count
        right = right.masked_fill(~mask, self.tokenizer.pad_token_id)
        out = self.model(input_ids=right, attention_mask=mask.long()).last_hidden_state
        # ... then move the valid states to the end (LlamaGen's "naive left-padding") and zero the rest.
        index = ((ar - start) % length)[..., None].expand(-1, -1, out.shape[-1])
        return out.gather(1, index) * valid[..., None].to(out.dtype)
