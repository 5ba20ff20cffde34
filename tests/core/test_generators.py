"""The generator registry, safe checkpoint loading and each adapter on small saved models."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from geometry_core.errors import GeometryError, MissingWeightsError, UnsafeCheckpointError
from geometry_core.generators import Generator, list_generators, load_generator
from geometry_core.generators.checkpoint import load_state_dict_strict, safe_load
from geometry_core.generators.module import from_module
from tests.support.biggan import tiny_biggan

# Same float32 ops on the same device: equal up to summation-order rounding.
ATOL = 1e-5


# ---------------------------------------------------------------- helpers


def _write_marker(path):
    """Unpickling side effect: proves whether code in a checkpoint ran."""
    Path(path).write_text("code ran")
    return {}


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (_write_marker, (self.marker,))


class TinyDecoder(nn.Module):
    """A small DCGAN-style decoder: (B, nz, 1, 1) -> (B, 3, 8, 8) in [-1, 1]."""

    def __init__(self, nz=6, ch=4, tanh=True):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ch, 4, 1, 0, bias=False),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(ch, 3, 4, 2, 1, bias=False),
            nn.Tanh() if tanh else nn.Identity(),
        )

    def forward(self, x):
        return self.main(x) * (1 if isinstance(self.main[3], nn.Tanh) else 100)


def _decoder_file(tmp_path, nz=6, seed=0):
    torch.manual_seed(seed)
    path = tmp_path / f"decoder{nz}.pt"
    torch.save(TinyDecoder(nz).state_dict(), path)
    return path


def _module_options(tmp_path, **over):
    opts = dict(arch="tests.core.test_generators:TinyDecoder", arch_kwargs={"nz": 6}, latent_dim=6,
                weights=_decoder_file(tmp_path), allow_import=True, input_shape=(6, 1, 1))
    opts.update(over)
    return opts


# ---------------------------------------------------------------- registry


def test_registry_lists_builtins():
    gens = list_generators()
    for name in ("dcgan-faces", "biggan-deep", "stylegan2", "module"):
        assert name in gens
    assert gens["biggan-deep"][0] == ("joint", "noise", "class")
    assert gens["stylegan2"][0] == ("z", "w", "w+")


def test_unknown_name_lists_known():
    with pytest.raises(GeometryError, match=r"unknown generator 'nope'.*dcgan-faces"):
        load_generator("nope")


def test_unknown_space_lists_spaces():
    with pytest.raises(GeometryError, match=r"unknown latent space 'w'.*\['z'\]"):
        load_generator("module", space="w")


def test_unknown_option_named(tmp_path):
    with pytest.raises(GeometryError, match=r"unknown option\(s\) \['colour'\]"):
        load_generator("module", colour="red", **_module_options(tmp_path))


# ---------------------------------------------------------------- checkpoints


def test_missing_weight_file_names_absolute_path(tmp_path):
    missing = tmp_path / "absent.pt"
    with pytest.raises(MissingWeightsError, match=str(missing.absolute())):
        safe_load(missing)
    with pytest.raises(MissingWeightsError, match="absent.pt"):
        load_generator("module", **_module_options(tmp_path, weights=missing))


def test_pickled_code_refused_and_never_runs(tmp_path):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "extra": Payload(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"pickled code \(tests\.core\.test_generators\._write_marker\)"):
        safe_load(path)
    assert not marker.exists()
    # The payload is live: an unsafe load would have run it.
    torch.load(path, weights_only=False)
    assert marker.read_text() == "code ran"


def test_corrupted_checkpoint_is_geometry_error(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a checkpoint\x00\x01")
    with pytest.raises(GeometryError, match="not a readable torch checkpoint") as info:
        safe_load(path)
    assert not isinstance(info.value, UnsafeCheckpointError)


def test_size_mismatch_names_parameter_and_shapes():
    state = nn.Linear(5, 2).state_dict()
    with pytest.raises(GeometryError, match=r"'weight' has shape \(2, 5\) in the checkpoint but \(2, 4\)"):
        load_state_dict_strict(nn.Linear(4, 2), state, what="test")
    with pytest.raises(GeometryError, match=r"1 unexpected key\(s\) \(first: \['extra'\]\)"):
        load_state_dict_strict(nn.Linear(5, 2), {**state, "extra": torch.zeros(1)}, what="test")
    with pytest.raises(GeometryError, match=r"1 missing key\(s\) \(first: \['bias'\]\)"):
        load_state_dict_strict(nn.Linear(5, 2), {"weight": state["weight"]}, what="test")
    assert load_state_dict_strict(nn.Linear(5, 2), {"weight": state["weight"]}, allow_missing="bias") == ["bias"]


# ---------------------------------------------------------------- module adapter


def test_module_requires_allow_import(tmp_path):
    with pytest.raises(GeometryError, match="allow_import=True"):
        load_generator("module", **_module_options(tmp_path, allow_import=False))


def test_module_loads_and_matches_direct_call(tmp_path):
    G = load_generator("module", **_module_options(tmp_path))
    assert isinstance(G, Generator) and G.latent_dim == 6
    z = G.sample(3, seed=4)
    x = G(z)
    assert x.shape == (3, 3, 8, 8) and x.abs().max() <= 1
    net = TinyDecoder(6)
    net.load_state_dict(torch.load(_decoder_file(tmp_path), weights_only=True))
    torch.testing.assert_close(x, net(z.reshape(3, 6, 1, 1)), atol=ATOL, rtol=0)
    torch.testing.assert_close(G(z[0]), x[0], atol=ATOL, rtol=0)  # batch of 1 vs batch of N


def test_module_wrong_latent_size(tmp_path):
    # Weights saved for nz=6 into a net built for nz=8: names the parameter and both shapes.
    expected = r"'main\.0\.weight' has shape \(6, 4, 4, 4\) in the checkpoint but \(8, 4, 4, 4\)"
    with pytest.raises(GeometryError, match=expected):
        load_generator("module", **_module_options(tmp_path, arch_kwargs={"nz": 8}, latent_dim=8, input_shape=None))
    # Right weights, wrong declared latent size: the verifying forward fails clearly.
    with pytest.raises(GeometryError, match=r"latent of shape \(1, 7\) \(latent_dim=7\) failed"):
        load_generator("module", **_module_options(tmp_path, latent_dim=7, input_shape=None))


def test_from_module_checks_output_range():
    with pytest.raises(GeometryError, match=r"output must lie in \[-1, 1\]"):
        from_module(TinyDecoder(6, tanh=False), 6, input_shape=(6, 1, 1))
    G = from_module(TinyDecoder(6, tanh=False), 6, input_shape=(6, 1, 1), output_range_check=False)
    assert G(G.sample(2)).shape == (2, 3, 8, 8)


def test_dtype_and_layer_names(tmp_path):
    G = load_generator("module", dtype=torch.float64, layer_names=["main.1"], **_module_options(tmp_path))
    assert G.dtype == torch.float64 and G(G.sample(2, dtype=torch.float64)).dtype == torch.float64
    assert G.layer_names == ["main.1"] and isinstance(G.layer("main.1"), nn.ReLU)
    assert not G.layer("main.1").inplace
    with pytest.raises(GeometryError, match="dtype must be a floating torch.dtype"):
        load_generator("module", dtype=torch.int64, **_module_options(tmp_path))


def test_shuffle_seed_passes_through(tmp_path):
    pytest.importorskip("geometry_core.shuffle")
    G = load_generator("module", **_module_options(tmp_path))
    S = load_generator("module", shuffle_seed=3, **_module_options(tmp_path))
    w, ws = G.module.main[0].weight, S.module.main[0].weight
    assert not torch.equal(w, ws)
    torch.testing.assert_close(w.flatten().sort().values, ws.flatten().sort().values, atol=0, rtol=0)
    S2 = load_generator("module", shuffle_seed=3, **_module_options(tmp_path))
    assert torch.equal(ws, S2.module.main[0].weight)


# ---------------------------------------------------------------- BigGAN-deep


@pytest.fixture(scope="module")
def biggan_dir(tmp_path_factory):
    cfg, net = tiny_biggan(attention_gamma=0.5)  # attention on, so it is exercised
    root = tmp_path_factory.mktemp("biggan")
    (root / "config.json").write_text(json.dumps(cfg.to_dict()))
    torch.save(net.state_dict(), root / "pytorch_model.bin")
    return root


def test_biggan_spaces(biggan_dir):
    for space, dim in (("joint", 16), ("noise", 8), ("class", 8)):
        G = load_generator("biggan-deep", space=space, weights_dir=biggan_dir)
        assert G.latent_dim == dim
        z = G.sample(2, seed=1)
        assert torch.equal(z, G.sample(2, seed=1))
        x = G(z)
        assert x.shape == (2, 3, 32, 32) and x.abs().max() <= 1 and x.std() > 0.01
        assert (x.abs() < 0.99).float().mean() > 0.9  # tanh not saturated: gradients live
    assert "generator.layers.2" in G.layer_names


def test_biggan_matches_package_forward(biggan_dir):
    """Our wrapper (spectral norm folded in) against the package's own BigGAN.forward."""
    from pytorch_pretrained_biggan import BigGAN, BigGANConfig

    net = BigGAN(BigGANConfig.from_json_file(biggan_dir / "config.json"))
    net.load_state_dict(torch.load(biggan_dir / "pytorch_model.bin", weights_only=True))
    net.eval()
    G = load_generator("biggan-deep", weights_dir=biggan_dir, truncation=0.5)
    noise = torch.randn(3, 8, generator=torch.Generator().manual_seed(2))
    onehot = torch.eye(5)[[0, 3, 4]]
    with torch.no_grad():
        ref = net(noise, onehot, 0.5)
        ours = G(torch.cat([noise, onehot @ net.embeddings.weight.T], dim=1))
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)


