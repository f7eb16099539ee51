"""A GPU projection, labelled as one: the real families' latency and images/s on H100/H200, from a
roofline forward cost and a measured step compression. Nothing here is a GPU measurement.

Forward cost of one decode forward over R rows (B samples, 2B with CFG), W new tokens each, attending
over C cached positions, at the published sizes (`ARCHS`):

    bytes = weights (trunk + LM head, bf16, read once)  +  K and V of C positions for every row
    flops = 2 * (trunk + head params) * R * W  +  4 * layers * hidden * C * R * W   (attention)
    time  = max(bytes / bandwidth, flops / peak)        (peak dense bf16; no launch or engine cost)

So it is a lower bound on a real forward. Then, with the cost model of `tuning.py` (engine overhead
k = 1, i.e. none, and pixel decoding left out, for lack of a GPU measurement of either):

    latency (batch 1)    = prefill + (T / c(W)) * time(W, B=1, C ~ prompt + T/2)
    images/s (batch B)   = B / ((T / c(W)) * time(W, B, C))   at the best B whose KV cache fits

with c(W) a step compression measured on a shipped model (`sjd-batch autotune` / `bench` JSON). When
`bench-gpu` has measured forward times on a GPU (its `forward-<family>.json`), `project --forward` reads
them (`MeasuredForwards`) and they replace the roofline for that family on that GPU: a forward of W
tokens at batch B costs the measured median, interpolated linearly in W between the measured windows
(extrapolated from the last two past the widest, for a draft tree wider than the grid), and only the
measured batch sizes are candidates for the best batch (a cell that ran out of memory was not written).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arch:
    """A family's published decoder sizes (its Hugging Face / paper config) and its image at the
    default resolution."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    head_vocab: int  # logits per position: the LM head the sampler reads (Janus: its image head)
    tokens: int  # generated tokens per image, layout included
    prompt: int = 64  # prompt tokens assumed

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def trunk_params(self) -> int:
        kv = self.kv_heads * self.head_dim
        per_layer = 2 * self.hidden * self.hidden + 2 * self.hidden * kv + 3 * self.hidden * self.intermediate
        return self.layers * per_layer

    @property
    def head_params(self) -> int:
        return self.hidden * self.head_vocab

    def kv_bytes(self, rows: int, context: int, width: int = 2) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * context * rows * width


# Lumina-mGPT-7B is Chameleon-7B; Emu3-Gen is Llama-like with GQA; Janus-Pro-7B's language model is
# DeepSeek-LLM-7B with a 16,384-code image head; LlamaGen-XL is GPT-XL (FFN 2/3 * 4 * dim, rounded to 256).
ARCHS = {
    "lumina-mgpt-7b": Arch("lumina-mgpt-7b", 4096, 32, 32, 32, 11008, 65536, 2357),
    "emu3-8b": Arch("emu3-8b", 4096, 32, 32, 8, 14336, 184622, 8193),
    "janus-pro-7b": Arch("janus-pro-7b", 4096, 30, 32, 32, 11008, 16384, 576),
    "llamagen-xl": Arch("llamagen-xl", 1280, 36, 20, 20, 3584, 16384, 1024),
}


@dataclass(frozen=True)
class Gpu:
    name: str
    bandwidth: float  # bytes/s, HBM peak
    flops: float  # dense bf16 peak, FLOP/s
    memory: float  # bytes


GPUS = {
    "H100": Gpu("H100 SXM", 3.35e12, 989e12, 80e9),
    "H200": Gpu("H200 SXM", 4.8e12, 989e12, 141e9),
}


def forward_s(arch: Arch, gpu: Gpu, batch: int, window: int, context: int, cfg: bool = True) -> float:
    """Roofline seconds of one forward (module docstring)."""
    rows = batch * (2 if cfg else 1)
    weights = 2 * (arch.trunk_params + arch.head_params)
    bytes_moved = weights + arch.kv_bytes(rows, context)
    flops = 2 * (arch.trunk_params + arch.head_params) * rows * window
    flops += 4 * arch.layers * arch.hidden * context * rows * window
    return max(bytes_moved / gpu.bandwidth, flops / gpu.flops)


