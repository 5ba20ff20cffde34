"""Structural dissimilarity ``d(x0, x) = 1 - SSIM(x0, x)`` for images in [-1, 1].

SSIM after Wang, Bovik, Sheikh & Simoncelli (IEEE TIP 2004), as used for Table 5
of Wang & Ponce (ICLR 2021). Exactly what is computed, per image:

- Window: a normalised Gaussian of ``window = 11`` taps, ``sigma = 1.5``, applied
  separably (rows, then columns) to each channel on its own.
- Local statistics at each window position, weighted by the window ``w``:
  ``mu_x = w * x``, ``s_xx = w * x^2 - mu_x^2``, ``s_xy = w * (x y) - mu_x mu_y``
  (population moments: no ``N / (N - 1)`` correction).
- ``ssim_map = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_xx + s_yy + C2))``
  with ``C1 = (0.01 L)^2 = 4e-4`` and ``C2 = (0.03 L)^2 = 3.6e-3`` for the data range
  ``L = 2`` of images in [-1, 1]. Pixel values are used as they are (not shifted to [0, 1]).
- Borders: only positions where the whole window fits ("valid"; no padding), so an
  ``H x W`` image gives an ``(H - window + 1) x (W - window + 1)`` map per channel.
- ``SSIM`` is the plain mean of the map over channels and positions; ``d = 1 - SSIM``.

This equals scikit-image's ``structural_similarity(..., data_range=2,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`` averaged over
channels (it crops the same borders). ``d`` is smooth, ``d(x0, x0) = 0`` and its
gradient vanishes there, so the metric is ``J_G^T A J_G`` (see ``base``).

Example::

    d = SSIMDistance()
    d(x0, x)                  # (B,) values of 1 - SSIM
    d.ssim(x0, x)             # (B,) SSIM itself
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import GeometryError
from .base import ScalarDistance

__all__ = ["SSIMDistance", "load_ssim"]

# Stabilising constants of Wang et al. 2004 (K1 = 0.01, K2 = 0.03) for data range L = 2.
DATA_RANGE = 2.0
C1 = (0.01 * DATA_RANGE) ** 2
C2 = (0.03 * DATA_RANGE) ** 2


class SSIMDistance(ScalarDistance):
    """``1 - SSIM`` with a Gaussian window (``window`` taps, odd; ``sigma``), see the module doc."""

    name = "ssim"

    def __init__(self, window: int = 11, sigma: float = 1.5) -> None:
        super().__init__()
        if not isinstance(window, int) or isinstance(window, bool) or window < 1 or window % 2 == 0:
            raise GeometryError(f"ssim: window must be a positive odd int, got {window!r}")
        if not isinstance(sigma, (int, float)) or isinstance(sigma, bool) or not math.isfinite(sigma) or sigma <= 0:
            raise GeometryError(f"ssim: sigma must be a positive number, got {sigma!r}")
        self.window = window
        self.sigma = float(sigma)
        taps = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
        g = torch.exp(-(taps**2) / (2 * self.sigma**2))
        # Kept in float64, not as a buffer: a float32 copy cast up to float64 would carry
        # float32 round-off (1e-8 in SSIM) into float64 computations.
        self._taps = g / g.sum()

    def _check(self, x0: torch.Tensor, x: torch.Tensor) -> None:
        for label, t in (("x0", x0), ("x", x)):
            if not isinstance(t, torch.Tensor) or t.ndim != 4:
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise GeometryError(f"ssim: expected {label} of shape (B, C, H, W), got {got}")
        if x0.shape[1:] != x.shape[1:] or x0.shape[0] not in (1, x.shape[0]):
            raise GeometryError(
                f"ssim: expected x0 and x of the same shape, got {tuple(x0.shape)} and {tuple(x.shape)}"
            )
        if min(x.shape[-2:]) < self.window:
            raise GeometryError(
                f"ssim: expected images at least {self.window}x{self.window} (the window), got {tuple(x.shape[-2:])}"
            )

    def _blur(self, t: torch.Tensor) -> torch.Tensor:
        """Separable Gaussian filter per channel, valid positions only: (B, K, H, W) -> (B, K, H', W')."""
        K = t.shape[1]
        g = self._taps.to(dtype=t.dtype, device=t.device)
        t = F.conv2d(t, g.view(1, 1, -1, 1).expand(K, 1, -1, 1), groups=K)
        return F.conv2d(t, g.view(1, 1, 1, -1).expand(K, 1, 1, -1), groups=K)

    def ssim(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Mean SSIM per image, shape (B,); ``x0`` may be one image (batch 1) for all of ``x``."""
        self._check(x0, x)
        x0 = x0.expand_as(x)
        C = x.shape[1]
        # One filter call for the five local moments.
        stats = self._blur(torch.cat([x0, x, x0 * x0, x * x, x0 * x], dim=1))
        mu0, mu, e00, e11, e01 = stats.split(C, dim=1)
        s00 = e00 - mu0 * mu0
        s11 = e11 - mu * mu
        s01 = e01 - mu0 * mu
        num = (2 * mu0 * mu + C1) * (2 * s01 + C2)
        den = (mu0 * mu0 + mu * mu + C1) * (s00 + s11 + C2)
        return (num / den).mean(dim=(1, 2, 3))

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``1 - SSIM(x0, x)`` per image, shape (B,)."""
        return 1.0 - self.ssim(x0, x)

    def pullback(self, x0: torch.Tensor, J: torch.Tensor) -> torch.Tensor:
        """``J_b^T A_b J_b`` from the second-order expansion of ``d`` at ``x = x0 + delta``.

        With ``m = w * delta`` and the window moments of ``x0`` (``mu0``, ``s00``),
        luminance is ``1 - m^2 / P + O(3)`` and contrast-structure ``1 - v / Q + O(3)``,
        ``P = 2 mu0^2 + C1``, ``Q = 2 s00 + C2``, ``v = w * delta^2 - m^2``; so
        ``d = mean(m^2 (1/P - 1/Q) + (w * delta^2) / Q) + O(3)``, whose Hessian is
        ``A = (2 / n) (W^T diag(1/P - 1/Q) W + diag(W^T (1/Q)))`` with ``W`` the window
        filter and ``n`` the number of map entries. Exact at ``x0`` (no third-order term
        reaches the Hessian); equal to HVPs of ``forward`` to float round-off.
        """
        D, B = J.shape[:2]
        shape = x0.shape[1:]
        stats = self._blur(torch.cat([x0, x0 * x0], dim=1))
        mu0, e00 = stats.split(shape[0], dim=1)
        inv_q = 1.0 / (2 * (e00 - mu0 * mu0) + C2)
        alpha = (1.0 / (2 * mu0 * mu0 + C1) - inv_q).flatten(1)  # (B, n)
        # torch types vjp's result as a 2- or 3-tuple; without has_aux it is (output, vjp_fn)
        _, blur_t = torch.func.vjp(self._blur, torch.zeros_like(x0))  # type: ignore[misc]
        beta = blur_t(inv_q)[0].flatten(1)  # (B, N): the window's transpose applied to 1/Q
        m = self._blur(J.reshape(D * B, *shape)).reshape(D, B, -1)  # (D, B, n)
        n = m.shape[-1]
        H = torch.einsum("ibn,jbn->bij", m * alpha, m) + torch.einsum("ibn,jbn->bij", J * beta, J)
        return (2.0 / n) * H


def load_ssim(name: str = "ssim", *, generator=None, device=None, **options) -> SSIMDistance:
    """Registry factory of ``"ssim"``: ``options`` (``window``, ``sigma``) go to ``SSIMDistance``.

    ``generator`` is ignored: an image distance.
    """
    dist = SSIMDistance(**options)
    return dist.to(device) if device is not None else dist
