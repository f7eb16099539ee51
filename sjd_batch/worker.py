"""`ShardWorker`: turns one prompt shard into images, a stats file and a commit marker.

The callable-class idiom of `ray.data.llm`: `__init__` loads the model and resolves the job's settings
once (`SamplingConfig` over the model's defaults, the method's `DecodeConfig`; a window or batch size
left to `auto` is measured there, on the actor's own hardware: `tuning.auto_settings`), each call runs
one shard through the four stages of `sjd_batch.stages` (read, decode, encode, commit). The worker
never sees Ray: the runner passes in the job id and the actor and node names it should record.

Seeds are a pure function of (job seed, sample id), so a retry reproduces the same images bit for bit
(with `window: auto`, on an actor that picked the same window: each stats row records its window).
Also here: the device and precision choice of a worker."""

from __future__ import annotations

import concurrent.futures as cf
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch

from sjd_batch.api import check_sampling
from sjd_batch.config import JobConfig
from sjd_batch.decoding import DecodeConfig, SamplingConfig
from sjd_batch.io.backends import open_storage
from sjd_batch.io.ids import IdRules
from sjd_batch.io.prompts import ShardSpec
from sjd_batch.io.records import StatsRecord
from sjd_batch.io.storage import Storage
from sjd_batch.stages.commit import CommitInfo, ShardCommitter
from sjd_batch.stages.decode import DecodeStage
from sjd_batch.stages.encode import ImageEncoder, Placement
from sjd_batch.stages.read import read_input
from sjd_batch.stages.tasks import Decoded

MAX_WAITING_GROUPS = 2  # groups of images held in memory while they are encoded and uploaded


@dataclass(frozen=True)
class ShardReport:
    """What one `run_shard` call did."""

    shard: int
    attempt: int
    samples: int  # stats rows written: generated now plus resumed
    generated: int  # samples decoded in this attempt
    resumed: int  # samples found done by an earlier attempt
    bad_rows: int  # input rows skipped and recorded in the errors file
    failed: int  # samples recorded with an `error` (no image) in this attempt
    committed: bool  # False when the shard was already committed (by an earlier attempt)
    seconds: float
    started_at: float  # epoch seconds: this attempt's span, as in its commit marker (throughput.py)
    finished_at: float
    step_compression_sum: float  # over the generated samples (the runner keeps a running mean)
    actor: str
    node: str
    decode_s: float = 0.0  # of `seconds`, the time spent in the model: the rest is the runner's overhead


Progress = Callable[[int, int], None]  # (shard, samples done so far in it)


