"""The HTML report of a sweep run: one self-contained file, figures embedded, PNGs beside it.

Example::

    from cluster.report import build_report
    path = build_report("./gangeo-results", "quickstart", out_dir="report")
    # report/quickstart.html plus report/<figure>.png

Per ``<model>/<space>/<target>`` group the report shows the mean spectrum with a
90% band (the paper's Fig. 2), an anisotropy table, the homogeneity heatmaps and
histograms and the global-metric spectrum where the run was reduced, traversal
grids along the top eigenvectors of the global metric (when the generator loads
here), local dimensions where a ``local_dim`` array exists; per model and space
with several ``layer:`` targets, the layer amplification. Then the spec (YAML)
and the timing. Only chunks whose ``done`` entry is 1 are used.

Every table cell that holds a run's number carries ``data-key`` so a test (or a
script) can find it; an inline script writes the count of loaded images into
``<pre id="selfcheck">`` when the page has loaded.
"""

from __future__ import annotations

import base64
import html
import os
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from geometry_core.errors import GeometryError
from geometry_core.spectrum import FRACTIONS

from . import report_figures as figs

__all__ = ["DEFAULT_REPORT_DIR", "FRACTIONS", "build_report", "traversal_steps"]

DEFAULT_REPORT_DIR = "gangeo-reports"
# Traversal grid: rows (top eigenvectors of the global metric) and columns (steps).
_TRAVERSE_TOPK = 5
_TRAVERSE_STEPS = 7
# Latent step of the top eigenvector at the grid's edge; the others are calibrated to
# the same distance: t_k = sqrt(2 delta / lambda_k) with delta = lambda_1 t_1^2 / 2.
_TOP_STEP = 2.0
# Codes whose per-point metrics feed the layer amplification (D x D each, float64).
_AMPLIFICATION_CODES = 8


@dataclass
class _Figure:
    slug: str
    caption: str
    render: Callable[[], bytes]
    png: bytes = b""


@dataclass
class _Doc:
    """The report being assembled: HTML pieces in order, figures rendered later."""

    parts: list = field(default_factory=list)
    figures: list = field(default_factory=list)

    def add(self, text: str) -> None:
        self.parts.append(text)

    def figure(self, slug: str, caption: str, render: Callable[[], bytes]) -> None:
        fig = _Figure(_slug(slug), caption, render)
        self.figures.append(fig)
        self.parts.append(fig)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "figure"


def _esc(x) -> str:
    return html.escape(str(x), quote=True)


def _fmt(x) -> str:
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    x = float(x)
    return "nan" if not np.isfinite(x) else f"{x:.4g}"


