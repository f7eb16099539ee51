"""Measure and draw the figures of the `textures-t2i` model card (docs/models/textures-t2i.md).

Run `python -m sjd_batch.training.textures.card --out docs/models` to regenerate the figures and print
every number as JSON. The measurements are shapes-t2i's card functions (`sjd_batch.training.shapes.card`)
run on the textured generator and textures-t2i's codebook.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from sjd_batch.models.loading import load_model
from sjd_batch.models.shapes.model import load_tokenizer
from sjd_batch.training.shapes.card import (
    HELDOUT,
    checker_accuracy,
    entropy_histogram,
    loss_curve,
    sample_grid,
)
from sjd_batch.training.textures.data import make_batch
from sjd_batch.training.textures.train import ASSETS, NAME


def data_grid(png: Path, count: int = 16) -> None:
    """Ground-truth training images (held-out stream) with their captions: what the model learns from."""
    import matplotlib.pyplot as plt

    pixels, captions, _ = make_batch(HELDOUT + 1, 0, count)
    cols = 4
    fig, axes = plt.subplots(-(-count // cols), cols, figsize=(cols * 2.6, -(-count // cols) * 3.2))
    for ax, p, c in zip(axes.flat, pixels, captions, strict=False):
        ax.imshow(p, interpolation="nearest")
        ax.set_title("\n".join(c[i : i + 30] for i in range(0, len(c), 30)), fontsize=6)
        ax.axis("off")
    fig.suptitle("textures-t2i training data (generator seed 1000)", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/models"))
    parser.add_argument("--grid-prompts", type=int, default=16)
    parser.add_argument("--checker-images", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)
    model = load_model(NAME)
    tokenizer = load_tokenizer(ASSETS)
    prompts = make_batch(HELDOUT + 1, 0, args.grid_prompts)[1]
    data_grid(args.out / f"{NAME}-data.png")
    report = {
        "loss": loss_curve(sorted(ASSETS.glob("train_log*.jsonl")), args.out / f"{NAME}-loss.png"),
        "entropy": entropy_histogram(model, args.out / f"{NAME}-entropy.png", make_batch=make_batch,
                                     tokenizer=tokenizer),
        "checker": checker_accuracy(args.checker_images, make_batch, tokenizer),
        "grid_ar": sample_grid(model, prompts, "ar", args.out / f"{NAME}-samples-ar.png"),
        "grid_mc_sjd": sample_grid(model, prompts, "mc-sjd", args.out / f"{NAME}-samples-mc-sjd.png"),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
