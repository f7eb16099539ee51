"""What a run reports: `JobSummary` (the outcome of one run of a job) and `JobTracker` (the live
progress bar and the summary bookkeeping that `runner.run_job` and `runner.run_local` share).

No Ray here: the runner feeds the tracker shard reports, failures and live per-shard sample counts.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from tqdm import tqdm

from sjd_batch.io.prompts import ShardSpec
from sjd_batch.io.storage import Storage
from sjd_batch.job import record_failure, sweep_partials
from sjd_batch.worker import ShardReport


@dataclass
class JobSummary:
    """The outcome of one run of a job."""

    job_id: str
    output: str
    shards_total: int
    shards_skipped: int = 0  # committed by an earlier run
    shards_committed: int = 0  # committed by this run
    failed: dict[int, str] = field(default_factory=dict)  # shard -> last error, after all retries
    samples: int = 0
    bad_rows: int = 0
    retries: int = 0
    seconds: float = 0.0
    step_compression_sum: float = 0.0
    generated: int = 0
    storage: Storage | None = field(default=None, repr=False)  # the output, for failure records

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def images_per_s(self) -> float:
        return self.generated / self.seconds if self.seconds else 0.0

    @property
    def step_compression_mean(self) -> float:
        return self.step_compression_sum / self.generated if self.generated else float("nan")

    def text(self) -> str:
        """A human summary; failed shards are listed with their last error."""
        lines = [
            f"job {self.job_id} -> {self.output}: {'OK' if self.ok else 'FAILED'}",
            f"  shards: {self.shards_total} total, {self.shards_skipped} already committed, "
            f"{self.shards_committed} committed now, {len(self.failed)} failed ({self.retries} retries)",
            f"  samples: {self.samples} written ({self.generated} generated now), "
            f"{self.bad_rows} bad rows skipped",
            f"  {self.seconds:.1f} s, {self.images_per_s:.2f} images/s, "
            f"mean step compression {self.step_compression_mean:.2f}",
        ]
        lines += [f"  shard {i} failed: {err}" for i, err in sorted(self.failed.items())]
        return "\n".join(lines)


class JobTracker:
    """Progress bar and summary bookkeeping shared by `run_job` and `run_local`."""

    def __init__(self, summary: JobSummary, todo: list[ShardSpec], progress: bool) -> None:
        self.summary, self.done = summary, 0
        self.rows = {s.index: s.num_rows for s in todo}  # shards not finished yet
        self.counted: dict[int, int] = {}  # shard -> samples shown on the bar
        self.bar = tqdm(total=sum(s.num_rows for s in todo), unit="img", disable=not progress,
                        desc=f"job {summary.job_id}", dynamic_ncols=True, file=sys.stderr)
        self._postfix()

    def progress(self, done: dict[int, int]) -> None:
        """Live samples: `done` maps running shards to their samples so far (monotone, capped)."""
        for shard, n in done.items():
            self._advance(shard, min(n, self.rows.get(shard, 0)))

    def _advance(self, shard: int, n: int) -> None:
        delta = n - self.counted.get(shard, 0)
        if delta > 0:
            self.counted[shard] = n
            self.bar.update(delta)

    def observe(self, spec: ShardSpec, report: ShardReport) -> None:
        s = self.summary
        s.shards_committed += 1
        s.samples += report.samples
        s.generated += report.generated
        s.bad_rows += report.bad_rows
        s.step_compression_sum += report.step_compression_sum
        self.done += 1
        self._advance(spec.index, spec.num_rows)
        self.rows.pop(spec.index, None)
        self._postfix()

    def fail(self, spec: ShardSpec, error: str, attempts: int) -> None:
        self.summary.failed[spec.index] = error
        record_failure(self.summary.storage, spec.index, error, attempts)
        self._advance(spec.index, spec.num_rows)
        self.rows.pop(spec.index, None)
        self._postfix()

    def _postfix(self) -> None:
        s = self.summary
        compression = f"{s.step_compression_mean:.2f}" if s.generated else "-"
        self.bar.set_postfix_str(
            f"shards {s.shards_skipped + self.done}/{s.shards_total} failed {len(s.failed)} "
            f"step_compression {compression}"
        )

    def close(self, t0: float) -> JobSummary:
        self.bar.close()
        sweep_partials(self.summary.storage)
        # Parts of uploads whose actor was killed are invisible to LIST, yet stored and billed.
        self.summary.storage.abort_multipart_uploads()
        self.summary.seconds = time.perf_counter() - t0
        return self.summary

