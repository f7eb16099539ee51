"""Lumina-mGPT on a tiny random Chameleon folder (docs/model-families.md), loaded through the registry and
the real transformers / VQGAN loaders: the family contract, unmasked image logits, the forced layout, the
image-only CFG context and the name-based code mapping."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import sjd_batch
from sjd_batch.decoding.protocol import decode_window, prefill_window
from sjd_batch.models.blocks.vqgan import CKPT, to_uint8
from sjd_batch.models.lumina.adapter import LUMINA_SAMPLING
from sjd_batch.models.lumina.tiny import build_tiny_lumina
from sjd_batch.models.lumina.tokens import (
    IMAGE_END,
    IMAGE_START,
    NEW_LINE,
    TURN_END,
    ChameleonTokens,
    grid_token,
    image_token_name,
)
from sjd_batch.models.registry import FAMILIES
from tests.models.contract import (
    assert_greedy_methods_match_ar,
    assert_layout,
    assert_runner_writes_png,
    assert_window_matches_stepwise,
    valid_tokens,
)

PROMPTS = ["a red circle", "two small blue squares and a green cross at the top left"]
SIDE = 16  # the tiny folder's resolution: f = 2, so an 8 x 8 latent grid


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_lumina(tmp_path_factory.mktemp("lumina") / "tiny-lumina", resolution=SIDE)


@pytest.fixture(scope="module")
def model(folder):
    return sjd_batch.load_model(str(folder))  # family and resolution from the folder's sjd_batch.json


def _id(model, name: str) -> int:
    return model.hf.config.vocabulary_map[name]


def test_contract(model):
    assert_window_matches_stepwise(model, PROMPTS)
    tokens = assert_greedy_methods_match_ar(model, PROMPTS, window=8)
    assert len(tokens[0].unique()) > 10  # greedy output is not one repeated code
    assert_layout(model, tokens, height_px=SIDE, width_px=SIDE)


def test_defaults_match_the_registry(model):
    assert model.default_sampling == LUMINA_SAMPLING == FAMILIES["lumina-mgpt"].defaults.sampling()
    assert (LUMINA_SAMPLING.top_k, LUMINA_SAMPLING.cfg_scale, LUMINA_SAMPLING.cfg_mode) == (2000, 3.0, "raw")


def test_image_logits_are_unmasked(model):
    """The stock head sets image logits to the dtype minimum; ours are the head's own."""
    ids = torch.tensor([model.prompt_ids(PROMPTS[0])])
    with torch.inference_mode():
        stock = model.hf(input_ids=ids).logits[:, -1]
        cache = model.new_cache(1, ids.shape[1] + 1)
        prefix = model.encode(PROMPTS[:1], None, with_uncond=False)
        ours = model.forward(cache, prefix.ids, prefill_window(prefix, ids.shape[1] + 1))[:, -1]
    image = torch.zeros(model.vocab_size, dtype=torch.bool)
    image[model.layout.image_start : model.layout.image_end] = True
    assert (stock[:, image] == torch.finfo(stock.dtype).min).all()  # what the stock head would give
    assert ours[:, image].abs().max() < 1e3 and ours[:, image].std() > 0
    torch.testing.assert_close(ours[:, ~image], stock[:, ~image], atol=1e-4, rtol=1e-4)


