"""Emu3-Gen through transformers' real Emu3 classes, on a tiny random checkpoint saved to a folder
(`build_tiny_emu3`, docs/model-families.md): the family contract, the Emu3 layout and CFG, transformers' own
`generate()` as a cross-check, options, and offline / missing-checkpoint errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import sjd_batch
from sjd_batch.decoding import SamplingConfig
from sjd_batch.models.emu3.adapter import NEGATIVE_PROMPT, POSITIVE_SUFFIX
from sjd_batch.models.emu3.tiny import build_tiny_emu3
from sjd_batch.models.sources import check_source
from tests.models.contract import (
    assert_greedy_methods_match_ar,
    assert_layout,
    assert_runner_writes_png,
    assert_window_matches_stepwise,
    hub_cache_entry,
)

PROMPTS = ["a red circle", "a large green cross at the top left of the picture", "blue"]
PIXELS = 8  # 4x4 latent codes, VQ spatial factor 2


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return build_tiny_emu3(tmp_path_factory.mktemp("emu3") / "tiny-emu3")


@pytest.fixture(scope="module")
def model(folder):
    return sjd_batch.load_model(str(folder))  # family from sjd_batch.json, image_area from its options


def test_contract(model):
    assert_window_matches_stepwise(model, PROMPTS)
    tokens = assert_greedy_methods_match_ar(model, PROMPTS, window=8)
    assert_layout(model, tokens, height_px=PIXELS, width_px=PIXELS)


def test_layout_is_emu3s_grammar(model):
    layout, names = model.layout, model.processor.tokenizer.convert_ids_to_tokens
    assert (layout.height, layout.width, layout.length) == (4, 4, 4 * 5 + 3)
    tail = ["<|extra_201|>", "<|image end|>", "<|extra_204|>"]  # EOF, EOI, EOS
    assert names(list(layout.forced[-3:])) == tail
    eol = [a for a, f in enumerate(layout.forced[:-3]) if f >= 0]
    assert eol == [4, 9, 14, 19] and set(names([layout.forced[a] for a in eol])) == {"<|extra_200|>"}
    visual = names(list(range(layout.image_start, layout.image_end)))
    assert visual[0] == "<|visual token 000000|>" and visual[-1] == "<|visual token 000063|>"


def test_defaults_and_prompts(model):
    s = model.default_sampling
    assert (s.top_k, s.cfg_scale, s.cfg_mode) == (2048, 3.0, "log-softmax")  # docs/model-families.md
    prefix = model.encode(["a red circle"], ["blue"], with_uncond=True)
    cond, uncond = (model.processor.tokenizer.convert_ids_to_tokens(r[s:].tolist())
                    for r, s in zip(prefix.ids, prefix.start, strict=True))
    suffix = ["<|image start|>", "4", "*", "4", "<|image token|>"]
    assert cond[:4] == ["<|extra_203|>", "a", "red", "circle"] and cond[-5:] == suffix
    assert len(cond) == 4 + len(model.tokenize(POSITIVE_SUFFIX)) - 1  # the authors' suffix is appended
    assert uncond == ["<|extra_203|>", "blue", *suffix]  # a per-sample negative prompt, same image suffix
    default = model.encode(["a"], None, with_uncond=True)
    assert default.ids[1, default.start[1] :].tolist() == model.tokenize(NEGATIVE_PROMPT)


def test_hf_generate_greedy_equals_our_ar(model):
    """transformers' generate() with negative-prompt CFG and the layout as prefix_allowed_tokens_fn."""
    ours = sjd_batch.generate(model, PROMPTS, "ar", top_k=1, decode_images=False)
    ours = torch.stack([r.tokens for r in ours])
    theirs = model.hf_generate(PROMPTS, seed=0, sampling=SamplingConfig(top_k=1, cfg_scale=3.0,
                                                                         cfg_mode="log-softmax"))
    assert torch.equal(theirs.cpu(), ours)
    sampled = model.hf_generate(PROMPTS, seed=0, sampling=model.default_sampling)
    assert_layout(model, sampled.cpu(), height_px=PIXELS, width_px=PIXELS)


def test_job_options_override_the_folder(folder):
    small = sjd_batch.load_model(str(folder), options={"image_area": 16 * 16, "negative_prompt": "ugly"})
    assert (small.layout.height, small.layout.width, small.layout.length) == (2, 2, 2 * 3 + 3)
    assert small.decode_pixels(torch.stack([r.tokens for r in sjd_batch.generate(
        small, ["a"], "sjd", decode_images=False)])).shape == (1, 4, 4, 3)
    assert small.negative_prompt == "ugly"
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['resolution'\] for family 'emu3'"):
        check_source(str(folder), {"resolution": 512})
    with pytest.raises(ValueError, match="image_area: expected a positive int"):
        sjd_batch.load_model(str(folder), options={"image_area": "big"})


def test_folder_without_manifest_is_emu3_by_model_type(folder, tmp_path):
    plain = shutil.copytree(folder, tmp_path / "plain")
    (plain / "sjd_batch.json").unlink()  # a bare save_pretrained folder: config.json says model_type emu3
    model = sjd_batch.load_model(str(plain), options={"image_area": 32 * 32})
    assert model.layout.length == 23