def _table(header: list[str], rows: list[list], keys: list[list[str | None]] | None = None) -> str:
    """An HTML table; cell (r, c) gets ``data-key=keys[r][c]`` when given."""
    out = ["<table><thead><tr>", *(f"<th>{_esc(h)}</th>" for h in header), "</tr></thead><tbody>"]
    for r, row in enumerate(rows):
        out.append("<tr>")
        for c, cell in enumerate(row):
            key = keys[r][c] if keys else None
            attr = f' data-key="{_esc(key)}"' if key else ""
            text = _fmt(cell) if isinstance(cell, (int, float, np.integer, np.floating)) else str(cell)
            out.append(f"<td{attr}>{_esc(text)}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


# ---- reading the store ----


@dataclass
class _Group:
    key: str  # path of the group inside the run
    model: str
    space: str
    target: str
    group: object  # zarr.Group
    used: np.ndarray  # (N,) bool: the code's chunk is done


def _label(g, path: str) -> tuple[str, str, str]:
    parts = path.split("/")
    attrs = dict(g.attrs)
    model = str(attrs.get("generator") or attrs.get("model") or parts[0])
    space = str(attrs.get("space") or (parts[1] if len(parts) > 1 else ""))
    target = str(attrs.get("target") or parts[-1])
    return model, space, target


def _groups(run_group) -> list[_Group]:
    from .reduce import find_target_groups

    out = []
    for path in find_target_groups(run_group):
        g = run_group[path]
        names = set(g.array_keys())
        if not {"z", "eigvals"} <= names:
            raise GeometryError(f"group {path!r}: expected arrays z and eigvals, found {sorted(names)}")
        chunk = g["z"].chunks[0]
        done = np.asarray(g["done"][:]) == 1
        used = np.repeat(done, chunk)[: g["z"].shape[0]]
        out.append(_Group(path, *_label(g, path), g, used))
    return out


def _reduce_arrays(g: _Group) -> dict[str, np.ndarray]:
    if "reduce" not in set(g.group.group_keys()):
        return {}
    red = g.group["reduce"]
    return {name: np.asarray(red[name][:]) for name in red.array_keys()}


def _hessians(g: _Group, rows: np.ndarray) -> np.ndarray | None:
    names = set(g.group.array_keys())
    if "hessian" in names:
        return np.stack([np.asarray(g.group["hessian"][int(i)]) for i in rows]).astype(np.float64)
    if "eigvecs" in names:
        vecs = np.stack([np.asarray(g.group["eigvecs"][int(i)]) for i in rows]).astype(np.float64)
        vals = np.asarray(g.group["eigvals"][:])[rows].astype(np.float64)
        return np.einsum("bik,bk,bjk->bij", vecs, vals, vecs)
    return None


# ---- sections ----


def _anisotropy_section(doc: _Doc, g: _Group, lam: np.ndarray, red: dict) -> None:
    import torch

    from geometry_core.spectrum import anisotropy

    mean_counts = anisotropy(torch.from_numpy(lam.mean(axis=0)), fractions=FRACTIONS)
    if "anisotropy_points" in red:
        pts = red["anisotropy_points"][g.used].astype(float)
    else:
        per = anisotropy(torch.from_numpy(lam), fractions=FRACTIONS)
        pts = np.stack([np.asarray(per[f]) for f in FRACTIONS], axis=1).astype(float)
    header = ["fraction", "count (mean spectrum)", "per point mean", "per point std"]
    rows, keys = [], []
    glob = red.get("anisotropy_global")
    if glob is not None:
        header.append("count (global metric)")
    for k, f in enumerate(FRACTIONS):
        row = [f"{f:g}", int(mean_counts[f]), float(pts[:, k].mean()), float(pts[:, k].std())]
        key = [None, f"{g.key}:anisotropy:mean_spectrum:{f:g}", f"{g.key}:anisotropy:points_mean:{f:g}",
               f"{g.key}:anisotropy:points_std:{f:g}"]
        if glob is not None:
            row.append(int(glob[k]))
            key.append(f"{g.key}:anisotropy:global:{f:g}")
        rows.append(row)
        keys.append(key)
    doc.add(f"<h3>Anisotropy</h3><p>Eigenvalues needed to reach each fraction of the spectrum's sum "
            f"(D = {lam.shape[1]}, {lam.shape[0]} codes).</p>")
    doc.add(_table(header, rows, keys))


def _homogeneity_section(doc: _Doc, g: _Group, red: dict, title: str) -> None:
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
    doc.add(_table(["scale", "mean", "std", "pairs"], rows, keys))
    doc.figure(f"{g.key}-homogeneity", "Homogeneity matrices and histograms (log and linear scale)",
               lambda: figs.homogeneity_png(log, lin, title=title))


def _global_section(doc: _Doc, g: _Group, red: dict, title: str) -> None:
    if "global_eigvals" not in red:
        return
    vals = red["global_eigvals"]
    top = min(5, vals.size)
    doc.add("<h3>Global metric</h3><p>The mean of the metric tensors over the codes, and its spectrum.</p>")
    doc.add(_table(["rank", "eigenvalue"], [[k + 1, float(vals[k])] for k in range(top)],
                   [[None, f"{g.key}:global:eigval:{k + 1}"] for k in range(top)]))
    doc.figure(f"{g.key}-global-spectrum", "Spectrum of the global metric",
               lambda: figs.global_spectrum_png(vals, title=title))


def _local_dim_section(doc: _Doc, g: _Group) -> None:
    if "local_dim" not in set(g.group.array_keys()):
        return
    dims = np.asarray(g.group["local_dim"][:])[g.used].astype(float)
    dims = dims[dims >= 0]
    if not dims.size:
        return
    stats = [("mean", dims.mean()), ("median", float(np.median(dims))), ("min", int(dims.min())),
             ("max", int(dims.max()))]
    doc.add("<h3>Local dimension</h3>")
    doc.add(_table(["statistic", "local dimension"], [[n, v] for n, v in stats],
                   [[None, f"{g.key}:local_dim:{n}"] for n, _ in stats]))


def _group_section(doc: _Doc, g: _Group, ctx: dict) -> None:
    title = f"{g.model} / {g.space} / {g.target}"
    doc.add(f'<section><h2 id="{_esc(_slug(g.key))}">{_esc(title)}</h2>')
    n_used = int(g.used.sum())
    doc.add(f"<p>{n_used} of {g.used.size} codes done.</p>")
    if n_used == 0:
        doc.add("<p>No chunk is done yet: nothing to show.</p></section>")
        return
    lam = np.asarray(g.group["eigvals"][:])[g.used].astype(np.float64)
    doc.figure(f"{g.key}-spectrum", "Mean spectrum with a 90% band (5th-95th percentile), log scale",
               lambda: figs.spectrum_band_png(lam, title=title))
    red = _reduce_arrays(g)
    _anisotropy_section(doc, g, lam, red)
    _homogeneity_section(doc, g, red, title)
    _global_section(doc, g, red, title)
    if ctx["traversals"] and "global_eigvecs" in red and "global_eigvals" in red:
        _traversal_section(doc, g, red, ctx, title)
    _local_dim_section(doc, g)
    doc.add("</section>")


# ---- traversals along the global metric's top eigenvectors ----


def traversal_steps(
    eigvals: np.ndarray, *, n_steps: int = _TRAVERSE_STEPS, top_step: float = _TOP_STEP, max_step: float | None = None
) -> np.ndarray:
    """Calibrated steps ``(K, n_steps)`` along eigenvectors with eigenvalues ``eigvals`` (K,).

    The distance along eigenvector k grows as ``lambda_k t^2 / 2`` (the Hessian of the
    distance), so ``t_k = sqrt(2 delta / lambda_k)`` changes every row's image by the
    same ``delta``; ``delta = lambda_1 top_step^2 / 2`` puts the top row's edge at
    ``top_step``. Columns are symmetric fractions of the edge step (-1 .. 1).
    ``max_step`` clips rows whose eigenvalue is tiny (their distance is then smaller).
    """
    lam = np.asarray(eigvals, dtype=np.float64)
    if lam.ndim != 1 or lam.size == 0 or not (lam[0] > 0):
        raise GeometryError(f"traversal needs eigenvalues (K,) with a positive first one, got {lam[:3]}")
    if n_steps < 2:
        raise GeometryError(f"traversal needs n_steps >= 2, got {n_steps}")
    delta = 0.5 * lam[0] * top_step**2
    edge = np.sqrt(2.0 * delta / np.clip(lam, lam[0] * 1e-12, None))
    if max_step is not None:
        edge = np.minimum(edge, max_step)
    return edge[:, None] * np.linspace(-1.0, 1.0, n_steps)[None, :]


def _trusted_spec(raw: object, run: str, allow_import: bool) -> dict:
    """The stored spec, validated as a spec file and gated for imports, before any generator loads."""
    if raw is None:
        return {}
    from cluster.spec import parse_spec

    from .trust import gate_stored_spec

    parse_spec(raw)  # SpecError (a GeometryError) names every problem
    return gate_stored_spec(raw, run=run, allow_import=allow_import)


def _generator(ctx: dict, model: str, space: str):
    """The run's generator, loaded once per (model, space) from the spec's options; or a reason string."""
    key = (model, space)
    if key not in ctx["generators"]:
        from cluster.store import default_label
        from geometry_core.generators import load_generator

        spec = ctx["spec"] if isinstance(ctx["spec"], dict) else {}
        # Groups are named by the spec entry's label (e.g. a shuffled control), which defaults to its name.
        entries = [e for e in spec.get("generators") or [] if isinstance(e, dict) and isinstance(e.get("name"), str)
                   and (e.get("label") or default_label(e["name"], e.get("options") or {})) == model]
        options = dict(entries[0].get("options") or {}) if entries else {}
        name = entries[0].get("name", model) if entries else model
        if space:
            options["space"] = space
        try:
            ctx["generators"][key] = load_generator(name, **options)
        except (GeometryError, OSError, ImportError, TypeError, ValueError, RuntimeError) as exc:
            ctx["generators"][key] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return ctx["generators"][key]


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


def _traversal_section(doc: _Doc, g: _Group, red: dict, ctx: dict, title: str) -> None:
    doc.add("<h3>Traversals</h3>")
    G = _generator(ctx, g.model, g.space)
    if isinstance(G, str):
        doc.add(f"<p class='note'>Traversal skipped: the generator did not load here ({_esc(G)}).</p>")
        return
    vals, vecs = red["global_eigvals"], red["global_eigvecs"]
    k = int(min(_TRAVERSE_TOPK, vals.size, np.sum(vals > 0)))
    if k == 0:
        doc.add("<p class='note'>Traversal skipped: the global metric has no positive eigenvalue.</p>")
        return
    z0 = np.asarray(g.group["z"][int(np.flatnonzero(g.used)[0])], dtype=np.float64)
    steps = traversal_steps(vals[:k], max_step=float(np.linalg.norm(z0)))
    doc.add(f"<p>From the first done code, along the top {k} eigenvectors of the global metric; "
            f"steps t = sqrt(2δ/λ_k) so each row changes the image by the same distance "
            f"(δ = λ_1·{_TOP_STEP:g}²/2 = {_esc(_fmt(0.5 * vals[0] * _TOP_STEP ** 2))}), "
            f"clipped at |t| ≤ ‖z0‖.</p>")
    doc.figure(f"{g.key}-traversal", "Rows: eigenvectors 1..k of the global metric; columns: steps t",
               lambda: figs.traversal_grid_png(_render_traversal(G, z0, vecs, steps), steps, title=title))


# ---- layer amplification (several layer: targets of one model and space) ----


def _natural_key(text: str):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]


