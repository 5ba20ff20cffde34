"""Two reduced runs side by side: spectra, anisotropy and homogeneity per matching group.

Example::

    from cluster.compare import compare_runs
    out = compare_runs("./gangeo-results", "trained", "shuffled")            # JSON-ready dict
    out = compare_runs(url, "seed0", "seed1", group="dcgan-faces/z/mse", report_dir="cmp/")

Groups match when their keys are equal (``<model>/<space>/<target>``, ARCHITECTURE.md
"Store"); groups left over match by ``<space>/<target>`` when exactly one group of each
run has it (a trained model against its shuffled control, whose model label differs).
Per run and group:

- ``spectrum``: the median over the done codes of each eigenvalue rank (descending
  ranks, as stored), and the global metric's eigenvalues (``reduce/global_eigvals``);
- ``anisotropy``: per fraction of the spectrum's sum, the median over the done codes of
  the eigenvalue count (``reduce/anisotropy_points``, the statistic ``gangeo reduce``
  prints) and the count of the global metric (``reduce/anisotropy_global``);
- ``homogeneity``: mean, std and count of the finite off-diagonal entries of
  ``reduce/homogeneity_log`` and ``reduce/homogeneity_lin`` (the reducer's summary).

``codes`` counts the done codes each statistic uses, ``codes_not_done`` those left out
because their chunk is not done (never read). A value that is absent or not finite is None
(JSON null). Both runs must be ``complete`` (:func:`cluster.run_state.run_state`) and each compared group reduced;
otherwise :class:`~cluster.storage.StoreError` names the run and what it lacks.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from geometry_core.errors import UsageError
from geometry_core.spectrum import FRACTIONS

from .integrity import read_rows
from .run_state import run_state
from .states import RunState
from .storage import StoreError, array_in, group_in, subgroup
from .view import GroupView, reduce_state

__all__ = ["compare_runs", "match_groups"]


def _tail(key: str) -> str:
    return key.split("/", 1)[1] if "/" in key else key


def match_groups(keys_a: list[str], keys_b: list[str], group: str | None = None) -> list[tuple[str, str]]:
    """Pairs (key in A, key in B): equal keys, then unique ``<space>/<target>`` among the rest.

    ``group`` keeps the pair that names it (either key, or their common ``<space>/<target>``);
    :class:`UsageError` when nothing matches.
    """
    pairs = [(k, k) for k in keys_a if k in keys_b]
    rest_a = [k for k in keys_a if k not in keys_b]
    rest_b = [k for k in keys_b if k not in keys_a]
    for k in rest_a:
        mine = [x for x in rest_a if _tail(x) == _tail(k)]
        theirs = [x for x in rest_b if _tail(x) == _tail(k)]
        if len(mine) == 1 and len(theirs) == 1:
            pairs.append((k, theirs[0]))
    if group is not None:
        pairs = [p for p in pairs if group in p or group == _tail(p[0]) == _tail(p[1])]
        if not pairs:
            raise UsageError(f"--group {group!r} names no matching pair of groups; groups of the first run: "
                             f"{keys_a}, of the second: {keys_b}")
    if not pairs:
        raise UsageError(f"the runs have no matching groups (same <model>/<space>/<target>, or one each with the "
                         f"same <space>/<target>): {keys_a} and {keys_b}")
    return pairs


def _open_complete(rs, run: str):
    """The run's view; :class:`StoreError` unless its state is ``complete``."""
    from .view import open_run

    view = open_run(rs.root, run)  # a run being grown or deleted: refused in the readers' one line
    state = run_state(rs, run)
    if state["state"] != RunState.COMPLETE:
        why = f" ({state['detail']})" if state.get("detail") else ""
        raise StoreError(f"run {run!r} is {state['state']}{why}; compare needs complete, reduced runs")
    return view


