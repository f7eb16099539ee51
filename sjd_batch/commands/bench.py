"""`sjd-batch bench`: decoding methods side by side, in one process, on the same prompts and seeds.

Timing protocol (`measure.py`): warm-up runs (`--warmup`, each one batch) are excluded; the prompts are
cut into rounds (`--round`, default 8 x batch) and in each round every (method, schedule) decodes the
same prompts back to back, so drift on a shared machine hits all of them alike; the device is
synchronised before clocks are read; speed-ups are per-round ratios against `ar` (same schedule and
batch), reported with a 95% interval over the rounds.

Figures per (method, schedule, batch):
  images_per_s     the one images/s (`sjd_batch/throughput.py`): images made, pixels included, over
                   the wall seconds of the runs that made them (prompts in to images out)
  engine_overhead  (wall - pixel decoding) / summed wall time of the `model.forward` calls, prefills
                   included, timed in the same runs (`ForwardTimer`, device synchronised around each
                   forward): 1.0 would mean the engine costs nothing around the network
  tokens_per_forward  tokens each row feeds a decode forward, prefills left out: 1 for `ar`, the
                   window for a chain, more for a draft tree (the compute a forward costs per row)
  idle_share       share of slot-forwards spent on slots with no unfinished sample (`EngineStats`):
                   with `--schedule fixed` (the old fixed batches) finished rows ride along until the
                   batch's slowest row is done; `continuous` refills a slot as soon as it is free, so
                   only each round's final drain idles (`idle_share_before_drain`: the idle share
                   while prompts were still waiting, 0 for `continuous` on a CPU)

`hf-generate` is a baseline beside our methods: transformers' own `generate()` on the same model, device,
prompts and sampling as `ar`, through the model's `hf_generate(prompts, seed, sampling)` (Emu3, Janus,
and Llama models without grid positions such as tiny-random), in fixed batches. It counts one forward per
token, and its tokens are checked against the layout (`layout_violations`). Models without `hf_generate`
report it as unsupported; the other methods still run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import torch

from sjd_batch import throughput
from sjd_batch.commands.measure import (  # noqa: F401 (follows_layout, hf_generate_results: re-exported)
    HF_GENERATE,
    MethodSpec,
    Run,
    Runner,
    follows_layout,
    hf_generate_results,
    parse_methods,
    parse_value,
    ratio_interval,
)
from sjd_batch.job import git_revision
from sjd_batch.models.loading import load_model
from sjd_batch.timing import OpCounter, bench_prompts  # noqa: F401 (bench_prompts: re-exported)

Cells = dict[tuple[str, str], tuple[MethodSpec, list[Run]]]  # (label, schedule) -> spec, runs by round


def run_bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per (method, schedule, batch size); an unsupported baseline gets a row with `unsupported`."""
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    if args.compile:
        from sjd_batch.models.compiled import compile_forward

        model = compile_forward(model)
    common = dict(parse_value(p) for p in args.set)
    specs, rows = supported(model, parse_methods(args.methods, common))
    prompts = bench_prompts(model, args.prompts, args.seed)
    schedules = [s.strip() for s in args.schedule.split(",")]
    for batch_size in [int(b) for b in str(args.batch_size).split(",")]:
        runs = measure(model, specs, schedules, prompts, batch_size, args)
        summary = summarise(model, runs, batch_size)
        if args.ops:
            count_ops(model, specs, summary, prompts[: 2 * batch_size], args.seed)
        rows += summary
    return rows


def count_ops(model: Any, specs: list[MethodSpec], rows: list[dict[str, Any]], prompts: list[str],
              seed: int) -> None:
    """`--ops`: top-level torch operators per forward, inside the model and around it, from one extra
    profiled run of two batches per method (continuous schedule), added to the rows as `ops_per_forward`."""
    for spec in specs:
        if spec.method == HF_GENERATE:
            continue
        ids = [f"ops-{i}" for i in range(len(prompts))]
        with OpCounter(model) as ops:
            Runner(model, seed, rows[0]["batch_size"])(spec, prompts, ids)
        for row in rows:
            if row["method"] == spec.label:
                row["ops_per_forward"] = ops.per_forward()


def supported(model: Any, specs: list[MethodSpec]) -> tuple[list[MethodSpec], list[dict[str, Any]]]:
    """Drop `hf-generate` when the model has no `hf_generate`; say so in a row of its own."""
    if callable(getattr(model, "hf_generate", None)):
        return specs, []
    notes = [
        {"model": model.name, "method": spec.label,
         "unsupported": f"model {model.name} has no hf_generate(): the transformers generate() baseline "
                        "exists for Emu3, Janus and our Llama models without grid positions"}
        for spec in specs if spec.method == HF_GENERATE
    ]
    for note in notes:
        print(f"{note['method']}: skipped: {note['unsupported']}", file=sys.stderr)
    return [spec for spec in specs if spec.method != HF_GENERATE], notes


