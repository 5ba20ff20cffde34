"""The HTML report of a sweep run: one self-contained file, figures embedded, PNGs beside it.

Example::

    from cluster.report import build_report
    path = build_report("./gangeo-results", "quickstart", out_dir="report")
    # report/quickstart.html plus report/<figure>.png

Groups appear in :func:`cluster.report_summary.order_groups`'s order (each trained
model before its shuffled control, layers in natural order), after a summary table
across groups when there are several. Per ``<model>/<space>/<target>`` group the
report shows the mean spectrum with a
90% band (the paper's Fig. 2), an anisotropy table (per code: the median over
codes, as ``gangeo reduce`` prints it), the homogeneity heatmaps and
histograms and the global-metric spectrum where the run was reduced, traversal
grids along the top eigenvectors of the global metric (when the generator loads
here), local dimensions where a ``local_dim`` array exists; per model and space
with several ``layer:`` targets, the layer amplification (a heatmap on a scale
centred on 1, its values written in the cells). A run with a checkpoint series
shows, after the summary, its statistics against training step
(:mod:`cluster.report_series`). Then the spec (YAML) and the timing. Only chunks
whose ``done`` entry is 1 (and whose data agree with their checksum) are used; a
chunk that is not done is never read.

The parts: :mod:`cluster.view` reads the run (read-only), one function here per
section, :mod:`cluster.report_html` renders the page (every number's cell
carries ``data-key`` so a test or a script can find it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np

from geometry_core.axes import traversal_steps
from geometry_core.errors import GeometryError
from geometry_core.spectrum import FRACTIONS

from . import report_figures as figs
from .integrity import read_rows
from .layout import spec_generators
from .report_html import DEFAULT_REPORT_DIR, Doc, esc, fmt, page, render_figures, slug, table
from .report_series import read_series, series_section
from .report_summary import natural_key, order_groups, per_code_counts, summary_section
from .run_state import timing_report
from .s3_checkpoints import local_options
from .storage import array_in
from .view import GroupView, open_run

__all__ = ["DEFAULT_REPORT_DIR", "FRACTIONS", "ReportContext", "amplification_ratio", "build_report"]

# Traversal grid: rows (top eigenvectors of the global metric) and columns (steps).
_TRAVERSE_TOPK = 5
_TRAVERSE_STEPS = 7
# Latent step of the top eigenvector at the grid's edge (geometry_core.axes.traversal_steps).
_TOP_STEP = 2.0
# Codes whose per-point metrics feed the layer amplification (D x D each, float64).
_AMPLIFICATION_CODES = 8


@dataclass
class ReportContext:
    """What the sections share: the run's stored spec (trusted as the caller said) and loaded generators."""

    spec: dict
    traversals: bool
    generators: dict = field(default_factory=dict)  # (model, space) -> Generator, or why it did not load
    weights: dict = field(default_factory=dict)  # the run's weights identity: where each series step's file was


def _title(g: GroupView) -> str:
    return f"{g.layout.model} / {g.layout.space} / {g.layout.target}"


# ---- sections ----


def _anisotropy_section(doc: Doc, g: GroupView, lam: np.ndarray, red: dict) -> None:
    import torch

    from geometry_core.spectrum import anisotropy

    mean_counts = anisotropy(torch.from_numpy(lam.mean(axis=0)), fractions=FRACTIONS)
    pts = per_code_counts(g, lam, red)
    # Per code: the median, as the summary table and `gangeo reduce` (points_median) give it.
    header = ["fraction", "count (mean spectrum)", "per code: median", "per code: 25th pct", "per code: 75th pct"]
    rows, keys = [], []
    glob = red.get("anisotropy_global")
    if glob is not None:
        header.append("count (global metric)")
    for k, f in enumerate(FRACTIONS):
        q25, q50, q75 = np.percentile(pts[:, k], [25, 50, 75])
        row = [f"{f:g}", int(mean_counts[f]), float(q50), float(q25), float(q75)]
        key = [None, f"{g.key}:anisotropy:mean_spectrum:{f:g}", f"{g.key}:anisotropy:points_median:{f:g}",
               f"{g.key}:anisotropy:points_q25:{f:g}", f"{g.key}:anisotropy:points_q75:{f:g}"]
        if glob is not None:
            row.append(int(glob[k]))
            key.append(f"{g.key}:anisotropy:global:{f:g}")
        rows.append(row)
        keys.append(key)
    doc.add(f"<h3>Anisotropy</h3><p>Eigenvalues needed to reach each fraction of the spectrum's sum "
            f"(D = {lam.shape[1]}, {lam.shape[0]} codes): for the mean spectrum, and per code summarised by "
            f"the median over codes with its quartiles.</p>")
    doc.add(table(header, rows, keys))


