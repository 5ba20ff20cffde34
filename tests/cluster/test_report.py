"""The HTML report of a run: files, embedded figures, the run's numbers in its tables, a real browser.

The run is written with zarr directly, in the store's layout (tests/support/report_run.py), with
synthetic float64 metrics (D = 100, the face DCGAN's latent size, so the traversal
grid renders real images from the shipped generator), then reduced by the real
reducers in-process. Expected numbers are recomputed here with plain numpy.
Table cells show 4 significant digits, so floats compare at rtol 1e-3
(rounding to 4 digits moves a number by at most 5e-4 relative). ``gangeo report`` itself is tested in
tests/jobs/test_report_cmd.py.
"""

from __future__ import annotations

import base64
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import zarr

from cluster.reduce import REDUCERS, reduce_group
from cluster.report import FRACTIONS, build_report, traversal_steps
from cluster.storage import StoreError
from geometry_core.errors import GeometryError
from tests.support.browser import dump_dom, find_chromium, screenshot
from tests.support.report_run import LAYERS, MSE, RUN, TIMING, C, N, metrics, write_report_run
from tests.support.spectra import random_spectra
from tests.support.stores import write_group

FTOL = 1e-3


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return write_report_run(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def report(store, tmp_path_factory) -> Path:
    return build_report(store, RUN, out_dir=tmp_path_factory.mktemp("report"), progress=False)


class _Cells(HTMLParser):
    """Collects ``data-key`` -> text of table cells, image sources, <body>'s attributes, the h2 headings,
    each table (header and rows of cell texts, with the id of the section holding it) and the visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[str, str] = {}
        self.images: list[str] = []
        self.body: dict[str, str] = {}
        self.headings: list[str] = []
        self.tables: list[dict] = []
        self.visible: list[str] = []
        self._key: str | None = None
        self._tag: list[str] = []
        self._section: list[str | None] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self._tag.append(tag)
        if tag == "img":
            self.images.append(a.get("src", ""))
        if tag == "body":
            self.body = a
        if tag == "section":
            self._section.append(a.get("id"))
        if tag == "h2":
            self.headings.append("")
        if tag == "table":
            self.tables.append({"section": self._section[-1] if self._section else None, "header": [], "rows": []})
        if tag == "tr" and self.tables and "thead" not in self._tag:
            self.tables[-1]["rows"].append([])
        if tag in ("td", "th") and self.tables:
            (self.tables[-1]["header"] if tag == "th" else self.tables[-1]["rows"][-1]).append("")
        self._key = a.get("data-key") if tag == "td" else None

    def handle_data(self, data):
        if self._tag and self._tag[-1] in ("script", "style", "title"):
            return
        self.visible.append(data)
        if self._tag and self._tag[-1] == "h2":
            self.headings[-1] += data
        if self._tag and self._tag[-1] in ("td", "th") and self.tables:
            cells = self.tables[-1]["header"] if self._tag[-1] == "th" else self.tables[-1]["rows"][-1]
            cells[-1] += data
        if self._key:
            self.cells[self._key] = self.cells.get(self._key, "") + data

    def handle_endtag(self, tag):
        self._key = None
        if tag == "section" and self._section:
            self._section.pop()
        if self._tag and self._tag[-1] == tag:
            self._tag.pop()


def _parse(text: str) -> _Cells:
    p = _Cells()
    p.feed(text)
    return p


def _counts(lam: np.ndarray, f: float) -> int:
    """Fewest top eigenvalues reaching fraction f of the sum (numpy, independent of geometry_core)."""
    cum = np.cumsum(np.sort(lam)[::-1])
    return int(np.argmax(cum >= f * cum[-1]) + 1)


def _expect_numbers(cells: dict[str, str]) -> None:
    """Every number the tables must hold, recomputed from the synthetic metrics."""
    h, lam, _ = metrics(0)
    for f in FRACTIONS:
        assert int(cells[f"{MSE}:anisotropy:mean_spectrum:{f:g}"]) == _counts(lam.mean(0), f)
        per = np.array([_counts(row, f) for row in lam], dtype=float)
        assert float(cells[f"{MSE}:anisotropy:points_median:{f:g}"]) == pytest.approx(np.median(per), rel=FTOL)
        q25, q75 = np.percentile(per, [25, 75])
        assert float(cells[f"{MSE}:anisotropy:points_q25:{f:g}"]) == pytest.approx(q25, rel=FTOL)
        assert float(cells[f"{MSE}:anisotropy:points_q75:{f:g}"]) == pytest.approx(q75, rel=FTOL)
    glob = np.sort(np.linalg.eigvalsh(h.mean(0)))[::-1]
    for k in range(5):
        assert float(cells[f"{MSE}:global:eigval:{k + 1}"]) == pytest.approx(glob[k], rel=FTOL)
    for f in FRACTIONS:
        assert int(cells[f"{MSE}:anisotropy:global:{f:g}"]) == _counts(glob, f)
    # Homogeneity from its definition: v_k = u_ik^T H_j u_ik against l_jk, i != j.
    _, lam_all, q = metrics(0)
    log_c, lin_c = [], []
    for i in range(N):
        for j in range(N):
            if i != j:
                v = np.einsum("dk,de,ek->k", q[i], h[j], q[i])
                log_c.append(np.corrcoef(np.log10(v), np.log10(lam_all[j]))[0, 1])
                lin_c.append(np.corrcoef(v, lam_all[j])[0, 1])
    for name, vals in (("log", log_c), ("lin", lin_c)):
        assert float(cells[f"{MSE}:homogeneity:{name}:mean"]) == pytest.approx(np.mean(vals), rel=FTOL)
        assert float(cells[f"{MSE}:homogeneity:{name}:std"]) == pytest.approx(np.std(vals), rel=FTOL)
        assert int(cells[f"{MSE}:homogeneity:{name}:count"]) == N * (N - 1)
    # The partial layer group: only the 8 done codes count.
    _, lam2, _ = metrics(2)
    done_rows = np.r_[0:C, 2 * C : 3 * C]
    for f in FRACTIONS:
        assert int(cells[f"{LAYERS[1]}:anisotropy:mean_spectrum:{f:g}"]) == _counts(lam2[done_rows].mean(0), f)
    # A layer's amplification by itself is a perfect alignment.
    for layer in ("layer:main.2", "layer:main.5"):
        assert float(cells[f"dcgan-faces/z:amplification:{layer}:{layer}"]) == pytest.approx(1.0, abs=1e-9)
    assert float(cells["timing:sweep_s"]) == TIMING["sweep_s"]


def test_files_and_embedded_figures(report):
    text = report.read_text(encoding="utf-8")
    parsed = _parse(text)
    pngs = sorted(report.parent.glob("*.png"))
    # 3 spectra, MSE homogeneity + global spectrum + traversal, 1 amplification.
    assert len(pngs) == len(parsed.images) == 7
    embedded = {base64.b64decode(src.split(",", 1)[1]) for src in parsed.images}
    assert embedded == {p.read_bytes() for p in pngs}
    assert all(src.startswith("data:image/png;base64,") for src in parsed.images)
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:|//)""", text), "report must not load external resources"
    assert any("traversal" in p.name for p in pngs)
    assert "layer:main.5" in text and "8 of 12 codes done" in text