def test_biggan_joint_equals_noise_and_class_spaces(biggan_dir):
    Gj = load_generator("biggan-deep", space="joint", weights_dir=biggan_dir)
    noise = torch.randn(8, generator=torch.Generator().manual_seed(5)) * 0.7
    embed = Gj.module.embeddings.weight[:, 3]
    Gn = load_generator("biggan-deep", space="noise", weights_dir=biggan_dir, class_index=3)
    Gc = load_generator("biggan-deep", space="class", weights_dir=biggan_dir, noise=noise.tolist())
    with torch.no_grad():
        xj = Gj(torch.cat([noise, embed]))
        torch.testing.assert_close(Gn(noise), xj, atol=ATOL, rtol=0)
        torch.testing.assert_close(Gc(embed), xj, atol=ATOL, rtol=0)
        assert (Gn(noise) - Gn(-noise)).abs().max() > 1e-3  # the noise does matter


def test_biggan_class_samples_are_class_embeddings(biggan_dir):
    G = load_generator("biggan-deep", space="class", weights_dir=biggan_dir)
    z = G.sample(4, seed=0)
    table = G.module.embeddings.weight.detach().T  # (classes, z_dim)
    assert all(torch.isclose(table, row).all(dim=1).any() for row in z)


def test_biggan_bad_inputs(tmp_path, biggan_dir):
    with pytest.raises(MissingWeightsError, match="config.json"):
        load_generator("biggan-deep", weights_dir=tmp_path)
    with pytest.raises(GeometryError, match=r"class_index must be an int in \[0, 5\)"):
        load_generator("biggan-deep", weights_dir=biggan_dir, class_index=5)
    with pytest.raises(GeometryError, match=r"truncation must be in \(0, 1\]"):
        load_generator("biggan-deep", weights_dir=biggan_dir, truncation=1.5)
    cfg = json.loads((biggan_dir / "config.json").read_text())
    cfg["z_dim"] = 6  # wrong latent size for these weights
    with pytest.raises(GeometryError, match=r"has shape .* in the checkpoint but"):
        load_generator("biggan-deep", config=cfg, weights=biggan_dir / "pytorch_model.bin")


