"""StyleGAN2 from rosinality-format checkpoints, in Z or W space, with fixed noise.

Example::

    G = load_generator("stylegan2", space="w", weights="stylegan2-ffhq-config-f.pt")   # built-in
    G = load_generator("stylegan2", space="w", weights="stylegan2-ffhq-config-f.pt",
                       size=1024, arch="model:Generator", allow_import=True)   # user's class

Without ``arch`` the built-in plain-PyTorch architecture
(``stylegan2_arch``) loads rosinality checkpoints and NVIDIA pickles, its
shapes read from the file (``stylegan2_builtin.load_builtin``). Other architectures come
from a module the user names with ``arch="package.module:Generator"`` and
opts into with ``allow_import=True``. Such a class must follow rosinality's
interface: ``Generator(size, style_dim, n_mlp, channel_multiplier=...)``, a
mapping network ``.style``, and
``forward(styles, input_is_latent=..., noise=None, randomize_noise=...,
truncation=..., truncation_latent=...) -> (image, latents)``.

The checkpoint is ``{"g_ema": state_dict, "latent_avg": (style_dim,)}`` (other
entries, such as the training ``args``, are ignored). Noise is fixed: the
``noises.noise_i`` buffers of the checkpoint, or, where an older checkpoint
lacks them, normal draws seeded by ``noise_seed``. Images are clamped to
[-1, 1] as the paper's wrapper did (``clamp=False`` keeps the raw output).
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import torch
from torch import nn

from ..errors import GeometryError
from .base import Generator
from .checkpoint import load_state_dict_strict
from .module import check_output, import_arch, no_inplace_activations
from .stylegan2_builtin import MappedSpace, build_stylegan2, check_space, fill_noise, load_builtin, synthesis_layers
from .stylegan2_rosinality import read_rosinality

__all__ = ["StyleGAN2Space", "build_stylegan2", "load_stylegan2"]

_ARCH_SPACES = ("z", "w")  # the import route: rosinality's forward has no W+ input
_NOISE_KEY = r"noises\.noise_\d+"


class StyleGAN2Space(MappedSpace, nn.Module):
    """A rosinality-style generator as a map from Z or W codes to images."""

    def __init__(self, net: nn.Module, space: str, truncation: float, latent_avg: torch.Tensor | None, clamp: bool):
        super().__init__()
        self.g_ema = net
        self.space = space
        self.truncation = float(truncation)
        self.clamp = clamp
        self.style_dim = int(cast(int, net.style_dim))  # an int attribute of the user's class, not a tensor
        self.n_latent = 1  # the import route takes one w (no W+)
        avg = torch.zeros(1, self.style_dim) if latent_avg is None else latent_avg.reshape(1, -1)
        self.register_buffer("latent_avg", avg.to(torch.float32))

    def mapping_net(self) -> nn.Module:
        return cast(nn.Module, self.g_ema.style)  # rosinality's mapping network

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        kwargs: dict[str, object] = {"input_is_latent": self.space == "w", "randomize_noise": False}
        if self.truncation < 1:
            kwargs.update(truncation=self.truncation, truncation_latent=self.latent_avg)
        out = self.g_ema([z], **kwargs)
        image = out[0] if isinstance(out, (tuple, list)) else out
        return image.clamp(-1, 1) if self.clamp else image


def _layer_names(net: nn.Module) -> list[str]:
    known = {f"g_ema.{n}" for n, _ in net.named_modules()}
    return [n for n in synthesis_layers("g_ema.", len(getattr(net, "to_rgbs", []))) if n in known]


def load_stylegan2(
    *,
    space: str = "z",
    weights: str | Path | None = None,
    size: int | None = None,
    arch: str | None = None,
    allow_import: bool = False,
    style_dim: int | None = None,
    n_mlp: int | None = None,
    channel_multiplier: int | None = None,
    truncation: float = 1.0,
    noise_seed: int = 0,
    clamp: bool = True,
) -> Generator:
    """StyleGAN2 in ``space`` "z" (mapping input), "w" (its output) or "w+" (one w per synthesis input).

    Without ``arch`` the built-in architecture is used and its shapes are read
    from ``weights``: a rosinality checkpoint (``.pt``) or an NVIDIA
    StyleGAN2-ADA pickle (``.pkl``, read without running any of its code);
    ``size`` / ``style_dim`` / ``n_mlp`` / ``channel_multiplier``, when given,
    are checked against the file. With ``arch`` (and ``allow_import=True``)
    the named rosinality-interface class is built instead (Z and W only).
    ``truncation`` < 1 pulls every w toward ``latent_avg`` (from the file, or
    the mean of the mapping over 4096 codes seeded 0), in every space, so
    ``G_w(mapping(z)) == G_z(z)``. W-space samples are ``mapping(z)``.
    """
    check_space(space, truncation)
    if weights is None:
        raise GeometryError("stylegan2: needs weights=PATH (rosinality .pt checkpoint or NVIDIA .pkl)")
    if arch is None:
        expected = dict(size=size, style_dim=style_dim, n_mlp=n_mlp, channel_multiplier=channel_multiplier)
        return load_builtin(weights, space=space, truncation=truncation, noise_seed=noise_seed, clamp=clamp,
                            expected=expected)
    if space not in _ARCH_SPACES:
        raise GeometryError(f"stylegan2: arch= supports the spaces {list(_ARCH_SPACES)}, got {space!r}")
    if size is None:
        raise GeometryError("stylegan2: arch= needs size=int (image side)")
    style_dim = 512 if style_dim is None else style_dim
    n_mlp = 8 if n_mlp is None else n_mlp
    channel_multiplier = 2 if channel_multiplier is None else channel_multiplier
    cls = import_arch(arch, allow_import=allow_import, what="stylegan2")
    state, latent_avg = read_rosinality(weights)
    try:
        net = cls(size, style_dim, n_mlp, channel_multiplier=channel_multiplier)
    except (TypeError, ValueError, RuntimeError) as err:
        raise GeometryError(f"stylegan2: {arch}({size}, {style_dim}, {n_mlp}, ...) failed: {err}") from None
    missing = load_state_dict_strict(net, state, what="stylegan2 g_ema", allow_missing=_NOISE_KEY)
    own = net.state_dict()
    fill_noise([own[k] for k in sorted(missing, key=lambda k: int(k.rsplit("_", 1)[1]))], noise_seed)
    no_inplace_activations(net)
    net.eval()
    if latent_avg is not None and latent_avg.numel() != style_dim:
        raise GeometryError(f"stylegan2: latent_avg has {latent_avg.numel()} entries, expected style_dim={style_dim}")
    module = StyleGAN2Space(net, space, float(truncation), latent_avg, clamp)
    if latent_avg is None and truncation < 1:
        module.set_mean_latent(0)
    G = Generator(
        module,
        module.style_dim,
        name=f"stylegan2/{space}",
        layer_names=_layer_names(net),
        sampler=module.sample_codes,
    )
    check_output(G, range_check=False)
    return G
