"""Homogeneity of the metric across points, against an independent numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geometry_core.errors import GeometryError
from geometry_core.homogeneity import (
    global_metric,
    homogeneity,
    homogeneity_pairs,
    homogeneity_summary,
    homogeneity_tile,
)
from geometry_core.spectrum import eigen


def random_rotations(n: int, d: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, d, d, generator=gen, dtype=torch.float64))
    return Q


def stack(Q: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
    return Q @ torch.diag_embed(vals.expand(Q.shape[0], -1)) @ Q.transpose(-1, -2)


def reference_pair(U_i: np.ndarray, H_j: np.ndarray, l_j: np.ndarray):
    """Independent numpy version of one entry: (corr_log, corr_lin, masked)."""
    v = np.array([U_i[:, k] @ H_j @ U_i[:, k] for k in range(len(l_j))])
    ok = (v > 0) & (l_j > 0)
    return np.corrcoef(np.log10(v[ok]), np.log10(l_j[ok]))[0, 1], np.corrcoef(v, l_j)[0, 1], int((~ok).sum())


def test_identical_metrics_correlate_perfectly():
    vals = 10.0 ** -torch.linspace(0, 4, 8, dtype=torch.float64)
    H = stack(random_rotations(1, 8, 0).expand(4, 8, 8), vals)
    corr_log, corr_lin = homogeneity(H)
    off = ~torch.eye(4, dtype=torch.bool)
    assert bool(torch.isnan(corr_log.diagonal()).all() and torch.isnan(corr_lin.diagonal()).all())
    # v_k = l_k exactly up to eigh round-off (~1e-15 relative).
    torch.testing.assert_close(corr_log[off], torch.ones(12, dtype=torch.float64), rtol=0, atol=1e-10)
    torch.testing.assert_close(corr_lin[off], torch.ones(12, dtype=torch.float64), rtol=0, atol=1e-10)


def test_randomly_rotated_metrics_do_not_correlate():
    # Same spectrum, independent random eigenbases: u_ik is a random direction for H_j,
    # so v_k fluctuates around tr(H_j)/D regardless of k. Each pair's correlation has
    # std ~ 1/sqrt(D) ~ 0.14; the mean over 380 pairs is far inside 0.1.
    vals = 10.0 ** -torch.linspace(0, 6, 50, dtype=torch.float64)
    corr_log, corr_lin = homogeneity(stack(random_rotations(20, 50, 1), vals))
    assert abs(homogeneity_summary(corr_log)[0]) < 0.1
    assert abs(homogeneity_summary(corr_lin)[0]) < 0.1


def test_matches_numpy_reference():
    # Distinct eigenvalues, so eigenvectors are unique up to sign (which v_k ignores).
    vals = 10.0 ** -torch.linspace(0, 5, 9, dtype=torch.float64)
    H = stack(random_rotations(4, 9, 5), vals) + 0.01 * stack(random_rotations(4, 9, 6), vals)
    corr_log, corr_lin = homogeneity(H)
    for i, j in [(0, 1), (3, 2), (2, 0)]:
        l_i, U_i = np.linalg.eigh(H[i].numpy())
        l_j = np.linalg.eigh(H[j].numpy())[0][::-1]
        ref_log, ref_lin, _ = reference_pair(U_i[:, ::-1], H[j].numpy(), l_j)
        # Two float64 eigensolvers on well-separated spectra: agreement to ~1e-12.
        assert abs(float(corr_log[i, j]) - ref_log) < 1e-9
        assert abs(float(corr_lin[i, j]) - ref_lin) < 1e-9


def test_masked_entries_counted_and_left_out():
    # Rank 7 of 10, exact spectrum passed in: each pair has 3 zero l_j entries, while
    # v_k = u_ik^T H_j u_ik > 0 for random rotations (H_j's null space is met with probability 0).
    vals = torch.cat([10.0 ** -torch.linspace(0, 3, 7, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)])
    Q = random_rotations(5, 10, 2)
    H = stack(Q, vals)
    corr_log, corr_lin, masked = homogeneity(H, eigvals=vals.expand(5, 10), eigvecs=Q, return_masked=True)
    off = ~torch.eye(5, dtype=torch.bool)
    assert masked[off].tolist() == [3] * 20 and masked.diagonal().tolist() == [0] * 5
    assert bool(torch.isfinite(corr_log[off]).all())
    for i, j in [(0, 1), (4, 3)]:
        ref_log, ref_lin, ref_masked = reference_pair(Q[i].numpy(), H[j].numpy(), vals.numpy())
        assert ref_masked == 3
        assert abs(float(corr_log[i, j]) - ref_log) < 1e-10
        assert abs(float(corr_lin[i, j]) - ref_lin) < 1e-10


def test_tiles_assemble_to_the_full_matrix():
    vals = 10.0 ** -torch.linspace(0, 3, 6, dtype=torch.float64)
    H = stack(random_rotations(7, 6, 3), vals)
    full = homogeneity(H, block=7)
    tiled = homogeneity(H, block=3)
    for a, b in zip(full, tiled):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14, equal_nan=True)
    lam, U = eigen(H)
    log_t, lin_t, _ = homogeneity_tile(U[2:5], H[4:7], lam[4:7], offsets=(2, 4))
    torch.testing.assert_close(log_t, full[0][2:5, 4:7], rtol=0, atol=1e-14, equal_nan=True)
    assert bool(torch.isnan(lin_t[2, 0]))  # global entry (4, 4)


# pair_bytes: one product for the blocks / one per pair (overlaps) or one row block per code (packed).
# kron_max_d: 6 takes the packed outer products at this D, 0 the overlap products U_aᵀ U_b.
@pytest.mark.parametrize("pair_bytes", [2**22, 8 * 6 * 6])
@pytest.mark.parametrize("kron_max_d", [6, 0])
def test_pairs_give_both_directions_from_one_product(monkeypatch, pair_bytes, kron_max_d):
    import sys

    monkeypatch.setattr(sys.modules["geometry_core.homogeneity"], "_PAIR_BYTES", pair_bytes)
    monkeypatch.setattr(sys.modules["geometry_core.homogeneity"], "_KRON_MAX_D", kron_max_d)
    # Rank 5 of 6 stored with an exact zero eigenvalue, so every pair masks >= 1 entry.
    vals = torch.tensor([1.0, 0.2, 3e-2, 1e-3, 1e-4, 0.0], dtype=torch.float64)
    Q = random_rotations(9, 6, 7)
    H = stack(Q, vals)
    lam = vals.expand(9, 6).contiguous()
    full_log, full_lin, full_m = homogeneity(H, eigvals=lam, eigvecs=Q, return_masked=True)
    # Different sums, same value: v = sum_m M_km^2 l_m against u^T H u, float64 round-off on entries
    # of order 1e-4 (random bases spread every v over the whole spectrum) moves a correlation << 1e-12.
    tol = {"rtol": 0, "atol": 1e-12, "equal_nan": True}
    ab, ba = homogeneity_pairs(Q[:4], lam[:4], Q[4:], lam[4:])
    for k, full in enumerate((full_log, full_lin)):
        torch.testing.assert_close(ab[k], full[:4, 4:], **tol)
        torch.testing.assert_close(ba[k], full[4:, :4], **tol)
    assert torch.equal(ab[2], full_m[:4, 4:]) and torch.equal(ba[2], full_m[4:, :4]) and bool((ab[2] >= 1).all())
    # One block with itself: each pair once, a < b in the first result and a > b in the second.
    ab, ba = homogeneity_pairs(Q[2:7], lam[2:7], Q[2:7], lam[2:7], same=True)
    upper = torch.ones(5, 5, dtype=torch.bool).triu(1)
    for k, full in enumerate((full_log, full_lin)):
        torch.testing.assert_close(torch.where(upper, ab[k], ba[k]), full[2:7, 2:7], **tol)
        assert bool(ab[k][~upper].isnan().all() and ba[k][~upper.T].isnan().all())
    assert torch.equal(torch.where(upper, ab[2], ba[2]), full_m[2:7, 2:7].fill_diagonal_(0))
    # corr_vals: the eigenvalues correlated with may differ from those giving H (a hessian-only run).
    other = lam * torch.linspace(1, 2, 6, dtype=torch.float64)
    ab, _ = homogeneity_pairs(Q[:4], lam[:4], Q[4:], lam[4:], corr_vals_b=other[4:])
    want = homogeneity_tile(Q[:4], H[4:], other[4:])
    torch.testing.assert_close(ab[1], want[1], **tol)
    with pytest.raises(GeometryError, match="homogeneity_pairs"):
        homogeneity_pairs(Q[:4], lam[:3], Q[4:], lam[4:])


def test_summary_and_global_metric():
    nan = float("nan")
    corr = torch.tensor([[nan, 0.2, 0.4], [0.6, nan, nan], [0.8, 1.0, 5.0]], dtype=torch.float64)
    mean, std = homogeneity_summary(corr)
    # Off-diagonal finite entries: 0.2, 0.4, 0.6, 0.8, 1.0 (the diagonal 5.0 is ignored).
    assert abs(mean - 0.6) < 1e-12 and abs(std - float(np.std([0.2, 0.4, 0.6, 0.8, 1.0], ddof=1))) < 1e-12
    H = stack(random_rotations(3, 4, 4), torch.tensor([4.0, 2.0, 1.0, 0.5], dtype=torch.float64))
    H_mean, lam, U = global_metric(H)
    torch.testing.assert_close(H_mean, H.mean(0))
    torch.testing.assert_close(U @ torch.diag(lam) @ U.T, H_mean, rtol=0, atol=1e-13)


def test_bad_stacks_raise():
    with pytest.raises(GeometryError, match="N >= 2"):
        homogeneity(torch.eye(3, dtype=torch.float64).unsqueeze(0))
    with pytest.raises(GeometryError, match="square"):
        homogeneity(torch.zeros(3, 2, 4))
    bad = torch.eye(3, dtype=torch.float64).repeat(2, 1, 1)
    bad[1, 0, 2] = 1.0
    with pytest.raises(GeometryError, match="symmetric"):
        homogeneity(bad)
    with pytest.raises(GeometryError, match="eigvals"):
        homogeneity(torch.eye(3, dtype=torch.float64).repeat(2, 1, 1),
                    eigvals=torch.ones(2, 2), eigvecs=torch.ones(2, 3, 3))
