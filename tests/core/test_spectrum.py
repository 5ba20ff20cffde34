"""Eigen-decomposition conventions, anisotropy on known spectra, null space, validation."""

from __future__ import annotations

import pytest
import torch

from geometry_core.errors import GeometryError
from geometry_core.spectrum import anisotropy, eigen, null_space


def rotated(vals: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``Q diag(vals) Q^T`` with a random orthogonal ``Q`` (float64), and ``Q``."""
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(len(vals), len(vals), generator=gen, dtype=torch.float64))
    return Q @ torch.diag(vals) @ Q.T, Q


def test_eigen_order_signs_and_reconstruction():
    vals = torch.tensor([0.5, 3.0, 1e-3, 2.0, 0.0], dtype=torch.float64)
    H, _ = rotated(vals, 0)
    lam, U = eigen(H)
    torch.testing.assert_close(lam, vals.sort(descending=True).values, rtol=0, atol=1e-13)
    # Eigenvectors are columns: H u_k = l_k u_k, and the largest |entry| is positive.
    torch.testing.assert_close(H @ U, U * lam, rtol=0, atol=1e-13)
    peak = U.gather(0, U.abs().argmax(dim=0, keepdim=True))
    assert bool((peak > 0).all())


def test_eigen_batched_equals_single():
    H = torch.stack([rotated(torch.arange(1.0, 6.0, dtype=torch.float64), s)[0] for s in range(3)])
    lam, U = eigen(H)
    for b in range(3):
        lb, Ub = eigen(H[b])
        torch.testing.assert_close(lam[b], lb, rtol=0, atol=1e-13)
        torch.testing.assert_close(U[b], Ub, rtol=0, atol=1e-12)


def test_anisotropy_known_spectrum():
    # l_k = 10^-k, k = 0..9: the top m reach 1 - 10^-m of the total (up to 1e-10),
    # so fraction 1 - 10^-m needs exactly m eigenvalues (margin 1e-10 >> float64 round-off).
    lam = 10.0 ** -torch.arange(10, dtype=torch.float64)
    assert anisotropy(lam) == {0.99: 2, 0.999: 3, 0.9999: 4, 0.99999: 5}
    # Unsorted input and negative round-off entries (clipped to 0) change nothing.
    noisy = torch.cat([lam.flip(0), torch.tensor([-1e-12, -3e-13], dtype=torch.float64)])
    assert anisotropy(noisy) == {0.99: 2, 0.999: 3, 0.9999: 4, 0.99999: 5}


def test_anisotropy_batched_and_flat():
    lam = torch.stack([10.0 ** -torch.arange(10, dtype=torch.float64), torch.ones(10, dtype=torch.float64)])
    out = anisotropy(lam, fractions=(0.5, 0.99))
    # A flat spectrum of 10 needs ceil(f * 10) eigenvalues.
    assert out[0.5].tolist() == [1, 5] and out[0.99].tolist() == [2, 10]
    assert anisotropy(torch.zeros(4)) == {0.99: 0, 0.999: 0, 0.9999: 0, 0.99999: 0}


def test_null_space_spans_zero_eigenvalues():
    vals = torch.tensor([5.0, 3.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    H, Q = rotated(vals, 1)
    N = null_space(H)
    assert N.shape == (5, 2)
    # Compare projectors: the basis is unique only up to rotation within the space.
    torch.testing.assert_close(N @ N.T, Q[:, 3:] @ Q[:, 3:].T, rtol=0, atol=1e-12)
    batched = null_space(torch.stack([H, torch.eye(5, dtype=torch.float64)]))
    assert [b.shape[1] for b in batched] == [2, 0]


@pytest.mark.parametrize(
    ("H", "match"),
    [
        (torch.zeros(3, 4), "square"),
        (torch.zeros(2, 2, 3, 3), "square"),
        (torch.tensor([[1.0, 2.0], [0.0, 1.0]]), "symmetric"),
        (torch.tensor([[1.0, float("nan")], [float("nan"), 1.0]]), "NaN"),
        (torch.eye(3, dtype=torch.int64), "floating"),
    ],
)
def test_bad_matrices_raise(H, match):
    with pytest.raises(GeometryError, match=match):
        eigen(H)


def test_asymmetry_tolerance_depends_on_dtype():
    H = torch.eye(3, dtype=torch.float64)
    H[0, 1] = 1e-6  # relative asymmetry ~6e-7: fine for float32 round-off, not float64
    eigen(H.float())
    with pytest.raises(GeometryError, match="symmetric"):
        eigen(H)


def test_anisotropy_bad_input():
    with pytest.raises(GeometryError, match="eigenvalues of shape"):
        anisotropy(torch.zeros(2, 2, 2))
    with pytest.raises(GeometryError, match="fractions"):
        anisotropy(torch.ones(3), fractions=(1.5,))
