"""Decoding methods as compositions of small parts, selectable by name.

A speculative method is (draft law, coupling, init scheme, verifier):

| method     | draft law of a carried position    | coupling across iterations | verifier                |
|------------|------------------------------------|----------------------------|-------------------------|
| `jacobi`   | argmax P (greedy only)             | none                       | exact match             |
| `sjd`      | P                                  | independent redraw         | speculative min(1, p/q) |
| `sjd-vp`   | q~ = VP(P_t, P_{t-1}; lambda)      | independent redraw         | speculative             |
| `mc-sjd`   | P (or q~ when vp_lambda > 0)       | maximal coupling           | speculative             |
| `mc-sjd-vp`| q~                                 | maximal coupling           | speculative             |
| `sjd-pac`  | P; after a rejection, a K-ary tree | maximal coupling (= AC)    | recursive, no replacement |

Coupling `gumbel` (So et al. arXiv 2510.24211) drafts argmax_v (log P(v) + G(a, v)) with Gumbel noise
G fixed per (sample, absolute position a) across iterations. SJD-PAC's Adaptive Continuation (keep
testing the tail after a rejection, keep what passes, redraw the rest from the residual, store Q = P)
is exactly maximal coupling, so `sjd-pac:tree_width=1` is `mc-sjd`; `sjd-pac:coupling=independent`
is SJD plus Proactive Drafting only.

`ar` is plain sampling, one token per forward: the reference every method is measured against. q~ is
SJD-VP's draft law (docs/design.md, section 6); why each row is lossless, the maximal coupling included,
is section 7.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

INIT_SCHEMES = ("random", "horizontal", "horizontal-sample", "vertical")
INIT_LAWS = ("uniform", "onehot")
VP_FORMS = ("exp", "add")
COUPLINGS = ("independent", "maximal", "gumbel")
VERIFIERS = ("speculative", "exact")


@dataclass(frozen=True)
class DecodeConfig:
    """All knobs of a decoding method.

    Attributes:
        method: the preset name it was built from.
        window: L, tokens fed per forward (last committed token + L-1 drafts); >= 2.
        init: how a draft entering the window for the first time is chosen.
        init_law: law stored for a *random* init draft: "uniform" over the image ids (higher
            acceptance) or "onehot" (the official SJD code). Both are lossless.
        vp_lambda: SJD-VP strength; 0 is plain SJD.
        vp_form: "exp" (log-linear extrapolation) or "add" (additive boost of risers).
        vp_clip: c, the clip of the log-probability change in the "exp" form.
        vp_lossy: LOSSY on purpose: draw from q~ but verify against P_t. Off by default.
        coupling: "independent" redraws carried drafts; "maximal" keeps them when it can (MC-SJD,
            and SJD-PAC's Adaptive Continuation); "gumbel" draws them with per-position fixed noise.
        verifier: "speculative" (min(1, p/q)) or "exact" (plain Jacobi, greedy only).
        tree_width: K, drafts per depth after a rejection (Proactive Drafting); 1 = a chain.
        tree_depth: D, depths below the last committed token that branch (SJD-PAC's "depth 3"
            counts the root: it is D = 2 here). The tree's off-path nodes are fed on top of the
            window's L tokens: a forward takes L + (1 + K + ... + K^D) - 1 - D (26 at L 16, K 3, D 2).
    """

    method: str = "sjd"
    window: int = 16
    init: str = "random"
    init_law: str = "uniform"
    vp_lambda: float = 0.0
    vp_form: str = "exp"
    vp_clip: float = 2.0
    vp_lossy: bool = False
    coupling: str = "independent"
    verifier: str = "speculative"
    tree_width: int = 1
    tree_depth: int = 2

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {sorted(METHODS)}")
        if self.method != "ar" and self.window < 2:
            raise ValueError(
                f"window must be >= 2 (the last token plus at least one draft), got {self.window}"
            )
        _check_choice("init", self.init, INIT_SCHEMES)
        _check_choice("init_law", self.init_law, INIT_LAWS)
        _check_choice("vp_form", self.vp_form, VP_FORMS)
        _check_choice("coupling", self.coupling, COUPLINGS)
        _check_choice("verifier", self.verifier, VERIFIERS)
        if self.vp_lambda < 0:
            raise ValueError(f"vp_lambda must be >= 0 (0 = plain SJD), got {self.vp_lambda}")
        if self.vp_clip <= 0:
            raise ValueError(f"vp_clip must be > 0, got {self.vp_clip}")
        self._check_tree()

    def _check_tree(self) -> None:
        if self.tree_width < 1 or self.tree_depth < 1:
            raise ValueError(
                f"tree_width and tree_depth must be >= 1, got {self.tree_width} and {self.tree_depth}"
            )
        if self.tree_width == 1:
            return
        if self.verifier != "speculative":
            raise ValueError("a draft tree (tree_width > 1) needs the speculative verifier")
        if self.tree_depth > self.window - 1:
            raise ValueError(
                f"tree_depth {self.tree_depth} is deeper than the window's {self.window - 1} drafts"
            )

    @property
    def branching(self) -> bool:
        return self.tree_width > 1

    def params(self) -> dict[str, object]:
        """Every parameter, for stats and provenance."""
        return asdict(self)


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


# Presets: what each method name means. Anything else is an override on top of its preset.
METHODS: dict[str, dict[str, object]] = {
    "ar": {},
    "jacobi": {"verifier": "exact"},
    "sjd": {},
    "sjd-vp": {"vp_lambda": 0.5},
    "mc-sjd": {"coupling": "maximal"},
    "mc-sjd-vp": {"coupling": "maximal", "vp_lambda": 0.5},
    "sjd-pac": {"coupling": "maximal", "tree_width": 3, "tree_depth": 2},
}


def resolve_method(method: str, **overrides: object) -> DecodeConfig:
    """Build the DecodeConfig of a named method, with overrides (e.g. window=32, vp_lambda=1.0).

    Raises:
        ValueError: for an unknown method or an invalid parameter value.
        TypeError: for an unknown parameter name.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    fields = set(DecodeConfig.__dataclass_fields__) - {"method"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(f"unknown decoding parameter(s) {unknown}; allowed: {sorted(fields)}")
    base = replace(DecodeConfig(method=method), **METHODS[method])  # type: ignore[arg-type]
    return replace(base, **overrides)  # type: ignore[arg-type]
