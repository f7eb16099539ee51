"""The report's contact sheet: `pick_samples` chooses which samples to show (the jobs taking turns),
`load_thumbs` reads their images through the storage layer (PNG objects, WebDataset tars or
Parquet files, in parallel) and `make_thumb` downscales each into an embeddable `Thumb`.
"""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sjd_batch.io import formats, layout
from sjd_batch.io.storage import Storage, StorageError
from sjd_batch.report.data import JobOutput


@dataclass(frozen=True)
class Thumb:
    """One contact-sheet image, ready to embed."""

    job: str  # the job's label
    sample_id: str
    prompt: str
    method: str
    step_compression: float | None
    data: bytes  # PNG or JPEG; empty when the image could not be read
    mime: str  # image/png or image/jpeg
    width: int
    height: int
    problem: str = ""  # why `data` is empty


def pick_samples(jobs: list[JobOutput], max_images: int) -> list[tuple[JobOutput, dict[str, Any]]]:
    """Up to `max_images` samples, taken from the jobs in turn, each job in (shard, row) order.

    Taking turns gives every job (method) its share of the sheet, and jobs over the same prompts show
    the same sample ids side by side.
    """
    columns = ["sample_id", "prompt", "method", "step_compression", "image_key", "shard", "row"]
    order = [("shard", "ascending"), ("row", "ascending")]
    # Sorted and cut in Arrow: only the rows that can be shown become Python objects.
    queues = [j.stats.select(columns).sort_by(order).slice(0, max_images).to_pylist() for j in jobs]
    picked: list[tuple[JobOutput, dict[str, Any]]] = []
    for i in range(max(map(len, queues), default=0)):
        for job, rows in zip(jobs, queues, strict=True):
            if i < len(rows) and len(picked) < max_images:
                picked.append((job, rows[i]))
    return picked


def load_thumbs(picked: list[tuple[JobOutput, dict[str, Any]]], max_px: int, progress: bool = False,
                threads: int = 8) -> list[Thumb]:
    """Read the picked images through storage (PNG objects, WebDataset tars or Parquet files), in parallel,
    as thumbnails."""
    from tqdm import tqdm

    reader = _ImageReader()

    def load(item: tuple[JobOutput, dict[str, Any]]) -> Thumb:
        job, row = item
        meta = {"job": job.label, "sample_id": row["sample_id"], "prompt": row["prompt"] or "",
                "method": row["method"] or job.method, "step_compression": row["step_compression"]}
        try:
            data, mime, w, h = make_thumb(reader.read(job.storage, row["image_key"]), max_px)
        except (StorageError, OSError, ValueError) as e:  # a missing or corrupt image: say so on the sheet
            return Thumb(**meta, data=b"", mime="", width=0, height=0, problem=f"{row['image_key']}: {e}")
        return Thumb(**meta, data=data, mime=mime, width=w, height=h)

    with ThreadPoolExecutor(max(1, min(threads, len(picked)))) as pool:
        # disable=None: tqdm shows the bar only on a terminal
        bar = tqdm(pool.map(load, picked), total=len(picked), desc="loading images", unit="img",
                   disable=True if not progress or not picked else None, leave=False)
        return list(bar)


class _ImageReader:
    """Reads one image by its stats `image_key`; a packed shard object (`images/shard-00003.tar#id.png`,
    or `.parquet#id.png`) is read once."""

    def __init__(self) -> None:
        self._packs: dict[tuple[str, str], dict[str, bytes]] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def read(self, storage: Storage, image_key: str | None) -> bytes:
        if not image_key:
            raise ValueError("the stats row has no image_key")
        pack, member = layout.split_image_ref(image_key)
        if member is None:
            return storage.read_bytes(image_key)
        key = (storage.uri, pack)
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # threads asking for the same object wait for one read of it
            if key not in self._packs:
                self._packs[key] = formats.read_packed(pack, storage.read_bytes(pack))
        try:
            return self._packs[key][member]
        except KeyError:
            raise ValueError(f"{storage.join(pack)} has no member {member!r}") from None


def make_thumb(data: bytes, max_px: int) -> tuple[bytes, str, int, int]:
    """Image bytes -> (bytes, mime, width, height) at most `max_px` a side.

    An image that already fits is embedded as it is (no loss). A larger one is downscaled and stored as
    PNG or JPEG (quality 85), whichever is smaller: photos compress far better as JPEG, flat shapes as PNG.
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        fmt = img.format
        img.load()
        if max(img.size) <= max_px and fmt in ("PNG", "JPEG"):
            return data, f"image/{fmt.lower()}", img.width, img.height
        rgb = img.convert("RGB")
    rgb.thumbnail((max_px, max_px), Image.Resampling.LANCZOS)
    encoded = {}
    for name, kwargs in (("png", {"optimize": True}), ("jpeg", {"quality": 85})):
        buf = io.BytesIO()
        rgb.save(buf, format=name.upper(), **kwargs)
        encoded[name] = buf.getvalue()
    name = min(encoded, key=lambda n: len(encoded[n]))
    return encoded[name], f"image/{name}", rgb.width, rgb.height
