"""Running one fault trial (see harness.py): set up its input and output, inject its fault, rerun the
job healthy until it succeeds, then verify the output and grep every channel for the credential."""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from sjd_batch.io.backends import open_storage
from sjd_batch.io.storage import Storage
from tests.faults.harness import (
    Driver,
    Outcome,
    Trial,
    job_yaml,
    kill_one_actor,
    leaked,
    verify,
    wait_for_objects,
    write_prompts,
)
from tests.mounts import tmpfs
from tests.s3_faults import OutageProxy

RERUNS = 3  # healthy reruns allowed after the fault; the first one should already succeed


@dataclass
class Context:
    """What every trial shares: a scratch folder, the S3 server, the Ray cluster, the reference."""

    tmp: Path
    s3_endpoint: str
    bucket: str
    ray_address: str | None
    reference: dict[str, str]
    secret: str


def run_trial(trial: Trial, ctx: Context) -> Outcome:
    outcome = Outcome(trial)
    folder = ctx.tmp / f"trial-{trial.seed}"
    folder.mkdir(parents=True)
    if trial.fault == "disk-full":
        with tmpfs(folder / "disk", f"{trial.disk_kb}k") as disk:
            _run(trial, ctx, folder, str(disk / "out"), outcome, disk=disk)
    else:
        out = str(folder / "out") if trial.backend == "local" else f"s3://{ctx.bucket}/out-{trial.seed}"
        _run(trial, ctx, folder, out, outcome)
    return outcome


def _run(trial: Trial, ctx: Context, folder: Path, output: str, outcome: Outcome,
         disk: Path | None = None) -> None:
    inputs = (open_storage(str(folder)) if trial.backend == "local"
              else open_storage(f"s3://{ctx.bucket}/in-{trial.seed}"))
    job = folder / "job.yaml"
    job.write_text(job_yaml(trial, write_prompts(inputs, "prompts.parquet", trial.prompts), output))
    storage = open_storage(output)
    env = _env(trial, ctx)
    {"kill-driver": _kill_driver, "kill-actor": _kill_actor, "s3-outage": _s3_outage,
     "disk-full": _disk_full, "race": _race}[trial.fault](trial, ctx, job, folder, storage, env, outcome)
    if disk is not None:  # the disk is given room again: the rerun must complete the job
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True, capture_output=True)
    for attempt in range(RERUNS):
        code = _drive(job, env, folder / f"rerun-{attempt}", trial, outcome)
        if code == 0:
            break
    else:
        raise AssertionError(f"{trial.describe()}: {RERUNS} healthy reruns failed:\n"
                             + _tail(folder / f"rerun-{RERUNS - 1}.err"))
    outcome.samples = verify(storage, trial, ctx.reference)
    found = leaked(ctx.secret, storage, folder)
    assert not found, f"{trial.describe()}: the credential leaked into {found}"


def _env(trial: Trial, ctx: Context) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(AWS_ENDPOINT_URL=ctx.s3_endpoint, PYTHONUNBUFFERED="1", RAY_AUTH_MODE="disabled")
    if trial.ray and ctx.ray_address:
        env["RAY_ADDRESS"] = ctx.ray_address
    return env


def _drive(job: Path, env: dict[str, str], log: Path, trial: Trial, outcome: Outcome) -> int:
    driver = Driver(job, env, log, local="RAY_ADDRESS" not in env)
    outcome.runs += 1
    code = driver.wait()
    outcome.exits.append(code)
    return code


def _kill_driver(trial: Trial, ctx: Context, job: Path, folder: Path, storage: Storage,
                 env: dict[str, str], outcome: Outcome) -> None:
    _kill_at_random_point(trial, job, folder, storage, env, outcome, Driver.kill, "driver")


def _kill_actor(trial: Trial, ctx: Context, job: Path, folder: Path, storage: Storage,
                env: dict[str, str], outcome: Outcome) -> None:
    _kill_at_random_point(trial, job, folder, storage, env, outcome, lambda d: kill_one_actor(os.getpid()),
                          "actor")


def _kill_at_random_point(trial: Trial, job: Path, folder: Path, storage: Storage, env: dict[str, str],
                          outcome: Outcome, kill: Callable[[Driver], object], what: str) -> None:
    """Start the job, SIGKILL the driver or an actor once the output holds `kill_after` objects."""
    driver = Driver(job, env, folder / "faulted", local="RAY_ADDRESS" not in env)
    outcome.runs += 1
    if wait_for_objects(storage, 1 + trial.kill_after, driver) and kill(driver) is not False:
        outcome.faults += 1
    else:
        outcome.notes.append(f"no {what} was left to kill at the kill point")
    outcome.exits.append(driver.wait())


def _s3_outage(trial: Trial, ctx: Context, job: Path, folder: Path, storage: Storage,
               env: dict[str, str], outcome: Outcome) -> None:
    with OutageProxy(ctx.s3_endpoint, seed=trial.seed) as proxy:
        faulted = {**env, "AWS_ENDPOINT_URL": proxy.url, "AWS_MAX_ATTEMPTS": str(trial.max_attempts)}
        code = _drive(job, faulted, folder / "faulted", trial, outcome)
        proxy.stop_faults()
        outcome.faults += len(proxy.windows)
        outcome.notes.append(f"outage run exited {code} after {len(proxy.windows)} fault windows, "
                             f"{proxy.failed} requests failed of {proxy.requests}")


def _disk_full(trial: Trial, ctx: Context, job: Path, folder: Path, storage: Storage,
               env: dict[str, str], outcome: Outcome) -> None:
    code = _drive(job, env, folder / "faulted", trial, outcome)
    said = (folder / "faulted.err").read_text() + (folder / "faulted.out").read_text()
    if code != 0:
        outcome.faults += 1
        assert "the disk is full" in said and "Traceback" not in said, f"{trial.describe()}:\n{said[-2000:]}"
    else:
        outcome.notes.append(f"the job fit in {trial.disk_kb} KB")


def _race(trial: Trial, ctx: Context, job: Path, folder: Path, storage: Storage,
          env: dict[str, str], outcome: Outcome) -> None:
    rng = random.Random(trial.seed * 7919)
    drivers = []
    for i in range(trial.racers):
        time.sleep(rng.uniform(0, 1.5))
        drivers.append(Driver(job, env, folder / f"racer-{i}", local="RAY_ADDRESS" not in env))
    outcome.runs += len(drivers)
    outcome.faults += len(drivers) - 1
    outcome.exits += [d.wait() for d in drivers]


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else "(no log)"


def record(outcome: Outcome, path: Path) -> None:
    """Append the trial's outcome as one JSON line (the long mode's report reads them)."""
    line = {**asdict(outcome), "trial": asdict(outcome.trial), "describe": outcome.trial.describe()}
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\n")
