"""`sjd-batch bench-runner`: runner throughput with 1, 2 and 4 CPU actors, against calling
`generate()` directly on the same prompts.

For each actor count it runs one fresh job on an embedded Ray (kept up across the runs) and reports:
- `wall samples/s`: samples over the whole `run_job` call (actor start and model load included);
- `steady samples/s`: samples over the span from the first shard's start to the last shard's commit;
- `efficiency`: steady samples/s over (actors x the 1-actor steady samples/s);
- `overhead/sample`: 1-actor steady seconds per sample minus direct `generate()` seconds per sample,
  both with one torch thread: what shards, PNG encoding, uploads, stats and commits cost.
It is a benchmark, not a test; on a machine with fewer cores than actors, actors share cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sjd_batch.config import JobConfig, absolute_paths, parse_job


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tiny-random")
    parser.add_argument("--method", default="sjd-vp")
    parser.add_argument("--prompts", type=int, default=96, help="samples per run")
    parser.add_argument("--actors", default="1,2,4", help="comma-separated actor counts")
    parser.add_argument("--shard-size", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--json", action="store_true", help="print JSON")


def main(args: argparse.Namespace) -> int:
    counts = [int(a) for a in args.actors.split(",")]
    with tempfile.TemporaryDirectory(prefix="sjd-bench-runner-") as tmp:
        texts = _prompts(args.prompts)
        prompts = _write_prompts(Path(tmp) / "prompts.parquet", texts)
        direct = _direct(_job(args, prompts, f"{tmp}/direct", 1), texts)
        rows = _runs(args, prompts, tmp, counts)
    report = _report(direct, rows, args)
    print(json.dumps(report, indent=2) if args.json else _text(report))
    return 0


def _job(args: argparse.Namespace, prompts: str, out: str, actors: int) -> JobConfig:
    return absolute_paths(parse_job({
        "name": f"bench-runner-{actors}",
        "model": {"name": args.model},
        "method": {"name": args.method},
        "input": {"uris": [prompts], "shard_size": args.shard_size},
        "output": {"uri": out},
        "run": {"batch_size": args.batch_size, "num_actors": actors, "cpus_per_actor": 1},
    }))


def _prompts(n: int) -> list[str]:
    shapes, colors = ("circle", "square", "triangle", "cross"), ("red", "blue", "green", "yellow", "pink")
    return [f"a large {colors[i % 5]} {shapes[i // 5 % 4]} at center" for i in range(n)]


def _write_prompts(path: Path, texts: list[str]) -> str:
    from sjd_batch.io.prompts import write_prompts

    return write_prompts(str(path), texts, [f"b{i:05d}" for i in range(len(texts))])


def _direct(config: JobConfig, prompts: list[str]) -> dict[str, float]:
    """Seconds per sample of `generate()` alone (one torch thread, like a 1-CPU actor)."""
    import torch

    from sjd_batch.api import generate_batch
    from sjd_batch.decoding import sample_seed
    from sjd_batch.models.loading import load_model

    torch.set_num_threads(1)
    model = load_model(config.model.name, "cpu", config.model.dtype)
    n, size = len(prompts), config.run.batch_size
    ids = [f"b{i:05d}" for i in range(n)]
    seeds = [sample_seed(config.run.seed, i) for i in ids]
    sampling, method = config.sampling.over(model.default_sampling), config.method.decode_config()
    # No warm-up call: an actor's first shard runs on a cold model too (it is inside the steady span).
    t0 = time.perf_counter()
    for s in range(0, n, size):
        generate_batch(model, prompts[s : s + size], None, ids[s : s + size], seeds[s : s + size], sampling,
                       method)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "samples_per_s": n / seconds, "s_per_sample": seconds / n}


def _runs(args: argparse.Namespace, prompts: str, tmp: str, counts: list[int]) -> list[dict[str, Any]]:
    from sjd_batch.io import results
    from sjd_batch.io.storage import Storage
    from sjd_batch.runner import local_ray, run_job

    rows = []
    with local_ray(max(counts)):
        for k in counts:
            config = _job(args, prompts, f"{tmp}/run-{k}", k)
            summary = run_job(config, progress=False)
            if not summary.ok:
                print(summary.text(), file=sys.stderr)
            commits = results.committed_shards(Storage.from_uri(config.output.uri)).values()
            span = max(c["finished_at"] for c in commits) - min(c["started_at"] for c in commits)
            rows.append({"actors": k, "samples": summary.samples, "wall_s": summary.seconds,
                         "wall_samples_per_s": summary.samples / summary.seconds,
                         "steady_s": span, "steady_samples_per_s": summary.samples / span})
    return rows


def _report(direct: dict[str, float], rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    base = next((r for r in rows if r["actors"] == 1), rows[0])
    per_actor = base["steady_samples_per_s"] / base["actors"]
    for r in rows:
        r["efficiency"] = r["steady_samples_per_s"] / (r["actors"] * per_actor)
    overhead = base["steady_s"] / base["samples"] * base["actors"] - direct["s_per_sample"]
    return {"model": args.model, "method": args.method, "prompts": args.prompts,
            "shard_size": args.shard_size, "batch_size": args.batch_size, "direct": direct, "runs": rows,
            "overhead_s_per_sample": overhead}


def _text(report: dict[str, Any]) -> str:
    d = report["direct"]
    lines = [
        f"model {report['model']}, method {report['method']}, {report['prompts']} prompts, shard "
        f"{report['shard_size']}, batch {report['batch_size']}",
        f"direct generate(): {d['samples_per_s']:.2f} samples/s ({d['s_per_sample'] * 1000:.1f} ms/sample)",
        f"{'actors':>6} {'wall s':>8} {'wall samples/s':>15} {'steady samples/s':>17} {'efficiency':>11}",
    ]
    for r in report["runs"]:
        lines.append(f"{r['actors']:>6} {r['wall_s']:>8.1f} {r['wall_samples_per_s']:>15.2f} "
                     f"{r['steady_samples_per_s']:>17.2f} {r['efficiency']:>11.2f}")
    lines.append(f"runner overhead: {report['overhead_s_per_sample'] * 1000:.1f} ms/sample (1 actor, steady)")
    return "\n".join(lines)
