"""Any ``torch.nn.Module`` with a latent input, as a :class:`Generator`.

Example::

    G = from_module(my_net, 128, input_shape=(128, 1, 1))
    G = load_generator("module", arch="mypkg.nets:Decoder", arch_kwargs={"nz": 64},
                       weights="decoder.pt", latent_dim=64, allow_import=True)

Importing a user-named class runs that module's code, so the registry route
needs ``allow_import=True``; the weights themselves load with
``weights_only=True`` (a state_dict, never a pickled model).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import import_module
from pathlib import Path

import torch
from torch import nn

from ..errors import GeometryError
from .base import Generator
from .checkpoint import load_state_dict_strict, safe_load

__all__ = ["check_output", "from_module", "import_arch", "load_module"]

# Slack on the [-1, 1] range check: float32 tanh outputs can round just past 1.
_RANGE_TOL = 1e-3


def import_arch(arch: str, *, allow_import: bool, what: str) -> type:
    """The class named by ``"package.module:Class"``, only when ``allow_import`` is True."""
    if not isinstance(arch, str) or arch.count(":") != 1 or not all(arch.split(":")):
        raise GeometryError(f"{what}: arch must look like 'package.module:Class', got {arch!r}")
    if allow_import is not True:
        raise GeometryError(
            f"{what}: arch={arch!r} imports and runs code from that module; pass allow_import=True to opt in"
        )
    module_name, attr = arch.split(":")
    try:
        module = import_module(module_name)
    except ImportError as err:
        raise GeometryError(f"{what}: cannot import module {module_name!r} for arch: {err}") from None
    cls = getattr(module, attr, None)
    if cls is None or not callable(cls):
        raise GeometryError(f"{what}: module {module_name!r} has no class {attr!r}")
    return cls


def no_inplace_activations(net: nn.Module) -> None:
    # In-place activations overwrite tensors that hooks and double backward keep.
    for m in net.modules():
        if hasattr(m, "inplace") and isinstance(m.inplace, bool):
            m.inplace = False


@torch.no_grad()
def check_output(G: Generator, *, range_check: bool = True) -> tuple[int, ...]:
    """Run one sampled code through ``G``; return the image shape ``(3, H, W)``.

    Raises :class:`GeometryError` when the forward fails (a latent size the
    network does not take), or the output is not ``(B, 3, H, W)``, finite and,
    with ``range_check``, within [-1, 1].
    """
    z = G.sample(1, seed=0, dtype=G.dtype).to(G.device)
    try:
        x = G(z)
    except (RuntimeError, ValueError, TypeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise GeometryError(
            f"{G.name}: forward of a latent of shape {tuple(z.shape)} (latent_dim={G.latent_dim}) failed: "
            f"{first} (is latent_dim / input_shape right?)"
        ) from None
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise GeometryError(f"{G.name}: expected output images of shape (B, 3, H, W) for B=1, got {shape}")
    if not torch.isfinite(x).all():
        raise GeometryError(f"{G.name}: output contains NaN or Inf")
    lo, hi = float(x.min()), float(x.max())
    if range_check and (lo < -1 - _RANGE_TOL or hi > 1 + _RANGE_TOL):
        raise GeometryError(
            f"{G.name}: output must lie in [-1, 1], got [{lo:.3g}, {hi:.3g}] "
            "(end the network with tanh, or pass output_range_check=False)"
        )
    return tuple(x.shape[1:])


def from_module(
    module: nn.Module,
    latent_dim: int,
    *,
    name: str = "module",
    layer_names: Sequence[str] | None = None,
    input_shape: Sequence[int] | None = None,
    output_range_check: bool = True,
) -> Generator:
    """Wrap ``module`` (latent ``(B, latent_dim)`` -> image ``(B, 3, H, W)``) as a Generator.

    ``input_shape`` reshapes each code before the module sees it, e.g.
    ``(latent_dim, 1, 1)`` for a DCGAN; it is done by a forward pre-hook on
    ``module`` so that ``layer_names`` stay the module's own names. One
    forward is run to verify the output (see :func:`check_output`).
    """
    if not isinstance(module, nn.Module):
        raise GeometryError(f"{name}: expected a torch.nn.Module, got {type(module).__name__}")
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
        raise GeometryError(f"{name}: latent_dim must be a positive int, got {latent_dim!r}")
    if input_shape is not None:
        shape = tuple(int(s) for s in input_shape)
        if not shape or any(s < 1 for s in shape) or torch.Size(shape).numel() != latent_dim:
            raise GeometryError(
                f"{name}: input_shape {tuple(input_shape)} must hold latent_dim={latent_dim} numbers"
            )
        module.register_forward_pre_hook(lambda _m, args: (args[0].reshape(args[0].shape[0], *shape), *args[1:]))
    no_inplace_activations(module)
    G = Generator(module, latent_dim, name=name, layer_names=list(layer_names or []))
    check_output(G, range_check=output_range_check)
    return G


def load_module(
    *,
    space: str = "z",
    arch: str | None = None,
    latent_dim: int | None = None,
    weights: str | Path | None = None,
    arch_kwargs: dict | None = None,
    allow_import: bool = False,
    input_shape: Sequence[int] | None = None,
    layer_names: Sequence[str] | None = None,
    output_range_check: bool = True,
) -> Generator:
    """Registry factory for ``"module"``: build ``arch(**arch_kwargs)``, load ``weights``, wrap.

    ``weights`` is a state_dict file (optional: without it the module keeps its
    initialisation, e.g. for a shuffled or random-network control).
    """
    if arch is None or latent_dim is None:
        raise GeometryError("module: needs arch='package.module:Class' and latent_dim=int")
    cls = import_arch(arch, allow_import=allow_import, what="module")
    try:
        net = cls(**(arch_kwargs or {}))
    except TypeError as err:
        raise GeometryError(f"module: {arch}(**{arch_kwargs or {}}) failed: {err}") from None
    if not isinstance(net, nn.Module):
        raise GeometryError(f"module: {arch} built a {type(net).__name__}, expected a torch.nn.Module")
    if weights is not None:
        load_state_dict_strict(net, safe_load(weights, what="module weights"), what="module weights")
    return from_module(
        net,
        latent_dim,
        name=f"module:{arch.split(':')[1]}",
        layer_names=layer_names,
        input_shape=input_shape,
        output_range_check=output_range_check,
    )
