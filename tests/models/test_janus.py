"""The Janus adapter on a tiny random `JanusForConditionalGeneration` saved to a real folder
(docs/model-families.md, "Tiny random models").

The folder is written once per session by `build_tiny_janus` and read back through the loaders, so
every test drives the real transformers classes, processor, generation head and VQ decoder.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoProcessor, JanusConfig, JanusForConditionalGeneration, LlamaConfig

import sjd_batch
from sjd_batch.decoding.protocol import decode_window, prefill_window
from sjd_batch.decoding.sampling import SamplingConfig
from sjd_batch.models.janus.adapter import JanusT2I, load
from sjd_batch.models.janus.tiny import build_tiny_janus
from tests.models.contract import (
    assert_greedy_methods_match_ar,
    assert_layout,
    assert_runner_writes_png,
    assert_window_matches_stepwise,
)

PROMPTS = ["a red cat", "a small blue bird on the tree at sunset", "night sky"]


@pytest.fixture(scope="module")
def janus_dir(tmp_path_factory):
    # A peaky head keeps greedy argmax ties, which float noise could break either way, out of the tests.
    return build_tiny_janus(tmp_path_factory.mktemp("models") / "tiny-janus", seed=0, logit_scale=30.0)


@pytest.fixture(scope="module")
def janus(janus_dir) -> JanusT2I:
    return load(janus_dir)


def test_contract(janus):
    assert_window_matches_stepwise(janus, PROMPTS)
    tokens = assert_greedy_methods_match_ar(janus, PROMPTS, window=8)
    assert_layout(janus, tokens, height_px=16, width_px=16)


def test_runner_writes_png(janus_dir, tmp_path, ray_session):
    assert_runner_writes_png(str(janus_dir), tmp_path, height_px=16, width_px=16, method="sjd-vp", window=8)


def test_registry_loads_the_folder_as_janus(janus_dir):
    model = sjd_batch.load_model(str(janus_dir))
    assert isinstance(model, JanusT2I) and model.name == "tiny-janus"
    assert model.default_sampling == SamplingConfig(temperature=1.0, top_k=0, cfg_scale=5.0, cfg_mode="raw")
    with pytest.raises(ValueError, match="unknown option"):
        sjd_batch.load_model(f"janus:{janus_dir}", options={"image_area": 1})


def test_folder_is_a_janus_checkpoint(janus_dir, janus):
    assert json.loads((janus_dir / "sjd_batch.json").read_text()) == {"family": "janus"}
    assert json.loads((janus_dir / "config.json").read_text())["model_type"] == "janus"
    assert (janus.layout.height, janus.layout.width, janus.vocab_size, janus.image_size) == (4, 4, 64, 16)
    assert janus.layout.forced == (-1,) * 16 and janus.layout.row_stride == 4
    assert janus.default_sampling == SamplingConfig(temperature=1.0, top_k=0, cfg_scale=5.0, cfg_mode="raw")


def test_the_released_config_gives_24x24_codes_at_384_px(janus_dir):
    """JanusConfig's defaults are Janus-Pro's vision and VQ settings; on the meta device, so no weights."""
    text = LlamaConfig(vocab_size=64, hidden_size=2048, num_hidden_layers=1, num_attention_heads=16)
    with torch.device("meta"):
        hf = JanusForConditionalGeneration(JanusConfig(text_config=text))
    model = JanusT2I("janus-pro-shape", hf, AutoProcessor.from_pretrained(janus_dir))
    assert (model.layout.height, model.layout.width, model.layout.length) == (24, 24, 576)
    assert (model.vocab_size, model.image_size) == (16384, 384)


def test_prompt_follows_the_chat_template_and_ends_with_begin_of_image(janus):
    ids = janus.prompt_ids("A Red cat")
    text = janus.processor.tokenizer.decode(ids)
    assert text.replace(" ", "") == "<s><|User|>:aredcat<|Assistant|>:<begin_of_image>"
    assert ids[0] == janus.bos_id and ids[-1] == janus.boi_id


def test_uncond_rows_are_the_prompt_pad_masked_but_bos_and_boi(janus):
    prefix = janus.encode(PROMPTS, None, with_uncond=True)
    b = len(PROMPTS)
    assert prefix.rows == 2 * b
    for i in range(b):
        start = int(prefix.start[i])
        assert int(prefix.start[b + i]) == start  # same length: the pads are attended, as the authors do
        cond, uncond = prefix.ids[i, start:], prefix.ids[b + i, start:]
        assert cond.tolist() == janus.prompt_ids(PROMPTS[i])
        assert uncond[0] == janus.bos_id and uncond[-1] == janus.boi_id
        assert (uncond[1:-1] == janus.pad_id).all() and (cond[1:-1] != janus.pad_id).all()
        assert (prefix.ids[i, :start] == janus.pad_id).all()


def test_a_negative_prompt_replaces_the_pad_masked_row(janus):
    prefix = janus.encode(["a red cat", "a dog"], [None, "a black car"], with_uncond=True)
    assert prefix.ids[3, prefix.start[3] :].tolist() == janus.prompt_ids("a black car")
    assert prefix.ids[2, prefix.start[2] :].tolist() == janus.uncond_ids(janus.prompt_ids("a red cat"))


def _reference_logits(janus: JanusT2I, prompt_ids: torch.Tensor, code_embeds: torch.Tensor) -> torch.Tensor:
    """Generation-head logits of the last codes from one uncached HF forward over the whole sequence."""
    embeds = torch.cat([janus.hf.get_input_embeddings()(prompt_ids), code_embeds], dim=1)
    with torch.no_grad():
        hidden = janus.hf.model(inputs_embeds=embeds).last_hidden_state
        return janus.hf.model.generation_head(hidden[:, -code_embeds.shape[1] :])


def test_generated_windows_enter_as_generation_embeddings(janus):
    prefix = janus.encode(["a red cat"], None, with_uncond=False)
    codes = torch.tensor([[5, 17, 30]])  # all < the text vocabulary, so they are also valid text ids
    total = prefix.length + 8
    cache = janus.new_cache(1, total)
    janus.forward(cache, prefix.ids, prefill_window(prefix, total))
    ours = janus.forward(cache, codes, decode_window(torch.tensor([prefix.length]), prefix.start, 3, total))

    prompt = prefix.ids[:, int(prefix.start[0]) :]
    with torch.no_grad():
        as_codes = _reference_logits(janus, prompt, janus.hf.prepare_embeddings_for_image_generation(codes))
        as_text = _reference_logits(janus, prompt, janus.hf.get_input_embeddings()(codes))
    assert ours.shape == (1, 3, 64)
    torch.testing.assert_close(ours, as_codes, atol=1e-4, rtol=1e-4)
    assert (ours - as_text).abs().max() > 1e-2  # the text table would be a silent, wrong model


def test_greedy_ar_equals_transformers_generate_token_for_token(janus):
    """Our cache, positions, left padding and pad-masked CFG against HF's own image generation loop."""
    for cfg in (5.0, 2.0):
        ours = sjd_batch.generate(
            janus, PROMPTS, method="ar", temperature=0.0, cfg_scale=cfg, decode_images=False
        )
        theirs = janus.hf_generate(PROMPTS, seed=0, sampling=SamplingConfig(temperature=0.0, cfg_scale=cfg))
        assert torch.equal(torch.stack([r.tokens for r in ours]), theirs), f"cfg {cfg}"


