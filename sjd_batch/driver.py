"""What every run of a job does around its shards, with Ray or without: the queue of shard attempts,
the retry policy, and `run_local`, which runs the plan in this process.

`runner.run_job` drives the same `ShardQueue` with a pool of Ray actors; both hand each finished
attempt to `ShardQueue.settle` as a `ShardOutcome`, and the queue tells the tracker.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Iterable

from sjd_batch.config import JobConfig
from sjd_batch.io.prompts import InputError, ShardSpec
from sjd_batch.job import PreparedJob, prepare_job
from sjd_batch.progress import JobSummary, JobTracker
from sjd_batch.worker import ShardReport, ShardWorker


@dataclass(frozen=True)
class ShardOutcome:
    """How one attempt of a shard ended: a report, or an error (permanent: not worth a retry)."""

    spec: ShardSpec
    attempt: int
    report: ShardReport | None = None
    error: str = ""
    permanent: bool = False


class ShardQueue:
    """Shard attempts still to run: the shards left, taken from the plan as they are needed (never a
    list of every shard), then the retries; a failed attempt is queued again up to `max_retries` times."""

    def __init__(self, todo: Iterable[ShardSpec], count: int, max_retries: int, tracker: JobTracker) -> None:
        self.fresh, self.unstarted = iter(todo), count
        self.retries: collections.deque[tuple[ShardSpec, int]] = collections.deque()
        self.max_retries, self.tracker = max_retries, tracker

    def __bool__(self) -> bool:
        return self.unstarted > 0 or bool(self.retries)

    def __len__(self) -> int:
        return self.unstarted + len(self.retries)

    def pop(self) -> tuple[ShardSpec, int]:
        if self.unstarted > 0:
            self.unstarted -= 1
            return next(self.fresh), 0
        return self.retries.popleft()

    def settle(self, outcome: ShardOutcome) -> None:
        """Count a finished attempt, or retry its shard, or report it failed for good."""
        spec, attempt = outcome.spec, outcome.attempt
        if outcome.report is not None:
            self.tracker.observe(spec, outcome.report)
        elif outcome.permanent or attempt >= self.max_retries:
            self.tracker.fail(spec, outcome.error, attempt + 1)
        else:
            self.tracker.retry(spec, attempt, outcome.error)
            self.retries.append((spec, attempt + 1))

    def fail_all(self, error: str) -> None:
        """Nothing can run the rest (e.g. no actor could start): report every queued shard failed."""
        while self:
            spec, attempt = self.pop()
            self.tracker.fail(spec, error, attempt)


def run_local(config: JobConfig, progress: bool = True, plan: PreparedJob | None = None) -> JobSummary:
    """Run (or resume) a job in this process, shard after shard, with the same retries but no Ray.

    `plan`: from `job.prepare_job(config)`, when the caller prepared it already.
    """
    t0 = time.perf_counter()
    plan = plan or prepare_job(config)
    tracker = JobTracker(plan, progress)
    queue = ShardQueue(plan.todo(), plan.todo_count, config.run.max_retries, tracker)
    worker = ShardWorker(config, plan.job_id) if queue else None
    while queue and worker is not None:
        spec, attempt = queue.pop()
        try:
            report = worker.run_shard(spec, attempt, lambda s, n: tracker.progress({s: n}))
            queue.settle(ShardOutcome(spec, attempt, report))
        except Exception as e:  # noqa: BLE001 - any shard failure is retried, then reported
            queue.settle(ShardOutcome(spec, attempt, error=describe(e), permanent=isinstance(e, InputError)))
    return tracker.close(t0)


def describe(e: BaseException, limit: int = 600) -> str:
    """One readable line of an exception, shortened in the middle past `limit` characters."""
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= limit else text[: limit // 2] + " ... " + text[-limit // 2 :]
