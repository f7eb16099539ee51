"""The job runner: with `runner/jobs_api.py`, the only code that imports `ray`.

`run_job(config)` starts an embedded local Ray (or joins the cluster in `RAY_ADDRESS`), claims the output
(`job.json`), plans the shards, skips the committed ones and runs the rest on a pool of actors. Each actor
wraps one `ShardWorker` (model loaded once, `num_gpus` per actor, `num_cpus` always set, so GPU actors never
hold an implicit CPU, which would starve the read and write tasks). Actors pull shards dynamically: the
driver keeps up to two shards in flight per actor (threaded actors, one engine each: the second shard's
samples fill the slots the first one's last samples leave) and hands the next one to whichever actor has a
free place (`ray.wait`), so a slow actor never holds the job, and an actor gets shards only once it has
started, so a shard never waits on an actor the cluster has no room for. A dead actor fails the shards it
held; each is retried on another actor, up to `run.max_retries` times; a shard that keeps failing is
reported, and the job ends non-zero while every committed shard stays valid. `driver.run_local(config)` runs
the same plan in-process, without Ray, with the same `ShardQueue`. The progress bar and the `JobSummary` it
fills live in `sjd_batch.progress`; the Ray Jobs API helpers (`submit_job`, `follow_job`) in
`runner/jobs_api.py`, the package's other module.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from typing import Any, Callable, Iterator

import ray
from ray.exceptions import RayActorError, RayTaskError

from sjd_batch.config import JobConfig
from sjd_batch.driver import ShardOutcome, ShardQueue, run_local
from sjd_batch.io.prompts import InputError, ShardSpec
from sjd_batch.job import JobError, prepare_job
from sjd_batch.notices import quiet_auth_notice
from sjd_batch.progress import JobSummary, JobTracker
from sjd_batch.ray_address import check_ray_address
from sjd_batch.runner.jobs_api import SubmitError, cluster_nodes, follow_job, submit_job
from sjd_batch.worker import ShardReport, ShardWorker

__all__ = ["SubmitError", "cluster_nodes", "follow_job", "local_ray", "run_job", "run_local", "submit_job"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Ray colours its error texts
SHARDS_PER_ACTOR = 2  # shards an actor holds at once: the next one is queued while the current one ends
EMBEDDED_OBJECT_STORE = 256 * 1024**2  # actors return small reports; images go straight to storage
# Where the driver's S3 is: forwarded to the actors, which may live on nodes started with another
# environment. Never credentials: a runtime_env is stored in Ray's job table.
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
                 "AWS_MAX_ATTEMPTS")
# Set in every actor: transformers draws a "Loading weights" bar per model load (read from the hub
# variable when transformers is imported), which Ray copies into the job's output once per actor.
ACTOR_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1"}


class _ShardActor:
    """A Ray actor around one ShardWorker; records its own actor and node ids in the stats."""

    def __init__(self, config: JobConfig, job_id: str, index: int) -> None:
        ctx = ray.get_runtime_context()
        actor = f"actor-{index}-{ctx.get_actor_id()[:8]}"
        self.worker = ShardWorker(config, job_id, actor=actor, node=ctx.get_node_id()[:12])

    def ready(self) -> str:
        return self.worker.node

    def run_shard(self, spec: ShardSpec, attempt: int, progress: Any) -> ShardReport:
        return self.worker.run_shard(spec, attempt, lambda shard, n: progress.report.remote(shard, n))


class _ProgressBoard:
    """A zero-CPU actor the shard actors report per-batch progress to; the driver polls it."""

    def __init__(self) -> None:
        self.done: dict[int, int] = {}

    def report(self, shard: int, n: int) -> None:
        self.done[shard] = max(n, self.done.get(shard, 0))

    def snapshot(self) -> dict[int, int]:
        return dict(self.done)


def run_job(config: JobConfig, progress: bool = True, ray_init: dict[str, Any] | None = None) -> JobSummary:
    """Run (or resume) a job on Ray. Joins `RAY_ADDRESS` or an initialised Ray, else starts one.

    Raises:
        JobError, ConfigError, StorageError: before any shard runs (output owned by another job,
            empty input, unknown model, missing bucket, bad credentials).
    """
    t0 = time.perf_counter()
    plan = prepare_job(config)
    tracker = JobTracker(plan, progress)
    queue = ShardQueue(plan.todo(), plan.todo_count, config.run.max_retries, tracker)
    if queue:  # a complete job starts no Ray at all
        started = _connect(ray_init)
        try:
            _drive(config, plan.job_id, queue, tracker)
        finally:
            if started:
                ray.shutdown()
    return tracker.close(t0)


@contextlib.contextmanager
def local_ray(num_cpus: int) -> Iterator[None]:
    """An embedded Ray of `num_cpus` logical CPUs that stays up across several `run_job` calls."""
    quiet_auth_notice()
    ray.init(
        address="local", num_cpus=num_cpus, include_dashboard=False, object_store_memory=EMBEDDED_OBJECT_STORE
    )
    try:
        yield
    finally:
        ray.shutdown()


def _connect(ray_init: dict[str, Any] | None) -> bool:
    """Use the Ray this process is connected to, or RAY_ADDRESS, or start an embedded one."""
    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        check_ray_address(os.environ["RAY_ADDRESS"])  # ray.init would retry for minutes, then a traceback
        ray.init(**(ray_init or {}))  # ray.init reads RAY_ADDRESS itself
        return True
    # address="local": without it ray.init joins whatever cluster `ray start` last recorded in
    # /tmp/ray/ray_current_cluster, even a stopped one; with RAY_ADDRESS unset we mean a new one.
    kwargs = {"address": "local", "include_dashboard": False, "object_store_memory": EMBEDDED_OBJECT_STORE}
    quiet_auth_notice()
    ray.init(**{**kwargs, **(ray_init or {})})
    return True


def _start_board() -> Any:
    """The progress board, on the driver's node when it can: a node that dies takes its actors along."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    return ray.remote(_ProgressBoard).options(num_cpus=0, scheduling_strategy=here).remote()


