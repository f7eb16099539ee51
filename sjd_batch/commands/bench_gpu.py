"""`sjd-batch bench-gpu --out DIR` (`make bench-gpu OUT=DIR`): what a lent GPU should measure, in one
command, within a time budget (default 480 s), everything written as JSON under DIR:

1. `tests.json` (+ `gpu-tests.xml`): the CUDA tests (`pytest -m gpu`), in a subprocess;
2. `forward-<family>.json`: forward ms against window (1-64) and batch (1-64) at the published sizes
   of Lumina-mGPT-7B, Emu3-8B, Janus-Pro-7B and LlamaGen-XL (`projection.ARCHS`): a Llama decoder of
   that width, depth, heads, MLP and LM head, random weights (timing does not depend on their values),
   bf16, with CFG rows and a KV cache half-way through an image; family-specific extras (Chameleon's
   qk-norm, Janus' separate image embedding) are left out;
3. `generate-<family>.json`: our `ar` against transformers' `generate()` on a random LM of the first of
   those sizes (same prompts, CFG and layout grammar; 257 tokens), batch 1 and 16;
4. `bench-<model>.json`: `sjd-batch bench` of ar, sjd, sjd-vp, mc-sjd and mc-sjd-vp (`--methods`) on
   each shipped model on the device;
5. `bench-gpu.json`: what ran, for how long, and what the budget cut.

The forward files name the GPU (`gpu`), so `sjd-batch project --forward DIR/forward-<family>.json` turns
them into the projection table with measured forward times in place of the roofline.

Each step has a share of the budget and stops early rather than overrun it. `--small` is the CPU
rehearsal the tests run: tiny sizes, tiny-random, a few prompts, the same code path.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from sjd_batch.decoding import SamplingConfig
from sjd_batch.job import git_revision
from sjd_batch.projection import ARCHS, Arch

METHODS = "ar,sjd,sjd-vp,mc-sjd,mc-sjd-vp"
SMALL_ARCH = Arch("small", hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, head_vocab=600,
                  tokens=73)
SHARES = {"tests": 0.15, "forward": 0.35, "generate": 0.15}  # of the budget (in this order); bench: the rest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder for the JSON files (created)")
    parser.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget of all steps")
    parser.add_argument("--small", action="store_true", help="CPU rehearsal: tiny sizes and prompts")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--archs", default=",".join(ARCHS), help="published sizes to time")
    parser.add_argument("--windows", default="1,2,4,8,16,32,64")
    parser.add_argument("--batch-sizes", default="1,2,4,8,16,32,64")
    parser.add_argument("--models", default="shapes-t2i,textures-t2i", help="shipped models to bench")
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--prompts", type=int, default=64, help="prompts per bench (per batch size)")
    parser.add_argument("--bench-batch-sizes", default="1,16")
    parser.add_argument("--tests", default="tests", help="where pytest looks for the gpu-marked tests")
    parser.add_argument("--generate-batch-sizes", default="1,16", help="ar against HF generate(): batches")
    parser.add_argument("--generate-tokens", type=int, default=257,
                        help="ar against HF generate(): tokens per image (257: 16 rows of 15 codes)")


def gpu_test_files(root: str) -> list[str]:
    """The test files under `root` (a folder or one file) that hold a gpu-marked test.

    Only these are handed to pytest: collecting the whole suite imports Ray and boto3, which a bare GPU
    machine may lack (and cannot fetch), and one collection error would stop every GPU test with it."""
    path = Path(root)
    files = [path] if path.is_file() else sorted(path.rglob("test_*.py"))
    return [str(f) for f in files if "mark.gpu" in f.read_text(errors="replace")]


def run_tests(args: argparse.Namespace, out: Path, seconds: float) -> dict[str, Any]:
    """`pytest -m gpu` on the gpu-marked files, in a subprocess, cut at `seconds`."""
    files = gpu_test_files(args.tests)
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
           f"--junitxml={out / 'gpu-tests.xml'}", f"--basetemp={out / 'pytest-tmp'}", *files]
    if not files:
        report = {"step": "tests", "status": "no gpu-marked test collected", "seconds": 0.0,
                  "command": " ".join(cmd), "tail": f"no file under {args.tests} marks a test gpu"}
        (out / "tests.json").write_text(json.dumps(report, indent=1))
        return report
    t0 = time.monotonic()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=max(1.0, seconds))
        status = {0: "ok", 5: "no gpu-marked test collected"}.get(done.returncode,
                                                                   f"failed (rc {done.returncode})")
        tail = done.stdout[-2000:]
    except subprocess.TimeoutExpired as e:
        status, tail = "cut by budget", (e.stdout or b"")[-2000:].decode(errors="replace")
    report = {"step": "tests", "status": status, "seconds": time.monotonic() - t0, "command": " ".join(cmd),
              "tail": tail}
    (out / "tests.json").write_text(json.dumps(report, indent=1))
    return report


def random_model(arch: Arch, device: str, dtype: str) -> Any:
    """A random-weight Llama decoder of `arch`'s sizes with a row layout of about `arch.tokens` tokens."""
    from sjd_batch.models.loading import resolve_dtype
    from sjd_batch.models.shapes.tiny import TinySpec, build_tiny

    height = round(math.sqrt(arch.tokens))
    width = max(1, (arch.tokens - 1) // height - 1)  # height rows of (width codes + EOL), then EOI
    codes = min(16384, arch.head_vocab // 2)
    spec = TinySpec(height=height, width=width, num_codes=codes, num_words=arch.head_vocab - codes - 8,
                    hidden=arch.hidden, layers=arch.layers, heads=arch.heads, kv_heads=arch.kv_heads,
                    intermediate=arch.intermediate, max_positions=arch.prompt + arch.tokens + 128,
                    init_on_device=True, name=f"random-{arch.name}")
    return build_tiny(spec, device=device, dtype=resolve_dtype(dtype))


def run_forward(args: argparse.Namespace, out: Path, deadline: float) -> list[dict[str, Any]]:
    """Forward ms per (window, batch) for each architecture, until the deadline."""
    from sjd_batch.tuning import forward_grid

    archs = [SMALL_ARCH] if args.small else [ARCHS[a.strip()] for a in args.archs.split(",")]
    windows, batches = _ints(args.windows), _ints(args.batch_sizes)
    reports = []
    for arch in archs:
        t0 = time.monotonic()
        if t0 > deadline:
            reports.append({"step": f"forward {arch.name}", "status": "cut by budget", "seconds": 0.0})
            continue
        model = random_model(arch, args.device, args.dtype)
        grid = forward_grid(model, SamplingConfig(cfg_scale=3.0), windows, batches, repeats=3, warmup=1,
                            deadline=deadline)
        payload = {"arch": vars(arch), "device": str(model.device), "gpu": device_name(args.device),
                   "dtype": str(model.dtype), "tokens_per_image": model.layout.length, "cfg_rows": True,
                   "forward_ms": grid}
        (out / f"forward-{arch.name}.json").write_text(json.dumps(payload, indent=1))
        cells = len(windows) * len(batches)
        status = "ok" if len(grid) == cells else f"{len(grid)} of {cells} cells (memory or budget)"
        reports.append({"step": f"forward {arch.name}", "status": status, "seconds": time.monotonic() - t0})
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return reports


def run_generate(args: argparse.Namespace, out: Path, deadline: float) -> list[dict[str, Any]]:
    """Our `ar` against transformers' `generate()` on one random LM at the first published size: the same
    prompts, sampling (CFG 3) and layout grammar, batch 1 (latency) and more, each timed after a warm-up.

    The layout is cut to `--generate-tokens` (257 by default: 16 rows of 15 codes) so both fit the
    budget; per token, a short image and a long one cost the same but for attention over the longer
    context."""
    from sjd_batch.commands.measure import Runner, parse_methods

    arch = SMALL_ARCH if args.small else ARCHS[args.archs.split(",")[0].strip()]
    t0, step = time.monotonic(), f"generate {arch.name}"
    if t0 > deadline:
        return [{"step": step, "status": "cut by budget", "seconds": 0.0}]
    model = random_model(replace(arch, tokens=args.generate_tokens), args.device, args.dtype)
    batches = _ints(args.generate_batch_sizes)
    prompts = model.example_prompts(max(batches))
    rows = []
    for batch in batches:
        runner, ids = Runner(model, 0, batch), [str(i) for i in range(batch)]
        for spec in parse_methods("ar,hf-generate", {"cfg_scale": 3.0}):
            if time.monotonic() > deadline:
                break
            runner(spec, prompts[:batch], ids)  # warm-up: kernels, allocator, HF's first-call set-up
            run = runner(spec, prompts[:batch], ids)
            decode_s = run.wall_s - run.pixel_s
            rows.append({"method": spec.label, "batch": batch, "images_per_s": run.images_per_s,
                         "ms_per_token": 1e3 * decode_s / model.layout.length})
            print(f"{step}: {spec.label} batch {batch}: {rows[-1]['ms_per_token']:.2f} ms per token")
    payload = {"arch": vars(arch), "device": str(model.device), "gpu": device_name(args.device),
               "dtype": str(model.dtype), "tokens_per_image": model.layout.length, "cfg_scale": 3.0,
               "results": rows}
    (out / f"generate-{arch.name}.json").write_text(json.dumps(payload, indent=1))
    status = "ok" if len(rows) == 2 * len(batches) else f"{len(rows)} of {2 * len(batches)} runs (budget)"
    return [{"step": step, "status": status, "seconds": time.monotonic() - t0}]


def run_benches(args: argparse.Namespace, out: Path, deadline: float) -> list[dict[str, Any]]:
    """`bench` of `--methods` on each shipped model (tiny-random with --small)."""
    from sjd_batch.commands.bench import print_table, run_bench
    from sjd_batch.models.registry import MODELS

    reports = []
    for name in ["tiny-random"] if args.small else [m.strip() for m in args.models.split(",")]:
        t0 = time.monotonic()
        if name not in MODELS:
            reports.append({"step": f"bench {name}", "status": "not a registered model here", "seconds": 0.0})
            continue
        if t0 > deadline:
            reports.append({"step": f"bench {name}", "status": "cut by budget", "seconds": 0.0})
            continue
        bench_args = argparse.Namespace(
            model=name, methods=args.methods, prompts=args.prompts, batch_size=args.bench_batch_sizes,
            schedule="continuous", round=0, set=[], seed=0, warmup=1, device=args.device,
            dtype=args.dtype, compile=False, ops=False)
        rows = run_bench(bench_args)
        print_table(rows)
        meta = {"command": f"sjd-batch bench-gpu (bench {name})", "git": git_revision(),
                "torch": torch.__version__, "args": vars(bench_args)}
        (out / f"bench-{name}.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
        reports.append({"step": f"bench {name}", "status": "ok", "seconds": time.monotonic() - t0})
    return reports


def device_name(device: str) -> str:
    """The CUDA device's name (`sjd-batch project --forward` reads the GPU from it), else `device`."""
    return torch.cuda.get_device_name(device) if device.startswith("cuda") else device


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    budget = args.budget_s
    steps = [run_tests(args, out, SHARES["tests"] * budget)]
    steps += run_forward(args, out, start + (SHARES["tests"] + SHARES["forward"]) * budget)
    steps += run_generate(args, out, start + sum(SHARES.values()) * budget)
    steps += run_benches(args, out, start + budget)
    summary = {"git": git_revision(), "device": device_name(args.device), "budget_s": budget,
               "small": args.small, "wall_s": time.monotonic() - start, "steps": steps}
    (out / "bench-gpu.json").write_text(json.dumps(summary, indent=1))
    for s in steps:
        print(f"{s['step']:<32} {s['status']:<40} {s['seconds']:8.1f} s")
    print(f"wrote {out}/ ({summary['wall_s']:.0f} s of a {budget:.0f} s budget)")
    fine = ("ok", "not a registered model here", "no gpu-marked test collected")
    return 0 if all(s["status"] in fine for s in steps) else 1
