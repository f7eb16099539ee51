"""A tiny random Janus folder for the CPU tests (docs/model-families.md): `build_tiny_janus` writes a
`JanusForConditionalGeneration` checkpoint and a real `JanusProcessor` (around a word-level tokenizer
built here) that `sjd_batch.models.janus.adapter.load` reads like a released checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from sjd_batch.models.family import MANIFEST


def build_tiny_janus(folder: str | Path, seed: int = 0, logit_scale: float = 1.0) -> Path:
    """Write a seeded random Janus folder (a tiny config) that `load` reads like a real checkpoint.

    The processor is real: a `JanusProcessor` around a word-level `tokenizers` tokenizer built here
    (Janus's special tokens, the `<|User|>`/`<|Assistant|>` chat markers as added tokens, a few dozen
    words, `<unk>` for the rest, BOS prepended by its post-processor) and the PIL `JanusImageProcessor`.
    The VQ grid is 4x4 codes over a 64-code head, decoded to 16x16 px. `logit_scale` multiplies the
    generation head's output layer: random heads give near-uniform laws, and a peakier law keeps greedy
    ties (where float noise could pick either code) out of the equivalence tests. The generation
    embeddings are rescaled to the text embeddings' size (see `_tune_random_weights`).
    """
    from transformers import JanusForConditionalGeneration, JanusProcessor
    from transformers.models.janus.image_processing_pil_janus import JanusImageProcessorPil

    folder = Path(folder)
    tokenizer = _tiny_tokenizer()
    processor = JanusProcessor(
        image_processor=JanusImageProcessorPil(size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
        chat_template=_CHAT_TEMPLATE,
        num_image_tokens=16,
    )
    config = _tiny_config(tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the weights are a pure function of the seed
        model = JanusForConditionalGeneration(config)
        _tune_random_weights(model, logit_scale)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / MANIFEST).write_text(json.dumps({"family": "janus"}) + "\n")
    return folder


def _tiny_config(tokenizer: Any) -> Any:
    """The `JanusConfig` of the tiny model: a 2-layer text Llama, a 1-layer vision tower, a 64-code VQ."""
    from transformers import JanusConfig, JanusVisionConfig, JanusVQVAEConfig, LlamaConfig

    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = JanusVisionConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        projection_dim=64,
        num_image_tokens=16,
        depth=1,
    )
    vq = JanusVQVAEConfig(
        embed_dim=8,
        num_embeddings=64,
        latent_channels=8,
        base_channels=32,
        channel_multiplier=[1, 1, 2],
        num_res_blocks=1,
        projection_dim=64,
        image_token_embed_dim=64,
        num_hidden_layers=2,
    )
    return JanusConfig(
        text_config=text,
        vision_config=vision,
        vq_config=vq,
        image_token_id=tokenizer.convert_tokens_to_ids("<image_placeholder>"),
    )


@torch.no_grad()
def _tune_random_weights(model: torch.nn.Module, logit_scale: float) -> None:
    """Random init leaves generation embeddings ~250x smaller than text embeddings (two 0.02-std layers
    in a row), so codes fed back would barely move the model and a test could not tell them from
    zeros. Scale them to the text embeddings' size, as training would; then sharpen the head."""
    codes = model.prepare_embeddings_for_image_generation(torch.arange(model.config.vq_config.num_embeddings))
    text = model.get_input_embeddings().weight
    model.model.generation_embeddings.weight.mul_(text.std() / codes.std())
    model.model.generation_head.vision_head.weight.mul_(logit_scale)


# A Janus-Pro style conversation: "<|User|>: {text}\n\n<|Assistant|>:" (no system prompt in image mode).
_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}<|User|>: "
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] | trim }}{% endif %}"
    "{% endfor %}\n\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|Assistant|>:{% endif %}"
)
_TINY_SPECIAL = ("<pad>", "<s>", "</s>", "<unk>", "<image_placeholder>", "<begin_of_image>", "<end_of_image>")
_TINY_WORDS = (
    ":",
    "a",
    "an",
    "the",
    "of",
    "on",
    "in",
    "at",
    "with",
    "red",
    "green",
    "blue",
    "yellow",
    "black",
    "white",
    "small",
    "large",
    "cat",
    "dog",
    "bird",
    "fox",
    "apple",
    "tree",
    "house",
    "car",
    "boat",
    "mountain",
    "sky",
    "sunset",
    "night",
    "photo",
    "painting",
    "forest",
    "table",
    "moon",
)


def _tiny_tokenizer() -> Any:
    from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(_TINY_SPECIAL + ("<|User|>", "<|Assistant|>") + _TINY_WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")]
    )
    core.add_special_tokens(list(_TINY_SPECIAL))
    # The chat markers are matched whole, before lower-casing and pre-tokenization.
    core.add_tokens([AddedToken(t, normalized=False) for t in ("<|User|>", "<|Assistant|>")])
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={
            "image_token": "<image_placeholder>",
            "boi_token": "<begin_of_image>",
            "eoi_token": "<end_of_image>",
        },
    )