def test_offline_hub_id_from_the_cache(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_cache_entry(tmp_path / "hub", "acme/tiny-emu3", folder)
    model = sjd_batch.load_model("emu3:acme/tiny-emu3")
    assert model.layout.length == 23 and model.name == "acme/tiny-emu3"
    with pytest.raises(ValueError, match="'BAAI/Emu3-Gen-hf': not a local folder, and not in the Hugging "
                                         "Face cache .*HF_HUB_OFFLINE=1"):
        sjd_batch.load_model("emu3-gen")


def test_missing_or_broken_checkpoint_is_a_clear_error(folder, tmp_path):
    with pytest.raises(ValueError, match="not a local model folder"):
        sjd_batch.load_model(f"emu3:{tmp_path / 'nowhere'}")
    no_weights = shutil.copytree(folder, tmp_path / "no-weights")
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="no-weights: cannot load the Emu3 checkpoint"):
        sjd_batch.load_model(str(no_weights))
    no_processor = shutil.copytree(folder, tmp_path / "no-processor")
    (no_processor / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match="no-processor: no usable Emu3Processor"):
        sjd_batch.load_model(str(no_processor))
    (no_processor / "sjd_batch.json").write_text(json.dumps({"family": "emu3", "image_area": 1024, "x": 1}))
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['x'\]"):
        check_source(str(no_processor))


@pytest.mark.ray
def test_runner_writes_png(folder, tmp_path, ray_session):
    assert_runner_writes_png(str(folder), tmp_path, height_px=PIXELS, width_px=PIXELS, method="sjd", window=8)


def test_example_job_uses_the_family_defaults():
    from sjd_batch.config import load_job
    from sjd_batch.models.registry import FAMILIES, MODELS

    job = load_job(Path(__file__).resolve().parents[2] / "jobs" / "emu3.yaml")
    assert MODELS[job.model.name].source == "emu3:BAAI/Emu3-Gen-hf"
    defaults = FAMILIES["emu3"].defaults.sampling()
    assert job.sampling.over(defaults) == defaults  # the job sets the family's own values
    assert job.model.options == {"image_area": 518400} and job.run.gpus_per_actor == 1


def _bench(capsys, tmp_path, model: str, methods: str) -> list[dict]:
    from sjd_batch import cli

    out = tmp_path / "bench.json"
    capsys.readouterr()
    assert cli.main(["bench", "--model", model, "--methods", methods, "--prompts", "2", "--batch-size", "2",
                     "--warmup", "0", "--device", "cpu", "--json", str(out)]) == 0
    return json.loads(out.read_text())["results"]


def test_bench_times_hf_generate_beside_our_methods(folder, tmp_path, capsys):
    rows = {r["method"]: r for r in _bench(capsys, tmp_path, str(folder), "ar,hf-generate,sjd")}
    assert list(rows) == ["ar", "hf-generate", "sjd"]
    hf = rows["hf-generate"]
    assert (hf["samples"], hf["tokens_per_image"], hf["nfe_mean"], hf["layout_violations"]) == (2, 23, 23, 0)
    assert hf["step_compression"] == 1.0 and hf["images_per_s"] > 0 and hf["device"] == "cpu"
    assert "hf-generate" in capsys.readouterr().out  # the table shows it beside ar


def test_hf_generate_results_check_the_layout(model):
    from sjd_batch.commands.measure import follows_layout, hf_generate_results

    results = hf_generate_results(model, PROMPTS[:2], ["a", "b"], seed=0, params={"top_k": 1})
    greedy = sjd_batch.generate(model, PROMPTS[:2], "ar", top_k=1, decode_images=False)
    for ours, theirs in zip(greedy, results, strict=True):
        assert torch.equal(theirs.tokens, ours.tokens) and theirs.stats.extra["layout_ok"]
        assert theirs.pixels.shape == (PIXELS, PIXELS, 3)
    forced = torch.tensor(model.layout.forced)
    broken = results[0].tokens.clone()
    broken[4] = model.layout.image_start  # a visual token where EOL belongs
    assert not follows_layout(model.layout, broken, forced)
    assert not follows_layout(model.layout, results[0].tokens[:-1], forced)


def test_bench_says_hf_generate_is_unsupported_elsewhere(tmp_path, capsys):
    """shapes-t2i adds learned row and column vectors to its embeddings, which HF's generate() would leave
    out: no baseline there."""
    rows = _bench(capsys, tmp_path, "shapes-t2i", "ar,hf-generate")
    assert "hf-generate: skipped: model shapes-t2i has no hf_generate()" in capsys.readouterr().err
    assert rows[0]["method"] == "hf-generate" and "without grid positions" in rows[0]["unsupported"]
    assert [r["method"] for r in rows[1:]] == ["ar"] and rows[1]["samples"] == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda(folder):
    """fp32 greedy equivalence and a bf16 sampled run on the GPU (the dtype jobs/emu3.yaml uses)."""
    assert_greedy_methods_match_ar(sjd_batch.load_model(str(folder), "cuda"), PROMPTS, window=8)
    model = sjd_batch.load_model(str(folder), "cuda", "bfloat16")
    out = sjd_batch.generate(model, PROMPTS, "sjd", window=8)
    assert_layout(model, torch.stack([r.tokens for r in out]), height_px=PIXELS, width_px=PIXELS)
