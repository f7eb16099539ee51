"""`sjd-batch train-shapes`: train the shipped `shapes-t2i` model from scratch, reproducibly.

Every `TrainConfig` field is a flag (`--steps 3200 --hidden 128 --grid-positions false ...`). The
shipped weights came from six stages, each resuming the previous one (`--resume-from`); the model
card (docs/models/shapes-t2i.md) lists their exact commands. Progress goes to stdout as one JSON
object per line (and to `--log` if given).
"""

from __future__ import annotations

import argparse
import json
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Callable, Iterator

from sjd_batch.training.shapes.train import TrainConfig, train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per `TrainConfig` field, typed from its default."""
    add_config_arguments(parser, TrainConfig)


def add_config_arguments(parser: argparse.ArgumentParser, config: type) -> None:
    """One flag per field of the dataclass `config`, typed from its default, plus `--log`."""
    for f in fields(config):
        is_bool = isinstance(f.default, bool)
        kind = _flag_bool if is_bool else type(f.default)
        shown = str(f.default).lower() if is_bool else f.default
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default,
                            metavar="true|false" if is_bool else None, help=f"default: {shown}")
    parser.add_argument("--log", type=Path, default=None, help="also append the JSON log lines to this file")


def _flag_bool(text: str) -> bool:
    """`true`/`false` (also 1/0, yes/no): argparse's `type=bool` would read "false" as True."""
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def main(args: argparse.Namespace) -> int:
    """Train, logging JSON lines; the assets land in `--out`."""
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    with json_log(args.log) as log:
        train(cfg, log)
    return 0


@contextmanager
def json_log(path: Path | None) -> Iterator[Callable[[dict], None]]:
    """A logger that prints one JSON object per line and, with `path`, appends it there too."""
    sink = path.open("a") if path else None

    def log(record: dict) -> None:
        line = json.dumps(record)
        print(line, flush=True)
        if sink:
            sink.write(line + "\n")
            sink.flush()

    try:
        yield log
    finally:
        if sink:
            sink.close()