class _ActorPool:
    """Shard actors. An actor takes shards only once it is ready (model loaded): a shard never waits
    on an actor the cluster has no room for yet, and actors that start late simply join in.

    Each actor holds up to `SHARDS_PER_ACTOR` shards at once (a threaded actor): its one engine
    starts the next shard's samples in the slots the current shard's last samples leave, and the
    driver's round trip between shards is hidden (stages/decode.py).

    The driver sees four things: `can_take` (a free place), `submit`, `busy`/`alive` counts, and
    `next_outcome`, which waits for the next finished attempt (a dead actor is replaced in here)."""

    def __init__(self, config: JobConfig, job_id: str, size: int) -> None:
        env = {**ACTOR_ENV, **{k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}}
        self.remote = ray.remote(_ShardActor).options(
            num_cpus=config.run.cpus_per_actor, num_gpus=config.run.gpus_per_actor,
            max_restarts=0, max_task_retries=0,  # retries are ours: per shard, counted, reported
            max_concurrency=SHARDS_PER_ACTOR,
            runtime_env={"env_vars": env},
        )
        self.config, self.job_id, self.spawned, self.init_error = config, job_id, 0, ""
        self.board = _start_board()
        self._starting: dict[Any, Any] = {}  # ready() ref -> actor
        self._idle: list[Any] = []  # one entry per free place: an actor is here up to SHARDS_PER_ACTOR times
        self._inflight: dict[Any, tuple[Any, ShardSpec, int]] = {}  # run_shard ref -> (actor, spec, try)
        self._dead: set[Any] = set()  # actors already replaced (their other shard fails too)
        for _ in range(size):
            self._spawn()

    def _spawn(self) -> None:
        actor = self.remote.remote(self.config, self.job_id, self.spawned)
        self.spawned += 1
        self._starting[actor.ready.remote()] = actor

    def can_take(self, waiting: int) -> bool:
        """Whether a shard can go out now, with `waiting` shards queued. An actor's second place is
        used only when the queue also has work for every actor still starting: a small job is spread
        over all its actors, not stacked on the first one ready."""
        if not self._idle:
            return False
        busy = self._busy_ids()
        return any(id(a) not in busy for a in self._idle) or waiting > len(self._starting)

    def _busy_ids(self) -> set[int]:
        return {id(a) for a, _, _ in self._inflight.values()}

    @property
    def busy(self) -> int:
        return len(self._inflight)

    @property
    def alive(self) -> int:
        return len(self._starting) + len(self._idle) + len(self._inflight)

    def submit(self, spec: ShardSpec, attempt: int) -> None:
        # spread first: an idle actor's place before a busy actor's second one
        busy = self._busy_ids()
        free = [i for i, a in enumerate(self._idle) if id(a) not in busy]
        actor = self._idle.pop(free[-1] if free else -1)
        self._inflight[actor.run_shard.remote(spec, attempt, self.board)] = (actor, spec, attempt)

    def next_outcome(self, on_progress: Callable[[dict[int, int]], None]) -> ShardOutcome | None:
        """Wait for the next event: a finished attempt (returned), or an actor that started (None)."""
        ref = self._wait(on_progress)
        if ref in self._starting:
            self._on_started(ref)
            return None
        actor, spec, attempt = self._inflight.pop(ref)
        try:
            report = ray.get(ref)
            self._idle.append(actor)
            return ShardOutcome(spec, attempt, report)
        except RayActorError as e:  # the process died (killed, OOM, node lost): replace it, once
            if actor not in self._dead:
                self._dead.add(actor)
                self._idle = [a for a in self._idle if a is not actor]
                ray.kill(actor)
                self._spawn()
            return ShardOutcome(spec, attempt, error=_describe(e))
        except RayTaskError as e:  # run_shard raised: the actor itself is fine
            self._idle.append(actor)
            return ShardOutcome(spec, attempt, error=_describe(e), permanent=_permanent(e))

    def _wait(self, on_progress: Callable[[dict[int, int]], None], poll_s: float = 1.0,
              warn_s: float = 60.0) -> Any:
        waited = 0.0
        while True:
            ready, _ = ray.wait([*self._starting, *self._inflight], num_returns=1, timeout=poll_s)
            if ready:
                return ready[0]
            try:
                on_progress(ray.get(self.board.snapshot.remote()))
            except RayActorError:  # its node was lost: live counts restart, shard results are unaffected
                self.board = _start_board()
            waited += poll_s
            if waited >= warn_s and not self._idle and not self._inflight:
                waited = 0.0
                print(f"waiting for cluster resources: {len(self._starting)} actor(s) not started yet "
                      f"({self.config.run.cpus_per_actor} CPU, {self.config.run.gpus_per_actor} GPU each)",
                      file=sys.stderr)

    def _on_started(self, ref: Any) -> None:
        """An actor finished starting; if its constructor failed (e.g. the model cannot load), drop it."""
        actor = self._starting.pop(ref)
        try:
            ray.get(ref)
            self._idle.extend([actor] * SHARDS_PER_ACTOR)
        except RayActorError as e:
            self.init_error = _describe(e)

    def shutdown(self) -> None:
        actors = [*self._starting.values(), *self._idle, *(a for a, _, _ in self._inflight.values())]
        for actor in {id(a): a for a in actors}.values():
            ray.kill(actor)
        ray.kill(self.board)


