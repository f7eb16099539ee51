"""Measure and draw everything the `shapes-t2i` model card shows.

Run `python -m sjd_batch.training.shapes.card --out docs/models` to regenerate the figures and print
every number as JSON. Uses matplotlib (model-card path only; nothing else in the package imports it).
The functions take the generator and tokenizer as parameters, so textures-t2i's card
(`sjd_batch.training.textures.card`) uses them too.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from sjd_batch.api import generate
from sjd_batch.decoding.sampling import cfg_combine
from sjd_batch.models.blocks.llama_t2i import LlamaT2IModel
from sjd_batch.models.shapes.model import ASSETS, load_shapes, load_tokenizer
from sjd_batch.models.shapes.tokenizer import PatchTokenizer, psnr
from sjd_batch.training.shapes.checker import check, mismatched_caption
from sjd_batch.training.shapes.data import make_batch, make_sample
from sjd_batch.training.shapes.objective import next_logits, sequences

HELDOUT = 999


def read_logs(paths: list[Path]) -> list[dict]:
    """Training logs of consecutive stages (a resumed run restarts at step 0), steps made cumulative."""
    rows: list[dict] = []
    for path in paths:
        offset = rows[-1]["step"] + 1 if rows else 0
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if "step" in row:
                row["step"] += offset
            rows.append(row)
    return rows


def loss_curve(log_paths: list[Path], png: Path) -> dict[str, float]:
    """Plot train loss and held-out NLL from the JSON-lines training logs."""
    import matplotlib.pyplot as plt

    rows = read_logs(log_paths)
    train = [r for r in rows if r["event"] == "train"]
    evals = [r for r in rows if r["event"] == "eval"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [r["step"] for r in evals]
    # the train loss is the weighted objective when --object-weight > 1 (stage 2), not the plain NLL
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], lw=0.8, label="train loss (as optimised)")
    ax.plot(steps, [r["heldout_cond_nll"] for r in evals], "o-", label="held-out code NLL, captioned")
    ax.plot(steps, [r["heldout_uncond_nll"] for r in evals], "s-", label="held-out code NLL, empty caption")
    batch = json.loads(log_paths[0].with_name("train_config_stage1.json").read_text())["batch"]
    ax.set_xlabel(f"step (batch {batch})")
    ax.set_ylabel("nats / token")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return {"final_" + k: evals[-1][k] for k in ("heldout_cond_nll", "heldout_uncond_nll")} | {
        "steps": train[-1]["step"] + 1}


@torch.no_grad()
def entropies(
    model: LlamaT2IModel, count: int, cfg_scale: float, make_batch: Callable = make_batch,
    tokenizer: PatchTokenizer | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Next-token entropy (nats) at every image-code position of held-out images, teacher-forced.

    Returns (without guidance, with CFG at `cfg_scale`), both over the image-code ids only.
    """
    pixels, captions, _ = make_batch(HELDOUT, 0, count)
    codes = (tokenizer or load_tokenizer()).encode(torch.from_numpy(pixels))
    cond, labels = sequences(captions, codes, model.vocab, torch.zeros(count, dtype=torch.bool))
    uncond, ulabels = sequences(captions, codes, model.vocab, torch.ones(count, dtype=torch.bool))
    start = model.vocab.code_start

    def code_logits(ids: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
        logits = next_logits(model.lm, model.grid, ids)[:, :, start:]
        return logits[lab[:, 1:] >= start]  # [positions, K], the same positions in both layouts

    c, u = code_logits(cond, labels), code_logits(uncond, ulabels)
    out = []
    for z in (c, cfg_combine(torch.cat([c[None], u[None]]), cfg_scale, "raw")[0]):
        p = z.softmax(-1)
        out.append(-(p * p.clamp_min(1e-30).log()).sum(-1).numpy())
    return out[0], out[1]


def entropy_histogram(model: LlamaT2IModel, png: Path, count: int = 64, **data) -> dict[str, float]:
    """`data`: `make_batch` and `tokenizer` for another generator (see `entropies`)."""
    import matplotlib.pyplot as plt

    plain, guided = entropies(model, count, model.default_sampling.cfg_scale, **data)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0, max(plain.max(), guided.max()), 50)
    ax.hist(plain, bins=bins, alpha=0.6, label=f"cfg 1.0 (mean {plain.mean():.2f})")
    scale = model.default_sampling.cfg_scale
    ax.hist(guided, bins=bins, alpha=0.6, label=f"cfg {scale} (mean {guided.mean():.2f})")
    ax.set_xlabel("next-token entropy over image codes (nats)")
    ax.set_ylabel(f"positions ({count} held-out images x 256)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return {"entropy_mean": float(plain.mean()), "entropy_median": float(np.median(plain)),
            "entropy_cfg_mean": float(guided.mean()), "entropy_cfg_median": float(np.median(guided))}


