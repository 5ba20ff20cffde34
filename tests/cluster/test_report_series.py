"""The report of a run with a checkpoint series: its "Training series" section, the numbers its figures
plot (against the stored steps, with gaps where a step's reduce lacked a statistic), and a real browser.

The run is written with zarr directly (tests/support/stores.py): three checkpoints of one series, an
image distance and a layer, synthetic float64 metrics (D = 16, above the k = 10 eigenspaces compared),
reduced in-process by the real reducers, some steps with fewer reducers, then the series statistics
by ``cluster.series_reduce.reduce_series``. Expected numbers are recomputed here with plain numpy from
the metrics written; the figures' numbers are read from the page (``data-values``, full-precision JSON).
"""

from __future__ import annotations

import base64
import json
import os
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import zarr

from cluster.reduce import REDUCERS, reduce_group
from cluster.report import build_report
from cluster.series_reduce import SERIES_GROUP, reduce_series
from tests.support.browser import dump_dom, find_chromium
from tests.support.spectra import random_spectra
from tests.support.stores import write_group

N, D, C, K = 6, 16, 3, 10
SERIES = "faces"
STEPS = (40, 80, 200)  # uneven, so a plot against the step index would not pass
TARGETS = ("mse", "layer-main.2")  # stored group names; the report shows the layer as layer:main.2
SHOWN = ("mse", "layer:main.2")
# The reducers of each step's group: the gaps the curves must show. Homogeneity only where the curve
# needs it (its report figure is the slowest to draw): the layer's homogeneity curve is all gaps.
NO_HOMOGENEITY = ("global", "anisotropy")
REDUCED = {(40, "mse"): NO_HOMOGENEITY, (80, "mse"): REDUCERS, (200, "mse"): REDUCERS,
           (40, "layer-main.2"): NO_HOMOGENEITY, (80, "layer-main.2"): ("anisotropy",),
           (200, "layer-main.2"): NO_HOMOGENEITY}
RTOL = 1e-9


def _seed(step: int, target: str) -> int:
    return 10 * STEPS.index(step) + TARGETS.index(target)


def _write_run(root: zarr.Group, name: str, *, steps: tuple[int, ...], series: bool = True,
               reducers: tuple[str, ...] | None = None) -> zarr.Group:
    """A complete run; with ``series``, one group label per step (``faces-step<step>``) and its series reduce.

    ``reducers``: every group's (default: ``REDUCED``'s).
    """
    run = root.require_group(name)
    labels = [f"{SERIES}-step{s}" if series else SERIES for s in steps]
    keys = [f"{label}/z/{t}" for label in labels for t in TARGETS]
    weights = {f"{label}/weights": {"path": f"/ckpts/ckpt-{s}.tar", "sha256": "0" * 64,
                                    **({"series": SERIES, "step": s} if series else {})}
               for s, label in zip(steps, labels)}
    generator = {"name": "dcgan-faces", "label": SERIES,
                 **({"series": {"weights": "/ckpts/ckpt-*.tar"}} if series else {})}
    run.attrs.update({"spec": {"name": name, "generators": [generator], "targets": ["mse", "layer:main.2"],
                               "codes": {"n": N, "seed": 0}},
                      "status": "complete", "created": "2026-01-01T00:00:00+00:00",
                      "identity": {"weights": weights}, "groups": keys})
    for s, label in zip(steps, labels):
        for t in TARGETS:
            lam, q = random_spectra(N, D, 4, _seed(s, t))
            z = np.random.default_rng(_seed(s, t)).standard_normal((N, D))
            g = write_group(run, f"{label}/z/{t}", {"z": z, "eigvals": lam, "eigvecs": q}, chunk_size=C,
                            attrs={"model": label, "space": "z", "target": t.replace("layer-", "layer:")})
            reduce_group(g, reducers=reducers or REDUCED[(s, t)], tile=3, use_ray=False)
    if series:
        reduce_series(run)
    return run


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("store")
    _write_run(zarr.open_group(str(path), mode="a", zarr_format=3), "training", steps=STEPS)
    return path


@pytest.fixture(scope="module")
def report(store, tmp_path_factory) -> Path:
    return build_report(store, "training", out_dir=tmp_path_factory.mktemp("report"), progress=False,
                        traversals=False)


