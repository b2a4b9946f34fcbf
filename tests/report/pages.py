"""Checks that an HTML report is self-contained and that every image in it loads."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NO_CHROMIUM = ("report rendering not checked: chromium is not installed "
               "(Debian: apt-get install chromium)")
"""The reason of every skipped rendering test; pytest's summary lists it (``-rs`` in
pyproject.toml), so a run without Chromium says what it did not check."""
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run")
_IMG = re.compile(r'<img [^>]*src="data:image/(?:png|jpeg);base64,([A-Za-z0-9+/=]+)"')
_MARK = """<script>window.addEventListener("load", () => {
for (const img of document.images) img.setAttribute("data-width", img.naturalWidth);
document.body.setAttribute("data-loaded", document.images.length);});</script></body>"""


def decoded_images(page: str) -> list[Image.Image]:
    """Every embedded PNG or JPEG, decoded (PIL raises on a broken one)."""
    images = []
    for data in _IMG.findall(page):
        image = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
        image.load()
        images.append(image)
    return images


def external_references(page: str) -> list[str]:
    """Anything the page would fetch: scripts from elsewhere, style sheets, non-data image
    sources, and addresses inside inline scripts and styles (fetch, import, url(...))."""
    found = re.findall(r'<script\b[^>]*\bsrc=[^>]*>|<link\b[^>]*>', page)
    for code in re.findall(r"<(?:script|style)\b[^>]*>(.*?)</(?:script|style)>", page, re.S):
        found += re.findall(r"\b(?:fetch|import|XMLHttpRequest|WebSocket)\s*\(|url\(\s*['\"]?"
                            r"(?!data:)[^)]*\)|https?://", code)
    found += [s for s in re.findall(r'src="([^"]*)"', page) if not s.startswith("data:")]
    return found


def chromium(*args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout, check=True)


def loaded_widths(page: Path) -> tuple[int, list[int]]:
    """Chromium's count of images and each one's naturalWidth (0 = failed to load)."""
    with tempfile.TemporaryDirectory() as folder:
        probe = Path(folder) / page.name
        probe.write_text(page.read_text().replace("</body>", _MARK, 1))
        dom = chromium("--dump-dom", "--virtual-time-budget=10000", probe.as_uri()).stdout
    count = re.search(r'data-loaded="(\d+)"', dom)
    return (int(count.group(1)) if count else -1,
            [int(w) for w in re.findall(r'data-width="(\d+)"', dom)])


def probe(page: Path, script: str, size: str = "1280,1000") -> str:
    """The DOM after ``script`` ran in ``page`` (appended before ``</body>``), as Chromium
    serialises it: a probe writes what it measured into attributes."""
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / page.name
        copy.write_text(page.read_text().replace("</body>", f"<script>{script}</script></body>",
                                                 1))
        return chromium("--dump-dom", "--virtual-time-budget=20000", f"--window-size={size}",
                        copy.as_uri()).stdout


def screenshot(page: Path, png: Path, size: str = "1280,2400") -> Path:
    chromium(f"--screenshot={png}", f"--window-size={size}", page.as_uri())
    return png
