"""The `sjd-batch` entry point. Each subcommand lives in its own module, which exposes
`add_arguments(parser)` and `main(args) -> int`; only the chosen one is imported, so
`sjd-batch --help` stays fast and a command never pays for another's imports."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": (
        "sjd_batch.commands.generate",
        "generate a few images in-process and print their statistics",
    ),
    "bench": (
        "sjd_batch.commands.bench",
        "compare decoding methods side by side on the same prompts and seeds",
    ),
    "run": ("sjd_batch.commands.run", "run or resume a job YAML on Ray (embedded, or RAY_ADDRESS)"),
    "plan": ("sjd_batch.commands.plan", "a job's shards, what is committed and left, and the time left"),
    "compact": ("sjd_batch.commands.compact", "merge a job's per-shard stats into large files, atomically"),
    "submit": ("sjd_batch.commands.submit", "submit a job YAML to a Ray cluster through the Ray Jobs API"),
    "status": ("sjd_batch.commands.status", "committed, failed and pending shards of a job output"),
    "stats": ("sjd_batch.commands.stats", "summarize a job's stats dataset (step compression, latency, ...)"),
    "bench-forward": (
        "sjd_batch.commands.bench_forward",
        "time one window forward by window length and batch size; latency bound per window",
    ),
    "bench-modes": ("sjd_batch.commands.bench_modes", "the engine with and without inference mode"),
    "bench-output": ("sjd_batch.commands.bench_output", "time resume and compact on a big fake output"),
    "bench-plan": ("sjd_batch.commands.bench_plan", "time `sjd-batch plan` on a generated many-row input"),
    # not "tune": Ray installs a `tune` program, and the container entrypoint runs a program of that name
    "autotune": (
        "sjd_batch.commands.tune",
        "measure forward cost and acceptance; choose the window and batch size with the most images/s",
    ),
    "project": ("sjd_batch.commands.project",
                "GPU projection table (a projection): roofline forward x measured step compression"),
    "bench-gpu": ("sjd_batch.commands.bench_gpu",
                  "on a GPU: CUDA tests, forward time at the real families' sizes, bench on the device"),
    "bench-runner": ("sjd_batch.commands.bench_runner", "runner samples/s with 1, 2, 4 CPU actors"),
    "train-shapes": ("sjd_batch.commands.train_shapes", "train the shipped shapes-t2i model from scratch"),
    "train-textures": (
        "sjd_batch.commands.train_textures",
        "train the textures-t2i model in resumable stages (see its model card)",
    ),
    "eval": ("sjd_batch.commands.eval", "per-method adherence, two-sample tests and Fréchet distance vs AR"),
    "calibrate": (
        "sjd_batch.commands.calibrate",
        "a model's decoding statistics (entropy, SJD compression, accept lengths, TV) beside real models'",
    ),
    "models": ("sjd_batch.commands.models", "registered model families and models with their defaults"),
    "report": ("sjd_batch.commands.report", "a self-contained HTML report of job outputs"),
    "schema": ("sjd_batch.commands.schema", "the job file's JSON Schema (docs/job-schema.json)"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sjd-batch", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser = _parser()
        if argv and argv[0] not in ("-h", "--help"):
            parser.error(f"unknown command {argv[0]!r}; choose one of {sorted(COMMANDS)}")
        parser.print_help()
        return 0 if argv else 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    parser = argparse.ArgumentParser(prog=f"sjd-batch {argv[0]}", description=COMMANDS[argv[0]][1])
    module.add_arguments(parser)
    return int(module.main(parser.parse_args(argv[1:])) or 0)


if __name__ == "__main__":
    sys.exit(main())
