"""The Ray Jobs API side of the runner: submit a job to a cluster's dashboard, follow its log, list its
nodes (`sjd-batch submit`). The other half of the package runs a job's shards (`sjd_batch.runner`)."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any, Iterator, TextIO

from ray.exceptions import AuthenticationError


class SubmitError(RuntimeError):
    """A job could not be submitted (e.g. the same submission id exists: never start a job twice)."""


@contextlib.contextmanager
def _jobs_api(address: str) -> Iterator[Any]:
    """A Ray Jobs client for `address`; the two usual failures, at any call, are told in words."""
    from ray.job_submission import JobSubmissionClient

    try:
        yield JobSubmissionClient(address)
    except AuthenticationError as e:
        raise SubmitError(f"the Ray dashboard at {address} refused the request: {e} (a token cluster needs "
                          "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH; infra/local-dev.sh "
                          "prints them)") from e
    except ConnectionError as e:
        hint = "is the cluster up, and is that the dashboard's http://HOST:8265 address"
        raise SubmitError(f"no Ray dashboard answers at {address}: {hint} (--address or "
                          "RAY_API_SERVER_ADDRESS)?") from e


def submit_job(address: str, submission_id: str, **kwargs: Any) -> None:
    """Submit through the Ray Jobs API, refusing a submission id that already exists."""
    with _jobs_api(address) as client:
        if submission_id in {j.submission_id for j in client.list_jobs()}:
            status = client.get_job_status(submission_id).value
            raise SubmitError(f"{submission_id} was already submitted ({status}): the same job is never "
                              "started twice; pass --suffix to submit it again (committed shards are "
                              "skipped)")
        _submit_when_agent_ready(client, submission_id, kwargs)


def _submit_when_agent_ready(client: Any, submission_id: str, kwargs: dict[str, Any],
                             wait_s: float = 60.0) -> None:
    """Submit; a head that has just started answers "No available agent" until its job agent has
    registered (Ray says "try again later"), so retry that one answer for up to `wait_s`."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            client.submit_job(submission_id=submission_id, **kwargs)
            return
        except RuntimeError as e:
            if "No available agent" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def cluster_nodes(address: str) -> list[tuple[bool, dict[str, float]]]:
    """(is head node, total resources) of every alive node behind a Ray dashboard address."""
    from ray.util.state import list_nodes

    with _jobs_api(address):  # the same words for a dashboard that is down or refuses the token
        nodes = list_nodes(address=address, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)
        return [(bool(n.is_head_node), {k: float(v) for k, v in n.resources_total.items()}) for n in nodes]


def follow_job(address: str, submission_id: str, out: TextIO, poll_s: float = 2.0) -> int:
    """Print a submitted job's driver log as it grows; 0 when it SUCCEEDED, else 1."""
    from ray.job_submission import JobStatus

    shown = 0
    with _jobs_api(address) as client:
        while True:
            status = client.get_job_status(submission_id)
            logs = client.get_job_logs(submission_id)
            out.write(logs[shown:])
            out.flush()
            shown = len(logs)
            if status.is_terminal():
                print(f"{submission_id}: {status.value}", file=sys.stderr)
                return 0 if status == JobStatus.SUCCEEDED else 1
            time.sleep(poll_s)
