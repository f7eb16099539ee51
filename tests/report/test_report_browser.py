"""The report rendered by a real browser: Debian's headless Chromium loads the page from disk with every
network lookup blocked, takes a screenshot, and the pixels show that the thumbnails and plots rendered.

Negative control: the same page with every embedded image swapped for a white image of the same size,
rendered the same way. The layout is identical, so the pixels that differ are exactly the images.
Thumbnails must appear where the contact sheet puts them, pixel for pixel (2x nearest-neighbour, as
`image-rendering: pixelated` draws a 64 px image in a 128 px box), and the plots' colours must appear.

Chromium missing: skipped locally, a failure on CI (`CI` is set by .ci/run) when `make test` could have
installed it (root or passwordless sudo, and apt-get).
Set SJD_REPORT_SCREENSHOT=docs/report-screenshot.png to save the screenshot (kept under 500 KB).
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.report.test_report import ParsedPage, decode_data_uri

WIDTH, HEIGHT = 1400, 4000
SCREENSHOT_BUDGET = 500_000  # bytes, for the copy kept in docs/
FULL_COLOUR_BUDGET = 300_000  # above this, the saved screenshot is reduced to 256 colours
TAB_BLUE, TAB_ORANGE = (31, 119, 180), (255, 127, 14)  # the first two jobs' colours in every plot


@pytest.fixture(scope="session")
def chromium() -> str:
    """The browser; asked for first, so a skip comes before the jobs are generated."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        # On CI `make test` installs it whenever it can (root, or passwordless sudo, plus apt-get), so a
        # missing browser there is a failure; without those rights the install was impossible: skip.
        if os.environ.get("CI") and _can_install():
            pytest.fail("chromium is not installed: on CI `make test` installs Debian's `chromium` package")
        pytest.skip("chromium is not installed (`make test` installs it: apt-get install chromium)")
    return path


def _can_install() -> bool:
    """Whether `make browser` could have installed Chromium here (the same test it makes)."""
    if shutil.which("apt-get") is None:
        return False
    if os.geteuid() == 0:
        return True
    sudo = shutil.which("sudo")
    return sudo is not None and subprocess.run([sudo, "-n", "true"], capture_output=True).returncode == 0


def screenshot(browser: str, page: Path, out: Path) -> np.ndarray:
    """Render `page` headless at WIDTH x HEIGHT, scale 1, with every host lookup failing (offline)."""
    cmd = [browser, "--headless", "--disable-gpu", "--hide-scrollbars", "--force-device-scale-factor=1",
           "--no-first-run", "--disable-extensions", "--disable-dev-shm-usage",
           "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9",
           f"--user-data-dir={out.parent / (out.stem + '-profile')}", f"--window-size={WIDTH},{HEIGHT}",
           f"--screenshot={out}", page.as_uri()]
    if os.geteuid() == 0:
        cmd.insert(1, "--no-sandbox")  # Chromium refuses to start as root with its sandbox
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and out.exists(), done.stderr[-3000:]
    pixels = np.asarray(Image.open(out).convert("RGB")).astype(np.int16)
    assert pixels.shape == (HEIGHT, WIDTH, 3)
    return pixels


def blank_images(html: str) -> str:
    """The page with every embedded image replaced by a white PNG of the same size (same layout)."""
    def white(match: re.Match) -> str:
        _, img = decode_data_uri(match.group(1))
        buf = io.BytesIO()
        Image.new("RGB", img.size, "white").save(buf, format="PNG")
        return f'src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"'

    blank, count = re.subn(r'src="(data:image/[^"]+)"', white, html)
    assert count > 0
    return blank


def runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def square_boxes(mask: np.ndarray, size: int, slack: int = 8) -> list[tuple[int, int]]:
    """Top-left corners of size x size blobs of `mask` laid out in rows (a grid), in reading order."""
    boxes = []
    for top, bottom in runs(mask.any(axis=1)):
        if abs((bottom - top) - size) > slack:
            continue
        for left, right in runs(mask[top:bottom].any(axis=0)):
            if abs((right - left) - size) <= slack:
                boxes.append((top, left))
    return boxes


def colour_pixels(pixels: np.ndarray, rgb: tuple[int, int, int], tol: int = 12) -> int:
    return int((np.abs(pixels - np.array(rgb)).max(axis=2) <= tol).sum())


def test_report_renders_in_chromium(chromium: str, report_file: Path, tmp_path: Path) -> None:
    html = report_file.read_text(encoding="utf-8")
    control_file = tmp_path / "control.html"
    control_file.write_text(blank_images(html), encoding="utf-8")
    shot = screenshot(chromium, report_file, tmp_path / "report.png")
    control = screenshot(chromium, control_file, tmp_path / "control.png")

    changed = np.abs(shot - control).max(axis=2) > 30  # where an image was drawn
    thumbs = [img for img in ParsedPage(html).imgs if img.get("class") == "thumb"]
    boxes = square_boxes(changed, 128)
    assert len(boxes) == len(thumbs) == 12, f"found {len(boxes)} thumbnail boxes"
    for (top, left), thumb in zip(boxes, thumbs, strict=True):
        _, img = decode_data_uri(thumb["src"])
        expected = np.asarray(img.convert("RGB").resize((128, 128), Image.Resampling.NEAREST), np.int16)
        drawn = shot[top : top + 128, left : left + 128]
        assert np.abs(drawn - expected).mean() < 6, f"thumbnail {thumb['alt']} at {(top, left)} differs"
        assert drawn.std() > 3  # a picture, not a flat box (a dark background with one object: ~9)
    thumb_rows = {r for top, _ in boxes for r in range(top, top + 128)}
    plot_changes = changed[[r for r in range(HEIGHT) if r not in thumb_rows]].sum()
    assert plot_changes > 100_000, f"only {plot_changes} pixels of plots drawn"
    for rgb in (TAB_BLUE, TAB_ORANGE):  # the two jobs' bars and lines in the plots
        assert colour_pixels(shot, rgb) - colour_pixels(control, rgb) > 5_000, rgb
    assert not square_boxes(np.abs(control - 255).max(axis=2) > 200, 128)  # control: no picture boxes

    target = os.environ.get("SJD_REPORT_SCREENSHOT")
    if target:
        save_screenshot(shot, Path(target))


def save_screenshot(pixels: np.ndarray, path: Path) -> None:
    """Crop to the page's content and save as PNG, in 256 colours if that is needed to stay in budget."""
    content = np.flatnonzero((pixels != 255).any(axis=(1, 2)))
    img = Image.fromarray(pixels[: content[-1] + 24].astype(np.uint8), "RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG", optimize=True)
    if path.stat().st_size > FULL_COLOUR_BUDGET:
        img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, format="PNG", optimize=True)
    assert path.stat().st_size < SCREENSHOT_BUDGET, path.stat().st_size
