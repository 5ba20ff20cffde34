"""Traversals along the metric's eigenvectors (Wang & Ponce 2021, Sec. 4 and Fig. 1).

Example::

    from geometry_core.axes import explore_axes
    res = explore_axes(G, load_distance("mse"), G.sample(1)[0], topk=5, delta=0.05,
                       out_dir="axes/")
    res["target"], res["measured"], res["grid_png"], res["curve_png"]

Steps are calibrated from the eigenvalues: near ``z`` the distance grows as
``d(t) ~ lambda t^2 / 2`` along a unit eigenvector with eigenvalue ``lambda`` (the
metric is the Hessian of d), so column ``j`` of a traversal sits at
``t_j = sign(j) sqrt(2 |j| delta / lambda)`` and its image differs from the centre
image by about ``|j| delta``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .errors import GeometryError

if TYPE_CHECKING:
    from .distances.base import Distance

__all__ = [
    "calibrated_steps",
    "explore_axes",
    "measure_distances",
    "relative_errors",
    "save_grid",
    "step_for_distance",
    "traversal_steps",
    "traverse",
]

MODES = ("linear", "spherical")


def step_for_distance(eigvals: torch.Tensor, delta) -> torch.Tensor:
    """The step ``t = sqrt(2 delta / lambda)`` along a unit eigenvector that changes the image by ``delta``.

    The one calibration of every traversal: near ``z`` the distance grows as
    ``lambda t^2 / 2`` (the metric is the Hessian of d). ``eigvals`` must be positive.
    """
    return torch.sqrt(2 * delta / eigvals)


def calibrated_steps(eigvals, *, delta: float, n_steps: int, max_step: float | None = None) -> torch.Tensor:
    """Signed step sizes ``(K, 2 n_steps + 1)``: ``t_kj = sign(j) sqrt(2 |j| delta / lambda_k)``, j = -n..n.

    ``max_step`` clips ``|t|`` (eigenvalues near zero would ask for huge steps);
    without it every eigenvalue must be positive.
    """
    lam = torch.as_tensor(eigvals).detach().cpu().double().reshape(-1)
    if not delta > 0 or not isinstance(n_steps, int) or n_steps < 1:
        raise GeometryError(f"need delta > 0 and an int n_steps >= 1, got delta={delta}, n_steps={n_steps!r}")
    if max_step is None and not (lam > 0).all():
        raise GeometryError(f"eigenvalues must be positive to calibrate steps (got min {float(lam.min()):.3g}); "
                            "pass max_step")
    j = torch.arange(-n_steps, n_steps + 1, dtype=torch.float64)
    t = j.sign() * step_for_distance(lam.clamp_min(1e-300).unsqueeze(1), j.abs() * delta)
    return t.clamp(-max_step, max_step) if max_step is not None else t


def traversal_steps(eigvals, *, n_steps: int = 7, top_step: float = 2.0, max_step: float | None = None) -> np.ndarray:
    """Steps ``(K, n_steps)``, evenly spaced in t, whose edges change every row's image by the same distance.

    ``delta = lambda_1 top_step^2 / 2`` puts the top row's edge at ``top_step``;
    row k's edge is :func:`step_for_distance` of ``lambda_k``. Columns are
    symmetric fractions of the edge step (-1 .. 1). ``max_step`` clips rows whose
    eigenvalue is tiny (their distance is then smaller). The run report's grids.
    """
    lam = np.asarray(eigvals, dtype=np.float64)
    if lam.ndim != 1 or lam.size == 0 or not (lam[0] > 0):
        raise GeometryError(f"traversal needs eigenvalues (K,) with a positive first one, got {lam[:3]}")
    if n_steps < 2:
        raise GeometryError(f"traversal needs n_steps >= 2, got {n_steps}")
    delta = 0.5 * lam[0] * top_step**2
    edge = step_for_distance(torch.from_numpy(np.clip(lam, lam[0] * 1e-12, None)), delta).numpy()
    if max_step is not None:
        edge = np.minimum(edge, max_step)
    return edge[:, None] * np.linspace(-1.0, 1.0, n_steps)[None, :]


def traverse(z: torch.Tensor, directions: torch.Tensor, steps: torch.Tensor, *, mode: str = "linear") -> torch.Tensor:
    """Codes ``(K, S, D)`` along each direction ``(K, D)`` (normalised) at the steps ``(K, S)``.

    ``linear``: ``z + t v``. ``spherical``: the great circle through ``z`` in the plane
    of ``z`` and ``v``, keeping ``||z||``: with ``r = ||z||`` and ``w`` the unit part of
    ``v`` orthogonal to ``z``, ``z(t) = cos(t / r) z + sin(t / r) r w`` (arc length t).
    """
    if mode not in MODES:
        raise GeometryError(f"mode must be one of {MODES}, got {mode!r}")
    if z.ndim != 1 or directions.ndim != 2 or directions.shape[1] != z.shape[0]:
        raise GeometryError(f"expected z (D,) and directions (K, D), "
                            f"got {tuple(z.shape)} and {tuple(directions.shape)}")
    if steps.ndim != 2 or steps.shape[0] != directions.shape[0]:
        raise GeometryError(f"expected steps (K={directions.shape[0]}, S), got {tuple(steps.shape)}")
    v = directions.to(z) / directions.to(z).norm(dim=1, keepdim=True)  # z's dtype and device
    t = steps.to(z).unsqueeze(-1)  # (K, S, 1)
    if mode == "linear":
        return z + t * v.unsqueeze(1)
    r = z.norm()
    zhat = z / r
    w = v - (v @ zhat).unsqueeze(1) * zhat
    wn = w.norm(dim=1, keepdim=True)
    if (wn < 1e-6).any():
        raise GeometryError("spherical traversal: a direction is parallel to z")
    w = (w / wn).unsqueeze(1)
    return torch.cos(t / r) * z + torch.sin(t / r) * r * w


@torch.no_grad()
def measure_distances(G: nn.Module, distance: Distance, z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """``d(G(z), G(code))`` for codes ``(K, S, D)``, shape ``(K, S)``, one batch per row."""
    rows = []
    for row in codes:
        ref = z.unsqueeze(0).expand_as(row)
        rows.append(distance.latent_distance(G, ref, row).detach().cpu().double())
    return torch.stack(rows)


def save_grid(images: torch.Tensor, path) -> str:
    """Save images ``(K, S, 3, H, W)`` in [-1, 1] as one PNG: rows = directions, columns = steps."""
    from torchvision.utils import save_image

    if images.ndim != 5:
        raise GeometryError(f"expected images (K, S, C, H, W), got {tuple(images.shape)}")
    path = os.fspath(path)
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    flat = images.detach().float().cpu().flatten(0, 1)
    save_image(flat, path, nrow=images.shape[1], normalize=True, value_range=(-1, 1), padding=1)
    return path


def _eigenframe(G, distance, z, method):
    from .metric import metric_tensor
    from .spectrum import eigen

    H = metric_tensor(G, distance, z, method=method)
    return eigen(H.detach().cpu().double())


def explore_axes(
    G: nn.Module,
    distance: Distance,
    z: torch.Tensor,
    *,
    eigvals: torch.Tensor | None = None,
    eigvecs: torch.Tensor | None = None,
    topk: int = 5,
    delta: float = 0.05,
    n_steps: int = 3,
    mode: str = "linear",
    max_step: float | None = None,
    method: str = "exact",
    out_dir=None,
) -> dict:
    """Traverse the top-k eigenvectors at ``z`` with calibrated steps and measure the distances.

    The eigenframe is ``(eigvals, eigvecs)`` if given (e.g. of a global metric),
    otherwise that of ``metric_tensor(G, distance, z, method=method)``. Returns
    ``{"eigvals" (K,), "steps" (K, S), "target" (K, S) = |j| delta, "measured" (K, S),
    "codes" (K, S, D), "images" (K, S, 3, H, W)}`` and, when ``out_dir`` is given,
    ``"grid_png"`` and ``"curve_png"`` paths written there.
    """
    if z.ndim != 1:
        raise GeometryError(f"explore_axes takes one code z of shape (D,), got {tuple(z.shape)}")
    if (eigvals is None) != (eigvecs is None):
        raise GeometryError("pass both eigvals and eigvecs, or neither")
    if eigvals is None:
        eigvals, eigvecs = _eigenframe(G, distance, z, method)
    D = z.shape[0]
    if not isinstance(topk, int) or not 1 <= topk <= D:
        raise GeometryError(f"topk must be an int in [1, {D}], got {topk!r}")
    lam = torch.as_tensor(eigvals).double()[:topk]
    V = torch.as_tensor(eigvecs).double()[:, :topk].T  # (K, D)
    steps = calibrated_steps(lam, delta=delta, n_steps=n_steps, max_step=max_step)
    codes = traverse(z, V, steps, mode=mode)
    measured = measure_distances(G, distance, z, codes)
    with torch.no_grad():
        images = torch.stack([G(row) for row in codes]).cpu()
    j = torch.arange(-n_steps, n_steps + 1, dtype=torch.float64).abs()
    result: dict[str, Any] = {  # tensors, and the paths of the PNGs written
        "eigvals": lam,
        "steps": steps,
        "target": (j * delta).expand(topk, -1).clone(),
        "measured": measured,
        "codes": codes,
        "images": images,
    }
    if out_dir is not None:
        from .plots import plot_distance_curve

        result["grid_png"] = save_grid(images, os.path.join(out_dir, "axes_grid.png"))
        result["curve_png"] = plot_distance_curve(
            result["target"].numpy(), measured.numpy(), os.path.join(out_dir, "axes_curve.png"),
            labels=[f"eigvec {k + 1} (λ={float(lam[k]):.3g})" for k in range(topk)],  # ranks from 1
            title=f"{getattr(G, 'name', 'G')} / {getattr(distance, 'name', 'distance')}, {mode}",
        )
    return result


def relative_errors(target: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """``|measured - target| / target`` where the target is positive, NaN at the centre column."""
    target, measured = np.asarray(target, float), np.asarray(measured, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(target > 0, np.abs(measured - target) / target, np.nan)