def measure(model: Any, specs: list[MethodSpec], schedules: list[str], prompts: list[str], batch_size: int,
            args: argparse.Namespace) -> Cells:
    """Runs of every (spec, schedule), round by round; warm-up runs excluded."""
    cells = [(spec, sched) for sched in schedules for spec in specs
             if not (spec.method == HF_GENERATE and sched != schedules[0])]
    runners = {sched: Runner(model, args.seed, batch_size, sched) for sched in schedules}
    for spec, sched in cells:
        for _ in range(args.warmup):
            warm = prompts[:batch_size]
            runners[sched](spec, warm, [f"warmup-{i}" for i in range(len(warm))])
    size = args.round or 8 * batch_size
    runs: Cells = {(spec.label, sched): (spec, []) for spec, sched in cells}
    rounds = -(-len(prompts) // size)
    for index, start in enumerate(range(0, len(prompts), size)):
        chunk = prompts[start : start + size]
        ids = [str(i) for i in range(start, start + len(chunk))]
        for spec, sched in cells:
            runs[spec.label, sched][1].append(runners[sched](spec, chunk, ids, index))
        # a 512-prompt bench runs for many minutes on a CPU: one line per round says where it stands
        rates = ", ".join(f"{label} {sched} {cell[-1].images_per_s:.2f}"
                          for (label, sched), (_, cell) in runs.items())
        print(f"round {index + 1}/{rounds}: images/s {rates}", file=sys.stderr, flush=True)
    return runs


def summarise(model: Any, runs: Cells, batch_size: int) -> list[dict]:
    rows = []
    for (label, sched), (spec, cell) in runs.items():
        ar = runs.get(("ar", sched), runs[next(iter(runs))])[1]
        stats = [r.stats for run in cell for r in run.results]
        ar_nfe = sum(r.stats.nfe for run in ar for r in run.results)
        wall, pixel, fwd = (sum(getattr(r, k) for r in cell) for k in ("wall_s", "pixel_s", "forward_s"))
        lat = [s.prefill_s + s.decode_s for s in stats]
        ar_lat = [r.stats.prefill_s + r.stats.decode_s for run in ar for r in run.results]
        tested = _sum_lists(s.tested_by_offset for s in stats)
        accepted = _sum_lists(s.accepted_by_offset for s in stats)
        speed = ratio_interval([c.images_per_s / a.images_per_s for c, a in zip(cell, ar, strict=True)])
        idle = [(int(r.engine.idle), r.engine.iterations * r.engine.slots) for r in cell]
        waiting = sum(int(r.engine.idle_while_pending) for r in cell)
        ours = spec.method != HF_GENERATE
        rows.append({
            "model": model.name, "method": label, "schedule": sched if ours else "fixed",
            "params": spec.params, "batch_size": batch_size, "samples": len(stats), "rounds": len(cell),
            "tokens_per_image": model.layout.length, "nfe_mean": statistics.fmean(s.nfe for s in stats),
            "step_compression": ar_nfe / sum(s.nfe for s in stats),
            "accept_len_mean": statistics.fmean(a for s in stats for a in s.accept_lens),
            "acceptance_by_offset": [a / n if n else 0.0 for a, n in zip(accepted, tested, strict=True)],
            "latency_s_mean": statistics.fmean(lat),
            "latency_speedup_vs_ar": statistics.fmean(ar_lat) / statistics.fmean(lat),
            "images_per_s": throughput.images_per_s(len(stats), wall),
            "images_per_s_vs_ar": speed[0], "images_per_s_vs_ar_95": [speed[1], speed[2]],
            # hf-generate's forwards run inside transformers, out of the timer's reach
            "engine_overhead": (wall - pixel) / fwd if fwd else None,
            "idle_share": sum(i for i, _ in idle) / max(1, sum(t for _, t in idle)) if ours else None,
            "idle_share_before_drain": waiting / max(1, sum(t for _, t in idle)) if ours else None,
            "forward_calls": sum(r.forwards for r in cell),
            "tokens_per_forward": _tokens_per_forward(cell), "peak_mem_mb": max(r.peak_mb for r in cell),
            "device": str(model.device), "images_per_s_by_round": [r.images_per_s for r in cell],
            **_spreads(runs, label, sched, cell),
            **({"layout_violations": sum(not s.extra.get("layout_ok", True) for s in stats)}
               if not ours else {}),
        })
    return rows


def _spreads(runs: Cells, label: str, sched: str, cell: list[Run]) -> dict[str, Any]:
    """95% intervals over the rounds: the engine overhead, and (continuous rows, when the same method
    also ran in fixed batches) the images/s ratio continuous / fixed, round by round."""
    out: dict[str, Any] = {}
    if all(r.forward_s for r in cell):
        _, lo, hi = ratio_interval([(r.wall_s - r.pixel_s) / r.forward_s for r in cell])
        out["engine_overhead_95"] = [lo, hi]
    fixed = runs.get((label, "fixed"))
    if sched == "continuous" and fixed is not None:
        mean, lo, hi = ratio_interval([c.images_per_s / f.images_per_s
                                       for c, f in zip(cell, fixed[1], strict=True)])
        out["images_per_s_vs_fixed"], out["images_per_s_vs_fixed_95"] = mean, [lo, hi]
    return out


def _tokens_per_forward(cell: list[Run]) -> float | None:
    """Tokens per row in a decode forward: 1 for AR, the window for a chain, more with a draft tree
    (None for hf-generate, whose forwards run inside transformers)."""
    calls = sum(r.decode_forwards for r in cell)
    return sum(r.decode_tokens for r in cell) / calls if calls else None


def _sum_lists(lists) -> list[int]:
    out: list[int] = []
    for values in lists:
        out = [(out[i] if i < len(out) else 0) + (values[i] if i < len(values) else 0)
               for i in range(max(len(out), len(values)))]
    return out


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (f"{'method':<26}{'sched':>6}{'batch':>6}{'NFE':>8}{'steps x':>8}{'img/s':>9}"
            f"{'img/s x AR (95%)':>22}{'tok/fwd':>8}{'engine x':>9}{'idle %':>7}{'MB':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        if "unsupported" in r:
            print(f"{r['method']:<26}unsupported: {r['unsupported']}")
            continue
        lo, hi = r["images_per_s_vs_ar_95"]
        ratio = f"{r['images_per_s_vs_ar']:.2f} [{lo:.2f}, {hi:.2f}]"
        idle = "-" if r["idle_share"] is None else f"{100 * r['idle_share']:.1f}"
        print(f"{r['method']:<26}{r['schedule'][:5]:>6}{r['batch_size']:>6}{r['nfe_mean']:>8.1f}"
              f"{r['step_compression']:>8.2f}{r['images_per_s']:>9.2f}{ratio:>22}{_fmt(r['tokens_per_forward']):>8}"
              f"{_fmt(r['engine_overhead']):>9}"
              f"{idle:>7}{r['peak_mem_mb']:>7.0f}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="shapes-t2i",
                        help="a registered name, family:source, a model folder, an s3:// prefix or a hub id")
    parser.add_argument(
        "--methods",
        default="ar,sjd,sjd-vp,mc-sjd",
        help="comma list; each `name[:key=value...]`, e.g. sjd-vp:vp_lambda=1.0 (ar is always added); "
        "hf-generate times transformers' own generate() (Emu3, Janus)",
    )
    parser.add_argument(
        "--prompts", type=int, default=16, help="number of prompts (same prompts and seeds per method)"
    )
    parser.add_argument("--batch-size", default="1", help="batch size, or a comma list for a sweep (1,4,16)")
    parser.add_argument("--schedule", default="continuous",
                        help="continuous (refill a slot as soon as it is free), fixed (the old fixed "
                        "batches), or both: continuous,fixed")
    parser.add_argument("--round", type=int, default=0,
                        help="prompts per interleaved round (default 8 x batch size); ratios get a 95%% "
                        "interval over the rounds")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="parameter for every non-AR method, e.g. --set window=32 (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=2,
                        help="excluded warm-up runs per method and schedule, each decoding one batch of "
                             "--batch-size prompts (1 is enough on a CPU; a GPU tunes in the first few)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--compile", action="store_true", help="torch.compile the window forward")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--ops", action="store_true",
                        help="also count the torch operators per forward, inside the model and around "
                        "it (one extra profiled run of two batches per method)")
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")


def main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.time()
    rows = run_bench(args)
    print_table(rows)
    for r in rows:
        if "ops_per_forward" in r:
            ops = r["ops_per_forward"]
            print(f"{r['method']} ({r['schedule']}, batch {r['batch_size']}): {ops['model']:.0f} torch "
                  f"operators per forward in the model, {ops['around']:.0f} around it")
    if args.json:
        meta = {
            "command": "sjd-batch bench " + " ".join(sys.argv[2:]),
            "wall_s": time.time() - started,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "git": git_revision(),
        }
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": rows}, f, indent=2)
        print(f"wrote {args.json}")
    return 0
