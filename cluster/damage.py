"""A damaged store as one line: which metadata file, run or chunk could not be read (ARCHITECTURE.md, "Errors").

Example::

    from cluster.damage import as_store_error
    err = as_store_error(exc, "./gangeo-results", "quickstart")   # StoreDamagedError or None
    # "metadata unreadable: gangeo-results/quickstart/zarr.json (JSONDecodeError: ...)"

Zarr reports a truncated ``zarr.json`` or a chunk failing its crc32c without naming
the file; this module recognises those errors and, for a local store, finds the
damaged metadata file itself, so every command ends in one line and exit 5.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import zarr.errors

from .storage import StoreError, parse_store_url

__all__ = ["StoreDamagedError", "as_store_error", "unreadable_metadata"]

_CHUNK_DIR = "c"  # Zarr v3 keeps chunk files under <array>/c/: no metadata below it
_DENIED = (errno.EROFS, errno.EACCES, errno.EPERM)


class StoreDamagedError(StoreError):
    """Metadata or data of a store that cannot be read back, or a store that refuses writes."""


def _line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


def unreadable_metadata(url, run: str | None = None) -> Path | None:
    """The first ``zarr.json`` of a local store (root, then run ``run`` or every run) that is not valid JSON."""
    loc = parse_store_url(url)
    if loc.kind != "local":
        return None
    root = Path(loc.path)
    tops = [root / "zarr.json"]
    start = root / run if run else root
    for here, dirs, files in os.walk(start):
        dirs[:] = sorted(d for d in dirs if d != _CHUNK_DIR)
        if "zarr.json" in files:
            tops.append(Path(here) / "zarr.json")
    for path in dict.fromkeys(tops):
        try:
            json.loads(path.read_bytes())
        except FileNotFoundError:
            continue
        except (ValueError, OSError):
            return path
    return None


def _in_store(filename, url) -> bool:
    """True unless ``filename`` is a local path outside a local store (a user's output file, say)."""
    try:
        loc = parse_store_url(url)
    except Exception:
        return True
    if loc.kind != "local" or not filename:
        return True
    root = Path(loc.path).resolve()
    return Path(str(filename)).resolve().is_relative_to(root)


def _is_damage(exc: BaseException, url=None) -> bool:
    if isinstance(exc, (json.JSONDecodeError, zarr.errors.MetadataValidationError,
                        zarr.errors.NodeTypeValidationError)):
        return True
    if isinstance(exc, OSError):
        return exc.errno in _DENIED and _in_store(exc.filename, url)
    text = str(exc).lower()
    return isinstance(exc, (ValueError, RuntimeError)) and ("checksum" in text or "zstd" in text
                                                            or "decompress" in text)


def _unreachable(exc: BaseException | None, url) -> bool:
    """An S3 store that stopped answering: a connection, timeout or endpoint error of the S3 client stack."""
    try:
        if parse_store_url(url).kind != "s3":
            return False
    except Exception:
        return False
    seen = set()
    while exc is not None and id(exc) not in seen:  # the client's error is often the cause of zarr's or fsspec's
        seen.add(id(exc))
        module = type(exc).__module__.split(".")[0]
        if module in ("botocore", "aiobotocore", "aiohttp", "urllib3") or isinstance(exc, (ConnectionError,
                                                                                              TimeoutError)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def as_store_error(exc: BaseException, url, run: str | None = None) -> StoreError | None:
    """A one-line :class:`StoreError` for an error raised by damaged, read-only or unreachable storage, else None."""
    if _unreachable(exc, url):
        return StoreError(f"the store {parse_store_url(url)} stopped answering ({_line(exc)}); "
                          "run the command again when it answers")
    if not _is_damage(exc, url):
        return None
    where = f"run {run!r}" if run else "the store"
    if isinstance(exc, OSError):
        return StoreDamagedError(f"cannot write {exc.filename or where}: {_line(exc)}; is the store read-only?")
    if isinstance(exc, ValueError) and not isinstance(exc, json.JSONDecodeError) and "checksum" in str(exc).lower():
        return StoreDamagedError(f"a chunk of {where} fails its crc32c ({_line(exc)}); "
                                 f"`gangeo verify {run or 'RUN'}` names it")
    try:
        path = unreadable_metadata(url, run)
    except Exception:  # locating the file is a courtesy: the error still gets its one line
        path = None
    return StoreDamagedError(f"metadata unreadable: {path or where} ({_line(exc)})")
