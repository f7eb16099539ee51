"""What a run reports: `JobSummary` (the outcome of one run of a job) and `JobTracker` (the live
progress bar and the summary bookkeeping that `runner.run_job` and `driver.run_local` share).

No Ray here: the drivers feed the tracker shard reports, retries, failures and live per-shard sample
counts, through its five methods; nothing else of it is theirs to touch.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from tqdm import tqdm

from sjd_batch import throughput
from sjd_batch.io.commit_log import CommitLog, LoggedCommit
from sjd_batch.io.prompts import ShardSpec
from sjd_batch.io.storage import Storage, StorageError
from sjd_batch.job import PreparedJob, record_failure, sweep_partials
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
    failed_samples: int = 0  # samples recorded with an error instead of an image
    retries: int = 0
    seconds: float = 0.0  # the whole run: planning, actor start and model loading included
    spans: list[tuple[float, float]] = field(default_factory=list)  # shards committed now: (start, end)
    step_compression_sum: float = 0.0
    generated: int = 0
    compaction_hint: str = ""  # when the output's stats are many small files (see `compaction_hint`)
    unrecorded: list[str] = field(default_factory=list)  # bookkeeping writes the store refused (an outage)

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def complete_before(self) -> bool:
        """Every shard was committed by earlier runs: this run had nothing to do."""
        return self.shards_skipped == self.shards_total

    @property
    def images_per_s(self) -> float | None:
        """The one images/s (`throughput.py`): images made now over the span of the shards that made them."""
        return throughput.images_per_s(self.generated, throughput.span_seconds(self.spans))

    @property
    def step_compression_mean(self) -> float:
        return self.step_compression_sum / self.generated if self.generated else float("nan")

    def text(self, command: str = "") -> str:
        """A human summary; failed shards are listed with their last error, then what was left
        unrecorded and, when shards are missing, the next step (`command`: how this run was started)."""
        lines = [
            f"job {self.job_id} -> {self.output}: {'OK' if self.ok else 'FAILED'}",
            f"  shards: {self.shards_total} total, {self.shards_skipped} already committed, "
            f"{self.shards_committed} committed now, {len(self.failed)} failed ({self.retries} retries)",
        ]
        if self.complete_before:
            lines.append("  the job was already complete: every shard is committed, nothing was written")
            return "\n".join(lines)
        lines += [
            f"  samples: {self.samples} written ({self.generated} generated now), "
            f"{self.bad_rows} bad rows skipped, {self.failed_samples} samples failed",
            f"  {self.seconds:.1f} s in all, {_rate(self.images_per_s)} images/s (over "
            f"{throughput.span_seconds(self.spans) or 0:.1f} s of shards), "
            f"mean step compression {self.step_compression_mean:.2f}",
        ]
        lines += [f"  shard {i} failed: {err}" for i, err in sorted(self.failed.items())]
        lines += [f"  could not {what}" for what in self.unrecorded]
        if self.compaction_hint:
            lines.append(f"  {self.compaction_hint}")
        if not self.ok:
            lines.append(self._next_step(command))
        return "\n".join(lines)

    def _next_step(self, command: str) -> str:
        done = self.shards_skipped + self.shards_committed
        rerun = f"rerun the same command ({command})" if command else "rerun the job"
        return (f"  {done} of {self.shards_total} shards are committed and stay as they are; {rerun} once "
                f"the cause above is fixed: it resumes with the {self.shards_total - done} shards left")


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


class JobTracker:
    """Progress bar and summary bookkeeping shared by `run_job` and `run_local`."""

    def __init__(self, job: PreparedJob, progress: bool) -> None:
        import numpy as np

        self.storage, self.plan, self.done = job.storage, job.plan, 0
        todo = job.todo_count
        self.summary = JobSummary(job.job_id, job.storage.uri, len(job.plan),
                                  shards_skipped=len(job.plan) - todo)
        self.finished = np.zeros(len(job.plan), dtype=bool)  # by this run: later progress is stale
        self.counted: dict[int, int] = {}  # running shard -> samples shown on the bar
        self.log = CommitLog(job.storage)  # what this run sees committed, for the next run's resume
        if todo:
            self.log.merge()
        self.bar = tqdm(total=job.todo_rows, unit="img", disable=not progress,
                        desc=f"job {job.job_id}", dynamic_ncols=True, file=sys.stderr)
        self._postfix()

    def progress(self, done: dict[int, int]) -> None:
        """Live samples: `done` maps running shards to their samples so far (monotone, capped)."""
        for shard, n in done.items():
            if 0 <= shard < len(self.plan) and not self.finished[shard]:
                self._advance(shard, min(n, self.plan[shard].num_rows))

    def _advance(self, shard: int, n: int) -> None:
        delta = n - self.counted.get(shard, 0)
        if delta > 0:
            self.counted[shard] = n
            self.bar.update(delta)

    def observe(self, spec: ShardSpec, report: ShardReport) -> None:
        """A shard finished (committed now, or found committed by an earlier attempt)."""
        s = self.summary
        if report.committed:
            s.shards_committed += 1
        else:  # committed by an earlier run that the commit log had not recorded
            s.shards_skipped += 1
        s.samples += report.samples
        s.generated += report.generated
        s.bad_rows += report.bad_rows
        s.failed_samples += report.failed
        s.step_compression_sum += report.step_compression_sum
        if report.committed:
            s.spans.append((report.started_at, report.finished_at))
        self.done += 1
        # A shard found committed (by an earlier attempt) is logged with zeros: its counts are its marker's.
        self.log.add(LoggedCommit(spec.index, report.samples, report.bad_rows,
                                  report.seconds if report.committed else 0.0))
        self._finish(spec)

    def retry(self, spec: ShardSpec, attempt: int, error: str) -> None:
        """Attempt `attempt` of a shard failed and the shard goes back in the queue."""
        self.summary.retries += 1
        self.bar.write(f"shard {spec.index} attempt {attempt} failed, retrying: {error}")

    def fail(self, spec: ShardSpec, error: str, attempts: int) -> None:
        """A shard failed for good (after `attempts` attempts); `status` reports it until it commits."""
        self.summary.failed[spec.index] = error
        self._bookkeep(f"record shard {spec.index}'s failure for `status`", record_failure, self.storage,
                       spec.index, error, attempts)
        self._finish(spec)

    def _bookkeep(self, what: str, write: Callable[..., Any], *args: Any) -> Any:
        """Run a bookkeeping write; when the store refuses it (a long outage), note it for the summary
        instead of ending the run without one. Committed shards never depend on these writes."""
        try:
            return write(*args)
        except StorageError as e:
            self.summary.unrecorded.append(f"{what}: {e}")
            return None

    def _finish(self, spec: ShardSpec) -> None:
        self._advance(spec.index, spec.num_rows)
        self.counted.pop(spec.index, None)
        self.finished[spec.index] = True
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
        # Each step below is bookkeeping: when the store is down, the summary says what was skipped.
        self._bookkeep("write the commit log (the next run relearns those commits from the markers)",
                       self.log.flush)
        hint = self._bookkeep("check whether compaction would help", compaction_hint, self.storage,
                              self.summary)
        self.summary.compaction_hint = hint or ""
        # Leftovers of shards committed by a killed worker; a later run sweeps them.
        self._bookkeep("delete committed shards' leftover partial files (a later run does)", sweep_partials,
                       self.storage)
        # Parts of uploads whose actor was killed are invisible to LIST, yet stored and billed.
        self._bookkeep("abort unfinished multipart uploads (a later run does)",
                       self.storage.abort_multipart_uploads)
        self.summary.seconds = time.perf_counter() - t0
        return self.summary


COMPACT_FROM = 1000  # per-shard stats files from which `sjd-batch compact` is worth suggesting


def compaction_hint(storage: Storage, summary: JobSummary) -> str:
    """A line saying when the stats are many small files that `sjd-batch compact` would merge."""
    from sjd_batch.io.compaction import latest_manifest

    committed = summary.shards_skipped + summary.shards_committed
    if committed < COMPACT_FROM:
        return ""
    manifest = latest_manifest(storage, "stats")
    covered = sum(hi - lo for lo, hi in manifest.covered) if manifest else 0
    small = committed - covered
    if small < COMPACT_FROM:
        return ""
    return (f"stats: {small:,} per-shard files not compacted; `sjd-batch compact {storage.uri}` merges them "
            "into a few large ones (DuckDB, Polars and S3 listings slow down on many small files)")