def _homogeneity_section(doc: Doc, g: GroupView, red: dict, title: str) -> None:
    if "homogeneity_log" not in red or "homogeneity_lin" not in red:
        return
    log, lin = red["homogeneity_log"], red["homogeneity_lin"]
    rows, keys = [], []
    for name, m in (("log", log), ("lin", lin)):
        v = m[np.isfinite(m)]
        rows.append([name, float(v.mean()) if v.size else float("nan"),
                     float(v.std()) if v.size else float("nan"), int(v.size)])
        keys.append([None, f"{g.key}:homogeneity:{name}:mean", f"{g.key}:homogeneity:{name}:std",
                     f"{g.key}:homogeneity:{name}:count"])
    doc.add("<h3>Homogeneity</h3><p>corr[i, j]: Pearson correlation of u_ikᵀ H_j u_ik with the "
            "eigenvalues of H_j, over k (off-diagonal pairs; NaN diagonal).</p>")
    doc.add(table(["scale", "mean", "std", "pairs"], rows, keys))
    doc.figure(f"{g.key}-homogeneity", "Homogeneity matrices and histograms (log and linear scale)",
               lambda: figs.homogeneity_png(log, lin, title=title))


def _global_section(doc: Doc, g: GroupView, red: dict, title: str) -> None:
    if "global_eigvals" not in red:
        return
    vals = red["global_eigvals"]
    top = min(5, vals.size)
    doc.add("<h3>Global metric</h3><p>The mean of the metric tensors over the codes, and its spectrum.</p>")
    doc.add(table(["rank", "eigenvalue"], [[k + 1, float(vals[k])] for k in range(top)],
                   [[None, f"{g.key}:global:eigval:{k + 1}"] for k in range(top)]))
    doc.figure(f"{g.key}-global-spectrum", "Spectrum of the global metric",
               lambda: figs.global_spectrum_png(vals, title=title))


def _local_dim_section(doc: Doc, g: GroupView) -> None:
    if "local_dim" not in set(g.group.array_keys()):
        return
    dims = g.values("local_dim").astype(float)
    dims = dims[dims >= 0]
    if not dims.size:
        return
    stats = [("mean", dims.mean()), ("median", float(np.median(dims))), ("min", int(dims.min())),
             ("max", int(dims.max()))]
    doc.add("<h3>Local dimension</h3>")
    doc.add(table(["statistic", "local dimension"], [[n, v] for n, v in stats],
                   [[None, f"{g.key}:local_dim:{n}"] for n, _ in stats]))


def _group_section(doc: Doc, g: GroupView, ctx: ReportContext) -> None:
    title = _title(g)
    doc.add(f'<section><h2 id="{esc(slug(g.key))}">{esc(title)}</h2>')
    n_used = int(g.used.sum())
    doc.add(f"<p>{n_used} of {g.used.size} codes done.</p>")
    if n_used == 0:
        doc.add("<p>No chunk is done yet: nothing to show.</p></section>")
        return
    lam = g.values("eigvals").astype(np.float64)
    doc.figure(f"{g.key}-spectrum", "Mean spectrum with a 90% band (5th-95th percentile), log scale",
               lambda: figs.spectrum_band_png(lam, title=title))
    red = g.reduced()
    _anisotropy_section(doc, g, lam, red)
    _homogeneity_section(doc, g, red, title)
    _global_section(doc, g, red, title)
    if ctx.traversals and "global_eigvecs" in red and "global_eigvals" in red:
        _traversal_section(doc, g, red, ctx, title)
    _local_dim_section(doc, g)
    doc.add("</section>")


