"""The built-in StyleGAN2 as a Generator in Z, W or W+ space, and its random-weights builder.

Example::

    G = build_stylegan2(size=256, style_dim=512, space="w")   # random weights, config F
    G.layer_names[:3]       # ['synthesis.conv1', 'synthesis.to_rgb1', 'synthesis.convs.0']

Spaces: ``z`` is the input of the mapping network,
``w`` its output (one w broadcast to every synthesis input), ``w+`` one w per
synthesis input (Abdal et al. 2019, Image2StyleGAN), flattened to ``n_latent * style_dim``
numbers (w index major).
Truncation ``psi < 1`` moves every w toward ``latent_avg``:
``w <- avg + psi (w - avg)``, in all three spaces, so ``G_w(mapping(z)) == G_z(z)``.
Noise is fixed (the per-layer ``noise`` buffers), so G is deterministic.
"""

from __future__ import annotations

import copy
import zipfile
from pathlib import Path

import torch

from ..errors import GeometryError
from .base import Generator
from .module import check_output
from .stylegan2_arch import StyleGAN2Config, StyleGAN2Net

__all__ = [
    "SPACES",
    "MappedSpace",
    "StyleGAN2",
    "build_stylegan2",
    "check_space",
    "fill_noise",
    "load_builtin",
    "load_builtin_state",
    "make_generator",
    "synthesis_layers",
]

SPACES = ("z", "w", "w+")
# Codes averaged through the mapping network when a checkpoint has no latent_avg.
_N_MEAN_LATENT = 4096


class MappedSpace:
    """What every StyleGAN2 wrapper shares: W codes from a float64 CPU copy of the mapping network (the same
    codes on any device), sampling in Z, W or W+, the mean latent, and the synthesis layers' forward order.

    A wrapper sets ``space``, ``style_dim``, ``n_latent`` and a ``latent_avg`` buffer, and names its mapping
    network in :meth:`mapping_net`.
    """

    space: str
    style_dim: int
    n_latent: int
    latent_avg: torch.Tensor

    def mapping_net(self) -> torch.nn.Module:
        raise NotImplementedError

    @torch.no_grad()
    def map_codes(self, z: torch.Tensor) -> torch.Tensor:
        """``w = mapping(z)`` on a float64 CPU copy of the mapping network."""
        mapping = copy.deepcopy(self.mapping_net()).to("cpu", torch.float64)
        return mapping(z.to("cpu", torch.float64))

    def sample_codes(self, n: int, gen: torch.Generator) -> torch.Tensor:
        # W+ samples repeat one mapped w per code: images of the trained distribution.
        z = torch.randn(n, self.style_dim, generator=gen, dtype=torch.float64)
        if self.space == "z":
            return z
        w = self.map_codes(z)
        return w if self.space == "w" else w.repeat(1, self.n_latent)

    def set_mean_latent(self, seed: int = 0) -> None:
        """``latent_avg`` <- mean of the mapping over 4096 codes seeded ``seed`` (a checkpoint without one)."""
        z = torch.randn(_N_MEAN_LATENT, self.style_dim, generator=torch.Generator().manual_seed(seed),
                        dtype=torch.float64)
        self.latent_avg.copy_(self.map_codes(z).mean(0).reshape(self.latent_avg.shape))


def synthesis_layers(prefix: str, n_rgb: int) -> list[str]:
    """Forward order of a StyleGAN2 synthesis network: conv1, to_rgb1, then two convs and a to_rgb per resolution."""
    names = ["conv1", "to_rgb1"]
    for i in range(n_rgb):
        names += [f"convs.{2 * i}", f"convs.{2 * i + 1}", f"to_rgbs.{i}"]
    return [f"{prefix}{n}" for n in names]