def _amplification_section(doc: _Doc, groups: list[_Group]) -> None:
    by_model: dict[tuple[str, str], list[_Group]] = {}
    for g in groups:
        if g.target.startswith("layer:") or g.target.startswith("layer-"):
            by_model.setdefault((g.model, g.space), []).append(g)
    for (model, space), layer_groups in sorted(by_model.items()):
        if len(layer_groups) < 2:
            continue
        layer_groups.sort(key=lambda g: _natural_key(g.target))
        used = np.logical_and.reduce([g.used for g in layer_groups])
        rows = np.flatnonzero(used)[:_AMPLIFICATION_CODES]
        metrics = {g.target: _hessians(g, rows) for g in layer_groups}
        if rows.size == 0 or any(h is None for h in metrics.values()):
            continue
        _amplification_block(doc, model, space, metrics, rows.size)


def _amplification_block(doc: _Doc, model: str, space: str, metrics: dict, n_codes: int) -> None:
    import tempfile

    import torch

    from geometry_core.layers import amplification, plot_amplification

    result = amplification({k: torch.from_numpy(v) for k, v in metrics.items()})
    corr = np.asarray(result["corr_log_mean"])
    names = list(result["layers"])
    doc.add(f"<section><h2>Layer amplification: {_esc(model)} / {_esc(space)}</h2>"
            f"<p>corr_log[a, b]: correlation of log u_akᵀ H_b u_ak with log λ_bk over k, mean over "
            f"{n_codes} codes (rows: eigenvectors of layer a; columns: metric of layer b).</p>")
    keys = [[None] + [f"{model}/{space}:amplification:{a}:{b}" for b in names] for a in names]
    doc.add(_table(["layer a \\ b", *names], [[a, *map(float, corr[i])] for i, a in enumerate(names)], keys))

    def render() -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            path = plot_amplification(result, os.path.join(tmp, "amp.png"), title=f"{model} / {space}")
            return Path(path).read_bytes()

    doc.figure(f"{model}-{space}-amplification", "Layer amplification (corr_log heatmap and energy curves)", render)
    doc.add("</section>")


