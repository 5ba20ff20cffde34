"""BigGAN-deep through ``pytorch_pretrained_biggan``, from local files only.

Example::

    G = load_biggan_deep(space="class", weights_dir="~/models/biggan-deep-256")
    G = load_generator("biggan-deep", space="noise", weights_dir=..., class_index=1)

The package's ``BigGAN.from_pretrained`` downloads and unpickles; this adapter
reads ``config.json`` and ``pytorch_model.bin`` from a directory (or explicit
``config=`` / ``weights=`` paths) with ``weights_only=True`` and never downloads.

Latent spaces (after Wang & Ponce, who study BigGAN's noise and class spaces):

- ``"noise"``: the noise vector (``z_dim``, 128 for the released models), class fixed.
- ``"class"``: the class embedding vector itself (``z_dim``), noise fixed. The
  embedding of a one-hot class is that class's code; any vector is allowed.
- ``"joint"``: noise ++ class embedding (``2 * z_dim`` = 256), the full input.

Truncation defaults to 0.7, the value the paper's BigGAN wrapper used; it picks
the batch-norm statistics and scales sampled noise (truncated normal in [-2, 2]
times ``truncation``, as the package's ``truncated_noise_sample``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from pytorch_pretrained_biggan import BigGAN, BigGANConfig
from pytorch_pretrained_biggan.model import BigGANBatchNorm
from torch import nn

from ..errors import GeometryError, MissingWeightsError, clip
from .base import Generator
from .checkpoint import load_state_dict_strict, safe_load

__all__ = ["RELEASED_PARAMETERS", "BigGANSpace", "build_biggan_deep", "load_biggan_deep", "released_config",
           "settle_fresh_weights", "truncated_normal"]

SPACES = ("joint", "noise", "class")


def truncated_normal(n: int, dim: int, gen: torch.Generator, *, bound: float = 2.0) -> torch.Tensor:
    """Standard normal draws conditioned on ``|x| <= bound``, float64 on CPU, seeded by ``gen``."""
    x = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    bad = x.abs() > bound
    while bad.any():  # resample only the rejected entries; ~4.6% per round at bound 2
        x[bad] = torch.randn(int(bad.sum()), generator=gen, dtype=torch.float64)
        bad = x.abs() > bound
    return x


class BigGANSpace(nn.Module):
    """BigGAN-deep as a map from one latent space to images in [-1, 1].

    Holds the package's ``embeddings`` and ``generator`` under those names, so
    layer names match the checkpoint (``generator.layers.3``).
    """

    fixed_class: torch.Tensor  # buffers
    fixed_noise: torch.Tensor

    def __init__(self, net: BigGAN, space: str, truncation: float, class_index: int, noise: torch.Tensor):
        super().__init__()
        self.embeddings = net.embeddings
        self.generator = net.generator
        self.space = space
        self.truncation = float(truncation)
        self.z_dim = int(net.config.z_dim)
        self.num_classes = int(net.config.num_classes)
        onehot = torch.zeros(1, self.num_classes)
        onehot[0, class_index] = 1.0
        self.register_buffer("fixed_class", onehot)
        self.register_buffer("fixed_noise", noise.reshape(1, self.z_dim).to(torch.float32))

    @property
    def latent_dim(self) -> int:
        return 2 * self.z_dim if self.space == "joint" else self.z_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        B = z.shape[0]
        if self.space == "noise":
            cond = torch.cat([z, self.embeddings(self.fixed_class.to(z.dtype)).expand(B, -1)], dim=1)
        elif self.space == "class":
            cond = torch.cat([self.fixed_noise.to(z.dtype).expand(B, -1), z], dim=1)
        else:
            cond = z
        return self.generator(cond, self.truncation)

    def sample_codes(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """Codes on CPU: truncated noise, class embeddings of uniform random classes, or both."""
        parts = []
        if self.space in ("noise", "joint"):
            parts.append(self.truncation * truncated_normal(n, self.z_dim, gen))
        if self.space in ("class", "joint"):
            idx = torch.randint(self.num_classes, (n,), generator=gen)
            table = self.embeddings.weight.detach().to("cpu", torch.float64)  # (z_dim, num_classes)
            parts.append(table[:, idx].T.contiguous())
        return torch.cat(parts, dim=1)


# Config fields (pytorch-pretrained-biggan's BigGANConfig) and the largest value accepted for each
# int: a config is read before the network is built, so its sizes bound what is allocated.
_INT_FIELDS = {"output_dim": 1024, "z_dim": 1024, "class_embed_dim": 1024, "channel_width": 512,
               "num_classes": 100_000, "n_stats": 1024, "attention_layer_position": 64}
_MAX_LAYERS, _MAX_MULTIPLE = 64, 64
_MAX_PARAMETERS = 400_000_000  # BigGAN-deep 512 has about 56 million


def _bad(where: str, what: str):
    return GeometryError(f"biggan-deep: {where}: {what}")


def _config_from(raw, where: str) -> BigGANConfig:
    """A BigGANConfig from a JSON object, checked field by field before any network is built."""
    if not isinstance(raw, dict):
        raise _bad(where, f"expected a JSON object of config fields, got {type(raw).__name__}")
    known = {*_INT_FIELDS, "layers", "eps"}
    unknown = sorted(clip(k, bare=True) for k in raw if k not in known)
    if unknown:
        raise _bad(where, f"unknown config field(s) {unknown}; known: {sorted(known)}")
    for key, top in _INT_FIELDS.items():
        v = raw.get(key)
        if key in raw and not (isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= top):
            raise _bad(where, f"{key} must be an int in [0, {top}], got {clip(v)}")
    cfg = BigGANConfig()
    for key in _INT_FIELDS:
        if key in raw:
            setattr(cfg, key, raw[key])
    if min(cfg.output_dim, cfg.z_dim, cfg.class_embed_dim, cfg.num_classes, cfg.n_stats) < 1 or cfg.channel_width < 3:
        raise _bad(where, "output_dim, z_dim, class_embed_dim, num_classes and n_stats must be >= 1, "
                          "channel_width >= 3 (RGB)")
    if "eps" in raw:
        eps = raw["eps"]
        if not (isinstance(eps, (int, float)) and not isinstance(eps, bool) and 0 < eps < 1):
            raise _bad(where, f"eps must be a number in (0, 1), got {clip(eps)}")
        cfg.eps = float(eps)
    if "layers" in raw:
        cfg.layers = _layers(raw["layers"], where)
    width = cfg.channel_width
    weights = sum(9 * (width * a) * (width * b) * 2 for _, a, b in cfg.layers) + 32 * width * cfg.z_dim * 16
    if weights > _MAX_PARAMETERS:
        raise _bad(where, f"the network would hold about {weights:.2e} weights (at most {_MAX_PARAMETERS:.0e})")
    return cfg


def _layers(layers, where: str) -> list[tuple[bool, int, int]]:
    """``[[up_sample, in_multiple, out_multiple], ...]`` as the package's tuples."""
    ok = isinstance(layers, list) and 1 <= len(layers) <= _MAX_LAYERS
    out = []
    for layer in layers if ok else ():
        if not (isinstance(layer, (list, tuple)) and len(layer) == 3 and isinstance(layer[0], bool)
                and all(isinstance(m, int) and not isinstance(m, bool) and 1 <= m <= _MAX_MULTIPLE
                        for m in layer[1:])):
            ok = False
            break
        out.append((layer[0], layer[1], layer[2]))
    if not ok:
        raise _bad(where, f"layers must be 1 to {_MAX_LAYERS} [up_sample (bool), in, out (ints 1..{_MAX_MULTIPLE})] "
                          f"triples, got {clip(layers)}")
    return out


