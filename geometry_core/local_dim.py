"""Local dimension and Distortion of layer maps (after Choi et al. 2022, arXiv:2205.13182).

Example::

    from geometry_core.local_dim import local_dimension_table, distortion
    zs = G.sample(8, seed=0)
    local_dimension_table(G, zs, ["main.0", "main.3"])   # {layer: {...}}
    distortion(G, zs, "main.3")                          # float in [0, 1]

The local dimension of a map ``f`` at ``z`` is the rank of its Jacobian chosen by
the optimal hard threshold of Gavish and Donoho (2014) for unknown noise level:
singular values above ``omega(beta) * median(sigma)`` count, ``beta`` being the
aspect ratio ``min(M, D) / max(M, D)`` of the Jacobian.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import cast

import numpy as np
import torch
from scipy import integrate, linalg, optimize

from .errors import GeometryError
from .layers import jacobian, layer_map, layers_map

__all__ = [
    "distortion",
    "jacobian_singular_values",
    "local_dimension",
    "local_dimension_table",
    "marchenko_pastur_median",
    "optimal_hard_threshold",
    "omega",
]


def _check_beta(beta: float) -> float:
    beta = float(beta)
    if not 0.0 < beta <= 1.0:
        raise GeometryError(f"aspect ratio beta must be in (0, 1], got {beta}")
    return beta


@lru_cache(maxsize=256)
def marchenko_pastur_median(beta: float) -> float:
    """Median of the Marchenko–Pastur law with ratio ``beta`` and unit variance.

    Density ``sqrt((b - x)(x - a)) / (2 pi beta x)`` on ``[a, b] = [(1 - sqrt(beta))^2,
    (1 + sqrt(beta))^2]``; the median is found by root-finding on its integral.
    """
    beta = _check_beta(beta)
    lo, hi = (1 - math.sqrt(beta)) ** 2, (1 + math.sqrt(beta)) ** 2

    def density(x: float) -> float:
        return math.sqrt(max((hi - x) * (x - lo), 0.0)) / (2 * math.pi * beta * x)

    def cdf_minus_half(m: float) -> float:
        return integrate.quad(density, lo, m, limit=200)[0] - 0.5

    return float(optimize.brentq(cdf_minus_half, lo, hi, xtol=1e-12))


def omega(beta: float) -> float:
    """Gavish–Donoho coefficient for unknown noise: ``lambda_star(beta) / sqrt(mu_beta)``.

    ``lambda_star = sqrt(2 (beta + 1) + 8 beta / ((beta + 1) + sqrt(beta^2 + 14 beta + 1)))``
    and ``mu_beta`` the Marchenko–Pastur median. Their cubic fit
    ``0.56 b^3 - 0.95 b^2 + 1.82 b + 1.43`` agrees within 0.02.
    """
    beta = _check_beta(beta)
    lam = math.sqrt(2 * (beta + 1) + 8 * beta / ((beta + 1) + math.sqrt(beta**2 + 14 * beta + 1)))
    return lam / math.sqrt(marchenko_pastur_median(beta))


def optimal_hard_threshold(sigmas, shape: tuple[int, int]) -> float:
    """The threshold ``omega(beta) * median(sigmas)`` for a matrix of ``shape`` (M, D).

    ``sigmas`` are all ``min(M, D)`` singular values of that matrix.
    """
    if len(shape) != 2 or min(shape) < 1:
        raise GeometryError(f"shape must be (M, D) with positive sizes, got {tuple(shape)}")
    s = np.asarray(torch.as_tensor(sigmas).detach().cpu().double())
    if s.ndim != 1 or s.size != min(shape):
        raise GeometryError(f"expected {min(shape)} singular values for shape {tuple(shape)}, "
                            f"got array of shape {s.shape}")
    beta = min(shape) / max(shape)
    return float(omega(beta) * np.median(s))


def jacobian_singular_values(
    f: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, *, chunk_size: int | None = None
) -> torch.Tensor:
    """Singular values (descending, float64) of the Jacobian of ``f: (B, D) -> (B, M)``.

    ``z`` of shape ``(D,)`` gives ``(min(M, D),)``; ``(B, D)`` gives ``(B, min(M, D))``.
    """
    J = jacobian(f, z, chunk_size=chunk_size).double()
    return torch.linalg.svdvals(J)


def _rank(s: torch.Tensor, shape: tuple[int, ...]) -> int:
    # shape: the last two sizes of a Jacobian, (M, D)
    return int((s > optimal_hard_threshold(s, cast("tuple[int, int]", shape))).sum())


def local_dimension(f: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, *, chunk_size: int | None = None):
    """Local dimension of ``f`` at ``z``: an int for ``(D,)``, a ``(B,)`` int64 tensor for ``(B, D)``."""
    J = jacobian(f, z, chunk_size=chunk_size).double()
    s = torch.linalg.svdvals(J)
    shape = tuple(J.shape[-2:])
    if z.ndim == 1:
        return _rank(s, shape)
    return torch.tensor([_rank(si, shape) for si in s], dtype=torch.int64)


def _resolve_map(G, layer: str | None) -> Callable[[torch.Tensor], torch.Tensor]:
    if hasattr(G, "layer_names") or layer is not None:
        return layer_map(G, layer)
    if callable(G):
        return G
    raise GeometryError(f"expected a Generator or a callable map, got {type(G).__name__}")


def local_dimension_table(G, zs: torch.Tensor, layers: Sequence[str | None], *, chunk_size: int | None = None) -> dict:
    """Local dimension of each layer map at each code of ``zs`` (N, D).

    Returns ``{layer: {"dims": (N,) ints, "mean", "median", "min", "max", "shape": (M, D)}}``;
    the layer ``None`` stands for the output image.
    """
    if zs.ndim != 2:
        raise GeometryError(f"expected zs of shape (N, D), got {tuple(zs.shape)}")
    named = [layer for layer in layers if layer is not None]
    jacs: dict[str | None, torch.Tensor] = (
        dict(zip(named, jacobian(layers_map(G, named), zs, chunk_size=chunk_size))) if named else {}
    )
    if None in layers:
        jacs[None] = jacobian(layer_map(G, None), zs, chunk_size=chunk_size)
    table = {}
    for layer in layers:
        J = jacs[layer].double()
        s = torch.linalg.svdvals(J)
        shape = tuple(J.shape[-2:])
        dims = np.array([_rank(si, shape) for si in s])
        table[layer] = {
            "dims": dims.tolist(),
            "mean": float(dims.mean()),
            "median": float(np.median(dims)),
            "min": int(dims.min()),
            "max": int(dims.max()),
            "shape": list(shape),
        }
    return table


def distortion(
    G,
    zs: torch.Tensor,
    layer: str | None = None,
    *,
    k: int | None = None,
    max_pairs: int | None = None,
    seed: int = 0,
    chunk_size: int | None = None,
) -> dict:
    """Distortion: how inconsistent the tangent subspaces of a map are across latent space.

    Definition used here (a normalised form of Choi et al.'s Grassmannian statistic):

    1. ``k`` = the median local dimension of the map over ``zs`` (rounded, at least 1)
       unless given.
    2. At each code ``z_i`` the tangent subspace ``T_i`` is the span of the top-k
       right singular vectors of the Jacobian (a k-dim subspace of the latent space).
    3. For a pair, the principal angles ``theta_1..theta_k`` in ``[0, pi/2]``
       (``scipy.linalg.subspace_angles``) give the geodesic Grassmann distance
       ``||theta||_2``, normalised by its maximum ``sqrt(k) pi / 2``:
       ``d_ij = ||theta||_2 / (sqrt(k) pi / 2)`` in ``[0, 1]``.
    4. Distortion = the mean of ``d_ij`` over all pairs ``i < j`` (or ``max_pairs``
       pairs drawn with ``seed``).

    0 means one subspace everywhere (a linear map); when ``k`` equals the latent size
    every subspace is the whole space and the value is 0 by construction.

    ``G`` is a Generator with ``layer`` naming one of its layers (``None``: the image),
    or any callable ``(B, D) -> (B, M)``. Returns ``{"distortion", "sem", "k",
    "local_dims", "n_pairs"}``.
    """
    if not isinstance(zs, torch.Tensor) or zs.ndim != 2 or zs.shape[0] < 2:
        got = tuple(zs.shape) if isinstance(zs, torch.Tensor) else type(zs).__name__
        raise GeometryError(f"distortion needs zs of shape (N >= 2, D), got {got}")
    f = _resolve_map(G, layer)
    J = jacobian(f, zs, chunk_size=chunk_size).double()
    U, s, Vh = torch.linalg.svd(J, full_matrices=False)
    shape = tuple(J.shape[-2:])
    dims = [_rank(si, shape) for si in s]
    if k is None:
        k = max(1, int(round(float(np.median(dims)))))
    if not 1 <= k <= Vh.shape[-2]:
        raise GeometryError(f"k must be in [1, {Vh.shape[-2]}], got {k}")
    bases = Vh[:, :k, :].transpose(-1, -2).numpy()
    n = zs.shape[0]
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    if max_pairs is not None and max_pairs < len(pairs):
        rng = np.random.default_rng(seed)
        pairs = [pairs[i] for i in rng.choice(len(pairs), size=max_pairs, replace=False)]
    norm = math.sqrt(k) * math.pi / 2
    d = np.array([np.linalg.norm(linalg.subspace_angles(bases[i], bases[j])) / norm for i, j in pairs])
    sem = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else float("nan")
    return {"distortion": float(d.mean()), "sem": sem, "k": int(k), "local_dims": dims, "n_pairs": len(pairs)}
