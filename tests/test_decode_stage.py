"""The decode stage: one engine thread shared by every call (the shards an actor holds at once)."""

from __future__ import annotations

import concurrent.futures as cf
from typing import Any

import pytest

import sjd_batch
import sjd_batch.stages.decode as decode_stage
from sjd_batch.decoding import resolve_method
from sjd_batch.io.prompts import PromptRow
from sjd_batch.stages.decode import DecodeStage
from sjd_batch.stages.tasks import SampleTask


@pytest.fixture(scope="module")
def model() -> Any:
    return sjd_batch.load_model("tiny-random")


def _tasks(prefix: str, n: int) -> list[SampleTask]:
    return [SampleTask(PromptRow(f"{prefix}{i}", f"a red circle {i}", None, None, "in.parquet", i), 100 + i)
            for i in range(n)]


def _stage(model: Any) -> DecodeStage:
    return DecodeStage(model, model.default_sampling, resolve_method("sjd", window=4), 2)


def _tokens(stage: DecodeStage, tasks: list[SampleTask]) -> dict[str, list[int]]:
    return {d.task.row.sample_id: d.result.tokens.tolist() for d in stage(tasks)}


def test_calls_at_once_get_exactly_their_own_samples_with_unchanged_tokens(model: Any) -> None:
    a, b = _tasks("a", 5), _tasks("b", 3)
    alone = _stage(model)
    expected = {**_tokens(alone, a), **_tokens(alone, b)}
    shared = _stage(model)
    with cf.ThreadPoolExecutor(2) as pool:
        got_a, got_b = pool.map(lambda t: _tokens(shared, t), [a, b])
    assert set(got_a) == {t.row.sample_id for t in a} and set(got_b) == {t.row.sample_id for t in b}
    assert {**got_a, **got_b} == expected
    alone.close()
    shared.close()


def test_an_engine_error_reaches_every_waiting_call_and_the_next_call_starts_afresh(
        model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = decode_stage.generate_stream, []

    def breaks_once(*args: Any, **kwargs: Any) -> Any:  # the real engine; its first run dies mid-way
        calls.append(1)
        stream = real(*args, **kwargs)
        if len(calls) == 1:
            yield next(stream)
            raise RuntimeError("engine bug")
        yield from stream

    monkeypatch.setattr(decode_stage, "generate_stream", breaks_once)
    stage = _stage(model)
    first, second = stage(_tasks("a", 4)), stage(_tasks("b", 4))  # both queued on the same engine
    for call in (first, second):
        with pytest.raises(RuntimeError, match="engine bug"):
            list(call)
    assert len(_tokens(stage, _tasks("c", 3))) == 3 and len(calls) == 2  # a new engine serves it
    stage.close()


def test_closing_a_call_early_drops_its_queued_tasks(model: Any) -> None:
    stage = _stage(model)
    stream = stage(_tasks("a", 8))
    next(stream)
    stream.close()  # the shard attempt gave up: its other 7 are dropped, never handed to another call
    assert set(_tokens(stage, _tasks("b", 2))) == {"b0", "b1"}
    stage.close()
