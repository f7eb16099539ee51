"""Train `shapes-t2i` reproducibly: fit the patch codebook, then a small `LlamaForCausalLM`.

Sequence per image: `[BOS] caption tokens [BOI]` (exactly `LlamaT2IModel.tokenize`: position-bound
tokens such as `red@top left`, see `Vocabulary.bound_words`), then 16 rows of 16 codes each followed
by that row's end-of-line marker, then EOI. Image tokens also get learned row/column vectors
(`GridPositions`). The loss covers everything after BOI (codes, EOL, EOI). A
fraction of captions is dropped to the empty caption `[BOS] [BOI]`, which is the unconditional
prompt of classifier-free guidance. Sequences are right-padded, so position ids start at 0 on BOS,
as the decoder's left-padded windows give them (positions = slot - start). Training data streams
from the generator: batch `step` holds images `step*B .. step*B+B-1` of `data_seed`, so the run is
a pure function of the config. Held-out loss uses a different generator seed.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

from sjd_batch.decoding.sampling import SamplingConfig
from sjd_batch.models.blocks.llama_t2i import (
    BOS,
    EOI,
    PAD,
    GridPositions,
    LlamaT2IModel,
    Vocabulary,
    row_layout,
)
from sjd_batch.models.shapes.model import ASSETS, GRID_FILE, NAME, ShapesMeta, load_grid
from sjd_batch.models.shapes.tokenizer import (
    PATCH,
    KMeansConfig,
    PatchTokenizer,
    fit_codebook,
    psnr,
    to_patches,
)
from sjd_batch.training.shapes.data import IMAGE_SIZE, POSITIONS, caption_words, make_batch
from sjd_batch.training.shapes.objective import code_nll, object_weights, sequences, weighted_loss


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; `train` is a pure function of it (on one device)."""

    seed: int = 0
    data_seed: int = 1
    heldout_seed: int = 999
    num_codes: int = 512
    kmeans_images: int = 2000
    kmeans_iterations: int = 25
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    intermediate: int = 512
    row_markers: int = 16  # one end-of-line id per row (see Vocabulary.row_markers); 0 = shared EOL
    grid_positions: bool = True  # learned row/column vectors on image tokens (see GridPositions)
    bound_captions: bool = True  # position-bound caption tokens (see Vocabulary.bound_words)
    batch: int = 32
    steps: int = 8000
    lr: float = 2e-3
    warmup: int = 200
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    caption_dropout: float = 0.1
    object_weight: float = 1.0  # loss weight of codes near the caption's named objects (see object_weights)
    eval_every: int = 250
    eval_images: int = 128
    probe_captions: int = 32  # AR samples judged by the checker at every eval (0 = off)
    probe_seed: int = 998  # their generator seed: neither training (1) nor the eval set (999)
    threads: int = 2
    max_minutes: float = 85.0  # time budget: the schedule ends at whichever budget runs out first
    # default sampling, written into vocabulary.json and used by the probe: the shipped model's
    # measured best (model card, "Sampling defaults"); CFG > 1 adds stray objects on this model
    cfg_scale: float = 1.0
    top_k: int = 0
    top_p: float = 0.8
    out: str = str(ASSETS)
    resume_from: str = ""  # a saved asset folder: continue its weights and codebook instead of starting fresh
    data_offset: int = 0  # skip this many batches of the stream (a resumed run sees fresh images)


def fit_tokenizer(
    cfg: TrainConfig, make_batch: Callable = make_batch
) -> tuple[PatchTokenizer, float]:
    """Fit the codebook on generator images (`make_batch`: another generator with the same signature,
    for textures-t2i); return it with its held-out PSNR (dB)."""
    pixels = torch.from_numpy(make_batch(cfg.data_seed + 10_000, 0, cfg.kmeans_images)[0])
    points = to_patches(pixels).reshape(-1, PATCH * PATCH * 3)
    kmeans = KMeansConfig(cfg.num_codes, cfg.kmeans_iterations, cfg.seed)
    tokenizer = PatchTokenizer(fit_codebook(points, kmeans))
    held = torch.from_numpy(make_batch(cfg.heldout_seed, 0, 256)[0])
    return tokenizer, psnr(held, tokenizer.decode(tokenizer.encode(held)))


def build_lm(cfg: TrainConfig, vocab: Vocabulary, max_len: int) -> LlamaForCausalLM:
    """A seeded, freshly initialised Llama sized by the config."""
    config = LlamaConfig(
        vocab_size=vocab.size, hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
        max_position_embeddings=max_len, tie_word_embeddings=True, bos_token_id=BOS, eos_token_id=EOI,
        pad_token_id=PAD,
    )
    # eager attention: on CPU its backward is ~5x faster than SDPA's here (measured); the weights are
    # the same, and the loader switches inference back to SDPA.
    config._attn_implementation = "eager"
    torch.manual_seed(cfg.seed)
    return LlamaForCausalLM(config)


