"""Figures of the run report, rendered in memory as PNG bytes (matplotlib, Agg backend).

Example::

    from cluster.report_figures import spectrum_band_png
    png = spectrum_band_png(eigvals)          # bytes of a PNG file

Each function takes plain numpy arrays and returns the PNG's bytes, so the report
can embed them as data URIs and write the same bytes beside the HTML file.
"""

from __future__ import annotations

import io

import numpy as np

from geometry_core.plots import agg_pyplot

__all__ = [
    "amplification_figure",
    "amplification_png",
    "global_spectrum_png",
    "homogeneity_png",
    "series_curves_figure",
    "series_curves_png",
    "series_eigvals_figure",
    "series_eigvals_png",
    "spectrum_band_png",
    "traversal_grid_png",
]

# Eigenvalues are clipped here before a log axis: exact zeros (null space) and
# round-off negatives have no logarithm.
_FLOOR = 1e-30


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    agg_pyplot().close(fig)
    return buf.getvalue()


def spectrum_band_png(eigvals: np.ndarray, *, title: str = "") -> bytes:
    """Mean spectrum of ``(N, D)`` eigenvalues with its 5th-95th percentile band, log scale.

    As the paper's Fig. 2: eigenvalue rank on x, eigenvalue on a log y axis.
    """
    plt = agg_pyplot()
    lam = np.clip(np.asarray(eigvals, dtype=float), _FLOOR, None)
    ranks = np.arange(1, lam.shape[1] + 1)
    lo, hi = np.percentile(lam, [5, 95], axis=0)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.fill_between(ranks, lo, hi, alpha=0.3, label="90% band (5th-95th pct)")
    ax.plot(ranks, lam.mean(axis=0), lw=1.5, label=f"mean of {lam.shape[0]} codes")
    ax.set_yscale("log")
    ax.set_xlabel("eigenvalue rank")
    ax.set_ylabel("eigenvalue")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    return _png(fig)


def global_spectrum_png(eigvals: np.ndarray, *, title: str = "") -> bytes:
    """Spectrum of the global (mean) metric on a log scale."""
    plt = agg_pyplot()
    lam = np.clip(np.asarray(eigvals, dtype=float), _FLOOR, None)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(np.arange(1, lam.size + 1), lam, lw=1.5, color="C3")
    ax.set_yscale("log")
    ax.set_xlabel("eigenvalue rank")
    ax.set_ylabel("eigenvalue of the global metric")
    ax.set_title(title, fontsize=9)
    return _png(fig)


def homogeneity_png(corr_log: np.ndarray, corr_lin: np.ndarray, *, title: str = "") -> bytes:
    """Heatmaps (top) and histograms of off-diagonal entries (bottom) of both homogeneity matrices."""
    plt = agg_pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(9, 7.5), layout="constrained")
    for col, (name, m) in enumerate((("log", corr_log), ("linear", corr_lin))):
        m = np.asarray(m, dtype=float)
        im = axes[0, col].imshow(m, vmin=-1, vmax=1, cmap="RdBu_r", interpolation="nearest")
        axes[0, col].set_title(f"corr ({name} scale)", fontsize=9)
        axes[0, col].set_xlabel("point j (metric H_j)")
        axes[0, col].set_ylabel("point i (eigenvectors of H_i)")
        fig.colorbar(im, ax=axes[0, col], fraction=0.046)
        vals = m[np.isfinite(m)]
        axes[1, col].hist(vals, bins=40, range=(-1, 1), color="C0")
        axes[1, col].set_xlabel(f"corr ({name} scale), off-diagonal")
        axes[1, col].set_ylabel("pairs")
        if vals.size:
            axes[1, col].axvline(vals.mean(), color="k", ls="--", lw=1)
    fig.suptitle(title, fontsize=10)
    return _png(fig)


