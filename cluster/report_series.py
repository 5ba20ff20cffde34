"""The report's "Training series" section: a checkpoint series' statistics against training step.

Example::

    curves = read_series(view.group)    # [SeriesCurves], one per complete <series>/<space>/<target>
    series_section(doc, curves, groups)  # nothing for a run without a complete series group

Reads what :mod:`cluster.series_reduce` wrote under ``<run>/reduce/series/`` (nothing
is recomputed): per series and latent space, one figure of the scale-free statistics
(anisotropy at 99 %, homogeneity, alignment with the final checkpoint), a line per
target, and one of the top eigenvalues, a panel per target. A missing value (a step
whose reduce lacked the reducer: NaN, or -1 for a count) is a gap in its curve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np
import zarr

from . import report_figures as figs
from .integrity import read_rows
from .report_html import Doc, esc
from .series_reduce import SERIES_GROUP, series_steps
from .storage import StoreError, array_in, subgroup
from .view import GroupView

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["CURVE_PANELS", "SeriesCurves", "read_series", "series_section"]

# The fraction whose anisotropy is drawn (the paper's 99 %, as in the summary table).
_FRACTION = 0.99
# Scale-free statistics (a count, a correlation, cosines) share axes across targets, so an image
# distance and the layers compare at a glance; eigenvalues carry each target's own units (MSE, LPIPS,
# a layer's squared L2) and five ranks each, so they get a panel per target instead of one crowded axis.
CURVE_PANELS = (
    ("anisotropy_99", "eigenvalues for 99 % of the trace\n(global metric)"),
    ("homogeneity_log", "homogeneity (log scale, mean)"),
    ("kept", "fraction of the top-k eigenspace kept\n(mean cos² of angles to the final step)"),
    ("first_cos", "cosine of the first principal angle\nto the final step"),
)
_ARRAYS = ("step", "fraction", "top_eigvals", "anisotropy_global", "homogeneity_log_mean", "alignment_final")


@dataclass(frozen=True)
class SeriesCurves:
    """One series' statistics for one ``<space>/<target>``, a row per checkpoint; NaN where missing."""

    series: str
    space: str
    target: str  # the stored group name (``layer-main.2``)
    steps: np.ndarray  # (S,) int
    labels: tuple[str, ...]  # group label of each step
    k: int  # dimension of the eigenspaces compared
    anisotropy_99: np.ndarray  # (S,)
    homogeneity_log: np.ndarray  # (S,)
    top_eigvals: np.ndarray  # (S, rank)
    kept: np.ndarray  # (S,): mean over angles of the squared cosines to the final step
    first_cos: np.ndarray  # (S,): cosine of the first (smallest) principal angle to the final step


def read_series(run_group: zarr.Group) -> list[SeriesCurves]:
    """Every series group of the run whose state is complete, by series, space and target name."""
    out = []
    for series in series_steps(dict(run_group.attrs)):
        try:
            top = subgroup(run_group, f"{SERIES_GROUP}/{series}")
        except KeyError:
            continue
        for space in sorted(top.group_keys()):
            by_space = subgroup(top, space)
            for target in sorted(by_space.group_keys()):
                g = subgroup(by_space, target)
                if g.attrs.get("state") == "complete":
                    out.append(_curves(series, space, target, g))
    return out


