"""Synthetic eigen-decompositions for stored-run tests: random orthonormal bases, spectra over some decades."""

from __future__ import annotations

import numpy as np

__all__ = ["random_spectra"]


def random_spectra(n: int, d: int, decades: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(eigvals (n, d) descending, eigvecs (n, d, d)): spectra over 10^0 .. 10^-decades, random bases."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, d, d)))
    lam = -np.sort(-(np.logspace(0, -decades, d) * (1 + rng.random((n, d)))), axis=1)
    return lam, q
