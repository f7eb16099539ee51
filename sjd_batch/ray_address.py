"""`check_ray_address`: a `RAY_ADDRESS` that nothing answers at is refused before Ray is asked.

`ray.init` retries an unreachable GCS for many minutes (Ray 2.x: 20 tries of about 40 s each, logging a
warning every few seconds) and then ends in a traceback. One TCP connect says the same thing in
seconds, and the error can name the address and the fix. No Ray import here: the runner calls it.
"""

from __future__ import annotations

import socket

from sjd_batch.job import JobError

PROBE_TIMEOUT_S = 10.0  # a GCS across a slow network answers a TCP connect well within this


def check_ray_address(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Raise `JobError` unless something listens at `address` (`host:port` or `ray://host:port`).

    `auto` and `local` name no socket and are left to Ray, as is any other scheme.
    """
    target = address.strip().removeprefix("ray://")
    if target in ("auto", "local") or "://" in target:
        return
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise JobError(f"RAY_ADDRESS={address!r} is not a Ray address: expected HOST:PORT (the head node's "
                       "GCS, port 6379 by default) or ray://HOST:PORT; or unset RAY_ADDRESS to run on an "
                       "embedded local Ray")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise JobError(
            f"cannot reach the Ray cluster at RAY_ADDRESS={address} ({e.strerror or e}; waited up to "
            f"{timeout_s:.0f} s). Start the cluster (`ray start --head --port {port}` on that host), point "
            "RAY_ADDRESS at the head node's GCS address (`ray status` on the head prints it), or unset "
            "RAY_ADDRESS to run on an embedded local Ray. Nothing was decoded, and a rerun resumes."
        ) from None
