"""The project's one throughput figure, images/s, computed here and only here (README, "Figures").

    images/s = images made / seconds of the span that made them

- images made: samples that got an image (stats rows without an `error`; a refused prompt is not an
  image);
- the span, for a job's output: per job, from the first shard's start to the last shard's commit
  (`started_at`, `finished_at` of the commit markers), summed over jobs, so the gap between two jobs
  run one after another does not count, and every actor of the pool counts at once. For a process that
  decodes a list of prompts itself (`bench`, `autotune`), the span is prompts in to images out.

Model loading, actor start-up and planning lie outside the span: the figure is the steady rate of the
pool, which is what a longer job of the same kind would sustain.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def span_seconds(spans: Iterable[tuple[float | None, float | None]]) -> float | None:
    """Last end minus first start of one job's (start, end) pairs; pairs missing a time are left out."""
    timed = [(s, e) for s, e in spans if s is not None and e is not None]
    if not timed:
        return None
    return max(e for _, e in timed) - min(s for s, _ in timed)


def jobs_seconds(spans_by_job: Mapping[str, Iterable[tuple[float | None, float | None]]]) -> float | None:
    """The span of each job, summed over jobs (None when no job has a timed shard)."""
    spans = [span_seconds(pairs) for pairs in spans_by_job.values()]
    total = sum(s for s in spans if s is not None)
    return total if any(s is not None for s in spans) else None


def images_per_s(images: int, seconds: float | None) -> float | None:
    """Images over seconds; None when there is no span to divide by."""
    return images / seconds if seconds and seconds > 0 else None
