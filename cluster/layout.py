"""Where a run's numbers live in the store, and which of them count (ARCHITECTURE.md, "Store").

Example::

    from cluster.layout import GroupLayout
    lay = GroupLayout("dcgan-faces", "z", "mse", n=64, dim=100, chunk_size=8)
    lay.key                       # "dcgan-faces/z/mse", the group's path inside its run
    lay.rows(3)                   # slice(24, 32): the codes of chunk 3
    lay.codes_done(done)          # (64,) bool from the (8,) done array

    lay = GroupLayout.of(zarr_group)   # the same, read back from a stored group

One object owns the layout: the group's path, chunk index <-> code rows and
which codes are done (their chunk's ``done`` entry is 1). "chunk_size" is the
number of codes per chunk; "chunk" is a chunk's index.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import cast

import numpy as np

__all__ = ["ARRAYS", "CHUNK_RECORDS", "STORED_DTYPES", "GroupLayout", "default_label", "dim_coordinate", "safe_name",
           "spec_generators"]

# name -> dimension names; the trailing sizes are all D
ARRAYS = {
    "z": ("code", "dim"),
    "eigvals": ("code", "eig"),
    "eigvecs": ("code", "dim", "eig"),
    "hessian": ("code", "dim", "dim2"),
}
# Eigenvalues keep the float64 of the decomposition (the bottom of a spectrum is ~1e-7
# of its top); the D x D arrays stay float32 to halve their size.
STORED_DTYPES = {"z": "f4", "eigvals": "f8", "eigvecs": "f4", "hessian": "f4"}
CHUNK_RECORDS = {  # one entry per chunk, each in its own Zarr chunk
    "done": "u1",        # 1 once the chunk's arrays are complete; written last
    "seconds": "f4",     # compute time of the chunk
    "computed_at": "f8",  # unix time the chunk was written
    "checksum": "u4",    # crc32 over the chunk's arrays (sorted by name, cast to float32, C order)
}


def dim_coordinate(dim: str, size: int, fractions: list | None = None) -> list:
    """The labels of a stored dimension, one rule for xarray and the CLI's tables: eigenvalue ranks
    (``eig``) from 1, the anisotropy fractions exactly as stored, positions from 0 for the rest."""
    if dim == "eig":
        return list(range(1, size + 1))
    if dim == "fraction" and isinstance(fractions, list) and len(fractions) == size:
        return [float(f) for f in fractions]
    return list(range(size))


def default_label(name: str, options: dict) -> str:
    """A generator's group name in the store: its name, marked when its weights are shuffled."""
    seed = options.get("shuffle_seed")
    return f"{name}-shuffled{seed}" if seed is not None else name


def spec_generators(spec, weights: dict | None = None) -> dict[str, tuple[str, dict]]:
    """Group label -> (generator name, options) of a stored spec's generators.

    Plain data read back from a store: nothing is loaded or imported; malformed entries are left out.
    A checkpoint series gives one label per step (``<label>-step<step>``), its file taken from
    ``weights``, the run's weights identity (where each step's file was when it ran), not the files now.
    """
    out: dict[str, tuple[str, dict]] = {}
    steps: dict[str, list[tuple[str, str, str]]] = {}  # series label -> (step label, option, path)
    for key, w in (weights or {}).items():
        if isinstance(w, dict) and isinstance(w.get("series"), str) and isinstance(w.get("path"), str):
            label, _, option = key.partition("/")
            steps.setdefault(w["series"], []).append((label, option, w["path"]))
    for e in (spec if isinstance(spec, dict) else {}).get("generators") or []:
        if isinstance(e, dict) and isinstance(e.get("name"), str):
            options = cast(dict, e.get("options")) if isinstance(e.get("options"), dict) else {}
            label = str(e.get("label") or default_label(e["name"], options))
            if isinstance(e.get("series"), dict):
                for step_label, option, path in steps.get(label, []):
                    out.setdefault(step_label, (e["name"], {**options, option: path}))
                continue
            out.setdefault(label, (e["name"], options))
    return out


def safe_name(target: str) -> str:
    """A group name for a target: ``layer:main.5`` -> ``layer-main.5``."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", target)


@dataclass(frozen=True)
class GroupLayout:
    """One (model, latent space, target) group of a run: ``n`` codes of dimension ``dim``, ``chunk_size`` a chunk."""

    model: str
    space: str
    target: str
    n: int
    dim: int
    chunk_size: int

    @classmethod
    def of(cls, group) -> "GroupLayout":
        """The layout of a stored group (its attributes; the ``z`` array where they are absent)."""
        a = dict(group.attrs)
        z = group["z"]
        parts = group.path.split("/")
        return cls(model=str(a.get("model", parts[-3] if len(parts) >= 3 else "")),
                   space=str(a.get("space", parts[-2] if len(parts) >= 2 else "")),
                   target=str(a.get("target", parts[-1])),
                   n=int(z.shape[0]), dim=int(z.shape[1]), chunk_size=int(z.chunks[0]))

    @property
    def key(self) -> str:
        """The group's path inside its run: ``<model>/<space>/<target>``."""
        return f"{self.model}/{self.space}/{safe_name(self.target)}"

    @property
    def n_chunks(self) -> int:
        return -(-self.n // self.chunk_size)

    def rows(self, chunk: int) -> slice:
        """The code rows of chunk ``chunk``."""
        if not 0 <= chunk < self.n_chunks:
            from .storage import StoreError

            raise StoreError(f"{self.key}: chunk index must be in [0, {self.n_chunks}), got {chunk}")
        start = chunk * self.chunk_size
        return slice(start, min(start + self.chunk_size, self.n))

    def n_rows(self, chunk: int) -> int:
        """How many codes chunk ``chunk`` holds (the last one may be short)."""
        r = self.rows(chunk)
        return r.stop - r.start

    def shape(self, array: str) -> tuple[int, ...]:
        """The full shape of one of :data:`ARRAYS`."""
        return (self.n, self.dim) + (self.dim,) * (len(ARRAYS[array]) - 2)

    def codes_done(self, done: np.ndarray) -> np.ndarray:
        """(N,) bool: the code's chunk is done, from the (n_chunks,) ``done`` array."""
        return np.repeat(np.asarray(done) == 1, self.chunk_size)[: self.n]

    def attrs(self) -> dict:
        """The group's attributes describing this layout (``chunk`` is the stored name of the size)."""
        return {"model": self.model, "space": self.space, "target": self.target, "n": self.n, "dim": self.dim,
                "chunk": self.chunk_size, "n_chunks": self.n_chunks}
