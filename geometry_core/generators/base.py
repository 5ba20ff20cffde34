"""The generator protocol every adapter implements.

A generator maps latent codes ``z`` of shape ``(B, D)`` (or ``(D,)``) to images in
[-1, 1] of shape ``(B, 3, H, W)``. It is frozen (no parameter requires grad),
in eval mode, and deterministic: noise inputs are fixed at construction.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import GeometryError

__all__ = ["Generator", "check_latents"]


def check_latents(z: torch.Tensor, latent_dim: int, *, name: str = "generator") -> torch.Tensor:
    """Validate latent codes: a (D,) or (B, D) finite floating tensor with D == latent_dim."""
    if not isinstance(z, torch.Tensor):
        raise GeometryError(f"{name}: z must be a torch.Tensor, got {type(z).__name__}")
    if z.ndim not in (1, 2) or z.shape[-1] != latent_dim:
        raise GeometryError(
            f"{name}: expected z of shape ({latent_dim},) or (B, {latent_dim}), got {tuple(z.shape)}"
        )
    if not z.is_floating_point():
        raise GeometryError(f"{name}: z must be floating point, got {z.dtype}")
    # Under torch.func transforms z may be a batched tensor: a data-dependent
    # check is impossible there, and the caller validated the codes already.
    if not torch._C._functorch.is_batchedtensor(z) and not torch.isfinite(z).all():
        raise GeometryError(f"{name}: z contains NaN or Inf")
    return z


class Generator(nn.Module):
    """A frozen image generator with a latent size, a sampler and named layers.

    ``module`` maps ``(B, D)`` latents to ``(B, 3, H, W)`` images in [-1, 1].
    ``sampler(n, generator) -> (n, D)`` draws codes (standard normal by default).
    ``layer_names`` lists the submodule names (``module.named_modules()``) whose
    outputs are meaningful targets for layer metrics, in forward order.
    """

    def __init__(
        self,
        module: nn.Module,
        latent_dim: int,
        *,
        name: str = "generator",
        layer_names: list[str] | None = None,
        sampler: Callable[[int, torch.Generator], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(latent_dim, int) or latent_dim < 1:
            raise GeometryError(f"{name}: latent_dim must be a positive int, got {latent_dim!r}")
        self.module = module
        self.latent_dim = latent_dim
        self.name = name
        self._sampler = sampler
        known = dict(module.named_modules())
        names = list(layer_names) if layer_names is not None else []
        missing = [n for n in names if n not in known]
        if missing:
            raise GeometryError(f"{name}: unknown layer names {missing}")
        self.layer_names = names
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "Generator":
        # Frozen: batch-norm statistics and dropout never change.
        return super().train(False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        check_latents(z, self.latent_dim, name=self.name)
        single = z.ndim == 1
        x = self.module(z.unsqueeze(0) if single else z)
        return x[0] if single else x

    def layer(self, layer_name: str) -> nn.Module:
        """The submodule of a named layer, for forward hooks."""
        modules = dict(self.module.named_modules())
        if layer_name not in modules:
            raise GeometryError(
                f"{self.name}: unknown layer {layer_name!r}; known layers: {self.layer_names}"
            )
        return modules[layer_name]

    def sample(self, n: int, seed: int = 0, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``n`` latent codes, identical for the same seed on any machine (drawn on CPU)."""
        if not isinstance(n, int) or n < 1:
            raise GeometryError(f"{self.name}: n must be a positive int, got {n!r}")
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        if self._sampler is not None:
            z = self._sampler(n, gen)
        else:
            z = torch.randn(n, self.latent_dim, generator=gen, dtype=torch.float64)
        return z.to(dtype)

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for p in self.parameters():
            return p.dtype
        return torch.float32
