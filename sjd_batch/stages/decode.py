"""Stage 2: a stream of `SampleTask`s in, a stream of `Decoded` out.

The interface is a stream so that the batching policy stays inside this stage: today it cuts the
stream into batches of `batch_size`; continuous batching keeps `batch_size` rows in flight and refills
a slot as soon as its row finishes, with no change to the stages around it. Outputs may come in any
order; every task comes out exactly once.
"""

from __future__ import annotations

import itertools
import time
from typing import Iterable, Iterator

from sjd_batch.api import GenerationResult, generate_batch
from sjd_batch.decoding import DecodeConfig, ImageTokenModel, SamplingConfig
from sjd_batch.decoding.protocol import PromptRejected
from sjd_batch.stages.tasks import Decoded, SampleTask


class DecodeStage:
    """Decodes tasks with one model and fixed, already resolved settings."""

    def __init__(self, model: ImageTokenModel, sampling: SamplingConfig, method: DecodeConfig,
                 batch_size: int) -> None:
        self.model, self.sampling, self.method, self.batch_size = model, sampling, method, batch_size
        self.busy_s = 0.0  # seconds spent in the model (prompt encoding, decoding, pixels), all calls

    def __call__(self, tasks: Iterable[SampleTask]) -> Iterator[Decoded]:
        stream = iter(tasks)
        while batch := list(itertools.islice(stream, self.batch_size)):
            started = time.perf_counter()
            for task, result, error in self._batch(batch):
                yield Decoded(task, result, error, started)

    def _batch(self, batch: list[SampleTask]) -> list[tuple[SampleTask, GenerationResult | None, str | None]]:
        """Run one batch; if the model rejects a prompt, rerun row by row so the rejected row fails
        alone (its reason goes to the stats `error` column). Only `PromptRejected` is caught: any other
        error is a bug, and must fail the shard attempt rather than become a silently skipped sample."""
        try:
            return [(t, r, None) for t, r in zip(batch, self._generate(batch), strict=True)]
        except PromptRejected as e:
            if len(batch) == 1:
                return [(batch[0], None, f"the model rejected the prompt: {e}")]
        return [out for task in batch for out in self._batch([task])]

    def _generate(self, batch: list[SampleTask]) -> list[GenerationResult]:
        rows = [t.row for t in batch]
        negatives = [r.negative_prompt for r in rows] if any(r.negative_prompt for r in rows) else None
        t0 = time.perf_counter()
        try:
            return generate_batch(
                self.model, [r.prompt for r in rows], negatives, [r.sample_id for r in rows],
                [t.seed for t in batch], self.sampling, self.method,
            )
        finally:
            self.busy_s += time.perf_counter() - t0
