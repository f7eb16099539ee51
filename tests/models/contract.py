"""The family contract: checks every model adapter must pass, shared by the per-family tests.

Each check drives the real adapter through the public seams only (`ImageTokenModel`, `sjd_batch.generate`,
`sjd-batch run`), so a family test is a few lines:

    from tests.models.contract import (assert_greedy_methods_match_ar, assert_layout,
                                       assert_runner_writes_png, assert_window_matches_stepwise)

    def test_contract(model):                      # a tiny real-architecture model, fp32, CPU
        assert_window_matches_stepwise(model, PROMPTS)
        tokens = assert_greedy_methods_match_ar(model, PROMPTS, window=8)
        assert_layout(model, tokens, height_px=8, width_px=8)

    def test_runner(tmp_path, ray_session):        # `ray_session`: tests/models/conftest.py
        assert_runner_writes_png(str(folder), tmp_path, height_px=8, width_px=8, window=8)

API:
- `assert_window_matches_stepwise(model, prompts, tokens=None, atol=1e-4, rtol=1e-4, seed=0)`: prefill, then
  feed one valid generated sequence (forced ids where the layout forces them, random image ids
  elsewhere) three ways: as one window, token by token, and in two windows after stale drafts were
  written past the frontier (rollback). Logits [R, W, V] must agree within atol/rtol (fp32; R = 2B with
  CFG rows when `model.has_uncond`). Checks the KV cache, positions, masks and rollback. Then a draft
  tree (`contract_tree.py`): tree masks, depth-based positions, scratch slots, `cache.copy_slots`.
  `tokens` defaults to 2 rows plus 2 codes of the layout (or all of it, if shorter).
- `assert_greedy_methods_match_ar(model, prompts, methods=("sjd", "sjd-vp", "mc-sjd", "sjd-pac"),
  window=8, varied_lengths=True, **params) -> tokens [B, T]`: greedy (top_k=1) through
  `sjd_batch.generate` at batch = len(prompts) > 1; the prompts must tokenise to different lengths
  (checked; pass `varied_lengths=False` for a fixed-length prefix such as LlamaGen c2i's one class
  token). Every method must equal `ar` token for token (`sjd-pac` with a tree of K = 2, D = 1).
  Returns ar's tokens, which obey the layout (checked).
- `assert_layout(model, tokens, height_px, width_px) -> pixels`: every forced offset holds its forced
  id, every free one an image id in [image_start, image_end); `decode_pixels` gives uint8
  [B, height_px, width_px, 3].
- `assert_runner_writes_png(source, tmp_path, height_px, width_px, method="sjd", options=None,
  prompts=..., **params) -> list[Path]`: a sampled 2-prompt job YAML (model.name = `source`,
  model.options = `options`, `params` split into method and sampling keys) run by `sjd-batch run` on
  Ray (the session's Ray when `ray_session` is active, else an embedded one); both PNGs are opened with
  PIL and must be RGB images of the family's resolution; the stats rows name the model.
- `hub_cache_entry(cache, repo, files)`: copy a model folder into a Hugging Face cache as `hf download` leaves
  it (refs/main -> snapshots/<commit>/), to test offline loading by hub id (set HF_HUB_CACHE=cache and
  HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml

import sjd_batch
from sjd_batch.api import SAMPLING_KEYS
from sjd_batch.decoding.protocol import ImageTokenModel, Prefix, decode_window, prefill_window
from tests.models.contract_tree import assert_tree_matches_chains

RUNNER_PROMPTS = ("a red circle at the top left", "two blue squares and a green cross at the bottom right")


def valid_tokens(model: ImageTokenModel, rows: int, length: int, seed: int = 0) -> torch.Tensor:
    """[rows, length] generated tokens the grammar allows: forced ids where forced, random image ids else."""
    layout = model.layout
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(layout.image_start, layout.image_end, (rows, length), generator=gen)
    forced = torch.tensor(layout.forced[:length])
    return torch.where(forced >= 0, forced, tokens)


def assert_window_matches_stepwise(
    model: ImageTokenModel,
    prompts: Sequence[str],
    tokens: int | None = None,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    seed: int = 0,
) -> None:
    """One window == token-by-token forwards == two windows over stale drafts (see the module docstring)."""
    layout = model.layout
    n = tokens or min(layout.length, 2 * layout.row_stride + 2)
    prefix = model.encode(list(prompts), None, with_uncond=model.has_uncond)
    rows, total = prefix.rows, prefix.length + layout.length + n
    seq = valid_tokens(model, len(prompts), n, seed).to(model.device)
    if prefix.rows != len(prompts):
        seq = torch.cat([seq, seq])  # the engine feeds uncond rows the cond rows' tokens
    one = _windows(model, prefix, total, seq, [n])
    steps = _windows(model, prefix, total, seq, [1] * n)
    split = n // 3 or 1
    stale = valid_tokens(model, rows, n, seed + 1).to(model.device)
    two = _windows(model, prefix, total, seq, [split, n - split], stale=stale)
    assert one.shape == (rows, n, model.vocab_size), one.shape
    assert torch.isfinite(one).all(), "window logits are not finite"
    torch.testing.assert_close(steps, one, atol=atol, rtol=rtol, msg=lambda m: f"stepwise vs window: {m}")
    torch.testing.assert_close(two, one, atol=atol, rtol=rtol, msg=lambda m: f"two windows vs one: {m}")
    if n >= 7:  # a draft tree of depth 2 after one committed token, then one window after it
        assert_tree_matches_chains(model, prefix, seq, stale, atol, rtol)


def _windows(
    model: ImageTokenModel,
    prefix: Prefix,
    total: int,
    seq: torch.Tensor,
    sizes: list[int],
    stale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Prefill, then feed `seq` in consecutive windows of `sizes`; the logits of every fed token."""
    cache = model.new_cache(prefix.rows, total)
    with torch.inference_mode():
        model.forward(cache, prefix.ids, prefill_window(prefix, total))
        out, offset = [], 0
        for size in sizes:
            if stale is not None and offset:  # drafts that a rejection left in the slots ahead
                ahead = stale[:, offset:]
                model.forward(cache, ahead, _at(prefix, offset, ahead.shape[1], total))
            out.append(model.forward(cache, seq[:, offset : offset + size], _at(prefix, offset, size, total)))
            offset += size
    return torch.cat(out, dim=1).float()