def test_hf_generate_samples_codes_of_the_layout_shape(janus):
    sampling = janus.default_sampling
    a = janus.hf_generate(PROMPTS[:2], seed=1, sampling=sampling)
    assert a.shape == (2, janus.layout.length) and a.dtype == torch.long
    assert 0 <= int(a.min()) and int(a.max()) < janus.vocab_size
    assert torch.equal(a, janus.hf_generate(PROMPTS[:2], seed=1, sampling=sampling))
    assert not torch.equal(a, janus.hf_generate(PROMPTS[:2], seed=2, sampling=sampling))
    with pytest.raises(ValueError, match="cfg_scale > 1"):
        janus.hf_generate(PROMPTS[:1], seed=0, sampling=SamplingConfig(cfg_scale=1.0))


def test_decode_pixels_checks_codes(janus):
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 64\)"):
        janus.decode_pixels(torch.full((1, 16), 64))
    with pytest.raises(ValueError, match=r"expected codes \[B, 16\]"):
        janus.decode_pixels(torch.zeros((1, 15), dtype=torch.long))


def test_missing_or_incomplete_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no such folder"):
        load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty has no config.json"):
        load(tmp_path / "empty")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['image_area'\]"):
        load(tmp_path / "empty", image_area=1)


@pytest.mark.gpu
def test_on_cuda_fp32_matches_transformers_and_bf16_decodes(janus_dir):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    fp32 = load(janus_dir, device="cuda")
    assert_window_matches_stepwise(fp32, PROMPTS)
    ours = sjd_batch.generate(fp32, PROMPTS, method="ar", temperature=0.0, decode_images=False)
    theirs = fp32.hf_generate(PROMPTS, seed=0, sampling=SamplingConfig(temperature=0.0, cfg_scale=5.0))
    assert torch.equal(torch.stack([r.tokens.cpu() for r in ours]), theirs.cpu())
    bf16 = load(janus_dir, device="cuda", dtype=torch.bfloat16)
    out = sjd_batch.generate(bf16, PROMPTS, method="sjd-vp", seed=0)
    assert all(r.pixels.shape == (16, 16, 3) and r.pixels.dtype == torch.uint8 for r in out)
