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

Limits. A download is refused before its body is read when it declares more
than the file's size cap, and stopped when it sends more; the whole transfer has a
deadline (``GANGEO_DOWNLOAD_TIMEOUT`` seconds, default 3600) besides the
per-read timeout; a redirect to another scheme, host or port is refused unless
``GANGEO_ALLOW_REDIRECTS=1``; a file without a published digest must begin as
its format does (``magic``) before it is pinned. One process downloads a
given file at a time (a lock on its directory): the others wait and verify what it
left. URLs are shown and pinned without credentials or query strings.

Offline (``GANGEO_OFFLINE=1``, or the Hugging Face / torch hub offline flags)
or unreachable: :class:`~geometry_core.errors.MissingWeightsError`, one line
naming the file, its URL and where to put it.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import torch

from .errors import GeometryError, MissingWeightsError, WeightsError

__all__ = [
    "HOME_ENV",
    "OFFLINE_ENV_VARS",
    "WeightsIntegrityError",
    "atomic_write",
    "cache_home",
    "fetch_file",
    "is_offline",
    "public_url",
    "read_pin",
    "sha256_file",
    "verify_file",
]

HOME_ENV = "GANGEO_HOME"
# Any of these set to a true value forbids network access (the same set LPIPS' backbone honours).
OFFLINE_ENV_VARS = ("GANGEO_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TORCH_HUB_OFFLINE")
PIN_SUFFIX = ".pin.json"
_CHUNK = 1 << 20  # 1 MiB reads: small enough for a smooth progress line, large enough to be fast
_TIMEOUT_S = 60  # per socket operation; the whole transfer has DEADLINE_ENV's limit
DEADLINE_ENV = "GANGEO_DOWNLOAD_TIMEOUT"
_DEADLINE_S = 3600.0
REDIRECTS_ENV = "GANGEO_ALLOW_REDIRECTS"
DEFAULT_MAX_BYTES = 4 * 2**30  # larger than any published generator file
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


