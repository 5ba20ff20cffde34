"""Layer geometry: layer Jacobians and metrics against analytic cases, the amplification matrix."""

from __future__ import annotations

import pytest
import torch

from geometry_core.errors import GeometryError
from geometry_core.layers import amplification, layer_jacobian, layer_metrics, plot_amplification


def test_first_layer_jacobian_is_the_weight(dcgan):
    # main.0 is a bias-free ConvTranspose2d on a 1x1 input: linear, J = W.reshape(D, -1).T exactly.
    z = dcgan.sample(1, seed=3)[0]
    J = layer_jacobian(dcgan, "main.0", z)
    W = dcgan.layer("main.0").weight
    assert J.shape == (512 * 4 * 4, 100)
    # 1e-6: one float32 multiply by a unit tangent, no accumulation.
    torch.testing.assert_close(J, W.reshape(100, -1).T, atol=1e-6, rtol=0)


def test_layer_metric_of_linear_layer_is_analytic(make_linear_generator):
    # G(z) = A z + b: layer "0" is the linear map, H = (2 / M) A^T A exactly (mean-squared layer distance).
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(48, 6, generator=gen, dtype=torch.float64)
    G = make_linear_generator(A, torch.zeros(48, dtype=torch.float64))
    z = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    H = layer_metrics(G, z)["0"]
    assert H.shape == (3, 6, 6)
    expected = (2.0 / 48) * A.T @ A
    for Hi in H:  # float64 throughout: 1e-12 covers rounding
        torch.testing.assert_close(Hi, expected, atol=1e-12, rtol=1e-12)


def test_layer_metric_matches_dense_autograd_reference(nonlinear_generator):
    # Independent reference: reverse-mode jacobian of the hooked activations, float64.
    G = nonlinear_generator
    z = G.sample(1, seed=5, dtype=torch.float64)[0]
    H = layer_metrics(G, z, layers=["1", "3"])

    def act(zz, idx):
        return G.module[: idx + 1](zz.unsqueeze(0))[0]

    for name, idx in (("1", 1), ("3", 3)):
        J = torch.autograd.functional.jacobian(lambda zz: act(zz, idx), z)
        ref = 2.0 / J.shape[0] * J.T @ J
        torch.testing.assert_close(H[name], ref, atol=1e-12, rtol=1e-10)


def test_batch_of_one_equals_batch_of_n(nonlinear_generator):
    z = nonlinear_generator.sample(3, seed=1, dtype=torch.float64)
    Hb = layer_metrics(nonlinear_generator, z)
    for i in range(3):
        Hi = layer_metrics(nonlinear_generator, z[i])
        for name in Hb:
            torch.testing.assert_close(Hb[name][i], Hi[name], atol=1e-12, rtol=1e-12)


def test_layer_metric_matches_metric_tensor_with_layer_distance(nonlinear_generator):
    # Method vs method: our forward-mode Jacobian against engineer A's metric_tensor + C's layer distance.
    z = nonlinear_generator.sample(2, seed=2, dtype=torch.float64)
    ours = layer_metrics(nonlinear_generator, z)
    theirs = layer_metrics(nonlinear_generator, z, method="bp")
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-10, rtol=1e-8)


def test_unknown_layer_is_a_clear_error(nonlinear_generator):
    with pytest.raises(GeometryError, match="unknown layer"):
        layer_metrics(nonlinear_generator, nonlinear_generator.sample(1)[0].double(), layers=["nope"])


def _frame(D, seed):
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(D, D, generator=gen, dtype=torch.float64))
    return Q


def test_amplification_analytic_cases():
    D = 12
    U = _frame(D, 0)
    la = torch.logspace(2, -3, D, dtype=torch.float64)
    lb = torch.logspace(1, -1, D, dtype=torch.float64)
    Ha = U @ torch.diag(la) @ U.T
    Hb = U @ torch.diag(lb) @ U.T  # same eigenframe, same order
    Hc = U @ torch.diag(lb.flip(0)) @ U.T  # same frame, order reversed
    amp = amplification({"a": Ha, "b": Hb, "c": Hc})
    # Self-amplification: energy equals the layer's own eigenvalues; ratio and correlation 1.
    for i, lam in enumerate((la, lb, lb)):
        torch.testing.assert_close(amp["energy"][i, i], lam, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(torch.diagonal(amp["corr_log"]), torch.ones(3, dtype=torch.float64))
    # a's eigenvectors under b's metric give exactly b's spectrum in the same order: corr 1.
    torch.testing.assert_close(amp["energy"][0, 1], lb, atol=1e-10, rtol=1e-10)
    assert amp["corr_log"][0, 1] == pytest.approx(1.0, abs=1e-12)
    # Under c's metric (reversed order) a's top eigenvector is c's smallest direction: corr -1.
    assert amp["corr_log"][0, 2] == pytest.approx(-1.0, abs=1e-12)
    assert amp["corr_lin"][0, 2] < -0.5
    # Brute force for one entry: u_ak^T H_b u_ak.
    lam_a, U_a = torch.linalg.eigh(Ha)
    u0 = U_a[:, -1]
    assert float(amp["energy"][0, 2, 0]) == pytest.approx(float(u0 @ Hc @ u0), rel=1e-10)


def test_amplification_batched_matches_single():
    D = 8
    mats = {n: torch.stack([(_frame(D, s) * torch.rand(D, dtype=torch.float64)) @ _frame(D, s).T for s in (1, 2)])
            for n in "xy"}
    mats = {n: 0.5 * (H + H.transpose(-1, -2)) for n, H in mats.items()}
    batched = amplification(mats)
    assert batched["corr_log"].shape == (2, 2, 2)
    for i in range(2):
        single = amplification({n: H[i] for n, H in mats.items()})
        torch.testing.assert_close(batched["corr_log"][i], single["corr_log"], equal_nan=True)
    torch.testing.assert_close(batched["corr_log_mean"], batched["corr_log"].nanmean(0))


def test_dcgan_layers_amplify_each_other_and_plot(dcgan, tmp_path):
    z = dcgan.sample(1, seed=0)[0]
    H = layer_metrics(dcgan, z)
    assert list(H) == dcgan.layer_names
    amp = amplification(H)
    L = len(dcgan.layer_names)
    assert amp["energy"].shape == (L, L, 100) and amp["corr_log"].shape == (L, L)
    torch.testing.assert_close(torch.diagonal(amp["corr_log"]), torch.ones(L, dtype=torch.float64), atol=1e-9, rtol=0)
    # Trained DCGAN: the eigenframes of consecutive layers line up (measured 0.99+ at seed 0).
    assert amp["corr_log"][0, 1] > 0.8
    path = plot_amplification(amp, tmp_path / "amp.png")
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_jacobian_chunked_equals_unchunked():
    from geometry_core.layers import jacobian

    gen = torch.Generator().manual_seed(0)
    A = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    z = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    f = lambda x: (torch.tanh(x @ A.T), x**2)  # noqa: E731
    whole, chunked = jacobian(f, z), jacobian(f, z, chunk_size=2)
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-14)  # same jvps, grouped differently
