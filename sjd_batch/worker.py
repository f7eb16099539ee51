"""`ShardWorker`: turns one prompt shard into images, a stats file and a commit marker.

The callable-class idiom of `ray.data.llm`: `__init__` loads the model once, each call runs one
shard. The worker never sees Ray: the runner passes in the actor and node names it should record.

Exactly once, per shard (infra.md §4): every image and the stats file are written first and the
commit marker last, so a reader that trusts committed shards only never sees a partial shard.
Inside an uncommitted shard, a batch of samples is done once its *partial file* (the batch's stats
rows as JSON, written after all its images) exists; a retry skips done samples and regenerates the
rest. One partial file per batch, not per sample, keeps the writes per sample close to one. Seeds are a pure
function of (job seed, sample id), so a retry reproduces the same images bit for bit.

Also here: the device and precision choice of a worker. The job-level side of the output (`job.json`,
failure records, sweeping partial files) lives in `sjd_batch.job`.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable

import torch

from sjd_batch.api import GenerationResult, generate
from sjd_batch.config import JobConfig, redact_uri
from sjd_batch.decoding import sample_seed
from sjd_batch.io import results
from sjd_batch.io.ids import IdRules
from sjd_batch.io.prompts import BadRow, PromptRow, ShardSpec, read_shard
from sjd_batch.io.storage import Storage
from sjd_batch.job import PARTIAL_PREFIX

log = logging.getLogger(__name__)

# Timing and placement columns: the only ones allowed to differ between two runs of one job.
# (batch_size too: a resumed shard decodes its remaining samples in other batches, with the same results.)
VOLATILE_COLUMNS = ("prefill_s", "decode_s", "pixel_s", "encode_s", "upload_s", "latency_s", "actor", "node",
                    "attempt", "batch_size")


@dataclass(frozen=True)
class ShardReport:
    """What one `run_shard` call did."""

    shard: int
    attempt: int
    samples: int  # stats rows written: generated now plus resumed
    generated: int  # samples decoded in this attempt
    resumed: int  # samples found done by an earlier attempt
    bad_rows: int  # rows skipped and recorded in the errors file
    committed: bool  # False when the shard was already committed (by an earlier attempt)
    seconds: float
    step_compression_sum: float  # over the generated samples (the runner keeps a running mean)
    actor: str
    node: str


Progress = Callable[[int, int], None]  # (shard, samples done so far in it)

class ShardWorker:
    """Loads the model once; `run_shard(spec, attempt)` (or calling it) processes one shard."""

    def __init__(self, config: JobConfig, actor: str = "local", node: str = "local") -> None:
        from sjd_batch.models.registry import load_model

        self.config, self.actor, self.node = config, actor, node
        self.job_id = config.job_id
        self.tar = config.output.image_format == "webdataset"
        self.id_rules = IdRules.for_format(config.output.image_format)
        self.device = _pick_device(config.model.device)
        _set_precision_flags(self.device, config.run.cpus_per_actor)
        model = config.model
        self.model = load_model(model.name, self.device, model.dtype, dict(model.options))
        if model.compile:
            from sjd_batch.models.compiled import compile_forward

            self.model = compile_forward(self.model)
        self.storage = Storage.from_uri(config.output.uri)

    def __call__(self, spec: ShardSpec, attempt: int = 0) -> ShardReport:
        return self.run_shard(spec, attempt)

    def run_shard(self, spec: ShardSpec, attempt: int = 0, progress: Progress | None = None) -> ShardReport:
        """Generate, upload, write stats (+errors), then commit. Idempotent across attempts.

        `progress(shard, samples_done)` is called after each batch (for live progress bars).
        """
        t0, started_at = time.perf_counter(), time.time()
        if self.storage.exists(results.commit_key(spec.index)):  # one HEAD, not a read of every marker
            return self._report(spec, attempt, [], 0, 0, False, t0)
        # InputError (corrupt file, no `prompt`) is permanent: not retried. Ids follow the format's rules.
        rows = read_shard(spec, self.id_rules)
        good = [r for r in rows if isinstance(r, PromptRow)]
        bad = [r for r in rows if isinstance(r, BadRow)]
        done = self._done_samples(spec.index)
        report = (lambda n: progress(spec.index, len(done) + n)) if progress else (lambda n: None)
        todo = [r for r in good if r.sample_id not in done]
        fresh, failed = self._generate_all(spec, todo, attempt, report)
        order = {r.sample_id: i for i, r in enumerate(good)}
        stats_rows = sorted((r for r in [*done.values(), *fresh] if r["sample_id"] in order),
                            key=lambda r: order[r["sample_id"]])
        if self.tar:
            self._write_tar(spec.index, stats_rows)
        timing = {"started_at": started_at, "finished_at": time.time(), "seconds": time.perf_counter() - t0}
        committed = self._commit(spec, attempt, stats_rows, sorted(bad + failed, key=lambda b: b.row), timing)
        self._cleanup_partials(spec.index)
        return self._report(spec, attempt, fresh, len(stats_rows) - len(fresh), len(bad) + len(failed),
                            committed, t0, total=len(stats_rows))

    def _generate_all(self, spec: ShardSpec, todo: list[PromptRow], attempt: int,
                      report: Callable[[int], None]) -> tuple[list, list]:
        """Decode in batches while thread pools encode and upload the previous batches' images."""
        cfg, failed = self.config, []
        futures: list[cf.Future] = []
        with cf.ThreadPoolExecutor(cfg.run.upload_threads, thread_name_prefix="upload") as images, \
                cf.ThreadPoolExecutor(2, thread_name_prefix="batch") as batches:
            for start in range(0, len(todo), cfg.run.batch_size):
                chunk, t_batch = todo[start : start + cfg.run.batch_size], time.perf_counter()
                outputs, errors = self._generate_batch(chunk)
                failed += [BadRow(r.sample_id, r.source, r.row, why) for r, why in errors]
                uploads = [images.submit(self._save_image, spec, row, out, attempt, t_batch)
                           for row, out in outputs]
                futures.append(batches.submit(self._finish_batch, spec.index, uploads))
                report(start + len(chunk))
                # Bound the images held in memory: at most two batches wait for upload.
                while sum(not f.done() for f in futures) > 2:
                    cf.wait(futures, return_when=cf.FIRST_COMPLETED)
            rows = [r for f in futures for r in f.result()]  # re-raises an upload failure (after IO retries)
        return rows, failed

    def _generate_batch(self, chunk: list[PromptRow]) -> tuple[list, list]:
        """Run one batch; if the engine rejects it, rerun row by row so one bad row fails alone."""
        try:
            return list(zip(chunk, self._generate(chunk), strict=True)), []
        except (ValueError, TypeError) as e:
            if len(chunk) == 1:
                return [], [(chunk[0], f"generate rejected the row: {type(e).__name__}: {e}")]
        outputs, errors = [], []
        for row in chunk:
            ok, err = self._generate_batch([row])
            outputs += ok
            errors += err
        return outputs, errors

    def _generate(self, chunk: list[PromptRow]) -> list[GenerationResult]:
        cfg = self.config
        negatives = [r.negative_prompt for r in chunk] if any(r.negative_prompt for r in chunk) else None
        return generate(
            self.model,
            [r.prompt for r in chunk],
            cfg.method.name,
            seed=cfg.run.seed,
            batch_size=cfg.run.batch_size,
            negative_prompts=negatives,
            sample_ids=[r.sample_id for r in chunk],
            seeds=[r.seed if r.seed is not None else sample_seed(cfg.run.seed, r.sample_id) for r in chunk],
            **cfg.generate_params,
        )

    def _save_image(self, spec: ShardSpec, row: PromptRow, out: GenerationResult, attempt: int,
                    t_batch: float) -> dict:
        """Encode and upload one image; returns its stats row."""
        t0 = time.perf_counter()
        png = results.encode_png(out.pixels)
        t1 = time.perf_counter()
        self.storage.write_bytes(self._image_dest(spec.index, row.sample_id), png)
        t2 = time.perf_counter()
        return {
            "job_id": self.job_id, "shard": spec.index, "sample_id": row.sample_id, "prompt": row.prompt,
            "negative_prompt": row.negative_prompt, "seed": int64_seed(out.seed), "source": row.source,
            "row": row.row, "image_key": self._image_ref(spec.index, row.sample_id),
            "model": self.config.model.name, **out.stats.to_row(), "encode_s": t1 - t0, "upload_s": t2 - t1,
            "latency_s": t2 - t_batch, "actor": self.actor, "node": self.node, "attempt": attempt,
        }

    def _finish_batch(self, shard: int, uploads: list[cf.Future]) -> list[dict]:
        """Once every image of a batch is stored, one partial file marks the whole batch done."""
        records = [u.result() for u in uploads]
        if records:
            key = f"{PARTIAL_PREFIX}/{shard:06d}/rows-{records[0]['row']:012d}.json"
            self.storage.write_bytes(key, json.dumps(records).encode())
        return records

    def _image_ref(self, shard: int, sample_id: str) -> str:
        return results.tar_image_ref(shard, sample_id) if self.tar else results.image_key(shard, sample_id)

    def _image_dest(self, shard: int, sample_id: str) -> str:
        """PNG: the final key. WebDataset: a partial PNG, packed into the shard's tar at the end."""
        return _partial_key(shard, sample_id, "png") if self.tar else results.image_key(shard, sample_id)

    def _write_tar(self, shard: int, rows: list[dict]) -> None:
        writer = results.TarShardWriter()
        for r in rows:
            png = self.storage.read_bytes(_partial_key(shard, r["sample_id"], "png"))
            meta = {k: r[k] for k in ("sample_id", "prompt", "seed", "source", "row")}
            writer.add(r["sample_id"], png, meta)
        self.storage.write_bytes(results.tar_key(shard), writer.getvalue())

    def _done_samples(self, shard: int) -> dict[str, dict]:
        """Partial rows left by earlier attempts of this shard: one LIST, not one HEAD per sample."""
        done = {}
        for key in self.storage.list(f"{PARTIAL_PREFIX}/{shard:06d}/"):
            if key.endswith(".json"):
                done.update((r["sample_id"], r) for r in json.loads(self.storage.read_bytes(key)))
        return done

    def _commit(self, spec: ShardSpec, attempt: int, rows: list[dict], bad: list[BadRow],
                timing: dict) -> bool:
        meta = {"job_id": self.job_id, "model": self.config.model.name, "method": self.config.method.name}
        skey, ekey = results.stats_key(self.job_id, spec.index), None
        results.write_stats(self.storage, skey, rows, meta)
        if bad:
            ekey = results.errors_key(self.job_id, spec.index)
            results.write_errors(self.storage, ekey, bad, meta)
        info = {"job_id": self.job_id, "rows": len(rows), "errors": len(bad), "stats_key": skey,
                "errors_key": ekey, "attempt": attempt, "actor": self.actor, "node": self.node,
                "source": redact_uri(spec.source), "row_start": spec.row_start, "row_end": spec.row_end,
                **timing}
        return results.write_commit(self.storage, spec.index, info)  # last: the shard becomes visible

    def _cleanup_partials(self, shard: int) -> None:
        """Best effort: partial files are useless once the shard is committed."""
        for key in self.storage.list(f"{PARTIAL_PREFIX}/{shard:06d}/"):
            try:
                self.storage.delete(key)
            except Exception as e:  # noqa: BLE001 - leftovers are harmless, never fail a committed shard
                log.warning("could not delete %s: %s", key, e)

    def _report(self, spec: ShardSpec, attempt: int, fresh: list[dict], resumed: int, bad: int,
                committed: bool, t0: float, total: int = 0) -> ShardReport:
        return ShardReport(
            shard=spec.index, attempt=attempt, samples=total, generated=len(fresh), resumed=resumed,
            bad_rows=bad, committed=committed, seconds=time.perf_counter() - t0,
            step_compression_sum=sum(r["step_compression"] for r in fresh), actor=self.actor, node=self.node,
        )


def int64_seed(seed: int) -> int:
    """The stats `seed` column is int64: 64-bit seeds are stored as their two's-complement view."""
    return seed - (1 << 64) if seed >= 1 << 63 else seed


def _partial_key(shard: int, sample_id: str, ext: str) -> str:
    return f"{PARTIAL_PREFIX}/{shard:06d}/{urllib.parse.quote(sample_id, safe='')}.{ext}"


def _pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _set_precision_flags(device: str, cpus: float) -> Any:
    """Set here, never at import (style §9): TF32 matmuls on GPU; one torch thread per reserved CPU."""
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        # Ray reserves `cpus` cores for this actor; more threads would oversubscribe its neighbours.
        torch.set_num_threads(max(1, int(cpus)))