def public_url(url: str) -> str:
    """``url`` as it may be shown or stored: no user, password or query string (``?…`` marks one)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<malformed URL>"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}{port}" if parts.netloc else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "…" if parts.query else "", ""))


def _deadline_s() -> float:
    text = os.environ.get(DEADLINE_ENV, "").strip()
    if not text:
        return _DEADLINE_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 1 <= value <= 7 * 86400:  # NaN fails too
        raise GeometryError(f"{DEADLINE_ENV} must be seconds between 1 and 604800, got {text!r}")
    return value


class _SameOrigin(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to the same scheme, host and port, unless REDIRECTS_ENV allows any."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        old, new = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(newurl)
        same = (old.scheme, old.hostname, old.port) == (new.scheme, new.hostname, new.port)
        if not same and os.environ.get(REDIRECTS_ENV, "").strip().lower() not in {"1", "true", "yes", "on"}:
            raise urllib.error.URLError(f"redirected to another host ({public_url(newurl)}); set "
                                        f"{REDIRECTS_ENV}=1 to follow it")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_SameOrigin)


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


def atomic_write(dest: Path, write) -> None:
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
    record = {"sha256": sha256, "url": public_url(url), "size": size,
              "pinned": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write(_pin_path(path), lambda f: f.write((json.dumps(record, indent=1) + "\n").encode()))


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
        f"{what}: {dest.name} is not in the cache and {why}; download {public_url(url)} and put it at {dest} "
        f"(or run `gangeo models fetch` where there is internet and copy {dest.parent.parent})"
    )


def _download(url: str, f, *, what: str, dest: Path, max_bytes: int) -> tuple[str, int, bytes]:
    """Stream ``url`` into ``f``; returns (sha256, bytes, first bytes). Raises on a short, long or slow transfer."""
    digest, received, head = hashlib.sha256(), 0, b""
    limit_s = _deadline_s()
    deadline = time.monotonic() + limit_s
    request = urllib.request.Request(url, headers={"User-Agent": "gangeo"})
    with _OPENER.open(request, timeout=_TIMEOUT_S) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() and len(length) < 20 else None
        if total is not None and total > max_bytes:
            raise _missing(what, dest, url, f"the server offers {total} bytes, more than its cap of {max_bytes}")
        tty = sys.stderr.isatty()
        # read1: what has arrived (up to a block), so the deadline is checked while a slow body trickles in
        for block in iter(lambda: response.read1(_CHUNK), b""):
            f.write(block)
            digest.update(block)
            received += len(block)
            head = head if len(head) >= 16 else (head + block)[:16]
            if received > max_bytes:
                raise _missing(what, dest, url, f"the download passed its cap of {max_bytes} bytes")
            if time.monotonic() > deadline:
                raise _missing(what, dest, url, f"the download took longer than {limit_s:g} s "
                                                f"({received} bytes; {DEADLINE_ENV} sets the limit)")
            if tty and total:
                print(f"\r  {received / total:6.1%} of {total / 2**20:.1f} MiB", end="", file=sys.stderr)
        if tty and total:
            print(file=sys.stderr)
    # http.client returns b"" when a server closes early; only the length tells a cut-off body.
    if total is not None and received != total:
        raise _missing(what, dest, url, f"the download was cut off ({received} of {total} bytes)")
    return digest.hexdigest(), received, head


class _FetchLock:
    """An exclusive lock on the file's directory for one download: concurrent fetches take turns, and no
    lock file is left in the cache."""

    def __init__(self, dest: Path):
        self.directory = dest.parent

    def __enter__(self):
        self.fd = os.open(self.directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def fetch_file(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    what: str = "weights",
    max_bytes: int = DEFAULT_MAX_BYTES,
    magic: tuple[bytes, ...] = (),
) -> Path:
    """``dest``, verified; downloaded from ``url`` first when it is absent and downloads are allowed.

    ``sha256`` is the published digest or its prefix; None pins the file on
    first use, and then ``magic`` (if given) lists the byte strings one of which the
    file must begin with. ``max_bytes`` caps the download. Prints one line to stderr
    before a download.
    """
    dest = Path(dest)
    expected = _check_expected(sha256)
    if dest.is_file():
        verify_file(dest, sha256=expected, url=url, what=what)
        return dest
    if is_offline():
        raise _missing(what, dest, url, "downloads are off (GANGEO_OFFLINE or another offline flag is set)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _FetchLock(dest):
        if dest.is_file():  # another process fetched it while this one waited: check what it left
            verify_file(dest, sha256=expected, url=url, what=what)
            return dest
        return _fetch_locked(url, dest, expected, what, max_bytes, magic)


def _fetch_locked(url: str, dest: Path, expected: str | None, what: str, max_bytes: int,
                  magic: tuple[bytes, ...]) -> Path:
    pin = read_pin(dest) if expected is None else None  # a pin without its file: the new file must match it
    print(f"gangeo: downloading {public_url(url)} -> {dest}", file=sys.stderr, flush=True)
    result: dict[str, Any] = {}  # sha256 (str) and size (int) of the file written

    def write(f):
        got, size, head = _download(url, f, what=what, dest=dest, max_bytes=max_bytes)
        where = public_url(url)
        if expected is not None:
            _compare(what, dest, got, expected, f"published; the download from {where} was not cached")
        elif pin is not None:
            _compare(what, dest, got, pin["sha256"], f"pinned on first use; the download from {where} was not cached")
        else:
            if magic and not head.startswith(magic):
                raise WeightsIntegrityError(
                    f"{what}: the download from {where} ({size} bytes, beginning {head[:8]!r}) is not a file "
                    "of the expected format; nothing was cached or pinned")
            # pin before the file lands: a crash in between leaves a pin to check the next download against
            _write_pin(dest, got, url, size)
        result.update(sha256=got, size=size)

    try:
        atomic_write(dest, write)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        if isinstance(err, MissingWeightsError):
            raise
        reason = err if isinstance(err, urllib.error.HTTPError) else getattr(err, "reason", None) or err
        reason = str(reason).replace(url, public_url(url))
        raise _missing(what, dest, url, f"the download failed ({type(err).__name__}: {reason})") from None
    print(f"gangeo: {dest.name}: {result['size'] / 2**20:.1f} MiB, sha256 {result['sha256'][:16]}... ok",
          file=sys.stderr, flush=True)
    return dest
