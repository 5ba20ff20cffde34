"""Pixel mean squared error as a distance: ``d = mean over pixels of (x - x0)^2``."""

from __future__ import annotations

import math

import torch

from ..errors import GeometryError
from .base import Distance

__all__ = ["MSEDistance", "load_mse"]


class MSEDistance(Distance):
    """Mean over all pixels and channels of the squared difference of two images.

    Example::

        d = MSEDistance()
        d(x0, x)                      # (B,) mean squared errors

    Written as ``phi(x) = x.flatten(1) / sqrt(numel per image)`` and ``c = 1`` so
    that ``c * ||phi(x) - phi(x0)||^2`` is exactly the mean.
    """

    name = "mse"
    c = 1.0

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim < 2:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise GeometryError(f"mse: expected images of shape (B, C, H, W), got {shape}")
        flat = x.flatten(1)
        return flat / math.sqrt(flat.shape[1])


def load_mse(name: str = "mse", *, generator=None, device=None) -> MSEDistance:
    """Registry factory of ``"mse"`` (``generator`` is ignored: an image distance)."""
    dist = MSEDistance()
    return dist.to(device) if device is not None else dist
