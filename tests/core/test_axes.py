"""Interpretable axes: calibrated traversals, alignment of external directions, SeFa. The commands:
tests/jobs/test_axes_cmd.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geometry_core.alignment import alignment, sefa_directions
from geometry_core.axes import calibrated_steps, explore_axes, relative_errors, traverse
from geometry_core.errors import GeometryError
from geometry_core.layers import jacobian


def _reference_eigenframe(G, distance, z):
    # Independent of metric.py: H = 2 c J^T J from a forward-mode Jacobian of phi(G(z)), float64 eigh.
    J = jacobian(lambda zz: distance.represent(G, zz), z).double()
    H = 2 * distance.c * J.T @ J
    lam, U = torch.linalg.eigh(0.5 * (H + H.T))
    return lam.flip(0), U.flip(1)


def _frame(D, seed):
    Q, _ = torch.linalg.qr(torch.randn(D, D, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)))
    return Q, torch.logspace(1, -3, D, dtype=torch.float64)


def test_eigenvector_as_direction_has_power_one_and_aligns_only_to_itself():
    U, lam = _frame(40, 0)
    res = alignment(U[:, [2, 30]].T, U, lam, topk=5, n_random=500, seed=1)
    assert float(res["power"][0]) == pytest.approx(1.0, abs=1e-12)
    assert float(res["power"][1]) == pytest.approx(0.0, abs=1e-12)  # eigvec 30 is outside the top 5
    assert res["aligned_indices"] == [[2], [30]]
    torch.testing.assert_close(res["purified"][0], U[:, 2])
    assert float(res["rate"][0]) == pytest.approx(float(lam[2]), rel=1e-10)  # u^T H u = lambda
    assert math.isnan(float(res["purified_topk"][1].sum()))  # nothing in the top 5 to keep


def test_random_directions_match_random_baseline():
    D, k, n = 40, 8, 300
    U, lam = _frame(D, 2)
    dirs = torch.randn(n, D, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    res = alignment(dirs, U, lam, topk=k, n_random=2000, seed=3)
    # E[power] = k / D for a uniform unit vector; both means within 4 standard errors.
    std = res["power_random_std"]
    assert res["power_random_mean"] == pytest.approx(k / D, abs=4 * std / math.sqrt(2000))
    assert float(res["power"].mean()) == pytest.approx(k / D, abs=4 * std / math.sqrt(n))
    # 99.9th percentile threshold: about 0.1% of the random cosines exceed it (n * D draws).
    assert float(res["aligned"].double().mean()) < 0.005


def test_purified_direction_keeps_its_aligned_eigenvectors():
    U, lam = _frame(30, 4)
    gen = torch.Generator().manual_seed(0)
    noise = 0.05 * torch.randn(30, dtype=torch.float64, generator=gen)
    d = U[:, 1] + 0.8 * U[:, 4] + noise
    res = alignment(d, U, lam, topk=10, seed=0)
    assert res["aligned_indices"] == [[1, 4]]
    expected = (U[:, 1] * res["coef"][0, 1] + U[:, 4] * res["coef"][0, 4])
    torch.testing.assert_close(res["purified"][0], expected / expected.norm())


def test_alignment_validates_shapes():
    U, lam = _frame(10, 0)
    with pytest.raises(GeometryError, match=r"directions of shape \(n, 10\)"):
        alignment(torch.ones(2, 9), U, lam, topk=3)
    with pytest.raises(GeometryError, match="topk"):
        alignment(torch.ones(2, 10), U, lam, topk=11)


def test_sefa_directions_are_right_singular_vectors(make_linear_generator, dcgan):
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(48, 6, generator=gen, dtype=torch.float64)
    vals, vecs = sefa_directions(make_linear_generator(A, torch.zeros(48, dtype=torch.float64)))
    torch.testing.assert_close(vals, torch.linalg.svdvals(A) ** 2)
    torch.testing.assert_close(A.T @ A @ vecs, vecs * vals)
    vals, vecs = sefa_directions(dcgan)
    W = dcgan.layer("main.0").weight.double()
    assert vecs.shape == (100, 100)
    torch.testing.assert_close(vals, torch.linalg.svdvals(W.reshape(100, -1)) ** 2)


def test_calibrated_steps_are_exact_for_a_linear_generator(linear_generator, mse):
    # G(z) = A z + b and MSE: d is exactly quadratic, d(t v) = 1/2 lambda t^2 along an eigenvector.
    z = linear_generator.sample(1, seed=0, dtype=torch.float64)[0]
    lam, U = _reference_eigenframe(linear_generator, mse, z)
    res = explore_axes(linear_generator, mse, z, eigvals=lam, eigvecs=U, topk=3, delta=0.01, n_steps=2)
    torch.testing.assert_close(res["measured"], res["target"], atol=1e-12, rtol=1e-9)
    assert res["steps"].shape == (3, 5) and torch.all(res["steps"][:, 2] == 0)
    # Same through the default path (metric_tensor + eigen inside explore_axes).
    own = explore_axes(linear_generator, mse, z, topk=3, delta=0.01, n_steps=2, mode="linear")
    torch.testing.assert_close(own["measured"], res["target"], atol=1e-12, rtol=1e-9)


def test_calibrated_steps_on_dcgan_within_20_percent(dcgan, mse, tmp_path):
    z = dcgan.sample(1, seed=0)[0]
    lam, U = _reference_eigenframe(dcgan, mse, z)
    # ReLU kinks make d only piecewise quadratic: at delta = 1e-3 errors reach 30%, at 5e-5 the
    # worst of the top 3 (both signs, seeds 0 and 1) is 13%. Hence a small delta and one step.
    res = explore_axes(dcgan, mse, z, eigvals=lam, eigvecs=U, topk=3, delta=5e-5, n_steps=1, out_dir=tmp_path)
    err = relative_errors(res["target"].numpy(), res["measured"].numpy())
    assert np.nanmax(err) < 0.2, err
    for key in ("grid_png", "curve_png"):
        with open(res[key], "rb") as fh:
            assert fh.read(4) == b"\x89PNG"


def test_spherical_traversal_keeps_the_norm():
    z = torch.randn(20, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    v = torch.randn(2, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    steps = calibrated_steps(torch.tensor([4.0, 1.0]), delta=0.1, n_steps=3)
    codes = traverse(z, v, steps, mode="spherical")
    torch.testing.assert_close(codes.norm(dim=-1), z.norm().expand(2, 7))
    torch.testing.assert_close(codes[:, 3], z.expand(2, 20))
    # Arc length: the angle from z equals |t| / ||z||.
    cos = (codes @ z) / z.norm() ** 2
    torch.testing.assert_close(torch.arccos(cos.clamp(-1, 1)), steps.abs() / z.norm(), atol=1e-6, rtol=0)
    with pytest.raises(GeometryError, match="parallel"):
        traverse(z, z.unsqueeze(0), steps[:1], mode="spherical")


def test_calibrated_steps_refuse_non_positive_eigenvalues():
    with pytest.raises(GeometryError, match="max_step"):
        calibrated_steps(torch.tensor([1.0, 0.0]), delta=0.1, n_steps=1)
    t = calibrated_steps(torch.tensor([1.0, 0.0]), delta=0.1, n_steps=1, max_step=3.0)
    assert float(t.abs().max()) == 3.0
