"""Open a results store: a local directory (the default) or ``s3://bucket/prefix``.

Example::

    from cluster.storage import open_root
    root = open_root("./gangeo-results")                   # zarr.Group, Zarr v3
    root = open_root("s3://bucket/runs", s3_endpoint="http://127.0.0.1:9000")

S3 goes through zarr's ``FsspecStore`` on an asynchronous ``s3fs`` filesystem.
Credentials come only from the standard AWS environment variables or profile;
they are never passed as arguments, stored in attributes or printed. Before
opening, one ``HeadBucket`` call turns an unreachable endpoint, a missing bucket
or wrong credentials into a :class:`StoreError` with one clear line.
"""

from __future__ import annotations

import atexit
import os
import re
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import zarr

from geometry_core.errors import GangeoError, clip

from .defaults import DEFAULT_STORE

if TYPE_CHECKING:
    import asyncio

    from zarr.abc.store import Store
    from zarr.core.common import AccessModeLiteral

__all__ = [
    "DEFAULT_STORE",
    "StoreError",
    "StoreURL",
    "open_root",
    "parse_store_url",
    "resolve_endpoint",
    "check_store",
    "close_sessions",
    "plain_group",
    "subgroup",
    "array_in",
    "group_in",
    "writable_problem",
    "store_env",
]


# What a Ray worker needs to reach the same store; copied into runtime_env only. Ray logs a
# runtime_env in clear (runtime_env_agent.log), so secrets are not among these: workers
# inherit them from the node (embedded Ray: this process's environment; a cluster: each
# node's instance profile or environment). GANGEO_SHIP_AWS_CREDENTIALS=1 ships them anyway.
_ENV_KEYS = (
    "AWS_PROFILE",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_REQUEST_CHECKSUM_CALCULATION",
    "AWS_RESPONSE_CHECKSUM_VALIDATION",
)
_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
SHIP_CREDENTIALS_ENV = "GANGEO_SHIP_AWS_CREDENTIALS"

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]\Z")