def fits(arch: Arch, gpu: Gpu, batch: int, window: int, cfg: bool = True) -> bool:
    """Weights plus a full KV cache (prompt + image + window) for every row fit in 90% of the memory."""
    rows = batch * (2 if cfg else 1)
    weights = 2 * (arch.trunk_params + arch.head_params)
    need = weights + arch.kv_bytes(rows, arch.prompt + arch.tokens + window)
    return need <= 0.9 * gpu.memory


@dataclass(frozen=True)
class MeasuredForwards:
    """Forward seconds measured by `bench-gpu` for one family on one GPU, keyed (window, batch)."""

    arch: str
    gpu: str  # a key of GPUS
    seconds: dict[tuple[int, int], float]
    source: str  # the file it came from

    def at(self, batch: int, width: int) -> float | None:
        """Seconds of a `width`-token forward at `batch`, piecewise linear in the width over the windows
        measured at that batch; None when that cell was not measured.

        Past the widest window measured at this batch the line through the last two is extended only
        if no wider window was measured at any batch (a draft tree wider than the grid): a window that
        other batches reached but this one did not ran out of memory or budget here.
        """
        points = sorted((w, t) for (w, b), t in self.seconds.items() if b == batch)
        if not points or (width > points[-1][0] and points[-1][0] < max(w for w, _ in self.seconds)):
            return None
        if len(points) == 1 or width <= points[0][0]:
            return points[0][1]  # at or below the narrowest measured window: its cost
        upper = next((i for i, (w, _) in enumerate(points) if w >= width), len(points) - 1)
        return _line(points[upper - 1], points[upper], width)


def _line(a: tuple[int, float], b: tuple[int, float], x: int) -> float:
    """The straight line through two (window, seconds) points, at x."""
    return a[1] + (b[1] - a[1]) * (x - a[0]) / (b[0] - a[0])


@dataclass(frozen=True)
class Projected:
    arch: str
    gpu: str
    method: str
    window: int
    compression: float
    latency_s: float  # batch 1
    best_batch: int
    images_per_s: float  # at best_batch
    forward: str = "roofline"  # where the forward cost came from: "roofline" or "measured"


def project(arch: Arch, gpu: Gpu, method: str, window: int, compression: float,
            batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256),
            width: int | None = None, measured: MeasuredForwards | None = None) -> Projected:
    """Latency at batch 1 and images/s at the best batch that fits, for one method setting.

    `width` is the tokens a row feeds each forward when it exceeds the window (a draft tree's nodes ride
    on top of the window: 26 tokens at window 16 for sjd-pac's default tree); it prices the forward.
    `measured` replaces the roofline by `bench-gpu`'s forward times (module docstring).
    """
    context = arch.prompt + arch.tokens // 2  # the middle of a decode stands for all of it
    forwards = arch.tokens / compression
    width = max(window, width or window)

    def cost(batch: int, tokens: int, keys: int) -> float | None:
        if measured is None:
            return forward_s(arch, gpu, batch, tokens, keys)
        return measured.at(batch, tokens)  # measured with the cache half-way through an image

    prefill, batch_one = cost(1, arch.prompt, 0), cost(1, width, context)
    if prefill is None or batch_one is None:  # only a measured grid can lack a cell
        raise ValueError(f"{measured.source}: no forward measured at batch 1")  # type: ignore[union-attr]
    latency = prefill + forwards * batch_one
    times = {b: cost(b, width, context) for b in batches if fits(arch, gpu, b, width)}
    rates = {b: b / (forwards * t) for b, t in times.items() if t}
    best = max(rates, key=rates.get)
    return Projected(arch.name, gpu.name, method, window, compression, latency, best, rates[best],
                     "roofline" if measured is None else "measured")
