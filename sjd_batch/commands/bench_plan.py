"""`sjd-batch bench-plan`: time `sjd-batch plan` on a generated input of many rows, and its peak RSS.

Generates `--files` Parquet files of `--rows` rows each (random-looking 17-byte ids, short prompts) into
`--dir`, unless files of that size are there already, then runs `sjd-batch plan` on a job over them in
a child process (a fresh output, so the first-run checks run: footers, schemas and the duplicate-id
scan over every id) and reports its wall time and peak RSS (from `wait4`, the child alone). The input
is deleted afterwards unless `--keep`. It is a benchmark, not a test: run it under `nice` on a quiet
machine, and mind the disk (100M rows take about 1 GB of Parquet, plus 1.6 GB of spill while scanning).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per file")
    parser.add_argument("--dir", default="/tmp/sjd-bench-plan", help="where the input is generated")
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--image-format", default="png")
    parser.add_argument("--no-ids", action="store_true", help="files without an `id` column")
    parser.add_argument("--keep", action="store_true", help="keep the generated input")
    parser.add_argument("--json", help="also save the figures to this file")


def main(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    t0 = time.perf_counter()
    files = generate(root / "prompts", args.files, args.rows, ids=not args.no_ids)
    generated_s = time.perf_counter() - t0
    try:
        result = time_plan(root, args)
    finally:
        if not args.keep:
            shutil.rmtree(root / "prompts", ignore_errors=True)
    result.update(files=len(files), rows_per_file=args.rows, generate_s=generated_s)
    print(_text(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, sort_keys=True))
    return 0 if result["exit_code"] == 0 else 1


def generate(folder: Path, files: int, rows: int, ids: bool = True) -> list[Path]:
    """`files` Parquet files of `rows` rows each (kept if already there with that row count)."""
    from sjd_batch.io.prompts import write_local_prompts

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"part-{k:03d}.parquet" for k in range(files)]
    for k, path in enumerate(paths):
        write_local_prompts(path, rows, lambda k=k: _table(k, rows, ids))
    return paths


def _table(k: int, rows: int, ids: bool) -> Any:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = pa.array(np.arange(rows, dtype=np.int64))
    colours = pa.array(["red", "blue", "green", "yellow", "pink", "white", "black"])
    shapes = pa.array(["circle", "square", "triangle", "cross", "star"])
    colour = pc.take(colours, pc.cast(np.arange(rows) * 7919 % 7, pa.int64()))
    shape = pc.take(shapes, pc.cast(np.arange(rows) * 104729 % 5, pa.int64()))
    prompt = pc.binary_join_element_wise("a large", colour, shape, "number", pc.cast(n, pa.string()), " ")
    table = pa.table({"prompt": prompt})
    if ids:  # f007-3f2a9c01b77e: random-looking (a bijection of the row), as hashes or uuids are
        mixed = (np.arange(rows, dtype=np.uint64) * np.uint64(0x9E3779B97F4B)) & np.uint64(2**48 - 1)
        nibbles = (mixed[:, None] >> np.arange(44, -1, -4, dtype=np.uint64)) & np.uint64(15)
        digits = np.frombuffer(b"0123456789abcdef", np.uint8)[nibbles].view("S12").ravel()
        hexed = pa.array(digits).cast(pa.string())
        table = table.add_column(0, "id", pc.binary_join_element_wise(f"f{k:03d}", hexed, "-"))
    return table


def time_plan(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run `sjd-batch plan --json` on a fresh output in a child process: wall time and peak RSS."""
    import yaml

    out_dir = root / f"out-{uuid.uuid4().hex[:8]}"
    job = root / "job.yaml"
    job.write_text(yaml.safe_dump({
        "name": "bench-plan", "model": {"name": "tiny-random"},
        "input": {"uris": [str(root / "prompts")], "shard_size": args.shard_size},
        "output": {"uri": str(out_dir), "image_format": args.image_format},
    }))
    cmd = [sys.executable, "-m", "sjd_batch.cli", "plan", str(job), "--json"]
    with open(root / "plan.out", "w+b") as stdout, open(root / "plan.err", "w+b") as stderr:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage: its peak RSS
        wall = time.perf_counter() - t0
        code = os.waitstatus_to_exitcode(status)
        proc.returncode = code
        stdout.seek(0)
        stderr.seek(0)
        out, err = stdout.read(), stderr.read()
    shutil.rmtree(out_dir, ignore_errors=True)
    result: dict[str, Any] = {"exit_code": code, "wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024,
                              "cpu_s": usage.ru_utime + usage.ru_stime, "loadavg_1m": os.getloadavg()[0],
                              "command": "sjd-batch " + " ".join(cmd[3:])}
    if code == 0:
        result["plan"] = json.loads(out)
    else:
        result["stderr"] = err.decode()[-2000:]
    return result


def _text(r: dict[str, Any]) -> str:
    lines = [
        f"{r['files']} files x {r['rows_per_file']:,} rows (generated or reused in {r['generate_s']:.1f} s)",
        f"sjd-batch plan: exit {r['exit_code']}, {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU, "
        f"peak RSS {r['peak_rss_mb']:.0f} MB (load average {r['loadavg_1m']:.1f})",
    ]
    if "plan" not in r:
        return "\n".join([*lines, r.get("stderr", "")])
    p, seconds = r["plan"], r["plan"]["seconds"]
    ids = p.get("ids") or {}
    spill = f"{ids.get('partitions', 0)} spill partitions, {ids.get('spilled_bytes', 0) / 1e6:.0f} MB spilled"
    lines.append(f"  {p['rows']:,} rows, {p['shards']:,} shards; footers {seconds['plan']:.1f} s; "
                 f"ids checked {ids.get('checked', 0):,} in {seconds.get('ids', 0):.1f} s ({spill})")
    return "\n".join(lines)