def test_layout_forces_header_eol_and_end(model):
    layout, rows, cols = model.layout, 8, 8
    assert (layout.height, layout.width, layout.row_stride, layout.length) == (rows, cols, 9, 3 + 8 * 9 + 2)
    header = [_id(model, IMAGE_START), _id(model, grid_token(rows // 2)), _id(model, grid_token(cols // 2))]
    assert list(layout.forced[:3]) == header
    eol = _id(model, NEW_LINE)
    for r in range(rows):
        row = layout.forced[3 + r * 9 : 3 + (r + 1) * 9]
        assert row == (-1,) * cols + (eol,), (r, row)
    assert layout.forced[-2:] == (_id(model, IMAGE_END), _id(model, TURN_END))
    images = [_id(model, image_token_name(c)) for c in range(64)]
    assert (layout.image_start, layout.image_end) == (min(images), max(images) + 1)


def test_prompt_template_and_non_square_resolution(folder):
    wide = sjd_batch.load_model(str(folder), options={"resolution": "32x16"})  # width x height
    assert (wide.layout.height, wide.layout.width) == (8, 16)
    assert wide.layout.forced[1:3] == (_id(wide, grid_token(4)), _id(wide, grid_token(8)))
    ids = wide.prompt_ids("a red circle")
    assert ids[0] == wide.tokenizer.bos_token_id and ids[-1] == _id(wide, TURN_END)
    text = wide.tokenizer.decode(ids[1:-1])
    assert text.startswith("generate an image of") and text.endswith("prompt : a red circle"), text
    tokens = valid_tokens(wide, 1, wide.layout.length)
    assert wide.decode_pixels(tokens).shape == (1, 16, 32, 3)


def test_uncond_context_is_the_image_tokens_alone(model):
    """An uncond row has no prompt: its logits at offset a are those of the bare sequence of generated
    tokens 0..a at positions 0..a (Lumina-mGPT's image-start-triggered CFG context)."""
    prefix = model.encode(PROMPTS, None, with_uncond=True)
    assert (prefix.start[2:] == prefix.length).all() and (prefix.start[:2] < prefix.length).all()
    n = 12
    seq = valid_tokens(model, 2, n)
    total = prefix.length + n
    with torch.inference_mode():
        cache = model.new_cache(4, total)
        model.forward(cache, prefix.ids, prefill_window(prefix, total))
        first = torch.full((4,), prefix.length)
        logits = model.forward(cache, torch.cat([seq, seq]), decode_window(first, prefix.start, n, total))
        bare = model.hf.lm_head(model.hf.model(input_ids=seq).last_hidden_state)
    torch.testing.assert_close(logits[2:], bare, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(logits[:2], bare, atol=1e-2)  # the cond rows do see their prompt


def test_codes_follow_the_vocabulary_names(model):
    """Our bpe2img must invert transformers' img2bpe: encode an image with the checkpoint's own
    ChameleonVQVAE (same encoder as vqgan.ckpt), place the ids in the layout, and get the codes back."""
    image = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode():
        bpe = model.hf.model.get_image_tokens(image)  # [2, 64] ids, through the names
        codes = model.hf.model.vqmodel.encode(image).image_tokens.view(5, 8, 8)
    tokens = valid_tokens(model, 5, model.layout.length)
    offsets = torch.tensor(model.layout.code_offsets())
    tokens[:, offsets] = bpe.long()
    assert not torch.equal(bpe.long().view(5, 8, 8) - model.layout.image_start, codes)  # ids are shuffled
    assert torch.equal(model.codes(tokens), codes)
    pixels = model.decode_pixels(tokens)  # 5 images: two decoder chunks (DECODE_CHUNK = 4)
    assert torch.equal(pixels, to_uint8(model.vqgan.decode_codes(codes)))
    assert pixels.shape == (5, SIDE, SIDE, 3) and pixels.dtype == torch.uint8


def test_clear_errors(folder, model, tmp_path):
    with pytest.raises(ValueError, match="resolution 18x18 must be a positive multiple of 4 px"):
        sjd_batch.load_model(str(folder), options={"resolution": 18})
    with pytest.raises(ValueError, match="unknown option"):
        sjd_batch.load_model(str(folder), options={"guidance": 2})
    with pytest.raises(ValueError, match="negative prompts are not supported"):
        model.encode(PROMPTS, ["blurry", None], with_uncond=True)
    with pytest.raises(ValueError, match="a code slot holds a non-image id"):
        model.decode_pixels(torch.full((1, model.layout.length), _id(model, NEW_LINE)))
    vocab = {k: v for k, v in model.hf.config.vocabulary_map.items() if k != NEW_LINE}
    with pytest.raises(ValueError, match="has no token '<reserved08799>'"):
        ChameleonTokens.from_vocabulary_map(vocab, 64, "tiny")
    with pytest.raises(ValueError, match=r"codes 0\.\.127 of the VQGAN codebook \(n_embed=128\)"):
        ChameleonTokens.from_vocabulary_map(model.hf.config.vocabulary_map, 128, "tiny")
    broken = shutil.copytree(folder, tmp_path / "no-vqgan")
    (broken / CKPT).unlink()
    with pytest.raises(FileNotFoundError, match="vqgan.ckpt is missing"):
        sjd_batch.load_model(str(broken))


def test_folder_without_manifest_is_found_by_model_type(folder, tmp_path):
    plain = shutil.copytree(folder, tmp_path / "plain")
    (plain / "sjd_batch.json").unlink()
    assert json.loads((plain / "config.json").read_text())["model_type"] == "chameleon"
    loaded = sjd_batch.load_model(str(plain), options={"resolution": SIDE})
    assert loaded.layout.length == 77


def test_lumina_era_config_loads_the_same_model(folder, model, tmp_path):
    """Lumina-mGPT's checkpoints were written by transformers 4.4x through the repo's own Chameleon copy:
    `rope_theta` instead of `rope_parameters`, plus `mask_image_logits` and `dropout`. They must load into
    the same network."""
    old = shutil.copytree(folder, tmp_path / "old")
    config = json.loads((old / "config.json").read_text())
    config.pop("rope_parameters")
    config.update(rope_theta=10000.0, rope_scaling=None, mask_image_logits=False, dropout=0.0)
    (old / "config.json").write_text(json.dumps(config))
    legacy = sjd_batch.load_model(str(old))
    a, b = (sjd_batch.generate(m, PROMPTS, "ar", top_k=1, decode_images=False) for m in (model, legacy))
    assert all(torch.equal(x.tokens, y.tokens) for x, y in zip(a, b, strict=True))


def test_bfloat16_language_model_keeps_an_fp32_vqgan(folder):
    half = sjd_batch.load_model(str(folder), dtype="bfloat16")
    assert half.dtype == torch.bfloat16 and half.vqgan.post_quant_conv.weight.dtype == torch.float32
    out = sjd_batch.generate(half, PROMPTS, "sjd", window=8, decode_images=False)
    assert_layout(half, torch.stack([r.tokens for r in out]), height_px=SIDE, width_px=SIDE)


@pytest.mark.ray
def test_runner_writes_png(folder, tmp_path, ray_session):
    assert_runner_writes_png(str(folder), tmp_path, height_px=SIDE, width_px=SIDE, method="sjd", window=8)
