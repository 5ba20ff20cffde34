"""Layer geometry (Wang & Ponce 2021, Sec. 5): the metric pulled back from each layer.

Example::

    from geometry_core.layers import layer_metrics, amplification
    H = layer_metrics(G, G.sample(1)[0])          # {layer: (D, D)}
    amp = amplification(H)
    amp["corr_log"]                               # (L, L), 1 on the diagonal

The metric of layer ``l`` at ``z`` is the Hessian of the ``layer:<name>`` distance,
the mean over the layer's M entries of ``(f_l(z) - f_l(z0))^2``, so
``H_l = (2 / M) J_l^T J_l`` with ``J_l`` the Jacobian of ``z -> f_l(z)`` (flattened).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, cast, overload

import numpy as np
import torch
from torch import nn

from .capture import capture_outputs
from .errors import GeometryError
from .homogeneity import pearson

if TYPE_CHECKING:
    from .generators.base import Generator

__all__ = [
    "amplification",
    "jacobian",
    "layer_jacobian",
    "layer_map",
    "layers_map",
    "layer_metrics",
    "plot_amplification",
]


def _layer_names(G: nn.Module) -> list[str]:
    return list(getattr(G, "layer_names", []) or [])


def _module_of(G: nn.Module, layer: str) -> nn.Module:
    if hasattr(G, "layer"):
        return cast("Generator", G).layer(layer)  # GeometryError listing the known layers
    module = dict(G.named_modules()).get(layer)
    if module is None:
        raise GeometryError(f"unknown layer {layer!r}; known layers: {_layer_names(G)}")
    return module


def layers_map(G: nn.Module, layers: Sequence[str]) -> Callable[[torch.Tensor], tuple[torch.Tensor, ...]]:
    """The map ``z (B, D) -> (f_l(z) (B, M_l) for l in layers)`` from one forward pass.

    The pass stops once every layer has run (a hook raises), which is cheaper and
    also shields the captured tensors from in-place activations that follow them.
    """
    modules = [_module_of(G, name) for name in layers]

    def f(z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = capture_outputs(G, modules, z)
        missing = [name for name, out in zip(layers, outs) if out is None]
        if missing:
            raise GeometryError(f"layers {missing} were not reached in the forward pass")
        return tuple((out[0] if isinstance(out, (tuple, list)) else out).flatten(1) for out in outs)

    return f


def layer_map(G: nn.Module, layer: str | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The map ``z (B, D) -> f_layer(z) (B, M)``, flattened activations of one named layer.

    ``layer=None`` gives the image itself, flattened.
    """
    if layer is None:
        return lambda z: G(z).flatten(1)
    f = layers_map(G, [layer])
    return lambda z: f(z)[0]


@overload
def jacobian(
    f: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, *, chunk_size: int | None = None
) -> torch.Tensor: ...


@overload
def jacobian(
    f: Callable[[torch.Tensor], tuple[torch.Tensor, ...]], z: torch.Tensor, *, chunk_size: int | None = None
) -> tuple[torch.Tensor, ...]: ...