def _drive(config: JobConfig, job_id: str, queue: ShardQueue, tracker: JobTracker) -> None:
    """Keep up to two shards in flight per ready actor; the pool replaces dead actors, the queue retries."""
    pool = _ActorPool(config, job_id, _pool_size(config, len(queue)))
    try:
        while queue or pool.busy:
            while queue and pool.can_take(len(queue)):
                pool.submit(*queue.pop())
            if not pool.alive:  # every actor failed to start: no shard can run
                queue.fail_all(f"no actor could start: {pool.init_error}")
                return
            outcome = pool.next_outcome(tracker.progress)
            if outcome is not None:
                queue.settle(outcome)
    finally:
        pool.shutdown()


def _pool_size(config: JobConfig, shards: int) -> int:
    """Actors the cluster can hold at once: an actor that never fits would strand its shard."""
    total, run = ray.cluster_resources(), config.run
    fits = [int(total.get(res, 0) // need) for res, need in (("CPU", run.cpus_per_actor),
                                                              ("GPU", run.gpus_per_actor)) if need > 0]
    capacity = min(fits) if fits else run.num_actors
    if capacity < 1:
        raise JobError(f"run: an actor needs {run.cpus_per_actor} CPU and {run.gpus_per_actor} GPU, but the "
                       f"cluster has {total.get('CPU', 0)} CPU and {total.get('GPU', 0)} GPU")
    if capacity < run.num_actors:
        print(f"run.num_actors={run.num_actors}, but the cluster fits {capacity}: using {capacity}",
              file=sys.stderr)
    return max(1, min(run.num_actors, capacity, shards))


def _permanent(e: BaseException) -> bool:
    """Input errors (a corrupt file, no `prompt` column) fail the same way on every attempt."""
    cause: BaseException | None = getattr(e, "cause", None) if isinstance(e, RayTaskError) else e
    return isinstance(cause, InputError)


def _describe(e: BaseException, limit: int = 600) -> str:
    """One readable line: the original exception for task errors, the death reason for actors."""
    cause = getattr(e, "cause", None) if isinstance(e, RayTaskError) else None
    text = f"{type(cause).__name__}: {cause}" if cause is not None else f"{type(e).__name__}: {e}"
    text = " ".join(_ANSI.sub("", text).split())
    return text if len(text) <= limit else text[: limit // 2] + " ... " + text[-limit // 2 :]
