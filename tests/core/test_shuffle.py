"""The weight-shuffled control keeps every tensor's values and moves them."""

from __future__ import annotations

import pytest
import torch

from geometry_core.errors import GeometryError
from geometry_core.generators import load_generator
from geometry_core.shuffle import shuffle_weights


def _params(G):
    return {n: p.detach().clone() for n, p in G.named_parameters()}


def test_shuffle_keeps_multisets_moves_values_and_leaves_original(dcgan):
    before = _params(dcgan)
    buffers_before = {n: b.clone() for n, b in dcgan.named_buffers()}
    S = shuffle_weights(dcgan, seed=1)
    after = _params(S)
    assert list(after) == list(before) and len(after) > 0
    for name, p in before.items():
        q = after[name]
        assert q.shape == p.shape
        torch.testing.assert_close(q.flatten().sort().values, p.flatten().sort().values, rtol=0, atol=0)
        if p.numel() > 10:
            # A random permutation leaves ~1/numel entries in place; ties among equal values add few.
            assert (q == p).float().mean() < 0.5, name
    for name, p in _params(dcgan).items():  # the original is untouched
        assert torch.equal(p, before[name])
    for name, b in S.named_buffers():  # running stats kept by default
        assert torch.equal(b, buffers_before[name])
    assert S.name == "dcgan-faces-shuffled1" and dcgan.name == "dcgan-faces"


def test_shuffle_is_deterministic_per_seed(nonlinear_generator):
    a = _params(shuffle_weights(nonlinear_generator, seed=7))
    b = _params(shuffle_weights(nonlinear_generator, seed=7))
    c = _params(shuffle_weights(nonlinear_generator, seed=8))
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)


def test_shuffle_buffers_option_permutes_float_buffers(dcgan):
    S = shuffle_weights(dcgan, seed=2, buffers=True)
    orig = dict(dcgan.named_buffers())
    moved = 0
    for name, b in S.named_buffers():
        o = orig[name]
        if b.is_floating_point():
            torch.testing.assert_close(b.flatten().sort().values, o.flatten().sort().values, rtol=0, atol=0)
            moved += int(not torch.equal(b, o))
        else:
            assert torch.equal(b, o)  # num_batches_tracked and other integers untouched
    assert moved > 0


def test_shuffled_generator_still_generates(dcgan):
    S = shuffle_weights(dcgan, seed=3)
    z = dcgan.sample(2, seed=0)
    x, x0 = S(z), dcgan(z)
    assert x.shape == x0.shape and torch.isfinite(x).all()
    assert not torch.allclose(x, x0)


def test_registry_option_uses_shuffle(dcgan):
    S = load_generator("dcgan-faces", shuffle_seed=1)
    ref = shuffle_weights(dcgan, seed=1)
    for (n, p), (_, q) in zip(S.named_parameters(), ref.named_parameters()):
        assert torch.equal(p, q), n


@pytest.mark.parametrize("seed", [None, 1.5, "1", True])
def test_bad_seed_is_refused(nonlinear_generator, seed):
    with pytest.raises(GeometryError, match="seed must be an int"):
        shuffle_weights(nonlinear_generator, seed)
