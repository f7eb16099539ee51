"""LlamaGen on tiny random state dicts saved in the official checkpoint layout and read by the real loader.

`build_tiny_llamagen` writes `{"model": state_dict, ...}` GPT and VQ checkpoints with torch.save (plus a
tiny random T5 encoder and a WordLevel tokenizer for t2i); every test loads them through
`sjd_batch.models.llamagen.load` or `sjd_batch.load_model`, as a released checkpoint would be.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch

import sjd_batch
from sjd_batch.decoding.protocol import prefill_window
from sjd_batch.models.llamagen.adapter import load
from sjd_batch.models.llamagen.gpt import GPTConfig, LlamaGenGPT
from sjd_batch.models.llamagen.spec import LlamaGenSpec
from sjd_batch.models.llamagen.text import NULL_CAPTION, PAD
from sjd_batch.models.llamagen.tiny import TINY_CLASSES, build_tiny_llamagen
from sjd_batch.models.registry import FAMILIES
from tests.models.contract import (
    assert_greedy_methods_match_ar,
    assert_layout,
    assert_runner_writes_png,
    assert_window_matches_stepwise,
)

CAPTIONS = ["a red cat on a tree", "the blue car under the sky at night", "dog"]
CLASSES = ["3", "7", "0"]
PX = 16  # tiny: 4x4 codes, VQ downsampling 4


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("llamagen")
    return {kind: build_tiny_llamagen(root / kind, kind) for kind in ("t2i", "c2i")}


@pytest.fixture(scope="module")
def t2i(folders):
    return load(folders["t2i"])


@pytest.fixture(scope="module")
def c2i(folders):
    return load(folders["c2i"])


def test_t2i_contract(t2i):
    assert (t2i.layout.height, t2i.layout.width, t2i.layout.row_stride, t2i.vocab_size) == (4, 4, 4, 64)
    assert t2i.layout.forced == (-1,) * 16
    assert_window_matches_stepwise(t2i, CAPTIONS)
    tokens = assert_greedy_methods_match_ar(t2i, CAPTIONS, window=6)
    assert_layout(t2i, tokens, PX, PX)


def test_c2i_contract(c2i):
    assert_window_matches_stepwise(c2i, CLASSES)
    tokens = assert_greedy_methods_match_ar(c2i, CLASSES, window=6, varied_lengths=False)
    pixels = assert_layout(c2i, tokens, PX, PX)
    assert len({tuple(t.tolist()) for t in tokens}) == 3, "different classes gave the same image"
    assert pixels.float().std() > 0


@pytest.mark.ray
def test_runner_writes_pngs(folders, tmp_path, ray_session):
    (tmp_path / "t2i").mkdir(), (tmp_path / "c2i").mkdir()
    assert_runner_writes_png(str(folders["t2i"]), tmp_path / "t2i", PX, PX, method="sjd", window=4)
    assert_runner_writes_png(
        f"llamagen:{folders['c2i']}", tmp_path / "c2i", PX, PX, method="mc-sjd", prompts=("1", "9"), window=4
    )


def test_defaults_and_registry(folders, t2i, c2i):
    t, c = t2i.default_sampling, c2i.default_sampling
    assert (t.cfg_scale, t.top_k, t.top_p) == (7.5, 1000, 1) and (c.cfg_scale, c.top_k) == (4.0, 2000)
    assert t2i.default_sampling.cfg_mode == "raw" and t2i.default_sampling.temperature == 1.0
    family = FAMILIES["llamagen"]
    assert set(family.options) == {f.name for f in fields(LlamaGenSpec)}
    assert family.defaults.sampling() == t2i.default_sampling
    assert [c2i.class_index(p) for p in c2i.example_prompts(5, seed=1)]  # valid class indices
    assert t2i.example_prompts(3) != t2i.example_prompts(3, seed=1)
    by_registry = sjd_batch.load_model(str(folders["c2i"]), options={"sampling": {"cfg_scale": 2.0}})
    assert by_registry.name == "tiny-llamagen-c2i" and by_registry.default_sampling.cfg_scale == 2.0


@pytest.mark.parametrize(
    ("name", "kind", "image_size", "grid", "cond"),
    [
        ("GPT-XL", "t2i", 512, 32, 120),
        ("GPT-XL", "t2i", 256, 16, 120),
        ("GPT-B", "c2i", 256, 16, 1),
        ("GPT-3B", "c2i", 384, 24, 1),
    ],
)
def test_released_configs_have_the_official_shapes(name, kind, image_size, grid, cond):
    """The released sizes, on the meta device: key names, shapes and the token grid."""
    spec = LlamaGenSpec.parse(
        dict(kind=kind, gpt="g.pt", vq="v.pt", image_size=image_size, gpt_model=name, t5="t5"), "test"
    )
    vq = spec.vq_config()
    assert vq.downsample == 16 and vq.codebook_size == 16384 and vq.codebook_embed_dim == 8
    config = spec.gpt_config(image_size // vq.downsample, 2048)
    with torch.device("meta"):
        state = LlamaGenGPT(config).state_dict()
    dim = {"GPT-XL": 1280, "GPT-B": 768, "GPT-3B": 3200}[name]
    assert (config.grid, config.block_size, config.cls_token_num) == (grid, grid * grid, cond)
    assert state["tok_embeddings.weight"].shape == (16384, dim)
    assert state["output.weight"].shape == (16384, dim)
    assert state["layers.0.attention.wqkv.weight"].shape == (3 * dim, dim)
    if kind == "t2i":
        assert state["cls_embedding.cap_proj.fc1.weight"].shape == (dim, 2048)
        assert state["cls_embedding.uncond_embedding"].shape == (120, 2048)
    else:
        assert state["cls_embedding.embedding_table.weight"].shape == (1001, dim)


def _rewrite(src: Path, dst: Path, file: str, edit) -> Path:
    import shutil

    shutil.copytree(src, dst)
    checkpoint = torch.load(dst / file, weights_only=False)
    edit(checkpoint["model"])
    torch.save(checkpoint, dst / file)
    return dst


def test_wrongly_keyed_checkpoints_fail_naming_the_keys(folders, tmp_path):
    def rename(state):
        state["layers.0.attention.qkv.weight"] = state.pop("layers.0.attention.wqkv.weight")

    bad = _rewrite(folders["c2i"], tmp_path / "gpt", "gpt.pt", rename)
    with pytest.raises(ValueError, match=r"missing keys \['layers.0.attention.wqkv.weight'\]") as err:
        load(bad)
    message = str(err.value)
    assert "unexpected keys ['layers.0.attention.qkv.weight']" in message and "gpt.pt" in message

    bad_vq = _rewrite(folders["c2i"], tmp_path / "vq", "vq.pt", lambda s: s.pop("quantize.embedding.weight"))
    with pytest.raises(ValueError, match=r"vq.pt.*missing keys \['quantize.embedding.weight'\]"):
        load(bad_vq)
    table = r"'cls_embedding.embedding_table.weight': \(\(11, 32\), \(11, 64\)\)"
    with pytest.raises(ValueError, match=r"shape mismatches \(checkpoint vs model\) \{" + table):
        load(folders["c2i"], gpt_model={"dim": 64, "n_layer": 2, "n_head": 2, "multiple_of": 32})
    with pytest.raises(ValueError, match=r"missing keys .*layers.2"):
        load(folders["c2i"], gpt_model={"dim": 32, "n_layer": 3, "n_head": 2, "multiple_of": 32})


def test_runtime_keys_of_old_checkpoints_are_ignored(folders, tmp_path):
    def add(state):
        state["freqs_cis"] = torch.zeros(17, 8, 2)
        state["layers.0.attention.kv_cache.k_cache"] = torch.zeros(1)

    model = load(_rewrite(folders["c2i"], tmp_path / "old", "gpt.pt", add))
    assert model.vocab_size == 64


def test_bad_manifests_fail_clearly(folders):
    with pytest.raises(ValueError, match=r"unknown LlamaGen option\(s\) \['cfg'\]"):
        load(folders["c2i"], cfg=3)
    with pytest.raises(ValueError, match="kind must be 't2i' or 'c2i'"):
        load(folders["c2i"], kind="i2i")
    with pytest.raises(ValueError, match="unknown LlamaGen GPT size 'GPT-Q'"):
        load(folders["c2i"], gpt_model="GPT-Q")
    with pytest.raises(ValueError, match=r"gpt_model: unknown field\(s\) \['layers', 'vocab_size'\]"):
        load(folders["c2i"], gpt_model={"dim": 32, "layers": 2, "n_head": 2, "vocab_size": 64})
    with pytest.raises(ValueError, match='needs "t5"'):
        LlamaGenSpec.parse(dict(kind="t2i", gpt="g", vq="v", image_size=256), "x.json")
    with pytest.raises(ValueError, match="checkpoint .*missing.pt does not exist"):
        load(folders["c2i"], gpt="missing.pt")


def test_c2i_prompts_are_class_indices(c2i):
    prefix = c2i.encode(["3", " 9 "], None, with_uncond=True)
    assert prefix.ids.tolist() == [[3], [9], [TINY_CLASSES], [TINY_CLASSES]]  # then the null class
    assert prefix.start.tolist() == [0, 0, 0, 0]
    for bad in ["cat", "10", "-1", "2.5", ""]:
        with pytest.raises(ValueError, match=r"prompt 1 .*class index, an integer in \[0, 10\)"):
            c2i.encode(["1", bad], None, with_uncond=False)


def test_negative_prompts_are_rejected(t2i):
    assert t2i.encode(["dog"], [None], with_uncond=True).rows == 2
    with pytest.raises(ValueError, match="learned null embedding"):
        t2i.encode(["dog"], ["blurry"], with_uncond=True)


def test_t5_prompt_is_left_padded_to_120_and_truncated(t2i):
    prefix = t2i.encode(CAPTIONS + [" ".join(["red"] * 300)], None, with_uncond=True)
    assert prefix.ids.shape == (8, 120)
    words = [len(c.split()) for c in CAPTIONS]
    assert prefix.start[:3].tolist() == [120 - (n + 1) for n in words]  # + T5's </s>
    # Truncated to 120 with the EOS kept, as the T5 tokenizer does.
    assert prefix.start[3] == 0 and prefix.ids[3, -1] == t2i.text.tokenizer.eos_token_id
    assert torch.equal(prefix.start[4:], prefix.start[:4])  # uncond rows span what the prompt spans
    for row, start in enumerate(prefix.start.tolist()):
        assert (prefix.ids[row, :start] == PAD).all()
        assert ((prefix.ids[row, start:] == NULL_CAPTION) == (row >= 4)).all()


def test_t5_states_match_a_right_padded_run(t2i):
    """Left-padded states == LlamaGen's recipe: T5 on right-padded ids + mask, valid part moved to the end."""
    rows = t2i.text.left_padded_rows(CAPTIONS)
    states = t2i.text.states(rows)
    tok = t2i.text.tokenizer(
        CAPTIONS, max_length=120, padding="max_length", truncation=True, return_tensors="pt"
    )
    with torch.inference_mode():
        ref = t2i.text.model(**tok).last_hidden_state
    for i, n in enumerate(tok["attention_mask"].sum(1).tolist()):
        torch.testing.assert_close(states[i, 120 - n :], ref[i, :n])
        assert (states[i, : 120 - n] == 0).all()


