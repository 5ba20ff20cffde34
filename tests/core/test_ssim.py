"""SSIM's value against a direct reference, and the metric of scalar distances (H = J_G^T A J_G)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geometry_core.distances import ScalarDistance, load_distance
from geometry_core.distances.ssim import C1, C2, SSIMDistance
from geometry_core.errors import GeometryError
from geometry_core.metric import hvp, metric_tensor
from geometry_core.spectrum import eigen

# conftest's generators make 3x4x4 images: a 3-tap window leaves a 2x2 SSIM map.
SMALL = {"window": 3, "sigma": 0.8}


def rel(a, b):
    return float((a - b).norm() / b.norm())


def reference_ssim(a: np.ndarray, b: np.ndarray, window: int = 11, sigma: float = 1.5) -> float:
    """SSIM of two (C, H, W) images, one window position at a time, centred moments (float64)."""
    k = np.arange(window) - (window - 1) / 2
    g = np.exp(-(k**2) / (2 * sigma**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    vals = []
    C, H, W = a.shape
    for c in range(C):
        for i in range(H - window + 1):
            for j in range(W - window + 1):
                pa, pb = a[c, i : i + window, j : j + window], b[c, i : i + window, j : j + window]
                ma, mb = (w * pa).sum(), (w * pb).sum()
                va, vb = (w * (pa - ma) ** 2).sum(), (w * (pb - mb) ** 2).sum()
                cov = (w * (pa - ma) * (pb - mb)).sum()
                vals.append((2 * ma * mb + C1) * (2 * cov + C2) / ((ma**2 + mb**2 + C1) * (va + vb + C2)))
    return float(np.mean(vals))


# --- the value ----------------------------------------------------------------------------


def test_constants_are_those_of_data_range_2():
    assert C1 == pytest.approx((0.01 * 2) ** 2, rel=1e-15) and C2 == pytest.approx((0.03 * 2) ** 2, rel=1e-15)


@pytest.mark.parametrize(("window", "sigma"), [(11, 1.5), (3, 0.8)])
def test_value_matches_direct_reference(window, sigma):
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 16, 14, generator=gen, dtype=torch.float64) * 2 - 1
    # One related pair (noisy copy, SSIM near 1) and one unrelated pair (SSIM near 0).
    x = torch.stack([(x0[0] + 0.2 * torch.randn(3, 16, 14, generator=gen, dtype=torch.float64)).clamp(-1, 1),
                     torch.rand(3, 16, 14, generator=gen, dtype=torch.float64) * 2 - 1])
    d = SSIMDistance(window=window, sigma=sigma).double()
    got = d.ssim(x0, x)
    for b in range(2):
        ref = reference_ssim(x0[b].numpy(), x[b].numpy(), window, sigma)
        # float64 on both sides; E[x^2] - mu^2 against centred moments: round-off ~1e-15.
        assert abs(float(got[b]) - ref) < 1e-12
    torch.testing.assert_close(d(x0, x), 1 - got, rtol=0, atol=0)


def test_constant_images_give_the_luminance_term():
    # Flat images have no variance: SSIM = (2ab + C1) / (a^2 + b^2 + C1) exactly (Wang et al. 2004, eq. 6).
    a, b = 0.3, -0.5
    d = SSIMDistance().double()
    got = d.ssim(torch.full((1, 3, 12, 12), a, dtype=torch.float64), torch.full((1, 3, 12, 12), b, dtype=torch.float64))
    assert float(got) == pytest.approx((2 * a * b + C1) / (a * a + b * b + C1), rel=1e-12)


def test_identity_symmetry_and_broadcast():
    gen = torch.Generator().manual_seed(1)
    x0, x = (torch.rand(3, 3, 11, 11, generator=gen) * 2 - 1 for _ in range(2))
    d = load_distance("ssim")
    assert d.has_phi is False and isinstance(d, ScalarDistance)
    assert float(d(x0, x0).abs().max()) < 1e-6  # float32 round-off of 1 - 1
    torch.testing.assert_close(d(x0, x), d(x, x0), rtol=1e-6, atol=1e-6)
    assert (d(x0, x) > 0).all()
    torch.testing.assert_close(d(x0[:1], x), d(x0[:1].expand(3, -1, -1, -1), x))


@pytest.mark.parametrize(
    ("kw", "x0", "x", "match"),
    [
        ({"window": 4}, None, None, "positive odd int"),
        ({"sigma": 0}, None, None, "sigma must be a positive number"),
        ({}, (1, 3, 8, 8), (1, 3, 8, 8), r"at least 11x11 \(the window\), got \(8, 8\)"),
        ({}, (2, 3, 12, 12), (3, 3, 12, 12), "same shape"),
        ({}, (3, 12, 12), (3, 12, 12), r"\(B, C, H, W\)"),
    ],
)
def test_bad_input(kw, x0, x, match):
    with pytest.raises(GeometryError, match=match):
        d = load_distance("ssim", **kw)
        d(torch.zeros(x0), torch.zeros(x))


def test_unknown_option_and_no_phi(nonlinear_generator):
    with pytest.raises(GeometryError, match="unknown option"):
        load_distance("ssim", resize=64)
    d = load_distance("ssim", **SMALL)
    with pytest.raises(GeometryError, match="no representation phi"):
        d.represent(nonlinear_generator, torch.zeros(1, 5, dtype=torch.float64))


# --- the metric: exact = bp = Lanczos = dense autograd Hessian ------------------------------


@pytest.fixture
def ssim_case(nonlinear_generator):
    d = load_distance("ssim", **SMALL).double()
    z = nonlinear_generator.sample(2, seed=3, dtype=torch.float64)
    return nonlinear_generator, d, z, metric_tensor(nonlinear_generator, d, z)


def test_exact_matches_dense_autograd_hessian(ssim_case):
    G, d, z, H = ssim_case
    for b in range(2):
        ref = torch.autograd.functional.hessian(lambda zz: d(G(z[b : b + 1]), G(zz.unsqueeze(0))).sum(), z[b])
        # float64; the gradient term of the full Hessian vanishes at z0 (d is minimal there).
        torch.testing.assert_close(H[b], ref, rtol=1e-8, atol=1e-12)


def test_exact_matches_bp_and_chunking(ssim_case):
    G, d, z, H = ssim_case
    # Same float64 quantity by forward-over-reverse and by double backward: round-off only.
    assert rel(metric_tensor(G, d, z, method="bp"), H) < 1e-10
    assert rel(metric_tensor(G, d, z, chunk_size=2), H) < 1e-12


@pytest.mark.parametrize("window", [3, 11])
def test_closed_form_pullback_equals_hvps_of_forward(window):
    """``SSIMDistance.pullback`` (second-order expansion) against HVPs through ``forward``."""
    from geometry_core.metric import _scalar_from_jacobian

    class ByHVPs(SSIMDistance):
        def pullback(self, x0, J):
            return None

    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(2, 3, 13, 17, generator=g, dtype=torch.float64) * 2 - 1
    J = torch.randn(6, 2, 3 * 13 * 17, generator=g, dtype=torch.float64)
    closed = SSIMDistance(window=window).pullback(x0, J)
    ref = _scalar_from_jacobian(ByHVPs(window=window), x0, J, chunk_size=4)
    assert closed.shape == (2, 6, 6)
    # Two float64 evaluations of the same bilinear form: round-off only (measured ~6e-16).
    assert rel(closed, ref) < 1e-12


@pytest.mark.parametrize("method", ["lanczos-backward", "lanczos-forward"])
def test_lanczos_is_best_rank_topk_of_exact(ssim_case, method):
    G, d, z, H = ssim_case
    vals, vecs = eigen(H)
    best = vecs[..., :4] @ torch.diag_embed(vals[..., :4]) @ vecs[..., :4].transpose(-1, -2)
    # D = 5 and topk = D - 1 = 4 (ARPACK needs topk < D); the bar set for every method is 1e-4
    # (measured: backward ~1e-13, forward ~1e-8: central differences in float64).
    assert rel(metric_tensor(G, d, z, method=method, topk=4), best) < 1e-4


def test_hvp_is_H_times_v(ssim_case):
    G, d, z, H = ssim_case
    v = torch.randn(2, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert rel(hvp(G, d, z, v), torch.einsum("bij,bj->bi", H, v)) < 1e-10


def test_dcgan_default_window_exact_matches_bp(dcgan):
    d = load_distance("ssim")
    z = dcgan.sample(1, seed=5)[0]
    H, Hbp = metric_tensor(dcgan, d, z), metric_tensor(dcgan, d, z, method="bp")
    assert H.shape == (100, 100) and dcgan.dtype == torch.float32
    # float32 on both sides (forward-over-reverse vs double backward): measured ~1e-7.
    assert rel(H.double(), Hbp.double()) < 1e-4


# --- analytic: linear G, quadratic d, H = 2 A^T Q A ------------------------------------------


class Quadratic(ScalarDistance):
    """``d(x0, x) = (x - x0)^T Q (x - x0)`` over flattened images, Q symmetric positive definite."""

    name = "quadratic"

    def __init__(self, Q: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("Q", Q)

    def forward(self, x0, x):
        r = (x - x0).flatten(1)
        return torch.einsum("bm,mn,bn->b", r, self.Q, r)


@pytest.mark.parametrize("method", ["exact", "bp"])
def test_linear_generator_quadratic_distance_gives_2AtQA(linear_generator, method):
    A = linear_generator.module[0].weight.detach()
    R = torch.randn(48, 48, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    Q = R @ R.T / 48 + torch.eye(48, dtype=torch.float64)
    z = linear_generator.sample(3, seed=0, dtype=torch.float64)
    H = metric_tensor(linear_generator, Quadratic(Q), z, method=method)
    # Exact in exact arithmetic: round-off of 48-term sums in float64.
    torch.testing.assert_close(H, (2 * A.T @ Q @ A).expand(3, 6, 6), rtol=1e-12, atol=1e-13)


def test_lanczos_quadratic_rank_deficient_is_exact(make_linear_generator):
    # A of rank D - 1 = 5, so topk = 5 reconstructs the whole metric 2 A^T Q A.
    gen = torch.Generator().manual_seed(3)
    A = torch.randn(48, 5, generator=gen, dtype=torch.float64)
    A = A @ torch.randn(5, 6, generator=gen, dtype=torch.float64) / 7
    G = make_linear_generator(A, torch.zeros(48, dtype=torch.float64))
    Q = torch.diag(torch.linspace(0.5, 2.0, 48, dtype=torch.float64))
    z = G.sample(1, seed=1, dtype=torch.float64)[0]
    H = metric_tensor(G, Quadratic(Q), z, method="lanczos-backward", topk=5)
    assert rel(H, 2 * A.T @ Q @ A) < 1e-8
    assert math.isclose(float(Quadratic(Q).latent_distance(G, z.unsqueeze(0), z.unsqueeze(0))), 0.0, abs_tol=0)


class _SquareNoVmap(torch.autograd.Function):
    """``x * x`` with forward and backward rules but no vmap rule, as some custom ops have."""

    generate_vmap_rule = False

    @staticmethod
    def forward(x):
        return x * x

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.save_for_forward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        return 2 * ctx.saved_tensors[0] * g

    @staticmethod
    def jvp(ctx, t):
        return 2 * ctx.saved_tensors[0] * t


class _SquaredNoVmap(ScalarDistance):
    name = "squared-no-vmap"

    def forward(self, x0, x):
        return _SquareNoVmap.apply((x - x0).flatten(1)).sum(-1)


def test_distance_without_vmap_rule_uses_the_repeated_batch(linear_generator):
    A = linear_generator.module[0].weight.detach()
    z = linear_generator.sample(2, seed=0, dtype=torch.float64)
    x = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="vmap"):  # the premise: vmap refuses this distance
        torch.func.vmap(lambda t: torch.func.jvp(_SquareNoVmap.apply, (x,), (t,))[1])(x.unsqueeze(0))
    H = metric_tensor(linear_generator, _SquaredNoVmap(), z, chunk_size=4)
    # d = ||x - x0||^2 gives 2 A^T A; float64 round-off only.
    torch.testing.assert_close(H, (2 * A.T @ A).expand(2, 6, 6), rtol=1e-12, atol=1e-13)