def _finite(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _floats(a) -> list | None:
    return None if a is None else [_finite(v) for v in np.asarray(a, dtype=np.float64).ravel()]


def _scale(m: np.ndarray) -> dict:
    v = m[np.isfinite(m)]
    return {"mean": _finite(v.mean()) if v.size else None, "std": _finite(v.std()) if v.size else None,
            "pairs": int(v.size)}


def _homogeneity(red_group, names: set) -> dict | None:
    """mean, std and pair count per scale: the reducer's own summary (reduce/ attrs), as `gangeo reduce`
    printed it, so the N x N matrices are read only for runs reduced before it kept one."""
    summary = dict(red_group.attrs).get("homogeneity")
    if isinstance(summary, dict) and "log_mean" in summary:
        return {scale: {"mean": _finite(summary[f"{scale}_mean"]), "std": _finite(summary[f"{scale}_std"]),
                        "pairs": int(summary[f"{scale}_count"])} for scale in ("log", "lin")}
    if {"homogeneity_log", "homogeneity_lin"} <= names:
        return {scale: _scale(read_rows(red_group[f"homogeneity_{scale}"])) for scale in ("log", "lin")}
    return None


def _group_stats(run: str, g: GroupView, *, figures: bool) -> tuple[dict, dict]:
    """(JSON statistics, arrays for the figures when ``figures``) of one reduced group."""
    if reduce_state(g.group) != "complete":
        raise StoreError(f"run {run!r} group {g.key} is not reduced; run `gangeo reduce {run}` first")
    red = group_in(g.group, "reduce")
    names = set(red.array_keys())

    def read(name: str) -> np.ndarray | None:
        return np.asarray(array_in(red, name)[:]) if name in names else None

    lam = g.values("eigvals").astype(np.float64)  # done codes only
    pts, glob, gvals = read("anisotropy_points"), read("anisotropy_global"), read("global_eigvals")
    stats = {
        "group": g.key, "codes": int(g.used.sum()), "codes_not_done": g.codes_not_done, "dim": g.layout.dim,
        "spectrum": {"median": _floats(np.median(lam, axis=0)) if lam.size else None, "global": _floats(gvals)},
        "anisotropy": {"fractions": list(FRACTIONS),
                       "median": None if pts is None else _floats(np.median(pts[g.used], axis=0)),
                       "global": None if glob is None else [int(c) for c in glob]},
        "homogeneity": _homogeneity(red, names),
    }
    arrays = {"eigvals": lam, "global": gvals, "log": read("homogeneity_log") if figures else None,
              "lin": read("homogeneity_lin") if figures else None}
    return stats, arrays


def compare_runs(url, run_a: str, run_b: str, *, group: str | None = None, s3_endpoint: str | None = None,
                 report_dir: str | os.PathLike | None = None, progress: bool = False) -> dict:
    """``{"runs", "store", "fractions", "groups": [{"a": stats, "b": stats}, ...]}`` (module docstring).

    ``report_dir``: also write ``compare-<A>-<B>.html`` there (figures beside it as PNG)
    and return its path under ``"report"``. Nothing is written when a run is refused.
    """
    from .store import RunStore

    rs = RunStore(url, s3_endpoint=s3_endpoint, mode="r", create=False)
    views = {run: _open_complete(rs, run) for run in (run_a, run_b)}
    keys = {run: list(views[run].attrs.get("groups") or []) for run in views}
    pairs = match_groups(keys[run_a], keys[run_b], group)
    out: dict = {"runs": [run_a, run_b], "store": rs.url, "fractions": list(FRACTIONS), "groups": []}
    figures = []
    for ka, kb in pairs:
        (sa, xa), (sb, xb) = (_group_stats(run, GroupView.of(k, subgroup(views[run].group, k)),
                                           figures=report_dir is not None)
                              for run, k in ((run_a, ka), (run_b, kb)))
        out["groups"].append({"a": sa, "b": sb})
        figures.append((ka, kb, xa, xb))
    if report_dir is not None:
        from .compare_report import write_compare_report

        out["report"] = str(write_compare_report(out, figures, Path(report_dir), progress=progress))
    return out