class StoreError(GangeoError, RuntimeError):
    """The results store cannot be opened or used (one line, never a secret).

    ``transient`` is True when retrying may help (no connection, throttling, 5xx).
    """

    kind = "store"

    def __init__(self, message: str = "", *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class StoreURL:
    """A parsed store location: ``kind`` is "local" or "s3"."""

    kind: str
    path: str  # local: absolute directory; s3: "bucket/prefix" without slashes at the ends
    bucket: str = ""
    prefix: str = ""

    def __str__(self) -> str:
        return f"s3://{self.path}" if self.kind == "s3" else self.path


def parse_store_url(url: str | os.PathLike | StoreURL | None) -> StoreURL:
    """Normalise a store URL: a local path (``file://`` allowed) or ``s3://bucket[/prefix]``.

    A :class:`StoreURL` is returned as it is: a driver parses its ``--store`` once and hands
    the value to the checks, the run store and the lock.
    """
    if isinstance(url, StoreURL):
        return url
    return _parse_text(url)


def _parse_text(url: str | os.PathLike | None) -> StoreURL:
    if url is None or str(url).strip() == "":
        url = DEFAULT_STORE
    text = str(url).strip()
    if "://" not in text:
        return StoreURL("local", str(Path(text).expanduser().resolve()))
    scheme, rest = text.split("://", 1)
    scheme = scheme.lower()
    if scheme == "file":
        return StoreURL("local", str(Path(rest).expanduser().resolve()))
    if scheme not in ("s3", "s3a"):
        raise StoreError(f"store URL must be a local path or s3://bucket/prefix, got scheme {clip(scheme)}")
    if rest.startswith("/"):  # s3:///runs: no bucket (not bucket "runs")
        raise StoreError(f"store URL {clip(text)}: expected s3://bucket/prefix, got an empty bucket name")
    bucket, _, prefix = rest.strip("/").partition("/")
    if not _BUCKET_RE.match(bucket):
        raise StoreError(f"store URL {clip(text)}: expected a valid S3 bucket name, got {clip(bucket)}")
    prefix = prefix.strip("/")
    return StoreURL("s3", f"{bucket}/{prefix}" if prefix else bucket, bucket, prefix)


def resolve_endpoint(s3_endpoint: str | None = None) -> str | None:
    """The S3 endpoint: the explicit option, else ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``."""
    return s3_endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def store_env(s3_endpoint: str | None = None) -> dict[str, str]:
    """Environment variables a Ray worker needs to open the same store (for ``runtime_env``).

    No secrets unless ``GANGEO_SHIP_AWS_CREDENTIALS=1`` (Ray writes a runtime_env to its logs).
    """
    keys = _ENV_KEYS + (_SECRET_KEYS if os.environ.get(SHIP_CREDENTIALS_ENV) == "1" else ())
    env = {k: os.environ[k] for k in keys if os.environ.get(k)}
    if s3_endpoint:
        env["AWS_ENDPOINT_URL"] = s3_endpoint
    return env


def _redact(endpoint: str | None) -> str:
    """An endpoint for messages, with any ``user:password@`` removed."""
    if not endpoint:
        return "the default AWS endpoint"
    return re.sub(r"//[^/@]*@", "//", endpoint)


def _check_bucket(loc: StoreURL, endpoint: str | None) -> None:
    """One HeadBucket call with short timeouts; raise StoreError on any failure."""
    import boto3
    import botocore.exceptions as bexc
    from botocore.config import Config

    where = _redact(endpoint)
    cfg = Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"})
    try:
        client = boto3.session.Session().client("s3", endpoint_url=endpoint, config=cfg)
        client.head_bucket(Bucket=loc.bucket)
    except bexc.NoCredentialsError:
        raise StoreError(
            f"no AWS credentials found for s3://{loc.bucket}: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
        ) from None
    except (bexc.EndpointConnectionError, bexc.ConnectTimeoutError, bexc.ReadTimeoutError):
        raise StoreError(f"cannot reach the S3 endpoint {where} (connection failed)", transient=True) from None
    except bexc.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("404", "NoSuchBucket") or status == 404:
            raise StoreError(f"S3 bucket {loc.bucket!r} does not exist at {where}") from None
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch") or status == 403:
            raise StoreError(
                f"access to S3 bucket {loc.bucket!r} at {where} was denied (HTTP 403): "
                "check the AWS credentials"
            ) from None
        raise StoreError(f"S3 bucket {loc.bucket!r} at {where}: error {code or status}",
                         transient=status in (500, 502, 503, 504) or code == "SlowDown") from None
    except (bexc.BotoCoreError, ValueError) as exc:
        raise StoreError(f"S3 endpoint {where}: {type(exc).__name__}") from None


def check_store(url: str | os.PathLike | StoreURL | None, *, s3_endpoint: str | None = None) -> StoreURL:
    """Parse ``url`` and, for S3, check that the bucket is reachable; writes nothing."""
    loc = parse_store_url(url)
    if loc.kind == "s3":
        _check_bucket(loc, resolve_endpoint(s3_endpoint))
    elif Path(loc.path).exists() and not Path(loc.path).is_dir():
        raise StoreError(f"store {loc.path} exists and is not a directory")
    return loc


async def _start_session(fs) -> tuple:
    """The filesystem's client, created now on the running loop (zarr's), and that loop."""
    import asyncio

    return await fs.set_session(), asyncio.get_running_loop()


def _close_client(client, loop: asyncio.AbstractEventLoop, wait: bool) -> None:
    """Close an S3 client's aiohttp session on the loop it belongs to.

    ``wait``: at exit or on request, block (briefly) until closed; from the garbage
    collector, which may run on any thread, including the loop's, only schedule it.
    """
    import asyncio

    if loop.is_closed() or not loop.is_running():  # zarr's loop is gone (exit, or a forked child)
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        loop.create_task(client.close())
        return
    future = asyncio.run_coroutine_threadsafe(client.close(), loop)
    if wait:
        try:
            future.result(timeout=5)
        except Exception:  # closing is best effort: a session that will not close is not the user's error
            pass


# One finalizer per open S3 filesystem: run when it is collected, or by close_sessions.
_SESSIONS: list[weakref.finalize] = []
_AT_EXIT: list[bool] = []
if hasattr(os, "register_at_fork"):  # a forked child has none of its parent's sessions (nor zarr's loop)
    os.register_at_fork(after_in_child=_SESSIONS.clear)


def close_sessions() -> None:
    """Close the aiohttp session of every S3 store this process opened (idempotent).

    s3fs's asynchronous filesystems never close their session themselves, and
    aiohttp then prints ``Unclosed client session`` when the interpreter exits.
    A store's session is closed when its filesystem is collected; this closes the
    rest, and runs at exit (registered after zarr's own ``atexit`` hook, so before
    it, while zarr's event loop still runs).
    """
    while _SESSIONS:
        fin = _SESSIONS.pop()
        info = fin.detach()  # (fs, func, args, kwargs), or None once run
        if info is not None:
            client, loop, _ = info[2]
            _close_client(client, loop, wait=True)


def _s3_store(loc: StoreURL, endpoint: str | None, read_only: bool) -> Store:
    import s3fs
    from zarr.core.sync import sync
    from zarr.storage import FsspecStore

    # skip_instance_cache: s3fs instances are bound to an event loop; never share them.
    fs = s3fs.S3FileSystem(
        asynchronous=True,
        skip_instance_cache=True,
        endpoint_url=endpoint,
        config_kwargs={"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 3}},
    )
    # The session is opened here, on zarr's loop, so that it can be closed there (close_sessions).
    client, loop = sync(_start_session(fs))
    _SESSIONS[:] = [f for f in _SESSIONS if f.alive] + [weakref.finalize(fs, _close_client, client, loop, False)]
    if not _AT_EXIT:
        atexit.register(close_sessions)
        _AT_EXIT.append(True)
    return FsspecStore(fs, read_only=read_only, path=loc.path)


def open_root(
    url: str | os.PathLike | StoreURL | None = None,
    *,
    s3_endpoint: str | None = None,
    mode: str = "a",
    create: bool = True,
) -> zarr.Group:
    """Open the root group of a results store (Zarr v3).

    ``url``: a local directory (created when ``create``) or ``s3://bucket/prefix``
    (the bucket must exist). ``mode`` is zarr's: "a" read/write, "r" read-only.
    Raises :class:`StoreError` with one line when the store cannot be reached.
    """
    if mode not in ("a", "r", "r+", "w"):
        raise StoreError(f"store mode must be one of 'a', 'r', 'r+', 'w', got {mode!r}")
    loc = parse_store_url(url)
    read_only = mode == "r"
    if loc.kind == "local":
        path = Path(loc.path)
        if path.exists() and not path.is_dir():
            raise StoreError(f"store {loc.path} exists and is not a directory")
        if not path.exists():
            if not create or read_only:
                raise StoreError(f"no results store at {loc.path}")
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # a read-only or special file system: the store's error, one line
                raise StoreError(f"cannot create the store directory {loc.path}: "
                                 f"{exc.strerror or type(exc).__name__}") from None
        store: Store = zarr.storage.LocalStore(loc.path, read_only=read_only)
    else:
        endpoint = resolve_endpoint(s3_endpoint)
        _check_bucket(loc, endpoint)
        store = _s3_store(loc, endpoint, read_only)
    if not create and mode == "a":
        mode = "r+"
    try:
        try:
            # mode was checked above: one of zarr's access modes
            return zarr.open_group(store, mode=cast("AccessModeLiteral", mode), zarr_format=3)
        except zarr.errors.ContainsGroupError:
            if mode != "a":
                raise
            # Another driver created the root between zarr's check and its write: open that one.
            return zarr.open_group(store, mode="r+", zarr_format=3)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        raise StoreError(f"no results store at {loc}") from None
    except PermissionError:
        raise StoreError(f"store {loc} is not writable") from None


def plain_group(store: Store, path: str) -> zarr.Group:
    """The group at ``path`` read from its own metadata files, never from a consolidated copy.

    Consolidated metadata is written for outside readers (plain xarray, ARCHITECTURE.md, Store);
    gangeo's own reads and writes must see each array's current metadata, so a resized array
    or a damaged ``zarr.json`` is never hidden behind the copy.
    """
    return zarr.open_group(store, path=path, mode="r" if store.read_only else "r+", zarr_format=3,
                           use_consolidated=False)


def array_in(group: zarr.Group, name: str) -> zarr.Array:
    """``group[name]`` typed as the array the store's layout puts there (zarr's index returns an array or a group)."""
    return cast(zarr.Array, group[name])


def group_in(parent: zarr.Group, name: str) -> zarr.Group:
    """``parent[name]`` typed as the group the store's layout puts there (a run, a target group, ``reduce``)."""
    return cast(zarr.Group, parent[name])


def subgroup(parent: zarr.Group, key: str) -> zarr.Group:
    """``parent[key]`` as :func:`plain_group` reads it; KeyError when absent."""
    try:
        return plain_group(parent.store, f"{parent.path}/{key}".strip("/"))
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        raise KeyError(key) from None


def writable_problem(path: str | os.PathLike) -> str | None:
    """Why files cannot be written at local ``path`` (or in the folder it would be made in); None when they can.

    Checked before any work, by trying: permissions alone do not say (root, read-only
    mounts, /proc). The probe file is removed at once.
    """
    import tempfile
    from pathlib import Path

    where = Path(path)
    while not where.exists() and where != where.parent:
        where = where.parent
    if not where.is_dir():
        return f"{where} is a file, not a directory"
    try:
        with tempfile.TemporaryFile(dir=where, prefix=".gangeo-probe-"):
            pass
    except OSError as exc:
        return f"cannot write in {where} ({exc.strerror or type(exc).__name__})"
    return None
