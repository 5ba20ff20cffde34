"""Re-read every chunk of a run and check it: ``gangeo verify RUN``.

Example::

    from cluster.verify import verify_run
    report = verify_run("./gangeo-results", "quickstart")
    report["clean"], report["errors"]          # [{"group", "chunk", "problem"}, ...]

Per chunk (one chunk in memory at a time): the stored bytes decode (Zarr's
crc32c codec), shapes match the group's plan, values are finite, every done
chunk's data is present and its crc32 equals the checksum recorded at write
time; hessians are symmetric and positive semi-definite, eigenvalues are
non-negative and descending, eigenvectors orthonormal, and ``V diag(l) V^T``
reproduces the stored hessian — all within ``rtol`` of the chunk's scale.
A chunk with data but no done entry is "unfinished"; one with neither "missing".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from geometry_core.errors import UsageError

from .integrity import done_chunk_problems, read_chunk, read_rows, reduce_state, stored_arrays
from .layout import GroupLayout
from .storage import array_in
from .store import RunStore

if TYPE_CHECKING:
    from collections.abc import Mapping


__all__ = ["DEFAULT_RTOL", "verify_run"]

# float32 results of D <= ~1000: eigh and J^T J round-off is ~D * 1.2e-7 of the largest
# entry, so 1e-4 of the chunk's scale separates round-off from real damage.
DEFAULT_RTOL = 1e-4


def _check_values(data: dict[str, np.ndarray], rtol: float) -> list[str]:
    """Problems of one chunk's decoded arrays (float32)."""
    out = []
    for name, a in data.items():
        if not np.isfinite(a).all():
            out.append(f"{name}: {int((~np.isfinite(a)).sum())} non-finite values")
    if out:
        return out
    H, lam, V = data.get("hessian"), data.get("eigvals"), data.get("eigvecs")
    if H is not None:
        scale = max(float(np.abs(H).max()), 1e-30)
        asym = float(np.abs(H - H.transpose(0, 2, 1)).max())
        if asym > rtol * scale:
            out.append(f"hessian: not symmetric (max |H - H^T| = {asym:.3g}, scale {scale:.3g})")
        low = float(np.linalg.eigvalsh(((H + H.transpose(0, 2, 1)) / 2).astype(np.float64)).min())
        if low < -rtol * scale:
            out.append(f"hessian: not positive semi-definite (smallest eigenvalue {low:.3g}, scale {scale:.3g})")
    if lam is not None:
        top = max(float(np.abs(lam).max()), 1e-30)
        if float(lam.min()) < -rtol * top:
            out.append(f"eigvals: negative eigenvalue {float(lam.min()):.3g} (largest {top:.3g})")
        if float(np.diff(lam, axis=1).max(initial=0.0)) > rtol * top:
            out.append("eigvals: not in descending order")
    if V is not None:
        V64 = V.astype(np.float64)
        gram = np.einsum("bji,bjk->bik", V64, V64) - np.eye(V.shape[-1])
        # Orthonormality is scale-free; 10x rtol covers float32 Gram round-off at D ~ 1000.
        if float(np.abs(gram).max()) > 10 * rtol:
            out.append(f"eigvecs: not orthonormal (max |V^T V - I| = {float(np.abs(gram).max()):.3g})")
        elif H is not None and lam is not None:
            import torch  # here: `gangeo -h` reads DEFAULT_RTOL without importing torch

            from geometry_core.spectrum import from_eigen

            recon = from_eigen(torch.from_numpy(lam.astype(np.float64)), torch.from_numpy(V64)).numpy()
            err = float(np.abs(recon - H).max())
            if err > 10 * rtol * max(float(np.abs(H).max()), 1e-30):
                out.append(f"eigvecs/eigvals: V diag(l) V^T differs from hessian by {err:.3g}")
    return out


def _check_chunk(g, lay: GroupLayout, names: list[str], i: int, done: bool, checksum: int,
                 rtol: float) -> tuple[str, list[str]]:
    """(state, problems) of chunk ``i``: state is "done", "unfinished" or "missing"."""
    data, problems = read_chunk(g, names, lay.rows(i))
    present = {name: bool(np.any(a != 0)) for name, a in data.items()}
    if not done:
        if problems:
            return "unfinished", problems
        return ("unfinished" if any(present.values()) else "missing"), []
    problems = problems or done_chunk_problems(data, names, checksum)
    if not problems:
        problems += _check_values(data, rtol)
    return "done", problems


def _verify_group(rs: RunStore, run: str, key: str, rtol: float, errors: list) -> dict:
    g = rs.group(run, key)
    a: Mapping[str, Any] = g.attrs  # written by GroupLayout.attrs: the layout's own types
    lay = GroupLayout(a["model"], a["space"], a["target"], int(a["n"]), int(a["dim"]), int(a["chunk"]))
    n_chunks = lay.n_chunks
    names = stored_arrays(g)
    for name in names:
        want = lay.shape(name)
        shape = array_in(g, name).shape
        if shape != want:
            errors.append({"group": key, "chunk": None, "problem": f"{name}: shape {shape}, expected {want}"})
            return {"chunks": n_chunks, "done": 0, "unfinished": [], "missing": []}
    if "z" not in names or "eigvals" not in names:
        errors.append({"group": key, "chunk": None, "problem": "arrays z and eigvals are required"})
    done = read_rows(array_in(g, "done")) == 1
    checksums = read_rows(array_in(g, "checksum"))
    if done.shape != (n_chunks,):
        errors.append({"group": key, "chunk": None, "problem": f"done: shape {done.shape}, expected ({n_chunks},)"})
        return {"chunks": n_chunks, "done": 0, "unfinished": [], "missing": []}
    states: dict[str, list[int]] = {"done": [], "unfinished": [], "missing": []}
    for i in range(n_chunks):
        state, problems = _check_chunk(g, lay, names, i, bool(done[i]), int(checksums[i]), rtol)
        states[state].append(i)
        errors += [{"group": key, "chunk": i, "problem": p} for p in problems]
    return {"chunks": n_chunks, "done": len(states["done"]), "unfinished": states["unfinished"],
            "missing": states["missing"]}


def verify_run(url, run: str, *, s3_endpoint: str | None = None, rtol: float = DEFAULT_RTOL,
               groups: list[str] | None = None) -> dict:
    """Check every chunk of run ``run``; returns a report (``clean`` True when complete and intact).

    Keys: run, store, clean, complete, groups (per group: chunks, done, unfinished,
    missing), errors (group, chunk, problem). Raises :class:`StoreError` when the
    store or run cannot be opened.
    """
    if not isinstance(rtol, (int, float)) or not 0 < rtol < 1:
        raise UsageError(f"rtol: expected a number in (0, 1), got {rtol!r}")
    rs = RunStore(url, s3_endpoint=s3_endpoint, mode="r", create=False)
    keys = rs.attrs(run).get("groups", [])
    if groups:
        unknown = [k for k in groups if k not in keys]
        if unknown:
            raise UsageError(f"run {run!r} has no group {unknown[0]!r}; groups: {keys}")
        keys = list(groups)
    errors: list[dict] = []
    per_group = {key: _verify_group(rs, run, key, float(rtol), errors) for key in keys}
    errors += [{"group": key, "chunk": None, "problem": "reduce/: unfinished (interrupted or still running)"}
               for key in keys if reduce_state(rs.group(run, key)) == "unfinished"]
    complete = all(v["done"] == v["chunks"] for v in per_group.values())
    return {"run": run, "store": rs.url, "clean": complete and not errors, "complete": complete,
            "groups": per_group, "errors": errors}
