"""The HTML report of a run: files, embedded figures, the run's numbers in its tables, a real browser.

The run is written here with zarr directly, in the store's layout (tests/support/stores.py), with
synthetic float64 metrics (D = 100, the face DCGAN's latent size, so the traversal
grid renders real images from the shipped generator), then reduced by the real
reducers in-process. Expected numbers are recomputed here with plain numpy.
Table cells show 4 significant digits, so floats compare at rtol 1e-3
(rounding to 4 digits moves a number by at most 5e-4 relative).
"""

from __future__ import annotations

import os

import argparse
import base64
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import zarr

from cluster.reduce import reduce_group
from cluster.report import FRACTIONS, build_report, traversal_steps
from cluster.storage import StoreError
from geometry_core.errors import GeometryError
from tests.support.browser import dump_dom, find_chromium, screenshot
from tests.support.stores import write_group

N, D, C = 12, 100, 4
RUN = "quick"
MSE = "dcgan-faces/z/mse"
LAYERS = ("dcgan-faces/z/layer-main.2", "dcgan-faces/z/layer-main.5")
FTOL = 1e-3
SPEC = {
    "name": RUN,
    "generators": [{"name": "dcgan-faces", "spaces": ["z"], "options": {}}],
    "targets": ["mse", "layer:main.2", "layer:main.5"],
    "codes": {"n": N, "seed": 0},
}
TIMING = {"sweep_s": 12.5, "reduce_s": 3.25}


def _metrics(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """N PSD matrices with spectra spread over 10^0 .. 10^-6 and random bases; (H, eigvals desc, eigvecs)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((N, D, D)))
    lam = np.logspace(0, -6, D) * (1 + 0.5 * rng.random((N, D)))
    lam = -np.sort(-lam, axis=1)
    h = np.einsum("nik,nk,njk->nij", q, lam, q)
    return 0.5 * (h + h.transpose(0, 2, 1)), lam, q


def _write_group(run: zarr.Group, key: str, seed: int, *, done, hessian: bool) -> zarr.Group:
    model, space, target = key.split("/")
    h, lam, q = _metrics(seed)
    z = np.random.default_rng(100 + seed).standard_normal((N, D))
    arrays = {"z": z, "eigvals": lam, "eigvecs": q, **({"hessian": h} if hessian else {})}
    return write_group(run, key, arrays, chunk_size=C, done=done,
                       attrs={"model": model, "space": space, "target": target.replace("layer-", "layer:")})


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("store")
    root = zarr.open_group(str(path), mode="a", zarr_format=3)
    run = root.require_group(RUN)
    run.attrs.update({"spec": SPEC, "status": "complete", "created": "2026-01-01T00:00:00+00:00",
                      "versions": {"torch": "2.14.1"}, "timing": TIMING})
    g = _write_group(run, MSE, 0, done=[1, 1, 1], hessian=True)
    reduce_group(g, tile=6, use_ray=False)
    # The second layer has one chunk not done: its rows must not count anywhere.
    for key, seed, done in ((LAYERS[0], 1, [1, 1, 1]), (LAYERS[1], 2, [1, 0, 1])):
        lg = _write_group(run, key, seed, done=done, hessian=False)
        if done[1] == 0:
            lg["eigvals"][C : 2 * C] = 1e6  # a half-written chunk: garbage that must be ignored
        reduce_group(lg, reducers=("anisotropy",), use_ray=False)
    return path


@pytest.fixture(scope="module")
def report(store, tmp_path_factory) -> Path:
    return build_report(store, RUN, out_dir=tmp_path_factory.mktemp("report"), progress=False)


class _Cells(HTMLParser):
    """Collects ``data-key`` -> text of table cells, image sources, and the selfcheck text."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[str, str] = {}
        self.images: list[str] = []
        self.selfcheck = ""
        self._key: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src", ""))
        self._key = a.get("data-key") if tag == "td" else ("#selfcheck" if a.get("id") == "selfcheck" else None)

    def handle_data(self, data):
        if self._key == "#selfcheck":
            self.selfcheck += data
        elif self._key:
            self.cells[self._key] = self.cells.get(self._key, "") + data

    def handle_endtag(self, tag):
        self._key = None


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
    h, lam, _ = _metrics(0)
    for f in FRACTIONS:
        assert int(cells[f"{MSE}:anisotropy:mean_spectrum:{f:g}"]) == _counts(lam.mean(0), f)
        per = np.array([_counts(row, f) for row in lam], dtype=float)
        assert float(cells[f"{MSE}:anisotropy:points_mean:{f:g}"]) == pytest.approx(per.mean(), rel=FTOL)
        assert float(cells[f"{MSE}:anisotropy:points_std:{f:g}"]) == pytest.approx(per.std(), rel=FTOL, abs=1e-9)
    glob = np.sort(np.linalg.eigvalsh(h.mean(0)))[::-1]
    for k in range(5):
        assert float(cells[f"{MSE}:global:eigval:{k + 1}"]) == pytest.approx(glob[k], rel=FTOL)
    for f in FRACTIONS:
        assert int(cells[f"{MSE}:anisotropy:global:{f:g}"]) == _counts(glob, f)
    # Homogeneity from its definition: v_k = u_ik^T H_j u_ik against l_jk, i != j.
    _, lam_all, q = _metrics(0)
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
    _, lam2, _ = _metrics(2)
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


def test_cli_report(store, tmp_path, capsys):
    from jobs.cli import EXIT_CODES, run_command
    from jobs.report_cmd import add_parser

    parser = argparse.ArgumentParser(prog="gangeo")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", RUN, "--store", str(store), "--out", str(tmp_path / "r"),
                              "--no-traversals"])
    assert args.func(args) == 0
    out, err = capsys.readouterr()
    assert Path(out.strip()) == tmp_path / "r" / f"{RUN}.html" and err == ""  # no bar off a terminal
    assert not any("traversal" in p.name for p in (tmp_path / "r").glob("*.png"))
    bad = parser.parse_args(["report", "nope", "--store", str(store), "--out", str(tmp_path / "bad")])
    assert run_command(bad) == EXIT_CODES["store"]
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "nope" in err
    assert not (tmp_path / "bad").exists()


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
    assert f"images_loaded={total} images_total={total}" in dom.selfcheck
    _expect_numbers(dom.cells)
    shot = screenshot(exe, report, tmp_path / "report.png", size=(1100, 2200))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
