"""The typed hand-offs between the stages (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass

from sjd_batch.api import GenerationResult
from sjd_batch.io.prompts import BadRow, PromptRow, ShardSpec
from sjd_batch.io.records import StatsRecord


@dataclass(frozen=True)
class SampleTask:
    """One sample to produce: its input row and its seed (the row's `seed`, else blake2b(job seed, id))."""

    row: PromptRow
    seed: int


@dataclass(frozen=True)
class ShardInput:
    """What `read` hands on: the shard's work, its resume state and its rejected rows, in row order."""

    spec: ShardSpec
    tasks: list[SampleTask]  # valid rows no earlier attempt finished
    done: list[StatsRecord]  # records of samples an earlier attempt finished
    bad: list[BadRow]  # rows that cannot become samples
    order: dict[str, int]  # sample id -> position among the shard's valid rows


@dataclass(frozen=True)
class Decoded:
    """What `decode` hands on for one task: its result, or why there is none."""

    task: SampleTask
    result: GenerationResult | None
    error: str | None
    started: float  # perf_counter when the sample's decode started (for its latency)
    busy_s: float = 0.0  # engine time since the previous result: summed, the time spent in the model
