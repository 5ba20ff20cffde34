"""Whether a stored chunk or reduce counts: the checksum, the chunk check and the reduce record.

Example::

    from cluster.integrity import chunk_checksum, damaged_chunks, reduce_state
    crc = chunk_checksum({"z": z, "eigvals": lam})        # what write_chunk records
    damaged_chunks(group, layout, done)                    # {chunk: "eigvals: checksum mismatch: ..."}
    reduce_state(group)                                    # "complete", "unfinished" or None
    counted_chunks(group, layout, key=key)                  # ((n_chunks,) bool: counts, {chunk: problem})
    refuse_unsettled("quickstart", run_attrs)              # StoreError while the run grows or is deleted

The one owner of these rules (ARCHITECTURE.md, "Store"): the store records
checksums with ``chunk_checksum``; views, resume and ``verify`` judge done
chunks with ``chunk_problems``; which chunks count is ``counted_chunks`` (``done``
is 1 and the data agree; the view's path) or ``recorded_done`` (the ``done``
entries alone, checked against the layout; xarray's lazy path); the view,
``verify``, the run state and the readers of ``reduce/`` ask ``reduce_state``; a
run whose arrays are being resized (``growing``) or deleted (``status:
deleting``) is read by no one (``refuse_unsettled``). It imports only the layout
and the storage errors, so ``view``, ``verify`` and ``store`` all sit above it.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import numpy as np
import zarr

from .layout import ARRAYS, GroupLayout
from .retry import RetryPolicy, is_transient, retry_call
from .states import Status
from .storage import StoreError, array_in

__all__ = ["GROWING", "READ_DEADLINE_S", "DamagedChunkError", "chunk_checksum", "chunk_problems", "counted_chunks",
           "damaged_chunks", "done_chunk_problems", "growth_in_progress", "read_chunk", "read_rows", "recorded_done",
           "reduce_state", "reduced_summary", "refuse_damaged", "refuse_unsettled", "require_reduced", "stored_arrays"]

GROWING = "growing"    # run attribute {"from": n_old, "to": n_new, "spec": {...}} while arrays are resized


class DamagedChunkError(StoreError):
    """A chunk marked done whose data or checksum disagree (ARCHITECTURE.md, "Store")."""


def chunk_checksum(data: Mapping[str, np.ndarray]) -> int:
    """crc32 over a chunk's arrays, sorted by name, each cast to float32 in C order (``CHUNK_RECORDS``)."""
    crc = 0
    for name in sorted(data):
        crc = zlib.crc32(np.ascontiguousarray(data[name], dtype=np.float32).tobytes(), crc)
    return crc


def stored_arrays(group: zarr.Group) -> list[str]:
    """The sweep arrays (``layout.ARRAYS``) the group holds, sorted: the ones a checksum covers."""
    return sorted(name for name in ARRAYS if name in set(group.array_keys()))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}"


READ_DEADLINE_S = 45.0  # a store read waits out an outage this long (s3fs and botocore retry for ~20 s first)


def read_rows(arr: zarr.Array, sel=slice(None)) -> np.ndarray:
    """``arr[sel]`` as numpy; transient store errors (throttling, 5xx, a dropped connection) are retried
    like writes, within ``READ_DEADLINE_S``, then raised."""
    return retry_call(lambda: np.asarray(arr[sel]), policy=RetryPolicy(deadline=READ_DEADLINE_S),
                      what=f"read of {arr.name}")


def read_chunk(group: zarr.Group, names: list[str], rows: slice) -> tuple[dict[str, np.ndarray], list[str]]:
    """The chunk's arrays as float32 (as its checksum was computed) and the arrays that failed to decode.

    A store that does not answer is not damage: its error is raised once retries run out.
    """
    data, problems = {}, []
    for name in names:
        try:
            data[name] = np.ascontiguousarray(read_rows(array_in(group, name), rows), dtype=np.float32)
        except Exception as exc:  # a damaged chunk file fails its crc32c or its decompression
            if is_transient(exc):
                raise
            problems.append(f"{name}: unreadable ({_one_line(exc)})")
    return data, problems


def done_chunk_problems(data: dict[str, np.ndarray], names: list[str], checksum: int | None) -> list[str]:
    """Problems of a done chunk's decoded arrays: an array never written, or data that fails its checksum."""
    absent = [name for name in names if name in data and not np.any(data[name] != 0)]
    if absent:
        return [f"marked done but {', '.join(absent)} not written"]
    if checksum is None:  # a group written without checksum records: presence is all that can be checked
        return []
    crc = chunk_checksum({name: data[name] for name in names})
    if crc != checksum:
        return [f"{', '.join(names)}: checksum mismatch: recorded {checksum:#010x}, data gives {crc:#010x}"]
    return []


def chunk_problems(group: zarr.Group, lay: GroupLayout, i: int, checksum: int | None) -> list[str]:
    """Why done chunk ``i`` of ``group`` must not count ([] when its data and checksum agree).

    Each problem starts with the array(s) it concerns. The one integrity check of
    the project: views, resume and ``verify`` all call it.
    """
    names = stored_arrays(group)
    data, problems = read_chunk(group, names, lay.rows(i))
    return problems or done_chunk_problems(data, names, checksum)


