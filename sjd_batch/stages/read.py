"""Stage 1: a shard's rows -> `ShardInput` (tasks with resolved seeds, resumed records, bad rows)."""

from __future__ import annotations

from sjd_batch.decoding import sample_seed
from sjd_batch.io.ids import IdRules
from sjd_batch.io.prompts import BadRow, PromptRow, ShardSpec, read_shard
from sjd_batch.io.records import StatsRecord
from sjd_batch.stages.tasks import SampleTask, ShardInput


def read_input(spec: ShardSpec, done: dict[str, StatsRecord], job_seed: int, rules: IdRules) -> ShardInput:
    """Read the shard (an `InputError` is permanent: not worth a retry) and split off finished samples.

    Args:
        done: sample id -> record, from the shard's partial files (`ShardCommitter.done_records`).
        job_seed: `run.seed`; a sample's seed is its row's `seed`, else blake2b(job seed, sample id).
        rules: the output format's id rules (a row whose id breaks them is a bad row).
    """
    rows = read_shard(spec, rules)
    good = [r for r in rows if isinstance(r, PromptRow)]
    order = {r.sample_id: i for i, r in enumerate(good)}
    return ShardInput(
        spec=spec,
        tasks=[SampleTask(r, _seed(r, job_seed)) for r in good if r.sample_id not in done],
        done=[rec for sid, rec in done.items() if sid in order],
        bad=[r for r in rows if isinstance(r, BadRow)],
        order=order,
    )


def _seed(row: PromptRow, job_seed: int) -> int:
    return row.seed if row.seed is not None else sample_seed(job_seed, row.sample_id)
