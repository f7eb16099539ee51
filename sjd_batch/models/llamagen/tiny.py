"""Write a tiny random LlamaGen model folder in the official checkpoint layout (test fixture).

`build_tiny_llamagen(folder, kind)` saves a small GPT and VQ with `torch.save` exactly as
LlamaGen's trainers do (`{"model": state_dict, "steps": ..., "args": Namespace}`, the VQ with its
encoder), plus for t2i a tiny random `T5EncoderModel` and a real tokenizer, and an
`sjd_batch.json`; loading it goes through the same `load()` as the released checkpoints.

Tokenizer choice: flan-t5-xl uses a SentencePiece unigram model that cannot be fetched here, so the
fixture builds a `tokenizers` WordLevel tokenizer (lowercase, whitespace split, `</s>` appended
like T5) and saves it as a `PreTrainedTokenizerFast`; `AutoTokenizer` reads it back from the folder.
Random weights: acceptance statistics from this model mean nothing (docs/model-families.md, "Tiny random
models").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from sjd_batch.models.llamagen.gpt import GPTConfig, LlamaGenGPT
from sjd_batch.models.llamagen.vq import VQConfig, VQModel

TINY_WORDS = tuple(
    "a an the red green blue yellow cat dog car house tree sky on in at under with of small large "
    "photo painting of sunset night river mountain".split()
)
TINY_GPT = {"dim": 32, "n_layer": 2, "n_head": 2, "multiple_of": 32}
TINY_VQ = {"ch": 32, "ch_mult": [1, 1, 2], "z_channels": 32, "num_res_blocks": 1}
TINY_CODES, TINY_GRID, TINY_CLASSES = 64, 4, 10


def build_tiny_llamagen(folder: Path, kind: str = "t2i", seed: int = 0, t5_max_length: int = 120) -> Path:
    """Create `folder` with tiny random weights for `kind` ("t2i" or "c2i"); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # the weights are a pure function of (kind, seed)
    try:
        caption_dim = _write_t5(folder / "t5", t5_max_length) if kind == "t2i" else 0
        vq_config = VQConfig(codebook_size=TINY_CODES, **{**TINY_VQ, "ch_mult": tuple(TINY_VQ["ch_mult"])})
        _write_vq(folder / "vq.pt", vq_config)
        gpt_config = GPTConfig(
            **TINY_GPT,
            vocab_size=TINY_CODES,
            block_size=TINY_GRID**2,
            cls_token_num=t5_max_length if kind == "t2i" else 1,
            model_type=kind,
            num_classes=TINY_CLASSES,
            caption_dim=caption_dim or 2048,
            caption_tokens=t5_max_length,
        )
        _write_gpt(folder / "gpt.pt", gpt_config)
    finally:
        torch.random.set_rng_state(state)
    manifest = {
        "family": "llamagen",
        "kind": kind,
        "gpt": "gpt.pt",
        "gpt_model": TINY_GPT,
        "vq": "vq.pt",
        "vq_model": TINY_VQ,
        "image_size": TINY_GRID * vq_config.downsample,
        "codebook_size": TINY_CODES,
        "num_classes": TINY_CLASSES,
        "t5_max_length": t5_max_length,
        "name": f"tiny-llamagen-{kind}",
    }
    if kind == "t2i":
        manifest["t5"] = "t5"
    (folder / "sjd_batch.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return folder


def _write_gpt(path: Path, config: GPTConfig) -> None:
    gpt = LlamaGenGPT(config)
    with torch.no_grad():
        for name, p in gpt.named_parameters():
            # Larger than LlamaGen's 0.02 init (and no zero output layer), so that the tiny model's
            # logits have clear argmax gaps and its condition visibly matters.
            p.normal_(0.0, 0.3 if p.ndim > 1 else 0.05).add_(1.0 if name.endswith("norm.weight") else 0.0)
        uncond = gpt.cls_embedding.uncond_embedding if config.model_type == "t2i" else None
        if uncond is not None:
            uncond.copy_(torch.randn_like(uncond) / config.caption_dim**0.5)  # LlamaGen's null init
    args = argparse.Namespace(gpt_model="tiny", gpt_type=config.model_type)
    torch.save({"model": gpt.state_dict(), "steps": 0, "args": args}, path)


def _write_vq(path: Path, config: VQConfig) -> None:
    vq = VQModel(config, with_encoder=True)
    with torch.no_grad():
        vq.quantize.embedding.weight.normal_()
    torch.save({"model": vq.state_dict(), "steps": 0}, path)


def _write_t5(folder: Path, max_length: int) -> int:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(TINY_WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=max_length,
    )
    config = T5Config(
        vocab_size=len(vocab), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
        relative_attention_num_buckets=8, feed_forward_proj="gated-gelu",
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(folder))
    T5EncoderModel(config).save_pretrained(str(folder))
    return config.d_model