# ---- run-level parts and the page ----


def _run_section(doc: _Doc, run: str, attrs: dict) -> None:
    import yaml

    doc.add("<section><h2>Run</h2>")
    rows = [["status", attrs.get("status", "")], ["created", attrs.get("created", "")]]
    if attrs.get("failed"):
        rows.append(["failed chunks", "; ".join(map(str, attrs["failed"]))])
    for k, v in (attrs.get("versions") or {}).items():
        rows.append([f"version: {k}", v])
    doc.add(_table(["field", "value"], rows))
    timing = attrs.get("timing") or {}
    if isinstance(timing, dict) and timing:
        doc.add("<h3>Timing</h3>")
        trows = [[k, v if isinstance(v, (int, float)) else yaml.safe_dump(v, default_flow_style=True).strip()]
                 for k, v in timing.items()]
        doc.add(_table(["timing", "value"], trows, [[None, f"timing:{k}"] for k, _ in trows]))
    spec = attrs.get("spec")
    doc.add("<h3>Spec</h3>")
    text = yaml.safe_dump(spec, sort_keys=False) if spec is not None else "(no spec in the run's attributes)"
    doc.add(f'<pre class="spec">{_esc(text)}</pre></section>')


_STYLE = """body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #bbb;padding:2px 8px;text-align:right;font-size:13px}th{background:#eee}
figure{margin:1em 0}figure img{max-width:100%}pre{background:#f6f6f6;padding:.5em;font-size:12px}
.note{color:#a33}section{border-top:2px solid #ccc;margin-top:1.5em}"""

