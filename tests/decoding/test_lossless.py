"""Losslessness: every lossless method samples exactly the AR law; biased samplers are caught.

See `lossless.py` for the harness and the derivation of the TV threshold tau(N). Two toys:
  * toy64, a real tiny Llama through the production interface (position-indexed KV cache,
    cond/uncond rows, EOL grammar), float64: 2x2 codes over 3 ids, top-k 2, CFG 2, T 0.8;
  * a first-order Markov model (`markov.py`) whose laws depend strongly on context, so that
    biased samplers are far from the AR law (the negative controls).
Every lossless method gets 20,000 samples on the Markov toy (draft trees with three live siblings on a
wider one-row Markov toy; the tree verifier alone is tested against hand-built laws, with its own
negative controls, in `test_tree_verify.py`). On the transformer toy a
representative subset runs by default (10,000 samples for each of two prompts decoded in one batch,
20,000 per method); the full matrix is marked slow because a 2-core CPU needs minutes for it.
"""

from __future__ import annotations

import pytest
import torch

import sjd_batch.decoding.engine as engine_module
import sjd_batch.decoding.jacobi as jacobi_module
import sjd_batch.decoding.verify as verify_module
from sjd_batch.decoding import SamplingConfig, resolve_method, rng
from sjd_batch.decoding.state import DraftLaws
from tests.decoding.lossless import exact_law, sample_codes, total_variation, tv_bound
from tests.decoding.markov import MarkovToy

N = 20_000
PROMPTS = ["w1 w2", "w5"]
TOY_SAMPLING = SamplingConfig(top_k=2, cfg_scale=2.0, temperature=0.8)
MARKOV_SAMPLING = SamplingConfig(top_k=2, cfg_scale=1.0)

LOSSLESS = [
    ("ar", {}),
    ("sjd", {"window": 2}),
    ("sjd", {"window": 3}),
    ("sjd", {"window": 8}),
    ("sjd", {"window": 3, "init_law": "onehot"}),
    ("sjd", {"window": 8, "init": "horizontal"}),
    ("sjd", {"window": 8, "init": "horizontal-sample"}),
    ("sjd", {"window": 8, "init": "vertical"}),
    ("sjd-vp", {"window": 3, "vp_lambda": 1.0}),
    ("sjd-vp", {"window": 8, "vp_lambda": 4.0, "vp_form": "add"}),
    ("mc-sjd", {"window": 3}),
    ("mc-sjd", {"window": 8}),
    ("mc-sjd-vp", {"window": 8, "vp_lambda": 4.0}),
    ("mc-sjd", {"window": 3, "coupling": "gumbel"}),
    ("mc-sjd", {"window": 8, "coupling": "gumbel", "init": "vertical"}),
    ("sjd-pac", {"window": 4, "tree_width": 2, "tree_depth": 1}),
    ("sjd-pac", {"window": 8, "tree_width": 2, "tree_depth": 2}),
    ("sjd-pac", {"window": 16}),  # K = 3 siblings from laws of support 2 (top-k 2): ranks run out
    ("sjd-pac", {"window": 8, "tree_width": 2, "tree_depth": 2, "coupling": "independent"}),
    ("sjd-pac", {"window": 8, "tree_width": 2, "tree_depth": 2, "coupling": "gumbel"}),
    ("sjd-pac", {"window": 8, "tree_width": 2, "tree_depth": 1, "vp_lambda": 4.0, "init": "horizontal"}),
    ("mc-sjd", {"window": 8, "coupling": "gumbel", "vp_lambda": 4.0}),
    ("sjd-pac", {"window": 8, "tree_width": 2, "tree_depth": 2, "coupling": "gumbel", "vp_lambda": 4.0}),
]
# Laws of support 4 (no top-k) on a one-row toy, so that three siblings are all live
WIDE = [
    ("sjd-pac", {"window": 14, "tree_width": 3, "tree_depth": 2}),
    ("sjd-pac", {"window": 14, "tree_width": 3, "tree_depth": 2, "coupling": "gumbel"}),
]


TOY_DEFAULT = {0, 2, 9, 12, 15}  # ar, sjd L=3, sjd-vp add L=8, mc-sjd-vp L=8, sjd-pac K=2 D=1 L=4
TOY_N = N // len(PROMPTS)


