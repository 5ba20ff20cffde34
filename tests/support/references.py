"""Comparing a generator with outputs that another program stored in float32.

A stored float32 output is one rounding of the true value; another CPU (or
another order of summation) rounds differently, so a bare absolute tolerance
that held where the file was written can fail elsewhere. The tolerance here is
derived from the network itself on the machine running the test: the truth is
approximated by the float64 forward of the same weights, and the size of a
float32 evaluation's rounding by ``max |G32(z) - G64(z)|``.

The stored output is an independent float32 evaluation of the same maths, so its
distance from the float64 value is of the order of that rounding; ``FACTOR``
covers a different summation order's worst element (measured here: at most 1.2×
ours), ``FLOOR_ULPS`` units of float32 roundoff of the output's magnitude cover a
network whose float32 forward happens to round almost exactly. A wrong layer or
option (leak, alpha, a missing activation) moves outputs by 1e-2 or more, far above.
"""

from __future__ import annotations

import copy

import torch

__all__ = ["assert_matches_float32_reference", "float32_rounding"]

FACTOR = 8.0
FLOOR_ULPS = 64
U32 = 2.0 ** -24  # float32 unit roundoff


def _float64_copy(G):
    return copy.deepcopy(G).to(dtype=torch.float64)


def float32_rounding(G, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(G(z) in float32, G(z) in float64, max |difference|)``."""
    with torch.no_grad():
        x32 = G(z.float())
        x64 = _float64_copy(G)(z.double())
    return x32, x64, float((x32.double() - x64).abs().max())


def assert_matches_float32_reference(G, z: torch.Tensor, expected: torch.Tensor) -> float:
    """The float64 forward of ``G`` equals the stored float32 ``expected`` within its rounding; returns the tolerance.

    The float32 forward is checked too, within the same tolerance plus its own rounding.
    """
    x32, x64, rounding = float32_rounding(G, z)
    assert x32.shape == expected.shape, (tuple(x32.shape), tuple(expected.shape))
    tol = max(FACTOR * rounding, FLOOR_ULPS * U32 * float(expected.abs().max()))
    torch.testing.assert_close(x64, expected.double(), rtol=0, atol=tol)
    torch.testing.assert_close(x32.double(), expected.double(), rtol=0, atol=tol + rounding)
    return tol
