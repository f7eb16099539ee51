"""`sjd-batch report` on real job outputs (see conftest.py): the page parses, is self-contained, shows
every prompt escaped, embeds decodable thumbnails equal to the stored images, its tables match numbers
computed here straight from the stats Parquet with pyarrow and numpy, and failures are shown escaped.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sjd_batch import cli
from sjd_batch.runner import run_local
from tests.report.conftest import CAPTIONS, Outputs
from tests.test_worker import make_job, prompt_table, write_prompts

VOID = {"img", "meta", "br", "hr", "link", "input", "source", "wbr"}


class ParsedPage(HTMLParser):
    """Images, tables (by id: rows of cell texts), text per section, and a check that tags nest."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.imgs: list[dict[str, str]] = []
        self.attrs: list[tuple[str, dict[str, str]]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.sections: dict[str, list[str]] = {}
        self.stack: list[str] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._section = ""
        self.feed(text)
        self.close()
        assert not self.stack, f"unclosed tags: {self.stack}"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.attrs.append((tag, a))
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "img":
            self.imgs.append(a)
        elif tag == "section":
            self._section = a["id"]
        elif tag == "table":
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = []
            self.tables[self._table].append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._table, self._row = None, None
        elif tag == "section":
            self._section = ""

    def handle_data(self, data: str) -> None:
        self.sections.setdefault(self._section, []).append(data)
        if self._cell is not None:
            self._cell.append(data)

    def text(self, section: str) -> str:
        return " ".join(" ".join(self.sections.get(section, [])).split())

    def table(self, table_id: str) -> list[dict[str, str]]:
        head, *rows = self.tables[table_id]
        return [dict(zip(head, row, strict=True)) for row in rows]


def decode_data_uri(uri: str) -> tuple[str, Image.Image]:
    match = re.fullmatch(r"data:(image/(?:png|jpeg));base64,([A-Za-z0-9+/=]+)", uri)
    assert match, uri[:80]
    img = Image.open(io.BytesIO(base64.b64decode(match.group(2), validate=True)))
    img.load()
    assert img.format == {"image/png": "PNG", "image/jpeg": "JPEG"}[match.group(1)]
    return match.group(1), img


def stats_of(uri: str) -> pa.Table:
    """Committed stats rows, read here with plain pyarrow (commit markers read as JSON files)."""
    root = Path(uri)
    committed = {json.loads(p.read_text())["shard"] for p in (root / "_commits").glob("*.json")}
    part = ds.partitioning(pa.schema([("job_id", pa.string()), ("shard", pa.int32())]), flavor="hive")
    table = ds.dataset(root / "stats", format="parquet", partitioning=part).to_table()
    return table.filter(pc.is_in(table.column("shard"), pa.array(sorted(committed), pa.int32())))


def commits_of(uri: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in (Path(uri) / "_commits").glob("*.json")]


def expected_row(uris: list[str]) -> dict[str, str]:
    """A group's table row, computed independently with numpy; each uri is one job of the group."""
    table = pa.concat_tables([stats_of(u) for u in uris])
    sc = np.asarray(table.column("step_compression").to_pylist())
    lat = np.asarray(table.column("latency_s").to_pylist())
    tested = sum(table.column("drafts_tested").to_pylist())
    accepted = sum(table.column("drafts_accepted").to_pylist())
    wall = 0.0
    for uri in uris:
        commits = commits_of(uri)
        wall += max(c["finished_at"] for c in commits) - min(c["started_at"] for c in commits)
    p50, p90, p99 = np.percentile(lat, [50, 90, 99])  # linear interpolation, as pyarrow's quantile
    return {
        "samples": str(table.num_rows),
        "step compression mean (×)": f"{sc.mean():.2f}",
        "step compression median (×)": f"{np.median(sc):.2f}",
        "acceptance (%)": f"{100 * accepted / tested:.1f}" if tested else "-",
        "latency p50 (s/sample)": f"{p50:.3f}",
        "latency p90 (s/sample)": f"{p90:.3f}",
        "latency p99 (s/sample)": f"{p99:.3f}",
        "throughput (img/s)": f"{table.num_rows / wall:.2f}",
    }


@pytest.fixture(scope="module")
def page(report_file: Path) -> tuple[str, ParsedPage]:
    text = report_file.read_text(encoding="utf-8")
    return text, ParsedPage(text)


def test_page_is_self_contained(page: tuple[str, ParsedPage], report_file: Path) -> None:
    raw, parsed = page
    assert raw.startswith("<!doctype html>") and '<meta charset="utf-8">' in raw
    for tag, attrs in parsed.attrs:
        for name in ("src", "href", "srcset", "action", "poster", "data"):
            value = attrs.get(name, "")
            assert not re.match(r"\s*(https?:)?//", value), f"<{tag} {name}={value[:60]}> uses the network"
        assert tag not in ("script", "link", "iframe", "object", "embed"), f"<{tag}> in a self-contained page"
        assert not any(k.startswith("on") for k in attrs), f"<{tag}> has an event handler"
    assert all(img["src"].startswith("data:image/") for img in parsed.imgs)
    assert "@import" not in raw and "url(" not in raw.lower()
    assert "<script" not in raw.lower()  # the caption's <script> is escaped, never a tag
    assert report_file.stat().st_size < 1_000_000  # size budget: 12 thumbnails + 6 plots ≈ 280 KB


def test_contact_sheet(page: tuple[str, ParsedPage], outputs: Outputs) -> None:
    raw, parsed = page
    thumbs = [img for img in parsed.imgs if img.get("class") == "thumb"]
    stored: dict[str, list[np.ndarray]] = {}  # sample id -> its images in both jobs
    for uri in (outputs.ok, outputs.failing):
        for row in stats_of(uri).to_pylist():
            png = (Path(uri) / row["image_key"]).read_bytes()
            pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
            stored.setdefault(row["sample_id"], []).append(pixels)
    assert len(thumbs) == 12 == sum(map(len, stored.values()))  # every sample: fewer than --max-images 48
    for thumb in thumbs:
        mime, img = decode_data_uri(thumb["src"])
        # 64 px images fit the 128 px budget: embedded as stored, pixel for pixel
        assert mime == "image/png" and img.size == (64, 64)
        pixels = np.asarray(img.convert("RGB"))
        assert any(np.array_equal(pixels, s) for s in stored[thumb["alt"]]), thumb["alt"]
    sheet = parsed.text("samples")
    for caption in CAPTIONS:
        assert caption in sheet  # the parsed text shows the prompt as written
        assert html.escape(caption, quote=True) in raw
    assert "<b>" not in raw and "alert(1)</script>" not in raw  # only the escaped form is in the source
    assert sheet.count("· sjd ·") == 6 and sheet.count("· mc-sjd ·") == 6


def test_tables_match_the_stats(page: tuple[str, ParsedPage], outputs: Outputs) -> None:
    _, parsed = page
    by_job = {row.pop("job"): row for row in parsed.table("table-by-job")}
    assert by_job == {"sjd · shapes-t2i": expected_row([outputs.ok]),
                      "mc-sjd · shapes-t2i": expected_row([outputs.failing])}
    # one figure, one column: a sample's mean accept length is its step compression
    for uri in (outputs.ok, outputs.failing):
        table = stats_of(uri)
        assert table.column("accept_len_mean").to_pylist() == table.column("step_compression").to_pylist()
    jobs = {row["method"]: row for row in parsed.table("table-jobs")}
    assert jobs["mc-sjd"]["shards"] == "2 committed, 1 failed, 0 pending of 3"
    assert jobs["mc-sjd"]["skipped rows"] == "1" and jobs["sjd"]["samples"] == "6"
    assert float(by_job["mc-sjd · shapes-t2i"]["step compression mean (×)"]) > 1  # a real speed-up


def test_failures_are_shown_escaped(page: tuple[str, ParsedPage], outputs: Outputs) -> None:
    raw, parsed = page
    [record] = [json.loads(p.read_text()) for p in (Path(outputs.failing) / "_failures").glob("*.json")]
    error = record["error"]
    assert outputs.bad_file in error and "no `prompt` column" in error
    [row] = parsed.table("table-failures")
    assert row == {"job": "mc-sjd · shapes-t2i", "shard": "2", "error": " ".join(error.split())}
    assert html.escape(error) in raw and error not in raw  # the file name's <i> & are escaped
    [skipped] = parsed.table("table-skipped")
    assert skipped["sample id"] == "empty" and skipped["reason"] == "prompt is null"


def test_single_job_without_failures(outputs: Outputs, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "sub" / "one.html"  # the folder is created
    capsys.readouterr()
    code = cli.main(["report", outputs.ok, "--out", str(out), "--max-images", "4", "--thumb-size", "32",
                     "--no-progress"])
    assert code == 0 and f"wrote {out}" in capsys.readouterr().out
    parsed = ParsedPage(out.read_text(encoding="utf-8"))
    assert parsed.text("failures") == "Failed shards none Skipped input rows none"
    thumbs = [img for img in parsed.imgs if img.get("class") == "thumb"]
    assert len(thumbs) == 4 and "4 of 6 committed samples" in parsed.text("samples")
    for thumb in thumbs:
        _, img = decode_data_uri(thumb["src"])
        assert img.size == (32, 32)  # downscaled from 64 px to the --thumb-size budget
    assert len([img for img in parsed.imgs if img.get("class") == "plot"]) == 6


def test_packed_formats_and_ar_job(outputs: Outputs, tmp_path: Path) -> None:
    """Images read from WebDataset tars and Parquet image files; a second model and an AR job (no drafts:
    acceptance '-')."""
    prompts = write_prompts(tmp_path / "in" / "p.parquet", 4)  # ids p0000-p0003
    wds = make_job([prompts], str(tmp_path / "wds"), method={"name": "ar"},
                   output={"image_format": "webdataset"})
    others = write_prompts(tmp_path / "in2" / "p.parquet", prompt_table(4, start=100))  # p0100-p0103
    parquet = make_job([others], str(tmp_path / "pq"), output={"image_format": "parquet"})
    assert run_local(wds, progress=False).ok and run_local(parquet, progress=False).ok
    out = tmp_path / "report.html"
    jobs = [outputs.ok, wds.output.uri, parquet.output.uri]
    assert cli.main(["report", *jobs, "--out", str(out), "--no-progress"]) == 0
    parsed = ParsedPage(out.read_text(encoding="utf-8"))
    by_job = {row.pop("job"): row for row in parsed.table("table-by-job")}
    assert by_job == {"sjd · shapes-t2i": expected_row([outputs.ok]),
                      "ar · tiny-random": expected_row([wds.output.uri]),
                      "sjd · tiny-random": expected_row([parquet.output.uri])}
    assert by_job["ar · tiny-random"]["acceptance (%)"] == "-"
    thumbs = [img for img in parsed.imgs if img.get("class") == "thumb"]
    packed = [img for img in thumbs if img["alt"].startswith("p")]  # the tiny-random jobs' samples
    assert len(thumbs) == 14 and len(packed) == 8
    from sjd_batch.io import formats, layout

    members = {}  # one shard per job
    for fmt, root in (("webdataset", tmp_path / "wds"), ("parquet", tmp_path / "pq")):
        key = layout.pack_key(0, fmt)
        members |= formats.read_packed(key, (root / key).read_bytes())
    assert len(members) == 4 * 3 + 4  # tar: .png, .txt, .json per sample; Parquet: the images
    for thumb in packed:
        _, img = decode_data_uri(thumb["src"])
        png = members[f"{thumb['alt']}.png"]
        assert img.tobytes() == Image.open(io.BytesIO(png)).convert("RGB").tobytes()


def test_job_with_nothing_committed(tmp_path: Path) -> None:
    """Every shard failed: the page still builds, says there is nothing to show and lists the failure."""
    prompts = Path(write_prompts(tmp_path / "in" / "p.parquet", 3))
    config = make_job([str(prompts)], str(tmp_path / "out"))
    from sjd_batch.job import prepare_job

    plan = prepare_job(config)  # the plan is fixed; now the file loses its prompts (mid-run)
    pq.write_table(pa.table({"id": ["a", "b", "c"], "caption": ["x", "y", "z"]}), prompts)
    assert not run_local(config, progress=False, plan=plan).ok
    out = tmp_path / "report.html"
    assert cli.main(["report", config.output.uri, "--out", str(out), "--no-progress"]) == 0
    parsed = ParsedPage(out.read_text(encoding="utf-8"))
    assert parsed.text("samples") == "Samples no committed samples"
    assert parsed.text("by-job") == "Per job no committed samples"
    [row] = parsed.table("table-failures")
    assert row["shard"] == "0" and str(prompts) in row["error"]
    assert len([img for img in parsed.imgs if img.get("class") == "plot"]) == 6  # "no data" figures


def test_not_a_job_output(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    for uri in (str(tmp_path / "empty"), str(tmp_path / "nowhere")):
        capsys.readouterr()
        assert cli.main(["report", uri, "--out", str(tmp_path / "r.html")]) == 2
        err = capsys.readouterr().err
        assert f"{uri} is not an sjd-batch job output: expected {uri}/job.json" in err
    assert not (tmp_path / "r.html").exists()


@pytest.mark.s3
def test_report_from_and_to_s3(outputs: Outputs, bucket: str, s3_client: Any,
                               capsys: pytest.CaptureFixture) -> None:
    root = Path(outputs.ok)
    for path in root.rglob("*"):
        if path.is_file():
            s3_client.put_object(Bucket=bucket, Key=f"ok/{path.relative_to(root).as_posix()}",
                                 Body=path.read_bytes())
    capsys.readouterr()
    code = cli.main(["report", f"s3://{bucket}/ok", "--out", f"s3://{bucket}/reports/r.html",
                     "--no-progress"])
    assert code == 0, capsys.readouterr().err
    raw = s3_client.get_object(Bucket=bucket, Key="reports/r.html")["Body"].read().decode("utf-8")
    parsed = ParsedPage(raw)
    thumbs = [img for img in parsed.imgs if img.get("class") == "thumb"]
    assert len(thumbs) == 6 and all(decode_data_uri(t["src"])[1].size == (64, 64) for t in thumbs)
    assert {row["job"]: row for row in parsed.table("table-by-job")}["sjd · shapes-t2i"]["samples"] == "6"
    assert CAPTIONS[0] in parsed.text("samples")


def test_acceptance_by_window_offset(page: tuple[str, ParsedPage], outputs: Outputs, tmp_path: Path) -> None:
    """The plot every SJD paper shows: pooled acceptance of the k-th draft, computed here by hand."""
    from sjd_batch.report.data import acceptance_by_offset

    _, parsed = page
    assert any(img.get("id") == "plot-acceptance_offset" for img in parsed.imgs)
    for uri in (outputs.ok, outputs.failing):
        rows = stats_of(uri).to_pylist()
        width = max(len(r["tested_by_offset"]) for r in rows)
        tested = [sum(r["tested_by_offset"][k] for r in rows if k < len(r["tested_by_offset"]))
                  for k in range(width)]
        accepted = [sum(r["accepted_by_offset"][k] for r in rows if k < len(r["accepted_by_offset"]))
                    for k in range(width)]
        positions, rates = acceptance_by_offset(stats_of(uri))
        assert positions.tolist() == [k + 1 for k in range(width) if tested[k]]
        assert rates.tolist() == pytest.approx([accepted[k] / tested[k] for k in range(width) if tested[k]])
        assert rates[0] > 0 and len(positions) >= 2  # shapes-t2i accepts first drafts
    prompts = write_prompts(tmp_path / "in" / "p.parquet", 2)
    ar = make_job([prompts], str(tmp_path / "ar"), method={"name": "ar"})
    assert run_local(ar, progress=False).ok
    positions, rates = acceptance_by_offset(stats_of(ar.output.uri))
    assert len(positions) == len(rates) == 0  # AR tests no draft: no line, not a line at zero


def test_without_the_plots_extra_the_report_says_how_to_install_it(outputs: Outputs, tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "r.html"
    code = ("import sys; sys.modules['matplotlib'] = None  # as if the plots extra were not installed\n"
            "from sjd_batch import cli; sys.exit(cli.main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", code, "report", outputs.ok, "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "matplotlib, which is not installed: pip install 'sjd-batch[plots]'" in done.stderr
    assert not out.exists()
