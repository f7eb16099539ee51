"""`model.compile`: the job key, and a compiled forward that decodes exactly like the eager one."""

from __future__ import annotations

import pytest
import torch

import sjd_batch
from sjd_batch.config import ConfigError, parse_job
from sjd_batch.identity import job_id
from sjd_batch.models.compiled import compile_forward

JOB = {"name": "c", "model": {"name": "tiny-random"}, "input": {"uris": ["p.parquet"]},
       "output": {"uri": "out"}}


def test_compile_key_parses_and_is_part_of_the_job_id() -> None:
    plain = parse_job(JOB)
    off = parse_job({**JOB, "model": {"name": "tiny-random", "compile": False}})
    on = parse_job({**JOB, "model": {"name": "tiny-random", "compile": True}})
    assert on.model.compile and not off.model.compile
    assert job_id(plain, []) == job_id(off, []) != job_id(on, [])
    with pytest.raises(ConfigError, match="model.compile"):
        parse_job({**JOB, "model": {"name": "tiny-random", "compile": "yes"}})


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny-random", "shapes-t2i"])  # shapes-t2i: the grid-position path
def test_compiled_forward_decodes_like_eager(name: str) -> None:
    """Greedy SJD through a compiled forward (inductor on CPU: slow to compile) equals the eager run."""
    prompts = ["a large red circle at top left", "a small blue square at center and a red cross at top right"]
    eager = sjd_batch.load_model(name)
    compiled = compile_forward(sjd_batch.load_model(name))
    for method in ("ar", "sjd"):
        a = sjd_batch.generate(eager, prompts, method=method, seed=0, temperature=0.0, decode_images=False)
        b = sjd_batch.generate(compiled, prompts, method=method, seed=0, temperature=0.0, decode_images=False)
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x.tokens, y.tokens)
