"""The report's order of groups and its summary across groups (trained against shuffled, layer by layer).

Example::

    groups = order_groups(run.targets(), spec)   # dcgan-faces before dcgan-faces-shuffled1, main.2 before main.11
    summary_section(doc, groups)                 # one row per (space, target), columns per model

Order: models by the spec's order of their generator, each trained model before its
shuffled controls (``options.shuffle_seed``, labelled ``<name>-shuffled<seed>``,
:func:`cluster.layout.default_label`); then latent spaces; then targets, the image
distances first and layers in natural order (``main.2`` before ``main.11``).

Per-code anisotropy is summarised by its median over the codes that count, here as in
the group sections and in ``gangeo reduce``'s summary (``points_median``).
"""

from __future__ import annotations

import re

import numpy as np

from geometry_core.spectrum import FRACTIONS

from .integrity import read_rows
from .layout import spec_generators
from .report_html import Doc, esc, table
from .storage import array_in, group_in
from .view import GroupView, require_reduced

__all__ = ["SUMMARY_FRACTION", "group_stats", "natural_key", "order_groups", "per_code_counts", "summary_section"]

# The fraction of the spectrum the summary table counts eigenvalues for (the paper's 99%).
SUMMARY_FRACTION = 0.99
_SHUFFLED = re.compile(r"^(?P<base>.+)-shuffled(?P<seed>\d+)$")


def natural_key(text: str) -> list:
    """Digits compare as numbers: ``main.2`` < ``main.11``."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", text) if p]


def _models(spec: dict) -> dict[str, tuple[str, int | None]]:
    """Group label -> (generator name, shuffle seed or None), from the spec's generators."""
    out = {}
    for label, (name, opts) in spec_generators(spec).items():
        seed = opts.get("shuffle_seed")
        out[label] = (name, int(seed) if isinstance(seed, int) else None)
    return out


def _model_key(label: str, known: dict, bases: list[str]) -> tuple:
    base, seed = known.get(label, (None, None))
    if base is None:
        m = _SHUFFLED.match(label)
        base, seed = (m["base"], int(m["seed"])) if m else (label, None)
    rank = bases.index(base) if base in bases else len(bases)
    return (rank, natural_key(base), seed is not None, seed or 0, natural_key(label))


def _target_key(target: str) -> tuple:
    is_layer = target.startswith("layer:") or target.startswith("layer-")
    return (is_layer, natural_key(target))


def order_groups(groups: list[GroupView], spec: dict | None = None) -> list[GroupView]:
    """The report's order: model (trained, then its shuffled controls), space, target (layers natural)."""
    known = _models(spec or {})
    bases: list[str] = []
    for name, _ in known.values():
        if name not in bases:
            bases.append(name)
    return sorted(groups, key=lambda g: (_model_key(g.layout.model, known, bases), natural_key(g.layout.space),
                                         _target_key(g.layout.target)))


def per_code_counts(g: GroupView, lam: np.ndarray, red: dict) -> np.ndarray:
    """(used codes, len(FRACTIONS)) anisotropy counts per code: reduce/'s, or computed from ``lam``."""
    if "anisotropy_points" in red:
        return red["anisotropy_points"][g.used].astype(float)
    import torch

    from geometry_core.spectrum import anisotropy

    per = anisotropy(torch.from_numpy(lam), fractions=FRACTIONS)
    return np.stack([np.asarray(per[f]) for f in FRACTIONS], axis=1).astype(float)


def group_stats(g: GroupView) -> dict:
    """Median per-code anisotropy, the global metric's anisotropy and mean homogeneity (log) of one group.

    Reads the small arrays of ``reduce/`` and the homogeneity mean its record holds, not the (N, N) matrices.
    """
    k = FRACTIONS.index(SUMMARY_FRACTION)
    out = {"median": float("nan"), "global": float("nan"), "homogeneity": float("nan")}
    if not g.used.any():
        return out
    red = group_in(g.group, "reduce") if "reduce" in set(g.group.group_keys()) else None
    if red is not None:
        require_reduced(g.key, g.group)
    names = set(red.array_keys()) if red is not None else set()
    small = ({n: read_rows(array_in(red, n)) for n in ("anisotropy_points", "anisotropy_global") if n in names}
             if red is not None else {})
    lam = g.values("eigvals").astype(np.float64)  # done chunks only, never an unfinished one's bytes
    out["median"] = float(np.median(per_code_counts(g, lam, small)[:, k]))
    if "anisotropy_global" in small:
        out["global"] = int(small["anisotropy_global"][k])
    hom = dict(red.attrs).get("homogeneity") if red is not None else None
    if isinstance(hom, dict) and isinstance(hom.get("log_mean"), (int, float)):
        out["homogeneity"] = float(hom["log_mean"])
    elif red is not None and "homogeneity_log" in names:  # reduced before the record held the mean
        m = read_rows(array_in(red, "homogeneity_log"))
        out["homogeneity"] = float(m[np.isfinite(m)].mean()) if np.isfinite(m).any() else float("nan")
    return out


_COLUMNS = (("median", "median anisotropy per code"), ("global", "anisotropy of the global metric"),
            ("homogeneity", "homogeneity (log, mean)"))


def summary_section(doc: Doc, groups: list[GroupView]) -> None:
    """One table across groups: a row per (space, target), per model the group's key figures.

    Shown for runs of more than one group; cells of a (model, target) the run lacks are empty.
    """
    if len(groups) < 2:
        return
    models: list[str] = []
    rows_order: list[tuple[str, str]] = []
    cells: dict[tuple[str, str, str], GroupView] = {}
    for g in groups:  # already in the report's order
        lay = g.layout
        if lay.model not in models:
            models.append(lay.model)
        if (lay.space, lay.target) not in rows_order:
            rows_order.append((lay.space, lay.target))
        cells[(lay.model, lay.space, lay.target)] = g
    rows_order.sort(key=lambda r: (natural_key(r[0]), _target_key(r[1])))
    pct = f"{SUMMARY_FRACTION:.0%}"
    header = ["space", "target"] + [f"{m}: {label} ({pct})" if name != "homogeneity" else f"{m}: {label}"
                                    for m in models for name, label in _COLUMNS]
    rows, keys = [], []
    for space, target in rows_order:
        row = [space, target]
        key: list[str | None] = [None, None]  # a cell's data-key; None for the row's labels and absent groups
        for m in models:
            cell = cells.get((m, space, target))
            stats = group_stats(cell) if cell is not None else None
            for name, _ in _COLUMNS:
                row.append("" if stats is None else stats[name])
                key.append(None if cell is None else f"summary:{cell.key}:{name}")
        rows.append(row)
        keys.append(key)
    doc.add('<section id="summary"><h2>Summary across groups</h2>'
            f"<p>One row per target, one block of columns per model ({esc(', '.join(models))}): the median over "
            f"codes of the eigenvalues needed for {pct} of each code's spectrum, the same count for the global "
            "metric, and the mean homogeneity (log scale) over pairs of codes.</p>")
    doc.add(table(header, rows, keys))
    doc.add("</section>")
