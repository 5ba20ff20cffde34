"""How alike the metric is across the latent space, and the global (mean) metric.

Homogeneity between points i and j (ordered, i != j), after Wang & Ponce 2021:
with ``u_ik`` the k-th eigenvector of ``H_i`` and ``l_jk`` the k-th eigenvalue of
``H_j`` (same rank order), ``v_k = u_ik^T H_j u_ik``; ``corr_log[i, j]`` is the
Pearson correlation of ``log10 v`` with ``log10 l_j`` and ``corr_lin[i, j]`` the
same on the linear scale. Entries where ``v_k <= 0`` or ``l_jk <= 0`` (round-off
around a null space) have no logarithm: they are left out of that pair's log
correlation and counted. The matrices are asymmetric, with NaN on the diagonal.
"""

from __future__ import annotations

import torch

from .errors import GeometryError
from .spectrum import check_metric, eigen

__all__ = ["global_metric", "homogeneity", "homogeneity_pairs", "homogeneity_summary", "homogeneity_tile",
           "pearson"]

# Bytes of the (ni, nj, D, D) intermediate one tile may hold.
_TILE_BYTES = 2**27
# Bytes of the squared overlaps one product of homogeneity_pairs holds: on a CPU, products of a few
# thousand rows (BLAS near its peak, times flat from 1 to 64 MiB at D=100) in bounded memory; on a GPU,
# large enough to keep it busy.
_PAIR_BYTES = 2**24
_PAIR_BYTES_GPU = 2**28
# Largest D for which homogeneity_pairs uses packed outer products (D(D+1)/2 values per eigenvector).
# Measured on one CPU thread (bench/homogeneity_reducer.py): 1.3x the overlap products at D=64 in blocks
# of 256 codes, even at D=100; above it the overlap products U_aᵀ U_b, efficient at large D.
_KRON_MAX_D = 64