def test_tables_hold_the_runs_numbers(report):
    _expect_numbers(_parse(report.read_text(encoding="utf-8")).cells)


def test_spec_in_the_report(report):
    text = report.read_text(encoding="utf-8")
    spec_text = re.search(r'<pre class="spec">(.*?)</pre>', text, re.S).group(1)
    assert "dcgan-faces" in spec_text and "layer:main.2" in spec_text and "seed: 0" in spec_text


def test_traversal_steps_are_calibrated():
    lam = np.array([4.0, 1.0, 0.25, 1e-3])
    steps = traversal_steps(lam, n_steps=5, top_step=2.0)
    delta = 0.5 * lam[0] * 2.0**2
    # Each row's edge step reaches the same second-order distance delta = lambda_k t^2 / 2.
    np.testing.assert_allclose(0.5 * lam * steps[:, -1] ** 2, delta, rtol=1e-12)
    np.testing.assert_allclose(steps[:, 0], -steps[:, -1])
    np.testing.assert_allclose(steps[:, 2], 0.0)
    clipped = traversal_steps(lam, n_steps=5, top_step=2.0, max_step=10.0)
    assert clipped[-1, -1] == 10.0 and clipped[0, -1] == 2.0
    with pytest.raises(GeometryError):
        traversal_steps(np.array([0.0, 0.0]))


