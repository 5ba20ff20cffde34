"""GAN inversion with the metric: Adam in the global metric's eigenbasis, and BasinCMA.

Example::

    import geometry_core as gc
    from geometry_core.inversion import InversionOptions, invert
    G = gc.load_generator("dcgan-faces")
    d = gc.load_distance("mse")
    H = gc.metric_tensor(G, d, G.sample(32, seed=0))
    _, eigvals, eigvecs = gc.global_metric(H)
    target = G(G.sample(1, seed=10_000))[0]
    res = invert(G, d, target, InversionOptions(basis=eigvecs, eigvals=eigvals, power=0.0, steps=200, lr=0.05))
    res.value, res.evaluations

Paper, Sec. 6: Adam adapts one step size per coordinate, a diagonal
approximation of the Hessian; when the metric is anisotropic and not aligned
with the coordinates, rotating the latent space into the eigenbasis of the
global (average) metric makes it closer to diagonal. Adam is not rotation
invariant, which is why a pure rotation (``power=0``) already changes it.

Parametrisation: ``z = V (s * w)`` with ``V`` the eigenvectors (columns) and
``s = lambda^(-power)``, eigenvalues clipped below at ``floor * max(lambda)``
and ``s`` rescaled to unit root-mean-square, so that an isotropic step in ``w``
has the same expected length in ``z`` whatever the power. Adam (and CMA-ES)
act on ``w``.

Evaluation budget: one *evaluation* is one latent code passed through the
generator and the distance (forward, with or without a backward pass). A batch
of B codes costs B. Every optimiser spends exactly ``steps`` evaluations and
returns the best evaluated code, so budgets are equal across methods.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np
import torch

from .distances.base import Distance
from .errors import GeometryError

if TYPE_CHECKING:
    from .generators.base import Generator

__all__ = [
    "InversionOptions",
    "OptimResult",
    "LatentBasis",
    "adam_minimize",
    "basincma_minimize",
    "image_loss",
    "invert",
    "invert_many",
    "latent_basis",
    "metric_eigenbasis",
]

OPTIMIZERS = ("adam", "basincma")


@dataclass
class OptimResult:
    """Outcome of an optimiser: inversion here, black-box search in :mod:`geometry_core.search`.

    ``z``: best code found (D,); ``value``: its loss (the distance, for an
    inversion); ``trajectory``: the loss of every evaluation in order (length
    ``evaluations``; its running minimum is the best-so-far curve);
    ``evaluations``: codes evaluated; ``optimizer``: "adam", "basincma" or "cma".
    """

    z: torch.Tensor
    value: float
    trajectory: np.ndarray
    evaluations: int
    optimizer: str

    def best_so_far(self) -> np.ndarray:
        """The running minimum of ``trajectory``."""
        return np.minimum.accumulate(self.trajectory)


@dataclass
class LatentBasis:
    """The change of variables ``z = V (s * w)`` (``V`` orthogonal, ``s > 0``)."""

    V: torch.Tensor
    s: torch.Tensor

    def to_z(self, w: torch.Tensor) -> torch.Tensor:
        return (w * self.s) @ self.V.T

    def to_w(self, z: torch.Tensor) -> torch.Tensor:
        return (z @ self.V) / self.s


def latent_basis(
    D: int,
    *,
    basis: torch.Tensor | np.ndarray | None = None,
    eigvals: torch.Tensor | np.ndarray | None = None,
    power: float = 0.0,
    floor: float = 1e-6,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> LatentBasis:
    """Build ``z = V (s * w)`` from an eigenbasis (columns) and eigenvalues.

    ``basis=None`` gives the identity (plain coordinates). ``power`` > 0 needs
    ``eigvals``; they are clipped below at ``floor * max(eigvals)`` so that
    near-null directions get a bounded scale, and ``s`` is rescaled to unit RMS.
    """
    if basis is None:
        if power != 0.0:
            raise GeometryError(f"power={power} needs basis and eigvals; got basis=None")
        eye = torch.eye(D, dtype=dtype, device=device)
        return LatentBasis(eye, torch.ones(D, dtype=dtype, device=device))
    V = torch.as_tensor(basis, dtype=torch.float64)
    if V.shape != (D, D):
        raise GeometryError(f"basis: expected a ({D}, {D}) matrix of eigenvectors as columns, got {tuple(V.shape)}")
    err = (V.T @ V - torch.eye(D, dtype=torch.float64)).abs().max().item()
    if not err < 1e-4:
        raise GeometryError(f"basis: columns must be orthonormal, max |VᵀV - I| = {err:.2e}")
    s = torch.ones(D, dtype=torch.float64)
    if power != 0.0:
        if eigvals is None:
            raise GeometryError(f"power={power} needs eigvals; got None")
        lam = torch.as_tensor(eigvals, dtype=torch.float64)
        if lam.shape != (D,) or not torch.isfinite(lam).all() or lam.max() <= 0:
            raise GeometryError(f"eigvals: expected {D} finite values with a positive maximum, "
                                f"got shape {tuple(lam.shape)}")
        if not 0 < floor < 1:
            raise GeometryError(f"floor: expected a ratio in (0, 1), got {floor}")
        s = lam.clamp_min(floor * lam.max()).pow(-float(power))
        s = s / s.pow(2).mean().sqrt()
    return LatentBasis(V.to(dtype=dtype, device=device), s.to(dtype=dtype, device=device))


def metric_eigenbasis(
    G: Generator, distance: Distance, *, n_codes: int = 32, seed: int = 0, batch: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending) and eigenvectors (columns) of the global metric over
    ``G.sample(n_codes, seed)``: the mean of the metric tensors (``global_metric``)."""
    from .homogeneity import global_metric
    from .metric import metric_tensor

    if not isinstance(n_codes, int) or n_codes < 1:
        raise GeometryError(f"n_codes: expected a positive int, got {n_codes!r}")
    z = G.sample(n_codes, seed=seed, dtype=G.dtype).to(G.device)
    H = torch.cat([metric_tensor(G, distance, z[i:i + batch]).detach() for i in range(0, n_codes, batch)])
    _, eigvals, eigvecs = global_metric(H.double().cpu())
    return eigvals, eigvecs


