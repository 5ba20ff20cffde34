"""The StyleGAN2 generator (config F, skip outputs) in plain PyTorch ops.

Example::

    net = StyleGAN2Net(StyleGAN2Config.standard(size=256, style_dim=512, n_mlp=8))
    img = net(torch.randn(2, 512))                      # (2, 3, 256, 256)

Written from the paper (Karras et al. 2020, "Analyzing and Improving the Image
Quality of StyleGAN", Sec. 2 and App. B): a mapping network of ``n_mlp``
equalized-lr linear layers (learning-rate multiplier 0.01) after a pixel norm of
``z``; a constant 4x4 input; per layer a style-modulated convolution with weight
demodulation, fixed per-layer noise scaled by a learned strength, a bias and a
leaky ReLU with gain sqrt(2); per resolution a 1x1 modulated "to RGB"
convolution (no demodulation) added to the 2x-upsampled running image.
Upsampling is a zero-stuffing transposed convolution followed by the binomial
filter [1, 3, 3, 1] (outer product, normalised, times 4) as a depthwise
convolution. Nothing here is a custom autograd Function, so ``torch.func.jvp``
and ``vmap`` work on every device.

The modulated convolution scales the input by the style and the output by the
demodulation coefficients around one convolution whose weight is shared by the
batch; that equals modulating the weight per sample (the paper's Eq. 1-3) and
keeps forward-mode tangents out of the weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["StyleGAN2Config", "StyleGAN2Net", "blur_kernel", "standard_channels"]

_LRELU_SLOPE = 0.2
_LRELU_GAIN = math.sqrt(2.0)  # keeps the activations' second moment (He init)
_EPS = 1e-8  # inside the rsqrt of the pixel norm and of demodulation, as in the paper's code
_BLUR_TAPS = (1.0, 3.0, 3.0, 1.0)


def standard_channels(size: int, channel_multiplier: int = 2) -> dict[int, int]:
    """Channels per resolution of the paper's config F (512 up to 32 px, then halving)."""
    base = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
    return {r: c if r <= 32 else c * channel_multiplier for r, c in base.items() if r <= size}


@dataclass(frozen=True)
class StyleGAN2Config:
    """Shapes of one generator: image side, style size, mapping depth, channels per resolution."""

    size: int
    style_dim: int
    n_mlp: int
    channels: dict[int, int] = field(default_factory=dict)
    lr_mlp: float = 0.01
    conv_clamp: float | None = None  # NVIDIA's networks clamp activations to +-256; rosinality's do not

    @classmethod
    def standard(cls, size: int, style_dim: int, n_mlp: int, channel_multiplier: int = 2) -> "StyleGAN2Config":
        return cls(size, style_dim, n_mlp, standard_channels(size, channel_multiplier))

    @property
    def log_size(self) -> int:
        return int(math.log2(self.size))

    @property
    def n_latent(self) -> int:
        """Number of w inputs of the synthesis network (one per conv, the last to-RGB shares)."""
        return 2 * self.log_size - 2


def blur_kernel(gain: float) -> torch.Tensor:
    """The [1, 3, 3, 1] blur as a normalised 2-D kernel times ``gain``, float32 (shared by the weight readers)."""
    taps = torch.tensor(_BLUR_TAPS, dtype=torch.float64)
    k = torch.outer(taps, taps)
    return (k / k.sum() * gain).to(torch.float32)


def _blur(x: torch.Tensor, kernel: torch.Tensor, pad0: int, pad1: int) -> torch.Tensor:
    # FIR filter as a depthwise convolution; flipped so it is a true convolution.
    c = x.shape[-3]
    k = kernel.flip(0, 1).to(x.dtype).expand(c, 1, *kernel.shape)
    return F.conv2d(F.pad(x, (pad0, pad1, pad0, pad1)), k, groups=c)


def _upsample2x(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    # Zero-stuff to 2H x 2W (each sample followed by a zero), then filter.
    *lead, h, w = x.shape
    x = F.pad(x.unsqueeze(-1), (0, 1)).reshape(*lead, h, 2 * w)
    x = F.pad(x.unsqueeze(-2), (0, 0, 0, 1)).reshape(*lead, 2 * h, 2 * w)
    return _blur(x, kernel, 2, 1)


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + _EPS)


