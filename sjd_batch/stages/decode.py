"""Stage 2: a stream of `SampleTask`s in, a stream of `Decoded` out.

The interface is a stream so that the batching policy stays inside this stage: the engine keeps
`batch_size` samples in flight and refills a slot as soon as its sample finishes. Outputs come in
finishing order; every task comes out exactly once.
"""

from __future__ import annotations

import time
from typing import Iterable, Iterator

from sjd_batch.api import GenerationResult, generate_stream
from sjd_batch.decoding import DecodeConfig, ImageTokenModel, Request, SamplingConfig
from sjd_batch.stages.tasks import Decoded, SampleTask


class DecodeStage:
    """Decodes tasks with one model and fixed, already resolved settings, `batch_size` in flight."""

    def __init__(self, model: ImageTokenModel, sampling: SamplingConfig, method: DecodeConfig,
                 batch_size: int) -> None:
        self.model, self.sampling, self.method, self.batch_size = model, sampling, method, batch_size
        self.busy_s = 0.0  # seconds spent in the model (prompt encoding, decoding, pixels), all calls

    def __call__(self, tasks: Iterable[SampleTask]) -> Iterator[Decoded]:
        """Continuous batching (decoding/engine.py): a finished sample's slot takes the next task at once.

        A prompt the model rejects (`PromptRejected`: too many tokens, an unsupported negative prompt)
        fails alone, with its reason in the stats `error` column. Any other error is a bug and
        propagates: it fails the shard attempt rather than become a silently skipped sample.
        """
        requests = (Request(t.row.prompt, t.seed, t.row.negative_prompt, tag=t) for t in tasks)
        for request, result in self._timed(generate_stream(self.model, requests, self.sampling, self.method,
                                                           self.batch_size)):
            if result.error is not None:
                why = f"the model rejected the prompt: {result.error}"
                yield Decoded(request.tag, None, why, time.perf_counter())
                continue
            s = result.stats
            started = time.perf_counter() - (s.prefill_s + s.decode_s + s.pixel_s)
            result.sample_id = request.tag.row.sample_id
            yield Decoded(request.tag, result, None, started)

    def _timed(self, stream: Iterator[tuple[Request, GenerationResult]]
               ) -> Iterator[tuple[Request, GenerationResult]]:
        """The stream, with the time spent producing each item (in the engine, not in our consumer)
        added to `busy_s`."""
        while True:
            t0 = time.perf_counter()
            try:
                item = next(stream)
            except StopIteration:
                self.busy_s += time.perf_counter() - t0
                return
            self.busy_s += time.perf_counter() - t0
            yield item
