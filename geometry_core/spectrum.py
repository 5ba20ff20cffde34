"""Eigen-decomposition of metric tensors, their anisotropy and null space.

Conventions (ARCHITECTURE.md, "Mathematics"): eigenvalues descending, eigenvectors as columns,
the sign of each eigenvector fixed so its largest-magnitude entry is positive.
Decompositions run in float64 whatever the metric's dtype: the bottom of a
generator's spectrum lies ~1e-7 below its top, where float32 LAPACK returns
round-off, and the log-scale statistics (homogeneity) weigh it heavily.
"""

from __future__ import annotations

from typing import Any

import torch

from .errors import GeometryError

__all__ = ["FRACTIONS", "anisotropy", "check_metric", "eigen", "fix_signs", "from_eigen", "null_space"]

FRACTIONS = (0.99, 0.999, 0.9999, 0.99999)
# Relative asymmetry ||H - H^T||_F / ||H||_F above which a matrix is refused:
# round-off of a symmetrised JᵀJ stays far below these in each precision.
_ASYM_TOL = {torch.float64: 1e-8}
_ASYM_TOL_DEFAULT = 1e-4


def check_metric(H: torch.Tensor, *, name: str = "H") -> torch.Tensor:
    """Validate a (D, D) or (B, D, D) finite, symmetric floating tensor; return it."""
    if not isinstance(H, torch.Tensor):
        raise GeometryError(f"{name}: expected a torch.Tensor, got {type(H).__name__}")
    if H.ndim not in (2, 3) or H.shape[-1] != H.shape[-2] or H.shape[-1] == 0:
        raise GeometryError(f"{name}: expected a square (D, D) or (B, D, D) matrix, got {tuple(H.shape)}")
    if not H.is_floating_point():
        raise GeometryError(f"{name}: expected a floating tensor, got {H.dtype}")
    if not torch.isfinite(H).all():
        raise GeometryError(f"{name}: contains NaN or Inf")
    tol = _ASYM_TOL.get(H.dtype, _ASYM_TOL_DEFAULT)
    asym = torch.linalg.matrix_norm(H - H.transpose(-1, -2))
    scale = torch.linalg.matrix_norm(H).clamp_min(torch.finfo(H.dtype).tiny)
    worst = float((asym / scale).max())
    if worst > tol:
        raise GeometryError(f"{name}: expected a symmetric matrix, relative asymmetry {worst:.3g} > {tol:g}")
    return H


def fix_signs(vecs: torch.Tensor) -> torch.Tensor:
    """Flip eigenvector columns so each one's largest-magnitude entry is positive."""
    idx = vecs.abs().argmax(dim=-2, keepdim=True)
    signs = torch.sign(torch.gather(vecs, -2, idx))
    return vecs * torch.where(signs == 0, torch.ones_like(signs), signs)


def eigen(H: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending) and eigenvectors (columns, signs fixed) of symmetric ``H``.

    Example::

        vals, vecs = eigen(H)       # (D,), (D, D); batched: (B, D), (B, D, D)
        H ≈ vecs @ torch.diag(vals) @ vecs.T

    Computed and returned in float64 on ``H``'s device, whatever ``H``'s dtype
    (a float32 ``H`` is converted exactly, then decomposed).
    """
    check_metric(H)
    H = H.to(torch.float64)
    vals, vecs = torch.linalg.eigh(0.5 * (H + H.transpose(-1, -2)))
    return vals.flip(-1), fix_signs(vecs.flip(-1))


def from_eigen(eigvals: torch.Tensor, eigvecs: torch.Tensor) -> torch.Tensor:
    """The metric ``V diag(l) Vᵀ`` from its eigenvalues and eigenvectors (columns), the inverse of :func:`eigen`.

    Example::

        H = from_eigen(*eigen(H))         # (D, D) or (B, D, D); a rank-k H from (k,), (D, k)
    """
    if eigvecs.ndim == 2:
        return from_eigen(eigvals.unsqueeze(0), eigvecs.unsqueeze(0))[0]
    return torch.einsum("bik,bk,bjk->bij", eigvecs, eigvals, eigvecs)


def anisotropy(
    eigvals: torch.Tensor, fractions: tuple[float, ...] = FRACTIONS
) -> dict[float, int] | dict[float, torch.Tensor]:
    """For each fraction ``f``: the fewest top eigenvalues whose sum reaches ``f`` of the total.

    Example::

        anisotropy(torch.tensor([10., 1., .1]))   # {0.99: 2, 0.999: 3, ...}

    ``eigvals`` of shape ``(D,)`` gives ``{f: int}``; ``(B, D)`` gives ``{f: LongTensor (B,)}``.
    Negative eigenvalues (round-off of a positive semi-definite metric) are clipped to 0
    before summing. A spectrum that sums to 0 needs 0 eigenvalues.
    """
    if not isinstance(eigvals, torch.Tensor) or eigvals.ndim not in (1, 2) or eigvals.shape[-1] == 0:
        got = tuple(eigvals.shape) if isinstance(eigvals, torch.Tensor) else type(eigvals).__name__
        raise GeometryError(f"anisotropy: expected eigenvalues of shape (D,) or (B, D), got {got}")
    if not torch.isfinite(eigvals).all():
        raise GeometryError("anisotropy: eigenvalues contain NaN or Inf")
    bad = [f for f in fractions if not (isinstance(f, float) and 0.0 < f <= 1.0)]
    if bad:
        raise GeometryError(f"anisotropy: fractions must be floats in (0, 1], got {bad}")
    lam = eigvals.detach().double().clamp_min(0.0).sort(dim=-1, descending=True).values
    cum = lam.cumsum(dim=-1)
    total = cum[..., -1:]
    D = lam.shape[-1]
    out: dict[float, Any] = {}  # ints for one spectrum, tensors for a batch
    for f in fractions:
        count = ((cum < f * total).sum(dim=-1) + 1).clamp_max(D)
        count = torch.where(total[..., 0] > 0, count, torch.zeros_like(count))
        out[f] = int(count) if eigvals.ndim == 1 else count.cpu()
    return out


def null_space(H: torch.Tensor, *, rtol: float = 1e-6) -> torch.Tensor | list[torch.Tensor]:
    """Eigenvectors of ``H`` whose eigenvalue is at most ``rtol`` times the largest.

    Example::

        N = null_space(H)           # (D, r): directions the distance cannot see

    Batched ``(B, D, D)`` input gives a list of ``B`` such matrices (ranks differ).
    """
    if not (isinstance(rtol, float) and rtol >= 0.0):
        raise GeometryError(f"null_space: rtol must be a non-negative float, got {rtol!r}")
    vals, vecs = eigen(H)
    top = vals.abs().amax(dim=-1, keepdim=True)
    keep = vals <= rtol * top
    if H.ndim == 2:
        return vecs[:, keep]
    return [vecs[b][:, keep[b]] for b in range(H.shape[0])]
