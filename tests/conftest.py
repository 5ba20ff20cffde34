"""Fixtures every suite may name: small float64 generators, the face DCGAN, MSE, and
the session's S3 server and embedded Ray, and a multi-node Ray cluster on loopback
(from ``tests/support``).

Suites keep fixtures only they use in their own files; nothing is imported from
another test module (shared helpers live in ``tests/support``).
"""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from geometry_core.distances.mse import MSEDistance
from geometry_core.generators.base import Generator
from geometry_core.generators.dcgan_faces import load_dcgan_faces
from tests.support.mirror import mirror
from tests.support.ray_cluster import ray_cluster
from tests.support.ray_fixture import ray_local
from tests.support.s3_server import DUMMY_ENV, s3_server

__all__ = ["dcgan", "linear_generator", "make_linear_generator", "mirror", "mse", "nonlinear_generator",
           "ray_cluster", "ray_local", "s3_server"]

# Tests never reach the network: a backbone missing from the cache is an error, not a download.
os.environ.setdefault("GANGEO_OFFLINE", "1")
# Credentials never travel in a runtime_env: Ray workers inherit them from the environment of
# whichever test starts Ray first, as on a real node, so the dummies for moto are set up front.
for _key, _value in DUMMY_ENV.items():
    os.environ.setdefault(_key, _value)

IMAGE_SHAPE = (3, 4, 4)


class _ToImage(nn.Module):
    """(B, 3 * 4 * 4) -> (B, 3, 4, 4)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *IMAGE_SHAPE)


def _linear_generator(A: torch.Tensor, b: torch.Tensor) -> Generator:
    """``G(z) = A z + b`` reshaped to (3, 4, 4) images, float64."""
    M, D = A.shape
    lin = nn.Linear(D, M, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(A)
        lin.bias.copy_(b)
    return Generator(nn.Sequential(lin, _ToImage()), D, name="linear", layer_names=["0"])


@pytest.fixture
def make_linear_generator():
    """Factory: ``make_linear_generator(A, b)`` -> a float64 Generator with ``G(z) = A z + b``."""
    return _linear_generator


@pytest.fixture
def linear_generator() -> Generator:
    """``G(z) = A z + b`` with D = 6 and 3x4x4 images, float64; ``A`` is ``G.module[0].weight``."""
    gen = torch.Generator().manual_seed(1)
    M = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]
    A = torch.randn(M, 6, generator=gen, dtype=torch.float64) / M**0.5
    b = torch.randn(M, generator=gen, dtype=torch.float64) * 0.1
    return _linear_generator(A, b)


@pytest.fixture
def nonlinear_generator() -> Generator:
    """A two-layer tanh MLP, D = 5 -> 3x4x4 images in [-1, 1], float64, fixed seed."""
    torch.manual_seed(2)
    M = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]
    net = nn.Sequential(
        nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, M), nn.Tanh(), _ToImage()
    ).to(torch.float64)
    return Generator(net, 5, name="mlp", layer_names=["1", "3"])


@pytest.fixture(scope="session")
def dcgan() -> Generator:
    """The shipped face DCGAN (100-d latent, 64x64), float32 on CPU."""
    return load_dcgan_faces()


@pytest.fixture
def mse() -> MSEDistance:
    return MSEDistance()
