"""NVIDIA StyleGAN2-ADA pickles: read safely, mapped to the built-in StyleGAN2.

The pickles are written here in NVIDIA's layout: stand-in classes in fake
``torch_utils.persistence`` / ``dnnlib.util`` modules make the pickle reference
the same globals as a real ``network-snapshot-*.pkl``
(``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with the class
source in ``meta["module_src"]`` and the module ``__dict__`` in ``meta["state"]``).
The weights are those of the rosinality fixture, mapped backwards by hand from
NVIDIA's ``training/networks.py`` names.
"""

from __future__ import annotations

import math
import os
import pickle
import sys
import types
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from geometry_core.errors import GeometryError, UnsafeCheckpointError
from geometry_core.generators import load_generator
from tests.support.references import assert_matches_float32_reference
from tests.support.stylegan2_helpers import DATA, load_ref

CKPT = DATA / "rosinality_tiny.pt"


@pytest.fixture
def nvidia(monkeypatch):
    """Fake NVIDIA modules; returns (Persistent class, EasyDict)."""
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # what NVIDIA's loader would run; ours must not
        raise AssertionError("the loader called the pickled reconstructor")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")
    easy = type("EasyDict", (dict,), {"__module__": "dnnlib.util"})
    util.EasyDict = easy
    for name, mod in {"torch_utils": types.ModuleType("torch_utils"), "torch_utils.persistence": persistence,
                      "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": util}.items():
        monkeypatch.setitem(sys.modules, name, mod)

    class Persistent:
        source = ""

        def __init__(self, class_name, params=(), buffers=(), modules=(), **attrs):
            self.class_name = class_name
            self.state = {"training": False, "_parameters": OrderedDict(params), "_buffers": OrderedDict(buffers),
                          "_non_persistent_buffers_set": set(), "_modules": OrderedDict(modules), **attrs}

        def __reduce__(self):
            meta = dict(type="class", version=6, module_src=self.source, class_name=self.class_name,
                        state=self.state)
            return persistence._reconstruct_persistent_obj, (meta,)

    return Persistent, easy


def _p(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().clone())


def _fc(P, weight, bias, lr=1.0, activation="linear"):
    return P("FullyConnectedLayer", [("weight", _p(weight)), ("bias", _p(bias))],
             in_features=weight.shape[1], out_features=weight.shape[0], activation=activation,
             weight_gain=np.float64(lr / math.sqrt(weight.shape[1])), bias_gain=lr)


def _layer(P, layer, res, clamp, up=1):
    filt = torch.tensor([1.0, 3, 3, 1])
    filt = torch.outer(filt, filt) / 64
    params = [("weight", _p(layer.weight)), ("bias", _p(layer.bias))]
    buffers = [("resample_filter", filt)]
    if hasattr(layer, "noise"):
        params.append(("noise_strength", _p(layer.noise_strength)))
        buffers.insert(0, ("noise_const", layer.noise[0, 0].clone()))
        name = "SynthesisLayer"
    else:
        name = "ToRGBLayer"
        buffers = []
    return P(name, params, buffers, [("affine", _fc(P, layer.affine.weight, layer.affine.bias))],
             conv_clamp=clamp, up=up, activation="lrelu", resolution=res)


def nvidia_pickle(path, P, easy, net, *, clamp=None, extra=None):
    """Write ``net`` (a built-in StyleGAN2) as a StyleGAN2-ADA snapshot pickle at ``path``."""
    cfg, syn = net.cfg, net.synthesis
    fcs = [(f"fc{i}", _fc(P, net.mapping[i + 1].weight, net.mapping[i + 1].bias, lr=0.01, activation="lrelu"))
           for i in range(cfg.n_mlp)]
    mapping = P("MappingNetwork", buffers=[("w_avg", net.latent_avg.clone())], modules=fcs,
                z_dim=cfg.style_dim, w_dim=cfg.style_dim, c_dim=0, num_ws=cfg.n_latent)
    filt = _layer(P, syn.conv1, 4, clamp).state["_buffers"]["resample_filter"]
    blocks = [("b4", P("SynthesisBlock", [("const", _p(syn.const[0]))], [("resample_filter", filt)],
                       [("conv1", _layer(P, syn.conv1, 4, clamp)), ("torgb", _layer(P, syn.to_rgb1, 4, clamp))],
                       architecture="skip"))]
    for i, to_rgb in enumerate(syn.to_rgbs):
        res = 2 ** (i + 3)
        convs = [("conv0", _layer(P, syn.convs[2 * i], res, clamp, up=2)),
                 ("conv1", _layer(P, syn.convs[2 * i + 1], res, clamp)), ("torgb", _layer(P, to_rgb, res, clamp))]
        blocks.append((f"b{res}", P("SynthesisBlock", buffers=[("resample_filter", filt)], modules=convs,
                                    architecture="skip")))
    synthesis = P("SynthesisNetwork", modules=blocks, img_resolution=cfg.size)
    G = P("Generator", modules=[("mapping", mapping), ("synthesis", synthesis)],
          _init_kwargs=easy(z_dim=cfg.style_dim, mapping_kwargs=easy(num_layers=cfg.n_mlp)))
    augment = P("AugmentPipe", buffers=[("Hz_geom", torch.ones(12))], p=np.float32(0.2), xflip=1,
                table=np.arange(6.0).reshape(2, 3))  # numpy values, as in NVIDIA's snapshots
    snapshot = {"G": G, "D": None, "G_ema": G, "augment_pipe": augment,
                "training_set_kwargs": easy(path="ffhq.zip", resolution=cfg.size), **(extra or {})}
    with open(path, "wb") as f:
        pickle.dump(snapshot, f)
    return path


