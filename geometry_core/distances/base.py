"""The distance protocol: ``d(x0, x) = c * ||phi(x) - phi(x0)||^2``.

Writing every distance through a representation map ``phi`` lets the metric be
computed from Jacobians: ``H(z0) = 2 c J^T J`` with ``J = d phi(G(z)) / dz``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Distance"]


class Distance(nn.Module):
    """A frozen perceptual or pixel distance between images in [-1, 1].

    Subclasses implement ``phi(x) -> (B, M)``; ``c`` is the constant in front of
    the squared norm. Layer distances override ``represent`` instead, because
    their representation lives inside the generator.
    """

    name: str = "distance"
    c: float = 1.0

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