# ---- traversals along the global metric's top eigenvectors ----


def _trusted_spec(raw: object, run: str, allow_import: bool) -> dict:
    """The stored spec, validated as a spec file and gated for imports, before any generator loads."""
    if raw is None:
        return {}
    from cluster.spec import SpecError, parse_spec

    from .trust import gate_stored_spec

    try:
        parse_spec(raw)  # SpecError (a GeometryError) names every problem
    except SpecError as err:
        # A series' checkpoints may have moved since the run: the report reads the store, and each
        # step's generator loads from the path its weights identity recorded (a missing one is a note).
        if any(".series" not in p for p in err.problems):
            raise
    return cast(dict, gate_stored_spec(raw, run=run, allow_import=allow_import))  # parse_spec read it as a mapping


def _generator(ctx: ReportContext, model: str, space: str):
    """The run's generator, loaded once per (model, space) from the spec's options; or a reason string."""
    key = (model, space)
    if key not in ctx.generators:
        from geometry_core.generators import load_generator

        # Groups are named by the spec entry's label (e.g. a shuffled control), which defaults to its name.
        name, options = spec_generators(ctx.spec, ctx.weights).get(model, (model, {}))
        options = dict(options)
        if space:
            options["space"] = space
        try:
            ctx.generators[key] = load_generator(name, **local_options(options))
        except (GeometryError, OSError, ImportError, TypeError, ValueError, RuntimeError) as exc:
            ctx.generators[key] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return ctx.generators[key]