class ShardWorker:
    """Loads the model once; `run_shard(spec, attempt)` (or calling it) processes one shard."""

    def __init__(self, config: JobConfig, job_id: str, actor: str = "local", node: str = "local") -> None:
        from sjd_batch.models.loading import load_model

        self.config, self.job_id, self.actor, self.node = config, job_id, actor, node
        self.device = _pick_device(config.model.device)
        _set_precision_flags(self.device, config.run.cpus_per_actor)
        spec = config.model
        self.model = load_model(spec.name, self.device, spec.dtype, dict(spec.options))
        if spec.compile:
            from sjd_batch.models.compiled import compile_forward

            self.model = compile_forward(self.model)
        sampling = config.sampling.over(self.model.default_sampling)
        check_sampling(self.model, sampling)
        self.method, self.batch_size = self._settings(sampling)
        self.id_rules = IdRules.for_format(config.output.image_format)
        self.decode = DecodeStage(self.model, sampling, self.method, self.batch_size)
        self.storage = open_storage(config.output.uri)

    def _settings(self, sampling: SamplingConfig) -> tuple[DecodeConfig, int]:
        """The method and batch size; `auto` ones are measured here, on this actor's hardware, once."""
        method, batch = self.config.method.decode_config(), self.config.run.batch_size
        window_auto = self.config.method.window == "auto"
        if not window_auto and batch != "auto":
            return method, batch
        from sjd_batch.timing import bench_prompts
        from sjd_batch.tuning import auto_settings

        prompts = bench_prompts(self.model, 4, self.config.run.seed)
        choice = auto_settings(self.model, sampling, method, window_auto, None if batch == "auto" else batch,
                               prompts)
        print(f"actor {self.actor}: auto settings: window {choice.method.window}, batch {choice.batch}. "
              f"{choice.why}", file=sys.stderr, flush=True)
        return choice.method, choice.batch

    @property
    def storage(self) -> Storage:
        return self._storage

    @storage.setter
    def storage(self, storage: Storage) -> None:
        """The output; the stages that write go through it (tests swap in a failing one)."""
        self._storage = storage
        fmt = self.config.output.image_format
        self.encode = ImageEncoder(storage, fmt)
        self.committer = ShardCommitter(storage, self.job_id, self.config.model.name, self.method.method, fmt)

    def __call__(self, spec: ShardSpec, attempt: int = 0) -> ShardReport:
        return self.run_shard(spec, attempt)

    def run_shard(self, spec: ShardSpec, attempt: int = 0, progress: Progress | None = None) -> ShardReport:
        """Read, decode, encode, commit. Idempotent across attempts.

        `progress(shard, samples_done)` is called after each group of samples (for live progress bars).
        """
        t0, started_at = time.perf_counter(), time.time()
        if self.committer.is_committed(spec.index):
            return self._report(spec, attempt, [], 0, 0, 0, False, t0, 0.0, (started_at, time.time()))
        done_before = self.committer.done_records(spec.index)
        shard_in = read_input(spec, done_before, self.config.run.seed, self.id_rules)
        done = len(shard_in.done)
        report = (lambda n: progress(spec.index, done + n)) if progress else (lambda n: None)
        where = Placement(spec.index, attempt, self.actor, self.node, self.config.model.name,
                          self.method.method)
        busy = [0.0]  # engine seconds for this shard's samples (the engine is shared: see stages/decode.py)
        fresh = self._produce(_summing(self.decode(shard_in.tasks), busy), where, report)
        info = CommitInfo(attempt, self.actor, self.node, started_at, time.time(), time.perf_counter() - t0,
                          busy[0])
        committed = self.committer.commit(shard_in, [*shard_in.done, *fresh], info)
        return self._report(spec, attempt, fresh, done + len(fresh), done, len(shard_in.bad), committed, t0,
                            busy[0], (info.started_at, info.finished_at))

    def _produce(self, decoded: Iterable[Decoded], where: Placement, report: Callable[[int], None]
                 ) -> list[StatsRecord]:
        """Encode and store images in threads while the decode stream goes on; every `batch_size`
        finished samples become one partial file, once their images are all stored."""
        size, groups, group = self.batch_size, [], []
        with cf.ThreadPoolExecutor(self.config.run.upload_threads, thread_name_prefix="upload") as images, \
                cf.ThreadPoolExecutor(2, thread_name_prefix="group") as savers:
            for n, sample in enumerate(decoded, 1):
                group.append(images.submit(self.encode, sample, where))
                if len(group) == size:
                    groups.append(savers.submit(self._save_group, where.shard, group))
                    group = []
                    report(n)
                    while sum(not g.done() for g in groups) > MAX_WAITING_GROUPS:  # bound images in memory
                        cf.wait(groups, return_when=cf.FIRST_COMPLETED)
            if group:
                groups.append(savers.submit(self._save_group, where.shard, group))
                report(n)
            return [r for g in groups for r in g.result()]  # re-raises an upload failure (after IO retries)

    def _save_group(self, shard: int, uploads: list[cf.Future]) -> list[StatsRecord]:
        records = [u.result() for u in uploads]
        self.committer.save_group(shard, records)
        return records

    def close(self) -> None:
        """Let the engine thread end (it also ends by itself after a few idle seconds)."""
        self.decode.close()

    def _report(self, spec: ShardSpec, attempt: int, fresh: list[StatsRecord], samples: int, resumed: int,
                bad: int, committed: bool, t0: float, busy_s: float, span: tuple[float, float]
                ) -> ShardReport:
        ok = [r for r in fresh if r.error is None]
        return ShardReport(
            shard=spec.index, attempt=attempt, samples=samples,
            generated=len(ok), resumed=resumed, bad_rows=bad, failed=len(fresh) - len(ok),
            committed=committed,
            seconds=time.perf_counter() - t0, started_at=span[0], finished_at=span[1],
            step_compression_sum=sum(r.step_compression for r in ok),
            actor=self.actor, node=self.node, decode_s=busy_s,
        )


def _summing(decoded: Iterator[Decoded], busy: list[float]) -> Iterator[Decoded]:
    """The stream, adding each sample's engine seconds to `busy[0]`."""
    for d in decoded:
        busy[0] += d.busy_s
        yield d


def _pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _set_precision_flags(device: str, cpus: float) -> Any:
    """Set here, never at import: TF32 matmuls on GPU; one torch thread per reserved CPU."""
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        # Ray reserves `cpus` cores for this actor; more threads would oversubscribe its neighbours.
        torch.set_num_threads(max(1, int(cpus)))
