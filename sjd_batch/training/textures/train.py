"""Train `textures-t2i`: resumable, checkpointed, warm-started from shapes-t2i's caption layout.

The sequence, loss, caption dropout, object weighting, held-out score and adherence probe are
shapes-t2i's (`sjd_batch.training.shapes.train`); only the images differ (`data.py`), and with them the
codebook (K = 4,096 k-means codes of 4×4 patches).

A stage starts from a model folder (`resume_from`). When that folder's codebook is not this run's size
(the first stage starts from shapes-t2i, K = 512), a codebook is fitted on textured images and every
new code's embedding starts as the embedding of the shapes-t2i code nearest to it in pixel space
(`warm_start`); the transformer, the caption tokens and the grid positions are kept. So the model
begins knowing *where* the caption puts objects and roughly *what* each code looks like, and spends
its CPU budget on the new textures. A later stage starts from an earlier stage's folder and keeps its
codebook.

Every `checkpoint_minutes` the run writes `out/checkpoint.pt` (weights, optimizer, step, training
seconds) and a loadable model folder in `out`; `--resume out` continues exactly where it stopped:
batches are a pure function of (data_seed, data_offset + step).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file
from transformers import LlamaForCausalLM

from sjd_batch.models.blocks.llama_t2i import GridPositions, Vocabulary, row_layout
from sjd_batch.models.shapes import ASSETS as SHAPES_ASSETS
from sjd_batch.models.shapes import ASSETS_TEXTURES
from sjd_batch.models.shapes.model import ShapesMeta, load_grid, load_tokenizer
from sjd_batch.models.shapes.tokenizer import PatchTokenizer, nearest, psnr
from sjd_batch.training.shapes.data import IMAGE_SIZE, POSITIONS, caption_words
from sjd_batch.training.shapes.objective import weighted_loss
from sjd_batch.training.shapes.train import (
    HeldOut,
    TrainConfig,
    build_lm,
    fit_tokenizer,
    lr_at,
    probe_adherence,
    progress,
    save_assets,
    training_batch,
)
from sjd_batch.training.textures.data import TEXTURES, make_batch

CHECKPOINT = "checkpoint.pt"
NAME = "textures-t2i"
ASSETS = ASSETS_TEXTURES  # where the shipped weights live


@dataclass(frozen=True)
class TexturesTrainConfig(TrainConfig):
    """shapes-t2i's `TrainConfig` (same fields, same meaning), with textures-t2i's defaults and three more.

    `resume_from` is the model folder a stage starts from (by default the shipped shapes-t2i, see the
    module doc; empty: a fresh model sized by hidden/layers/heads/intermediate).
    """

    # textures-t2i defaults over shapes-t2i's (alphabetical), then the three new fields
    batch: int = 16
    kmeans_iterations: int = 20
    lr: float = 8e-4
    max_minutes: float = 600.0
    num_codes: int = 4096
    object_weight: float = 3.0
    out: str = "runs/textures-stage1"
    resume_from: str = str(SHAPES_ASSETS)
    top_p: float = 1.0
    warmup: int = 100
    codebook: str = ""  # a codebook.safetensors to use instead of fitting one (an earlier, identical fit)
    texture: str = "v2"  # the texture preset of the stage's images (data.TEXTURES)
    keep_optimizer: bool = False  # start from resume_from's checkpoint.pt optimizer state (same model)
    bf16: bool = True  # bfloat16 autocast for the training forward/backward (CPUs with AMX/AVX512-bf16)
    checkpoint_minutes: float = 12.0


@torch.no_grad()
def warm_start(old: LlamaForCausalLM, old_vocab: Vocabulary, old_codes: torch.Tensor,
               new_codes: torch.Tensor) -> tuple[LlamaForCausalLM, Vocabulary]:
    """A copy of `old` over a new codebook, with code embeddings guessed from pixels.

    New code k starts at the embedding of its nearest old code n(k) plus a first-order correction for
    the pixel difference: E[k] = E_old[n(k)] + (c_k - c_old[n(k)]) W, where W [D, hidden] is the least-
    squares linear map from old codebook pixels to old embeddings, applied at half strength (the fit is
    loose; held-out NLL at step 0 was 7.28 / 7.26 / 7.27 / 7.34 nats at strength 0 / 0.3 / 0.6 / 1). Codes
    that look alike start alike,
    on the input side and (tied) on the output side, so the model starts with a usable prior and new
    codes that share a nearest old code are told apart from the first step. Special, word, row-marker
    and position-bound ids keep their embeddings. old_codes [K_old, D], new_codes [K_new, D].
    """
    vocab = Vocabulary(old_vocab.words, new_codes.shape[0], row_markers=old_vocab.row_markers,
                       positions=old_vocab.positions)
    table = old.get_input_embeddings().weight
    old_emb = table[old_vocab.code_start : old_vocab.code_end]
    ones = torch.ones(len(old_codes), 1)
    w = torch.linalg.lstsq(torch.cat([old_codes, ones], 1), old_emb).solution[:-1]  # bias row dropped
    near = nearest(new_codes, old_codes)
    codes = old_emb[near] + 0.5 * (new_codes - old_codes[near]) @ w
    config = old.config.to_dict() | {"vocab_size": vocab.size}
    lm = LlamaForCausalLM(type(old.config).from_dict(config))
    state = {k: v for k, v in old.state_dict().items() if "embed_tokens" not in k and "lm_head" not in k}
    lm.load_state_dict(state, strict=False)
    new_table = torch.cat([table[: vocab.code_start], codes, table[old_vocab.code_end :]])  # markers, bound
    lm.get_input_embeddings().weight.copy_(new_table)
    lm.tie_weights()
    return lm, vocab


def _load(folder: Path) -> tuple[LlamaForCausalLM, Vocabulary, PatchTokenizer, GridPositions | None]:
    lm = LlamaForCausalLM.from_pretrained(str(folder), local_files_only=True, torch_dtype=torch.float32)
    return lm, ShapesMeta.read(folder / "vocabulary.json").vocab, load_tokenizer(folder), load_grid(folder)


def images(cfg: TexturesTrainConfig) -> Callable:
    """The stage's generator: `make_batch` with its texture preset."""
    if cfg.texture not in TEXTURES:
        raise ValueError(f"texture {cfg.texture!r} is not a preset; choose one of {sorted(TEXTURES)}")
    return partial(make_batch, cfg=TEXTURES[cfg.texture])