def _toy_cases():
    return [
        pytest.param(*case, id=_ids(case), marks=() if i in TOY_DEFAULT else pytest.mark.slow)
        for i, case in enumerate(LOSSLESS)
    ]


def _ids(case):
    return case[0] + "-" + "-".join(f"{k}={v}" for k, v in case[1].items())


@pytest.fixture(scope="module")
def toy_exact(toy64):
    return [exact_law(toy64, p, TOY_SAMPLING) for p in PROMPTS]


@pytest.fixture(scope="module")
def markov():
    return MarkovToy(height=2, width=3, codes=3, scale=1.0)


@pytest.fixture(scope="module")
def markov_exact(markov):
    return exact_law(markov, PROMPTS[0], MARKOV_SAMPLING)


@pytest.fixture(scope="module")
def wide():
    return MarkovToy(height=1, width=4, codes=4, scale=1.5, seed=1)


@pytest.fixture(scope="module")
def wide_exact(wide):
    return exact_law(wide, PROMPTS[0], SamplingConfig())


def _assert_close(counts, exact, n, label):
    tv, tau = total_variation(counts, exact), tv_bound(exact, n)
    assert tv <= tau, f"{label}: TV {tv:.4f} > tau {tau:.4f} with N={n}"
    return tv


def test_exact_law_is_a_distribution_and_not_trivial(toy_exact, markov_exact):
    for law in [*toy_exact, markov_exact]:
        assert sum(law.values()) == pytest.approx(1.0, abs=1e-9)
        assert max(law.values()) < 0.5  # neither one-hot ...
        assert sum(p > 0 for p in law.values()) >= 8  # ... nor a handful of outcomes


@pytest.mark.parametrize("method,overrides", _toy_cases())
def test_lossless_on_transformer_toy(toy64, toy_exact, method, overrides):
    counts = sample_codes(toy64, PROMPTS, TOY_N, TOY_SAMPLING, resolve_method(method, **overrides), method)
    for prompt, c, law in zip(PROMPTS, counts, toy_exact, strict=True):
        _assert_close(c, law, TOY_N, f"{method} {overrides} prompt {prompt!r}")


@pytest.mark.parametrize("method,overrides", LOSSLESS, ids=[_ids(c) for c in LOSSLESS])
def test_lossless_on_markov_toy(markov, markov_exact, method, overrides):
    counts = sample_codes(
        markov, PROMPTS[:1], N, MARKOV_SAMPLING, resolve_method(method, **overrides), method
    )
    _assert_close(counts[0], markov_exact, N, f"{method} {overrides}")


@pytest.mark.parametrize("method,overrides", WIDE, ids=[_ids(c) for c in WIDE])
def test_lossless_with_three_live_siblings(wide, wide_exact, method, overrides):
    counts = sample_codes(wide, PROMPTS[:1], N, SamplingConfig(), resolve_method(method, **overrides), method)
    _assert_close(counts[0], wide_exact, N, f"{method} {overrides}")


# --- negative controls: the same harness must FAIL on deliberately biased samplers -------------


def _tv(model, law, config, n, prompt=PROMPTS[0], sampling=MARKOV_SAMPLING):
    counts = sample_codes(model, [prompt], n, sampling, config, "control")
    return total_variation(counts[0], law), tv_bound(law, n)


def test_control_residual_drawn_from_p_instead_of_p_minus_q(markov, markov_exact, monkeypatch):
    monkeypatch.setattr(verify_module, "residual_law", lambda p, q: p)
    tv, tau = _tv(markov, markov_exact, resolve_method("sjd", window=3), N)
    assert tv > 2 * tau, f"biased residual not detected: TV {tv:.4f} <= 2 tau {2 * tau:.4f}"


def test_control_ratio_against_the_wrong_window_slot(markov, markov_exact, monkeypatch):
    real = verify_module.verify

    def off_by_one(p, *args, **kwargs):  # judge draft k by P[k+1] instead of P[k]
        return real(torch.cat([p[:, 1:], p[:, -1:]], 1), *args, **kwargs)

    monkeypatch.setattr(jacobi_module, "verify", off_by_one)
    tv, tau = _tv(markov, markov_exact, resolve_method("sjd", window=3), N)
    assert tv > 2 * tau, f"off-by-one not detected: TV {tv:.4f} <= 2 tau {2 * tau:.4f}"