def test_uncond_rows_use_the_learned_null_embedding(t2i, c2i):
    def first_logits(model, prompts):
        prefix = model.encode(prompts, None, with_uncond=True)
        total = prefix.length + model.layout.length + 1
        cache = model.new_cache(prefix.rows, total)
        return model.forward(cache, prefix.ids, prefill_window(prefix, total))[:, -1]

    # Two same-length captions: different cond logits, identical uncond logits (the null caption only).
    logits = first_logits(t2i, ["a red cat", "the blue car"])
    assert not torch.allclose(logits[0], logits[1]) and torch.equal(logits[2], logits[3])
    assert (logits[0] - logits[2]).abs().max() > 1e-2
    # The null caption is the checkpoint's `uncond_embedding`: changing it changes only uncond rows.
    buffer = t2i.gpt.cls_embedding.uncond_embedding
    saved = buffer.clone()
    try:
        buffer.mul_(-1)
        again = first_logits(t2i, ["a red cat", "the blue car"])
    finally:
        buffer.copy_(saved)
    assert torch.equal(again[:2], logits[:2]) and not torch.allclose(again[2:], logits[2:])
    # c2i: the uncond row is the null class, the same for every prompt.
    logits = first_logits(c2i, ["3", "7"])
    assert not torch.allclose(logits[0], logits[1]) and torch.equal(logits[2], logits[3])
    assert not torch.allclose(logits[0], logits[2])


