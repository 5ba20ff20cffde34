"""PGGAN and DCGAN generators of facebookresearch's PyTorch GAN zoo.

Example::

    from geometry_core.generators import load_generator
    G = load_generator("pggan", weights="celebaHQ_s6_i80000-6196db68.pth")   # 512-d, 256 px
    G = load_generator("dcgan-fashion", weights="DCGAN_fashionGen-1d67302.pth")  # 120-d, 64 px
    x = G(G.sample(4))                                                        # (4, 3, H, W)

    from geometry_core.generators.gan_zoo import build_pggan
    G = build_pggan(resolution=256, seed=0)     # the celebAHQ-256 shape, random weights

The architectures live in :mod:`.gan_zoo_nets`. PGGAN's output is the zoo's raw
toRGB output (its WGAN-GP models have no final tanh): close to [-1, 1] but not
clamped, because a clamp would zero the Jacobian of saturated pixels; the zoo
clamps only when it writes images.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from ..errors import GeometryError
from .base import Generator
from .gan_zoo_file import infer_dcgan, infer_pggan, load_renamed, pggan_zoo_key, read_zoo_file
from .gan_zoo_nets import DCGANConfig, DCGANNet, PGGANConfig, PGGANNet

__all__ = ["PGGAN_DEPTHS", "build_dcgan_fashion", "build_pggan", "load_dcgan_fashion", "load_pggan"]

# Channels per scale (4, 8, ..., 1024 px) of the zoo's PGGAN training configuration.
PGGAN_DEPTHS = (512, 512, 512, 512, 256, 128, 64, 32, 16)

_M = TypeVar("_M", bound=nn.Module)


def _check_int(name: str, value: object, *, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise GeometryError(f"{name} must be an int >= {lo}, got {value!r}")
    return value


def _randomize(net: _M, seed: int, init) -> _M:
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(init(name, p, gen))
    return net


def _pggan_init(name: str, p: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    # The zoo's equalized layers start from N(0, 1) weights and zero biases.
    if name.endswith("bias"):
        return torch.zeros_like(p)
    return torch.randn(p.shape, generator=gen, dtype=p.dtype)


def _dcgan_init(name: str, p: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    # DCGAN's initialisation: convs N(0, 0.02), BatchNorm scales N(1, 0.02), shifts 0.
    if "batchNorm" in name and name.endswith("bias"):
        return torch.zeros_like(p)
    mean = 1.0 if "batchNorm" in name else 0.0
    return mean + 0.02 * torch.randn(p.shape, generator=gen, dtype=p.dtype)


def pggan_generator(net: PGGANNet, *, name: str = "pggan") -> Generator:
    """Wrap a :class:`PGGANNet` as a frozen Generator with one named layer per scale."""
    return Generator(net, net.cfg.latent_dim, name=name, layer_names=net.layer_names)


def dcgan_generator(net: DCGANNet, *, name: str = "dcgan-fashion") -> Generator:
    """Wrap a :class:`DCGANNet` as a frozen Generator with one named layer per block."""
    return Generator(net, net.cfg.latent_dim, name=name, layer_names=net.layer_names)


def build_pggan(*, resolution: int = 256, latent_dim: int = 512, seed: int = 0) -> Generator:
    """A PGGAN generator in the zoo's configuration, random weights, float32.

    ``resolution`` 256 is the celebAHQ-256 model (7 scales, 512-d latent), 512
    the celebAHQ-512 one; channels per scale follow :data:`PGGAN_DEPTHS`.
    """
    _check_int("build_pggan: latent_dim", latent_dim)
    sizes = [4 * 2**k for k in range(len(PGGAN_DEPTHS))]
    if resolution not in sizes:
        raise GeometryError(f"build_pggan: resolution must be one of {sizes}, got {resolution!r}")
    cfg = PGGANConfig(latent_dim=latent_dim, depths=PGGAN_DEPTHS[: sizes.index(resolution) + 1])
    return pggan_generator(_randomize(PGGANNet(cfg), seed, _pggan_init))


def build_dcgan_fashion(*, latent_dim: int = 120, seed: int = 0) -> Generator:
    """The zoo's DCGAN (fashionGen shape: 120-d, 64 px, 512 channels at 4x4), random weights."""
    _check_int("build_dcgan_fashion: latent_dim", latent_dim)
    return dcgan_generator(_randomize(DCGANNet(DCGANConfig(latent_dim=latent_dim)), seed, _dcgan_init))


def load_pggan(*, space: str = "z", weights: str | Path | None = None, net: str | None = None) -> Generator:
    """A trained PGGAN from a pytorch_GAN_zoo file (``BaseGAN.save`` layout or a bare GNet state dict).

    The scales, channels and latent size come from the state dict; pixel
    norm, equalized learning rate, leak, blending ``alpha`` and the final
    activation from the file's config. ``net`` picks ``"avgG"`` (the moving
    average generator, the default when present) or ``"netG"``.
    """
    state, config, what = read_zoo_file(weights, name="pggan", net=net)
    cfg = infer_pggan(state, config, what=what)
    model = PGGANNet(cfg)
    load_renamed(model, state, pggan_zoo_key, what=what)
    return pggan_generator(model)


def load_dcgan_fashion(*, space: str = "z", weights: str | Path | None = None, net: str | None = None) -> Generator:
    """A trained GAN-zoo DCGAN (fashionGen: 120-d, 64 px) from a pytorch_GAN_zoo file.

    Sizes come from the state dict, the final tanh from the file's loss
    (``DCGAN`` and ``MSE`` end in tanh). BatchNorm uses its running statistics,
    so an image depends on its own code only (the zoo's ``test()`` leaves the
    net in training mode, where it would depend on the rest of the batch).
    """
    state, config, what = read_zoo_file(weights, name="dcgan-fashion", net=net)
    cfg = infer_dcgan(state, config, what=what)
    model = DCGANNet(cfg)
    load_renamed(model, state, lambda key: key, what=what)
    return dcgan_generator(model)
