"""The engine decodes under inference mode (no autograd bookkeeping per operator), hands back ordinary
tensors, leaves the caller's code in the caller's mode, and gives the same tokens either way."""

from __future__ import annotations

import pytest
import torch

from sjd_batch.decoding import Request, SamplingConfig, decode_stream, resolve_method
from sjd_batch.decoding.inference import inference_steps
from sjd_batch.decoding.rng import sample_seed
from tests.decoding.toys import PROMPTS

SAMPLED = SamplingConfig(top_k=8, cfg_scale=2.0, temperature=0.9)


def _record_forward_mode(model, monkeypatch) -> list[bool]:
    seen: list[bool] = []
    forward = model.forward

    def recording(*args, **kwargs):
        seen.append(torch.is_inference_mode_enabled())
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", recording)
    return seen


def _decode(model, method: str) -> dict:
    requests = [Request(p, sample_seed(0, f"s{i}"), tag=i) for i, p in enumerate(PROMPTS[:5])]
    out = {}
    for finished in decode_stream(model, requests, SAMPLED, resolve_method(method, window=4), 2):
        assert not torch.is_inference_mode_enabled()  # the caller's code between results
        out[finished.tag] = finished.tokens
    return out


@pytest.mark.parametrize("method", ["ar", "mc-sjd"])
def test_engine_runs_in_inference_mode_and_hands_back_ordinary_tokens(tiny32, monkeypatch, method):
    seen = _record_forward_mode(tiny32, monkeypatch)
    tokens = _decode(tiny32, method)
    assert seen and all(seen)  # every forward (prefills included) ran in inference mode
    for t in tokens.values():
        assert not t.is_inference()
        t.add_(0)  # an inference tensor would refuse this outside inference mode


def test_a_compiled_forward_keeps_inference_mode_off_with_the_same_tokens(tiny32, monkeypatch):
    inference = _decode(tiny32, "sjd")
    monkeypatch.setattr(tiny32, "plain_tensors", True, raising=False)  # what compile_forward marks
    seen = _record_forward_mode(tiny32, monkeypatch)
    plain = _decode(tiny32, "sjd")
    assert seen and not any(seen)
    assert inference.keys() == plain.keys()
    assert all(torch.equal(inference[k], plain[k]) for k in plain)


def test_closing_the_stream_early_closes_the_engine():
    closed = []

    def steps():
        try:
            yield from range(5)
        finally:
            closed.append(True)

    stream = inference_steps(steps())
    assert next(stream) == 0
    stream.close()
    assert closed == [True]
