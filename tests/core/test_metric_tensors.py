"""Several targets' metrics from one forward-mode pass (``metric_tensors``) against each target alone."""

from __future__ import annotations

import pytest
import torch

import geometry_core.metric as metric
from geometry_core.distances import load_distance
from geometry_core.distances.base import Distance
from geometry_core.errors import GeometryError
from geometry_core.metric import metric_tensor, metric_tensors
from tests.support.lpips_cache import seed_torchvision_cache, use_torch_home

# float32 on dcgan-faces: the shared pass runs the same float32 ops per tangent as
# metric_tensor(method="exact"); only how tangents are batched may differ (the chunk size
# follows the widest activation of the pass), which may reorder a convolution's sums. Each
# Jacobian entry then moves by a few ulp (eps = 1.2e-7), and an entry of H by the same
# relative amount of |J_i||J_j| <= max|H| (Cauchy-Schwarz, H = 2c JᵀJ): 1e-6 of max|H|
# bounds that with margin (measured: bit-identical here). For SSIM the scale is
# |J_i||A J_j|, which can exceed max|H|: on dcgan-faces the tangents are batched
# alike (one chunk either way) and the matrices are bit-identical; on StyleGAN2-256,
# where they are not, bench/multi_target.py measured 1.5e-6 of max|H|.
RTOL_MAX_F32 = 1e-6
# float64 on the small MLP: the same argument at eps = 2.2e-16.
RTOL_MAX_F64 = 1e-12


def assert_same(H, ref, rtol):
    assert H.shape == ref.shape and H.dtype == ref.dtype
    scale = ref.abs().max()
    assert scale > 0
    assert float((H - ref).abs().max()) <= rtol * float(scale)


@pytest.fixture(scope="module")
def lpips_alex(tmp_path_factory):
    """lpips-alex on a random-init trunk from the test cache (as tests/core/test_distances.py)."""
    home = tmp_path_factory.mktemp("torch_home")
    seed_torchvision_cache(home, ("alex",))
    with pytest.MonkeyPatch.context() as mp:
        use_torch_home(mp, home)
        return load_distance("lpips-alex")


def test_dcgan_every_kind_of_target_equals_its_own_metric(dcgan, lpips_alex):
    targets = {"mse": load_distance("mse"), "lpips-alex": lpips_alex, "ssim": load_distance("ssim")}
    targets |= {f"layer:{n}": load_distance(f"layer:{n}", generator=dcgan) for n in ("main.2", "main.8")}
    z = dcgan.sample(1, seed=4)
    H = metric_tensors(dcgan, targets, z)
    assert list(H) == list(targets)
    for name, d in targets.items():
        assert_same(H[name], metric_tensor(dcgan, d, z, method="exact"), RTOL_MAX_F32)


def test_one_tangent_pass_for_image_scalar_and_layer_targets(nonlinear_generator, monkeypatch):
    G = nonlinear_generator
    targets = {"mse": load_distance("mse"), "ssim": load_distance("ssim", window=3, sigma=0.8),
               "layer:1": load_distance("layer:1", generator=G), "layer:3": load_distance("layer:3", generator=G)}
    z = G.sample(3, seed=2, dtype=torch.float64)
    calls = []
    real = metric.forward_jacobian
    monkeypatch.setattr(metric, "forward_jacobian", lambda *a, **k: calls.append(1) or real(*a, **k))
    H = metric_tensors(G, targets, z)
    assert len(calls) == 1
    monkeypatch.undo()
    for name, d in targets.items():
        assert_same(H[name], metric_tensor(G, d, z), RTOL_MAX_F64)
    # Tangent chunks of 2 (of D = 5) and a single code give the same matrices.
    chunked = metric_tensors(G, targets, z, chunk_size=2)
    one = metric_tensors(G, targets, z[1])
    for name in targets:
        assert_same(chunked[name], H[name], RTOL_MAX_F64)
        assert_same(one[name], H[name][1], RTOL_MAX_F64)


def test_more_targets_do_not_split_the_pass_into_more_chunks(nonlinear_generator, monkeypatch):
    # Layer outputs are Jacobian columns, held once per tangent, not activations of the pass:
    # a budget that fits D = 5 tangents of the image alone (widest output 48 float64 per
    # code) must fit them with both layers as targets too (it split them 2, 2, 1).
    G = nonlinear_generator
    z = G.sample(2, seed=6, dtype=torch.float64)
    monkeypatch.setattr(metric, "_CPU_ACTIVATION_BYTES", 2 * 5 * 48 * 8 * metric._LIVE_COPIES)
    calls = []
    real = metric._jvp_chunk
    monkeypatch.setattr(metric, "_jvp_chunk", lambda f, z, t, caller: calls.append(t.shape[0]) or real(f, z, t, caller))
    targets = {"mse": load_distance("mse"), "layer:1": load_distance("layer:1", generator=G),
               "layer:3": load_distance("layer:3", generator=G)}
    H = metric_tensors(G, targets, z)
    assert calls == [5]
    for name, d in targets.items():
        assert_same(H[name], metric_tensor(G, d, z), RTOL_MAX_F64)


def test_layers_alone_stop_the_pass_and_match(nonlinear_generator):
    G = nonlinear_generator
    z = G.sample(2, seed=3, dtype=torch.float64)
    d = load_distance("layer:1", generator=G)
    assert_same(metric_tensors(G, {"a": d}, z)["a"], metric_tensor(G, d, z), RTOL_MAX_F64)


class SquaredImage(Distance):
    """A representation of its own (not phi of the image): computed apart from the shared pass."""

    name = "squared"

    def represent(self, G, z):
        return G(z).flatten(1).pow(2)


def test_a_distance_with_its_own_representation_is_computed_alone(nonlinear_generator):
    G = nonlinear_generator
    z = G.sample(2, seed=5, dtype=torch.float64)
    targets = {"sq": SquaredImage(), "mse": load_distance("mse")}
    H = metric_tensors(G, targets, z)
    for name, d in targets.items():
        assert_same(H[name], metric_tensor(G, d, z), RTOL_MAX_F64)


def test_bad_arguments_are_one_line(nonlinear_generator):
    z = nonlinear_generator.sample(1, seed=0, dtype=torch.float64)
    with pytest.raises(GeometryError, match="non-empty"):
        metric_tensors(nonlinear_generator, {}, z)
    with pytest.raises(GeometryError, match="chunk_size"):
        metric_tensors(nonlinear_generator, {"mse": load_distance("mse")}, z, chunk_size=0)