def jacobian(
    f: Callable[[torch.Tensor], torch.Tensor] | Callable[[torch.Tensor], tuple[torch.Tensor, ...]],
    z: torch.Tensor,
    *,
    chunk_size: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Jacobian of a batched map ``f: (B, D) -> (B, M)`` at each code, by forward mode.

    ``z`` of shape ``(D,)`` gives ``(M, D)``; ``(B, D)`` gives ``(B, M, D)``. A map
    returning a tuple of ``(B, M_l)`` tensors gives a tuple of Jacobians.
    ``chunk_size`` bounds how many tangents are pushed forward at once. The
    engine is :func:`geometry_core.metric.forward_jacobian`, the one behind
    ``metric_tensor(method="exact")``.
    """
    from .metric import forward_jacobian

    if not isinstance(z, torch.Tensor) or z.ndim not in (1, 2):
        got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise GeometryError(f"jacobian: expected z of shape (D,) or (B, D), got {got}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise GeometryError(f"jacobian: chunk_size must be a positive int, got {chunk_size!r}")
    single = z.ndim == 1
    J = forward_jacobian(f, z.unsqueeze(0) if single else z, chunk_size=chunk_size, caller="jacobian")

    def batch_major(j: torch.Tensor) -> torch.Tensor:  # (D, B, M) -> (B, M, D), or (M, D) for one code
        j = j.permute(1, 2, 0)
        return j[0] if single else j

    return tuple(batch_major(j) for j in J) if isinstance(J, tuple) else batch_major(J)


def layer_jacobian(G: nn.Module, layer: str | None, z: torch.Tensor, *, chunk_size: int | None = None) -> torch.Tensor:
    """Jacobian of ``z -> f_layer(z)`` (flattened), ``(M, D)`` or ``(B, M, D)``."""
    return jacobian(layer_map(G, layer), z, chunk_size=chunk_size)


def layer_metrics(
    G: nn.Module,
    z: torch.Tensor,
    *,
    layers: Sequence[str] | None = None,
    method: str = "jacobian",
    chunk_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """The pulled-back metric of every named layer: ``{layer: (D, D)}`` or ``{layer: (B, D, D)}``.

    ``layers`` defaults to ``G.layer_names``. ``method="jacobian"`` computes
    ``H_l = (2 / M) J_l^T J_l`` here (forward-mode Jacobian, in ``z``'s dtype: the
    Hessian of the mean-squared ``layer:<name>`` distance); any other method name
    is passed to ``geometry_core.metric.metric_tensor`` with that distance.
    """
    names = list(layers) if layers is not None else _layer_names(G)
    if not names:
        raise GeometryError("no layers: pass layers=[...] or use a generator with layer_names")
    if method == "jacobian":
        Js = jacobian(layers_map(G, names), z, chunk_size=chunk_size)
        out = {}
        for name, J in zip(names, Js):
            H = (2.0 / J.shape[-2]) * J.transpose(-1, -2) @ J
            out[name] = 0.5 * (H + H.transpose(-1, -2))  # exact symmetry despite rounding
        return out
    from .distances import load_distance
    from .metric import metric_tensor

    return {
        name: metric_tensor(G, load_distance(f"layer:{name}", generator=G), z, method=method)
        for name in names
    }


def amplification(H_by_layer: Mapping[str, torch.Tensor]) -> dict:
    """How each layer's metric amplifies the eigenvectors of every other layer's metric.

    With ``u_ak`` the k-th eigenvector of ``H_a`` and ``l_bk`` the k-th eigenvalue of
    ``H_b`` (both in descending order):

    - ``energy[a, b, k] = u_ak^T H_b u_ak``: the amplification of a's k-th eigenvector
      by layer b (the paper's Fig. 4B curves); ``energy[a, a] = l_a``.
    - ``ratio[a, b, k] = energy[a, b, k] / l_bk``: against b's own k-th eigenvalue
      (1 everywhere when the eigenframes agree).
    - ``corr_log[a, b]``: Pearson correlation of ``log10 energy[a, b, :]`` with
      ``log10 l_b`` over the entries where both are positive; ``corr_lin`` the same
      on the linear scale. This is the homogeneity statistic applied across layers
      instead of across points; the diagonal is exactly 1.

    Input ``{layer: (D, D)}`` gives arrays ``(L, L, D)`` and ``(L, L)``; ``{layer:
    (B, D, D)}`` gives a leading batch axis on every array and also ``corr_log_mean``
    and ``corr_lin_mean`` (nan-mean over points). Computed in float64.
    """
    from .spectrum import eigen

    names = list(H_by_layer)
    if not names:
        raise GeometryError("amplification needs at least one layer metric, got none")
    shapes = {tuple(H.shape) for H in H_by_layer.values()}
    shape = next(iter(shapes))
    if len(shapes) != 1 or len(shape) not in (2, 3) or shape[-1] != shape[-2]:
        raise GeometryError(f"expected every metric of shape (D, D) or (B, D, D), got {sorted(shapes)}")
    H = torch.stack([torch.as_tensor(H_by_layer[n]).detach().cpu().double() for n in names])  # (L, [B,] D, D)
    if H.ndim == 3:
        H = H.unsqueeze(1)
    H = H.transpose(0, 1)  # (B, L, D, D)
    H = 0.5 * (H + H.transpose(-1, -2))  # float32 products are symmetric only to rounding
    B, L, D = H.shape[0], H.shape[1], H.shape[-1]
    lam, U = eigen(H.reshape(B * L, D, D))
    lam, U = lam.reshape(B, L, D), U.reshape(B, L, D, D)
    # energy[b_, a, c, k] = u_ak^T H_c u_ak
    energy = torch.einsum("pajk,pcjm,pamk->pack", U, H, U)
    lam_b = lam.unsqueeze(1).expand_as(energy)
    ratio = energy / lam_b
    tiny = torch.finfo(energy.dtype).tiny  # masked entries are dropped; the clamp only keeps log10 finite
    corr_log = pearson(energy.clamp_min(tiny).log10(), lam_b.clamp_min(tiny).log10(), (energy > 0) & (lam_b > 0))
    corr_lin = pearson(energy, lam_b)
    out = {"layers": names, "eigvals": lam, "energy": energy, "ratio": ratio,
           "corr_log": corr_log, "corr_lin": corr_lin}
    if len(shape) == 2:
        return {k: (v[0] if isinstance(v, torch.Tensor) else v) for k, v in out.items()}
    out["corr_log_mean"] = torch.nanmean(corr_log, dim=0)
    out["corr_lin_mean"] = torch.nanmean(corr_lin, dim=0)
    return out


def plot_amplification(result: Mapping, path, *, title: str | None = None) -> str:
    """Save the amplification result as a PNG (corr_log heatmap and energy curves); returns the path."""
    from .plots import plot_amplification as _plot

    corr = result.get("corr_log_mean", result["corr_log"])
    energy = result["energy"]
    eigvals = result["eigvals"]
    if energy.ndim == 4:  # batched: show the mean over points
        energy, eigvals = energy.mean(0), eigvals.mean(0)
    return _plot(np.asarray(corr), np.asarray(energy), np.asarray(eigvals), list(result["layers"]), path, title=title)
