"""Issue 21, finding 1: a chunk that is not done is never data, in xarray.

Chunk 1's ``done`` entry is cleared with its rows still written (bytes flipped: they no longer
decode) and chunk 2's eigvals were never written. ``open_run_xarray`` returns those codes as NaN
and counts them. The commands (query, report, compare, ``--metric run:``):
tests/jobs/test_unfinished_chunks.py.
"""

from __future__ import annotations

import numpy as np
import zarr

from cluster.xr import open_run_xarray
from tests.support.runs import build_run, unfinish

KEY = "module/z/mse"
NOT_DONE = [2, 3, 4, 5]  # the codes of chunks 1 and 2
DONE = [0, 1, 6, 7]


def test_xarray_masks_codes_not_done_and_counts_them(tmp_path):
    store = tmp_path / "s"
    rs = build_run(store)
    g = zarr.open_group(store / "v" / KEY, mode="r")
    ref = {name: np.asarray(g[name][:]) for name in ("z", "eigvals", "hessian")}
    unfinish(store, rs)
    for ds in (open_run_xarray(str(store), "v", KEY), open_run_xarray(str(store), "v", KEY, chunks={})):
        assert ds.attrs["codes_not_done"] == len(NOT_DONE)
        for name in ("z", "eigvals", "hessian"):
            got = ds[name].values
            assert np.isnan(got[NOT_DONE]).all(), name
            np.testing.assert_array_equal(got[DONE], ref[name][DONE])
        assert ds["done"].values.tolist() == [1, 0, 0, 1]  # the chunk records themselves, as stored
    whole = open_run_xarray(str(store), "v")
    assert whole.attrs["codes_not_done"] == len(NOT_DONE) and np.isnan(whole.eigvals.values[0, NOT_DONE]).all()
