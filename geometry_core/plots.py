"""Figures as PNG files (matplotlib, Agg backend, imported only when a plot is made)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

__all__ = ["agg_pyplot", "plot_amplification", "plot_distance_curve"]


def agg_pyplot():
    """matplotlib.pyplot on the Agg backend: one set-up for the library and the run report."""
    # Agg: no display on cluster nodes; imported lazily so geometry_core stays light.
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> str:
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    agg_pyplot().close(fig)
    return path


def plot_amplification(
    corr: np.ndarray,
    energy: np.ndarray,
    eigvals: np.ndarray,
    layers: Sequence[str],
    path,
    *,
    title: str | None = None,
) -> str:
    """Left: corr_log[a, b] heatmap. Right: energy of layer a's eigenvectors under the last layer's metric."""
    plt = agg_pyplot()
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    im = ax0.imshow(corr, vmin=-1, vmax=1, cmap="RdBu_r")
    ax0.set_xticks(range(len(layers)), layers, rotation=90)
    ax0.set_yticks(range(len(layers)), layers)
    ax0.set_xlabel("metric of layer b")
    ax0.set_ylabel("eigenvectors of layer a")
    fig.colorbar(im, ax=ax0, label="corr(log uᵀH_b u, log λ_b)")
    last = len(layers) - 1
    ranks = np.arange(1, energy.shape[-1] + 1)
    for a, name in enumerate(layers):
        ax1.plot(ranks, np.clip(energy[a, last], 1e-30, None), label=f"eigvecs of {name}", lw=1)
    ax1.plot(ranks, np.clip(eigvals[last], 1e-30, None), "k--", label=f"eigvals of {layers[last]}", lw=1.5)
    ax1.set_yscale("log")
    ax1.set_xlabel("eigenvector rank k")
    ax1.set_ylabel(f"uᵀ H_{{{layers[last]}}} u")
    ax1.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_distance_curve(
    targets: np.ndarray,
    measured: np.ndarray,
    path,
    *,
    labels: Sequence[str] | None = None,
    title: str | None = None,
) -> str:
    """Measured distance against the calibrated target, one line per direction; (K, S) arrays."""
    plt = agg_pyplot()
    targets, measured = np.atleast_2d(targets), np.atleast_2d(measured)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for k in range(measured.shape[0]):
        lab = labels[k] if labels is not None else f"eigvec {k + 1}"
        ax.plot(targets[k], measured[k], "o-", ms=3, lw=1, label=lab)
    top = float(np.nanmax(np.concatenate([targets.ravel(), measured.ravel()])))
    ax.plot([0, top], [0, top], "k--", lw=1, label="target")
    ax.set_xlabel("target distance (½ λ t²)")
    ax.set_ylabel("measured distance")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title)
    return _save(fig, path)

