"""The report's figures, drawn with matplotlib and returned as PNG bytes.

Figures are built with `matplotlib.figure.Figure` directly, never through pyplot: no global figure
registry and no backend switch, so building a report changes nothing in the caller's matplotlib state
(idea from matplotlib/matplotlib galleries/examples/user_interfaces/web_application_server_sgskip.py).
Saving to PNG renders with Agg. Each function takes plain numbers keyed by series label plus a
label -> colour map, so the same job has the same colour in every figure.
"""

from __future__ import annotations

import io
import itertools
from typing import TYPE_CHECKING, Any

from sjd_batch.report.data import ReportError, ShardSpan

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 100  # 1 figure inch = 100 CSS px: the page shows every plot at its natural size
Series = dict[str, "np.ndarray"]  # series label -> values (any order)


def require_matplotlib() -> None:
    """Raise ReportError, saying how to install it, when matplotlib (the `plots` extra) is missing.

    Called before a report reads anything; each figure function imports matplotlib only after it.
    """
    try:
        import matplotlib.figure  # noqa: F401
        import matplotlib.ticker  # noqa: F401
    except ImportError:
        raise ReportError(
            "sjd-batch report draws its plots with matplotlib, which is not installed: "
            "pip install 'sjd-batch[plots]'"
        ) from None


def _figure(width_in: float, height_in: float, **kwargs: Any) -> Figure:
    require_matplotlib()
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained", **kwargs)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})  # no version stamp: stable bytes
    return buf.getvalue()


def _axes(width_in: float = 6.4, height_in: float = 3.4) -> tuple[Figure, Axes]:
    fig = _figure(width_in, height_in)
    return fig, fig.subplots()


def _no_data(what: str, width_in: float = 6.4, height_in: float = 3.4) -> bytes:
    """A figure that says there is nothing to plot, the size of the plot it stands for."""
    fig, ax = _axes(width_in, height_in)
    ax.text(0.5, 0.5, f"no {what}", ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])
    return _png(fig)