class _Page(HTMLParser):
    """h2 and h3 texts, nav links, <body>'s attributes and each figure: data-values, image source, caption."""

    def __init__(self) -> None:
        super().__init__()
        self.headings: dict[str, list[str]] = {"h2": [], "h3": []}
        self.links: list[str] = []
        self.body: dict[str, str] = {}
        self.figures: list[dict] = []
        self._tag: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self._tag.append(tag)
        if tag in self.headings:
            self.headings[tag].append("")
        if tag == "a":
            self.links.append(a.get("href", ""))
        if tag == "body":
            self.body = a
        if tag == "figure":
            values = a.get("data-values")
            self.figures.append({"data": json.loads(values) if values else None, "src": "", "caption": ""})
        if tag == "img" and self.figures:
            self.figures[-1]["src"] = a.get("src", "")

    def handle_data(self, data):
        if self._tag and self._tag[-1] in self.headings:
            self.headings[self._tag[-1]][-1] += data
        if self._tag and self._tag[-1] == "figcaption" and self.figures:
            self.figures[-1]["caption"] += data

    def handle_endtag(self, tag):
        if self._tag and self._tag[-1] == tag:
            self._tag.pop()


def _parse(text: str) -> _Page:
    p = _Page()
    p.feed(text)
    return p


def _series_figures(page: _Page) -> dict[str, dict]:
    """The section's two figures by kind ("curves", "eigvals")."""
    out = {}
    for fig in page.figures:
        for kind in ("curves", "eigvals"):
            if f"series-{SERIES}-z-{kind}.png" in fig["caption"]:
                out[kind] = fig
    return out


def _counts(lam: np.ndarray, f: float) -> int:
    """Fewest top eigenvalues reaching fraction f of the sum (numpy, independent of geometry_core)."""
    cum = np.cumsum(np.sort(lam)[::-1])
    return int(np.argmax(cum >= f * cum[-1]) + 1)


def _global(step: int, target: str) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and eigenvectors of the mean metric of one step's group."""
    lam, q = random_spectra(N, D, 4, _seed(step, target))
    w, v = np.linalg.eigh(np.einsum("nik,nk,njk->ij", q, lam, q) / N)
    return w[::-1], v[:, ::-1]


def _expected(store: Path, target: str) -> dict[str, list]:
    """What each curve must hold, from the metrics written; None where the step's reduce lacks it."""
    run = zarr.open_group(str(store), mode="r")["training"]
    final = _global(STEPS[-1], target)[1][:, :K]
    out: dict[str, list] = {"step": list(STEPS), "anisotropy_99": [], "homogeneity_log": [], "kept": [],
                            "first_cos": [], "top_eigvals": []}
    for s in STEPS:
        chosen = REDUCED[(s, target)]
        w, v = _global(s, target)
        cos = np.linalg.svd(v[:, :K].T @ final, compute_uv=False)  # cosines of the principal angles
        has_global = "global" in chosen
        out["anisotropy_99"].append(_counts(w, 0.99) if has_global else None)
        out["top_eigvals"].append(list(w[:5]) if has_global else [None] * 5)
        out["kept"].append(float(np.mean(cos**2)) if has_global else None)
        out["first_cos"].append(float(cos[0]) if has_global else None)
        hom = run[f"{SERIES}-step{s}/z/{target}/reduce/homogeneity_log"][:] if "homogeneity" in chosen else None
        out["homogeneity_log"].append(float(np.nanmean(hom)) if hom is not None else None)
    return out


def _same(got: list, want: list) -> bool:
    """Equal lists, None (a gap) only where expected, numbers at RTOL."""
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want))
    if want is None or got is None:
        return got is want
    return got == pytest.approx(want, rel=RTOL)


