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

Each registration declares the options whose values are files it loads
(``weight_options``, default ``("weights",)``) and, if any, the files it loads
when such an option is absent (``default_weights``); ``weight_files`` lists
them, so a run's identity hashes exactly what its generators load.

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
from pathlib import Path
from typing import cast

import torch

from ..errors import GeometryError
from .base import Generator, check_latents
from .catalog import CATALOG, cached_paths, is_catalog_name, load_catalog_generator, with_catalog_weights

__all__ = [
    "Generator",
    "check_latents",
    "list_generators",
    "load_generator",
    "register_generator",
    "weight_files",
    "weight_options",
]


@dataclass
class _Entry:
    factory: Callable[..., Generator] | str  # a callable, or "module:attr" imported on first use
    spaces: tuple[str, ...]
    description: str
    weight_options: tuple[str, ...]  # options whose value is a file (or a directory of files) it loads
    default_weights: Callable[[], dict[str, Path]] | None  # option -> file loaded when that option is absent


_REGISTRY: dict[str, _Entry] = {}


def register_generator(
    name: str,
    factory: Callable[..., Generator] | str,
    *,
    spaces: tuple[str, ...] = ("z",),
    description: str = "",
    weight_options: tuple[str, ...] = ("weights",),
    default_weights: Callable[[], dict[str, Path]] | None = None,
) -> None:
    """Register ``factory(*, space, **options) -> Generator`` under ``name``.

    ``factory`` may be a ``"package.module:function"`` string, imported on first
    load so that heavy adapters cost nothing until used. The first of
    ``spaces`` is the default latent space. ``weight_options`` names the options
    whose values are weights files or directories the factory reads, e.g.
    ``("ckpt_path",)``; ``default_weights()`` returns ``{option: path}`` of the
    files it reads when such an option is not given (``weight_files``). A run
    resumed with other contents in any of them is refused, so declare every one.
    Re-registering a name replaces it.
    """
    if not isinstance(name, str) or not name:
        raise GeometryError(f"generator name must be a non-empty str, got {name!r}")
    if not (callable(factory) or (isinstance(factory, str) and ":" in factory)):
        raise GeometryError(f"{name}: factory must be callable or 'module:attr', got {factory!r}")
    spaces = tuple(spaces)
    if not spaces or not all(isinstance(s, str) and s for s in spaces):
        raise GeometryError(f"{name}: spaces must be a non-empty tuple of str, got {spaces!r}")
    weight_options = tuple(weight_options)
    if not all(isinstance(o, str) and o for o in weight_options):
        raise GeometryError(f"{name}: weight_options must be a tuple of option names, got {weight_options!r}")
    if default_weights is not None and not callable(default_weights):
        raise GeometryError(f"{name}: default_weights must be callable, got {default_weights!r}")
    _REGISTRY[name] = _Entry(factory, spaces, description, weight_options, default_weights)


def list_generators() -> dict[str, tuple[tuple[str, ...], str]]:
    """Registered names -> (latent spaces, first is the default; description)."""
    return {name: (e.spaces, e.description) for name, e in sorted(_REGISTRY.items())}


def weight_options(name: str) -> tuple[str, ...]:
    """The options of generator ``name`` whose value is a weights file (or a directory of them)."""
    if name not in _REGISTRY:
        raise GeometryError(f"unknown generator {name!r}; known generators: {sorted(_REGISTRY)}")
    return _REGISTRY[name].weight_options


def weight_files(name: str, options: dict) -> dict[str, Path]:
    """Every weights file generator ``name`` built with ``options`` reads: option (or option/file) -> path.

    Example::

        weight_files("biggan-deep", {"weights_dir": "~/biggan-deep-256"})
        # {"weights_dir/config.json": Path(...), "weights_dir/pytorch_model.bin": Path(...)}

    From the registration's ``weight_options`` (a directory stands for every file
    in it; ``weights=<catalogue name>`` for that entry's cached files) and its
    ``default_weights`` for those not given. Nothing is loaded or downloaded;
    files that do not exist (yet) are left out.
    """
    if name not in _REGISTRY:
        raise GeometryError(f"unknown generator {name!r}; known generators: {sorted(_REGISTRY)}")
    entry = _REGISTRY[name]
    defaults = entry.default_weights() if entry.default_weights is not None else {}
    out = {opt: Path(p) for opt, p in defaults.items() if opt not in options}
    for opt in entry.weight_options:
        value = options.get(opt)
        if not isinstance(value, (str, Path)):
            continue  # absent, or not a path (BigGAN's config may be a dict)
        if opt == "weights" and is_catalog_name(value):  # as load_generator resolves it
            out.update(cached_paths(str(value)))
            continue
        path = Path(value).expanduser()
        if path.is_dir():
            out.update({f"{opt}/{p.relative_to(path)}": p for p in sorted(path.rglob("*")) if p.is_file()})
        else:
            out[opt] = path
    return {k: p for k, p in out.items() if p.is_file()}


def _resolve(name: str, entry: _Entry) -> Callable[..., Generator]:
    if callable(entry.factory):
        return entry.factory
    module_name, _, attr = entry.factory.partition(":")
    entry.factory = cast("Callable[..., Generator]", getattr(import_module(module_name), attr))
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


def _dcgan_faces_shipped() -> dict[str, Path]:
    """The file ``dcgan-faces`` reads without ``weights``: the one its package ships ({} when not installed)."""
    from .dcgan_faces import default_weights

    try:
        return {"weights": default_weights()}
    except GeometryError:  # package absent: loading the generator reports it
        return {}


register_generator(
    "dcgan-faces",
    _dcgan_faces,
    spaces=("z",),
    description="DCGAN, 100-d latent, 64x64 faces; weights ship in gan-face-generate",
    default_weights=_dcgan_faces_shipped,
)
register_generator(
    "biggan-deep",
    "geometry_core.generators.biggan:load_biggan_deep",
    spaces=("joint", "noise", "class"),
    description="BigGAN-deep (pytorch-pretrained-biggan) from a local config.json + pytorch_model.bin",
    weight_options=("weights_dir", "config", "weights"),
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
        weight_options=_REGISTRY[_item.arch].weight_options,  # its architecture's options pass through
        default_weights=partial(cached_paths, _item.name),
    )
