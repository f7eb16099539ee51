"""A tiny random Emu3 folder for the CPU tests (docs/model-families.md): `build_tiny_emu3` saves a
random-weight `Emu3ForConditionalGeneration` with a real `Emu3Processor` that the family's loader reads
like `BAAI/Emu3-Gen-hf`. The processor's tokenizer is a word-level `tokenizers` one (digits split, unknown
words -> `<unk>`) carrying Emu3's special tokens, since Emu3's own 184k-token tokenizer cannot be
downloaded here. Real checkpoints bring their own tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_WORDS = ("a an the of at and in on with red green blue yellow purple white black circle square triangle "
              "cross small large top bottom left right center picture").split()


def build_tiny_emu3(folder: str | Path, seed: int = 0, latent: int = 4) -> Path:
    """Save a random-weight Emu3 (a tiny config) with a real processor and `sjd_batch.json`.

    The image is `latent` x `latent` codes; the VQ's spatial factor is 2, so pixels are 2*latent square.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        Emu3Config,
        Emu3ForConditionalGeneration,
        Emu3ImageProcessor,
        Emu3Processor,
        PreTrainedTokenizerFast,
    )

    specials = ["<|endoftext|>", "<|extra_203|>", "<|extra_204|>", "<image>", "<|image start|>",
                "<|image end|>", "<|image token|>", "<|extra_200|>", "<|extra_201|>"]
    text = ["<unk>", *"0123456789", "*", ",", ".", *TINY_WORDS]
    visual = [f"<|visual token {i:06d}|>" for i in range(64)]
    vocab = {t: i for i, t in enumerate(specials + text + visual)}
    word_level = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=word_level, pad_token="<|endoftext|>", bos_token="<|extra_203|>",
        eos_token="<|extra_204|>", unk_token="<unk>", padding_side="left",
        extra_special_tokens={"image_token": "<image>", "boi_token": "<|image start|>",
                              "eoi_token": "<|image end|>", "image_wrapper_token": "<|image token|>",
                              "eof_token": "<|extra_201|>"},
    )
    tokenizer.add_special_tokens({"additional_special_tokens": specials[3:] + visual})
    config = Emu3Config(
        text_config=dict(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2),
        vq_config=dict(codebook_size=64, embed_dim=4, latent_channels=4, base_channels=32,
                       channel_multiplier=[1, 2], num_res_blocks=1, attn_resolutions=[], hidden_size=64,
                       num_attention_heads=1, temporal_downsample_factor=4),
        vocabulary_map=vocab,
    )
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # the weights are a pure function of the seed
    model = Emu3ForConditionalGeneration(config)
    torch.random.set_rng_state(state)
    folder = Path(folder)
    model.save_pretrained(folder)
    Emu3Processor(image_processor=Emu3ImageProcessor(), tokenizer=tokenizer).save_pretrained(folder)
    # the processor's factor is 8: an area of (8*latent)^2 pixels asks for latent x latent codes
    manifest = {"family": "emu3", "image_area": (8 * latent) ** 2}
    (folder / "sjd_batch.json").write_text(json.dumps(manifest))
    return folder