_BAD_BIGGAN_CONFIGS = {
    "not an object": ([1, 2], "expected a JSON object"),
    "unknown field": ({"output_dim": 32, "arch": "os:system"}, r"unknown config field\(s\) \['arch'\]"),
    "z_dim a string": ({"z_dim": "8"}, "z_dim must be an int"),
    "z_dim a bool": ({"z_dim": True}, "z_dim must be an int"),
    "z_dim a float": ({"z_dim": 8.0}, "z_dim must be an int"),
    "num_classes negative": ({"num_classes": -1}, "num_classes must be an int"),
    "num_classes 0": ({"num_classes": 0}, "must be >= 1"),
    "huge int": ({"channel_width": 10**4}, "channel_width must be an int"),
    "5000-digit int": ('{"z_dim": 1%s}' % ("0" * 5000), "is not a JSON config"),
    "channel width 2": ({"channel_width": 2}, r"channel_width >= 3"),
    "eps NaN": ({"eps": float("nan")}, r"eps must be a number in \(0, 1\)"),
    "layers a dict": ({"layers": {"a": 1}}, "layers must be"),
    "layers empty": ({"layers": []}, "layers must be"),
    "layer of two": ({"layers": [[True, 2]]}, "layers must be"),
    "layer multiple 0": ({"layers": [[True, 0, 1]]}, "layers must be"),
    "layer flag an int": ({"layers": [[1, 2, 1]]}, "layers must be"),
    "gigantic network": ({"channel_width": 512, "layers": [[True, 64, 64]] * 8}, "would hold about"),
}


