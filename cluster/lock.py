"""A run lock: one live driver per run, so that the same run started twice never clobbers itself.

Example::

    from cluster.lock import RunLock
    with RunLock("./gangeo-results", "quickstart"):      # RunLockedError if another driver holds it
        ...                                               # a heartbeat thread keeps it fresh

The lock is the Zarr group ``_locks/<run>`` (so the store stays a valid Zarr
hierarchy) whose ``zarr.json`` is created atomically: ``O_CREAT | O_EXCL`` on a
local directory, a conditional ``PUT`` with ``If-None-Match: *`` on S3. It holds
an owner id, host, pid (with the process's start time), a heartbeat time and an
expiry. A lock is stale when it has expired, when its host is this host and its
pid is no longer the driver that wrote it (gone, or another process since), or
when its fields do not parse; a stale lock is taken over (S3: ``If-Match`` on the
stale ETag; locally: a re-read after an atomic replace, which leaves a window of
a few milliseconds in which two simultaneous takers could both proceed). Nobody
holds a lock longer than :data:`MAX_LEASE` past its last heartbeat, whatever
expiry it names, and a heartbeat further ahead than that (skew) is stale.

Locally every step goes through directory descriptors opened with
``O_NOFOLLOW``: a symbolic link at ``_locks``, ``_locks/<run>`` or the lock file
is refused in one line, so nothing outside the store is ever written or deleted.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import cast

from geometry_core.errors import clip

from .storage import StoreError, StoreURL, parse_store_url, resolve_endpoint

__all__ = ["LOCK_GROUP", "MAX_LEASE", "RunLock", "RunLockedError", "expires_at", "is_stale", "lock_info", "pid_alive",
           "pid_started"]

LOCK_GROUP = "_locks"
TTL_SECONDS = 60.0
# The longest a lock holds past its last heartbeat, whatever expiry it names (a forged
# or clock-skewed record from another host cannot lock a run for a year).
MAX_LEASE = 10 * TTL_SECONDS
_PID_MAX = 2**22  # Linux's largest pid_max


class RunLockedError(StoreError):
    """The run is being written by another live driver."""


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the name (state first), or None where unknown (no /proc)."""
    try:
        return Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` runs on this host (it may belong to another user); a zombie is dead.

    A driver killed together with the ``gangeo`` process that supervised it is nobody's child
    any more: where nothing reaps orphans (PID 1 of many containers), it stays a zombie.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = _proc_stat(pid)
    return stat is None or stat[0] != "Z"  # no /proc (macOS): as os.kill says


def pid_started(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux ``/proc``), or None where unknown."""
    stat = _proc_stat(pid)
    if stat is None:
        return None
    try:
        return int(stat[19])  # field 22; the name in parentheses may hold spaces
    except (ValueError, IndexError):
        return None


def _encode(info: dict) -> bytes:
    return json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {"lock": info}}).encode()


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _valid(info: object) -> bool:
    """A lock record whose fields have the types and ranges gangeo writes."""
    return (isinstance(info, dict) and isinstance(info.get("owner"), str) and isinstance(info.get("host"), str)
            and isinstance(info.get("pid"), int) and not isinstance(info.get("pid"), bool)
            and 0 < info["pid"] <= _PID_MAX and _finite(info.get("heartbeat")) and _finite(info.get("expires"))
            and (info.get("pid_start") is None or isinstance(info.get("pid_start"), int)))


def _decode(raw: bytes | None) -> dict | None:
    if raw is None:
        return None
    try:
        info = json.loads(raw)["attributes"]["lock"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return {}  # unreadable: treated as stale
    return info if _valid(info) else {}  # malformed fields: treated as stale, never a traceback


class _Local:
    """The lock file under ``<store>/_locks/<run>/``, reached through ``O_NOFOLLOW`` directory descriptors."""

    def __init__(self, loc: StoreURL, run: str) -> None:
        self.root, self.run = Path(loc.path), run
        self.where = f"{self.root / LOCK_GROUP / run}"
        locks = self._locks_fd(create=True)
        try:
            self._create_file(locks, json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}).encode())
        finally:
            os.close(locks)

    def _refuse(self, what: str) -> StoreError:
        return StoreError(f"run lock {self.where}: {what} is a symbolic link or not a directory; gangeo never "
                          "follows links inside a store: remove it")

    def _open_dir(self, name: str, parent: int | None, *, create: bool) -> int:
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
        if create:
            try:
                os.mkdir(name, 0o777, dir_fd=parent)
            except FileExistsError:
                pass
        try:
            return os.open(name, flags, dir_fd=parent)
        except (NotADirectoryError, OSError) as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise self._refuse(name) from None

    def _locks_fd(self, *, create: bool) -> int:
        self.root.mkdir(parents=True, exist_ok=True)
        return self._open_dir(str(self.root / LOCK_GROUP), None, create=create)

    def _run_fd(self, *, create: bool) -> int:
        locks = self._locks_fd(create=create)
        try:
            return self._open_dir(self.run, locks, create=create)
        finally:
            os.close(locks)

    def _create_file(self, dir_fd: int, body: bytes, name: str = "zarr.json") -> bool:
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dir_fd)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        return True

    def read(self) -> tuple[bytes | None, str | None]:
        try:
            d = self._run_fd(create=False)
        except FileNotFoundError:
            return None, None
        try:
            fd = os.open("zarr.json", os.O_RDONLY | os.O_NOFOLLOW, dir_fd=d)
        except FileNotFoundError:
            return None, None
        except OSError:
            raise self._refuse("zarr.json") from None
        finally:
            os.close(d)
        with os.fdopen(fd, "rb") as f:
            raw = f.read(1 << 20)  # a lock record is a few hundred bytes
        return raw, raw.decode(errors="replace")

    def create(self, body: bytes) -> bool:
        d = self._run_fd(create=True)
        try:
            return self._create_file(d, body)
        except OSError as exc:
            if isinstance(exc, FileExistsError):
                return False
            raise self._refuse("zarr.json") from None
        finally:
            os.close(d)

    def replace(self, body: bytes, tag: str | None) -> bool:
        d = self._run_fd(create=True)
        try:
            tmp = f".zarr.json.{uuid.uuid4().hex}"
            self._create_file(d, body, tmp)
            os.replace(tmp, "zarr.json", src_dir_fd=d, dst_dir_fd=d)  # replaces a link itself, never its target
        finally:
            os.close(d)
        return self.read()[0] == body

    def delete(self) -> None:
        try:
            d = self._run_fd(create=False)
        except FileNotFoundError:
            return
        try:
            try:
                os.unlink("zarr.json", dir_fd=d)
            except FileNotFoundError:
                pass
        finally:
            os.close(d)
        locks = self._locks_fd(create=False)
        try:
            os.rmdir(self.run, dir_fd=locks)
        except OSError:
            pass
        finally:
            os.close(locks)


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


def expires_at(info: dict, now: float) -> float:
    """When a valid lock record stops holding: its expiry, but at most :data:`MAX_LEASE` after its last
    heartbeat; a heartbeat more than that ahead of this clock is no heartbeat (already expired)."""
    beat = float(info["heartbeat"])
    if beat > now + MAX_LEASE:
        return -math.inf
    return min(float(info["expires"]), beat + MAX_LEASE)


def is_stale(info: dict | None, now: float) -> bool:
    """True when a lock record may be taken over: absent, malformed, expired (bounded lease), or written by
    a driver of this host that is gone (its pid dead, or reused by a process started at another time)."""
    if not info or not _valid(info):
        return True
    if expires_at(info, now) < now:
        return True
    if info["host"] != socket.gethostname():
        return False
    if not pid_alive(info["pid"]):
        return True
    started = info.get("pid_start")
    return started is not None and pid_started(info["pid"]) not in (None, started)


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
                        "pid_start": pid_started(os.getpid()), "heartbeat": now, "expires": now + self.ttl})

    def acquire(self) -> "RunLock":
        """Take the lock, or a stale one over; raise :class:`RunLockedError` (one line) when held."""
        if self._backend.create(self._record()):
            return self._start()
        raw, tag = self._backend.read()
        info = _decode(raw)
        now = time.time()
        if raw is not None and not is_stale(info, now):
            held = cast(dict, info)  # not stale: a valid record
            age = max(0.0, now - float(held["heartbeat"]))
            raise RunLockedError(
                f"run {self.run!r} is being written by another driver (host {clip(held['host'], 80, bare=True)}, "
                f"pid {held['pid']}, heartbeat {age:.0f} s ago); wait for it to finish, or retry after "
                f"its lock expires in {max(0.0, expires_at(held, now) - now):.0f} s")
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