def _render_traversal(G, z0: np.ndarray, vecs: np.ndarray, steps: np.ndarray) -> np.ndarray:
    import torch

    k, s = steps.shape
    z0t = torch.as_tensor(z0, dtype=G.dtype)
    v = torch.as_tensor(vecs[:, :k].T.copy(), dtype=G.dtype)  # (K, D)
    t = torch.as_tensor(steps, dtype=G.dtype)
    codes = (z0t[None, None, :] + t[:, :, None] * v[:, None, :]).reshape(k * s, -1)
    with torch.no_grad():
        x = torch.cat([G(codes[i : i + 16].to(G.device)).float().cpu() for i in range(0, k * s, 16)])
    img = ((x.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
    return img.reshape(k, s, *img.shape[1:])


def _traversal_section(doc: Doc, g: GroupView, red: dict, ctx: ReportContext, title: str) -> None:
    doc.add("<h3>Traversals</h3>")
    G = _generator(ctx, g.layout.model, g.layout.space)
    if isinstance(G, str):
        doc.add(f"<p class='note'>Traversal skipped: the generator did not load here ({esc(G)}).</p>")
        return
    vals, vecs = red["global_eigvals"], red["global_eigvecs"]
    k = int(min(_TRAVERSE_TOPK, vals.size, np.sum(vals > 0)))
    if k == 0:
        doc.add("<p class='note'>Traversal skipped: the global metric has no positive eigenvalue.</p>")
        return
    z0 = read_rows(array_in(g.group, "z"), int(np.flatnonzero(g.used)[0])).astype(np.float64)
    steps = traversal_steps(vals[:k], n_steps=_TRAVERSE_STEPS, top_step=_TOP_STEP, max_step=float(np.linalg.norm(z0)))
    doc.add(f"<p>From the first done code, along the top {k} eigenvectors of the global metric; "
            f"steps t = sqrt(2δ/λ_k) so each row changes the image by the same distance "
            f"(δ = λ_1·{_TOP_STEP:g}²/2 = {esc(fmt(0.5 * vals[0] * _TOP_STEP ** 2))}), "
            f"clipped at |t| ≤ ‖z0‖.</p>")
    doc.figure(f"{g.key}-traversal", "Rows: eigenvectors 1..k of the global metric; columns: steps t",
               lambda: figs.traversal_grid_png(_render_traversal(G, z0, vecs, steps), steps, title=title))


# ---- layer amplification (several layer: targets of one model and space) ----


def _amplification_section(doc: Doc, groups: list[GroupView]) -> None:
    """One block per model and space with two layers or more, in the report's order of groups."""
    by_model: dict[tuple[str, str], list[GroupView]] = {}
    for g in groups:
        if g.layout.target.startswith("layer:") or g.layout.target.startswith("layer-"):
            by_model.setdefault((g.layout.model, g.layout.space), []).append(g)
    for (model, space), layer_groups in by_model.items():
        if len(layer_groups) < 2:
            continue
        layer_groups.sort(key=lambda g: natural_key(g.layout.target))
        used = np.logical_and.reduce([g.used for g in layer_groups])
        rows = np.flatnonzero(used)[:_AMPLIFICATION_CODES]
        metrics = {g.layout.target: g.hessians_at(rows) for g in layer_groups}
        if rows.size == 0 or any(h is None for h in metrics.values()):
            continue
        _amplification_block(doc, model, space, metrics, rows.size)


def amplification_ratio(ratio: np.ndarray) -> np.ndarray:
    """``(B, L, L, D)`` ratios -> ``(L, L)``: median over k (positive, finite entries), then median over codes."""
    r = np.where(np.isfinite(ratio) & (ratio > 0), ratio, np.nan)
    per_code = np.nanmedian(r, axis=-1) if r.shape[-1] else np.full(r.shape[:-1], np.nan)
    return np.nanmedian(per_code, axis=0)


def _amplification_block(doc: Doc, model: str, space: str, metrics: dict, n_codes: int) -> None:
    import warnings

    import torch

    from geometry_core.layers import amplification

    result = amplification({k: torch.from_numpy(v) for k, v in metrics.items()})
    corr = np.asarray(result["corr_log_mean"])
    with warnings.catch_warnings():  # an all-NaN cell (no positive entry) stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        ratio = amplification_ratio(np.asarray(result["ratio"]))
    names = list(result["layers"])
    doc.add(f"<section><h2>Layer amplification: {esc(model)} / {esc(space)}</h2>"
            f"<p>Amplification[a, b]: u_akᵀ H_b u_ak / λ_bk, how much layer b's metric amplifies the k-th "
            f"eigenvector of layer a against b's own k-th eigenvalue; median over k, then median over "
            f"{n_codes} codes. 1 where the eigenframes agree (rows: eigenvectors of layer a; columns: metric "
            f"of layer b).</p>")
    keys = [[None] + [f"{model}/{space}:amplification_ratio:{a}:{b}" for b in names] for a in names]
    doc.add(table(["layer a \\ b", *names], [[a, *map(float, ratio[i])] for i, a in enumerate(names)], keys))
    doc.add(f"<p>corr_log[a, b]: correlation of log u_akᵀ H_b u_ak with log λ_bk over k, mean over "
            f"{n_codes} codes (1: b ranks a's eigenvectors as its own).</p>")
    keys = [[None] + [f"{model}/{space}:amplification:{a}:{b}" for b in names] for a in names]
    doc.add(table(["layer a \\ b", *names], [[a, *map(float, corr[i])] for i, a in enumerate(names)], keys))
    energy, eigvals = np.asarray(result["energy"]).mean(0), np.asarray(result["eigvals"]).mean(0)
    doc.figure(f"{model}-{space}-amplification",
               "Layer amplification: median ratio per pair of layers on a scale centred on 1, and the energy "
               "of each layer's eigenvectors under the last layer's metric",
               lambda: figs.amplification_png(ratio, names, energy, eigvals, title=f"{model} / {space}"))
    doc.add("</section>")


# ---- run-level parts and the page ----


def _run_section(doc: Doc, run: str, attrs: dict) -> None:
    import yaml

    doc.add("<section><h2>Run</h2>")
    rows = [["status", attrs.get("status", "")], ["created", attrs.get("created", "")]]
    if attrs.get("failed"):
        rows.append(["failed chunks", "; ".join(map(str, attrs["failed"]))])
    for k, v in (attrs.get("versions") or {}).items():
        rows.append([f"version: {k}", v])
    doc.add(table(["field", "value"], rows))
    timing = attrs.get("timing") or {}
    if isinstance(timing, dict) and timing:
        doc.add("<h3>Timing</h3>")
        trows = [[k, v if isinstance(v, (int, float)) else yaml.safe_dump(v, default_flow_style=True).strip()]
                 for k, v in timing.items()]
        doc.add(table(["timing", "value"], trows, [[None, f"timing:{k}"] for k, _ in trows]))
    attempts = timing_report(attrs)["attempts"]  # each run or resume of the run (cluster.run_state)
    if attempts:
        cols = ("started", "seconds", "points", "chunks_computed", "chunks_skipped", "status")
        doc.add(table(["attempt", "started", "seconds", "points", "chunks computed", "chunks skipped", "status"],
                      [[i + 1, *("" if a.get(k) is None else a.get(k) for k in cols)] for i, a in enumerate(attempts)]))
    spec = attrs.get("spec")
    doc.add("<h3>Spec</h3>")
    text = yaml.safe_dump(spec, sort_keys=False) if spec is not None else "(no spec in the run's attributes)"
    doc.add(f'<pre class="spec">{esc(text)}</pre></section>')


def build_report(
    url: str | os.PathLike | None,
    run: str,
    *,
    out_dir: str | os.PathLike | None = None,
    s3_endpoint: str | None = None,
    progress: bool = True,
    traversals: bool = True,
    allow_import: bool = False,
    skip_damaged: bool = False,
    counts: dict | None = None,
) -> Path:
    """Write ``<out_dir>/<run>.html`` (self-contained) and its figures as PNGs; return the HTML path.

    ``url``: the store (local directory or ``s3://bucket/prefix``). ``out_dir``:
    default ``gangeo-reports/<run>``. ``progress``: a tqdm bar on stderr over the
    figures (shown only on a terminal). ``traversals``: render traversal grids
    (loads the run's generator here, from the stored spec validated as a spec file;
    an import path in it needs ``allow_import=True``, see :mod:`cluster.trust`).
    Nothing is written when the run cannot be read or its spec is refused, or when
    a done chunk is damaged (:class:`~cluster.view.DamagedChunkError`) unless
    ``skip_damaged``, which leaves such chunks out. Codes whose chunk is not done are
    never shown; ``counts``, when given, receives ``codes``, ``not_done`` (codes left
    out) and ``damaged`` (chunks skipped) summed over the groups.
    """
    view = open_run(url, run, s3_endpoint=s3_endpoint)
    attrs = view.attrs
    spec = attrs.get("spec")
    groups = order_groups(view.targets(skip_damaged=skip_damaged), spec if isinstance(spec, dict) else None)
    if counts is not None:
        counts.update(codes=sum(g.layout.n for g in groups), not_done=sum(g.codes_not_done for g in groups),
                      damaged=sum(len(g.damaged) for g in groups))
    doc = Doc()
    ctx = ReportContext(_trusted_spec(spec, run, allow_import) if traversals else {}, traversals,
                        weights=dict((view.attrs.get("identity") or {}).get("weights") or {}))
    series = read_series(view.group)
    links = '<li><a href="#summary">Summary across groups</a></li>' if len(groups) > 1 else ""
    links += '<li><a href="#series">Training series</a></li>' if series else ""
    doc.add("<nav><ul>" + links + "".join(f'<li><a href="#{esc(slug(g.key))}">{esc(g.key)}</a></li>'
                                            for g in groups) + "</ul></nav>")
    summary_section(doc, groups)
    series_section(doc, series, groups)
    for g in groups:
        _group_section(doc, g, ctx)
    _amplification_section(doc, groups)
    _run_section(doc, run, attrs)
    render_figures(doc.figures, progress)
    out = Path(out_dir) if out_dir is not None else Path(DEFAULT_REPORT_DIR) / slug(run)
    out.mkdir(parents=True, exist_ok=True)
    for fig in doc.figures:
        (out / f"{fig.slug}.png").write_bytes(fig.png)
    path = out / f"{slug(run)}.html"
    path.write_text(page(run, doc), encoding="utf-8")
    return path
