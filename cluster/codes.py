"""Where a run's latent codes come from: drawn from its seed, one by one, or read from a file.

Example::

    from cluster.codes import seed_codes, read_codes_file
    z = seed_codes(G, seed=0, rows=slice(64, 80), n=128)    # (16, D): codes 64..79 of the seed
    src = read_codes_file("z.npy")                          # validated: CodesFile(path, n, dim, sha256)
    z = file_rows(src.path, slice(0, 16))                   # (16, D) float32

Code ``i`` of seed ``s`` is drawn with its own generator seeded from ``(s, i)``
(the ``per-code`` scheme), so it does not depend on how many codes the run has:
a run grows by appending codes, and a chunk draws only its own rows. Runs made
before carry no ``code_scheme`` attribute; they drew all ``n`` codes in one call
(``G.sample(n, seed)``, the ``batch`` scheme, whose codes change with ``n``) and
keep it (ARCHITECTURE.md, "Store").

A file holds a ``.npy`` array of shape (N, D) (or (D,), one code), floating
point, finite and within ±MAX_ABS_CODE; it is read with ``allow_pickle=False`` and memory-mapped, so a
large file is never loaded whole. A run records the sha256 of its codes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from geometry_core.errors import clip

__all__ = ["DEFAULT_SCHEME", "LEGACY_SCHEME", "SCHEMES", "CodesFile", "code_seed", "codes_sha256", "file_rows",
           "file_sha256_prefix", "read_codes_file", "seed_codes"]

SCHEMES = ("per-code", "batch")
DEFAULT_SCHEME = "per-code"   # new runs
LEGACY_SCHEME = "batch"       # a run with no recorded scheme
_BLOCK_ROWS = 65536           # rows hashed or checked at a time
_NPY_MAGIC = b"\x93NUMPY"
# Latent codes are of order 1 (Gaussian z, a mapping network's w); past this a code means nothing to a
# generator, and its float32 copy (and the squares of a distance) head for overflow (3.4e38).
MAX_ABS_CODE = 1e4


def code_seed(seed: int, index: int) -> int:
    """The seed of code ``index`` of a run seeded ``seed`` (a torch seed, below 2**63)."""
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, np.uint32)
    return (int(state[0]) << 32 | int(state[1])) & (2**63 - 1)


def seed_codes(G, seed: int, rows: slice, *, n: int, scheme: str = DEFAULT_SCHEME) -> torch.Tensor:
    """Codes ``rows`` of a run of ``n`` codes drawn from ``seed`` (float32, CPU)."""
    if scheme == "per-code":
        return torch.cat([G.sample(1, seed=code_seed(seed, i)) for i in range(rows.start, rows.stop)])
    if scheme == "batch":
        return G.sample(n, seed=seed)[rows]
    raise ValueError(f"code scheme must be one of {list(SCHEMES)}, got {scheme!r}")


@dataclass(frozen=True)
class CodesFile:
    """A validated codes file: absolute ``path``, ``n`` codes of dimension ``dim``, ``sha256`` of the codes."""

    path: str
    n: int
    dim: int
    sha256: str


def _open(path: Path) -> np.ndarray:
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _rows(arr: np.ndarray) -> np.ndarray:
    """Codes as rows: one code (D,) reads as (1, D)."""
    return arr.reshape(1, -1) if arr.ndim == 1 else arr


def read_codes_file(value, where: str = "codes.file") -> tuple[CodesFile | None, list[str]]:
    """Validate a codes file; ``(CodesFile, [])`` or ``(None, [one problem line])``."""
    if not isinstance(value, str) or not value.strip():
        return None, [f"{where}: expected the path of a .npy file of codes, got {clip(value)}"]
    path = Path(value).expanduser().resolve()
    if not path.is_file():
        return None, [f"{where}: {clip(str(path), bare=True)} does not exist or is not a file"]
    try:
        with open(path, "rb") as fh:
            magic = fh.read(len(_NPY_MAGIC))
        arr = _open(path) if magic == _NPY_MAGIC else None
    except ValueError as exc:  # an array of Python objects: loading it would unpickle
        why = "holds Python objects (pickles are refused)" if "object" in str(exc) or "pickle" in str(exc) \
            else f"unreadable ({' '.join(str(exc).split())})"
        return None, [f"{where}: {clip(str(path), bare=True)} is not a plain .npy array: {why}"]
    except OSError as exc:
        return None, [f"{where}: cannot read {clip(str(path), bare=True)} ({exc.strerror or exc})"]
    if arr is None:
        return None, [f"{where}: {clip(str(path), bare=True)} is not a plain .npy array: unreadable "
                      "(no NumPy header; save codes with numpy.save)"]
    problem = _shape_problem(arr)
    if problem:
        return None, [f"{where}: {clip(str(path), bare=True)} {problem}"]
    arr = _rows(arr)
    bad = _first_non_finite(arr)
    if bad is not None:
        return None, [f"{where}: {clip(str(path), bare=True)} has a non-finite value in code {bad}; "
                      "expected finite numbers"]
    far = _first_beyond(arr, MAX_ABS_CODE)
    if far is not None:
        row, value = far
        return None, [f"{where}: {clip(str(path), bare=True)} has a value of {value:.3g} in code {row}; codes "
                      f"must lie within ±{MAX_ABS_CODE:g} (latent codes are of order 1)"]
    return CodesFile(str(path), int(arr.shape[0]), int(arr.shape[1]), codes_sha256(arr, arr.shape[0])), []


def _shape_problem(arr: np.ndarray) -> str | None:
    if arr.dtype.kind != "f":
        return f"holds {arr.dtype} values; expected floating point codes (float32 or float64)"
    if arr.ndim not in (1, 2) or arr.size == 0:
        return f"has shape {arr.shape}; expected (N, D) codes (or (D,), one code), none empty"
    return None


def _first_non_finite(arr: np.ndarray) -> int | None:
    for start in range(0, arr.shape[0], _BLOCK_ROWS):
        ok = np.isfinite(arr[start:start + _BLOCK_ROWS]).all(axis=1)
        if not ok.all():
            return start + int(np.argmin(ok))
    return None


def _first_beyond(arr: np.ndarray, limit: float) -> tuple[int, float] | None:
    for start in range(0, arr.shape[0], _BLOCK_ROWS):
        block = np.abs(arr[start:start + _BLOCK_ROWS])
        far = (block > limit).any(axis=1)
        if far.any():
            row = int(np.argmax(far))
            return start + row, float(arr[start + row][np.argmax(block[row])])
    return None


def codes_sha256(arr: np.ndarray, n: int) -> str:
    """sha256 of the first ``n`` codes as little-endian float64, row after row (independent of the file's dtype)."""
    h = hashlib.sha256()
    for start in range(0, n, _BLOCK_ROWS):
        block = np.asarray(arr[start:min(start + _BLOCK_ROWS, n)], dtype="<f8")
        h.update(np.ascontiguousarray(block).tobytes())
    return h.hexdigest()


def file_sha256_prefix(path: str, n: int) -> str:
    """:func:`codes_sha256` of the first ``n`` codes of the file at ``path``."""
    return codes_sha256(_rows(_open(Path(path))), n)


def file_rows(path: str, rows: slice) -> np.ndarray:
    """Codes ``rows`` of the file at ``path``, float32 (as the store keeps them)."""
    return np.array(_rows(_open(Path(path)))[rows], dtype=np.float32)
