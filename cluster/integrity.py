"""Whether a stored chunk or reduce counts: the checksum, the chunk check and the reduce record.

Example::

    from cluster.integrity import chunk_checksum, damaged_chunks, reduce_state
    crc = chunk_checksum({"z": z, "eigvals": lam})        # what write_chunk records
    damaged_chunks(group, layout, done)                    # {chunk: "eigvals: checksum mismatch: ..."}
    reduce_state(group)                                    # "complete", "unfinished" or None

The one owner of these rules (ARCHITECTURE.md, "Store"): the store records
checksums with ``chunk_checksum``; views, resume and ``verify`` judge done
chunks with ``chunk_problems``; the view, ``verify``, the run state and the
readers of ``reduce/`` ask ``reduce_state``. It imports only the layout and
the storage errors, so ``view``, ``verify`` and ``store`` all sit above it.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import numpy as np
import zarr

from .layout import ARRAYS, GroupLayout
from .storage import StoreError

__all__ = ["DamagedChunkError", "chunk_checksum", "chunk_problems", "damaged_chunks", "done_chunk_problems",
           "read_chunk", "reduce_state", "refuse_damaged", "require_reduced", "stored_arrays"]


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


def read_chunk(group: zarr.Group, names: list[str], rows: slice) -> tuple[dict[str, np.ndarray], list[str]]:
    """The chunk's arrays as float32 (as its checksum was computed) and the arrays that failed to decode."""
    data, problems = {}, []
    for name in names:
        try:
            data[name] = np.ascontiguousarray(group[name][rows], dtype=np.float32)
        except Exception as exc:  # a damaged chunk file fails its crc32c or its decompression
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
    checksums = np.asarray(group["checksum"][:]) if "checksum" in set(group.array_keys()) else None
    out = {}
    for i in chunks if chunks is not None else range(lay.n_chunks):
        if not done[i]:
            continue
        problems = chunk_problems(group, lay, i, None if checksums is None else int(checksums[i]))
        if problems:
            out[i] = problems[0]
    return out


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


def require_reduced(key: str, group: zarr.Group) -> None:
    """Raise :class:`StoreError` when the group's reduce started and never finished."""
    if reduce_state(group) == "unfinished":
        raise StoreError(f"group {key}: reduce/ is unfinished (interrupted or still running); "
                         "run `gangeo resume` or `gangeo reduce` to redo it")
