"""`sjd-batch report OUTPUT_URI [OUTPUT_URI ...] [--out report.html]`: a self-contained HTML report.

One page per call, for one job output or several side by side (e.g. the same prompts under two methods):
a contact sheet of sample images with their prompts, step compression and accept-length histograms,
per-method and per-model tables, latency, the job timeline and failed shards. The page embeds every
image and plot, has no script and fetches nothing, so it works offline. `--out` may be a local path or
an s3:// key; both are written through the storage layer.
"""

from __future__ import annotations

import argparse
import sys

from sjd_batch.io.backends import open_storage
from sjd_batch.io.storage import StorageError, split_uri


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("outputs", nargs="+", metavar="OUTPUT_URI",
                        help="a job's output URI (local folder or s3://bucket/prefix); several compare jobs")
    parser.add_argument("--out", default="report.html",
                        help="the HTML file to write, local or s3:// (default report.html)")
    parser.add_argument("--max-images", type=int, default=48,
                        help="thumbnails on the contact sheet (default 48)")
    parser.add_argument("--thumb-size", type=int, default=128,
                        help="largest side of an embedded thumbnail in px (default 128)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar while loading images")


def main(args: argparse.Namespace) -> int:
    from sjd_batch.report import ReportError, build_report

    try:
        report = build_report(args.outputs, max_images=args.max_images, thumb_px=args.thumb_size,
                              progress=not args.no_progress)
        folder, name = split_uri(args.out)
        if not name:
            raise ValueError(f"--out {args.out}: expected a file name such as report.html")
        open_storage(folder).write_bytes(name, report.html.encode("utf-8"))
    except (ReportError, StorageError, ValueError) as e:
        print(f"sjd-batch report: error: {e}", file=sys.stderr)
        return 2
    size_kb = len(report.html.encode("utf-8")) / 1024
    samples = sum(j.stats.num_rows for j in report.jobs)
    failed = sum(len(j.failed) for j in report.jobs)
    print(f"wrote {args.out} ({size_kb:.0f} KB): {len(report.jobs)} job(s), {samples} samples, "
          f"{report.images} images, {report.plots} plots, {failed} failed shard(s)")
    return 0
