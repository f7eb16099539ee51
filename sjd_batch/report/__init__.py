"""`build_report`: job outputs in, one self-contained HTML page out (`sjd-batch report`).

data.py reads the outputs through the storage layer and computes the numbers, thumbs.py loads the
contact sheet's images, plots.py draws the figures (matplotlib, the `plots` extra), html.py writes the page.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sjd_batch.report.data import (
    JobOutput,
    ReportError,
    accept_lengths,
    acceptance_by_offset,
    finite,
    label_jobs,
    load_job,
    shard_spans,
    summarize,
)
from sjd_batch.report.thumbs import load_thumbs, pick_samples

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Report", "ReportError", "build_report"]

# matplotlib's default cycle (tab10), as CSS colours: a job's colour in the plots and on the page
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")


@dataclass(frozen=True)
class Report:
    """A built report: the page and what it holds."""

    html: str
    jobs: list[JobOutput]
    images: int  # contact-sheet thumbnails embedded
    plots: int


def build_report(uris: list[str], max_images: int = 48, thumb_px: int = 128,
                 progress: bool = False) -> Report:
    """Read the job outputs at `uris` and build the page.

    Raises:
        ReportError: a URI holds no job, or matplotlib is missing.
        StorageError: the store cannot be read (names the URI).
    """
    from sjd_batch.report import html, plots

    if max_images < 0 or thumb_px < 8:
        raise ValueError(f"max_images must be >= 0 and thumb_px >= 8, got {max_images} and {thumb_px}")
    plots.require_matplotlib()  # before reading anything: a missing extra is one clear message
    jobs = [load_job(uri) for uri in uris]
    label_jobs(jobs)
    colors = {j.label: PALETTE[i % len(PALETTE)] for i, j in enumerate(jobs)}
    thumbs = load_thumbs(pick_samples(jobs, max_images), thumb_px, progress=progress)

    def per_job(column: str) -> dict[str, np.ndarray]:
        return {j.label: finite(j.stats, column) for j in jobs}

    accept_lens = {j.label: accept_lengths(j.stats) for j in jobs}
    spans = {j.label: shard_spans(j) for j in jobs}
    figures = {
        "step_compression": ("step compression histogram",
                             plots.step_compression_histogram(per_job("step_compression"), colors)),
        "accept_length": ("accept length histogram", plots.accept_length_histogram(accept_lens, colors)),
        "acceptance_offset": ("acceptance by window offset", plots.acceptance_by_offset(
            {j.label: acceptance_by_offset(j.stats) for j in jobs}, colors)),
        "latency": ("latency CDF", plots.latency_cdf(per_job("latency_s"), colors)),
        "throughput": ("samples committed over time", plots.throughput(spans, colors)),
        "timeline": ("shards per actor over time", plots.shard_timeline(spans, colors)),
    }
    page = html.Page(
        jobs=jobs, colors=colors, thumbs=thumbs, samples=sum(j.stats.num_rows for j in jobs),
        max_images=max_images, thumb_px=thumb_px,
        by_job=summarize(jobs, "job"),
        plots={key: html.Plot(key, alt, png, *_png_size(png)) for key, (alt, png) in figures.items()},
        generated=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    )
    return Report(html=html.render(page), jobs=jobs, images=sum(bool(t.data) for t in thumbs),
                  plots=len(figures))


def _png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, which always starts at byte 16."""
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