def _read_config(config: str | Path | dict) -> BigGANConfig:
    if isinstance(config, dict):
        return _config_from(config, "config")
    path = Path(config).expanduser().absolute()
    if not path.is_file():
        raise MissingWeightsError(f"biggan-deep: config file not found: {path}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError, a 5000-digit int
        raise GeometryError(f"biggan-deep: {path} is not a JSON config: {clip(str(err), bare=True)}") from None
    return _config_from(raw, str(path))


def _strip_spectral_norm(net: nn.Module) -> None:
    # Eval-mode spectral norm is a fixed rescaling; folding it into plain weights
    # makes forward-mode and double-backward autograd simpler and faster.
    for module in net.modules():
        if hasattr(module, "weight_orig"):
            nn.utils.remove_spectral_norm(module)


def _fixed_noise(noise, z_dim: int, truncation: float) -> torch.Tensor:
    if noise is None:
        return truncation * truncated_normal(1, z_dim, torch.Generator().manual_seed(0))
    noise = torch.as_tensor(noise, dtype=torch.float64).reshape(-1)
    if noise.numel() != z_dim or not torch.isfinite(noise).all():
        raise GeometryError(f"biggan-deep: noise must be {z_dim} finite numbers, got shape {tuple(noise.shape)}")
    return noise


def load_biggan_deep(
    *,
    space: str = "joint",
    weights_dir: str | Path | None = None,
    config: str | Path | dict | None = None,
    weights: str | Path | None = None,
    truncation: float = 0.7,
    class_index: int = 0,
    noise: Sequence[float] | torch.Tensor | None = None,
) -> Generator:
    """BigGAN-deep in latent ``space`` from local files.

    ``weights_dir`` holds ``config.json`` and ``pytorch_model.bin`` (the
    package's layout); or give ``config`` (path or dict) and ``weights``.
    ``class_index`` fixes the class of the noise space; ``noise`` fixes the
    noise of the class space (default: a truncated-normal draw with seed 0).
    """
    if space not in SPACES:
        raise GeometryError(f"biggan-deep: unknown latent space {space!r}; its spaces: {list(SPACES)}")
    if weights_dir is not None:
        if config is not None or weights is not None:
            raise GeometryError("biggan-deep: give weights_dir, or config and weights, not both")
        root = Path(weights_dir).expanduser()
        config, weights = root / "config.json", root / "pytorch_model.bin"
    if config is None or weights is None:
        raise GeometryError(
            "biggan-deep: needs weights_dir=DIR (config.json + pytorch_model.bin), or config= and weights="
        )
    if not isinstance(truncation, (int, float)) or not 0 < truncation <= 1:
        raise GeometryError(f"biggan-deep: truncation must be in (0, 1], got {truncation!r}")
    cfg = _read_config(config)
    if not isinstance(class_index, int) or not 0 <= class_index < cfg.num_classes:
        raise GeometryError(f"biggan-deep: class_index must be an int in [0, {cfg.num_classes}), got {class_index!r}")
    fixed_noise = _fixed_noise(noise, cfg.z_dim, float(truncation))
    state = safe_load(weights, what="biggan-deep weights")
    net = BigGAN(cfg)
    load_state_dict_strict(net, state, what="biggan-deep weights")
    return _wrap(net, space, float(truncation), class_index, fixed_noise)


# Block layouts of the released models: (up-sample?, in, out) channel multiples of 128. Each
# resolution doubling from 4x4 is a pair of blocks, the second up-sampling; the channel multiples
# per resolution are BigGAN-deep's (Brock et al. 2019, Table 8): 256 and 512 keep 8 at 32 px, which
# 128 does not. Attention sits at 64 px in all three (before block 8). Parameters: 50.4M, 55.9M,
# 56.2M, as published.
_MULTIPLES = {128: [16, 16, 8, 4, 2, 1], 256: [16, 16, 8, 8, 4, 2, 1], 512: [16, 16, 8, 8, 4, 2, 1, 1]}
RELEASED_PARAMETERS = {128: 50.4e6, 256: 55.9e6, 512: 56.2e6}


def released_config(resolution: int) -> BigGANConfig:
    """The package's config of the released BigGAN-deep at ``resolution`` (128, 256 or 512)."""
    if resolution not in _MULTIPLES:
        raise GeometryError(f"biggan-deep: resolution must be one of {sorted(_MULTIPLES)}, got {resolution!r}")
    m = _MULTIPLES[resolution]
    layers = [pair for a, b in zip(m, m[1:]) for pair in ((False, a, a), (True, a, b))]
    return BigGANConfig(output_dim=resolution, layers=layers, attention_layer_position=8)


def build_biggan_deep(*, resolution: int = 256, space: str = "noise", truncation: float = 0.7,
                      class_index: int = 0, seed: int = 0) -> Generator:
    """BigGAN-deep in the released ``resolution``'s layout (z 128, width 128), random weights.

    For benchmarks at real size: the package's own initialisation under ``seed``,
    without touching the global RNG.
    """
    cfg = released_config(resolution)
    if space not in SPACES:
        raise GeometryError(f"biggan-deep: unknown latent space {space!r}; its spaces: {list(SPACES)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = BigGAN(cfg)
    settle_fresh_weights(net)
    G = _wrap(net, space, float(truncation), class_index, _fixed_noise(None, cfg.z_dim, float(truncation)))
    _calibrate_batch_norms(G, G.sample(_CALIBRATION_CODES, seed=seed))
    return G


_POWER_STEPS = 200


@torch.no_grad()
def settle_fresh_weights(net: BigGAN) -> None:
    """Make a freshly built ``BigGAN`` behave like a loaded checkpoint (random-weight models).

    The package leaves unconditional batch-norm affines uninitialised (``torch.Tensor(n)``:
    whatever memory held, NaN in some runs): they become the identity. Fresh spectral-norm
    vectors are random, so ``sigma = u^T W v`` is far from the top singular value and the
    eval-mode weights explode: power iteration from the stored vectors converges them, as
    in a trained checkpoint (random weights have clustered top singular values, hence 200 steps).
    """
    for module in net.modules():
        if isinstance(module, BigGANBatchNorm) and not module.conditional:
            module.weight.fill_(1.0)
            module.bias.zero_()
        if hasattr(module, "weight_orig"):
            W = module.weight_orig.reshape(module.weight_orig.shape[0], -1)
            u, v = module.weight_u, module.weight_v
            for _ in range(_POWER_STEPS):
                v = nn.functional.normalize(W.T @ u, dim=0)
                u = nn.functional.normalize(W @ v, dim=0)
            module.weight_u.copy_(u)
            module.weight_v.copy_(v)


_CALIBRATION_CODES = 4


@torch.no_grad()
def _calibrate_batch_norms(G: Generator, codes: torch.Tensor) -> None:
    # Released models store the statistics of their activations; fresh ones store 0 and 1,
    # under which random activations shrink layer by layer until the image ignores z.
    # Setting each layer's statistics from the activations it receives makes it look trained.
    def set_stats(bn, args):
        x = args[0]
        bn.running_means.copy_(x.mean(dim=(0, 2, 3)).expand_as(bn.running_means))
        bn.running_vars.copy_(x.var(dim=(0, 2, 3)).expand_as(bn.running_vars))

    norms = [m for m in G.modules() if isinstance(m, BigGANBatchNorm)]
    handles = [m.register_forward_pre_hook(set_stats) for m in norms]
    try:
        G(codes.to(torch.float32))
    finally:
        for h in handles:
            h.remove()


def _wrap(net: BigGAN, space: str, truncation: float, class_index: int, fixed_noise: torch.Tensor) -> Generator:
    net.eval()
    _strip_spectral_norm(net)
    module = BigGANSpace(net, space, truncation, class_index, fixed_noise)
    n_layers = len(net.generator.layers)
    layer_names = ["generator.gen_z", *[f"generator.layers.{i}" for i in range(n_layers)], "generator.conv_to_rgb"]
    return Generator(
        module,
        module.latent_dim,
        name=f"biggan-deep/{space}",
        layer_names=layer_names,
        sampler=module.sample_codes,
    )