def _at(prefix: Prefix, offset: int, width: int, total: int):
    first = torch.full((prefix.rows,), prefix.length + offset, device=prefix.ids.device)
    return decode_window(first, prefix.start, width, total)


def assert_greedy_methods_match_ar(
    model: ImageTokenModel,
    prompts: Sequence[str],
    methods: Sequence[str] = ("sjd", "sjd-vp", "mc-sjd", "sjd-pac"),
    window: int = 8,
    varied_lengths: bool = True,
    **params: Any,
) -> torch.Tensor:
    """Greedy SJD-family methods equal greedy AR token for token; returns AR's tokens [B, T]."""
    prompts = list(prompts)
    assert len(prompts) > 1, "use a batch of at least 2 prompts"
    starts = model.encode(prompts, None, with_uncond=False).start
    if varied_lengths:
        assert len(set(starts.tolist())) > 1, f"prompts must tokenise to different lengths, got pads {starts}"
    greedy = {"top_k": 1, **params}

    def run(method: str, **extra: Any) -> torch.Tensor:
        out = sjd_batch.generate(model, prompts, method, seed=0, batch_size=len(prompts),
                                 decode_images=False, **greedy, **extra)
        return torch.stack([r.tokens for r in out])

    ar = run("ar")
    _check_grammar(model, ar)
    for method in methods:
        tree = {"tree_width": 2, "tree_depth": 1} if method == "sjd-pac" else {}  # fits a window of 8
        got = run(method, window=window, **tree)
        differ = (got != ar).nonzero()
        assert not len(differ), f"greedy {method} differs from ar first at (row, offset) {differ[0].tolist()}"
    return ar