def codebook(cfg: TexturesTrainConfig, log: Callable[[dict], None]) -> PatchTokenizer:
    """The stage's new codebook: fitted on textured images, or read from `cfg.codebook`."""
    t0 = time.time()
    if cfg.codebook:
        tokenizer = PatchTokenizer(load_file(cfg.codebook)["codebook"])
        held = torch.from_numpy(images(cfg)(cfg.heldout_seed, 0, 256)[0])
        tok_psnr = psnr(held, tokenizer.decode(tokenizer.encode(held)))
    else:
        tokenizer, tok_psnr = fit_tokenizer(cfg, images(cfg))
    log({"event": "tokenizer", "psnr_db": round(tok_psnr, 3), "num_codes": tokenizer.num_codes,
         "from": cfg.codebook or "fit", "seconds": round(time.time() - t0, 1)})
    return tokenizer


def start(cfg: TexturesTrainConfig, log: Callable[[dict], None]):
    """The stage's tokenizer, LM, grid and vocabulary (see the module doc)."""
    if not cfg.resume_from:
        tokenizer = codebook(cfg, log)
        vocab = Vocabulary(caption_words(), cfg.num_codes, row_markers=cfg.row_markers, positions=POSITIONS)
        lm, grid = build_lm(cfg, vocab, max_len=512), None
    else:
        lm, vocab, tokenizer, grid = _load(Path(cfg.resume_from))
        if tokenizer.num_codes != cfg.num_codes:
            new = codebook(cfg, log)
            lm, vocab = warm_start(lm, vocab, tokenizer.codebook, new.codebook)
            tokenizer = new
    if vocab.words != caption_words() or vocab.positions != POSITIONS:
        raise ValueError(f"{cfg.resume_from}: its caption vocabulary is not shapes-t2i's")
    if grid is None:
        side = IMAGE_SIZE // tokenizer.patch
        grid = GridPositions(side, row_layout(side, side, vocab).row_stride, lm.config.hidden_size)
    lm.config._attn_implementation = "eager"  # CPU backward is faster than SDPA's here (shapes train.py)
    log({"event": "start", "from": cfg.resume_from, "data_offset": cfg.data_offset, "vocab": vocab.size,
         "params": sum(p.numel() for p in [*lm.parameters(), *grid.parameters()])})
    return tokenizer, lm, grid, vocab