def _style(ax: Axes, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, loc="left", fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, color="0.9", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def step_compression_histogram(series: Series, colors: dict[str, str]) -> bytes:
    """Per-sample step compression (AR forwards / forwards taken), one translucent histogram per job."""
    import numpy as np

    values = np.concatenate([np.asarray(vs, dtype=np.float64) for vs in series.values()] or [np.zeros(0)])
    if not len(values):
        return _no_data("committed samples")
    fig, ax = _axes()
    from matplotlib.ticker import MaxNLocator  # after _axes: a missing matplotlib is a ReportError
    edges = np.histogram_bin_edges(values, bins=min(40, max(12, len(values) // 4)))
    for label, vs in series.items():
        if len(vs):
            ax.hist(vs, bins=edges, color=colors[label], alpha=0.45, label=f"{label} (n={len(vs)})")
            ax.hist(vs, bins=edges, color=colors[label], histtype="step", linewidth=1.5)
    _style(ax, "Step compression per sample", "AR forwards / forwards taken (×)", "samples")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts of samples
    ax.legend(frameon=False, fontsize=9)
    return _png(fig)


def accept_length_histogram(series: Series, colors: dict[str, str]) -> bytes:
    """Tokens committed per forward (`accept_lens`, prefill included), as a share of each job's forwards."""
    import numpy as np

    present = {k: np.asarray(v, dtype=np.int64) for k, v in series.items() if len(v)}
    if not present:
        return _no_data("committed samples")
    fig, ax = _axes()
    top = int(max(v.max() for v in present.values()))
    lengths = np.arange(1, top + 1)
    width = 0.8 / len(present)  # bars of the jobs side by side around each integer length
    for i, (label, v) in enumerate(present.items()):
        share = np.bincount(v, minlength=top + 1)[1:] / len(v)
        # no mean here: a job's mean accept length is its step compression, shown in the table
        ax.bar(lengths + (i - (len(present) - 1) / 2) * width, share, width=width, color=colors[label],
               label=f"{label} ({len(v)} forwards)")
    _style(ax, "Accept length per forward", "tokens committed by one forward", "share of forwards")
    ax.set_xticks(lengths if top <= 20 else np.linspace(1, top, 10, dtype=int))
    ax.legend(frameon=False, fontsize=9)
    return _png(fig)


def acceptance_by_offset(series: dict[str, tuple[np.ndarray, np.ndarray]], colors: dict[str, str]) -> bytes:
    """Pooled acceptance of the k-th draft of the window, k = 1..L-1, one line per job (jobs with no
    drafts, such as AR, are left out): how far into the window drafts still pass."""
    present = {k: v for k, v in series.items() if len(v[0])}
    if not present:
        return _no_data("drafts tested")
    fig, ax = _axes()
    for label, (positions, rates) in present.items():
        ax.plot(positions, rates, marker="o", markersize=3, color=colors[label], linewidth=1.8, label=label)
    _style(ax, "Acceptance by window offset", "draft position in the window (k)",
           "drafts accepted / drafts tested")
    ax.set_ylim(0, 1.02)
    ax.legend(frameon=False, fontsize=9)
    return _png(fig)


def latency_cdf(series: Series, colors: dict[str, str]) -> bytes:
    """Empirical CDF of per-sample latency (batch start to image stored), one line per job."""
    import numpy as np

    if not any(len(vs) for vs in series.values()):
        return _no_data("latencies")
    fig, ax = _axes()
    for label, vs in series.items():
        if len(vs):
            x = np.sort(np.asarray(vs))
            ax.step(x, np.arange(1, len(x) + 1) / len(x), where="post", color=colors[label], linewidth=2,
                    label=f"{label} (p50 {np.median(x):.3g} s)")
    for q in (0.5, 0.9, 0.99):
        ax.axhline(q, color="0.75", linewidth=0.8, linestyle=":")
    _style(ax, "Latency per sample", "seconds (batch start to image stored)", "share of samples ≤ x")
    ax.set_ylim(0, 1.02)
    ax.legend(frameon=False, fontsize=9, loc="best")
    return _png(fig)


def shard_timeline(spans: dict[str, list[ShardSpan]], colors: dict[str, str]) -> bytes:
    """Each committed shard as a bar on its actor's lane, from its start to its commit.

    Time is seconds since each job's first shard started, so jobs run at different times line up.
    """
    lanes = [(label, actor) for label, ss in spans.items() for actor in sorted({s.actor for s in ss})]
    if not lanes:
        return _no_data("committed shards", 13.0, 1.8)
    fig, ax = _axes(13.0, 1.3 + 0.45 * len(lanes))
    annotate = sum(len(ss) for ss in spans.values()) <= 60  # shard numbers only while they stay legible
    for y, (label, actor) in enumerate(lanes):
        mine = [s for s in spans[label] if s.actor == actor]
        ax.broken_barh([(s.start_s, max(s.end_s - s.start_s, 1e-3)) for s in mine], (y - 0.35, 0.7),
                       facecolors=colors[label], edgecolors="white", linewidth=1.0)
        for s in mine if annotate else []:
            ax.text((s.start_s + s.end_s) / 2, y, f"shard {s.shard}", ha="center", va="center", fontsize=8,
                    color="white")
    ax.set_yticks(range(len(lanes)), [f"{label}\n{actor}" for label, actor in lanes], fontsize=8)
    ax.invert_yaxis()
    _style(ax, "Shards per actor (one bar per committed shard, start to commit)",
           "seconds since the job's first shard started", "")
    return _png(fig)


def throughput(spans: dict[str, list[ShardSpan]], colors: dict[str, str]) -> bytes:
    """Samples committed over time, one staircase per job: its slope is the throughput.

    Samples count at their shard's commit: the stats carry no per-sample finish time.
    """
    if not any(spans.values()):
        return _no_data("committed shards")
    fig, ax = _axes()
    from matplotlib.ticker import MaxNLocator  # after _axes: a missing matplotlib is a ReportError
    for label, ss in spans.items():
        ends = sorted((s.end_s, s.rows) for s in ss)
        xs = [0.0] + [e for e, _ in ends]
        ys = [0, *itertools.accumulate(n for _, n in ends)]
        rate = ys[-1] / xs[-1] if xs[-1] > 0 else 0.0
        ax.step(xs, ys, where="post", color=colors[label], linewidth=2,
                label=f"{label}: {ys[-1]} in {xs[-1]:.1f} s = {rate:.2f} img/s")
    _style(ax, "Throughput: samples committed over time", "seconds since the job's first shard started",
           "samples committed")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(frameon=False, fontsize=9, loc="upper left")
    return _png(fig)
