"""A tiny random Lumina-mGPT model folder for the CPU tests (docs/model-families.md): `build_tiny_lumina`
writes what `sjd_batch.models.lumina.adapter.load` reads from a real checkpoint; `tiny_vocabulary` is its
Chameleon-shaped vocabulary map."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from sjd_batch.models.blocks.tiny_vqgan import TINY_CONFIG, random_vqgan
from sjd_batch.models.blocks.vqgan import save_vqgan
from sjd_batch.models.family import MANIFEST
from sjd_batch.models.lumina.adapter import NAME
from sjd_batch.models.lumina.tokens import (
    IMAGE_END,
    IMAGE_START,
    NEW_LINE,
    TURN_END,
    grid_token,
    image_token_name,
)

_TINY_WORDS = (
    "generate an image of according to the following prompt : a the red blue green yellow circle square "
    "cross triangle at top bottom left right and two small large"
).split()


def tiny_vocabulary(num_codes: int, seed: int = 0) -> dict[str, int]:
    """A Chameleon-shaped vocabulary map: specials, the image names in a shuffled (but contiguous) id
    range, the layout tokens, size tokens for 1..8 patches, then words."""
    order = torch.randperm(num_codes, generator=torch.Generator().manual_seed(seed)).tolist()
    names = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]
    names += [image_token_name(c) for c in order]  # id order != code order, as bpe2img allows
    names += [IMAGE_END, IMAGE_START, TURN_END, NEW_LINE] + [grid_token(n) for n in range(1, 9)]
    names += list(_TINY_WORDS)
    return {n: i for i, n in enumerate(names)}


def build_tiny_lumina(folder: str | Path, resolution: int = 16, seed: int = 0) -> Path:
    """Write a seeded random Lumina-mGPT folder that `load` reads like a real one.

    It holds a 2-layer `ChameleonForConditionalGeneration` (`save_pretrained`), a word-level tokenizer
    over the same vocabulary, a random VQGAN saved as Meta's `vqgan.ckpt` + `vqgan.yaml` (whose encoder
    also becomes the checkpoint's `model.vqmodel`, as transformers' conversion script does), and
    `sjd_batch.json`. With the default 16 px the VQGAN (f = 2) gives an 8x8 grid: 3 + 8*9 + 2 = 77 tokens.
    """
    from transformers import ChameleonConfig, ChameleonForConditionalGeneration

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocabulary(TINY_CONFIG.n_embed, seed)
    vqgan = random_vqgan(TINY_CONFIG, seed)
    config = ChameleonConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        vocabulary_map=vocab,
        vq_config=TINY_CONFIG.transformers_config(),
        # 10x the default init: at 0.02 a 2-layer model's greedy output repeats one code, which would
        # make "greedy SJD equals greedy AR" hold trivially.
        initializer_range=0.2,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # weights are a pure function of the seed
    hf = ChameleonForConditionalGeneration(config).eval()
    torch.random.set_rng_state(generator_state)
    encoder_side = {k: v for k, v in vqgan.state_dict().items() if not k.startswith("decoder.")}
    hf.model.vqmodel.load_state_dict(encoder_side, strict=True)
    hf.save_pretrained(folder)
    _tiny_tokenizer(vocab).save_pretrained(folder)
    save_vqgan(vqgan, folder)
    (folder / MANIFEST).write_text(json.dumps({"family": NAME, "resolution": resolution}) + "\n")
    return folder


def _tiny_tokenizer(vocab: dict[str, int]) -> Any:
    """A lower-casing word-level fast tokenizer over `vocab`; unknown words become `<unk>`."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
