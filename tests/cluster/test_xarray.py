"""xarray reads a run's arrays with labelled dims (code, dim, eig) and the stored values.

The group is written with zarr directly, in the store's layout (tests/support/stores.py) (N=6, D=4,
chunks of 2, one chunk not done); values compare exactly (same bytes read back).
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import zarr

from cluster.reduce import reduce_group
from cluster.xr import open_run_xarray
from cluster.storage import StoreError
from tests.support.stores import write_group

N, D, C = 6, 4, 2
RUN, KEY = "quick", "dcgan-faces/z/mse"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("store")
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((N, D, D)))
    lam = np.sort(rng.random((N, D)) + 0.1, axis=1)[:, ::-1].copy()
    arrays = {"z": rng.standard_normal((N, D)), "eigvals": lam, "eigvecs": q,
              "hessian": np.einsum("nik,nk,njk->nij", q, lam, q)}
    g = write_group(zarr.open_group(str(path), mode="a", zarr_format=3), f"{RUN}/{KEY}", arrays, chunk_size=C,
                    done=[1, 0, 1])
    reduce_group(g, tile=3, use_ray=False)
    return path, arrays


def test_open_zarr_gives_labelled_arrays(store):
    path, arrays = store
    ds = xr.open_zarr(str(path), group=f"{RUN}/{KEY}", zarr_format=3, consolidated=False)
    assert ds["z"].dims == ("code", "dim")
    assert ds["eigvals"].dims == ("code", "eig")
    assert ds["eigvecs"].dims == ("code", "dim", "eig")
    assert ds["hessian"].dims == ("code", "dim", "dim2")
    assert ds["done"].dims == ("chunk",)
    assert dict(ds.sizes) == {"code": N, "dim": D, "eig": D, "dim2": D, "chunk": N // C}
    for name, x in arrays.items():
        np.testing.assert_array_equal(ds[name].values, x)
    # Labels select: the k-th eigenvalue of code i is eigvals[i, k].
    assert float(ds["eigvals"].isel(code=3, eig=1)) == arrays["eigvals"][3, 1]


def test_open_run_xarray_adds_coords_and_done_mask(store):
    path, arrays = store
    ds = open_run_xarray(path, RUN, KEY)
    np.testing.assert_array_equal(ds["code"].values, np.arange(N))
    np.testing.assert_array_equal(ds["eig"].values, np.arange(1, D + 1))
    np.testing.assert_array_equal(ds["done_code"].values, [True, True, False, False, True, True])
    mean = ds["eigvals"].where(ds["done_code"]).mean("code")
    np.testing.assert_allclose(mean.values, arrays["eigvals"][[0, 1, 4, 5]].mean(0), rtol=1e-14)
    np.testing.assert_array_equal(ds["eigvals"].sel(code=4, eig=1).values, arrays["eigvals"][4, 0])


def test_reduced_group(store):
    path, _ = store
    red = open_run_xarray(path, RUN, KEY, reduced=True)
    assert red["homogeneity_log"].dims == ("code_i", "code_j")
    assert red["global_eigvecs"].dims == ("dim", "eig")
    assert red["anisotropy_points"].dims == ("code", "fraction")
    g = zarr.open_group(str(path), mode="r", zarr_format=3)[f"{RUN}/{KEY}/reduce"]
    np.testing.assert_array_equal(red["homogeneity_lin"].values, g["homogeneity_lin"][:])


def test_missing_group_is_one_clear_error(store):
    path, _ = store
    with pytest.raises(StoreError, match="no group 'quick/nope/z/mse'"):
        open_run_xarray(path, RUN, "nope/z/mse")