def test_control_residual_on_the_transformer_toy(toy64, toy_exact, monkeypatch):
    monkeypatch.setattr(verify_module, "residual_law", lambda p, q: p)
    tv, tau = _tv(toy64, toy_exact[0], resolve_method("sjd", window=3), TOY_N, sampling=TOY_SAMPLING)
    assert tv > tau, f"biased residual not detected on the toy: TV {tv:.4f} <= tau {tau:.4f}"


def test_control_lossy_vp_is_detected(markov, markov_exact):
    # LOSSY on purpose: drafts drawn from q~ but verified as if drawn from P_t
    n = 4 * N
    lossy = resolve_method("sjd-vp", window=9, vp_lambda=10.0, vp_clip=4.0, vp_lossy=True)
    tv, tau = _tv(markov, markov_exact, lossy, n)
    assert tv > 2 * tau, f"lossy SJD-VP not detected: TV {tv:.4f} <= 2 tau {2 * tau:.4f}"
    fair = resolve_method("sjd-vp", window=9, vp_lambda=10.0, vp_clip=4.0)
    tv_fair, _ = _tv(markov, markov_exact, fair, n)
    assert tv_fair <= tau, f"the same VP in lossless mode must pass: TV {tv_fair:.4f} > tau {tau:.4f}"


def _storing_old_laws(step):
    """`step`, but a carried draft equal to the old draft at its offset keeps the old draft's law (the
    official MC-SJD code does this); exactness needs the law it was (re)drawn from."""

    def stale(ctx, state):
        out = step(ctx, state)
        n, m, span, image = state.n, out.m, ctx.span[:-1], ctx.grammar.image
        old_x = state.seq.gather(1, n[:, None] + span)
        old = state.laws.rows(span.expand_as(old_x), old_x, image)  # [B, L-1, V] at offsets n + k
        new_x = out.seq.gather(1, (n + m + 1)[:, None] + span)
        new = out.laws.rows(span.expand_as(new_x), new_x, image)
        k = m[:, None] + 1 + span  # the old draft at next draft j's offset
        at = k.clamp(max=span.shape[0] - 1)
        kept = (k < span.shape[0]) & (out.laws.src >= 0) & (new_x == old_x.gather(1, at))
        rows = old.gather(1, at[..., None].expand_as(new))
        out.laws = DraftLaws.dense(torch.where(kept[..., None], rows, new), new_x)
        return out

    return stale


# the tree's variant needs 80,000 samples (40 s on 2 cores): slow; mc-sjd's guards the same bug by default
@pytest.mark.parametrize("method", ["mc-sjd", pytest.param("sjd-pac", marks=pytest.mark.slow)])
def test_control_kept_draft_stores_its_old_law(markov, markov_exact, monkeypatch, method):
    monkeypatch.setattr(engine_module, "jacobi_step", _storing_old_laws(engine_module.jacobi_step))
    monkeypatch.setattr(engine_module, "tree_step", _storing_old_laws(engine_module.tree_step))
    tree = {"tree_width": 2, "tree_depth": 2} if method == "sjd-pac" else {}
    config = resolve_method(method, window=8, **tree)
    tv, tau = _tv(markov, markov_exact, config, 4 * N)
    assert tv > 2 * tau, f"stale Q not detected: TV {tv:.4f} <= 2 tau {2 * tau:.4f}"


@pytest.mark.parametrize("method", ["mc-sjd", "sjd-pac"])
def test_control_gumbel_noise_shared_across_offsets(markov, markov_exact, monkeypatch, method):
    # Gumbel coupling is exact because the noise of offset a never influenced what came before a.
    # Share one noise vector across all offsets and it has: earlier drafts (and so the committed
    # prefix) depend on it, and the draft at a is no longer a draw from its law given that prefix.
    real = rng.key

    def shared(seeds, stream, position, step=None):
        if stream == rng.GUMBEL:
            position = torch.zeros_like(position)
        return real(seeds, stream, position, step)

    monkeypatch.setattr(rng, "key", shared)
    tree = {"tree_width": 2, "tree_depth": 2} if method == "sjd-pac" else {}
    tv, tau = _tv(markov, markov_exact, resolve_method(method, window=8, coupling="gumbel", **tree), N)
    assert tv > 2 * tau, f"shared Gumbel noise not detected: TV {tv:.4f} <= 2 tau {2 * tau:.4f}"