@pytest.mark.parametrize("raw, match", list(_BAD_BIGGAN_CONFIGS.values()), ids=list(_BAD_BIGGAN_CONFIGS))
def test_biggan_config_checked_field_by_field(tmp_path, biggan_dir, raw, match):
    """A malformed config.json is one GeometryError line, before any network is built or weights read."""
    import geometry_core.generators.biggan as bg

    if isinstance(raw, dict):
        raw = {**json.loads((biggan_dir / "config.json").read_text()), **raw}
    path = tmp_path / "config.json"
    path.write_text(raw if isinstance(raw, str) else json.dumps(raw))
    with pytest.raises(GeometryError, match=match) as info:
        bg.load_biggan_deep(config=path, weights=tmp_path / "absent.bin")
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


# ---------------------------------------------------------------- StyleGAN2


SG_ARCH = "tests.support.stylegan2_arch_tiny:Generator"
SG_OPTS = dict(size=16, style_dim=8, n_mlp=2, channel_multiplier=1, arch=SG_ARCH, allow_import=True)


@pytest.fixture(scope="module")
def stylegan_ckpt(tmp_path_factory):
    from tests.support.stylegan2_arch_tiny import Generator as Tiny

    torch.manual_seed(0)
    net = Tiny(16, 8, 2, channel_multiplier=1)
    with torch.no_grad():
        for m in net.modules():
            if type(m).__name__ == "NoiseInjection":
                m.weight.fill_(0.3)  # noise on, so fixing it is tested
        net.to_rgb1.conv.weight.mul_(0.2)
    root = tmp_path_factory.mktemp("stylegan2")
    full = {"g_ema": net.state_dict(), "latent_avg": net.mean_latent(256)[0].detach(),
            "args": argparse.Namespace(size=16)}  # training checkpoints carry their args
    torch.save(full, root / "full.pt")
    old = {k: v for k, v in net.state_dict().items() if not k.startswith("noises.")}
    torch.save({"g_ema": old}, root / "old.pt")  # older checkpoints: no noise, no latent_avg
    return root


@pytest.mark.parametrize("truncation", [1.0, 0.7])
def test_stylegan2_z_equals_w_of_mapping(stylegan_ckpt, truncation):
    Gz = load_generator("stylegan2", space="z", weights=stylegan_ckpt / "full.pt", truncation=truncation, **SG_OPTS)
    Gw = load_generator("stylegan2", space="w", weights=stylegan_ckpt / "full.pt", truncation=truncation, **SG_OPTS)
    assert Gz.latent_dim == Gw.latent_dim == 8
    z = Gz.sample(3, seed=2)
    with torch.no_grad():
        x = Gz(z)
        w = Gz.module.g_ema.style(z)
        torch.testing.assert_close(Gw(w), x, atol=ATOL, rtol=0)
        torch.testing.assert_close(Gz(z), x, atol=0, rtol=0)  # noise is fixed
    assert x.shape == (3, 3, 16, 16) and x.abs().max() <= 1 and x.std() > 0.01
    # W samples are the mapping of the Z samples drawn with the same seed (float64 CPU mapping).
    torch.testing.assert_close(Gw.sample(3, seed=2), w, atol=ATOL, rtol=0)
    assert Gz.layer_names[:3] == ["g_ema.conv1", "g_ema.to_rgb1", "g_ema.convs.0"]


def test_stylegan2_old_checkpoint_fills_noise_from_seed(stylegan_ckpt):
    opts = dict(weights=stylegan_ckpt / "old.pt", truncation=0.5, **SG_OPTS)
    a, b = load_generator("stylegan2", **opts), load_generator("stylegan2", **opts)
    c = load_generator("stylegan2", noise_seed=1, **opts)
    z = a.sample(2, seed=0)
    with torch.no_grad():
        assert torch.equal(a(z), b(z))
        assert not torch.allclose(a(z), c(z), atol=1e-4)
    assert a.module.latent_avg.abs().sum() > 0  # mean of the mapping, not zeros


