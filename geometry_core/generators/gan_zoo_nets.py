"""The generators of the PyTorch GAN zoo, in plain PyTorch ops.

Both nets are written here from the papers (PGGAN: Karras et al. 2018,
"Progressive Growing of GANs"; DCGAN: Radford et al. 2016) in the layout of
facebookresearch/pytorch_GAN_zoo, so its trained state dicts load into them.
They use only differentiable ``torch`` ops (no custom autograd Functions, no
in-place activations), so ``torch.func.jvp`` and ``vmap`` work and the exact
metric is available on every device (ARCHITECTURE.md, "Generators").

PGGAN, one scale after another (4, 8, 16, ... px)::

    z -> pixel norm -> equalized linear -> lrelu -> (B, d0, 4, 4) -> pixel norm
      -> equalized 3x3 conv -> lrelu -> pixel norm                 blocks.0
      -> [nearest 2x up -> 2 x (equalized 3x3 conv -> lrelu -> pixel norm)]  blocks.k
      -> equalized 1x1 toRGB of the last scale                      to_rgb.{n-1}
      -> (alpha > 0 only) blend with the upsampled toRGB of the scale below
      -> optional tanh

An equalized layer keeps N(0, 1) weights and multiplies its *whole* output
(bias included, as the zoo does) by He's constant ``sqrt(2 / fan_in)``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DCGANConfig", "DCGANNet", "PGGANConfig", "PGGANNet"]

_PIXEL_NORM_EPS = 1e-8  # the zoo's NormalizationLayer epsilon


def pixel_norm(x: torch.Tensor) -> torch.Tensor:
    """Each position's feature vector scaled to unit root-mean-square (over dim 1)."""
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + _PIXEL_NORM_EPS)


@dataclass(frozen=True)
class PGGANConfig:
    """A PGGAN generator: ``depths[k]`` channels at scale ``k`` (4 * 2**k px)."""

    latent_dim: int = 512
    depths: tuple[int, ...] = (512, 512, 512, 512, 256, 128, 64)
    leak: float = 0.2
    equalized: bool = True
    normalize_latent: bool = True
    alpha: float = 0.0
    tanh: bool = False
    out_channels: int = 3

    @property
    def resolution(self) -> int:
        return 4 * 2 ** (len(self.depths) - 1)


class _Equalized(nn.Module):
    """A linear or conv layer whose output is scaled by ``sqrt(2 / fan_in)``."""

    def __init__(self, weight_shape: tuple[int, ...], *, equalized: bool, padding: int = 0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(weight_shape))
        self.bias = nn.Parameter(torch.zeros(weight_shape[0]))
        self.padding = padding
        self.scale = math.sqrt(2.0 / math.prod(weight_shape[1:])) if equalized else 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.ndim == 2:
            y = F.linear(x, self.weight, self.bias)
        else:
            y = F.conv2d(x, self.weight, self.bias, padding=self.padding)
        return y * self.scale


class _FirstBlock(nn.Module):
    """Latent -> (B, d0, 4, 4): the format layer and the 4x4 conv."""

    def __init__(self, cfg: PGGANConfig) -> None:
        super().__init__()
        d0 = cfg.depths[0]
        self.leak = cfg.leak
        self.normalize_latent = cfg.normalize_latent
        self.fc = _Equalized((16 * d0, cfg.latent_dim), equalized=cfg.equalized)
        self.conv = _Equalized((d0, d0, 3, 3), equalized=cfg.equalized, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = pixel_norm(z) if self.normalize_latent else z
        x = F.leaky_relu(self.fc(x), self.leak)
        x = pixel_norm(x.reshape(x.shape[0], -1, 4, 4))
        return pixel_norm(F.leaky_relu(self.conv(x), self.leak))


class _UpBlock(nn.Module):
    """Nearest 2x upsampling then two 3x3 convs, each followed by lrelu and pixel norm."""

    def __init__(self, c_in: int, c_out: int, cfg: PGGANConfig) -> None:
        super().__init__()
        self.leak = cfg.leak
        self.conv0 = _Equalized((c_out, c_in, 3, 3), equalized=cfg.equalized, padding=1)
        self.conv1 = _Equalized((c_out, c_out, 3, 3), equalized=cfg.equalized, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = pixel_norm(F.leaky_relu(self.conv0(x), self.leak))
        return pixel_norm(F.leaky_relu(self.conv1(x), self.leak))


class PGGANNet(nn.Module):
    """PGGAN generator, (B, latent_dim) -> (B, 3, R, R); see the module docstring."""

    def __init__(self, cfg: PGGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.depths
        blocks: list[nn.Module] = [_FirstBlock(cfg)]
        blocks += [_UpBlock(d[k - 1], d[k], cfg) for k in range(1, len(d))]
        self.blocks = nn.ModuleList(blocks)
        self.to_rgb = nn.ModuleList(
            _Equalized((cfg.out_channels, c, 1, 1), equalized=cfg.equalized) for c in d
        )

    @property
    def layer_names(self) -> list[str]:
        """Each scale's block output, then the last toRGB (the image before any tanh)."""
        return [f"blocks.{k}" for k in range(len(self.blocks))] + [f"to_rgb.{len(self.blocks) - 1}"]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z
        for block in self.blocks[:-1]:
            x = block(x)
        below = x
        x = self.to_rgb[-1](self.blocks[-1](x))
        if self.cfg.alpha > 0 and len(self.blocks) > 1:
            # Fading in the newest scale: the scale below, upsampled, weighs alpha.
            y = F.interpolate(self.to_rgb[-2](below), scale_factor=2, mode="nearest")
            x = self.cfg.alpha * y + (1.0 - self.cfg.alpha) * x
        return torch.tanh(x) if self.cfg.tanh else x


@dataclass(frozen=True)
class DCGANConfig:
    """The zoo's DCGAN: ``base * 2**n_up`` channels at 4x4, halved per 2x upsampling."""

    latent_dim: int = 120
    base: int = 64
    n_up: int = 3
    tanh: bool = True
    out_channels: int = 3

    @property
    def resolution(self) -> int:
        return 2 ** (self.n_up + 3)


class DCGANNet(nn.Module):
    """DCGAN generator, (B, latent_dim) -> (B, 3, R, R); BatchNorm uses running statistics."""

    def __init__(self, cfg: DCGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.base * 2**cfg.n_up
        self.formatLayer = nn.ConvTranspose2d(cfg.latent_dim, c, 4, 1, 0, bias=False)
        seq: OrderedDict[str, nn.Module] = OrderedDict()
        seq["batchNorm0"] = nn.BatchNorm2d(c)
        seq["relu0"] = nn.ReLU()
        for i in range(1, cfg.n_up + 1):
            seq[f"convTranspose{i}"] = nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False)
            seq[f"batchNorm{i}"] = nn.BatchNorm2d(c // 2)
            seq[f"relu{i}"] = nn.ReLU()
            c //= 2
        seq["outlayer"] = nn.ConvTranspose2d(c, cfg.out_channels, 4, 2, 1, bias=False)
        self.main = nn.Sequential(seq)

    @property
    def layer_names(self) -> list[str]:
        """Each block's ReLU output, then the last transposed conv (before tanh)."""
        return [f"main.relu{i}" for i in range(self.cfg.n_up + 1)] + ["main.outlayer"]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.main(self.formatLayer(z.reshape(z.shape[0], z.shape[1], 1, 1)))
        return torch.tanh(x) if self.cfg.tanh else x