# Written on load so a headless browser's --dump-dom shows whether every figure decoded.
_SELFCHECK = """<pre id="selfcheck">pending</pre><script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.getElementById("selfcheck").textContent =
    "images_loaded=" + ok + " images_total=" + imgs.length +
    " tables=" + document.querySelectorAll("table").length;
});
</script>"""


def _page(run: str, doc: _Doc) -> str:
    body = []
    for part in doc.parts:
        if isinstance(part, _Figure):
            data = base64.b64encode(part.png).decode("ascii")
            body.append(f'<figure><img alt="{_esc(part.caption)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{_esc(part.caption)} ({_esc(part.slug)}.png)</figcaption></figure>")
        else:
            body.append(part)
    made = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>gangeo report: {_esc(run)}</title>'
            f"<style>{_STYLE}</style></head><body><h1>Run {_esc(run)}</h1><p>Report made {made}.</p>"
            + "".join(body) + _SELFCHECK + "</body></html>")


def _render(figures: list[_Figure], progress: bool) -> None:
    from tqdm import tqdm

    quiet = not progress or not sys.stderr.isatty()
    for fig in tqdm(figures, desc="report figures", unit="fig", file=sys.stderr, disable=quiet):
        fig.png = fig.render()


def build_report(
    url: str | os.PathLike | None,
    run: str,
    *,
    out_dir: str | os.PathLike | None = None,
    s3_endpoint: str | None = None,
    progress: bool = True,
    traversals: bool = True,
    allow_import: bool = False,
) -> Path:
    """Write ``<out_dir>/<run>.html`` (self-contained) and its figures as PNGs; return the HTML path.

    ``url``: the store (local directory or ``s3://bucket/prefix``). ``out_dir``:
    default ``gangeo-reports/<run>``. ``progress``: a tqdm bar on stderr over the
    figures (shown only on a terminal). ``traversals``: render traversal grids
    (loads the run's generator here, from the stored spec validated as a spec file;
    an import path in it needs ``allow_import=True``, see :mod:`cluster.trust`).
    Nothing is written when the run cannot be read or its spec is refused.
    """
    from .storage import open_root

    root = open_root(url, s3_endpoint=s3_endpoint, mode="r", create=False)
    if run not in set(root.group_keys()):
        raise GeometryError(f"no run {run!r} in the store; runs there: {sorted(root.group_keys())}")
    run_group = root[run]
    attrs = dict(run_group.attrs)
    groups = _groups(run_group)
    if not groups:
        raise GeometryError(f"run {run!r} has no target group with a done array")
    doc = _Doc()
    ctx = {"spec": _trusted_spec(attrs.get("spec"), run, allow_import) if traversals else {},
           "generators": {}, "traversals": traversals}
    doc.add("<nav><ul>" + "".join(f'<li><a href="#{_esc(_slug(g.key))}">{_esc(g.key)}</a></li>'
                                  for g in groups) + "</ul></nav>")
    for g in groups:
        _group_section(doc, g, ctx)
    _amplification_section(doc, groups)
    _run_section(doc, run, attrs)
    _render(doc.figures, progress)
    out = Path(out_dir) if out_dir is not None else Path(DEFAULT_REPORT_DIR) / _slug(run)
    out.mkdir(parents=True, exist_ok=True)
    for fig in doc.figures:
        (out / f"{fig.slug}.png").write_bytes(fig.png)
    path = out / f"{_slug(run)}.html"
    path.write_text(_page(run, doc), encoding="utf-8")
    return path