@dataclass
class Progress:
    """Where a stage stands: saved in every checkpoint."""

    step: int = 0  # next step to run
    seconds: float = 0.0  # training seconds so far (the wall-clock budget counts these)
    tokens: int = 0


def save_checkpoint(out: Path, lm, grid, opt, state: Progress) -> None:
    """Weights, optimizer and progress, written to a temporary file and renamed (never half-written)."""
    tmp = out / (CHECKPOINT + ".tmp")
    torch.save({"lm": lm.state_dict(), "grid": grid.state_dict(), "opt": opt.state_dict(),
                "progress": asdict(state)}, tmp)
    tmp.replace(out / CHECKPOINT)


def train(cfg: TexturesTrainConfig, log: Callable[[dict], None] = print, resume: bool = False):
    """Run (or with `resume`, continue) one stage; the loadable model folder is `cfg.out`."""
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if resume:
        lm, vocab, tokenizer, grid = _load(out)
        lm.config._attn_implementation = "eager"
    else:
        tokenizer, lm, grid, vocab = start(cfg, log)
        (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=1) + "\n")
    params = [*lm.parameters(), *grid.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    state = Progress()
    if cfg.keep_optimizer and not resume:
        opt.load_state_dict(torch.load(Path(cfg.resume_from) / CHECKPOINT, weights_only=True)["opt"])
        log({"event": "optimizer", "from": cfg.resume_from})
    if resume:
        saved = torch.load(out / CHECKPOINT, weights_only=True)
        lm.load_state_dict(saved["lm"])
        grid.load_state_dict(saved["grid"])
        opt.load_state_dict(saved["opt"])
        state = Progress(**saved["progress"])
        log({"event": "resume", "step": state.step, "seconds": round(state.seconds, 1)})
    else:
        save_assets(lm, grid, tokenizer, vocab, cfg, out, NAME)
    heldout = HeldOut(cfg, tokenizer, vocab, images(cfg))
    run_steps(cfg, lm, grid, opt, tokenizer, vocab, heldout, state, log)
    return lm.eval()


def run_steps(cfg, lm, grid, opt, tokenizer, vocab, heldout, state: Progress, log) -> None:
    """The training loop from `state.step` on, with evals, probes and checkpoints."""
    params = [*lm.parameters(), *grid.parameters()]
    out = Path(cfg.out)
    lm.train()
    last_save, t_start = time.time(), time.time() - state.seconds
    while state.step < cfg.steps:
        step = state.step
        ids, labels, weights = training_batch(step, cfg, tokenizer, vocab, images(cfg))
        done = progress(step, time.time() - t_start, cfg)
        lr = lr_at(step, done, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            loss = weighted_loss(lm, grid, ids, labels, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        state.step, state.seconds = step + 1, time.time() - t_start
        state.tokens += int(ids.numel())
        last = state.step >= cfg.steps or progress(state.step, state.seconds, cfg) >= 1.0
        if step % 25 == 0 or last:
            log({"event": "train", "step": step, "loss": round(loss.item(), 4), "lr": lr,
                 "tokens": state.tokens, "seconds": round(state.seconds, 1), "progress": round(done, 4)})
        if state.step % cfg.eval_every == 0 or last:
            scores = {**heldout.score(lm, grid), **probe_adherence(lm, grid, tokenizer, vocab, cfg)}
            log({"event": "eval", "step": step, **scores, "seconds": round(state.seconds, 1)})
        if state.step % cfg.eval_every == 0 or last or time.time() - last_save > 60 * cfg.checkpoint_minutes:
            save_assets(lm, grid, tokenizer, vocab, cfg, out, NAME)
            save_checkpoint(out, lm, grid, opt, state)
            last_save = time.time()
        if last:
            break


def read_config(out: Path) -> TexturesTrainConfig:
    """The config a stage folder was started with (for `--resume`); `out` is where the folder is now."""
    raw = json.loads((out / "train_config.json").read_text())
    known = {f.name for f in fields(TexturesTrainConfig)}
    return TexturesTrainConfig(**{k: v for k, v in raw.items() if k in known} | {"out": str(out)})
