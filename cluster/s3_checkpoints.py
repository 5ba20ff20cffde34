"""Checkpoints of a series kept in S3: listed when a spec is read, copied to each machine that loads them.

Example::

    found = list_checkpoints("s3://runs/faces/ckpt-*.tar")
    # [("s3://runs/faces/ckpt-40.tar#etag=9b2c...", "ckpt-40.tar"), ...]
    path = local_copy(found[0][0])   # <cache>/s3/runs/faces/ckpt-40.tar

A checkpoint is named by its URL pinned to the object's ETag (``#etag=``): the
spec is listed once, by the driver, and every machine that loads the checkpoint
(workers on other nodes, a later report) downloads that exact object, with
``If-Match``; one replaced since the listing is refused, never loaded in its
place. Copies live in the weights cache (``geometry_core.weights_cache.cache_home``)
under ``s3/<bucket>/<key>``, written atomically as the cache's downloads are, each with ``<file>.s3.json``
(its ETag and sha256) checked on every use. The endpoint and credentials are
those of the store (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from pathlib import Path
from typing import cast

from geometry_core.errors import MissingWeightsError, WeightsError, clip
from geometry_core.weights_cache import atomic_write, cache_home, sha256_file

__all__ = ["PIN", "is_s3", "list_checkpoints", "local_copy", "local_options", "unpinned"]

PIN = "#etag="
_GLOB = re.compile(r"[*?\[]")
_BLOCK = 1 << 20


def is_s3(value) -> bool:
    return isinstance(value, str) and value.startswith("s3://")


def unpinned(value: str) -> str:
    """``s3://bucket/key#etag=...`` -> ``s3://bucket/key``."""
    return value.rpartition(PIN)[0] if PIN in value else value


def _split(url: str) -> tuple[str, str]:
    bucket, _, key = url[len("s3://"):].partition("/")
    if not bucket or not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", bucket):
        raise WeightsError(f"{clip(url, bare=True)}: expected s3://bucket/key-or-glob")
    return bucket, key


def _client():
    import boto3
    from botocore.config import Config

    from .storage import resolve_endpoint

    cfg = Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 5, "mode": "standard"})
    return boto3.session.Session().client("s3", endpoint_url=resolve_endpoint(), config=cfg)


def _failed(url: str, exc: Exception) -> WeightsError:
    import botocore.exceptions as bexc

    where = clip(unpinned(url), bare=True)
    if isinstance(exc, bexc.NoCredentialsError):
        return WeightsError(f"{where}: no AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                            "or AWS_PROFILE)")
    if not isinstance(exc, bexc.ClientError):
        return WeightsError(f"{where}: cannot reach S3 ({type(exc).__name__})")
    code = str(exc.response.get("Error", {}).get("Code", "")) or str(
        exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
    if code == "NoSuchBucket":
        return WeightsError(f"{where}: the bucket does not exist")
    if code in ("NoSuchKey", "404"):
        return MissingWeightsError(f"{where}: the checkpoint is gone from S3")
    if code in ("PreconditionFailed", "412"):
        return WeightsError(f"{where}: the checkpoint was replaced in S3 since the run listed it; "
                            "a series never changes a checkpoint it has (choose another run name)")
    if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return WeightsError(f"{where}: access denied (HTTP 403): check the AWS credentials")
    return WeightsError(f"{where}: S3 error {code}")


def list_checkpoints(pattern: str) -> list[tuple[str, str]]:
    """``(pinned URL, file name)`` of the objects a ``s3://bucket/glob`` matches, in key order.

    Without a wildcard the pattern is a folder: every object directly in it. A
    wildcard never crosses ``/``. Raises :class:`WeightsError` in one line.
    """
    import botocore.exceptions as bexc

    bucket, key = _split(pattern)
    if not _GLOB.search(key):
        key = (key.rstrip("/") + "/*") if key.strip("/") else "*"
    prefix = key[:cast(re.Match, _GLOB.search(key)).start()]  # key has a wildcard now
    depth = key.count("/")
    out = []
    try:
        for page in _client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                k = obj["Key"]
                if k.count("/") == depth and fnmatch.fnmatchcase(k, key):
                    out.append((f"s3://{bucket}/{k}{PIN}{obj['ETag'].strip(chr(34))}", k.rsplit("/", 1)[-1]))
    except (bexc.BotoCoreError, bexc.ClientError) as exc:
        raise _failed(pattern, exc) from None
    return sorted(out)


def local_copy(pinned: str) -> Path:
    """The local file of a pinned checkpoint URL, downloaded (that exact object) when missing or stale."""
    import botocore.exceptions as bexc

    url, _, etag = pinned.rpartition(PIN)
    if not url or not etag:
        raise WeightsError(f"{clip(pinned, bare=True)}: expected an S3 checkpoint pinned to its ETag ({PIN}...)")
    bucket, key = _split(url)
    if not key or key.endswith("/") or any(p in ("", ".", "..") for p in key.split("/")):
        raise WeightsError(f"{clip(url, bare=True)}: not a checkpoint key")
    dest = cache_home() / "s3" / bucket / key
    meta = dest.with_name(dest.name + ".s3.json")
    try:
        known = json.loads(meta.read_text())
        if known.get("etag") == etag and dest.is_file() and sha256_file(dest) == known.get("sha256"):
            return dest
    except (OSError, ValueError):
        pass
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()

    def download(f) -> None:
        try:
            body = _client().get_object(Bucket=bucket, Key=key, IfMatch=etag)["Body"]
            for block in iter(lambda: body.read(_BLOCK), b""):
                h.update(block)
                f.write(block)
        except (bexc.BotoCoreError, bexc.ClientError) as exc:
            raise _failed(pinned, exc) from None

    atomic_write(dest, download)
    record = {"url": url, "etag": etag, "sha256": h.hexdigest()}
    atomic_write(meta, lambda f: f.write(json.dumps(record).encode()))
    return dest


def local_options(options: dict) -> dict:
    """``options`` with each pinned S3 checkpoint replaced by its local copy (downloaded as needed)."""
    return {k: (str(local_copy(v)) if is_s3(v) and PIN in v else v) for k, v in options.items()}