def progress(step: int, seconds: float, cfg: TrainConfig) -> float:
    """Fraction of the run done: steps or wall clock, whichever budget is nearer exhaustion.

    The CPU is shared, so throughput varies several-fold; a time-bound schedule still anneals
    fully instead of being cut off at a high learning rate. On an idle machine (or a GPU) the step
    budget binds and the run is a pure function of the config.
    """
    return max(step / cfg.steps, seconds / (60 * cfg.max_minutes))


def lr_at(step: int, done: float, cfg: TrainConfig) -> float:
    """Linear warm-up over `warmup` steps, then cosine in `done` down to min_lr_ratio * lr."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = min(max(done, 0.0), 1.0)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


class HeldOut:
    """A fixed held-out set from a different generator seed, scored with and without captions."""

    def __init__(
        self, cfg: TrainConfig, tokenizer: PatchTokenizer, vocab: Vocabulary,
        make_batch: Callable = make_batch,
    ) -> None:
        pixels, captions, _ = make_batch(cfg.heldout_seed, 0, cfg.eval_images)
        codes = tokenizer.encode(torch.from_numpy(pixels))
        n = len(captions)
        self.cond = sequences(captions, codes, vocab, torch.zeros(n, dtype=torch.bool))
        self.uncond = sequences(captions, codes, vocab, torch.ones(n, dtype=torch.bool))
        self.vocab = vocab

    def score(self, lm: LlamaForCausalLM, grid: GridPositions | None) -> dict[str, float]:
        lm.eval()
        out = {"heldout_cond_nll": code_nll(lm, grid, *self.cond, self.vocab),
               "heldout_uncond_nll": code_nll(lm, grid, *self.uncond, self.vocab)}
        lm.train()
        return out


def probe_adherence(
    lm: LlamaForCausalLM, grid: GridPositions | None, tokenizer: PatchTokenizer, vocab: Vocabulary,
    cfg: TrainConfig,
) -> dict[str, float]:
    """Checker-judged adherence of plain AR samples (default sampling) on held-out captions.

    The held-out NLL barely moves when the model learns *where* objects go (they cover a few
    percent of the codes), so the checker on real samples is the number that says whether the
    caption is followed.
    """
    if not cfg.probe_captions:
        return {}
    from sjd_batch.api import generate
    from sjd_batch.models.shapes.captions import generator_captions
    from sjd_batch.training.shapes.checker import check

    side = IMAGE_SIZE // tokenizer.patch
    model = LlamaT2IModel(
        "probe", lm, vocab, row_layout(side, side, vocab), tokenizer.decode,
        SamplingConfig(top_k=cfg.top_k, top_p=cfg.top_p, cfg_scale=cfg.cfg_scale),
        grid=grid,  # shared with training, like `lm`: same device and dtype, so nothing is cast
    )
    captions = generator_captions(cfg.probe_captions, cfg.probe_seed)
    lm.config._attn_implementation = "sdpa"  # the decoder's 4-D masks; eager is only for training speed
    try:
        results = generate(model, captions, method="ar", seed=0, batch_size=len(captions))
    finally:
        lm.config._attn_implementation = "eager"
        lm.train()
    verdicts = [check(r.pixels, c) for r, c in zip(results, captions, strict=True)]
    return {"probe_adherence": sum(v.ok for v in verdicts) / len(verdicts),
            "probe_position": sum(v.position_ok for v in verdicts) / len(verdicts),
            "probe_color": sum(v.color_ok for v in verdicts) / len(verdicts)}


def training_batch(
    step: int, cfg: TrainConfig, tokenizer: PatchTokenizer, vocab: Vocabulary,
    make_batch: Callable = make_batch,
):
    """Batch `step` of the stream, as (ids, labels, weights): a pure function of (config, step)."""
    pixels, captions, samples = make_batch(cfg.data_seed, (cfg.data_offset + step) * cfg.batch, cfg.batch)
    codes = tokenizer.encode(torch.from_numpy(pixels))
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    drop = torch.rand(cfg.batch, generator=gen) < cfg.caption_dropout
    ids, labels = sequences(captions, codes, vocab, drop)
    weights = object_weights(samples, drop, labels, cfg.object_weight, codes.shape[1], tokenizer.patch)
    return ids, labels, weights


def save_assets(
    lm: LlamaForCausalLM, grid: GridPositions | None, tokenizer: PatchTokenizer, vocab: Vocabulary,
    cfg: TrainConfig, out: Path, name: str = NAME,
) -> None:
    """Write config.json, model.safetensors, codebook.safetensors, vocabulary.json (with the model's
    `name`), train_config.json and (with grid positions) grid_positions.safetensors."""
    out.mkdir(parents=True, exist_ok=True)
    lm.save_pretrained(str(out), safe_serialization=True)
    if grid is not None:
        save_file(grid.state(), str(out / GRID_FILE))
    else:
        (out / GRID_FILE).unlink(missing_ok=True)
    save_file({"codebook": tokenizer.codebook.contiguous()}, str(out / "codebook.safetensors"))
    side = IMAGE_SIZE // tokenizer.patch
    meta = ShapesMeta(
        vocab.words, tokenizer.num_codes, side, side, tokenizer.patch, cfg.cfg_scale, cfg.top_k,
        cfg.top_p, vocab.row_markers, vocab.positions, name,
    )
    meta.write(out / "vocabulary.json")
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=1) + "\n")
    (out / "sjd_batch.json").write_text(json.dumps({"family": "shapes"}) + "\n")  # loadable as a folder
    for extra in ("generation_config.json",):  # save_pretrained side file the loader does not need
        (out / extra).unlink(missing_ok=True)


@torch.no_grad()
def add_bound_words(lm: LlamaForCausalLM, vocab: Vocabulary) -> Vocabulary:
    """Give a resumed model without them the position-bound caption tokens (appended ids).

    Each new embedding starts as its word's plus the mean of its place's words, so the model first
    reads "red@top left" roughly as it read "red ... top left", and training sharpens the binding.
    """
    bound = replace(vocab, positions=POSITIONS)
    old = vocab.size
    lm.resize_token_embeddings(bound.size, mean_resizing=False)
    table = lm.get_input_embeddings().weight
    for i, name in enumerate(bound.bound_words):
        word, place = name.split("@")
        place_ids = [vocab.word_ids(w)[0] for w in place.split()]
        table[old + i] = table[vocab.word_ids(word)[0]] + table[place_ids].mean(0)
    return bound


def _start(cfg: TrainConfig, log: Callable[[dict], None], t0: float):
    """Fresh codebook and LM, or (with `resume_from`) the saved ones, trained further.

    Grid positions start at zero, also when added to a resumed model that had none, and bound
    caption tokens are added as new ids (`add_bound_words`): the resumed model's function on its old
    inputs is unchanged at step 0.
    """
    if cfg.resume_from:
        from sjd_batch.models.shapes.model import load_tokenizer

        tokenizer = load_tokenizer(Path(cfg.resume_from))
        lm = LlamaForCausalLM.from_pretrained(cfg.resume_from, local_files_only=True)
        lm.config._attn_implementation = "eager"  # see build_lm
        vocab = ShapesMeta.read(Path(cfg.resume_from) / "vocabulary.json").vocab
        grid = load_grid(Path(cfg.resume_from))
        log({"event": "resume", "from": cfg.resume_from, "data_offset": cfg.data_offset,
             "grid_positions": "loaded" if grid is not None else "new"})
    else:
        tokenizer, tok_psnr = fit_tokenizer(cfg)
        log({"event": "tokenizer", "psnr_db": round(tok_psnr, 3), "num_codes": cfg.num_codes,
             "seconds": round(time.time() - t0, 1)})
        positions = POSITIONS if cfg.bound_captions else ()
        vocab = Vocabulary(caption_words(), cfg.num_codes, row_markers=cfg.row_markers, positions=positions)
        lm, grid = build_lm(cfg, vocab, max_len=512), None
    if cfg.bound_captions and not vocab.positions:
        vocab = add_bound_words(lm, vocab)
        log({"event": "bound_captions", "added_tokens": len(vocab.bound_words), "vocab": vocab.size})
    if cfg.grid_positions and grid is None:
        side = IMAGE_SIZE // tokenizer.patch
        grid = GridPositions(side, row_layout(side, side, vocab).row_stride, lm.config.hidden_size)
    return tokenizer, lm, (grid if cfg.grid_positions else None), vocab


def train(cfg: TrainConfig, log: Callable[[dict], None] = print) -> LlamaForCausalLM:
    """Fit the tokenizer, train the LM, log held-out loss, save the assets into `cfg.out`."""
    torch.set_num_threads(cfg.threads)
    t0 = time.time()
    tokenizer, lm, grid, vocab = _start(cfg, log, t0)
    params = [*lm.parameters(), *(grid.parameters() if grid is not None else [])]
    log({"event": "model", "params": sum(p.numel() for p in params), "vocab": vocab.size})
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    heldout = HeldOut(cfg, tokenizer, vocab)
    lm.train()
    t_start, tokens = time.time(), 0
    for step in range(cfg.steps):
        ids, labels, weights = training_batch(step, cfg, tokenizer, vocab)
        done = progress(step, time.time() - t_start, cfg)
        lr = lr_at(step, done, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        loss = weighted_loss(lm, grid, ids, labels, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        tokens += int((ids != PAD).sum())
        elapsed = time.time() - t_start
        last = step == cfg.steps - 1 or progress(step + 1, elapsed, cfg) >= 1.0
        if step % 25 == 0 or last:
            log({"event": "train", "step": step, "loss": round(loss.item(), 4), "lr": lr,
                 "tokens": tokens, "seconds": round(elapsed, 1), "progress": round(done, 4)})
        if (step + 1) % cfg.eval_every == 0 or last:
            scores = {**heldout.score(lm, grid), **probe_adherence(lm, grid, tokenizer, vocab, cfg)}
            log({"event": "eval", "step": step, **scores, "seconds": round(elapsed, 1)})
            save_assets(lm, grid, tokenizer, vocab, cfg, Path(cfg.out))
        if last:
            break
    return lm.eval()