def assert_layout(
    model: ImageTokenModel, tokens: torch.Tensor, height_px: int, width_px: int
) -> torch.Tensor:
    """Forced ids at forced offsets, image ids elsewhere, and uint8 [B, h, w, 3] pixels; returns them."""
    _check_grammar(model, tokens)
    with torch.inference_mode():
        pixels = model.decode_pixels(tokens.to(model.device)).cpu()
    assert pixels.dtype == torch.uint8, pixels.dtype
    assert pixels.shape == (tokens.shape[0], height_px, width_px, 3), pixels.shape
    return pixels


def _check_grammar(model: ImageTokenModel, tokens: torch.Tensor) -> None:
    layout = model.layout
    assert tokens.shape[1] == layout.length, (tokens.shape, layout.length)
    forced = torch.tensor(layout.forced)
    tokens = tokens.cpu()
    at_forced = tokens[:, forced >= 0]
    want = forced[forced >= 0].expand_as(at_forced)
    assert torch.equal(at_forced, want), f"a forced offset holds another id: {(at_forced != want).nonzero()}"
    free = tokens[:, forced < 0]
    assert free.shape[1] == layout.height * layout.width
    inside = (free >= layout.image_start) & (free < layout.image_end)
    assert inside.all(), f"a free offset holds a non-image id: {free[~inside].tolist()}"


def assert_runner_writes_png(
    source: str,
    tmp_path: Path,
    height_px: int,
    width_px: int,
    method: str = "sjd",
    options: dict[str, Any] | None = None,
    prompts: Sequence[str] = RUNNER_PROMPTS,
    **params: Any,
) -> list[Path]:
    """A sampled job through `sjd-batch run` on Ray writes one real PNG per prompt; returns their paths."""
    from PIL import Image

    from sjd_batch import cli
    from sjd_batch.io import results
    from sjd_batch.io.backends import open_storage

    inputs, output = tmp_path / "prompts.parquet", tmp_path / "out"
    ids = [f"s{i}" for i in range(len(prompts))]
    pq.write_table(pa.table({"id": ids, "prompt": list(prompts)}), inputs)
    model: dict[str, Any] = {"name": source, "dtype": "float32", "device": "cpu"}
    if options:
        model["options"] = options
    job = {
        "name": "contract",
        "model": model,
        "method": {"name": method, **{k: v for k, v in params.items() if k not in SAMPLING_KEYS}},
        "sampling": {k: v for k, v in params.items() if k in SAMPLING_KEYS},
        "input": {"uris": [str(inputs)], "shard_size": len(prompts)},
        "output": {"uri": str(output)},
        "run": {"batch_size": len(prompts), "num_actors": 1, "cpus_per_actor": 1, "upload_threads": 1,
                "max_retries": 0},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    assert cli.main(["run", str(path), "--no-progress"]) == 0, f"sjd-batch run {path} failed"
    table = results.read_stats(open_storage(str(output)))
    assert sorted(table.column("sample_id").to_pylist()) == ids
    assert set(table.column("error").to_pylist()) <= {None, ""}, table.column("error").to_pylist()
    pngs = sorted(output.glob("images/shard=*/*.png"))
    assert [p.stem for p in pngs] == ids, pngs
    for png in pngs:
        with Image.open(png) as image:
            image.load()  # decodes every byte: a truncated file fails here
            assert image.format == "PNG" and image.mode == "RGB", (image.format, image.mode)
            assert image.size == (width_px, height_px), image.size
    return pngs


def hub_cache_entry(cache: Path, repo: str, files: Path) -> Path:
    """A Hugging Face cache entry for `repo` holding a copy of `files`; returns the snapshot folder."""
    entry = Path(cache) / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    snapshot = entry / "snapshots" / commit
    shutil.copytree(files, snapshot)
    (entry / "refs").mkdir(exist_ok=True)
    (entry / "refs" / "main").write_text(commit)
    return snapshot
