"""`sjd-batch schema`: print the job file's JSON Schema (the same as docs/job-schema.json).

Editors that speak JSON Schema (VS Code's YAML extension, for one) can check a job file while it is
written: add `# yaml-language-server: $schema=<path to docs/job-schema.json>` as its first line.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--indent", type=int, default=2, help="JSON indentation (default %(default)s)")


def main(args: argparse.Namespace) -> int:
    from sjd_batch.config import job_schema

    print(json.dumps(job_schema(), indent=args.indent, sort_keys=True))
    return 0