def test_series_section_plots_each_statistic_against_step(store, report):
    page = _parse(report.read_text(encoding="utf-8"))
    assert "Training series" in page.headings["h2"] and "#series" in page.links
    assert f"{SERIES} / z" in page.headings["h3"]
    figs = _series_figures(page)
    assert sorted(figs) == ["curves", "eigvals"]
    for kind, fig in figs.items():
        png = (report.parent / f"series-{SERIES}-z-{kind}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and base64.b64decode(fig["src"].split(",", 1)[1]) == png
    curves, eigvals = figs["curves"]["data"], figs["eigvals"]["data"]
    assert list(curves) == list(eigvals) == list(SHOWN)  # the image distance first, as the report orders groups
    for shown, target in zip(SHOWN, TARGETS):
        want = _expected(store, target)
        assert curves[shown]["step"] == eigvals[shown]["step"] == list(STEPS)
        for name in ("anisotropy_99", "homogeneity_log", "kept", "first_cos"):
            assert _same(curves[shown][name], want[name]), (shown, name, curves[shown][name], want[name])
        assert _same(eigvals[shown]["top_eigvals"], want["top_eigvals"]), (shown, eigvals[shown]["top_eigvals"])
    # At the last step the eigenspace is the final one: everything kept.
    assert curves["mse"]["kept"][-1] == pytest.approx(1.0) and curves["mse"]["first_cos"][-1] == pytest.approx(1.0)


def test_series_figures_draw_the_numbers_with_gaps(report):
    """The figures draw exactly the numbers the page carries, against the step, NaN (not 0) where missing."""
    from cluster.report_figures import series_curves_figure, series_eigvals_figure
    from cluster.report_series import CURVE_PANELS
    from geometry_core.plots import agg_pyplot

    figs = _series_figures(_parse(report.read_text(encoding="utf-8")))
    curves, eigvals = figs["curves"]["data"], figs["eigvals"]["data"]
    as_float = {t: {k: np.array(v, dtype=float) for k, v in c.items()} for t, c in curves.items()}
    fig = series_curves_figure(as_float, CURVE_PANELS)
    try:
        for ax, (name, _) in zip(fig.axes, CURVE_PANELS):
            assert [ln.get_label() for ln in ax.get_lines()] == list(SHOWN)
            for ln, target in zip(ax.get_lines(), SHOWN):
                np.testing.assert_array_equal(ln.get_xdata(), STEPS)
                np.testing.assert_array_equal(ln.get_ydata(), as_float[target][name])
        gap = [ax for ax, (name, _) in zip(fig.axes, CURVE_PANELS) if name == "anisotropy_99"][0].get_lines()[1]
        assert np.isnan(gap.get_ydata()[1])  # layer:main.2 at step 80: no global metric, a gap
    finally:
        agg_pyplot().close(fig)
    fig = series_eigvals_figure({t: {k: np.array(v, dtype=float) for k, v in c.items()} for t, c in eigvals.items()})
    try:
        for ax, target in zip(fig.axes, SHOWN):
            assert ax.get_title() == target and ax.get_yscale() == "log"
            top = np.array(eigvals[target]["top_eigvals"], dtype=float)
            assert len(ax.get_lines()) == top.shape[1] == 5
            for r, ln in enumerate(ax.get_lines()):
                np.testing.assert_array_equal(ln.get_xdata(), STEPS)
                np.testing.assert_array_equal(ln.get_ydata(), top[:, r])
    finally:
        agg_pyplot().close(fig)


def test_no_series_section_without_a_complete_series(tmp_path):
    """A run without a series, and one whose series reduce is unfinished: the report is as before."""
    root = zarr.open_group(str(tmp_path / "store"), mode="a", zarr_format=3)
    # One checkpoint each and anisotropy only: few figures to draw, and the series statistics still written.
    _write_run(root, "plain", steps=STEPS[:1], series=False, reducers=("anisotropy",))
    unfinished = _write_run(root, "unfinished", steps=STEPS[2:], reducers=("anisotropy",))
    for t in TARGETS:
        unfinished[f"{SERIES_GROUP}/{SERIES}/z/{t}"].attrs["state"] = "reducing"
    for name in ("plain", "unfinished"):
        path = build_report(tmp_path / "store", name, out_dir=tmp_path / name, progress=False, traversals=False)
        page = _parse(path.read_text(encoding="utf-8"))
        assert "Training series" not in page.headings["h2"] and "#series" not in page.links
        assert not _series_figures(page) and all(f["data"] is None for f in page.figures)
        assert not list((tmp_path / name).glob("series-*.png"))
        assert page.headings["h3"]  # the groups' own sections are there


def test_series_report_in_chromium(report):
    exe = find_chromium()
    if exe is None:
        # CI installs chromium and sets GANGEO_REQUIRE_BROWSER so this cannot skip there.
        if os.environ.get("GANGEO_REQUIRE_BROWSER"):
            pytest.fail("GANGEO_REQUIRE_BROWSER is set but chromium is not installed")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    dom = _parse(dump_dom(exe, report))
    total = len(dom.figures)
    assert total == len(list(report.parent.glob("*.png")))
    # The page's own script ran (no error stopped it) and every figure decoded.
    assert dom.body.get("data-images-loaded") == dom.body.get("data-images-total") == str(total)
    figs = _series_figures(dom)
    assert "Training series" in dom.headings["h2"]
    assert [figs["curves"]["data"][t]["step"] for t in SHOWN] == [list(STEPS)] * 2