def traversal_grid_png(images: np.ndarray, steps: np.ndarray, *, title: str = "") -> bytes:
    """Image grid ``(K, S, H, W, 3)`` in [0, 1]: rows are eigenvectors, columns steps ``t`` (K, S).

    One mosaic in one axes (dozens of small axes are slow to draw); rows name their
    edge step, columns the fraction of it.
    """
    plt = agg_pyplot()
    k, s, h, w = images.shape[:4]
    pad = 2
    mosaic = np.ones((k * (h + pad) - pad, s * (w + pad) - pad, 3))
    for r in range(k):
        for c in range(s):
            mosaic[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = images[r, c]
    fig, ax = plt.subplots(figsize=(0.9 * s + 1.2, 0.9 * k + 0.6))
    ax.imshow(np.clip(mosaic, 0.0, 1.0), interpolation="nearest")
    ax.set_yticks([r * (h + pad) + h / 2 for r in range(k)],
                  [f"eig {r + 1}\n|t|<={abs(steps[r]).max():.3g}" for r in range(k)], fontsize=7)
    ax.set_xticks([c * (w + pad) + w / 2 for c in range(s)],
                  [f"{f:+.2g}" for f in steps[0] / abs(steps[0]).max()], fontsize=7)
    ax.set_xlabel("step t as a fraction of the row's edge step", fontsize=8)
    ax.set_title(title, fontsize=9)
    return _png(fig)


def _centred_on_one(values: np.ndarray):
    """A diverging log scale whose middle colour is 1: vmin = 1/vmax, so r and 1/r are equally strong."""
    from matplotlib.colors import LogNorm

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    # At least a factor 1.1 either way, so an all-ones matrix still has a scale.
    top = max(1.1, float(v.max()) if v.size else 1.1, 1.0 / float(v.min()) if v.size else 1.1)
    return LogNorm(vmin=1.0 / top, vmax=top)


def amplification_figure(ratio: np.ndarray, layers: list[str], energy: np.ndarray | None = None,
                         eigvals: np.ndarray | None = None, *, title: str = ""):
    """Left: the amplification ratio ``[a, b]`` as a heatmap centred on 1, each cell's value written in it.

    ``ratio[a, b]``: how much layer b's metric amplifies the eigenvectors of layer a,
    against b's own eigenvalues (:func:`geometry_core.layers.amplification`, ``ratio``,
    summarised per cell by the caller); 1 where the eigenframes agree. Right, when
    ``energy`` (L, L, D) and ``eigvals`` (L, D) are given: ``u_akᵀ H_b u_ak`` for the
    last layer b against its eigenvalues (the paper's Fig. 4B). Returns the figure.
    """
    plt = agg_pyplot()
    ratio = np.asarray(ratio, dtype=float)
    curves = energy is not None and eigvals is not None
    fig, axes = plt.subplots(1, 2 if curves else 1, figsize=(12 if curves else 6.5, 5), layout="constrained",
                             squeeze=False)
    ax = axes[0, 0]
    norm = _centred_on_one(ratio)
    shown = np.where(np.isfinite(ratio) & (ratio > 0), ratio, np.nan)
    im = ax.imshow(shown, norm=norm, cmap="RdBu_r", interpolation="nearest")
    big = len(layers) > 12
    for a in range(ratio.shape[0]):
        for b in range(ratio.shape[1]):
            v = ratio[a, b]
            strong = np.isfinite(shown[a, b]) and abs(float(norm(shown[a, b])) - 0.5) > 0.3
            ax.text(b, a, f"{v:.3g}" if np.isfinite(v) else "nan", ha="center", va="center",
                    fontsize=6 if big else 8, color="white" if strong else "black")
    ax.set_xticks(range(len(layers)), layers, rotation=90, fontsize=7)
    ax.set_yticks(range(len(layers)), layers, fontsize=7)
    ax.set_xlabel("metric of layer b")
    ax.set_ylabel("eigenvectors of layer a")
    bar = fig.colorbar(im, ax=ax, label="amplification uᵀH_b u / λ_b (1: same eigenframe)")
    from matplotlib.ticker import FuncFormatter, NullFormatter

    bar.set_ticks(np.geomspace(norm.vmin, norm.vmax, 5))  # 1/r .. 1 .. r, evenly on the log scale
    bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:.3g}"))  # 0.5, 1, 2: not 10^0 notation
    bar.ax.yaxis.set_minor_formatter(NullFormatter())
    if curves:
        ax1, last = axes[0, 1], len(layers) - 1
        ranks = np.arange(1, np.asarray(eigvals).shape[-1] + 1)
        for a, name in enumerate(layers):
            ax1.plot(ranks, np.clip(np.asarray(energy)[a, last], _FLOOR, None), label=f"eigvecs of {name}", lw=1)
        ax1.plot(ranks, np.clip(np.asarray(eigvals)[last], _FLOOR, None), "k--", lw=1.5,
                 label=f"eigvals of {layers[last]}")
        ax1.set_yscale("log")
        ax1.set_xlabel("eigenvector rank k")
        ax1.set_ylabel(f"uᵀ H_b u, b = {layers[last]}")
        ax1.legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    return fig


