"""Gradient-free search with the metric: CMA-ES in the metric's eigenframe (CMAES-Hessian).

Example::

    from geometry_core.search import cma_search, target_distance_objective
    f = target_distance_objective(G, d, target_image)
    plain = cma_search(f, 100, budget=600, seed=0, sigma0=0.5, popsize=12)
    hess = cma_search(f, 100, budget=600, seed=0, eigvecs=V, eigvals=lam,
                      power=0.5, cutoff=40, sigma0=0.5, popsize=12)

Paper, Sec. 6: instead of learning the sampling covariance from scratch, build
it from the global metric: smaller steps along directions that change the
image faster. We optimise ``y`` with pycma in transformed coordinates
``z = x0 + V (s * y)``, so the initial sampling covariance in ``z`` is
``sigma0^2 V diag(s^2) V^T`` (pycma still adapts it from there). Scales:
``s_i = lambda_i^-power`` for the top ``cutoff`` eigenvalues; the remaining
directions get the cutoff-th scale (the largest among the top ones), which
bounds the step along near-null directions instead of letting
``lambda^-power`` blow up, and keeps the full space searchable. ``s`` is
rescaled to unit root-mean-square so that ``sigma0`` means the same expected
step length with or without the metric (``eigvecs=None``: plain CMA-ES).

Budget: one evaluation is one code passed to the objective; exactly
``budget`` are spent (the last, partial generation is evaluated, not told).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .capture import capture_outputs
from .distances.base import Distance
from .errors import GeometryError
from .inversion import OptimResult

if TYPE_CHECKING:
    from .generators.base import Generator

__all__ = [
    "cma_search",
    "frame_scales",
    "random_alexnet",
    "target_distance_objective",
    "unit_activation_objective",
]


def frame_scales(eigvals: np.ndarray, *, power: float = 0.5, cutoff: int | None = None) -> np.ndarray:
    """Scales ``s`` (D,) for the eigenframe: ``lambda^-power`` on the top ``cutoff``
    (descending order), the cutoff-th scale beyond, rescaled to unit RMS."""
    lam = np.asarray(eigvals, dtype=np.float64)
    D = lam.shape[0]
    k = D if cutoff is None else int(cutoff)
    if lam.ndim != 1 or not np.all(np.isfinite(lam)):
        raise GeometryError(f"eigvals: expected a finite 1-D array, got shape {lam.shape}")
    if not 1 <= k <= D:
        raise GeometryError(f"cutoff: expected 1 <= cutoff <= {D}, got {cutoff}")
    if np.any(np.diff(lam) > 1e-12 * abs(lam[0])) or lam[k - 1] <= 0:
        raise GeometryError(f"eigvals: expected descending order with the top {k} positive, "
                            f"got min {lam[:k].min():.3g}")
    s = np.empty(D)
    s[:k] = lam[:k] ** -float(power)
    s[k:] = s[k - 1]
    return s / np.sqrt(np.mean(s**2))


def cma_search(
    objective: Callable[[torch.Tensor], torch.Tensor],
    D: int,
    *,
    budget: int,
    seed: int = 0,
    eigvecs: np.ndarray | torch.Tensor | None = None,
    eigvals: np.ndarray | torch.Tensor | None = None,
    power: float = 0.5,
    cutoff: int | None = None,
    sigma0: float = 0.5,
    popsize: int | None = None,
    x0: np.ndarray | torch.Tensor | None = None,
) -> OptimResult:
    """Minimise a batched black-box ``objective`` (codes (B, D) -> values (B,)) with CMA-ES.

    With ``eigvecs``/``eigvals`` (columns, descending) the search runs in the
    metric's eigenframe (see the module docstring); without, it is plain CMA-ES.
    ``x0`` defaults to the origin; ``popsize`` to pycma's ``4 + 3 ln D``.
    """
    if not isinstance(budget, int) or budget < 1:
        raise GeometryError(f"budget: expected a positive int, got {budget!r}")
    if not sigma0 > 0:
        raise GeometryError(f"sigma0: expected > 0, got {sigma0!r}")
    V, s = np.eye(D), np.ones(D)
    if eigvecs is not None:
        V = np.asarray(torch.as_tensor(eigvecs, dtype=torch.float64).cpu())
        if V.shape != (D, D):
            raise GeometryError(f"eigvecs: expected ({D}, {D}) with eigenvectors as columns, got {V.shape}")
        if eigvals is None:
            raise GeometryError("eigvals: needed with eigvecs, got None")
        s = frame_scales(np.asarray(torch.as_tensor(eigvals, dtype=torch.float64).cpu()), power=power, cutoff=cutoff)
    center = np.zeros(D) if x0 is None else np.asarray(torch.as_tensor(x0, dtype=torch.float64).cpu())
    if center.shape != (D,):
        raise GeometryError(f"x0: expected shape ({D},), got {center.shape}")
    return _run_cma(objective, lambda y: center + (y * s) @ V.T, D, budget, seed, sigma0, popsize)


def _run_cma(objective, to_z, D, budget, seed, sigma0, popsize) -> OptimResult:
    import cma

    # A private generator instead of pycma's default (numpy's global one); no
    # stopping rule ends a run before the budget is spent.
    rng = np.random.default_rng(int(seed))
    opts = {"seed": np.nan, "randn": lambda *shape: rng.standard_normal(shape), "verbose": -9,
            "tolfun": 0, "tolx": 0, "tolfunhist": 0, "tolstagnation": 10**9, "tolflatfitness": 10**9}
    if popsize is not None:
        opts["popsize"] = int(popsize)
    es = cma.CMAEvolutionStrategy(np.zeros(D), sigma0, opts)
    values: list[float] = []
    best_z, best_v = None, np.inf
    while len(values) < budget:
        ys = es.ask()
        n = min(len(ys), budget - len(values))
        zs = np.stack([to_z(np.asarray(y)) for y in ys[:n]])
        with torch.no_grad():
            f = objective(torch.as_tensor(zs, dtype=torch.float64))
        f = np.asarray(torch.as_tensor(f, dtype=torch.float64).reshape(-1).cpu())
        if f.shape != (n,):
            raise GeometryError(f"objective: expected {n} values for {n} codes, got shape {f.shape}")
        values.extend(f.tolist())
        i = int(np.argmin(f))
        if f[i] < best_v:
            best_v, best_z = float(f[i]), zs[i]
        if n == len(ys):
            es.tell(ys, f.tolist())
    return OptimResult(torch.from_numpy(best_z), best_v, np.asarray(values), len(values), "cma")


def random_alexnet(seed: int = 0) -> nn.Module:
    """torchvision's AlexNet with random weights drawn at ``seed`` (no download), frozen.

    A reproducible stand-in black box for tests and benchmarks; real users pass
    a pretrained CNN (e.g. ``torchvision.models.alexnet(weights=...)``).
    """
    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        net = torchvision.models.alexnet(weights=None)
    return net.eval().requires_grad_(False)


_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def unit_activation_objective(
    G: Generator, cnn: nn.Module, layer: str, unit: int, *, input_size: int | None = 224
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``z -> -activation`` of channel ``unit`` of ``cnn``'s module ``layer`` on ``G(z)``.

    Images go from [-1, 1] to ImageNet normalisation, resized to ``input_size``
    (bilinear; ``None`` keeps G's size). Convolutional outputs are read at the
    spatial centre (as in neuron-stimulus searches), linear outputs directly.
    """
    modules = dict(cnn.named_modules())
    if layer not in modules:
        raise GeometryError(f"layer: {layer!r} is not a module of the CNN; known: {list(modules)[1:12]}...")
    target_module = modules[layer]
    mean = torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1)

    def objective(z: torch.Tensor) -> torch.Tensor:
        x = (G(z.to(dtype=G.dtype, device=G.device)) + 1) / 2
        if input_size is not None and x.shape[-1] != input_size:
            x = torch.nn.functional.interpolate(x, size=(input_size, input_size), mode="bilinear", align_corners=False)
        # clone: an in-place ReLU after the layer must not rewrite what was captured
        (a,) = capture_outputs(cnn, [target_module], ((x - mean.to(x)) / std.to(x)).to(next(cnn.parameters()).dtype),
                               clone=True)
        if not 0 <= unit < a.shape[1]:
            raise GeometryError(f"unit: expected 0 <= unit < {a.shape[1]} for layer {layer!r}, got {unit}")
        if a.ndim == 4:
            a = a[:, unit, a.shape[2] // 2, a.shape[3] // 2]
        else:
            a = a[:, unit]
        return -a

    return objective


def target_distance_objective(
    G: Generator, distance: Distance, target: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``z -> d(target, G(z))`` per code: a black-box view of inversion."""
    from .inversion import image_loss

    loss = image_loss(G, distance, target)
    return lambda z: loss(z.to(dtype=G.dtype, device=G.device))
