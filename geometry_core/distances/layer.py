"""The L2 distance of a generator's intermediate layer, a latent-space distance.

``d(z0, z) = mean over the layer's entries of (a(z) - a(z0))^2`` with ``a`` the
named layer's output, i.e. ``phi = a.flatten(1) / sqrt(M)`` and ``c = 1`` (the
same mean-squared convention as the pixel MSE, so layers of different sizes
are comparable).

The activations are captured by :func:`geometry_core.capture.capture_outputs`
on ``G.layer(name)``, which stops the forward pass there; this works under
``torch.func.jvp``, ``vmap`` and ``jacfwd`` (tested).

Example::

    d = LayerDistance(G, "main.3")
    d.represent(G, z)        # (B, M)
    d.latent_distance(G, z0, z)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from ..capture import capture_outputs
from ..errors import GeometryError
from .base import Distance

if TYPE_CHECKING:
    from ..generators.base import Generator

__all__ = ["LayerDistance", "load_layer"]


class LayerDistance(Distance):
    """Mean squared difference of the activations of ``generator``'s layer ``layer_name``.

    ``represent(G, z)`` hooks ``G.layer(layer_name)`` of the generator it is
    given (normally the one passed here, on any device). ``phi`` on images is not
    defined: this distance lives in latent space.
    """

    c = 1.0

    def __init__(self, generator: nn.Module, layer_name: str) -> None:
        super().__init__()
        if not hasattr(generator, "layer"):
            raise GeometryError(
                f"layer:{layer_name}: expected a geometry_core Generator with .layer(name), "
                f"got {type(generator).__name__}"
            )
        cast("Generator", generator).layer(layer_name)  # unknown layer -> GeometryError listing the known ones
        self.layer_name = layer_name
        self.name = f"layer:{layer_name}"
        # Not a submodule: the distance must not own, move or save the generator.
        self.__dict__["_generator"] = generator

    @property
    def generator(self) -> nn.Module:
        return self.__dict__["_generator"]

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        raise GeometryError(
            f"{self.name} is a latent-space distance: use represent(G, z) or latent_distance(G, z0, z), "
            f"not phi(image)"
        )

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.phi(x)

    def represent(self, G: nn.Module, z: torch.Tensor) -> torch.Tensor:
        """The layer's activations for codes ``z`` (B, D) as (B, M) / sqrt(M); (D,) gives (M,)."""
        module = cast("Generator", G).layer(self.layer_name) if hasattr(G, "layer") else None
        if module is None:
            raise GeometryError(f"{self.name}: expected a Generator with .layer(name), got {type(G).__name__}")
        (act,) = capture_outputs(G, [module], z)
        if act is None:
            raise GeometryError(f"{self.name}: the layer did not run during G(z)")
        if not isinstance(act, torch.Tensor):
            raise GeometryError(f"{self.name}: expected the layer to output a tensor, got {type(act).__name__}")
        flat = act.flatten(1)
        flat = flat / math.sqrt(flat.shape[1])
        return flat[0] if z.ndim == 1 else flat


def load_layer(name: str, *, generator=None, device=None) -> LayerDistance:
    """Registry factory of ``"layer:<layer name>"``; it runs wherever ``generator`` is (``device`` is ignored)."""
    layer_name = name.partition(":")[2]
    if generator is None:
        raise GeometryError(f"distance {name!r} needs generator=<the Generator whose layer it reads>")
    if not layer_name:
        raise GeometryError(f"distance {name!r}: expected 'layer:<layer name>', the layer name is empty")
    return LayerDistance(generator, layer_name)
