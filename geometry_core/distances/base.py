"""The distance protocol: two forms, told apart by ``Distance.has_phi``.

- A representation distance (``has_phi = True``): ``d(x0, x) = c * ||phi(x) - phi(x0)||^2``.
  The metric is computed from Jacobians: ``H(z0) = 2 c J^T J`` with
  ``J = d phi(G(z)) / dz`` (MSE, LPIPS, a generator layer).
- A scalar image distance (``has_phi = False``, subclass ``ScalarDistance``): any
  twice-differentiable ``d(x0, x) >= 0`` with ``d(x0, x0) = 0`` (SSIM). Its gradient
  vanishes at ``x = x0``, so ``H(z0) = J_G^T A J_G`` with ``J_G = dG/dz`` and
  ``A`` the Hessian of ``d(x0, .)`` over the image at ``x0`` (ARCHITECTURE.md,
  "metric tensor").
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import GeometryError

__all__ = ["Distance", "ScalarDistance"]


class Distance(nn.Module):
    """A frozen perceptual or pixel distance between images in [-1, 1].

    Subclasses implement ``phi(x) -> (B, M)``; ``c`` is the constant in front of
    the squared norm. Layer distances override ``represent`` instead, because
    their representation lives inside the generator. Distances that are not a
    squared norm subclass ``ScalarDistance``.
    """

    name: str = "distance"
    c: float = 1.0
    # True: d = c * ||phi - phi0||^2 through `represent`; False: a scalar d(x0, x) (see module doc).
    has_phi: bool = True

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def represent(self, G: nn.Module, z: torch.Tensor) -> torch.Tensor:
        """The representation ``phi(G(z))`` of codes ``z`` (B, D) as a (B, M) tensor."""
        return self.phi(G(z))

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``d(x0, x)`` per image, shape (B,)."""
        diff = self.phi(x) - self.phi(x0)
        return self.c * diff.pow(2).sum(dim=-1)

    def latent_distance(self, G: nn.Module, z0: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``d(G(z0), G(z))`` per code, shape (B,), through ``represent``."""
        diff = self.represent(G, z) - self.represent(G, z0)
        return self.c * diff.pow(2).sum(dim=-1)

    def train(self, mode: bool = True) -> "Distance":
        return super().train(False)


class ScalarDistance(Distance):
    """A twice-differentiable image distance ``d(x0, x)`` with no representation map.

    Example::

        class Quadratic(ScalarDistance):
            name = "quadratic"
            def forward(self, x0, x):                 # (B,) per pair of images
                return (x - x0).flatten(1).pow(2).sum(-1)

    Subclasses implement ``forward(x0, x) -> (B,)`` with ``d(x0, x0) = 0`` and
    ``d >= 0`` (so the gradient vanishes at ``x0``: the metric is ``J_G^T A J_G``).
    ``phi`` is left undefined on purpose: callers that need one (inversion) see
    that it is missing.
    """

    has_phi = False

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def represent(self, G: nn.Module, z: torch.Tensor) -> torch.Tensor:
        raise GeometryError(
            f"distance {self.name!r} is a scalar d(x0, x) with no representation phi; "
            "use latent_distance(G, z0, z) or forward(x0, x)"
        )

    def latent_distance(self, G: nn.Module, z0: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``d(G(z0), G(z))`` per code, shape (B,)."""
        return self(G(z0), G(z))

    def pullback(self, x0: torch.Tensor, J: torch.Tensor) -> torch.Tensor | None:
        """``J_b^T A_b J_b`` (B, D, D) in closed form, or None: the metric then comes from HVPs of ``forward``.

        ``x0``: images (B, C, H, W); ``J``: their Jacobians tangent-major, (D, B, C*H*W);
        ``A_b`` is the Hessian of ``d(x0_b, .)`` at ``x0_b``. A subclass that knows ``A``
        in closed form saves the forward-over-reverse pass through ``forward``.
        """
        return None
