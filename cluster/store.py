"""The results of sweep runs in a Zarr v3 store (ARCHITECTURE.md, "Store").

Example::

    from cluster.layout import GroupLayout
    from cluster.store import RunStore
    rs = RunStore("./gangeo-results")
    lay = GroupLayout("dcgan-faces", "z", "mse", n=64, dim=100, chunk_size=8)
    rs.create("quickstart", spec, [lay])           # idempotent: same spec -> same run
    rs.write_chunk("quickstart", lay.key, 0, {"z": z, "eigvals": l, "eigvecs": V})
    rs.mark_done("quickstart", lay.key, 0)          # written last: the chunk counts now
    rs.done_mask("quickstart", lay.key)             # (n_chunks,) bool

A task owns whole chunks (no sharding, ``done`` and the per-chunk records are
chunked one entry per chunk), so concurrent workers never share a Zarr chunk.
"""

from __future__ import annotations

import datetime as _dt
import time
from typing import cast

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from .integrity import chunk_checksum
from .layout import ARRAYS, CHUNK_RECORDS, STORED_DTYPES, GroupLayout
from .retry import RetryPolicy, retry_call
from .states import Status
from .storage import StoreError, array_in, group_in, open_root, parse_store_url, subgroup

__all__ = ["RunExistsError", "RunStore", "check_identity"]