class EqualLinear(nn.Module):
    """``x W^T * lr/sqrt(in) + b * lr`` (equalized learning rate), optionally with a scaled leaky ReLU."""

    def __init__(self, in_dim: int, out_dim: int, *, lr_mul: float = 1.0, bias_init: float = 0.0, activate=False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.weight_gain = lr_mul / math.sqrt(in_dim)
        self.bias_gain = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return F.leaky_relu(x, _LRELU_SLOPE) * _LRELU_GAIN if self.activate else x


class ModulatedConv(nn.Module):
    """Style-modulated k x k convolution, demodulated or not, optionally upsampling 2x."""

    blur_kernel: torch.Tensor  # buffer, registered when ``up``

    def __init__(self, in_ch: int, out_ch: int, k: int, style_dim: int, *, demodulate: bool, up: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, k, k))
        self.affine = EqualLinear(style_dim, in_ch, bias_init=1.0)
        self.weight_gain = 1.0 / math.sqrt(in_ch * k * k)
        self.demodulate, self.up = demodulate, up
        if up:
            self.register_buffer("blur_kernel", blur_kernel(4.0), persistent=False)

    def modulated_conv(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        s = self.affine(w)  # (B, in)
        weight = self.weight * self.weight_gain
        x = x * s[:, :, None, None]
        if self.up:
            # Transposed conv (stride 2) gives 2H+1; the blur's (1, 1) padding brings it to 2H.
            x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
            x = _blur(x, self.blur_kernel, 1, 1)
        else:
            x = F.conv2d(x, weight, padding=weight.shape[-1] // 2)
        if self.demodulate:
            # sum over (in, kh, kw) of (weight * s)^2, per sample and output channel
            d = torch.rsqrt(s.pow(2) @ weight.pow(2).sum((2, 3)).T + _EPS)
            x = x * d[:, :, None, None]
        return x


class StyledConv(ModulatedConv):
    """Modulated 3x3 conv, plus fixed noise times a learned strength, bias, scaled leaky ReLU."""

    noise: torch.Tensor  # buffer

    def __init__(self, in_ch: int, out_ch: int, style_dim: int, resolution: int, *, up: bool, clamp: float | None):
        super().__init__(in_ch, out_ch, 3, style_dim, demodulate=True, up=up)
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.register_buffer("noise", torch.randn(1, 1, resolution, resolution))
        self.clamp = clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = self.modulated_conv(x, w) + self.noise_strength * self.noise
        x = F.leaky_relu(x + self.bias[:, None, None], _LRELU_SLOPE) * _LRELU_GAIN
        return x if self.clamp is None else x.clamp(-self.clamp, self.clamp)


class ToRGB(ModulatedConv):
    """1x1 modulated conv to RGB (no demodulation) plus bias; adds the upsampled running image."""

    up_kernel: torch.Tensor  # buffer

    def __init__(self, in_ch: int, style_dim: int, *, clamp: float | None):
        super().__init__(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(3))
        self.register_buffer("up_kernel", blur_kernel(4.0), persistent=False)
        self.clamp = clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        y = self.modulated_conv(x, w) + self.bias[:, None, None]
        if self.clamp is not None:
            y = y.clamp(-self.clamp, self.clamp)
        return y if skip is None else y + _upsample2x(skip, self.up_kernel)


class Synthesis(nn.Module):
    """Constant input -> (conv, to_rgb) at 4 px -> (up conv, conv, to_rgb) per doubling."""

    def __init__(self, cfg: StyleGAN2Config):
        super().__init__()
        ch, sd, clamp = cfg.channels, cfg.style_dim, cfg.conv_clamp
        self.const = nn.Parameter(torch.randn(1, ch[4], 4, 4))
        self.conv1 = StyledConv(ch[4], ch[4], sd, 4, up=False, clamp=clamp)
        self.to_rgb1 = ToRGB(ch[4], sd, clamp=clamp)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        for log_res in range(3, cfg.log_size + 1):
            res = 2**log_res
            self.convs.append(StyledConv(ch[res // 2], ch[res], sd, res, up=True, clamp=clamp))
            self.convs.append(StyledConv(ch[res], ch[res], sd, res, up=False, clamp=clamp))
            self.to_rgbs.append(ToRGB(ch[res], sd, clamp=clamp))
        self.n_latent = cfg.n_latent

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        """``ws`` (B, n_latent, style_dim) -> image (B, 3, size, size)."""
        x = self.const.expand(ws.shape[0], -1, -1, -1)
        x = self.conv1(x, ws[:, 0])
        img = self.to_rgb1(x, ws[:, 1], None)
        for i, to_rgb in enumerate(self.to_rgbs):
            x = self.convs[2 * i](x, ws[:, 2 * i + 1])
            x = self.convs[2 * i + 1](x, ws[:, 2 * i + 2])
            img = to_rgb(x, ws[:, 2 * i + 3], img)
        return img


class Mapping(nn.Sequential):
    """``mapping.0`` is the pixel norm of z, ``mapping.1`` ... ``mapping.n_mlp`` the linear layers."""

    def __init__(self, cfg: StyleGAN2Config):
        layers = [EqualLinear(cfg.style_dim, cfg.style_dim, lr_mul=cfg.lr_mlp, activate=True) for _ in range(cfg.n_mlp)]
        super().__init__(PixelNorm(), *layers)


class StyleGAN2Net(nn.Module):
    """Mapping plus synthesis; ``forward(z)`` is the whole generator without truncation."""

    def __init__(self, cfg: StyleGAN2Config):
        super().__init__()
        sizes = [2**i for i in range(2, cfg.log_size + 1)]
        if cfg.size not in (2**i for i in range(3, 11)) or any(r not in cfg.channels for r in sizes):
            raise ValueError(f"size must be a power of 2 in [8, 1024] with channels for {sizes}, got {cfg}")
        self.cfg = cfg
        self.mapping = Mapping(cfg)
        self.synthesis = Synthesis(cfg)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        w = self.mapping(z)
        return self.synthesis(w.unsqueeze(1).expand(-1, self.cfg.n_latent, -1))
