"""Alignment of external latent directions with the metric's eigenframe (Wang & Ponce 2021, A.9).

Example::

    from geometry_core.alignment import alignment, sefa_directions
    lam, U = eigen(H_global)
    res = alignment(directions, U, lam, topk=10)
    res["power"], res["aligned"], res["purified"]
    sefa_vals, sefa_vecs = sefa_directions(G)   # SeFa's closed form, a comparator
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .errors import GeometryError

__all__ = ["alignment", "random_unit_vectors", "sefa_directions", "subspace_cosines"]


def random_unit_vectors(n: int, dim: int, *, seed: int = 0) -> torch.Tensor:
    """``n`` unit vectors uniform on the sphere in ``dim`` dimensions, float64, deterministic per seed."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    r = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    return r / r.norm(dim=1, keepdim=True)


def subspace_cosines(U, V, k: int) -> np.ndarray:
    """Cosines of the ``k`` principal angles between the spans of the first ``k`` columns of ``U`` and ``V``.

    ``U``, ``V`` (D, >= k) with orthonormal columns (eigenvectors, descending). The
    cosines are the singular values of ``U_kᵀ V_k``, descending, in [0, 1]: all 1 for
    the same subspace, all 0 for orthogonal ones; their mean square is the fraction of
    one subspace's energy inside the other.
    """
    U, V = np.asarray(U, dtype=np.float64), np.asarray(V, dtype=np.float64)
    if U.ndim != 2 or U.shape != V.shape or not 1 <= k <= U.shape[1]:
        raise GeometryError(f"subspace_cosines: expected two (D, m) bases of one shape and 1 <= k <= m, "
                            f"got {U.shape}, {V.shape}, k={k}")
    return np.clip(np.linalg.svd(U[:, :k].T @ V[:, :k], compute_uv=False), 0.0, 1.0)


def _as_rows(directions, dim: int) -> torch.Tensor:
    d = torch.as_tensor(np.asarray(directions) if not isinstance(directions, torch.Tensor) else directions)
    d = d.detach().cpu().double()
    if d.ndim == 1:
        d = d.unsqueeze(0)
    if d.ndim != 2 or d.shape[1] != dim:
        raise GeometryError(f"expected directions of shape (n, {dim}) or ({dim},), got {tuple(d.shape)}")
    norms = d.norm(dim=1, keepdim=True)
    if not torch.isfinite(d).all() or (norms == 0).any():
        raise GeometryError("directions must be finite and non-zero")
    return d / norms


def _safe_unit(v: torch.Tensor) -> torch.Tensor:
    """Rows renormalised; a row with (numerically) nothing left becomes NaN, not rounding noise."""
    n = v.norm(dim=1, keepdim=True)
    return torch.where(n > 1e-9, v / n.clamp_min(1e-300), torch.full_like(v, float("nan")))