def _rosinality(space="z", **kw):
    return load_generator("stylegan2", space=space, weights=CKPT, clamp=False, **kw)


@pytest.mark.parametrize("space, code, image", [("z", "z", "img_z"), ("w+", "wplus", "img_wplus")])
def test_pickle_gives_the_rosinality_images(tmp_path, nvidia, space, code, image):
    P, easy = nvidia
    marker = tmp_path / "source-ran"
    P.source = f"open({str(marker)!r}, 'w').write('ran')\n"  # a real pickle carries code here; never run
    path = nvidia_pickle(tmp_path / "snapshot.pkl", P, easy, _rosinality().module)
    G = load_generator("stylegan2", space=space, weights=path, truncation=0.7, clamp=False)
    ref = load_ref()
    with torch.no_grad():
        x = G(ref[code].reshape(3, -1))
        torch.testing.assert_close(x, _rosinality(space, truncation=0.7)(ref[code].reshape(3, -1)), atol=1e-6, rtol=0)
    assert_matches_float32_reference(G, ref[code].reshape(3, -1), ref[image])  # rosinality's, stored in float32
    assert not marker.exists()
    renamed = path.rename(tmp_path / "snapshot.pt")  # recognised by content, not by suffix
    with torch.no_grad():
        torch.testing.assert_close(load_generator("stylegan2", space=space, weights=renamed, truncation=0.7,
                                                  clamp=False)(ref[code].reshape(3, -1)), x, atol=0, rtol=0)
    assert G.module.cfg.channels == {4: 16, 8: 16, 16: 16, 32: 8} and G.module.cfg.lr_mlp == 0.01


def test_conv_clamp_is_read_and_applied(tmp_path, nvidia):
    P, easy = nvidia
    net = _rosinality().module
    G = load_generator("stylegan2", weights=nvidia_pickle(tmp_path / "c.pkl", P, easy, net, clamp=256), clamp=False)
    assert G.module.cfg.conv_clamp == 256.0
    tight_pkl = nvidia_pickle(tmp_path / "t.pkl", P, easy, net, clamp=0.05)
    tight = load_generator("stylegan2", weights=tight_pkl, clamp=False)
    z = G.sample(2)
    with torch.no_grad():
        torch.testing.assert_close(G(z), _rosinality()(z), atol=1e-6, rtol=0)  # 256 is never reached here
        assert not torch.allclose(tight(z), G(z), atol=1e-3)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"echo ran > {self.marker}",)


@pytest.mark.parametrize("where", ["top", "inside a layer"])
def test_pickle_that_runs_code_is_refused_and_never_runs(tmp_path, nvidia, where):
    P, easy = nvidia
    marker = tmp_path / "payload-ran"
    net = _rosinality().module
    if where == "top":
        path = nvidia_pickle(tmp_path / "evil.pkl", P, easy, net, extra={"payload": _Evil(marker)})
    else:
        orig = _fc

        def evil_fc(*args, **kw):
            layer = orig(*args, **kw)
            layer.state["payload"] = _Evil(marker)
            return layer

        globals()["_fc"] = evil_fc
        try:
            path = nvidia_pickle(tmp_path / "evil.pkl", P, easy, net)
        finally:
            globals()["_fc"] = orig
    with pytest.raises(UnsafeCheckpointError, match=r"refused global (posix|nt|os)\.system") as err:
        load_generator("stylegan2", weights=path)
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_other_refusals_and_bad_files(tmp_path, nvidia):
    (tmp_path / "eval.pkl").write_bytes(pickle.dumps({"G_ema": eval}))
    with pytest.raises(UnsafeCheckpointError, match=r"refused global builtins\.eval"):
        load_generator("stylegan2", weights=tmp_path / "eval.pkl")
    (tmp_path / "noG.pkl").write_bytes(pickle.dumps({"D": 1}))
    with pytest.raises(GeometryError, match=r"expected a persistent 'G_ema' Generator"):
        load_generator("stylegan2", weights=tmp_path / "noG.pkl")
    P, easy = nvidia
    good = nvidia_pickle(tmp_path / "good.pkl", P, easy, _rosinality().module).read_bytes()
    (tmp_path / "cut.pkl").write_bytes(good[: len(good) // 2])
    with pytest.raises(GeometryError, match=r"not a readable StyleGAN2-ADA pickle"):
        load_generator("stylegan2", weights=tmp_path / "cut.pkl")


def test_numpy_array_that_does_not_start_empty_is_refused_before_allocation(tmp_path):
    class Huge:
        def __reduce__(self):
            return np.zeros(0).__reduce__()[0], (np.ndarray, (10**12,), b"b")

    (tmp_path / "huge.pkl").write_bytes(pickle.dumps({"G_ema": Huge()}))
    with pytest.raises(UnsafeCheckpointError, match=r"does not start empty \(shape \(1000000000000,\)\)"):
        load_generator("stylegan2", weights=tmp_path / "huge.pkl")


def test_odd_pickle_tensors_name_the_key(tmp_path, nvidia):
    P, easy = nvidia
    net = _rosinality().module
    with torch.no_grad():
        net.synthesis.convs[1].affine.weight.data = torch.zeros(3, 7)
    path = nvidia_pickle(tmp_path / "shape.pkl", P, easy, net)
    with pytest.raises(GeometryError, match=r"'synthesis\.b8\.conv1\.affine\.weight' has shape \(3, 7\)"):
        load_generator("stylegan2", weights=path)
