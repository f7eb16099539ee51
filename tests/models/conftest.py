"""Fixtures for the family tests: one local Ray for the whole session.

`ray_session` starts an embedded Ray (2 logical CPUs, no dashboard) the first time a test asks for it and
stops it at the end of the session. `sjd-batch run` joins an initialised Ray instead of starting its own
(`sjd_batch.runner._connect`), so every family's runner test shares one Ray start-up.
"""

from __future__ import annotations

import os
from typing import Iterator

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """A local Ray shared by every runner test of the session (reused if one is already connected)."""
    import ray

    from sjd_batch.runner import EMBEDDED_OBJECT_STORE

    if ray.is_initialized():  # e.g. the cluster fixture of another test module
        yield
        return
    # address="local": always a fresh instance, never a cluster some other process left on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=EMBEDDED_OBJECT_STORE)
    try:
        yield
    finally:
        ray.shutdown()