def test_stylegan2_refusals(stylegan_ckpt, tmp_path):
    with pytest.raises(GeometryError, match="allow_import=True"):
        load_generator("stylegan2", weights=stylegan_ckpt / "full.pt", **{**SG_OPTS, "allow_import": False})
    with pytest.raises(GeometryError, match="arch= needs size=int"):
        load_generator("stylegan2", weights=stylegan_ckpt / "full.pt", arch=SG_ARCH, allow_import=True)
    with pytest.raises(GeometryError, match=r"arch= supports the spaces \['z', 'w'\], got 'w\+'"):
        load_generator("stylegan2", space="w+", weights=stylegan_ckpt / "full.pt", **SG_OPTS)
    # Without arch= the built-in architecture reads the file; this class names its biases differently.
    with pytest.raises(GeometryError, match=r"unexpected key 'conv1\.bias'"):
        load_generator("stylegan2", weights=stylegan_ckpt / "full.pt")
    torch.save({"g": {}}, tmp_path / "noema.pt")
    with pytest.raises(GeometryError, match="'g_ema' entry"):
        load_generator("stylegan2", weights=tmp_path / "noema.pt", **SG_OPTS)
    with pytest.raises(GeometryError, match=r"in the checkpoint but"):
        load_generator("stylegan2", weights=stylegan_ckpt / "full.pt", **{**SG_OPTS, "style_dim": 6})


# ---------------------------------------------------------------- shipped DCGAN


def test_dcgan_faces_loads():
    pytest.importorskip("geometry_core.generators.dcgan_faces")
    G = load_generator("dcgan-faces")
    assert G.latent_dim == 100
    z = G.sample(2, seed=7)
    assert torch.equal(z, G.sample(2, seed=7)) and not torch.equal(z, G.sample(2, seed=8))
    with torch.no_grad():
        x = G(z)
    assert x.shape == (2, 3, 64, 64) and x.min() >= -1 and x.max() <= 1


def test_dcgan_faces_bad_weight_files_are_one_clear_error(tmp_path):
    from geometry_core.generators.dcgan_faces import load_dcgan_faces

    corrupt = tmp_path / "corrupt.tar"
    corrupt.write_bytes(b"junk")
    wrong = tmp_path / "wrong.tar"
    torch.save({"netG_state_dict": {"x": torch.zeros(2)}}, wrong)
    with pytest.raises(GeometryError, match="not a readable torch checkpoint"):
        load_dcgan_faces(weights=corrupt)
    with pytest.raises(GeometryError, match="missing key"):
        load_dcgan_faces(weights=wrong)


@pytest.mark.parametrize("resolution", [128, 256, 512])
def test_random_biggan_deep_is_built_in_the_released_layout(resolution):
    """Published sizes (rounded to 0.1M, so within 5e4) and a block the old 256 layout built at half width."""
    from pytorch_pretrained_biggan import BigGAN

    from geometry_core.generators.biggan import RELEASED_PARAMETERS, released_config

    cfg = released_config(resolution)
    with torch.device("meta"):  # shapes only: no memory, no init
        net = BigGAN(cfg)
    n = sum(p.numel() for p in net.parameters())
    assert abs(n - RELEASED_PARAMETERS[resolution]) <= 5e4, n
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    blocks = 2 * {128: 5, 256: 6, 512: 7}[resolution]  # a pair per doubling from 4 px
    assert sum(1 for k in shapes if k.endswith(".conv_0.weight_orig")) == blocks
    assert shapes["generator.layers.5.conv_3.bias"] == ((512,) if resolution == 128 else (1024,))
    assert shapes["generator.conv_to_rgb.weight_orig"][1] == 128  # ends at width 128 (multiple 1)


def test_random_biggan_deep_has_unit_spectral_norms():
    from geometry_core.generators.biggan import build_biggan_deep

    G = build_biggan_deep(resolution=128, space="noise", seed=1)
    weights = [m.weight for m in G.module.generator.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    tops = torch.stack([torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2) for w in weights[:6]])
    torch.testing.assert_close(tops, torch.ones_like(tops), rtol=1e-2, atol=0)  # spectral norm folded in
    with torch.no_grad():
        x = G(G.sample(2, seed=0))
    assert x.shape == (2, 3, 128, 128) and torch.isfinite(x).all() and x.abs().max() <= 1
    # Calibrated statistics keep the signal alive to the last layer: images follow their codes.
    assert (x[0] - x[1]).abs().mean() > 0.05 and x.std() > 0.1