def sample_grid(model: LlamaT2IModel, prompts: list[str], method: str, png: Path, seed: int = 0) -> dict:
    """Generate one image per prompt, draw them with their captions and checker verdicts."""
    import matplotlib.pyplot as plt

    results = generate(model, prompts, method=method, seed=seed, batch_size=16)
    cols = 4
    rows = -(-len(prompts) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.6, rows * 3.5))
    for ax, r in zip(axes.flat, results, strict=False):
        ok = check(r.pixels.numpy(), r.prompt).ok
        ax.imshow(r.pixels.numpy(), interpolation="nearest")
        ax.set_title(("OK " if ok else "MISS ") + "\n".join(textwrap.wrap(r.prompt, 30)), fontsize=6.5,
                     color="black" if ok else "red")
        ax.axis("off")
    for ax in axes.flat[len(results):]:
        ax.axis("off")
    fig.suptitle(f"{model.name}, method {method}, seed {seed}", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return {"adherence": float(np.mean([check(r.pixels.numpy(), r.prompt).ok for r in results])),
            "nfe": sum(r.stats.nfe for r in results)}


def checker_accuracy(
    count: int = 2000, make_batch: Callable = make_batch, tokenizer: PatchTokenizer | None = None
) -> dict[str, float]:
    """Checker on ground truth, on tokenised-then-decoded ground truth, and on mismatched captions."""
    pixels, captions, samples = make_batch(HELDOUT, 0, count)
    tokenizer = tokenizer or load_tokenizer()
    decoded = tokenizer.decode(tokenizer.encode(torch.from_numpy(pixels))).numpy()
    rng = np.random.default_rng(0)
    wrong = [mismatched_caption(s.objects, rng) for s in samples]
    gt = [check(p, c) for p, c in zip(pixels, captions, strict=True)]
    tok = [check(p, c) for p, c in zip(decoded, captions, strict=True)]
    return {
        "images": count,
        "gt_ok": float(np.mean([v.ok for v in gt])), "gt_size_ok": float(np.mean([v.size_ok for v in gt])),
        "tokenised_ok": float(np.mean([v.ok for v in tok])),
        "tokenised_size_ok": float(np.mean([v.size_ok for v in tok])),
        "mismatch_rejected": float(np.mean([not check(p, c).ok for p, c in zip(pixels, wrong, strict=True)])),
        "tokenizer_psnr_db": psnr(torch.from_numpy(pixels), torch.from_numpy(decoded)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/models"))
    parser.add_argument("--grid-prompts", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)
    model = load_shapes()
    prompts = [make_sample(HELDOUT + 1, i).caption for i in range(args.grid_prompts)]
    report = {
        "loss": loss_curve(sorted(ASSETS.glob("train_log*.jsonl")), args.out / "shapes-t2i-loss.png"),
        "entropy": entropy_histogram(model, args.out / "shapes-t2i-entropy.png"),
        "checker": checker_accuracy(),
        "grid_ar": sample_grid(model, prompts, "ar", args.out / "shapes-t2i-samples-ar.png"),
        "grid_sjd_vp": sample_grid(model, prompts, "sjd-vp", args.out / "shapes-t2i-samples-sjd-vp.png"),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
