"""Real job outputs for the report tests, made once per session by the real runner (`run_local`).

- `ok`: shapes-t2i, `sjd`, six captions in two shards, all committed. One caption carries HTML
  (`<b>`, `&`, quotes, a `<script>` tag) that the page must escape.
- `failing`: shapes-t2i, `mc-sjd`, the same six captions plus a null prompt (a skipped row), and a
  second input file that loses its `prompt` column after the plan is fixed, so its shard fails with an
  error naming that file, whose name holds `<`, `>` and `&` as well.
- `report_file`: `sjd-batch report ok failing --out report.html`, the page both test files inspect.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sjd_batch import cli
from sjd_batch.job import prepare_job
from sjd_batch.runner import run_local
from tests.test_worker import make_job, write_prompts

# Captions in shapes-t2i's own language (its example_prompts(6, seed=3)), one with markup added.
CAPTIONS = [
    "a small cyan cross at top right and a small yellow circle at top middle",
    "a large green circle at center and a large cyan triangle at top middle",
    "a large orange circle at bottom left and a small purple circle at center",
    'a large yellow square at top left & <b>"bold"</b> <script>alert(1)</script>',
    "a small green triangle at bottom right",
    "a large pink circle at top middle",
]
BAD_FILE = "bad<i>&amp.parquet"


@dataclass(frozen=True)
class Outputs:
    ok: str
    failing: str
    bad_file: str  # the input file whose shard failed


def shapes_job(inputs: list[str], out: Path, method: str, shard_size: int):  # noqa: ANN201
    return make_job(inputs, str(out), model={"name": "shapes-t2i"}, method={"name": method, "window": 16},
                    input={"shard_size": shard_size}, run={"batch_size": 3, "upload_threads": 2})


@pytest.fixture(scope="session")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Outputs:
    root = tmp_path_factory.mktemp("report-jobs")
    ids = [f"s{i}" for i in range(len(CAPTIONS))]
    good = write_prompts(root / "in" / "a.parquet", pa.table({"id": ids, "prompt": CAPTIONS}))
    ok = shapes_job([good], root / "ok", "sjd", shard_size=3)
    assert run_local(ok, progress=False).ok

    with_null = write_prompts(root / "in2" / "a.parquet",
                              pa.table({"id": [*ids, "empty"], "prompt": [*CAPTIONS, None]}))
    bad = write_prompts(root / "in2" / BAD_FILE, pa.table({"id": ["x0", "x1"], "prompt": CAPTIONS[:2]}))
    failing = shapes_job([with_null, bad], root / "failing", "mc-sjd", shard_size=4)
    plan = prepare_job(failing)  # the plan is fixed (job.json written); now the file loses its prompts
    pq.write_table(pa.table({"id": ["x0", "x1"], "caption": CAPTIONS[:2]}), bad)
    summary = run_local(failing, progress=False, plan=plan)  # the file broke mid-run
    assert sorted(summary.failed) == [2] and summary.shards_committed == 2, summary.text()
    return Outputs(ok=ok.output.uri, failing=failing.output.uri, bad_file=bad)


@pytest.fixture(scope="session")
def report_file(outputs: Outputs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    assert cli.main(["report", outputs.ok, outputs.failing, "--out", str(out), "--no-progress"]) == 0
    return out
