"""A run lock: one live driver per run, so that the same run started twice never clobbers itself.

Example::

    from cluster.lock import RunLock
    with RunLock("./gangeo-results", "quickstart"):      # RunLockedError if another driver holds it
        ...                                               # a heartbeat thread keeps it fresh

The lock is the Zarr group ``_locks/<run>`` (so the store stays a valid Zarr
hierarchy) whose ``zarr.json`` is created atomically: ``O_CREAT | O_EXCL`` on a
local directory, a conditional ``PUT`` with ``If-None-Match: *`` on S3. It holds
an owner id, host, pid, a heartbeat time and an expiry. A lock is stale when it
has expired, or when its host is this host and its pid is no longer alive (a
killed driver); a stale lock is taken over (S3: ``If-Match`` on the stale ETag;
locally: a re-read after an atomic replace, which leaves a window of a few
milliseconds in which two simultaneous takers could both proceed).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from .storage import StoreError, StoreURL, parse_store_url, resolve_endpoint

__all__ = ["LOCK_GROUP", "RunLock", "RunLockedError", "is_stale", "lock_info", "pid_alive"]

LOCK_GROUP = "_locks"
TTL_SECONDS = 60.0


class RunLockedError(StoreError):
    """The run is being written by another live driver."""


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` exists on this host (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _encode(info: dict) -> bytes:
    return json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {"lock": info}}).encode()


def _decode(raw: bytes | None) -> dict | None:
    if raw is None:
        return None
    try:
        return json.loads(raw)["attributes"]["lock"]
    except (ValueError, KeyError, TypeError):
        return {}  # unreadable: treated as stale


class _Local:
    def __init__(self, loc: StoreURL, run: str) -> None:
        self.dir = Path(loc.path) / LOCK_GROUP / run
        self.path = self.dir / "zarr.json"
        parent = Path(loc.path) / LOCK_GROUP / "zarr.json"
        if not parent.exists():
            parent.parent.mkdir(parents=True, exist_ok=True)
            parent.write_bytes(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}).encode())

    def read(self) -> tuple[bytes | None, str | None]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None, None
        return raw, raw.decode(errors="replace")

    def create(self, body: bytes) -> bool:
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        return True

    def replace(self, body: bytes, tag: str | None) -> bool:
        tmp = self.dir / f".zarr.json.{uuid.uuid4().hex}"
        tmp.write_bytes(body)
        os.replace(tmp, self.path)
        return self.read()[0] == body

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)
        try:
            self.dir.rmdir()
        except OSError:
            pass


class _S3:
    def __init__(self, loc: StoreURL, run: str, endpoint: str | None) -> None:
        import boto3
        from botocore.config import Config

        cfg = Config(connect_timeout=5, read_timeout=20, retries={"max_attempts": 5, "mode": "standard"})
        self.client = boto3.session.Session().client("s3", endpoint_url=endpoint, config=cfg)
        self.bucket = loc.bucket
        base = f"{loc.prefix}/" if loc.prefix else ""
        self.key = f"{base}{LOCK_GROUP}/{run}/zarr.json"
        parent = f"{base}{LOCK_GROUP}/zarr.json"
        body = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}).encode()
        self._conditional(Key=parent, Body=body, IfNoneMatch="*")

    def _conditional(self, **kw) -> bool:
        import botocore.exceptions as bexc

        try:
            self.client.put_object(Bucket=self.bucket, **kw)
            return True
        except bexc.ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412):
                return False
            raise StoreError(f"run lock s3://{self.bucket}/{self.key}: "
                             f"{exc.response.get('Error', {}).get('Code')}") from None

    def read(self) -> tuple[bytes | None, str | None]:
        import botocore.exceptions as bexc

        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except bexc.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None, None
            raise StoreError(f"run lock s3://{self.bucket}/{self.key}: "
                             f"{exc.response.get('Error', {}).get('Code')}") from None
        return obj["Body"].read(), obj["ETag"]

    def create(self, body: bytes) -> bool:
        return self._conditional(Key=self.key, Body=body, IfNoneMatch="*")

    def replace(self, body: bytes, tag: str | None) -> bool:
        return self._conditional(Key=self.key, Body=body, IfMatch=tag) if tag else self.create(body)

    def delete(self) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key)


def _backend(url, run: str, s3_endpoint: str | None):
    loc = parse_store_url(url)
    if loc.kind == "local":
        return _Local(loc, run)
    return _S3(loc, run, resolve_endpoint(s3_endpoint))


def is_stale(info: dict | None, now: float) -> bool:
    """True when a lock record may be taken over: absent, expired, or its driver gone from this host."""
    if not info:
        return True
    if float(info.get("expires", 0)) < now:
        return True
    return info.get("host") == socket.gethostname() and not pid_alive(int(info.get("pid", -1)))


def lock_info(url, run: str, *, s3_endpoint: str | None = None) -> dict | None:
    """The current lock record of ``run`` (owner, host, pid, heartbeat, expires), or None."""
    return _decode(_backend(url, run, s3_endpoint).read()[0])


class RunLock:
    """Exclusive right to write run ``run``; refreshed by a heartbeat thread while held."""

    def __init__(self, url, run: str, *, s3_endpoint: str | None = None, ttl: float = TTL_SECONDS) -> None:
        self.url, self.run, self.ttl = str(url), run, float(ttl)
        self.owner = uuid.uuid4().hex
        self._backend = _backend(url, run, s3_endpoint)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.took_over: dict | None = None

    def _record(self) -> bytes:
        now = time.time()
        return _encode({"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                        "heartbeat": now, "expires": now + self.ttl})

    def acquire(self) -> "RunLock":
        """Take the lock, or a stale one over; raise :class:`RunLockedError` (one line) when held."""
        if self._backend.create(self._record()):
            return self._start()
        raw, tag = self._backend.read()
        info = _decode(raw)
        now = time.time()
        if raw is not None and not is_stale(info, now):
            age = now - float(info.get("heartbeat", now))
            raise RunLockedError(
                f"run {self.run!r} is being written by another driver (host {info.get('host')}, "
                f"pid {info.get('pid')}, heartbeat {age:.0f} s ago); wait for it to finish, or retry after "
                f"its lock expires in {max(0.0, float(info.get('expires', now)) - now):.0f} s")
        won = self._backend.replace(self._record(), tag) if raw is not None else self._backend.create(self._record())
        if not won:
            raise RunLockedError(f"run {self.run!r}: another driver took its stale lock first; not starting")
        self.took_over = info
        return self._start()

    def _start(self) -> "RunLock":
        self._thread = threading.Thread(target=self._beat, name=f"gangeo-lock-{self.run}", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                raw, tag = self._backend.read()
                if (_decode(raw) or {}).get("owner") != self.owner:
                    return  # taken over: never overwrite another owner's lock
                # Conditional on what was just read (If-Match on S3), so a takeover between
                # the read and the write is never overwritten.
                self._backend.replace(self._record(), tag)
            except Exception:  # a missed heartbeat is retried at the next beat
                continue

    def release(self) -> None:
        """Stop the heartbeat and remove the lock if this driver still owns it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            if (_decode(self._backend.read()[0]) or {}).get("owner") == self.owner:
                self._backend.delete()
        except Exception:  # an expired lock is harmless: the next driver takes it over
            pass

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
