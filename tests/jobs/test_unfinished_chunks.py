"""Issue 21, finding 1: a chunk that is not done is never data.

Chunk 1's ``done`` entry is cleared with its rows still written (the half-written arrays
of a failed write: here its eigvals bytes are also flipped, so they no longer decode) and
chunk 2's eigvals were never written (zeros, as after a full disk). Every reader returns
those codes as missing (NaN, ``null`` in JSON) or leaves them out, and says how many:
``query``, ``report``, ``compare`` and ``--metric run:`` here; xarray in
tests/cluster/test_unfinished_chunks.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from cluster.reduce import reduce_run
from cluster.store import RunStore
from jobs.cli import main
from tests.support.runs import N, build_run, unfinish

KEY = "module/z/mse"
NOT_DONE = [2, 3, 4, 5]  # the codes of chunks 1 and 2
DONE = [0, 1, 6, 7]


@pytest.fixture
def unfinished(tmp_path) -> tuple[Path, dict]:
    store = tmp_path / "s"
    rs = build_run(store)
    g = zarr.open_group(store / "v" / KEY, mode="r")
    ref = {name: np.asarray(g[name][:]) for name in ("z", "eigvals", "hessian")}
    unfinish(store, rs)
    return store, ref


def _err_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("array", ["eigvals", "z", "hessian"])
def test_query_returns_codes_of_unfinished_chunks_as_null_and_says_how_many(unfinished, capsys, array):
    store, ref = unfinished
    assert main(["query", "v", "--store", str(store), "--array", array]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)["data"]
    assert all(np.all(np.asarray(data[i], dtype=object) == None) for i in NOT_DONE)  # noqa: E711 (JSON null)
    np.testing.assert_array_equal(np.asarray([data[i] for i in DONE]), ref[array][DONE])
    line = _err_line(err)
    assert line.startswith("gangeo query: ") and f"{len(NOT_DONE)} of the codes read" in line and KEY in line


def test_query_of_one_unfinished_code_is_null_and_of_a_done_one_a_number(unfinished, capsys):
    store, ref = unfinished
    assert main(["query", "v", "--store", str(store), "--index", "3"]) == 0
    out, err = capsys.readouterr()
    assert set(json.loads(out)["data"]) == {None} and "1 of the codes read" in _err_line(err)
    assert main(["query", "v", "--store", str(store), "--index", "6:8"]) == 0
    out, err = capsys.readouterr()
    np.testing.assert_array_equal(np.asarray(json.loads(out)["data"]), ref["eigvals"][6:8])
    assert err == ""  # every code read is done: nothing to say


def test_query_npy_is_nan_where_not_done(unfinished, capsys, tmp_path):
    store, ref = unfinished
    out = tmp_path / "e.npy"
    assert main(["query", "v", "--store", str(store), "--format", "npy", "--out", str(out)]) == 0
    got = np.load(out)
    assert np.isnan(got[NOT_DONE]).all()
    np.testing.assert_array_equal(got[DONE], ref["eigvals"][DONE])
    assert "4 of the codes read" in _err_line(capsys.readouterr().err)


def test_query_of_chunk_records_is_served_as_stored(unfinished, capsys):
    store, _ = unfinished
    assert main(["query", "v", "--store", str(store), "--array", "done"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["data"] == [1, 0, 0, 1] and err == ""


def test_report_leaves_out_codes_not_done_and_says_how_many(unfinished, tmp_path, capsys):
    store, _ = unfinished
    out_dir = tmp_path / "rep"
    assert main(["report", "v", "--store", str(store), "--no-traversals", "--quiet", "--out", str(out_dir)]) == 0
    out, err = capsys.readouterr()
    assert _err_line(err) == f"gangeo report: left out {len(NOT_DONE)} of {N} codes whose chunk is not done"
    assert f"{len(DONE)} of {N} codes done." in (out_dir / "v.html").read_text()


def test_compare_counts_codes_not_done_and_uses_only_done_ones(unfinished, capsys):
    store, ref = unfinished
    rs = RunStore(str(store))
    reduce_run(rs.root, "v", reducers=("global", "anisotropy"), use_ray=False)
    rs.update_attrs("v", status="complete")
    assert main(["compare", "v", "v", "--store", str(store)]) == 0
    out, err = capsys.readouterr()
    a = json.loads(out)["groups"][0]["a"]
    assert (a["codes"], a["codes_not_done"]) == (len(DONE), len(NOT_DONE))
    # The median over the done codes alone (float64 stored and compared: exact up to the median's mean of two).
    np.testing.assert_allclose(a["spectrum"]["median"], np.median(ref["eigvals"][DONE], axis=0), rtol=1e-15)
    assert _err_line(err) == f"gangeo compare: left out {2 * len(NOT_DONE)} codes whose chunk is not done"


def test_metric_from_a_partial_run_says_how_many_codes_it_averages(tmp_path, capsys):
    from jobs.axes_cmd import stored_metric
    from tests.support.stored_runs import write_run

    store = tmp_path / "s"
    rs = write_run(store, "p", n=4, chunk_size=2, reduce=False)
    rs.mark_done("p", "dcgan-faces/z/mse", 1, value=0)
    reduce_run(rs.root, "p", reducers=("global",), use_ray=False)
    args = argparse.Namespace(metric="run:p", store=str(store), s3_endpoint=None, generator="dcgan-faces",
                              space=None, distance="mse", command="axes")
    m = stored_metric(args, argparse.Namespace(latent_dim=100))
    assert (m.codes, m.codes_used, m.codes_not_done) == (4, 2, 2)
    line = _err_line(capsys.readouterr().err)
    assert line.startswith("gangeo axes: --metric run:p: ") and "averages 2 of 4 codes (2 in chunks not done)" in line
