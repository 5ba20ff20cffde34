"""Downloaded weight files: a verified cache that never holds a half file.

Example::

    path = fetch_file("https://example.org/G-6196db68.pth",
                      cache_home() / "pggan-celebahq-256" / "G-6196db68.pth",
                      sha256="6196db68", what="pggan-celebahq-256")

Where: ``$GANGEO_HOME`` if set, else ``torch.hub.get_dir()/gangeo`` (that is
``~/.cache/torch/hub/gangeo`` unless ``TORCH_HOME`` says otherwise).

Integrity. A file with a published digest (the full sha256, or the prefix that
torch-hub style file names carry) is checked against it. A file without one is
*pinned on first use*: its sha256 is recorded beside it in ``<file>.pin.json``
when it first arrives (downloaded, or placed there by hand) and every later
load checks it. A mismatch raises :class:`WeightsIntegrityError` and a wrong
download is never cached.

Atomicity. A download streams into a hidden temporary file in the destination
directory, is checked (length against Content-Length, then the digest),
``fsync``-ed and renamed into place with ``os.replace``; anything that goes
wrong removes the temporary file, so the destination name only ever holds a
complete, verified file.

Offline (``GANGEO_OFFLINE=1``, or the Hugging Face / torch hub offline flags)
or unreachable: :class:`~geometry_core.errors.MissingWeightsError`, one line
naming the file, its URL and where to put it.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import torch

from .errors import GeometryError, MissingWeightsError, WeightsError

__all__ = [
    "HOME_ENV",
    "OFFLINE_ENV_VARS",
    "WeightsIntegrityError",
    "cache_home",
    "fetch_file",
    "is_offline",
    "read_pin",
    "sha256_file",
    "verify_file",
]

HOME_ENV = "GANGEO_HOME"
# Any of these set to a true value forbids network access (the same set LPIPS' backbone honours).
OFFLINE_ENV_VARS = ("GANGEO_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TORCH_HUB_OFFLINE")
PIN_SUFFIX = ".pin.json"
_CHUNK = 1 << 20  # 1 MiB reads: small enough for a smooth progress line, large enough to be fast
_TIMEOUT_S = 60  # per socket operation, not for the whole file
_MIN_PREFIX = 6  # shorter published prefixes would not identify a file


class WeightsIntegrityError(WeightsError):
    """A weight file whose sha256 differs from the published or pinned one."""


def cache_home() -> Path:
    """The cache directory: ``$GANGEO_HOME``, else ``torch.hub.get_dir()/gangeo``."""
    home = os.environ.get(HOME_ENV, "").strip()
    return Path(home).expanduser().absolute() if home else Path(torch.hub.get_dir()) / "gangeo"


def is_offline() -> bool:
    """True when a variable in ``OFFLINE_ENV_VARS`` is set to 1 / true / yes / on."""
    truthy = {"1", "true", "yes", "on"}
    return any(os.environ.get(v, "").strip().lower() in truthy for v in OFFLINE_ENV_VARS)


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_expected(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    text = sha256.strip().lower()
    if not (_MIN_PREFIX <= len(text) <= 64 and all(c in "0123456789abcdef" for c in text)):
        raise GeometryError(f"expected sha256 must be {_MIN_PREFIX} to 64 hex digits, got {sha256!r}")
    return text


def _pin_path(path: Path) -> Path:
    return path.with_name(path.name + PIN_SUFFIX)


def read_pin(path: str | Path) -> dict | None:
    """The pin recorded beside ``path`` (``{"sha256", "url", "size", "pinned"}``), or None."""
    pin = _pin_path(Path(path))
    try:
        data = json.loads(pin.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise WeightsIntegrityError(f"{pin}: unreadable pin file ({err}); delete it and the file it pins") from None
    if not isinstance(data, dict) or not isinstance(data.get("sha256"), str) or len(data["sha256"]) != 64:
        raise WeightsIntegrityError(f"{pin}: pin file without a 64-digit sha256; delete it and the file it pins")
    return data


def _atomic_write(dest: Path, write) -> None:
    """Call ``write(fileobj)`` on a temp file beside ``dest``, fsync it, rename it to ``dest``."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:  # KeyboardInterrupt included: never leave the temp file behind
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(dest.parent)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename durable; some filesystems cannot open a directory, which costs only durability.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_pin(path: Path, sha256: str, url: str, size: int) -> None:
    record = {"sha256": sha256, "url": url, "size": size, "pinned": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _atomic_write(_pin_path(path), lambda f: f.write((json.dumps(record, indent=1) + "\n").encode()))


def _compare(what: str, path: Path, got: str, expected: str, how: str) -> None:
    if not got.startswith(expected):
        raise WeightsIntegrityError(
            f"{what}: {path} has sha256 {got[:16]}..., expected {expected[:16]}... ({how}); "
            "delete it to download it again"
        )


def verify_file(path: str | Path, *, sha256: str | None, url: str, what: str = "weights") -> str:
    """Check a cached file against its published digest, or its pin (pinning it if unpinned).

    Returns the file's full sha256. Raises :class:`WeightsIntegrityError` on a mismatch.
    """
    path = Path(path)
    expected = _check_expected(sha256)
    got = sha256_file(path)
    if expected is not None:
        _compare(what, path, got, expected, "published")
        return got
    pin = read_pin(path)
    if pin is None:  # placed by hand, or a cache from before pins: trust it now, check it from now on
        _write_pin(path, got, url, path.stat().st_size)
    else:
        _compare(what, path, got, pin["sha256"], f"pinned on first use in {_pin_path(path).name}")
    return got


def _missing(what: str, dest: Path, url: str, why: str) -> MissingWeightsError:
    return MissingWeightsError(
        f"{what}: {dest.name} is not in the cache and {why}; download {url} and put it at {dest} "
        f"(or run `gangeo models fetch` where there is internet and copy {dest.parent.parent})"
    )


def _download(url: str, f, *, what: str, dest: Path) -> tuple[str, int]:
    """Stream ``url`` into ``f``; returns (sha256, bytes). Raises on a short or failed transfer."""
    digest, received = hashlib.sha256(), 0
    request = urllib.request.Request(url, headers={"User-Agent": "gangeo"})
    with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        tty = sys.stderr.isatty()
        for block in iter(lambda: response.read(_CHUNK), b""):
            f.write(block)
            digest.update(block)
            received += len(block)
            if tty and total:
                print(f"\r  {received / total:6.1%} of {total / 2**20:.1f} MiB", end="", file=sys.stderr)
        if tty and total:
            print(file=sys.stderr)
    # http.client returns b"" when a server closes early; only the length tells a cut-off body.
    if total is not None and received != total:
        raise _missing(what, dest, url, f"the download was cut off ({received} of {total} bytes)")
    return digest.hexdigest(), received


def fetch_file(url: str, dest: str | Path, *, sha256: str | None = None, what: str = "weights") -> Path:
    """``dest``, verified; downloaded from ``url`` first when it is absent and downloads are allowed.

    ``sha256`` is the published digest or its prefix; None pins the file on
    first use. Prints one line to stderr before a download.
    """
    dest = Path(dest)
    expected = _check_expected(sha256)
    if dest.is_file():
        verify_file(dest, sha256=expected, url=url, what=what)
        return dest
    if is_offline():
        raise _missing(what, dest, url, "downloads are off (GANGEO_OFFLINE or another offline flag is set)")
    pin = read_pin(dest) if expected is None else None  # a pin without its file: the new file must match it
    print(f"gangeo: downloading {url} -> {dest}", file=sys.stderr, flush=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    result = {}

    def write(f):
        got, size = _download(url, f, what=what, dest=dest)
        if expected is not None:
            _compare(what, dest, got, expected, f"published; the download from {url} was not cached")
        elif pin is not None:
            _compare(what, dest, got, pin["sha256"], f"pinned on first use; the download from {url} was not cached")
        else:  # pin before the file lands: a crash in between leaves a pin to check the next download against
            _write_pin(dest, got, url, size)
        result.update(sha256=got, size=size)

    try:
        _atomic_write(dest, write)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        if isinstance(err, MissingWeightsError):
            raise
        reason = err if isinstance(err, urllib.error.HTTPError) else getattr(err, "reason", None) or err
        raise _missing(what, dest, url, f"the download failed ({type(err).__name__}: {reason})") from None
    print(f"gangeo: {dest.name}: {result['size'] / 2**20:.1f} MiB, sha256 {result['sha256'][:16]}... ok",
          file=sys.stderr, flush=True)
    return dest