def test_vq_lookup_is_l2_normalised(folders, tmp_path):
    """Scaling a codebook row in the checkpoint cannot change its image: LlamaGen normalises at lookup."""
    base = load(folders["c2i"])
    codes = torch.arange(16)[None] * 3
    scaled = _rewrite(
        folders["c2i"], tmp_path / "scaled", "vq.pt", lambda s: s["quantize.embedding.weight"].mul_(7.0)
    )
    torch.testing.assert_close(load(scaled).decode_pixels(codes), base.decode_pixels(codes), atol=1, rtol=0)
    assert not torch.equal(base.decode_pixels(codes), base.decode_pixels(codes + 1))


def test_manifest_is_the_documented_layout(folders):
    manifest = json.loads((folders["t2i"] / "sjd_batch.json").read_text())
    assert manifest["family"] == "llamagen" and manifest["kind"] == "t2i" and manifest["t5"] == "t5"
    assert (folders["t2i"] / manifest["gpt"]).is_file() and (folders["t2i"] / manifest["vq"]).is_file()
    checkpoint = torch.load(folders["t2i"] / "gpt.pt", weights_only=False)
    assert set(checkpoint) == {"model", "steps", "args"}  # LlamaGen's trainer container
    assert "cls_embedding.uncond_embedding" in checkpoint["model"]
    assert any(k.startswith("encoder.") for k in torch.load(folders["t2i"] / "vq.pt")["model"])


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("LLAMAGEN_SRC"), reason="needs LLAMAGEN_SRC: a LlamaGen checkout")
def test_matches_the_official_code(folders, t2i):
    """Greedy CFG tokens equal LlamaGen's own `generate` (emb-mask left padding) on the same weights."""
    sys.path.insert(0, os.environ["LLAMAGEN_SRC"])
    from autoregressive.models.generate import generate as official_generate
    from autoregressive.models.gpt import ModelArgs, Transformer

    c = t2i.gpt.config
    sizes = dict(dim=c.dim, n_layer=c.n_layer, n_head=c.n_head, multiple_of=c.multiple_of)
    ref = Transformer(
        ModelArgs(
            **sizes,
            vocab_size=c.vocab_size,
            block_size=c.block_size,
            cls_token_num=c.cls_token_num,
            model_type="t2i",
            caption_dim=c.caption_dim,
        )
    )
    ref.eval()
    ref.load_state_dict(torch.load(folders["t2i"] / "gpt.pt", weights_only=False)["model"], strict=True)
    with torch.inference_mode():
        states = t2i.text.states(t2i.text.left_padded_rows(CAPTIONS))
        masks = t2i.encode(CAPTIONS, None, with_uncond=False).ids != PAD
        want = official_generate(ref, states, c.block_size, masks.long(), cfg_scale=7.5, top_k=1)
    out = sjd_batch.generate(t2i, CAPTIONS, "ar", top_k=1, decode_images=False)
    got = torch.stack([r.tokens for r in out])
    assert torch.equal(got, want.long())


def test_gpt_config_rejects_bad_shapes():
    with pytest.raises(ValueError, match="not a square"):
        GPTConfig(dim=32, n_layer=1, n_head=2, block_size=15)
    with pytest.raises(ValueError, match="model_type"):
        GPTConfig(dim=32, n_layer=1, n_head=2, model_type="x")
