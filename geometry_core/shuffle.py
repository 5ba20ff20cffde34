"""The weight-shuffled control (Wang & Ponce 2021, Sec. 5 and A.8).

Example::

    from geometry_core.shuffle import shuffle_weights
    G0 = shuffle_weights(G, seed=1)   # same architecture, same weight distributions

Every parameter tensor has its elements permuted within itself, so each layer's
distribution of weights is unchanged while the learned structure is destroyed.
"""

from __future__ import annotations

import copy
from typing import TypeVar

import torch
from torch import nn

from .errors import GeometryError

__all__ = ["shuffle_weights"]

_M = TypeVar("_M", bound=nn.Module)  # the copy has the type of the module given


def _permute_(t: torch.Tensor, gen: torch.Generator) -> None:
    perm = torch.randperm(t.numel(), generator=gen).to(t.device)
    t.copy_(t.detach().reshape(-1)[perm].reshape(t.shape))


@torch.no_grad()
def shuffle_weights(G: _M, seed: int, *, buffers: bool = False) -> _M:
    """A deep copy of ``G`` with every parameter tensor permuted within itself.

    The permutation of each tensor is ``torch.randperm(numel)`` drawn on CPU from
    one generator seeded with ``seed``, tensors visited in ``named_parameters()``
    order: the result is identical for the same seed on any machine. ``G`` is
    left untouched.

    Batch-norm affine weights and biases are parameters, so they are shuffled like
    every other weight (the paper shuffles "the elements of the weight tensor from
    each layer"). Buffers such as batch-norm running means and variances are
    statistics, not weights: they are kept as they are unless ``buffers=True``, in
    which case every floating-point buffer is permuted within itself too (integer
    buffers such as ``num_batches_tracked`` never are). Fixed noise inputs stored
    as buffers are therefore kept by default.
    """
    if not isinstance(G, nn.Module):
        raise GeometryError(f"shuffle_weights expects a torch.nn.Module, got {type(G).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise GeometryError(f"shuffle_weights: seed must be an int, got {seed!r}")
    out = copy.deepcopy(G)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    for _, p in out.named_parameters():
        _permute_(p, gen)
    if buffers:
        for _, b in out.named_buffers():
            if b.is_floating_point() and b.numel() > 1:
                _permute_(b, gen)
    if hasattr(out, "name") and isinstance(out.name, str):
        # torch types Module.__setattr__ for tensors and modules only; a plain str attribute is fine
        out.name = f"{out.name}-shuffled{seed}"  # type: ignore[assignment]
    return out