def _curves(series: str, space: str, target: str, g: zarr.Group) -> SeriesCurves:
    where = f"{SERIES_GROUP}/{series}/{space}/{target}"
    missing = set(_ARRAYS) - set(g.array_keys())
    if missing:
        raise StoreError(f"{where}: complete, but arrays {sorted(missing)} are missing; run gangeo reduce again")
    a = {name: read_rows(array_in(g, name)) for name in _ARRAYS}
    steps = a["step"].astype(np.int64)
    s = steps.size
    frac = np.flatnonzero(np.isclose(a["fraction"].astype(float), _FRACTION))
    shapes_ok = (a["top_eigvals"].ndim == 2 and a["top_eigvals"].shape[0] == s and frac.size == 1
                 and a["anisotropy_global"].shape == (s, a["fraction"].size)
                 and a["homogeneity_log_mean"].shape == (s,)
                 and a["alignment_final"].ndim == 2 and a["alignment_final"].shape[0] == s)
    if not shapes_ok:
        raise StoreError(f"{where}: arrays disagree with {s} steps: "
                         + ", ".join(f"{n} {a[n].shape}" for n in _ARRAYS))
    aniso = a["anisotropy_global"][:, frac[0]].astype(float)
    cos = a["alignment_final"].astype(float)
    labels = g.attrs.get("labels")
    return SeriesCurves(
        series, space, target, steps,
        tuple(map(str, labels)) if isinstance(labels, list) and len(labels) == s else tuple(map(str, steps)),
        int(cast(int, g.attrs.get("k", cos.shape[1]))),  # series_reduce writes k as an int
        np.where(aniso >= 0, aniso, np.nan),
        a["homogeneity_log_mean"].astype(float),
        a["top_eigvals"].astype(float),
        np.mean(np.square(cos), axis=1),  # a NaN row (no eigenvectors at that step) stays NaN: a gap
        cos[:, 0] if cos.shape[1] else np.full(s, np.nan),
    )


def series_section(doc: Doc, curves: list[SeriesCurves], groups: list[GroupView]) -> None:
    """Per series and space, curves against step; targets in the report's order of ``groups``."""
    if not curves:
        return
    # "<space>/<target>" -> (position, name as the report shows it), from the first group that has it.
    shown: dict[str, tuple[int, str]] = {}
    for i, g in enumerate(groups):
        shown.setdefault(g.key.split("/", 1)[-1], (i, g.layout.target))
    blocks: dict[tuple[str, str], list[SeriesCurves]] = {}
    for c in curves:
        blocks.setdefault((c.series, c.space), []).append(c)
    doc.add('<section id="series"><h2>Training series</h2><p>Each checkpoint\'s statistics against its '
            "training step, from the series' reduce, one line per target: the global metric's eigenvalues "
            "needed for 99 % of its trace, the mean homogeneity (log scale), the fraction of the final "
            "checkpoint's top-k eigenspace that the step's top-k eigenspace keeps (mean squared cosine of the "
            "principal angles; 1 at the last step) and the cosine of the first angle; then the top "
            "eigenvalues, one panel per target. A gap: the step's reduce lacks the statistic.</p>")
    for (series, space), items in blocks.items():
        items.sort(key=lambda c: shown.get(f"{c.space}/{c.target}", (len(groups), c.target)))
        names = [shown.get(f"{c.space}/{c.target}", (0, c.target))[1] for c in items]
        steps = items[0].steps
        doc.add(f"<h3>{esc(series)} / {esc(space)}</h3><p>{steps.size} checkpoints, steps "
                f"{esc(', '.join(map(str, steps.tolist())))}; top-k eigenspaces with k = {items[0].k}.</p>")
        lines = {n: {"step": c.steps, **{q: getattr(c, q) for q, _ in CURVE_PANELS}} for n, c in zip(names, items)}
        tops = {n: {"step": c.steps, "top_eigvals": c.top_eigvals} for n, c in zip(names, items)}
        title = f"{series} / {space}"
        # The casts: mypy cannot infer a lambda whose defaults bind values against Callable[[], bytes].
        doc.figure(f"series-{series}-{space}-curves",
                   "Against training step, one line per target: anisotropy at 99 %, homogeneity (log), "
                   "alignment with the final checkpoint",
                   cast("Callable[[], bytes]",
                        lambda lines=lines, title=title: figs.series_curves_png(lines, CURVE_PANELS, title=title)),
                   data=lines)
        doc.figure(f"series-{series}-{space}-eigvals",
                   "Top eigenvalues of the global metric against training step, one panel per target (log scale)",
                   cast("Callable[[], bytes]",
                        lambda tops=tops, title=title: figs.series_eigvals_png(tops, title=title)),
                   data=tops)
    doc.add("</section>")