def amplification_png(ratio: np.ndarray, layers: list[str], energy: np.ndarray | None = None,
                      eigvals: np.ndarray | None = None, *, title: str = "") -> bytes:
    """:func:`amplification_figure` as PNG bytes."""
    return _png(amplification_figure(ratio, layers, energy, eigvals, title=title))


def _line_style(i: int, n: int) -> dict:
    """Colour and dash of line ``i`` of ``n``: ten colours, then twenty, then dashes over again."""
    plt = agg_pyplot()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return {"color": cmap(i % cmap.N), "ls": ("-", "--", ":", "-.")[(i // cmap.N) % 4]}


def _step_axis(ax, label: bool = True) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if label:
        ax.set_xlabel("training step")
    ax.grid(alpha=0.3)


def series_curves_figure(curves: dict[str, dict[str, np.ndarray]], panels: tuple[tuple[str, str], ...], *,
                         title: str = ""):
    """One panel per ``(quantity, y label)`` of ``panels``, one line per target against its ``step``.

    ``curves[target]``: ``{"step": (S,), quantity: (S,) ...}``. NaN is drawn as a gap
    (never as 0); markers, so a step between two gaps still shows. Returns the figure.
    """
    plt = agg_pyplot()
    cols = 2 if len(panels) > 1 else 1
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.3 * rows + 0.8), layout="constrained",
                             squeeze=False, sharex=True)
    for j, (ax, (name, ylabel)) in enumerate(zip(axes.flat, panels)):
        for i, (target, c) in enumerate(curves.items()):
            ax.plot(np.asarray(c["step"], dtype=float), np.asarray(c[name], dtype=float), marker="o", ms=3,
                    lw=1.2, label=target, **_line_style(i, len(curves)))
        ax.set_ylabel(ylabel, fontsize=8)
        _step_axis(ax, label=j + cols >= len(panels))  # the shared x axis named under the lowest panels
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, max(1, len(labels))), fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


def series_curves_png(curves: dict[str, dict[str, np.ndarray]], panels: tuple[tuple[str, str], ...], *,
                      title: str = "") -> bytes:
    """:func:`series_curves_figure` as PNG bytes."""
    return _png(series_curves_figure(curves, panels, title=title))


def series_eigvals_figure(curves: dict[str, dict[str, np.ndarray]], *, title: str = ""):
    """One panel per target: its ``top_eigvals`` ``(S, R)`` against ``step``, a line per rank, log y axis.

    A log axis has no zero: non-positive and NaN eigenvalues are gaps. Returns the figure.
    """
    plt = agg_pyplot()
    cols = min(3, max(1, len(curves)))
    rows = max(1, -(-len(curves) // cols))
    # x not shared: a panel above an empty slot of the last row keeps its step labels.
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows + 0.6), layout="constrained", squeeze=False)
    for ax, (target, c) in zip(axes.flat, curves.items()):
        top = np.asarray(c["top_eigvals"], dtype=float)
        top = np.where(top > 0, top, np.nan)
        for r in range(top.shape[1]):
            ax.plot(np.asarray(c["step"], dtype=float), top[:, r], marker="o", ms=3, lw=1.2, label=f"λ{r + 1}",
                    color=f"C{r}")
        ax.set_yscale("log")
        ax.set_title(target, fontsize=8)
        ax.set_ylabel("eigenvalue of the global metric", fontsize=8)
        _step_axis(ax)
    for ax in axes.flat[len(curves):]:
        ax.set_visible(False)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


def series_eigvals_png(curves: dict[str, dict[str, np.ndarray]], *, title: str = "") -> bytes:
    """:func:`series_eigvals_figure` as PNG bytes."""
    return _png(series_eigvals_figure(curves, title=title))