def image_loss(
    G: Generator, distance: Distance, target_image: torch.Tensor
) -> Callable[..., torch.Tensor]:
    """``loss(z, rows=None) -> d(target[rows], G(z))`` per code (B,).

    ``target_image``: one image (3, H, W) or a stack (N, 3, H, W) in [-1, 1];
    ``phi`` of the targets is computed once. ``rows`` (B,) picks each code's
    target; by default every code is compared with the first (only) target.
    """
    if not isinstance(target_image, torch.Tensor) or target_image.ndim not in (3, 4):
        got = tuple(target_image.shape) if isinstance(target_image, torch.Tensor) else type(target_image).__name__
        raise GeometryError(f"target_image: expected a (3, H, W) or (N, 3, H, W) tensor in [-1, 1], got {got}")
    x0 = target_image if target_image.ndim == 4 else target_image.unsqueeze(0)
    if type(distance).phi is Distance.phi:
        raise GeometryError(f"distance {distance.name!r} has no image representation phi; "
                            "inversion needs an image distance")
    with torch.no_grad():
        probe = G(torch.zeros(1, G.latent_dim, dtype=G.dtype, device=G.device))
        if probe.shape[1:] != x0.shape[1:]:
            raise GeometryError(f"target_image: expected images of shape {tuple(probe.shape[1:])} like G's, "
                                f"got {tuple(x0.shape[1:])}")
        phi0 = distance.phi(x0.to(dtype=probe.dtype, device=probe.device))

    def loss(z: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        ref = phi0[:1] if rows is None else phi0[rows]
        return distance.c * (distance.phi(G(z)) - ref).pow(2).sum(dim=-1)

    return loss


class _Tracker:
    """Counts one problem's evaluations, keeps every loss and the best code seen."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.losses: list[float] = []
        self.best_loss = float("inf")
        self.best_z: torch.Tensor | None = None

    @property
    def left(self) -> int:
        return self.budget - len(self.losses)

    def record(self, z: torch.Tensor, loss: torch.Tensor) -> None:
        vals = loss.detach().double().cpu()
        if len(self.losses) + vals.numel() > self.budget:
            raise RuntimeError("evaluation budget exceeded")  # a bug here, never user input
        self.losses.extend(vals.tolist())
        i = int(torch.argmin(vals))
        if vals[i].item() < self.best_loss:
            self.best_loss = vals[i].item()
            self.best_z = z[i].detach().clone()

    def result(self, optimizer: str) -> OptimResult:
        if self.best_z is None:  # every loss NaN: there is no best code to return
            raise GeometryError(f"{optimizer}: every one of the {len(self.losses)} losses was NaN; the generator "
                                "or the distance gives non-finite values here")
        return OptimResult(self.best_z, self.best_loss, np.asarray(self.losses), len(self.losses), optimizer)


def _adam_run(loss_fn, basis: LatentBasis, w0, rows, steps: int, lr: float, trackers) -> torch.Tensor:
    """``steps`` evaluations of Adam on each row of ``w0``; row i belongs to problem ``rows[i]``.

    ``loss_fn(z, rows) -> (B,)``. Each evaluation computes loss and gradient at the
    current w; the update after the last one is skipped, so the returned w is the
    last scored point. Adam is elementwise, so a summed loss optimises each row
    independently of the others.
    """
    w = w0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    for k in range(steps):
        opt.zero_grad(set_to_none=True)
        z = basis.to_z(w)
        loss = loss_fn(z, rows)
        if len(trackers) == 1:
            trackers[0].record(z, loss)
        else:
            for p in torch.unique(rows).tolist():
                mask = rows == p
                trackers[p].record(z[mask], loss[mask])
        if k == steps - 1:
            break
        loss.sum().backward()
        opt.step()
    return w.detach()


def _check_common(D: int, steps: int, lr: float, z_init: torch.Tensor | None) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise GeometryError(f"steps: expected a positive int (evaluation budget), got {steps!r}")
    if not lr > 0:
        raise GeometryError(f"lr: expected a positive learning rate, got {lr!r}")
    if z_init is not None and (z_init.shape[-1] != D or not torch.isfinite(z_init).all()):
        raise GeometryError(f"z_init: expected finite codes of size {D}, got shape {tuple(z_init.shape)}")


def _adam_problems(loss_fn, basis, z_init, steps, lr) -> list[OptimResult]:
    n = z_init.shape[0]
    trackers = [_Tracker(steps) for _ in range(n)]
    rows = torch.arange(n, device=z_init.device)
    _adam_run(loss_fn, basis, basis.to_w(z_init), rows, steps, lr, trackers)
    return [t.result("adam") for t in trackers]


def _basincma_problems(
    loss_fn, basis, z_init, steps, lr, seeds, population, inner_steps, sigma0, tell
) -> list[OptimResult]:
    """BasinCMA on n independent problems in lockstep, candidates batched through ``loss_fn``."""
    import cma

    n, D = z_init.shape
    trackers = [_Tracker(steps) for _ in range(n)]
    w0 = basis.to_w(z_init).detach().double().cpu().numpy()
    strategies = []
    for i in range(n):
        # A private generator per problem: results do not depend on batching.
        rng = np.random.default_rng(int(seeds[i]))
        opts = {"popsize": population, "seed": np.nan, "verbose": -9,
                "randn": lambda *shape, rng=rng: rng.standard_normal(shape)}
        strategies.append(cma.CMAEvolutionStrategy(w0[i], sigma0, opts))
    like = dict(dtype=z_init.dtype, device=z_init.device)
    rows = torch.arange(n, device=z_init.device).repeat_interleave(population)
    while trackers[0].left >= population * inner_steps:
        asked = [es.ask() for es in strategies]
        w = torch.as_tensor(np.concatenate([np.asarray(a) for a in asked]), **like)
        w_ref = _adam_run(loss_fn, basis, w, rows, inner_steps, lr, trackers)
        for i, es in enumerate(strategies):
            scores = trackers[i].losses[-population:]
            refined = [x.double().cpu().numpy() for x in w_ref[i * population:(i + 1) * population]]
            told = refined if tell == "refined" else asked[i]
            if not np.isfinite(np.asarray(told)).all():  # pycma would stop on a bare assertion
                raise GeometryError(f"basincma: codes turned non-finite after {len(trackers[i].losses)} evaluations; "
                                    "the generator or the distance gives non-finite values here")
            with warnings.catch_warnings():
                # pycma flags told points it did not draw; it rescales them (check_points)
                warnings.filterwarnings("ignore", message=".*orphanated injected solution")
                es.tell(told, scores)
    if trackers[0].left > 0:
        # no whole generation fitted the budget: Adam from the start instead
        # every tracker has a best_z once the first has: they record the same generations
        start = z_init if trackers[0].best_z is None else torch.stack([cast(torch.Tensor, t.best_z) for t in trackers])
        w_best = basis.to_w(start)
        _adam_run(loss_fn, basis, w_best, torch.arange(n, device=z_init.device), trackers[0].left, lr, trackers)
    return [t.result("basincma") for t in trackers]


def _check_basincma(population, inner_steps, sigma0, tell) -> None:
    if tell not in ("refined", "sampled"):
        raise GeometryError(f"tell: expected 'refined' or 'sampled', got {tell!r}")
    if population < 2 or inner_steps < 1 or not sigma0 > 0:
        raise GeometryError(
            f"expected population >= 2, inner_steps >= 1, sigma0 > 0; got {population}, {inner_steps}, {sigma0}"
        )


def adam_minimize(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    z_init: torch.Tensor,
    *,
    basis: LatentBasis,
    steps: int,
    lr: float,
) -> OptimResult:
    """Adam on ``w`` with ``z = basis.to_z(w)`` for exactly ``steps`` evaluations of ``loss_fn``.

    ``loss_fn`` maps codes (B, D) to losses (B,) and must be differentiable;
    ``z_init`` is one code (D,).
    """
    _check_common(z_init.shape[-1], steps, lr, z_init)
    return _adam_problems(lambda z, rows: loss_fn(z), basis, z_init.reshape(1, -1), steps, lr)[0]


def basincma_minimize(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    z_init: torch.Tensor,
    *,
    basis: LatentBasis,
    steps: int,
    lr: float,
    seed: int = 0,
    population: int = 8,
    inner_steps: int = 5,
    sigma0: float = 0.5,
    tell: str = "refined",
) -> OptimResult:
    """BasinCMA (Huh et al. 2020): CMA-ES over ``w`` whose candidates are refined by Adam.

    Each generation asks ``population`` candidates and spends ``inner_steps``
    evaluations of Adam on each (candidates batched; the last evaluation scores
    the candidate after ``inner_steps - 1`` updates), then tells CMA-ES the
    scores. ``tell="refined"`` (default, Lamarckian) tells the refined
    positions, which pycma accepts for solutions it did not draw (it rescales
    outliers, ``check_points``); ``tell="sampled"`` (Baldwinian) tells the drawn
    positions with the refined scores. Evaluations left after the last whole
    generation go to Adam from the best code: exactly ``steps`` are spent.
    """
    _check_common(z_init.shape[-1], steps, lr, z_init)
    _check_basincma(population, inner_steps, sigma0, tell)
    return _basincma_problems(
        lambda z, rows: loss_fn(z), basis, z_init.reshape(1, -1), steps, lr, [seed],
        population, inner_steps, sigma0, tell,
    )[0]


@dataclass(frozen=True)
class InversionOptions:
    """How to invert: the latent frame, the optimiser and its budget.

    ``basis``/``eigvals``: eigenvectors (columns) and eigenvalues of the global
    metric (``global_metric``), or ``None`` for plain coordinates; ``power``
    scales direction i by ``lambda_i^-power`` (0: a pure rotation); ``floor``
    bounds the eigenvalues used for scaling. ``optimizer`` is ``"adam"`` or
    ``"basincma"`` (``population``, ``inner_steps``, ``sigma0``, ``tell``; see
    :func:`basincma_minimize`). ``steps`` evaluations per target; ``seed`` seeds
    the default initial codes and CMA-ES.
    """

    basis: torch.Tensor | np.ndarray | None = None
    eigvals: torch.Tensor | np.ndarray | None = None
    power: float = 0.0
    optimizer: str = "adam"
    steps: int = 200
    lr: float = 0.05
    seed: int = 0
    population: int = 8
    inner_steps: int = 5
    sigma0: float = 0.5
    tell: str = "refined"
    floor: float = 1e-6


def invert(
    G: Generator,
    distance: Distance,
    target_image: torch.Tensor,
    options: InversionOptions | None = None,
    *,
    z_init: torch.Tensor | None = None,
    callback: Callable[[OptimResult], None] | None = None,
) -> OptimResult:
    """Find ``z`` minimising ``d(target_image, G(z))`` within ``options.steps`` evaluations.

    ``z_init`` defaults to ``G.sample(1, options.seed)``. ``callback`` gets the result.
    """
    if isinstance(target_image, torch.Tensor) and target_image.ndim == 4 and target_image.shape[0] != 1:
        raise GeometryError(f"target_image: expected one image, got a batch of {target_image.shape[0]}; "
                            "use invert_many")
    if isinstance(target_image, torch.Tensor) and target_image.ndim == 3:
        target_image = target_image.unsqueeze(0)
    z = None if z_init is None else torch.as_tensor(z_init).reshape(1, -1)
    res = invert_many(G, distance, target_image, options, z_init=z)[0]
    if callback is not None:
        callback(res)
    return res


def invert_many(
    G: Generator,
    distance: Distance,
    target_images: torch.Tensor,
    options: InversionOptions | None = None,
    *,
    z_init: torch.Tensor | None = None,
) -> list[OptimResult]:
    """Invert N images (N, 3, H, W) independently, batched through G: one result each.

    The same as N calls of :func:`invert` (up to floating-point effects of
    batching) with ``z_init[i]`` (default ``G.sample(N, seed)``) and CMA-ES seed
    ``seed + i``; every problem gets exactly ``steps`` evaluations.
    """
    o = options if options is not None else InversionOptions()
    if o.optimizer not in OPTIMIZERS:
        raise GeometryError(f"optimizer: expected one of {OPTIMIZERS}, got {o.optimizer!r}")
    loss_fn = image_loss(G, distance, target_images)
    n, D = (1 if target_images.ndim == 3 else target_images.shape[0]), G.latent_dim
    z0 = G.sample(n, seed=o.seed, dtype=G.dtype) if z_init is None else torch.as_tensor(z_init)
    _check_common(D, o.steps, o.lr, z0)
    if z0.shape != (n, D):
        raise GeometryError(f"z_init: expected shape ({n}, {D}) for {n} targets, got {tuple(z0.shape)}")
    z0 = z0.to(dtype=G.dtype, device=G.device)
    lb = latent_basis(D, basis=o.basis, eigvals=o.eigvals, power=o.power, floor=o.floor, dtype=G.dtype,
                      device=G.device)
    if o.optimizer == "adam":
        return _adam_problems(loss_fn, lb, z0, o.steps, o.lr)
    _check_basincma(o.population, o.inner_steps, o.sigma0, o.tell)
    seeds = [o.seed + i for i in range(n)]
    return _basincma_problems(loss_fn, lb, z0, o.steps, o.lr, seeds, o.population, o.inner_steps, o.sigma0, o.tell)
