"""`sjd-batch bench-runner`: what the runner costs around the model, and what the driver costs.

One fresh job per actor count (`--actors`, default 1,2,4; e.g. 1,8,32) on an embedded Ray of `--cpus`
logical CPUs, kept up across the runs. With k actors each asks for cpus/k CPUs, so 32 actors fit on a
2-core machine: they share the cores, so samples/s there measure the runner's own costs, not scaling. Per
run:
- `wall samples/s` over the whole `run_job` call (actor start-up included), and `steady samples/s`
  from the first shard's start to the last commit (read from the commit markers);
- `overhead`: (k x steady span - model seconds) / model seconds, where model seconds are the time the
  actors spent inside the model (prompt encoding, decoding, pixels; `decode_s` in each commit marker).
  Everything else an actor does counts: reading shards, encoding and storing images, stats, commits,
  and holding no shard at all (`between`, its part of the overhead: the time in the steady span in
  which an actor held no shard, as the commit markers' spans say);
- the driver's CPU seconds (`time.process_time` of this process) and its peak RSS (sampled);
- with `--s3`: S3 requests per sample by method, counted by a proxy in front of a local SeaweedFS.
`--direct` also times the engine alone on the same prompts (1 torch thread, no Ray, one stream of
every prompt with `batch_size` in flight), the other way to see the runner's cost: `vs direct` is
the 1-actor steady seconds per sample over the direct ones, minus 1.
A benchmark, not a test: on a shared machine, compare runs side by side.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sjd_batch.config import JobConfig, absolute_paths, parse_job


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tiny-random")
    parser.add_argument("--method", default="sjd")
    parser.add_argument("--samples", "--prompts", type=int, default=96, help="samples per run")
    parser.add_argument("--actors", default="1,2,4",
                        help="comma-separated actor counts (repeat one to repeat its run)")
    parser.add_argument("--cpus", type=float, default=None,
                        help="logical CPUs of the embedded Ray (default: the largest actor count)")
    parser.add_argument("--shard-size", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--s3", action="store_true", help="write to a local SeaweedFS, counting requests")
    parser.add_argument("--direct", action="store_true", help="also time generate() alone")
    parser.add_argument("--json", help="also save the figures to this file")


def main(args: argparse.Namespace) -> int:
    from sjd_batch.commands.bench_plan import generate

    counts = [int(a) for a in args.actors.split(",")]
    cpus = args.cpus or float(max(counts))
    with tempfile.TemporaryDirectory(prefix="sjd-bench-runner-") as tmp:
        [prompts] = generate(Path(tmp) / "prompts", 1, args.samples)
        direct = _direct(_job(args, str(prompts), f"{tmp}/direct", 1, 1.0)) if args.direct else None
        if args.s3:
            from sjd_batch.commands.bench_s3 import local_s3

            (Path(tmp) / "s3").mkdir()
            with local_s3(str(Path(tmp) / "s3")) as proxy:
                rows = _runs(args, str(prompts), "s3://bench", counts, cpus, proxy)
        else:
            rows = _runs(args, str(prompts), tmp, counts, cpus, None)
    if direct:
        for r in rows:  # CPU-seconds per sample in the runner against the engine alone on one CPU
            cpu_s = r["cpus_per_actor"] * r["actors"] / r["steady_samples_per_s"]
            r["vs_direct"] = cpu_s / direct["s_per_sample"] - 1
    report = {"model": args.model, "method": args.method, "samples": args.samples, "cpus": cpus,
              "shard_size": args.shard_size, "batch_size": args.batch_size, "s3": args.s3,
              "direct": direct, "runs": rows}
    print(_text(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, sort_keys=True))
    return 0 if all(r["ok"] for r in rows) else 1


def _job(args: argparse.Namespace, prompts: str, out: str, actors: int, cpus_per_actor: float) -> JobConfig:
    return absolute_paths(parse_job({
        "name": f"bench-runner-{actors}", "model": {"name": args.model}, "method": {"name": args.method},
        "input": {"uris": [prompts], "shard_size": args.shard_size}, "output": {"uri": out},
        "run": {"batch_size": args.batch_size, "num_actors": actors, "cpus_per_actor": cpus_per_actor},
    }))


def _direct(config: JobConfig) -> dict[str, float]:
    """Seconds per sample of `generate_stream()` alone (one torch thread, like a 1-CPU actor), on the
    job's prompts with the job's sample seeds: one stream of every prompt, `batch_size` in flight, so
    that the runner's cost also includes what shard boundaries cost the engine (slots drained at the
    end of each shard)."""
    import torch

    from sjd_batch.api import generate_stream
    from sjd_batch.decoding import Request, sample_seed
    from sjd_batch.io.prompts import plan_inputs, read_shard
    from sjd_batch.models.loading import load_model

    torch.set_num_threads(1)
    [shard] = plan_inputs(list(config.input.uris), 1 << 40)
    rows = read_shard(shard)
    model = load_model(config.model.name, "cpu", config.model.dtype)
    requests = [Request(r.prompt, sample_seed(config.run.seed, r.sample_id), None) for r in rows]
    sampling, method = config.sampling.over(model.default_sampling), config.method.decode_config()
    # No warm-up call: an actor's first shard runs on a cold model too (it is inside the steady span).
    t0 = time.perf_counter()
    done = sum(1 for _ in generate_stream(model, iter(requests), sampling, method, config.run.batch_size))
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "samples_per_s": done / seconds, "s_per_sample": seconds / done}


def _runs(args: argparse.Namespace, prompts: str, out: str, counts: list[int], cpus: float,
          proxy: Any) -> list[dict[str, Any]]:
    from sjd_batch.runner import local_ray

    rows = []
    with local_ray(max(1, round(cpus))):
        for i, k in enumerate(counts):  # a folder per run: `--actors 1,1` repeats a count, never resumes
            config = _job(args, prompts, f"{out}/run-{i}-{k}", k, cpus / k)
            rows.append(_one_run(config, k, proxy))
    return rows


def _one_run(config: JobConfig, actors: int, proxy: Any) -> dict[str, Any]:
    from sjd_batch.io import results
    from sjd_batch.io.backends import open_storage
    from sjd_batch.runner import run_job

    before = proxy.snapshot() if proxy else {}
    rss = _PeakRss()
    cpu0 = time.process_time()
    summary = run_job(config, progress=False)
    driver_cpu = time.process_time() - cpu0
    peak = rss.stop()
    requests = {m: n - before.get(m, 0) for m, n in (proxy.snapshot() if proxy else {}).items()}
    commits = list(results.committed_shards(open_storage(config.output.uri)).values())
    span = max(c["finished_at"] for c in commits) - min(c["started_at"] for c in commits)
    model_s = sum(c.get("decode_s", 0.0) for c in commits)
    in_shards = _held_s(commits)
    n = summary.samples
    return {"actors": actors, "cpus_per_actor": config.run.cpus_per_actor, "ok": summary.ok, "samples": n,
            "wall_s": summary.seconds, "wall_samples_per_s": n / summary.seconds, "steady_s": span,
            "steady_samples_per_s": n / span, "model_s": model_s,
            "overhead": (actors * span - model_s) / model_s if model_s else None,
            "between": (actors * span - in_shards) / model_s if model_s else None,
            "driver_cpu_s": driver_cpu, "driver_peak_rss_mb": peak / 2**20,
            "s3_requests": requests, "s3_requests_per_sample": sum(requests.values()) / n if proxy else None}


def _held_s(commits: list[dict[str, Any]]) -> float:
    """Seconds in which each actor held at least one shard, summed over actors (an actor holds up to
    two at once, so their spans overlap: the union, not the sum)."""
    spans: dict[str, list[tuple[float, float]]] = {}
    for c in commits:
        spans.setdefault(c.get("actor", ""), []).append((c["started_at"], c["finished_at"]))
    total = 0.0
    for intervals in spans.values():
        end = float("-inf")
        for a, b in sorted(intervals):
            total += max(0.0, b - max(a, end))
            end = max(end, b)
    return total


class _PeakRss:
    """Samples this process's resident set size every 0.25 s until `stop()`, which returns the peak."""

    def __init__(self) -> None:
        self.peak, self.done = _rss(), threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while not self.done.wait(0.25):
            self.peak = max(self.peak, _rss())

    def stop(self) -> int:
        self.done.set()
        self.thread.join()
        return max(self.peak, _rss())


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _text(report: dict[str, Any]) -> str:
    where = "S3 (local SeaweedFS)" if report["s3"] else "local folder"
    lines = [f"model {report['model']}, method {report['method']}, {report['samples']} samples, shards of "
             f"{report['shard_size']}, batches of {report['batch_size']}, {report['cpus']:g} CPUs for the "
             f"actors, output {where}"]
    if report["direct"]:
        d = report["direct"]
        lines.append(f"direct (engine alone, one stream): {d['samples_per_s']:.2f} samples/s "
                     f"({d['s_per_sample'] * 1000:.1f} ms/sample); vs direct = CPU-seconds per sample in "
                     "the steady span / direct seconds per sample - 1")
    lines.append(f"{'actors':>6} {'wall s':>8} {'wall/s':>8} {'steady/s':>9} {'overhead':>9} {'between':>8} "
                 f"{'vs direct':>9} {'driver CPU s':>12} {'driver MB':>10} {'S3 req/sample':>14}")
    for r in report["runs"]:
        s3 = f"{r['s3_requests_per_sample']:.2f}" if r["s3_requests_per_sample"] is not None else "-"
        lines.append(f"{r['actors']:>6} {r['wall_s']:>8.1f} {r['wall_samples_per_s']:>8.1f} "
                     f"{r['steady_samples_per_s']:>9.1f} {_pct(r['overhead']):>9} {_pct(r['between']):>8} "
                     f"{_pct(r.get('vs_direct')):>9} "
                     f"{r['driver_cpu_s']:>12.1f} {r['driver_peak_rss_mb']:>10.0f} {s3:>14}")
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return f"{100 * x:.1f}%" if x is not None else "-"
