"""The built-in StyleGAN2: rosinality checkpoints, spaces, truncation, layers, forward mode.

The reference outputs in tests/support/data/stylegan2/ were computed by rosinality's own
model.py (CPU code paths) on the same random weights; see the README.txt there.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import jvp, vmap

import geometry_core as gc
from geometry_core.errors import GeometryError
from geometry_core.generators import load_generator
from geometry_core.generators.stylegan2 import build_stylegan2
from geometry_core.layers import layers_map
from tests.support.references import assert_matches_float32_reference
from tests.support.stylegan2_helpers import DATA, load_ref, save_variant

CKPT = DATA / "rosinality_tiny.pt"


def _load(space="z", **kw):
    return load_generator("stylegan2", space=space, weights=CKPT, clamp=False, **kw)


@pytest.mark.parametrize(
    "space, truncation, code, image",
    [
        ("z", 1.0, "z", "img_z_t1"),
        ("z", 0.7, "z", "img_z"),
        ("w", 0.7, "w", "img_w"),
        ("w+", 0.7, "wplus", "img_wplus"),
    ],
)
def test_matches_rosinality_reference(space, truncation, code, image):
    ref = load_ref()
    # rosinality's float32 images, stored on another machine, in another order of operations
    # (modulating the weights, not the activations): within this network's float32 rounding
    # measured here (tests/support/references.py).
    G = _load(space, truncation=truncation)
    assert_matches_float32_reference(G, ref[code].reshape(3, -1), ref[image])
    with torch.no_grad():
        assert G(ref[code].reshape(3, -1)).std() > 0.1  # a real image, not a constant


def test_shapes_read_from_state_dict_and_checked():
    G = _load()
    cfg = G.module.cfg
    assert (cfg.size, cfg.style_dim, cfg.n_mlp, cfg.n_latent) == (32, 32, 3, 8)
    assert cfg.channels == {4: 16, 8: 16, 16: 16, 32: 8}
    with pytest.raises(GeometryError, match=r"size=64 was given but the weights have size=32"):
        _load(size=64)
    # The narrowed fixture matches no config-F channel table.
    with pytest.raises(GeometryError, match=r"channel_multiplier=2 was given but the weights have channel_multiplier="):
        _load(channel_multiplier=2)


def test_wplus_latent_dim_and_broadcast_equals_w():
    Gw, Gp = _load("w", truncation=0.5), _load("w+", truncation=0.5)
    assert Gp.latent_dim == 8 * 32 and Gw.latent_dim == 32
    w = Gw.sample(2, seed=1)
    wp = Gp.sample(2, seed=1)
    assert wp.shape == (2, 256)
    torch.testing.assert_close(wp, w.repeat(1, 8), atol=0, rtol=0)  # W+ samples: one w per input
    with torch.no_grad():
        torch.testing.assert_close(Gp(wp), Gw(w), atol=1e-6, rtol=0)


def test_z_equals_w_of_mapping_and_noise_is_fixed():
    Gz, Gw = _load("z", truncation=0.7), _load("w", truncation=0.7)
    z = Gz.sample(2, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(Gw(Gz.module.mapping(z)), Gz(z), atol=1e-6, rtol=0)
        assert torch.equal(Gz(z), Gz(z))
    torch.testing.assert_close(Gw.sample(2, seed=3), Gz.module.map_codes(z).float(), atol=1e-5, rtol=0)


def test_layer_names_resolve_in_forward_order():
    ref = load_ref()
    Gz, Gw = _load("z"), _load("w")
    assert Gz.layer_names[:4] == ["mapping.1", "mapping.2", "mapping.3", "synthesis.conv1"]
    assert Gw.layer_names[0] == "synthesis.conv1" and "mapping.1" not in Gw.layer_names
    assert Gz.layer_names[-1] == "synthesis.to_rgbs.2" and len(Gz.layer_names) == 3 + 2 + 3 * 3
    with torch.no_grad():
        outs = layers_map(Gz, Gz.layer_names)(ref["z"])
        assert all(o.shape[0] == 3 for o in outs)
        # mapping.1 is the first linear layer of the mapping, as in rosinality's style[:2]
        # One float32 linear layer of 32 inputs: within 64 units of float32 roundoff of the largest output.
        atol = 64 * 2.0 ** -24 * float(ref["mapping_1"].abs().max())
        torch.testing.assert_close(outs[0].reshape(3, -1), ref["mapping_1"], atol=atol, rtol=0)
        layers_map(Gw, Gw.layer_names)(ref["w"])


def test_forward_mode_jvp_matches_central_difference():
    G = _load("z", truncation=0.7).to(dtype=torch.float64)
    z = G.sample(2, seed=0, dtype=torch.float64)
    v = torch.randn(z.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    _, tangent = jvp(G, (z,), (v,))
    eps = 1e-6  # float64 central difference: error O(eps^2) + rounding O(1e-16 / eps)
    with torch.no_grad():
        fd = (G(z + eps * v) - G(z - eps * v)) / (2 * eps)
    torch.testing.assert_close(tangent, fd, atol=1e-7, rtol=1e-6)
    # vmap over tangents (how method="exact" batches them) gives the same columns, with no fallback.
    tangents = torch.stack([v, 2 * v, -v])
    cols = vmap(lambda t: jvp(G, (z,), (t,))[1])(tangents)
    torch.testing.assert_close(cols, torch.stack([tangent, 2 * tangent, -tangent]), atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("space", ["z", "w"])
def test_exact_metric_equals_backprop(space):
    G = _load(space, truncation=0.7)
    d = gc.load_distance("mse")
    z = G.sample(1, seed=2)[0]
    H_exact = gc.metric_tensor(G, d, z, method="exact")
    H_bp = gc.metric_tensor(G, d, z, method="bp")
    # Two float32 differentiation orders of one matrix: agree to 1e-5 of its largest entry.
    torch.testing.assert_close(H_exact, H_bp, atol=1e-5 * H_bp.abs().max().item(), rtol=0)
    assert H_bp.abs().max() > 0


def test_odd_state_dicts_name_the_key(tmp_path):
    cases = {
        "extra": (lambda sd: sd.__setitem__("foo.bar", torch.zeros(1)), r"unexpected key 'foo\.bar'"),
        "missing": (
            lambda sd: sd.pop("convs.1.conv.modulation.weight"),
            r"missing key 'convs\.1\.conv\.modulation\.weight'",
        ),
        "shape": (
            lambda sd: sd.__setitem__("to_rgbs.0.bias", torch.zeros(1, 4, 1, 1)),
            r"'to_rgbs\.0\.bias' has shape \(4,\), expected \(3,\)",
        ),
        "blur": (
            lambda sd: sd["convs.0.conv.blur.kernel"].mul_(2),
            r"'convs\.0\.conv\.blur\.kernel' is not the \[1, 3, 3, 1\]",
        ),
        "mapping": (lambda sd: sd.pop("style.1.weight"), r"missing key 'style\.1\.weight'"),
        "dtype": (
            lambda sd: sd.__setitem__("input.input", torch.zeros(1, 16, 4, 4, dtype=torch.int64)),
            r"'input\.input' has dtype",
        ),
    }
    for name, (edit, message) in cases.items():
        path = save_variant(tmp_path / f"{name}.pt", edit)
        with pytest.raises(GeometryError, match=message):
            load_generator("stylegan2", weights=path)


def test_checkpoint_without_noise_or_latent_avg(tmp_path):
    path = save_variant(tmp_path / "old.pt", lambda sd: [sd.pop(k) for k in list(sd) if k.startswith("noises.")],
                        latent_avg=False)
    a = load_generator("stylegan2", weights=path, truncation=0.5)
    b = load_generator("stylegan2", weights=path, truncation=0.5)
    c = load_generator("stylegan2", weights=path, truncation=0.5, noise_seed=1)
    z = a.sample(2)
    with torch.no_grad():
        assert torch.equal(a(z), b(z)) and not torch.allclose(a(z), c(z), atol=1e-4)
    assert a.module.latent_avg.abs().sum() > 0  # mean of the mapping, not zeros


def test_build_stylegan2_random_weights():
    state = torch.random.get_rng_state()
    G = build_stylegan2(size=16, style_dim=16, n_mlp=2, space="w+", seed=3, truncation=0.8)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    assert G.latent_dim == 6 * 16 and G.dtype == torch.float32
    H = build_stylegan2(size=16, style_dim=16, n_mlp=2, space="w+", seed=3, truncation=0.8)
    z = G.sample(2)
    with torch.no_grad():
        x = G(z)
        assert x.shape == (2, 3, 16, 16) and torch.equal(x, H(z)) and 0.05 < x.std() < 0.9
    with pytest.raises(GeometryError, match="unknown latent space 'y'"):
        build_stylegan2(size=16, style_dim=16, n_mlp=2, space="y")
    with pytest.raises(GeometryError, match="truncation must be in"):
        build_stylegan2(size=16, style_dim=16, n_mlp=2, truncation=0)


def test_one_name_table_reads_both_ways():
    """Every built-in parameter and buffer has a rosinality key that maps back to it, and no two share one."""
    from geometry_core.generators.stylegan2_builtin import build_stylegan2
    from geometry_core.generators.stylegan2_rosinality import builtin_name, rosinality_name

    net = build_stylegan2(size=32, style_dim=8, n_mlp=3, channel_multiplier=1).module
    names = list(net.state_dict())
    keys = {n: rosinality_name(n) for n in names}
    assert len(set(keys.values())) == len(names) and all(keys[n] != n for n in names)
    assert {n: builtin_name(k) for n, k in keys.items()} == {n: n for n in names}
    assert keys["synthesis.convs.0.noise"] == "noises.noise_1" and keys["mapping.3.bias"] == "style.3.bias"
