"""Stage 2: a stream of `SampleTask`s in, a stream of `Decoded` out.

One engine serves every shard of a worker, back to back. Each call hands its shard's tasks to the
engine's thread and reads its own results back; the engine keeps `batch_size` samples in flight and
refills a slot as soon as its sample finishes, from whichever shard is next. So when a shard's last
samples are decoding, the next shard (the runner keeps two in flight per actor) already fills the
slots they leave: a shard boundary no longer drains the batch. A per-shard stream drained 4 slots
every 8 samples and cost 15-18% more decode time per sample on shapes-t2i (378-390 ms against 330 ms
for one stream; docs/benchmarks.md, "Runner").

Outputs come in finishing order; every task of a call comes out exactly once. A sample's tokens
depend only on its seed and prompt, not on the samples it shares the batch with (tests/decoding,
"stream equals alone"), so mixing shards in one batch changes no image.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from sjd_batch.api import GenerationResult, generate_stream
from sjd_batch.decoding import HOLD, DecodeConfig, ImageTokenModel, Request, SamplingConfig
from sjd_batch.stages.tasks import Decoded, SampleTask

IDLE_EXIT_S = 5.0  # an engine thread with nothing to do for this long ends (a new call starts another)


@dataclass(eq=False)
class _Ticket:
    """One call's handle: where its results go, and whether it stopped listening."""

    inbox: queue.Queue  # the engine thread it queued its tasks to
    outbox: queue.Queue = field(default_factory=queue.Queue)
    cancelled: bool = False


@dataclass(frozen=True)
class _Job:
    task: SampleTask
    ticket: _Ticket

    def __str__(self) -> str:  # what `generate_stream` names the result by
        return self.task.row.sample_id


_STOP = object()


class DecodeStage:
    """Decodes tasks with one model and fixed, already resolved settings, `batch_size` in flight,
    in one engine thread shared by every call (calls may come from several threads at once)."""

    def __init__(self, model: ImageTokenModel, sampling: SamplingConfig, method: DecodeConfig,
                 batch_size: int) -> None:
        self.model, self.sampling, self.method, self.batch_size = model, sampling, method, batch_size
        self._lock = threading.Lock()
        self._inbox: queue.Queue | None = None  # the running engine thread's, None when there is none
        self._tickets: set[_Ticket] = set()  # calls still waiting for results

    def __call__(self, tasks: Iterable[SampleTask]) -> Iterator[Decoded]:
        """The decoded tasks, in finishing order. The tasks are queued now, before the first `next`.

        A prompt the model rejects (`PromptRejected`: too many tokens, an unsupported negative prompt)
        fails alone, with its reason in the stats `error` column. Any other error is a bug and
        propagates, to every call waiting on the engine: it fails their shard attempts rather than
        become a silently skipped sample. Closing the iterator early drops the call's queued tasks.
        """
        tasks = list(tasks)
        with self._lock:
            if self._inbox is None:
                self._inbox = queue.Queue()
                # not a daemon: at exit Python waits the few idle seconds for it to end, instead of
                # freeing its tensors during interpreter shutdown (which aborted a pytest run in Ray)
                threading.Thread(target=self._serve, args=(self._inbox,), name="decode", daemon=False).start()
            ticket = _Ticket(self._inbox)
            self._tickets.add(ticket)
            for task in tasks:
                self._inbox.put(_Job(task, ticket))
        return self._results(ticket, len(tasks))

    def _results(self, ticket: _Ticket, count: int) -> Iterator[Decoded]:
        try:
            for _ in range(count):
                item = ticket.outbox.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            ticket.cancelled = True
            with self._lock:
                self._tickets.discard(ticket)

    def close(self) -> None:
        """End the engine thread once what it holds is done (it also ends by itself when idle)."""
        with self._lock:
            if self._inbox is not None:  # what is queued before the stop is still served;
                self._inbox.put(_STOP)  # a later call starts a new thread
                self._inbox = None

    def _serve(self, inbox: queue.Queue) -> None:
        """The engine thread: decode whatever the calls queue, route each result to its call."""
        state = {"outstanding": 0, "waited": 0.0}  # handed to the engine and not yet back; idle seconds
        try:
            stream = generate_stream(self.model, self._source(inbox, state), self.sampling, self.method,
                                     self.batch_size)
            t0 = time.perf_counter()
            for request, result in stream:
                # the engine's time for this result, less the time it sat empty waiting for a task
                busy, state["waited"] = time.perf_counter() - t0 - state["waited"], 0.0
                state["outstanding"] -= 1
                job: _Job = request.tag
                if not job.ticket.cancelled:
                    job.ticket.outbox.put(_decoded(job.task, result, busy))
                t0 = time.perf_counter()
        except BaseException as e:  # noqa: BLE001 - handed to every waiting call, which re-raises it
            with self._lock:
                if self._inbox is inbox:
                    self._inbox = None
                for ticket in self._tickets:
                    if ticket.inbox is inbox:
                        ticket.outbox.put(e)

    def _source(self, inbox: queue.Queue, state: dict[str, int]) -> Iterator[object]:
        """The engine's requests: a queued task, HOLD while the engine has work and nothing is queued,
        or the end (after `IDLE_EXIT_S` idle, or `close`). Blocks only when the engine is empty."""
        while True:
            try:
                if state["outstanding"]:
                    job = inbox.get_nowait()
                else:
                    t0 = time.perf_counter()
                    try:
                        job = inbox.get(timeout=IDLE_EXIT_S)
                    finally:
                        state["waited"] += time.perf_counter() - t0
            except queue.Empty:
                if state["outstanding"]:
                    yield HOLD
                    continue
                with self._lock:  # nobody can queue work for this thread once it is no longer current
                    if inbox.empty():
                        if self._inbox is inbox:
                            self._inbox = None
                        return
                continue
            if job is _STOP:
                with self._lock:
                    if self._inbox is inbox:
                        self._inbox = None
                return
            if job.ticket.cancelled:
                continue
            state["outstanding"] += 1
            row = job.task.row
            yield Request(row.prompt, job.task.seed, row.negative_prompt, tag=job)


def _decoded(task: SampleTask, result: GenerationResult, busy_s: float) -> Decoded:
    if result.error is not None:
        return Decoded(task, None, f"the model rejected the prompt: {result.error}", time.perf_counter(),
                       busy_s)
    s = result.stats
    started = time.perf_counter() - (s.prefill_s + s.decode_s + s.pixel_s)
    result.sample_id = task.row.sample_id
    return Decoded(task, result, None, started, busy_s)
