"""PGGAN and DCGAN of the PyTorch GAN zoo: format compatibility, safe loading, config inference.

The files under tests/support/data/gan_zoo/ were written by the zoo's own code
(``BaseGAN.save``) from tiny random-weight models, with the zoo generators'
outputs for fixed latents; tests/support/data/gan_zoo/README.txt says how.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch

from geometry_core.distances import load_distance
from geometry_core.errors import GeometryError, MissingWeightsError, UnsafeCheckpointError
from geometry_core.generators import list_generators, load_generator
from geometry_core.generators.checkpoint import InertRecord, safe_load, stand_in
from geometry_core.generators.gan_zoo import PGGAN_DEPTHS, build_dcgan_fashion, build_pggan
from geometry_core.generators.gan_zoo_nets import DCGANConfig, PGGANConfig
from geometry_core.layers import layer_metrics
from geometry_core.metric import metric_tensor
from tests.support.references import assert_matches_float32_reference

DATA = Path(__file__).resolve().parents[1] / "support" / "data" / "gan_zoo"
ZOO_CONFIG = "models.utils.config.BaseConfig"
FILES = {"pggan_tiny": "pggan", "pggan_alpha": "pggan", "dcgan_tiny": "dcgan-fashion"}


@pytest.fixture(scope="module")
def ref():
    return torch.load(DATA / "reference_outputs.pt", weights_only=True)


def _read(name: str) -> dict:
    return safe_load(DATA / f"{name}.pth", safe_globals=[stand_in(ZOO_CONFIG)])


def _zoo_save(monkeypatch, obj: dict, path: Path, config: dict | None = None) -> Path:
    """Save ``obj`` in the zoo's layout: ``config`` pickled as models.utils.config.BaseConfig.

    The class lives in stand-in modules for the duration of the save only, so
    the loader later finds no module of that name to import.
    """
    base_config = type("BaseConfig", (), {"__module__": "models.utils.config"})
    modules = {n: types.ModuleType(n) for n in ("models", "models.utils", "models.utils.config")}
    modules["models.utils.config"].BaseConfig = base_config
    out = dict(obj)
    if config is not None:
        out["config"] = base_config()
        vars(out["config"]).update(config)
    with monkeypatch.context() as m:
        for n, mod in modules.items():
            m.setitem(sys.modules, n, mod)
        torch.save(out, path)
    assert "models" not in sys.modules
    return path


def _edited(monkeypatch, tmp_path, name: str, edit) -> Path:
    """A copy of fixture ``name`` after ``edit(obj, config_fields)``."""
    obj = _read(name)
    config = dict(obj.pop("config").fields)
    edit(obj, config)
    return _zoo_save(monkeypatch, obj, tmp_path / f"{name}_edited.pth", config)


# ---------------------------------------------------------------- compatibility


@pytest.mark.parametrize("name", sorted(FILES))
@pytest.mark.parametrize("net", ["avgG", "netG"])
def test_outputs_equal_the_zoo(ref, name, net):
    # The zoo's outputs were stored in float32 on another machine: compared within this
    # network's float32 rounding, measured here (tests/support/references.py).
    G = load_generator(FILES[name], weights=DATA / f"{name}.pth", net=net)
    assert_matches_float32_reference(G, ref[f"{name}/z"], ref[f"{name}/{net}"])


def test_avgG_is_preferred(ref):
    G = load_generator("pggan", weights=DATA / "pggan_tiny.pth")
    tol = assert_matches_float32_reference(G, ref["pggan_tiny/z"], ref["pggan_tiny/avgG"])
    # The two nets differ, so the comparison above tells them apart.
    assert (G(ref["pggan_tiny/z"]) - ref["pggan_tiny/netG"]).abs().max() > 0.1 > 100 * tol


def test_netG_when_no_avgG(monkeypatch, tmp_path, ref):
    path = _edited(monkeypatch, tmp_path, "dcgan_tiny", lambda obj, cfg: obj.pop("avgG"))
    G = load_generator("dcgan-fashion", weights=path)
    assert_matches_float32_reference(G, ref["dcgan_tiny/z"], ref["dcgan_tiny/netG"])
    with pytest.raises(GeometryError, match="missing key 'avgG'"):
        load_generator("dcgan-fashion", weights=path, net="avgG")


def test_bare_state_dict_loads(tmp_path, ref):
    path = tmp_path / "gnet.pt"
    torch.save(_read("pggan_tiny")["avgG"], path)
    G = load_generator("pggan", weights=path)
    assert_matches_float32_reference(G, ref["pggan_tiny/z"], ref["pggan_tiny/avgG"])


def test_single_code_equals_batch_row(ref):
    # float64: the 4-channel pixel norm of this tiny net amplifies float32 rounding
    # (conv summation order differs with the batch size) to ~6e-5.
    G = load_generator("pggan", weights=DATA / "pggan_alpha.pth", dtype=torch.float64)
    z = ref["pggan_alpha/z"].double()
    torch.testing.assert_close(G(z[1]), G(z)[1], rtol=0, atol=1e-12)


# ---------------------------------------------------------------- configuration


def test_config_inferred():
    cfg = load_generator("pggan", weights=DATA / "pggan_tiny.pth").module.cfg
    assert cfg == PGGANConfig(latent_dim=8, depths=(8, 8, 6, 4), leak=0.2, alpha=0.0, tanh=False)
    assert cfg.resolution == 32
    cfg = load_generator("pggan", weights=DATA / "pggan_alpha.pth").module.cfg
    assert cfg == PGGANConfig(latent_dim=6, depths=(8, 4, 4), leak=0.1, alpha=0.4, tanh=True)
    cfg = load_generator("dcgan-fashion", weights=DATA / "dcgan_tiny.pth").module.cfg
    assert cfg == DCGANConfig(latent_dim=10, base=4, n_up=2, tanh=True)
    assert cfg.resolution == 32


def test_config_that_contradicts_the_weights(monkeypatch, tmp_path):
    path = _edited(monkeypatch, tmp_path, "pggan_tiny", lambda obj, cfg: cfg.update(latentVectorDim=9))
    with pytest.raises(GeometryError, match=r"config 'latentVectorDim' is 9 but the weights give 8"):
        load_generator("pggan", weights=path)


def test_unsupported_config_values(monkeypatch, tmp_path):
    path = _edited(monkeypatch, tmp_path, "pggan_tiny", lambda obj, cfg: cfg.update(lossCriterion="Hinge"))
    with pytest.raises(GeometryError, match=r"'lossCriterion' should be one of .* got 'Hinge'"):
        load_generator("pggan", weights=path)
    path = _edited(monkeypatch, tmp_path, "pggan_tiny", lambda obj, cfg: cfg.update(alpha=1.5))
    with pytest.raises(GeometryError, match=r"'alpha' should be in \[0, 1\], got 1.5"):
        load_generator("pggan", weights=path)


@pytest.mark.parametrize("edit, message", [
    (lambda obj, cfg: cfg.update(leakyReluLeak=float("nan")), r"'leakyReluLeak' should be in \[0, 1\], got nan"),
    (lambda obj, cfg: cfg.update(alpha=float("inf")), r"'alpha' should be in \[0, 1\], got inf"),
    (lambda obj, cfg: cfg.update(latentVectorDim=torch.ones(3)),
     r"'latentVectorDim' should be an int or a list of ints, got tensor"),
    (lambda obj, cfg: cfg.update(depthOtherScales=[4.0, 4.0]), r"'depthOtherScales' should be an int or a list"),
    (lambda obj, cfg: obj["avgG"]["formatLayer.module.bias"].fill_(float("nan")),
     r"'formatLayer\.module\.bias' holds NaN or Inf values"),
], ids=["leak NaN", "alpha inf", "tensor in config", "float sizes", "NaN weights"])
def test_config_and_weights_checked_before_use(monkeypatch, tmp_path, edit, message):
    path = _edited(monkeypatch, tmp_path, "pggan_tiny", edit)
    with pytest.raises(GeometryError, match=message) as info:
        load_generator("pggan", weights=path)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- wrong files


def _drop(key):
    return lambda obj, cfg: obj["avgG"].pop(key)


@pytest.mark.parametrize(
    "edit, message",
    [
        (_drop("toRGBLayers.3.module.bias"), r"missing key\(s\) \['toRGBLayers\.3\.module\.bias'\]"),
        (_drop("formatLayer.module.weight"), r"missing key 'formatLayer\.module\.weight'"),
        (
            lambda obj, cfg: obj["avgG"].update({"groupScale0.1.module.weight": torch.zeros(1)}),
            r"unexpected key\(s\) \['groupScale0\.1\.module\.weight'\]",
        ),
        (
            lambda obj, cfg: obj["avgG"].update({"scaleLayers.1.1.module.bias": torch.zeros(5)}),
            r"'scaleLayers\.1\.1\.module\.bias' has shape \(5,\), expected \(6,\)",
        ),
        (lambda obj, cfg: [obj.pop("avgG"), obj.pop("netG")], r"missing key 'avgG' or 'netG'; found keys"),
    ],
)
def test_wrong_keys_name_the_key(monkeypatch, tmp_path, edit, message):
    path = _edited(monkeypatch, tmp_path, "pggan_tiny", edit)
    with pytest.raises(GeometryError, match=message):
        load_generator("pggan", weights=path)


def test_dcgan_file_is_not_a_pggan():
    with pytest.raises(GeometryError, match=r"missing key 'formatLayer\.module\.weight'"):
        load_generator("pggan", weights=DATA / "dcgan_tiny.pth")


def test_missing_weights_say_what_to_give(tmp_path):
    with pytest.raises(MissingWeightsError, match="weights= is required"):
        load_generator("pggan")
    with pytest.raises(MissingWeightsError, match="not found"):
        load_generator("dcgan-fashion", weights=tmp_path / "absent.pth")
    with pytest.raises(GeometryError, match=r"net must be one of \['avgG', 'netG'\]"):
        load_generator("pggan", weights=DATA / "pggan_tiny.pth", net="netD")


# ---------------------------------------------------------------- safety


def _write_marker(path):
    """Unpickling side effect: proves whether code in a checkpoint ran."""
    Path(path).write_text("code ran")
    return {}


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (_write_marker, (self.marker,))


def test_malicious_config_never_runs(tmp_path):
    marker = tmp_path / "marker.txt"
    obj = _read("pggan_tiny")
    obj["config"] = _Payload(marker)
    path = tmp_path / "evil.pth"
    torch.save(obj, path)
    with pytest.raises(UnsafeCheckpointError, match=r"pickled code \(tests\.core\.test_gan_zoo\._write_marker\)"):
        load_generator("pggan", weights=path)
    assert not marker.exists()
    # The payload is live: an unsafe load would have run it.
    torch.load(path, weights_only=False)
    assert marker.read_text() == "code ran"


class _ArgsPayload:
    """Pickles as a call of the admitted name with arguments (REDUCE), or with a non-dict state."""

    def __init__(self, cls, reduce):
        self.cls, self.reduce = cls, reduce

    def __reduce__(self):
        return self.reduce(self.cls)


@pytest.mark.parametrize(
    "reduce, message",
    [
        (lambda cls: (cls, ("os.system('touch x')",)), "not a readable torch checkpoint"),
        (lambda cls: (cls, (), ["not", "a", "dict"]), r"stand-in object: expected a dict of attributes, got list"),
    ],
)
def test_admitted_name_stays_inert(monkeypatch, tmp_path, reduce, message):
    base_config = type("BaseConfig", (), {"__module__": "models.utils.config"})
    obj = _read("pggan_tiny")
    obj["config"] = _ArgsPayload(base_config, reduce)
    mod = types.ModuleType("models.utils.config")
    mod.BaseConfig = base_config
    with monkeypatch.context() as m:
        for n in ("models", "models.utils"):
            m.setitem(sys.modules, n, types.ModuleType(n))
        m.setitem(sys.modules, "models.utils.config", mod)
        torch.save(obj, tmp_path / "odd.pth")
    with pytest.raises(GeometryError, match=message):
        load_generator("pggan", weights=tmp_path / "odd.pth")


def test_config_read_without_the_zoo():
    obj = _read("pggan_tiny")
    assert isinstance(obj["config"], InertRecord)
    assert obj["config"].fields["depthOtherScales"] == [8, 6, 4]
    assert "models" not in sys.modules  # nothing of the zoo was imported
    assert not any("BaseConfig" in str(g) for g in torch.serialization.get_safe_globals())
    # Without the stand-in the same file is refused, naming the global.
    with pytest.raises(UnsafeCheckpointError, match=r"pickled code \(models\.utils\.config\.BaseConfig\)"):
        safe_load(DATA / "pggan_tiny.pth")


# ---------------------------------------------------------------- geometry


def test_exact_metric_equals_backprop_on_tiny_pggan(ref):
    G = load_generator("pggan", weights=DATA / "pggan_tiny.pth", dtype=torch.float64)
    d = load_distance("mse")
    z = ref["pggan_tiny/z"][:2].double()
    H_exact = metric_tensor(G, d, z, method="exact")
    H_bp = metric_tensor(G, d, z, method="bp")
    assert H_exact.shape == (2, 8, 8)
    # float64, forward- vs reverse-mode of the same ops: agree to rounding.
    torch.testing.assert_close(H_exact, H_bp, rtol=1e-9, atol=1e-12)
    assert H_exact.abs().max() > 1e-3  # not trivially zero


def test_layer_metrics_per_scale(ref):
    G = load_generator("dcgan-fashion", weights=DATA / "dcgan_tiny.pth")
    assert G.layer_names == ["main.relu0", "main.relu1", "main.relu2", "main.outlayer"]
    G = load_generator("pggan", weights=DATA / "pggan_tiny.pth")
    assert G.layer_names == ["blocks.0", "blocks.1", "blocks.2", "blocks.3", "to_rgb.3"]
    H = layer_metrics(G, ref["pggan_tiny/z"][0])
    assert list(H) == G.layer_names
    for h in H.values():
        assert h.shape == (8, 8)
        torch.testing.assert_close(h, h.T, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- builders and registry


def test_build_pggan_has_the_celebahq_256_shape():
    G = build_pggan(seed=1)
    assert G.latent_dim == 512 and G.module.cfg.depths == PGGAN_DEPTHS[:7]
    assert G.module.cfg.resolution == 256
    assert sum(p.numel() for p in G.parameters()) == 23_051_989
    assert G.module.blocks[0].fc.weight.dtype == torch.float32
    assert torch.equal(build_pggan(seed=1).module.to_rgb[6].weight, G.module.to_rgb[6].weight)
    assert build_pggan(resolution=512).module.cfg.depths == PGGAN_DEPTHS[:8]
    with pytest.raises(GeometryError, match="resolution must be one of"):
        build_pggan(resolution=100)


def test_build_small_pggan_runs():
    G = build_pggan(resolution=16, latent_dim=16, seed=0)
    x = G(G.sample(2))
    assert x.shape == (2, 3, 16, 16) and torch.isfinite(x).all()
    assert not torch.equal(build_pggan(resolution=16, latent_dim=16, seed=1)(G.sample(2)), x)


def test_build_dcgan_fashion():
    G = build_dcgan_fashion(seed=0)
    x = G(G.sample(2))
    assert G.latent_dim == 120 and x.shape == (2, 3, 64, 64)
    assert x.abs().max() <= 1.0


def test_registered():
    gens = list_generators()
    assert gens["pggan"][0] == ("z",) and gens["dcgan-fashion"][0] == ("z",)
