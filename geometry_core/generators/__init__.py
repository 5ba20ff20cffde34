"""Generators by name: the registry and its adapters.

Example::

    from geometry_core.generators import load_generator, list_generators
    G = load_generator("dcgan-faces")                       # 100-d, 64x64 faces
    G = load_generator("biggan-deep", space="class", weights_dir="~/biggan-deep-256")
    G = load_generator("stylegan2", space="w", weights="ffhq.pt", truncation=0.7)
    G = load_generator("pggan-celebahq-256")                # a catalogue name: fetched, verified, cached
    G = load_generator("biggan-deep", space="noise", weights="biggan-deep-256")
    z = G.sample(8, seed=0)
    x = G(z)                                                # (8, 3, H, W) in [-1, 1]

Each factory takes ``space=`` plus its own keyword options; an option a
factory does not accept is an error, never silently dropped.

Published weights (``catalog.CATALOG``) are registered under their catalogue
names, so a name such as ``"pggan-celebahq-256"`` works wherever a generator
name does (sweep specs included); ``weights=<catalogue name>`` given to an
architecture resolves to the cached files. A catalogue name wins over a file
of the same name in the working directory: write ``./name`` for the file.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from importlib import import_module

import torch

from ..errors import GeometryError
from .base import Generator, check_latents
from .catalog import CATALOG, is_catalog_name, load_catalog_generator, with_catalog_weights

__all__ = [
    "Generator",
    "check_latents",
    "list_generators",
    "load_generator",
    "register_generator",
]


@dataclass
class _Entry:
    factory: Callable[..., Generator] | str  # a callable, or "module:attr" imported on first use
    spaces: tuple[str, ...]
    description: str


_REGISTRY: dict[str, _Entry] = {}


def register_generator(
    name: str,
    factory: Callable[..., Generator] | str,
    *,
    spaces: tuple[str, ...] = ("z",),
    description: str = "",
) -> None:
    """Register ``factory(*, space, **options) -> Generator`` under ``name``.

    ``factory`` may be a ``"package.module:function"`` string, imported on first
    load so that heavy adapters cost nothing until used. The first of
    ``spaces`` is the default latent space. Re-registering a name replaces it.
    """
    if not isinstance(name, str) or not name:
        raise GeometryError(f"generator name must be a non-empty str, got {name!r}")
    if not (callable(factory) or (isinstance(factory, str) and ":" in factory)):
        raise GeometryError(f"{name}: factory must be callable or 'module:attr', got {factory!r}")
    spaces = tuple(spaces)
    if not spaces or not all(isinstance(s, str) and s for s in spaces):
        raise GeometryError(f"{name}: spaces must be a non-empty tuple of str, got {spaces!r}")
    _REGISTRY[name] = _Entry(factory, spaces, description)


def list_generators() -> dict[str, tuple[tuple[str, ...], str]]:
    """Registered names -> (latent spaces, first is the default; description)."""
    return {name: (e.spaces, e.description) for name, e in sorted(_REGISTRY.items())}


def _resolve(name: str, entry: _Entry) -> Callable[..., Generator]:
    if callable(entry.factory):
        return entry.factory
    module_name, _, attr = entry.factory.partition(":")
    entry.factory = getattr(import_module(module_name), attr)
    return entry.factory


def _check_options(name: str, factory: Callable[..., Generator], options: dict) -> None:
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = sorted(k for k, p in params.items() if k != "space" and p.kind is not inspect.Parameter.VAR_POSITIONAL)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise GeometryError(f"{name}: unknown option(s) {unknown}; accepted options: {accepted}")


def load_generator(
    name: str,
    *,
    space: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    shuffle_seed: int | None = None,
    **options,
) -> Generator:
    """Build the registered generator ``name`` in latent ``space`` (default: its first).

    ``device`` / ``dtype`` move the result; ``shuffle_seed`` returns a copy whose
    weights are shuffled (``geometry_core.shuffle.shuffle_weights``), the
    paper's control for trained structure. Other keyword ``options`` go to the
    factory (see ``list_generators`` and each adapter's docstring).
    """
    if name not in _REGISTRY:
        raise GeometryError(f"unknown generator {name!r}; known generators: {sorted(_REGISTRY)}")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise GeometryError(f"{name}: dtype must be a floating torch.dtype, got {dtype!r}")
    entry = _REGISTRY[name]
    space = entry.spaces[0] if space is None else space
    if space not in entry.spaces:
        raise GeometryError(f"{name}: unknown latent space {space!r}; its spaces: {list(entry.spaces)}")
    factory = _resolve(name, entry)
    _check_options(name, factory, options)
    if is_catalog_name(options.get("weights")):
        options = with_catalog_weights(name, options)
        _check_options(name, factory, options)  # the entry's own options too
    G = factory(space=space, **options)
    if not isinstance(G, Generator):
        raise GeometryError(f"{name}: factory returned {type(G).__name__}, expected a Generator")
    if shuffle_seed is not None:
        from ..shuffle import shuffle_weights  # lazy: only the shuffle control needs it

        G = shuffle_weights(G, shuffle_seed)
    if device is not None or dtype is not None:
        G = G.to(device=device, dtype=dtype)
    return G


def _dcgan_faces(*, space: str, weights: str | None = None) -> Generator:
    """The shipped DCGAN face generator (100-d Z space, 64x64)."""
    from .dcgan_faces import load_dcgan_faces

    return load_dcgan_faces(weights=weights)


register_generator(
    "dcgan-faces",
    _dcgan_faces,
    spaces=("z",),
    description="DCGAN, 100-d latent, 64x64 faces; weights ship in gan-face-generate",
)
register_generator(
    "biggan-deep",
    "geometry_core.generators.biggan:load_biggan_deep",
    spaces=("joint", "noise", "class"),
    description="BigGAN-deep (pytorch-pretrained-biggan) from a local config.json + pytorch_model.bin",
)
register_generator(
    "stylegan2",
    "geometry_core.generators.stylegan2:load_stylegan2",
    spaces=("z", "w", "w+"),
    description="StyleGAN2 (built-in, plain PyTorch) from a rosinality .pt or NVIDIA .pkl; fixed noise; Z, W or W+",
)
register_generator(
    "pggan",
    "geometry_core.generators.gan_zoo:load_pggan",
    spaces=("z",),
    description="PGGAN of the PyTorch GAN zoo (celebAHQ-256/512: 512-d) from a zoo .pth file",
)
register_generator(
    "dcgan-fashion",
    "geometry_core.generators.gan_zoo:load_dcgan_fashion",
    spaces=("z",),
    description="DCGAN of the PyTorch GAN zoo (fashionGen: 120-d, 64x64) from a zoo .pth file",
)
register_generator(
    "module",
    "geometry_core.generators.module:load_module",
    spaces=("z",),
    description="any torch.nn.Module class with a latent input, from a state_dict file",
)
for _item in CATALOG.values():
    register_generator(
        _item.name,
        partial(load_catalog_generator, _item.name),
        spaces=tuple(_item.spaces),
        description=f"{_item.description}; published weights, fetched on first use (`gangeo models`)",
    )