def test_unknown_run_writes_nothing(store, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(StoreError, match="no run 'nope'"):
        build_report(store, "nope", out_dir=out, progress=False)
    assert not out.exists()


def test_in_chromium(report, tmp_path):
    exe = find_chromium()
    if exe is None:
        # CI installs chromium and sets GANGEO_REQUIRE_BROWSER so this cannot skip there.
        if os.environ.get("GANGEO_REQUIRE_BROWSER"):
            pytest.fail("GANGEO_REQUIRE_BROWSER is set but chromium is not installed")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    dom = _parse(dump_dom(exe, report))
    total = len(dom.images)
    assert total == 7
    assert dom.body.get("data-images-loaded") == dom.body.get("data-images-total") == str(total)
    _expect_numbers(dom.cells)
    shot = screenshot(exe, report, tmp_path / "report.png", size=(1100, 2200))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- issue 11: a run of several groups (trained against shuffled, layer by layer) ----

MULTI_N, MULTI_D, MULTI_C = 6, 8, 3
MODELS = ("dcgan-faces", "dcgan-faces-shuffled1")
TARGETS = ("mse", "layer:main.2", "layer:main.11")
MULTI_SPEC = {"name": "multi", "codes": {"n": MULTI_N, "seed": 0}, "targets": ["mse", {"layers": "all"}],
              "generators": [{"name": "dcgan-faces"}, {"name": "dcgan-faces", "options": {"shuffle_seed": 1}}]}


def _multi_key(model: str, target: str) -> str:
    return f"{model}/z/{target.replace(':', '-')}"


@pytest.fixture(scope="module")
def multi(tmp_path_factory) -> tuple[Path, Path]:
    """Groups written in string order (shuffled first, main.11 before main.2): the report must reorder them."""
    path = tmp_path_factory.mktemp("multi")
    run = zarr.open_group(str(path), mode="a", zarr_format=3).require_group("multi")
    run.attrs.update({"spec": MULTI_SPEC, "status": "complete"})
    for key in sorted(_multi_key(m, t) for m in MODELS for t in TARGETS):
        model, space, target = key.split("/")
        index = sorted(_multi_key(m, t) for m in MODELS for t in TARGETS).index(key)
        lam, q = random_spectra(MULTI_N, MULTI_D, 3, index)
        z = np.random.default_rng(7).standard_normal((MULTI_N, MULTI_D))
        g = write_group(run, key, {"z": z, "eigvals": lam, "eigvecs": q}, chunk_size=MULTI_C,
                        attrs={"model": model, "space": space, "target": target.replace("layer-", "layer:")})
        # Every reducer for the image distance only: fewer figures to draw, and the summary says "nan".
        reduce_group(g, tile=3, use_ray=False, reducers=REDUCERS if target == "mse" else ("anisotropy",))
    report = build_report(path, "multi", out_dir=tmp_path_factory.mktemp("multi-report"), progress=False,
                          traversals=False)
    return path, report


def test_sections_in_natural_order_trained_first(multi):
    _, report = multi
    headings = _parse(report.read_text(encoding="utf-8")).headings
    groups = [h for h in headings if h.count(" / ") == 2]
    assert groups == [f"{m} / z / {t}" for m in MODELS for t in TARGETS]
    amp = [h for h in headings if h.startswith("Layer amplification")]
    assert amp == [f"Layer amplification: {m} / z" for m in MODELS]
    assert headings[0] == "Summary across groups"


def test_summary_table_across_groups(multi):
    path, report = multi
    parsed = _parse(report.read_text(encoding="utf-8"))
    (summary,) = [t for t in parsed.tables if t["section"] == "summary"]
    assert [row[:2] for row in summary["rows"]] == [["z", t] for t in TARGETS]
    assert all(m in " ".join(summary["header"]) for m in MODELS)
    assert "median anisotropy per code (99%)" in summary["header"][2]
    red_root = zarr.open_group(str(path), mode="r", zarr_format=3)["multi"]
    for m in MODELS:
        for t in TARGETS:
            key = _multi_key(m, t)
            lam = np.asarray(red_root[key]["eigvals"][:])
            # Recomputed with numpy: eigenvalues for 99% per code (median), of the mean metric, homogeneity mean.
            assert float(parsed.cells[f"summary:{key}:median"]) == np.median([_counts(row, 0.99) for row in lam])
            glob, hom = parsed.cells[f"summary:{key}:global"], parsed.cells[f"summary:{key}:homogeneity"]
            if t == "mse":
                v = red_root[key]["eigvecs"][:]
                h = np.einsum("nik,nk,njk->ij", v, lam, v) / MULTI_N
                assert int(glob) == _counts(np.linalg.eigvalsh(h), 0.99)
                assert float(hom) == pytest.approx(np.nanmean(red_root[key]["reduce/homogeneity_log"][:]), rel=FTOL)
            else:
                assert glob == hom == "nan"  # not reduced: said, not invented


def test_per_code_anisotropy_is_the_median_everywhere(multi, report):
    """Labels say median, as `gangeo reduce` prints points_median; no per-code mean is shown."""
    for path in (multi[1], report):
        parsed = _parse(path.read_text(encoding="utf-8"))
        aniso = [t for t in parsed.tables if t["header"][:2] == ["fraction", "count (mean spectrum)"]]
        assert aniso and all(t["header"][2] == "per code: median" for t in aniso)
        assert not any("mean" in h for t in aniso for h in t["header"][2:5])
    text = multi[1].read_text(encoding="utf-8")
    assert "per point mean" not in text and "points_mean" not in text


def test_no_debug_text_on_the_page(multi, report):
    for path in (multi[1], report):
        visible = " ".join(_parse(path.read_text(encoding="utf-8")).visible)
        assert "images_loaded" not in visible and "pending" not in visible
        assert not re.search(r"\b[a-z_]+=\d", visible), re.search(r"\b[a-z_]+=\d", visible)


def test_amplification_ratio_cells(multi):
    """The table under the heatmap: median over k then codes of u_akᵀ H_b u_ak / λ_bk, from numpy."""
    path, report = multi
    cells = _parse(report.read_text(encoding="utf-8")).cells
    run = zarr.open_group(str(path), mode="r", zarr_format=3)["multi"]
    a_key, b_key = _multi_key(MODELS[0], "layer:main.2"), _multi_key(MODELS[0], "layer:main.11")
    va = run[a_key]["eigvecs"][:]
    lb, vb = run[b_key]["eigvals"][:], run[b_key]["eigvecs"][:]
    hb = np.einsum("nik,nk,njk->nij", vb, lb, vb)
    ratio = np.einsum("nik,nij,njk->nk", va, hb, va) / lb
    expect = np.median(np.median(ratio, axis=1))
    got = float(cells[f"{MODELS[0]}/z:amplification_ratio:layer:main.2:layer:main.11"])
    assert got == pytest.approx(expect, rel=FTOL)
    assert float(cells[f"{MODELS[0]}/z:amplification_ratio:layer:main.2:layer:main.2"]) == pytest.approx(1.0, abs=1e-9)


def test_amplification_heatmap_is_centred_on_one_and_annotated():
    from matplotlib.colors import Normalize

    from cluster.report_figures import amplification_figure
    from geometry_core.plots import agg_pyplot

    ratio = np.array([[1.0, 40.0, 0.5], [3.0, 1.0, 2.0], [0.02, 7.5, 1.0]])
    names = ["layer:main.2", "layer:main.5", "layer:main.11"]
    fig = amplification_figure(ratio, names, title="t")
    try:
        ax = fig.axes[0]
        (im,) = ax.images
        norm = im.norm
        assert isinstance(norm, Normalize)
        assert float(norm(1.0)) == pytest.approx(0.5, abs=1e-12)  # 1 is the middle of the colour scale
        assert float(norm(50.0)) == pytest.approx(1.0) and float(norm(1 / 50.0)) == pytest.approx(0.0)
        assert float(norm(40.0)) - 0.5 == pytest.approx(0.5 - float(norm(1 / 40.0)))  # r and 1/r: equal strength
        assert im.get_cmap().name in ("RdBu_r", "coolwarm", "RdBu", "bwr", "seismic", "PuOr", "BrBG")
        texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
        assert texts == {(a, b): f"{ratio[a, b]:.3g}" for a in range(3) for b in range(3)}
        assert [t.get_text() for t in ax.get_xticklabels()] == names
    finally:
        agg_pyplot().close(fig)
