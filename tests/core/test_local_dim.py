"""Local dimension (Gavish–Donoho threshold) and Distortion on maps of known rank and flatness."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geometry_core.errors import GeometryError
from geometry_core.local_dim import (
    distortion,
    jacobian_singular_values,
    local_dimension,
    local_dimension_table,
    marchenko_pastur_median,
    omega,
    optimal_hard_threshold,
)


@pytest.mark.parametrize("beta", [0.02, 0.1, 0.25, 0.5, 0.75, 1.0])
def test_omega_matches_gavish_donoho_cubic(beta):
    # Their published fit 0.56b^3 - 0.95b^2 + 1.82b + 1.43 is quoted as accurate to ~0.02.
    cubic = 0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43
    assert omega(beta) == pytest.approx(cubic, abs=0.02)


def test_marchenko_pastur_median_against_sampling():
    # beta = 1: known value 0.6528 (Gavish & Donoho 2014); beta = 0.25 against eigenvalues of a
    # large Wishart matrix (n = 4000, spread of the empirical median ~ 1e-2).
    assert marchenko_pastur_median(1.0) == pytest.approx(0.6528, abs=1e-3)
    rng = np.random.default_rng(0)
    m, n = 500, 2000
    X = rng.standard_normal((m, n))
    ev = np.linalg.eigvalsh(X @ X.T / n)
    assert marchenko_pastur_median(m / n) == pytest.approx(np.median(ev), abs=0.02)
    assert omega(1.0) == pytest.approx(2.858, abs=2e-3)


def _noisy_linear_map(M, D, r, noise, seed):
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(M, r, generator=gen, dtype=torch.float64) @ torch.randn(r, D, generator=gen, dtype=torch.float64)
    A = A + noise * torch.randn(M, D, generator=gen, dtype=torch.float64)
    return A, (lambda z: z @ A.T)


@pytest.mark.parametrize("r", [1, 5, 12])
def test_rank_r_linear_map_plus_noise_has_local_dimension_r(r):
    A, f = _noisy_linear_map(200, 30, r, noise=1e-3, seed=r)
    z = torch.randn(3, 30, dtype=torch.float64)
    s = jacobian_singular_values(f, z)
    # The map is linear: its Jacobian is A at every code (float64: 1e-10).
    torch.testing.assert_close(s[0], torch.linalg.svdvals(A), atol=1e-10, rtol=1e-10)
    assert local_dimension(f, z[0]) == r
    assert local_dimension(f, z).tolist() == [r, r, r]


def test_threshold_formula_and_validation():
    s = torch.tensor([5.0, 1.0, 0.5, 0.2])
    assert optimal_hard_threshold(s, (40, 4)) == pytest.approx(omega(0.1) * 0.75)
    with pytest.raises(GeometryError, match="expected 4 singular values"):
        optimal_hard_threshold(s[:3], (40, 4))
    with pytest.raises(GeometryError, match="beta"):
        omega(1.5)


def test_linear_map_has_zero_distortion():
    _, f = _noisy_linear_map(50, 10, 4, noise=1e-3, seed=0)
    zs = torch.randn(6, 10, dtype=torch.float64)
    res = distortion(f, zs)
    assert res["k"] == 4 and res["n_pairs"] == 15
    # Same Jacobian everywhere: principal angles vanish up to float64 SVD rounding (~1e-7 rad at worst).
    assert res["distortion"] < 1e-6


def _curved(z):
    # R^6 -> R^2 with strongly varying gradient directions: tangent subspaces rotate with z.
    a = torch.sin(3 * z[:, 0] * z[:, 1] + z[:, 2])
    b = torch.cos(2 * z[:, 3] * z[:, 4] - z[:, 5] * z[:, 0])
    return torch.stack([a, b], dim=1)


def test_nonlinear_map_has_positive_distortion():
    zs = torch.randn(8, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    res = distortion(_curved, zs, k=2)
    # Random 2-planes in R^6 sit at normalised distance ~0.6; a curved map is far from 0.
    assert 0.2 < res["distortion"] <= 1.0
    sub = distortion(_curved, zs, k=2, max_pairs=5, seed=0)
    assert sub["n_pairs"] == 5 and 0.0 < sub["distortion"] <= 1.0


def test_distortion_needs_two_codes():
    with pytest.raises(GeometryError, match="N >= 2"):
        distortion(_curved, torch.zeros(1, 6, dtype=torch.float64))


def test_dcgan_local_dimension_table(dcgan):
    zs = dcgan.sample(2, seed=0)
    table = local_dimension_table(dcgan, zs, ["main.2", None])
    assert set(table) == {"main.2", None}
    for row in table.values():
        assert len(row["dims"]) == 2 and all(1 <= d <= 100 for d in row["dims"])
    assert table["main.2"]["shape"] == [8192, 100] and table[None]["shape"] == [12288, 100]
    # Batch vs single code through the same Jacobian path.
    single = local_dimension_table(dcgan, zs[:1], ["main.2"])
    assert single["main.2"]["dims"][0] == table["main.2"]["dims"][0]
    assert math.isfinite(table[None]["mean"])