class RunExistsError(StoreError):
    """A run of that name exists with a different spec."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict:
    import platform

    import torch

    out = {"python": platform.python_version(), "numpy": np.__version__, "zarr": zarr.__version__,
           "torch": torch.__version__}
    try:
        import ray

        out["ray"] = ray.__version__
    except ImportError:
        pass
    try:
        from importlib.metadata import version

        out["gan-geometry"] = version("gan-geometry")
    except Exception:  # not installed as a distribution: leave it out
        pass
    return out


def _diff(a: dict, b: dict) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def check_identity(run: str, url: str, old: dict | None, identity: dict) -> bool:
    """Raise :class:`RunExistsError` when a stored identity differs from ``identity``; True to record hashes.

    A run made before weights were hashed (no ``weights`` in its identity) is
    accepted with a warning line: its files cannot be compared, only recorded now.
    A checkpoint new to a series (its entry names the ``series``) is accepted and
    recorded: the run grows by it (:mod:`cluster.series`); one the run has is never dropped.
    """
    old = dict(old or {})
    old_w, new_w = old.pop("weights", None), identity.get("weights")
    core = {k: v for k, v in identity.items() if k != "weights"}
    if old != core:
        raise RunExistsError(f"run {run!r} already exists in {url} with a different spec "
                             f"(differs in: {', '.join(_diff(old, core))}); choose another name")
    if old_w is None or new_w is None:
        if new_w:
            import sys

            print(f"gangeo: warning: run {run!r} was made before weights files were hashed; "
                  "their contents cannot be compared, recording them now", file=sys.stderr)
        return bool(new_w)
    added = {k for k in set(new_w) - set(old_w) if isinstance(new_w[k], dict) and new_w[k].get("series")}
    for key in sorted(set(old_w) | set(new_w) - added):
        was, now = old_w.get(key), new_w.get(key)
        if now is None and (was or {}).get("series"):
            raise RunExistsError(f"run {run!r}: checkpoint {was.get('path')} ({key}) of series "
                                 f"{was['series']!r} is gone; a series grows, it never loses a checkpoint: "
                                 "restore it or choose another run name")
        if (was or {}).get("sha256") != (now or {}).get("sha256"):
            path = (now or was)["path"]
            raise RunExistsError(
                f"run {run!r}: weights file {path} ({key}) differs from the one the run started with "
                f"(sha256 {(was or {}).get('sha256', 'none')[:12]} then, {(now or {}).get('sha256', 'none')[:12]} "
                "now); restore it or choose another run name")
    return bool(added)


class RunStore:
    """Runs in one results store (local directory or ``s3://``); opened once, used many times."""

    def __init__(self, url=None, *, s3_endpoint: str | None = None, mode: str = "a", create: bool = True,
                 retry: RetryPolicy | None = None):
        self.location = parse_store_url(url)  # parsed once; a StoreURL passes through
        self.url = str(self.location)
        self.s3_endpoint = s3_endpoint
        self.root = open_root(self.location, s3_endpoint=s3_endpoint, mode=mode, create=create)
        # Writes (and the reads that decide what to write) retry transient S3 errors.
        self.retry = retry or RetryPolicy()

    def _retry(self, fn, what: str):
        return retry_call(fn, policy=self.retry, what=what)

    # -- runs ---------------------------------------------------------------
    def run_group(self, run: str) -> zarr.Group:
        try:
            return group_in(self.root, run)  # every child of the root is a run's group
        except KeyError:
            raise StoreError(f"no run {run!r} in store {self.url}") from None

    def has_run(self, run: str) -> bool:
        return run in self.root.group_keys()

    def create(self, run: str, spec, groups: list[GroupLayout], *, weights: dict | None = None) -> bool:
        """Create run ``run`` for ``spec`` with ``groups``; True if new, False when resuming.

        The same spec under an existing name resumes it (missing arrays are added);
        a different one raises :class:`RunExistsError`. ``weights``: the sha256 of
        each weights file (:mod:`cluster.weights_identity`), kept in the identity; a
        file whose contents changed is refused naming it.
        """
        identity = spec.identity() if weights is None else {**spec.identity(), "weights": weights}
        if self.has_run(run):
            old = cast("dict | None", dict(self.run_group(run).attrs).get("identity"))
            if check_identity(run, self.url, old, identity):
                self.run_group(run).attrs["identity"] = identity  # from now on its weights are checked too
            g, new = self.run_group(run), False
        else:
            g, new = self.root.require_group(run), True
            g.attrs.update({"spec": spec.to_dict(), "identity": identity, "status": Status.CREATED,
                            "created": _now(), "versions": _versions(), "groups": [], "failed": []})
        for plan in groups:
            self._create_group(g, plan, spec)
        keys = list(dict.fromkeys([*cast(list, g.attrs.get("groups", [])), *(p.key for p in groups)]))
        g.attrs["groups"] = keys
        return new

    def _create_group(self, run_g: zarr.Group, plan: GroupLayout, spec) -> None:
        g = run_g.require_group(plan.key)
        g.attrs.update({**plan.attrs(), "method": spec.method, "topk": spec.topk})
        names = ["z", "eigvals"] + (["eigvecs"] if spec.keep_eigvecs else []) + (
            ["hessian"] if spec.keep_hessian else [])
        existing = set(g.array_keys())
        for name in names:
            dims = ARRAYS[name]
            shape = plan.shape(name)
            if name in existing:
                stored = array_in(g, name).shape
                if stored != shape:
                    raise StoreError(f"{plan.key}/{name}: stored shape {stored}, expected {shape}")
                continue
            g.create_array(name, shape=shape, chunks=(plan.chunk_size,) + shape[1:], dtype=STORED_DTYPES[name],
                           compressors=[ZstdCodec(level=1), Crc32cCodec()], dimension_names=dims,
                           fill_value=0.0)
        # Spectra are decomposed in float64 (geometry_core.spectrum); say what each array keeps.
        g.attrs["precision"] = {"eigen": "float64", **{n: str(np.dtype(array_in(g, n).dtype)) for n in names}}
        for name, dtype in CHUNK_RECORDS.items():
            if name not in existing:
                g.create_array(name, shape=(plan.n_chunks,), chunks=(1,), dtype=dtype,
                               dimension_names=("chunk",), fill_value=0)

    def attrs(self, run: str) -> dict:
        """The run's attributes: spec, identity, status, created, versions, timing, failed, groups."""
        return dict(self.run_group(run).attrs)

    def update_attrs(self, run: str, **values) -> None:
        """Set run attributes (the driver is their only writer); transient errors are retried."""
        self._retry(lambda: self.run_group(run).attrs.update({**values, "updated": _now()}), f"{run} attrs")

    def _child_names(self) -> list[str]:
        """Names directly under the root, read from the store's listing (no child metadata is parsed)."""
        from zarr.core.sync import sync

        prefix = f"{self.root.path}/" if self.root.path else ""

        async def listing() -> list[str]:
            return [name async for name in self.root.store.list_dir(prefix)]

        return sorted(n.rstrip("/") for n in sync(listing()) if n.rstrip("/") != "zarr.json")

    def ls(self) -> list[dict]:
        """The runs in this store: name, status, created, groups; a run whose metadata is unreadable is ``damaged``."""
        out: list[dict] = []
        for name in self._child_names():
            if name.startswith("_"):
                continue  # the store's own records (_locks, _schedules)
            try:
                a = dict(self.root[name].attrs)
            except KeyError:
                continue  # not a Zarr node: not a run
            except Exception as exc:  # one damaged run must not hide the others
                from .damage import as_store_error

                err = as_store_error(exc, self.url, name)
                if err is None:
                    raise
                out.append({"run": name, "status": "damaged", "error": str(err)})
                continue
            if "identity" in a:
                out.append({"run": name, "status": a.get("status"), "created": a.get("created"),
                            "groups": a.get("groups", [])})
        return out

    def delete_run(self, run: str) -> None:
        """Delete every key of ``run``: status ``deleting`` first, the run's own ``zarr.json`` last.

        Cut short, the run still lists, as ``deleting`` (``ls``, ``status``), is read by no
        one (:func:`cluster.integrity.refuse_unsettled`), and a second call finishes it.
        The caller holds the run's lock (``gangeo rm``).
        """
        from zarr.core.sync import sync


        self.update_attrs(run, status=Status.DELETING)
        prefix = f"{self.root.path}/{run}" if self.root.path else run
        store = self.root.store

        async def children() -> list[str]:
            return [name async for name in store.list_dir(f"{prefix}/")]

        for name in sorted(n.rstrip("/") for n in sync(children())):
            if name == "zarr.json":
                continue
            try:  # a group's subtree at once (batched on S3)
                sync(store.delete_dir(f"{prefix}/{name}"))
            except ValueError:  # a local file, not a folder
                pass
            sync(store.delete(f"{prefix}/{name}"))
        sync(store.delete(f"{prefix}/zarr.json"))  # last: until now the run lists as deleting
        sync(store.delete_dir(prefix))  # what is left of a local run: empty folders

    # -- groups and chunks ----------------------------------------------------
    def group(self, run: str, key: str) -> zarr.Group:
        try:
            return subgroup(self.run_group(run), key)
        except KeyError:
            raise StoreError(f"run {run!r} has no group {key!r}") from None

    def write_chunk(self, run: str, key: str, chunk: int, arrays: dict[str, np.ndarray],
                    *, seconds: float = 0.0) -> int:
        """Write one chunk's rows of each array (whole Zarr chunks) and its records; returns the checksum.

        Each write is retried on transient errors; an error that persists propagates, so the
        caller never reaches :meth:`mark_done` for a chunk whose data did not land.
        """
        g = self._retry(lambda: self.group(run, key), f"{key} group")
        arrs = self._retry(lambda: {name: g[name] for name in g.array_keys()}, f"{key} arrays")
        rows = GroupLayout.of(g).rows(chunk)
        written = {}
        for name in sorted(arrays):
            if name not in arrs or name not in ARRAYS:
                continue  # an array the spec does not keep
            data = np.ascontiguousarray(arrays[name], dtype=np.dtype(arrs[name].dtype))
            expected = (rows.stop - rows.start,) + arrs[name].shape[1:]
            if data.shape != expected:
                raise StoreError(f"{key}/{name} chunk {chunk}: expected shape {expected}, got {data.shape}")
            self._retry(lambda a=arrs[name], d=data: a.__setitem__(rows, d), f"{key}/{name} chunk {chunk}")
            written[name] = data
        crc = chunk_checksum(written)
        stamp = time.time()
        for name, value in (("checksum", crc), ("seconds", seconds), ("computed_at", stamp)):
            self._retry(lambda a=arrs[name], v=value: a.__setitem__(chunk, v), f"{key}/{name} {chunk}")
        return crc

    def mark_done(self, run: str, key: str, chunk: int, *, value: int = 1) -> None:
        """Mark a chunk complete; call only after :meth:`write_chunk` returned (``value=0``: no longer done)."""
        self._retry(lambda: array_in(self.group(run, key), "done").__setitem__(chunk, value),
                    f"{key}/done {chunk}")

    def done_mask(self, run: str, key: str) -> np.ndarray:
        """(n_chunks,) bool: which chunks are complete."""
        return self._retry(lambda: array_in(self.group(run, key), "done")[:], f"{key}/done") == 1

    def read(self, run: str, key: str, array: str, index=None) -> np.ndarray:
        """An array of a group (``z``, ``eigvals``, ``eigvecs``, ``hessian``, ``done``, ...), optionally indexed."""
        g = self.group(run, key)
        try:
            arr = g[array]
        except KeyError:
            arr = None
        if not isinstance(arr, zarr.Array):
            raise StoreError(f"{key}: no array {array!r}; stored: {sorted(g.array_keys())}")
        return np.asarray(arr[:] if index is None else arr[index])

    def progress(self, run: str) -> dict:
        """Per group: chunks done out of chunks, and for the run in total."""
        groups = {}
        for key in self.attrs(run).get("groups", []):
            mask = self.done_mask(run, key)
            groups[key] = {"done": int(mask.sum()), "chunks": int(mask.size)}
        return {"groups": groups, "done": sum(v["done"] for v in groups.values()),
                "chunks": sum(v["chunks"] for v in groups.values())}
