"""Fixtures for the family tests: one local Ray shared by every runner test under tests/models/.

`ray_session` starts an embedded Ray (2 logical CPUs, no dashboard, `address="local"` so it never joins a
cluster some other process left on the machine) the first time a test asks for it. `sjd-batch run` joins an
initialised Ray instead of starting its own (`sjd_batch.runner._connect`), so every family's runner test
shares one start-up. Ray is shut down after the last test of this folder, before any other test module
(e.g. tests/test_runner.py, which starts its own two-node cluster) runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

HERE = Path(__file__).resolve().parent
_started = False  # whether this conftest started the Ray that is up now


@pytest.fixture
def ray_session() -> Iterator[None]:
    """A local Ray, started on first use and kept up for the following tests of this folder."""
    global _started
    import ray

    from sjd_batch.runner import EMBEDDED_OBJECT_STORE

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False,
                 object_store_memory=EMBEDDED_OBJECT_STORE)
        _started = True
    yield


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop our Ray once the next test lies outside this folder (or there is none)."""
    global _started
    if _started and (nextitem is None or HERE not in Path(str(nextitem.path)).resolve().parents):
        import ray

        ray.shutdown()
        _started = False
