"""The HTML page of `gangeo compare`: per matching group, a table of both runs' numbers and
their figures side by side (the run report's figure helpers, :mod:`cluster.report_figures`).

Example::

    from cluster.compare import compare_runs
    compare_runs(url, "trained", "shuffled", report_dir="cmp")   # cmp/compare-trained-shuffled.html

Every number's cell carries ``data-key`` = ``<group of A>:<statistic>:<a|b>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from geometry_core.plots import agg_pyplot

from . import report_figures as figs
from .report_html import Doc, esc, page, render_figures, slug, table

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["write_compare_report"]

_FLOOR = 1e-30  # eigenvalues clipped before a log axis (exact zeros have no logarithm)
_SIDE = '<div style="display:flex;gap:1em;flex-wrap:wrap">'


def _overlay_png(runs: list[str], spectra: list[tuple[np.ndarray | None, np.ndarray | None]], title: str) -> bytes:
    """Median spectra (solid) and global-metric spectra (dashed) of both runs on one log axis."""
    import io

    plt = agg_pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (run, (median, glob)) in enumerate(zip(runs, spectra)):
        if median is not None:
            m = np.clip(np.asarray(median, dtype=float), _FLOOR, None)
            ax.plot(np.arange(1, m.size + 1), m, color=f"C{i}", lw=1.5, label=f"{run}: median over codes")
        if glob is not None:
            g = np.clip(np.asarray(glob, dtype=float), _FLOOR, None)
            ax.plot(np.arange(1, g.size + 1), g, color=f"C{i}", lw=1, ls="--", label=f"{run}: global metric")
    ax.set_yscale("log")
    ax.set_xlabel("eigenvalue rank")
    ax.set_ylabel("eigenvalue")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _rows(sa: dict, sb: dict, fractions: list[float]) -> list[tuple[str, object, object]]:
    """(statistic, value of A, value of B) shown in the table."""
    def top(s):
        g = s["spectrum"]["global"]
        return g[0] if g else None

    rows = [("codes", sa["codes"], sb["codes"]), ("dim", sa["dim"], sb["dim"]),
            ("global_top_eigval", top(sa), top(sb))]
    for k, f in enumerate(fractions):
        for which in ("median", "global"):
            va, vb = (s["anisotropy"][which][k] if s["anisotropy"][which] else None for s in (sa, sb))
            rows.append((f"anisotropy_{which}:{f:g}", va, vb))
    for scale in ("log", "lin"):
        for stat in ("mean", "std"):
            va, vb = (s["homogeneity"][scale][stat] if s["homogeneity"] else None for s in (sa, sb))
            rows.append((f"homogeneity_{scale}:{stat}", va, vb))
    return rows


def _pair_section(doc: Doc, runs: list[str], entry: dict, arrays: tuple, fractions: list[float]) -> None:
    ka, kb, xa, xb = arrays
    sa, sb = entry["a"], entry["b"]
    name = ka if ka == kb else f"{ka} vs {kb}"
    doc.add(f'<section><h2 id="{esc(slug(ka))}">{esc(name)}</h2>')
    rows = _rows(sa, sb, fractions)
    cells = [[stat, "n/a" if va is None else va, "n/a" if vb is None else vb] for stat, va, vb in rows]
    keys = [[None, f"{ka}:{stat}:a", f"{ka}:{stat}:b"] for stat, _, _ in rows]
    doc.add("<p>Anisotropy: eigenvalues needed to reach each fraction of the spectrum's sum (median over "
            "codes; the global metric's count). Homogeneity: off-diagonal correlations.</p>")
    doc.add(table(["statistic", f"A: {runs[0]}", f"B: {runs[1]}"], cells, keys))
    doc.figure(f"compare-{ka}-spectra", f"Spectra of {runs[0]} and {runs[1]}",
               lambda: _overlay_png(runs, [(np.median(xa["eigvals"], axis=0) if xa["eigvals"].size else None,
                                            xa["global"]),
                                           (np.median(xb["eigvals"], axis=0) if xb["eigvals"].size else None,
                                            xb["global"])], name))
    for what, render in (("spectrum", lambda x, t: figs.spectrum_band_png(x["eigvals"], title=t)),
                         ("homogeneity", lambda x, t: figs.homogeneity_png(x["log"], x["lin"], title=t))):
        if what == "homogeneity" and (xa["log"] is None or xb["log"] is None):
            continue
        doc.add(_SIDE)
        for run, key, x in ((runs[0], ka, xa), (runs[1], kb, xb)):
            # cast: mypy cannot infer a lambda whose defaults bind values against Callable[[], bytes]
            doc.figure(f"compare-{run}-{key}-{what}", f"{run}: {key} ({what})",
                       cast("Callable[[], bytes]",
                            lambda x=x, t=f"{run}: {key}", render=render: render(x, t)))  # bound now, not at draw time
        doc.add("</div>")
    doc.add("</section>")


def write_compare_report(result: dict, arrays: list[tuple], out_dir: Path, *, progress: bool = False) -> Path:
    """Write ``<out_dir>/compare-<A>-<B>.html`` and its PNGs; return the HTML path."""
    runs = result["runs"]
    doc = Doc()
    doc.add(f"<p>Run A: <b>{esc(runs[0])}</b>, run B: <b>{esc(runs[1])}</b>, store {esc(result['store'])}.</p>")
    for entry, arr in zip(result["groups"], arrays):
        _pair_section(doc, runs, entry, arr, result["fractions"])
    render_figures(doc.figures, progress, "compare")
    out_dir.mkdir(parents=True, exist_ok=True)
    for fig in doc.figures:
        (out_dir / f"{fig.slug}.png").write_bytes(fig.png)
    path = out_dir / f"compare-{slug(runs[0])}-{slug(runs[1])}.html"
    path.write_text(page(f"{runs[0]} vs {runs[1]}", doc), encoding="utf-8")
    return path