def alignment(
    directions,
    eigvecs: torch.Tensor,
    eigvals: torch.Tensor,
    *,
    topk: int,
    n_random: int = 1000,
    seed: int = 0,
    quantile: float = 0.999,
) -> dict:
    """How external unit directions sit in the eigenframe of a metric (A.9).

    ``directions`` (n, D) are normalised to unit length; ``eigvecs`` (D, D) hold the
    eigenvectors as columns in descending order of ``eigvals`` (D,). With
    ``c_ik = <direction_i, u_k>``:

    - ``power[i] = sum_{k < topk} c_ik^2``: the share of the direction in the top-k
      eigenspace, against ``n_random`` random unit vectors (``power_random_mean``
      ~ topk / D, ``power_random_std``, ``power_z``, ``power_pvalue`` = share of
      random vectors with at least that power).
    - ``rate[i] = direction_i^T H direction_i = sum_k lambda_k c_ik^2``: the rate of
      image change (the distance is about ``rate t^2 / 2`` for a step t), with its
      random baseline and z score.
    - ``aligned`` (n, D) bool: ``|c_ik|`` above the ``quantile`` of ``|<r, u_k>|`` over
      the random vectors r (pooled over k: by rotation invariance every u_k gives the
      same law), i.e. significantly aligned to u_k; ``threshold`` that cosine.
    - ``purified`` (n, D): the direction projected onto its significantly aligned
      eigenvectors and renormalised (A.9 b); ``purified_topk``: projected onto the
      top-k eigenspace and renormalised (A.9 a). A row with nothing left (norm below
      1e-9) is NaN.
    """
    U = torch.as_tensor(eigvecs).detach().cpu().double()
    lam = torch.as_tensor(eigvals).detach().cpu().double()
    if U.ndim != 2 or U.shape[0] != U.shape[1] or lam.shape != (U.shape[0],):
        raise GeometryError(
            f"expected eigvecs (D, D) and eigvals (D,), got {tuple(U.shape)} and {tuple(lam.shape)}"
        )
    D = U.shape[0]
    if not isinstance(topk, int) or not 1 <= topk <= D:
        raise GeometryError(f"topk must be an int in [1, {D}], got {topk!r}")
    if not isinstance(n_random, int) or n_random < 2:
        raise GeometryError(f"n_random must be an int >= 2, got {n_random!r}")
    if not 0.0 < quantile < 1.0:
        raise GeometryError(f"quantile must be in (0, 1), got {quantile}")
    d = _as_rows(directions, D)
    coef = d @ U  # (n, D) cosines with each eigenvector
    rand = random_unit_vectors(n_random, D, seed=seed) @ U
    power, p_rand = (coef[:, :topk] ** 2).sum(1), (rand[:, :topk] ** 2).sum(1)
    rate, r_rand = (coef**2) @ lam, (rand**2) @ lam
    thr = float(torch.quantile(rand.abs().reshape(-1), quantile))
    aligned = coef.abs() > thr
    purified = _safe_unit(torch.where(aligned, coef, torch.zeros_like(coef)) @ U.T)
    top = _safe_unit(coef[:, :topk] @ U[:, :topk].T)
    return {
        "coef": coef,
        "power": power,
        "power_random_mean": float(p_rand.mean()),
        "power_random_std": float(p_rand.std()),
        "power_z": (power - p_rand.mean()) / p_rand.std(),
        "power_pvalue": (p_rand.unsqueeze(0) >= power.unsqueeze(1)).double().mean(1),
        "rate": rate,
        "rate_random_mean": float(r_rand.mean()),
        "rate_random_std": float(r_rand.std()),
        "rate_z": (rate - r_rand.mean()) / r_rand.std(),
        "threshold": thr,
        "aligned": aligned,
        "aligned_indices": [torch.nonzero(row).flatten().tolist() for row in aligned],
        "purified": purified,
        "purified_topk": top,
    }


def _first_weight_layer(module: nn.Module, latent_dim: int) -> tuple[str, nn.Module]:
    for name, m in module.named_modules():
        if isinstance(m, nn.Linear) and m.in_features == latent_dim:
            return name, m
        if isinstance(m, nn.ConvTranspose2d | nn.ConvTranspose1d) and m.in_channels == latent_dim:
            return name, m
    raise GeometryError(f"no Linear or ConvTranspose layer with {latent_dim} inputs found for SeFa")


def sefa_directions(G: nn.Module, *, layer: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """SeFa's closed-form directions (Shen & Zhou 2021): eigenvectors of ``A^T A``.

    ``A`` maps the latent code into the first layer: for a ``Linear`` weight
    ``(out, D)``, ``A = W``; for a ``ConvTranspose`` weight ``(D, out, kh, kw)``,
    ``A = W.reshape(D, -1).T``. The layer is the first such module taking ``D``
    inputs unless ``layer`` names one. Returns ``(eigvals (D,), eigvecs (D, D))``
    in the library's convention (descending, columns, sign fixed), float64.
    """
    from .spectrum import eigen

    D = int(getattr(G, "latent_dim", 0))
    root = getattr(G, "module", G)
    if layer is not None:
        modules = dict(root.named_modules())
        if layer not in modules:
            raise GeometryError(f"sefa: unknown layer {layer!r}")
        m = modules[layer]
    else:
        if D < 1:
            raise GeometryError("sefa: generator has no latent_dim; pass layer=")
        _, m = _first_weight_layer(root, D)
    W = m.weight.detach().cpu().double()
    A = W if isinstance(m, nn.Linear) else W.reshape(W.shape[0], -1).T
    if D and A.shape[1] != D:
        raise GeometryError(f"sefa: layer takes {A.shape[1]} inputs, latent size is {D}")
    return eigen(A.T @ A)