def damaged_chunks(group: zarr.Group, lay: GroupLayout, done: np.ndarray,
                   chunks: range | None = None) -> dict[int, str]:
    """{chunk: problem} of the done chunks (of ``chunks``, default all) that must not count."""
    checksums = read_rows(array_in(group, "checksum")) if "checksum" in set(group.array_keys()) else None
    out = {}
    for i in chunks if chunks is not None else range(lay.n_chunks):
        if not done[i]:
            continue
        problems = chunk_problems(group, lay, i, None if checksums is None else int(checksums[i]))
        if problems:
            out[i] = problems[0]
    return out


def recorded_done(group: zarr.Group, lay: GroupLayout, *, key: str) -> np.ndarray:
    """(n_chunks,) bool: the chunk's ``done`` entry is 1 (data not checked: :func:`counted_chunks` does)."""
    done = read_rows(array_in(group, "done")) == 1
    if done.shape != (lay.n_chunks,):
        raise StoreError(f"group {key}: done has {done.size} entries for {lay.n_chunks} chunks of {lay.n} codes "
                         "(arrays of different lengths: a growth stopped part-way); run `gangeo resume`")
    return done


def counted_chunks(group: zarr.Group, lay: GroupLayout, chunks=None, *, key: str,
                   skip_damaged: bool = False) -> tuple[np.ndarray, dict[int, str]]:
    """((n_chunks,) bool: the chunk counts, {chunk: problem} of damaged done chunks) of a target group.

    A chunk counts when its ``done`` entry is 1 and its data and checksum agree;
    only ``chunks`` (default all) are checked, the others never count. A damaged
    done chunk raises :class:`DamagedChunkError` unless ``skip_damaged``.
    """
    done = recorded_done(group, lay, key=key)
    if chunks is not None:
        picked = np.zeros_like(done)
        picked[list(chunks)] = True
        done &= picked
    bad = damaged_chunks(group, lay, done, range(lay.n_chunks) if chunks is None else chunks)
    if not skip_damaged:
        refuse_damaged(key, bad)
    done[list(bad)] = False
    return done, bad


def growth_in_progress(attrs: dict) -> dict | None:
    """The run's ``growing`` record ({"from", "to", "spec"}) while a growth is unfinished, else None."""
    rec = attrs.get(GROWING)
    return rec if isinstance(rec, dict) and rec else None


def refuse_unsettled(run: str, attrs: dict) -> None:
    """Raise :class:`StoreError` (one line naming the remedy) for a run being grown or deleted."""
    if attrs.get("status") == Status.DELETING:
        raise StoreError(f"run {run!r} is being deleted (a `gangeo rm` is running or stopped part-way); "
                         f"run `gangeo rm {run} --yes` to finish deleting it")
    rec = growth_in_progress(attrs)
    if rec is not None:
        raise StoreError(f"run {run!r} is growing from {rec.get('from')} to {rec.get('to')} codes (its arrays are "
                         f"being resized, or a growth stopped part-way); run `gangeo resume {run}` to finish it")


def refuse_damaged(key: str, damaged: dict[int, str]) -> None:
    """Raise :class:`DamagedChunkError` naming group, array(s) and chunk of the first damaged chunk."""
    if damaged:
        i = min(damaged)
        more = f" (and {len(damaged) - 1} more damaged chunks)" if len(damaged) > 1 else ""
        raise DamagedChunkError(f"group {key} chunk {i}: {damaged[i]}{more}; "
                                "run `gangeo resume` to recompute, or pass --skip-damaged")


def reduce_state(group: zarr.Group) -> str | None:
    """``complete``, ``unfinished`` (a reduce started and never wrote its record) or None (never reduced).

    Runs reduced before the record existed carry ``reduced_at``, written last, and read as complete.
    """
    if "reduce" not in set(group.group_keys()):
        return None
    a = dict(group["reduce"].attrs)
    if a.get("state", "complete" if a.get("reduced_at") or a.get("note") else None) == "complete":
        return "complete"
    return "unfinished"


# The keys of a group's reduce summary (cluster.reduce.reduce_group) kept in its reduce/ attrs.
_SUMMARY_KEYS = ("n_codes", "n_used", "n_chunks", "n_chunks_done", "complete", "damaged_skipped", "note",
                 "global", "homogeneity", "anisotropy")


def reduced_summary(group: zarr.Group, chosen: tuple[str, ...]) -> dict | None:
    """The group's stored reduce summary when it covers ``chosen`` over every chunk (nothing skipped); else None."""
    if reduce_state(group) != "complete":
        return None
    a = dict(group["reduce"].attrs)
    if a.get("complete") is not True or a.get("damaged_skipped") or any(r not in a for r in chosen):
        return None
    return {k: a[k] for k in _SUMMARY_KEYS if k in a}


def require_reduced(key: str, group: zarr.Group) -> None:
    """Raise :class:`StoreError` when the group's reduce started and never finished."""
    if reduce_state(group) == "unfinished":
        raise StoreError(f"group {key}: reduce/ is unfinished (interrupted or still running); "
                         "run `gangeo resume` or `gangeo reduce` to redo it")
