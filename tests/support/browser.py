"""Headless chromium for tests: dump a page's DOM after its scripts ran, take a screenshot.

Example::

    from tests.support.browser import find_chromium, dump_dom, screenshot
    exe = find_chromium()                       # None when not installed
    dom = dump_dom(exe, "report.html")          # serialised DOM after the load event
    screenshot(exe, "report.html", "shot.png", size=(1200, 2400))

The browser runs with a throw-away profile, no network services (no QUIC, no
background networking, no component updates, no sync) and no sandbox (tests may
run as root in a container, where chromium's sandbox cannot start).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["dump_dom", "find_chromium", "screenshot"]

_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    # Let the page's load handlers run before the DOM is dumped or the screenshot taken.
    "--virtual-time-budget=5000",
)


def find_chromium() -> str | None:
    """Path of a chromium executable (``$CHROMIUM`` first), or None."""
    env = os.environ.get("CHROMIUM")
    if env and shutil.which(env):
        return shutil.which(env)
    for name in _NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(exe: str, extra: list[str], page: str | os.PathLike, timeout: float) -> subprocess.CompletedProcess:
    url = Path(page).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [exe, *_FLAGS, f"--user-data-dir={profile}", *extra, url]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        raise RuntimeError(f"chromium exited with {proc.returncode}: {' | '.join(tail)}")
    return proc


def dump_dom(exe: str, page: str | os.PathLike, *, timeout: float = 120.0) -> str:
    """The page's DOM serialised after load (``--dump-dom``), as a string."""
    return _run(exe, ["--dump-dom"], page, timeout).stdout


def screenshot(
    exe: str, page: str | os.PathLike, out_png: str | os.PathLike, *, size: tuple[int, int] = (1200, 1600),
    timeout: float = 120.0,
) -> Path:
    """Save a PNG screenshot of the page at ``size`` (width, height) pixels; returns its path."""
    out = Path(out_png).resolve()
    _run(exe, [f"--screenshot={out}", f"--window-size={size[0]},{size[1]}"], page, timeout)
    if not out.is_file() or out.stat().st_size == 0:
        raise RuntimeError(f"chromium wrote no screenshot at {out}")
    return out