def homogeneity_tile(
    eigvecs_i: torch.Tensor,
    H_j: torch.Tensor,
    eigvals_j: torch.Tensor,
    *,
    offsets: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One tile of the homogeneity matrices: rows from ``eigvecs_i``, columns from ``H_j``.

    Example::

        log_t, lin_t, masked_t = homogeneity_tile(U[0:8], H[8:16], L[8:16], offsets=(0, 8))

    ``eigvecs_i`` (ni, D, D) eigenvectors as columns in descending eigenvalue order,
    ``H_j`` (nj, D, D), ``eigvals_j`` (nj, D) descending. Returns ``(corr_log, corr_lin,
    masked)`` of shape (ni, nj), computed in float64; ``masked`` counts the entries
    left out of each log correlation. With ``offsets=(i0, j0)`` (the tile's place in
    the full matrix) entries with ``i0 + a == j0 + b`` are set to NaN (count 0).
    """
    if eigvecs_i.ndim != 3 or H_j.ndim != 3 or eigvals_j.ndim != 2:
        raise GeometryError(
            "homogeneity_tile: expected eigvecs_i (ni, D, D), H_j (nj, D, D), eigvals_j (nj, D); got "
            f"{tuple(eigvecs_i.shape)}, {tuple(H_j.shape)}, {tuple(eigvals_j.shape)}"
        )
    D = H_j.shape[-1]
    if eigvecs_i.shape[1:] != (D, D) or eigvals_j.shape != H_j.shape[:2]:
        raise GeometryError(
            f"homogeneity_tile: sizes disagree: eigvecs_i {tuple(eigvecs_i.shape)}, H_j "
            f"{tuple(H_j.shape)}, eigvals_j {tuple(eigvals_j.shape)}"
        )
    U = eigvecs_i.to(torch.float64)
    HU = torch.einsum("bde,aek->abdk", H_j.to(U), U)  # H_j u_ik for every pair
    v = (U.unsqueeze(1) * HU).sum(dim=-2)  # (ni, nj, D): u_ik^T H_j u_ik
    corr_log, corr_lin, masked = _correlate(v, eigvals_j.to(v).unsqueeze(0))
    if offsets is not None:
        i0, j0 = offsets
        rows = torch.arange(i0, i0 + v.shape[0], device=v.device).unsqueeze(1)
        cols = torch.arange(j0, j0 + v.shape[1], device=v.device).unsqueeze(0)
        diag = rows == cols
        corr_log = corr_log.masked_fill(diag, float("nan"))
        corr_lin = corr_lin.masked_fill(diag, float("nan"))
        masked = masked.masked_fill(diag, 0)
    return corr_log, corr_lin, masked


def _correlate(v: torch.Tensor, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(corr_log, corr_lin, masked) of ``v`` against ``lam`` over the last axis (module docstring).

    ``lam`` broadcasts against ``v`` (one spectrum per column: (1, nb, D)), so nothing of the
    size of ``v`` is made for it.
    """
    corr_lin = pearson(v, lam)
    valid = (v > 0) & (lam > 0)
    tiny = torch.finfo(v.dtype).tiny
    every = bool(valid.all())  # the usual case: no entry to leave out, so no weights to apply
    corr_log = pearson(v.clamp_min(tiny).log10_(), lam.clamp_min(tiny).log10(), None if every else valid)
    return corr_log, corr_lin, (~valid).sum(dim=-1)


def homogeneity_pairs(
    vecs_a: torch.Tensor,
    vals_a: torch.Tensor,
    vecs_b: torch.Tensor,
    vals_b: torch.Tensor,
    *,
    corr_vals_a: torch.Tensor | None = None,
    corr_vals_b: torch.Tensor | None = None,
    same: bool = False,
    dtype: torch.dtype = torch.float64,
):
    """Both ordered homogeneity entries of every pair (a, b) of two blocks, one product per pair.

    Example::

        (log_ab, lin_ab, m_ab), (log_ba, lin_ba, m_ba) = homogeneity_pairs(U[:8], L[:8], U[8:], L[8:])
        # log_ab[a, b] is corr_log[a, 8 + b]; log_ba[b, a] is corr_log[8 + b, a]

    ``vecs_*`` (n, D, D) eigenvectors as columns and ``vals_*`` (n, D) the eigenvalues with
    which they give the metric, ``H = U diag(vals) Uᵀ``; no metric is formed. With
    ``M = U_aᵀ U_b``, ``v(a→b)_k = u_akᵀ H_b u_ak = Σ_m M_km² vals_bm`` and
    ``v(b→a)_m = Σ_k M_km² vals_ak``, so the one product gives both directions.
    ``corr_vals_*`` (default ``vals_*``) are the eigenvalues ``v`` is correlated with.
    ``same=True``: both blocks are one block; only pairs a < b are computed, and the
    entries with a >= b are NaN with count 0. Products in ``dtype`` on the inputs'
    device; returns ``(corr_log, corr_lin, masked)`` of shape (na, nb) and (nb, na).
    """
    for name, u, lam in (("a", vecs_a, vals_a), ("b", vecs_b, vals_b)):
        if u.ndim != 3 or lam.ndim != 2 or u.shape[:2] != lam.shape or u.shape[1] != u.shape[2]:
            raise GeometryError(f"homogeneity_pairs: expected vecs_{name} (n, D, D) and vals_{name} (n, D); "
                                f"got {tuple(u.shape)} and {tuple(lam.shape)}")
    if vecs_a.shape[1] != vecs_b.shape[1] or (same and vecs_a.shape != vecs_b.shape):
        raise GeometryError(f"homogeneity_pairs: blocks disagree: {tuple(vecs_a.shape)} and {tuple(vecs_b.shape)}")
    na, nb, D = vecs_a.shape[0], vecs_b.shape[0], vecs_a.shape[1]
    lam_a, lam_b = vals_a.to(dtype), vals_b.to(dtype)
    Ua, Ub = vecs_a.to(dtype), vecs_b.to(dtype)
    if D <= _KRON_MAX_D:
        v_ab, v_ba = _v_packed(Ua, lam_a, Ub, lam_b, same)
    else:
        v_ab, v_ba = _v_overlaps(Ua, lam_a, Ub, lam_b, same)
    ca = lam_a if corr_vals_a is None else corr_vals_a.to(dtype)
    cb = lam_b if corr_vals_b is None else corr_vals_b.to(dtype)
    ab = _correlate(v_ab, cb.unsqueeze(0))
    # same block, packed: v_ab holds every ordered pair of the block, so it is both directions at once
    ba = ab if v_ba is None else _correlate(v_ba, ca.unsqueeze(0))
    if not same:
        return _as_f64(*ab), _as_f64(*ba)
    upper = torch.ones(na, nb, dtype=torch.bool, device=Ua.device).triu(1)  # the pairs computed
    return _as_f64(*ab, skip=~upper), _as_f64(*ba, skip=~upper.T)


def _v_overlaps(Ua, lam_a, Ub, lam_b, same):
    """v(a→b) (na, nb, D) and v(b→a) (nb, na, D) from one product ``M = U_aᵀ U_b`` per unordered pair."""
    na, nb, D = Ua.shape[0], Ub.shape[0], Ua.shape[1]
    dtype = Ua.dtype
    # Row (a, k) of A is u_ak, column (b, m) of B is u_bm: one product gives M_km for A x B pairs at once
    # (few large operations: per-pair ones cost more in dispatch than in arithmetic at small D).
    A_ = Ua.transpose(1, 2).reshape(na * D, D)
    B_ = Ub.permute(1, 0, 2).reshape(D, nb * D)
    v_ab = torch.full((na, nb, D), float("nan"), dtype=dtype, device=Ua.device)
    v_ba = torch.full((nb, na, D), float("nan"), dtype=dtype, device=Ua.device)
    budget = _PAIR_BYTES if Ua.device.type == "cpu" else _PAIR_BYTES_GPU
    step = max(1, int((budget / (Ua.element_size() * D * D)) ** 0.5))
    for a0 in range(0, na, step):
        a1 = min(na, a0 + step)
        for b0 in range(a0 + 1 if same else 0, nb, step):  # same: every b > a, a = b never
            b1 = min(nb, b0 + step)
            A, B = a1 - a0, b1 - b0
            sq = (A_[a0 * D : a1 * D] @ B_[:, b0 * D : b1 * D]).square_()  # [(a, k), (b, m)] = M_km²
            v_ba[b0:b1, a0:a1] = torch.bmm(lam_a[a0:a1].unsqueeze(1), sq.view(A, D, B * D)).view(A, B, D) \
                .transpose(0, 1)
            v_ab[a0:a1, b0:b1] = sq.view(A * D, B, D).mul_(lam_b[b0:b1]).sum(dim=-1).view(A, D, B).transpose(1, 2)
    return v_ab, v_ba


def _v_packed(Ua, lam_a, Ub, lam_b, same):
    """v(a→b) and v(b→a) as one matrix product over packed symmetric matrices.

    ``v(a→b)_k = u_akᵀ H_b u_ak = <u_ak u_akᵀ, H_b>``, and both sides are symmetric, so
    with the upper triangles packed (off-diagonal entries of ``H_b`` doubled) every
    ordered pair of a block is one row-times-column of a product with inner size
    D(D+1)/2: the same arithmetic per pair as ``U_aᵀ U_b``, but one large product
    that BLAS runs near its peak, with no squared overlaps to write and read back.
    ``H_b = U_b diag(l_b) U_bᵀ`` is formed once per code, not per pair. Used while the
    packed outer products of a block stay small (D <= _KRON_MAX_D).
    """
    D = Ua.shape[1]
    p, q = torch.triu_indices(D, D, device=Ua.device)
    weight = torch.where(p == q, 1.0, 2.0).to(Ua)

    def outers(U):  # (n, D, D) -> (n * D, P): row (n, k) is u_k u_kᵀ packed
        Ut = U.transpose(1, 2).reshape(-1, D)
        W = torch.empty((Ut.shape[0], p.numel()), dtype=U.dtype, device=U.device)
        at = 0
        for i in range(D):  # row i of the upper triangle: contiguous slices, no gather (as costly as the product)
            torch.mul(Ut[:, i : i + 1], Ut[:, i:], out=W[:, at : at + D - i])
            at += D - i
        return W

    def metrics(U, lam):  # (n, D, D), (n, D) -> (P, n): H packed, off-diagonal doubled
        H = (U * lam.unsqueeze(1)) @ U.transpose(1, 2)
        return (H[:, p, q] * weight).T

    def v(U_rows, H_cols):  # -> (n_rows, n_cols, D), in row blocks of bounded bytes
        n, m = U_rows.shape[0], H_cols.shape[1]
        out = torch.empty((n, m, D), dtype=U_rows.dtype, device=U_rows.device)
        budget = _PAIR_BYTES if U_rows.device.type == "cpu" else _PAIR_BYTES_GPU
        step = max(1, budget // (U_rows.element_size() * D * p.numel()))
        for r0 in range(0, n, step):
            r1 = min(n, r0 + step)
            out[r0:r1] = (outers(U_rows[r0:r1]) @ H_cols).view(r1 - r0, D, m) \
                .transpose(1, 2)
        return out

    v_ab = v(Ua, metrics(Ub, lam_b))
    return v_ab, (None if same else v(Ub, metrics(Ua, lam_a)))


def _as_f64(corr_log, corr_lin, masked, skip=None):
    """The results as float64 / int64, with NaN and count 0 where ``skip``."""
    corr_log, corr_lin = corr_log.double(), corr_lin.double()
    if skip is not None:
        corr_log, corr_lin = corr_log.masked_fill(skip, float("nan")), corr_lin.masked_fill(skip, float("nan"))
        masked = masked.masked_fill(skip, 0)
    return corr_log, corr_lin, masked


def pearson(x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Pearson correlation over the last axis using only ``valid`` entries (default all); NaN if undefined.

    Undefined: fewer than two valid entries, or either side constant over them. ``y`` (and
    ``valid``) may broadcast against ``x``.
    """
    if valid is None:  # same sums as with unit weights, without forming them
        n = torch.tensor(float(x.shape[-1]), dtype=x.dtype, device=x.device)
        dx = x - x.sum(dim=-1, keepdim=True) / n
        dy = y - y.sum(dim=-1, keepdim=True) / n
    else:
        w = valid.to(x.dtype)
        n = w.sum(dim=-1, keepdim=True)
        mx = (w * x).sum(dim=-1, keepdim=True) / n.clamp_min(1)
        my = (w * y).sum(dim=-1, keepdim=True) / n.clamp_min(1)
        dx, dy = w * (x - mx), w * (y - my)
        n = n[..., 0]
    cov = (dx * dy).sum(dim=-1)
    var = (dx * dx).sum(dim=-1) * (dy * dy).sum(dim=-1)
    corr = cov / var.sqrt()
    return torch.where((n >= 2) & (var > 0), corr, torch.full_like(corr, float("nan")))


def homogeneity(
    H_stack: torch.Tensor,
    *,
    eigvals: torch.Tensor | None = None,
    eigvecs: torch.Tensor | None = None,
    block: int | None = None,
    return_masked: bool = False,
):
    """Homogeneity matrices ``(corr_log, corr_lin)`` of ``N`` metrics, each (N, N), NaN diagonal.

    Example::

        corr_log, corr_lin = homogeneity(H)                     # H: (N, D, D)
        corr_log, corr_lin, masked = homogeneity(H, return_masked=True)

    ``eigvals`` / ``eigvecs`` (from :func:`spectrum.eigen`) skip the decomposition.
    ``block`` is the tile side (default: tiles of at most 128 MiB); tiles run on
    ``H_stack``'s device. ``masked`` counts the entries left out of each log correlation.
    """
    check_metric(H_stack, name="homogeneity")
    if H_stack.ndim != 3 or H_stack.shape[0] < 2:
        raise GeometryError(f"homogeneity: expected a stack (N, D, D) with N >= 2, got {tuple(H_stack.shape)}")
    N, D = H_stack.shape[:2]
    if (eigvals is None) != (eigvecs is None):
        raise GeometryError("homogeneity: pass both eigvals and eigvecs, or neither")
    if eigvals is None or eigvecs is None:  # both, by the check above
        eigvals, eigvecs = eigen(H_stack)
    elif eigvals.shape != (N, D) or eigvecs.shape != (N, D, D):
        raise GeometryError(
            f"homogeneity: expected eigvals ({N}, {D}) and eigvecs ({N}, {D}, {D}), got "
            f"{tuple(eigvals.shape)} and {tuple(eigvecs.shape)}"
        )
    if block is None:
        block = max(1, int((_TILE_BYTES / (8 * D * D)) ** 0.5))
    if not isinstance(block, int) or block < 1:
        raise GeometryError(f"homogeneity: block must be a positive int, got {block!r}")
    dev = H_stack.device
    corr_log = torch.empty(N, N, dtype=torch.float64, device=dev)
    corr_lin = torch.empty_like(corr_log)
    masked = torch.empty(N, N, dtype=torch.long, device=dev)
    for i0 in range(0, N, block):
        for j0 in range(0, N, block):
            i1, j1 = min(N, i0 + block), min(N, j0 + block)
            tile = homogeneity_tile(eigvecs[i0:i1], H_stack[j0:j1], eigvals[j0:j1], offsets=(i0, j0))
            corr_log[i0:i1, j0:j1], corr_lin[i0:i1, j0:j1], masked[i0:i1, j0:j1] = tile
    return (corr_log, corr_lin, masked) if return_masked else (corr_log, corr_lin)


def homogeneity_summary(corr: torch.Tensor) -> tuple[float, float]:
    """Mean and standard deviation (Bessel-corrected) of the finite off-diagonal entries.

    Example::

        mean, std = homogeneity_summary(corr_log)
    """
    if not isinstance(corr, torch.Tensor) or corr.ndim != 2 or corr.shape[0] != corr.shape[1]:
        got = tuple(corr.shape) if isinstance(corr, torch.Tensor) else type(corr).__name__
        raise GeometryError(f"homogeneity_summary: expected a square (N, N) matrix, got {got}")
    off = ~torch.eye(corr.shape[0], dtype=torch.bool, device=corr.device)
    vals = corr[off & torch.isfinite(corr)].double()
    if vals.numel() == 0:
        return float("nan"), float("nan")
    std = float(vals.std()) if vals.numel() > 1 else float("nan")
    return float(vals.mean()), std


def global_metric(H_stack: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The arithmetic mean of the metrics and its eigen-decomposition.

    Example::

        H_mean, eigvals, eigvecs = global_metric(H)            # H: (N, D, D)
    """
    check_metric(H_stack, name="global_metric")
    if H_stack.ndim != 3:
        raise GeometryError(f"global_metric: expected a stack (N, D, D), got {tuple(H_stack.shape)}")
    H_mean = H_stack.mean(dim=0)
    eigvals, eigvecs = eigen(H_mean)
    return H_mean, eigvals, eigvecs
