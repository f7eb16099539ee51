"""The report page: one self-contained HTML file that works offline.

Everything is inline: images and plots are `data:` URIs, the CSS is one `<style>` block, and there is no
script, no font, no `@import` and no external URL, so the file can be mailed, archived or opened from
a laptop with no network. Every piece of text that comes from a job (prompts, ids, errors, URIs) goes
through `html.escape`.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from typing import Any, Callable

from sjd_batch.report.data import LATENCY_QUANTILES, GroupSummary, JobOutput
from sjd_batch.report.thumbs import Thumb

THUMB_BOX_PX = 128  # every thumbnail is shown in a 128 px box, whatever its stored size
MAX_SKIPPED_ROWS = 200  # skipped input rows listed in full; the rest are counted

CSS = """
:root { --fg: #1d1d1f; --muted: #6b6b70; --line: #e3e3e6; --zebra: #f7f7f8; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; }
main { max-width: 1360px; margin: 0 auto; padding: 24px 28px 40px; }
h1 { font-size: 24px; margin: 0 0 2px; }
h2 { font-size: 18px; margin: 30px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
p.sub, p.note, .muted { color: var(--muted); }
p.note { max-width: 980px; margin: 6px 0; }
code { font-size: 12px; }
table { border-collapse: collapse; margin: 6px 0 4px; font-size: 13px; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { font-weight: 600; background: #fbfbfc; }
tbody tr:nth-child(even) td { background: var(--zebra); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.err { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; white-space: pre-wrap;
         word-break: break-word; max-width: 900px; }
.chip { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px;
        background: var(--c); vertical-align: baseline; }
.sheet { display: grid; grid-template-columns: repeat(auto-fill, minmax(152px, 1fr)); gap: 12px; }
figure.sample { margin: 0; padding: 6px; border: 1px solid var(--line); border-top: 3px solid var(--c);
                border-radius: 4px; background: #fff; }
figure.sample img, figure.sample .missing { display: block; width: 128px; height: 128px; margin: 0 auto;
        object-fit: contain; image-rendering: pixelated; background: #eee; }
figure.sample .missing { font-size: 11px; color: var(--muted); padding: 8px; overflow: hidden; }
figcaption { font-size: 12px; margin-top: 5px; }
figcaption .prompt { display: -webkit-box; -webkit-line-clamp: 4; -webkit-box-orient: vertical;
                     overflow: hidden; }
figcaption .meta { color: var(--muted); font-size: 11px; margin-top: 2px; }
.plots { display: flex; flex-wrap: wrap; gap: 16px; }
.plots img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); }
p.none { font-weight: 600; color: #2e7d32; }
footer { margin-top: 36px; color: var(--muted); font-size: 12px; }
footer li { margin: 2px 0; }
"""


@dataclass(frozen=True)
class Plot:
    """One embedded figure."""

    id: str
    alt: str
    png: bytes
    width: int
    height: int


@dataclass(frozen=True)
class Page:
    """Everything the page shows, already computed."""

    jobs: list[JobOutput]
    colors: dict[str, str]  # job label -> CSS colour (the plots' colour for that job)
    thumbs: list[Thumb]
    samples: int  # committed samples over all jobs
    max_images: int
    thumb_px: int
    by_job: list[GroupSummary]
    plots: dict[str, Plot]  # by figure: step_compression, accept_length, acceptance_offset, latency, ...
    generated: str  # UTC timestamp


def esc(value: Any) -> str:
    """Text or attribute value, HTML-escaped (quotes too)."""
    return html.escape("" if value is None else str(value), quote=True)


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def render(page: Page) -> str:
    """The whole HTML document."""
    jobs = page.jobs
    title = "sjd-batch report: " + ", ".join(j.name for j in jobs)
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>",
        "<h1>sjd-batch report</h1>",
        f'<p class="sub">{len(jobs)} job{"s" if len(jobs) != 1 else ""} · {page.samples} committed samples · '
        f"generated {esc(page.generated)}</p>",
        _jobs_section(page),
        _sheet_section(page),
        _acceptance_section(page),
        _table_section("by-job", "Per job", "job", page.by_job),
        _latency_section(page),
        _failures_section(jobs),
        _footer(page),
        "</main></body></html>",
    ]
    return "\n".join(parts)


def _table(table_id: str, head: list[tuple[str, str]], rows: list[list[tuple[str, str]]]) -> str:
    """`head` and each row are (html, css class) cells; the html is already escaped."""
    th = "".join(f'<th class="{cls}">{text}</th>' for text, cls in head)
    body = "".join("<tr>" + "".join(f'<td class="{cls}">{text}</td>' for text, cls in row) + "</tr>"
                   for row in rows)
    return f'<table id="{table_id}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _chip(page: Page, label: str) -> str:
    return f'<span class="chip" style="--c:{esc(page.colors.get(label, "#888"))}"></span>'


def _jobs_section(page: Page) -> str:
    head = [(h, "num" if h in ("samples", "skipped rows") else "") for h in
            ("job", "name", "job id", "model", "method", "parameters", "shards", "samples", "skipped rows",
             "created", "output")]
    rows = []
    for j in page.jobs:
        method = j.manifest.get("config", {}).get("method", {})
        params = {k: v for k, v in method.items() if k != "name"}  # the job file's method parameters
        shards = (f"{len(j.commits)} committed, {len(j.failed)} failed, {len(j.pending)} pending "
                  f"of {j.planned}")
        rows.append([(_chip(page, j.label) + esc(j.label), ""), (esc(j.name), ""),
                     (f"<code>{esc(j.job_id)}</code>", ""), (esc(j.model), ""), (esc(j.method), ""),
                     (f"<code>{esc(json.dumps(params))}</code>", ""), (esc(shards), ""),
                     (str(j.stats.num_rows), "num"), (str(j.skipped.num_rows), "num"),
                     (esc(j.manifest.get("created", "")), ""), (f"<code>{esc(j.uri)}</code>", "")])
    return '<section id="jobs"><h2>Jobs</h2>' + _table("table-jobs", head, rows) + "</section>"


def _sheet_section(page: Page) -> str:
    shown = len(page.thumbs)
    note = (f"{shown} of {page.samples} committed samples (at most {page.max_images}, taken from the jobs "
            f"in turn, in shard and row order). Images are embedded at up to {page.thumb_px} px a side and "
            f"shown in {THUMB_BOX_PX} px boxes; after the method: the sample's step compression.")
    if not shown:
        return '<section id="samples"><h2>Samples</h2><p class="none">no committed samples</p></section>'
    figures = []
    for t in page.thumbs:
        if t.data:
            w, h = _fit(t.width, t.height, THUMB_BOX_PX)
            img = (f'<img class="thumb" src="{data_uri(t.data, t.mime)}" width="{w}" height="{h}" '
                   f'alt="{esc(t.sample_id)}">')
        else:
            img = f'<div class="missing">image unavailable: {esc(t.problem)}</div>'
        sc = "-" if t.step_compression is None else f"{t.step_compression:.2f}×"
        figures.append(
            f'<figure class="sample" style="--c:{esc(page.colors.get(t.job, "#888"))}">{img}<figcaption>'
            f'<div class="prompt" title="{esc(t.prompt)}">{esc(t.prompt)}</div>'
            f'<div class="meta"><span class="sid">{esc(t.sample_id)}</span> · {esc(t.method)} · '
            f"{esc(sc)}</div></figcaption></figure>"
        )
    return (f'<section id="samples"><h2>Samples</h2><p class="note">{esc(note)}</p>'
            f'<div class="sheet">{"".join(figures)}</div></section>')


def _fit(width: int, height: int, box: int) -> tuple[int, int]:
    """Display size of an image scaled to fit a `box` px square (up or down), keeping its aspect."""
    scale = box / max(width, height, 1)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _plot(plot: Plot) -> str:
    return (f'<img class="plot" id="plot-{esc(plot.id)}" src="{data_uri(plot.png, "image/png")}" '
            f'width="{plot.width}" height="{plot.height}" alt="{esc(plot.alt)}">')


def _acceptance_section(page: Page) -> str:
    return (
        '<section id="acceptance"><h2>Acceptance</h2><div class="plots">'
        f'{_plot(page.plots["step_compression"])}{_plot(page.plots["accept_length"])}'
        f'{_plot(page.plots["acceptance_offset"])}</div>'
        '<p class="note">Step compression: a sample\'s AR forwards over the forwards it took (its tokens '
        "over its NFE), which is also its mean accept length. Accept length: the tokens one forward "
        "committed (the stats' <code>accept_lens</code>, prefill first), as a share of each job's "
        "forwards. Acceptance by window offset: drafts accepted over drafts tested at each position k "
        "of the window, pooled over the job's samples; acceptance in the table pools every position. "
        "The README's Figures section defines each of them.</p></section>"
    )


def _fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


TABLE_COLUMNS: list[tuple[str, Callable[[GroupSummary], str]]] = [
    ("samples", lambda s: str(s.samples)),
    ("step compression mean (×)", lambda s: _fmt(s.step_compression_mean, ".2f")),
    ("step compression median (×)", lambda s: _fmt(s.step_compression_median, ".2f")),
    ("acceptance (%)", lambda s: _fmt(s.acceptance, ".1f", 100.0)),
    *[(f"latency p{round(q * 100)} (s/sample)", lambda s, q=q: _fmt(s.latency.get(q), ".3f"))
      for q in LATENCY_QUANTILES],
    ("throughput (img/s)", lambda s: _fmt(s.images_per_s, ".2f")),
]


def _table_section(section_id: str, title: str, key_name: str, groups: list[GroupSummary]) -> str:
    head = [(esc(key_name), "")] + [(esc(name), "num") for name, _ in TABLE_COLUMNS]
    rows = [[(esc(g.key), "")] + [(esc(cell(g)), "num") for _, cell in TABLE_COLUMNS] for g in groups]
    body = _table(f"table-{section_id}", head, rows) if rows else '<p class="none">no committed samples</p>'
    return f'<section id="{section_id}"><h2>{esc(title)}</h2>{body}</section>'


def _latency_section(page: Page) -> str:
    return (
        '<section id="latency"><h2>Latency and throughput</h2><div class="plots">'
        f'{_plot(page.plots["latency"])}{_plot(page.plots["throughput"])}</div>'
        '<p class="note">Latency is per sample: from the start of its batch to its image being stored '
        "(<code>latency_s</code>; the samples of a batch share its decode). The stats hold no per-sample "
        "finish time, so throughput comes from the commit markers: a shard's samples count when its marker "
        "is written (<code>finished_at</code>), and the staircase's slope is the throughput. In the table, "
        "throughput is the project's one images/s: a job's images (samples without an error) over the time "
        "from its first shard's start to its last shard's commit, summed over jobs; it counts every actor "
        "of a job at once.</p>"
        f'<div class="plots">{_plot(page.plots["timeline"])}</div>'
        '<p class="note">Bars run from a shard\'s <code>started_at</code> to its <code>finished_at</code>, '
        "on the lane of the actor that committed it. Time 0 is each job's first shard start.</p></section>"
    )


def _failures_section(jobs: list[JobOutput]) -> str:
    failed = [(j, shard, err) for j in jobs for shard, err in sorted(j.failed.items())]
    parts = ['<section id="failures"><h2>Failed shards</h2>']
    if failed:
        rows = [[(esc(j.label), ""), (str(shard), "num"), (esc(err), "err")] for j, shard, err in failed]
        parts.append(_table("table-failures", [("job", ""), ("shard", "num"), ("error", "")], rows))
        parts.append('<p class="note">Shards that failed after all their retries; their samples are not in '
                     "this report. Rerunning the job runs only them.</p>")
    else:
        parts.append('<p class="none">none</p>')
    pending = [f"{j.label}: {len(j.pending)}" for j in jobs if j.pending]
    if pending:
        parts.append('<p class="note">Not finished (no commit, no failure record): '
                     f'{esc("; ".join(pending))} shards.</p>')
    parts.append(_skipped_rows(jobs))
    parts.append("</section>")
    return "".join(parts)


def _skipped_rows(jobs: list[JobOutput]) -> str:
    rows = [(j, r) for j in jobs for r in j.skipped.to_pylist()]
    if not rows:
        return '<h3>Skipped input rows</h3><p class="none">none</p>'
    cells = [[(esc(j.label), ""), (esc(r["sample_id"]), ""), (f"<code>{esc(r['source'])}</code>", ""),
              (str(r["row"]), "num"), (esc(r["reason"]), "err")] for j, r in rows[:MAX_SKIPPED_ROWS]]
    head = [("job", ""), ("sample id", ""), ("source", ""), ("row", "num"), ("reason", "")]
    more = (f'<p class="note">and {len(rows) - MAX_SKIPPED_ROWS} more rows (see the errors/ dataset)</p>'
            if len(rows) > MAX_SKIPPED_ROWS else "")
    return f"<h3>Skipped input rows</h3>{_table('table-skipped', head, cells)}{more}"


def _footer(page: Page) -> str:
    thumbs_kb = sum(len(t.data) for t in page.thumbs) / 1024
    plots_kb = sum(len(p.png) for p in page.plots.values()) / 1024
    return (
        "<footer><ul>"
        f"<li>Embedded: {len(page.thumbs)} thumbnails, {thumbs_kb:.0f} KB (at most {page.thumb_px} px a "
        "side: an image that fits is embedded as stored, a larger one is downscaled and stored as PNG or "
        f"JPEG quality 85, whichever is smaller); {len(page.plots)} plots, {plots_kb:.0f} KB (PNG, 100 dpi). "
        "Base64 adds a third.</li>"
        "<li>Only committed shards count, as in <code>sjd-batch stats</code>. Acceptance is pooled: drafts "
        "accepted over drafts tested, over all samples. Percentiles interpolate linearly.</li>"
        "<li>Self-contained: no scripts and no external resources; it works offline.</li>"
        "</ul></footer>"
    )
