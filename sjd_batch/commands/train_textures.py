"""`sjd-batch train-textures`: train `textures-t2i` in resumable stages.

Every `TexturesTrainConfig` field is a flag. A stage starts from a model folder (`--resume-from`, by default
the shipped shapes-t2i) and writes checkpoints and a loadable model folder to `--out`. A stopped stage
continues with `sjd-batch train-textures --resume OUT` (its config is read back from OUT). The model
card (docs/models/textures-t2i.md) lists the shipped stages' exact commands. Progress goes to stdout as
one JSON object per line (and to `--log`).
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from sjd_batch.commands.train_shapes import add_config_arguments, json_log


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sjd_batch.training.textures.train import TexturesTrainConfig

    add_config_arguments(parser, TexturesTrainConfig)
    parser.add_argument("--resume", type=Path, default=None,
                        help="continue the stage saved in this folder (other flags but --log are ignored)")


def main(args: argparse.Namespace) -> int:
    from sjd_batch.training.textures.train import TexturesTrainConfig, read_config, train

    if args.resume is not None:
        if not (args.resume / "checkpoint.pt").exists():
            raise SystemExit(f"sjd-batch train-textures: {args.resume} holds no checkpoint.pt to resume")
        cfg = read_config(args.resume)
    else:
        cfg = TexturesTrainConfig(**{f.name: getattr(args, f.name) for f in fields(TexturesTrainConfig)})
    with json_log(args.log) as log:
        train(cfg, log, resume=args.resume is not None)
    return 0