def fill_noise(buffers: list[torch.Tensor], seed: int) -> None:
    """Noise buffers a checkpoint lacks, in forward order, drawn from ``seed`` (so the draws are stable)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for buf in buffers:
            buf.copy_(torch.randn(buf.shape, generator=gen, dtype=torch.float64).to(buf.dtype))


class StyleGAN2(MappedSpace, StyleGAN2Net):
    """The network in one latent space, with truncation and an optional clamp to [-1, 1]."""

    def __init__(self, cfg: StyleGAN2Config, space: str, truncation: float = 1.0, clamp: bool = True):
        super().__init__(cfg)
        self.space, self.truncation, self.clamp = space, float(truncation), clamp
        self.style_dim, self.n_latent = cfg.style_dim, cfg.n_latent
        self.register_buffer("latent_avg", torch.zeros(cfg.style_dim), persistent=False)

    @property
    def latent_dim(self) -> int:
        n = self.cfg.n_latent if self.space == "w+" else 1
        return n * self.cfg.style_dim

    def mapping_net(self) -> torch.nn.Module:
        return self.mapping

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        n, d = self.cfg.n_latent, self.cfg.style_dim
        if self.space == "w+":
            ws = code.reshape(code.shape[0], n, d)
        else:
            w = self.mapping(code) if self.space == "z" else code
            ws = w.unsqueeze(1).expand(-1, n, -1)
        if self.truncation < 1:
            ws = self.latent_avg + self.truncation * (ws - self.latent_avg)
        img = self.synthesis(ws)
        return img.clamp(-1, 1) if self.clamp else img

    def named_layers(self) -> list[str]:
        """Forward order: the mapping layers (Z space only), then the synthesis layers."""
        names = [f"mapping.{i}" for i in range(1, self.cfg.n_mlp + 1)] if self.space == "z" else []
        return names + synthesis_layers("synthesis.", len(self.synthesis.to_rgbs))


def check_space(space: str, truncation: object) -> None:
    if space not in SPACES:
        raise GeometryError(f"stylegan2: unknown latent space {space!r}; its spaces: {list(SPACES)}")
    if isinstance(truncation, bool) or not isinstance(truncation, (int, float)) or not 0 < truncation <= 1:
        raise GeometryError(f"stylegan2: truncation must be in (0, 1], got {truncation!r}")


def load_builtin_state(net: StyleGAN2, state: dict, *, what: str, key_name=lambda n: n, noise_seed: int = 0) -> None:
    """Copy ``state`` (built-in names) into ``net``; missing noise buffers are drawn from ``noise_seed``.

    Errors name the checkpoint's own key (``key_name`` maps a built-in name back).
    """
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    absent = [k for k in missing if not k.endswith(".noise")]
    if absent:
        raise GeometryError(f"{what}: missing key {key_name(absent[0])!r} ({len(absent)} missing in all)")
    for key, value in state.items():
        if key not in own:
            raise GeometryError(f"{what}: unexpected key {key_name(key)!r} for this architecture")
        if tuple(value.shape) != tuple(own[key].shape):
            raise GeometryError(
                f"{what}: {key_name(key)!r} has shape {tuple(value.shape)}, expected {tuple(own[key].shape)}"
            )
        if not value.is_floating_point():
            raise GeometryError(f"{what}: {key_name(key)!r} has dtype {value.dtype}, expected floating point")
    fill_noise([own[key] for key in missing], noise_seed)  # older checkpoints lack the noise
    with torch.no_grad():
        for key, value in state.items():
            own[key].copy_(value)


def make_generator(net: StyleGAN2, *, name: str = "stylegan2") -> Generator:
    """Freeze ``net`` into a :class:`Generator` named ``{name}/{space}``."""
    net.eval()
    return Generator(
        net,
        net.latent_dim,
        name=f"{name}/{net.space}",
        layer_names=net.named_layers(),
        sampler=net.sample_codes,
    )


def build_stylegan2(
    *,
    size: int = 256,
    style_dim: int = 512,
    n_mlp: int = 8,
    channel_multiplier: int = 2,
    space: str = "z",
    seed: int = 0,
    truncation: float = 1.0,
) -> Generator:
    """A StyleGAN2 (config F) with random weights, float32, for benchmarks and tests.

    Weights are standard normal (the equalized-lr initialisation), noise
    strengths 0.1 so the fixed noise takes part, to-RGB weights scaled by 0.2
    so few pixels are clamped, ``latent_avg`` the mean of
    the mapping; drawn from ``seed`` without touching the global RNG.
    """
    check_space(space, truncation)
    cfg = StyleGAN2Config.standard(size, style_dim, n_mlp, channel_multiplier)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            net = StyleGAN2(cfg, space, truncation)
        except ValueError as err:
            raise GeometryError(f"stylegan2: {err}") from None
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.1)
            elif "to_rgb" in name and name.endswith(".weight") and ".affine." not in name:
                p.mul_(0.2)  # keeps the summed RGB outputs mostly inside [-1, 1] (std ~0.4 at 256 px)
    net.set_mean_latent(seed)
    return make_generator(net, name="stylegan2-random")


# torch.save's legacy (non-zip) files open with this pickled magic number.
_LEGACY_TORCH_MAGIC = bytes.fromhex("80028a0a6cfc9c46f9206aa85019")


def _is_torch_file(path: Path) -> bool:
    if zipfile.is_zipfile(path):
        return True
    with path.open("rb") as f:
        return f.read(len(_LEGACY_TORCH_MAGIC)) == _LEGACY_TORCH_MAGIC


def _read_weights(weights: str | Path):
    """(config, built-in state, latent_avg or None, checkpoint name of a built-in key) of a file.

    Files torch wrote are rosinality checkpoints; other pickles (NVIDIA's
    ``.pkl``, under any suffix) go to the restricted NVIDIA reader.
    """
    path = Path(weights).expanduser()
    if path.is_file() and not _is_torch_file(path):
        from .stylegan2_nvidia import read_nvidia_pkl  # lazy: only NVIDIA pickles need it

        return read_nvidia_pkl(path)
    from .stylegan2_rosinality import convert_rosinality, read_rosinality, rosinality_name

    state, avg = read_rosinality(path)
    cfg, converted = convert_rosinality(state)
    return cfg, converted, avg, rosinality_name


def _check_expected(cfg: StyleGAN2Config, expected: dict) -> None:
    from .stylegan2_rosinality import channel_multiplier_of

    found = dict(size=cfg.size, style_dim=cfg.style_dim, n_mlp=cfg.n_mlp, channel_multiplier=channel_multiplier_of(cfg))
    for key, value in expected.items():
        if value is not None and value != found[key]:
            raise GeometryError(f"stylegan2: {key}={value!r} was given but the weights have {key}={found[key]!r}")


def load_builtin(
    weights: str | Path, *, space: str, truncation: float, noise_seed: int = 0, clamp: bool = True,
    expected: dict | None = None,
) -> Generator:
    """The built-in StyleGAN2 from a rosinality ``.pt`` or an NVIDIA ``.pkl``, shapes read from the file."""
    check_space(space, truncation)
    cfg, state, avg, key_name = _read_weights(weights)
    _check_expected(cfg, expected or {})
    try:
        net = StyleGAN2(cfg, space, truncation, clamp)
    except ValueError as err:
        raise GeometryError(f"stylegan2: {err}") from None
    load_builtin_state(net, state, what="stylegan2 weights", key_name=key_name, noise_seed=noise_seed)
    if avg is not None:
        if avg.numel() != cfg.style_dim:
            raise GeometryError(f"stylegan2: latent_avg has {avg.numel()} entries, expected style_dim={cfg.style_dim}")
        net.latent_avg.copy_(avg.reshape(-1))
    elif truncation < 1:
        net.set_mean_latent(0)
    G = make_generator(net)
    check_output(G, range_check=False)
    return G
