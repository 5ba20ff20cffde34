"""xarray reads a run's arrays with labelled dims (code, dim, eig) and the stored values.

The group is written with zarr directly, in the store's layout (tests/support/stores.py) (N=6, D=4,
chunks of 2, one chunk not done); values compare exactly (same bytes read back). A second
group (a layer of the same model) lets a run be opened whole, stacked along ``group``.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import xarray as xr
import zarr

from cluster.reduce import reduce_group
from cluster.storage import StoreError
from cluster.xr import open_run_xarray
from geometry_core.spectrum import FRACTIONS
from tests.support.stores import write_group

N, D, C = 6, 4, 2
RUN, KEY = "quick", "dcgan-faces/z/mse"
LAYER = "dcgan-faces/z/layer-main.2"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("store")
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((N, D, D)))
    lam = np.sort(rng.random((N, D)) + 0.1, axis=1)[:, ::-1].copy()
    arrays = {"z": rng.standard_normal((N, D)), "eigvals": lam, "eigvecs": q,
              "hessian": np.einsum("nik,nk,njk->nij", q, lam, q)}
    root = zarr.open_group(str(path), mode="a", zarr_format=3)
    for key, target in ((KEY, "mse"), (LAYER, "layer:main.2")):
        g = write_group(root, f"{RUN}/{key}", arrays, chunk_size=C, done=[1, 0, 1],
                        attrs={"model": "dcgan-faces", "space": "z", "target": target})
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


def test_unreduced_or_interrupted_reduce_is_refused(tmp_path):
    rng = np.random.default_rng(3)
    root = zarr.open_group(str(tmp_path), mode="a", zarr_format=3)
    g = write_group(root, f"{RUN}/{KEY}", {"z": rng.standard_normal((N, D)), "eigvals": rng.random((N, D))},
                    chunk_size=C)
    with pytest.raises(StoreError, match="has not been reduced"):
        open_run_xarray(tmp_path, RUN, KEY, reduced=True)
    g.require_group("reduce").attrs.update({"state": "reducing"})
    with pytest.raises(StoreError, match="unfinished"):
        open_run_xarray(tmp_path, RUN, KEY, reduced=True)


# ---- issue 11: coordinates, dask, consolidated metadata ----


def test_every_dimension_has_a_coordinate(store):
    path, arrays = store
    ds = open_run_xarray(path, RUN, KEY)
    red = open_run_xarray(path, RUN, KEY, reduced=True)
    for d in (ds, red):
        assert set(d.dims) <= set(d.indexes), f"dims without a coordinate: {set(d.dims) - set(d.indexes)}"
        assert (str(d["model"].values), str(d["space"].values), str(d["target"].values)) == ("dcgan-faces", "z", "mse")
    np.testing.assert_array_equal(ds["dim"].values, np.arange(D))
    np.testing.assert_array_equal(ds["chunk"].values, np.arange(N // C))
    np.testing.assert_array_equal(red["code_i"].values, np.arange(N))
    np.testing.assert_array_equal(red["eig"].values, np.arange(1, D + 1))
    np.testing.assert_allclose(red["fraction"].values, FRACTIONS, rtol=0)
    g = zarr.open_group(str(path), mode="r", zarr_format=3)[f"{RUN}/{KEY}/reduce"]
    # Labels select: the anisotropy of the global metric at 99%, per code at 99.9%, the top global eigenvalue.
    assert int(red.anisotropy_global.sel(fraction=0.99)) == g["anisotropy_global"][0]
    # Exact labels beside the float coordinate, which xarray's repr rounds (0.99999 shows as 1.0).
    assert red.fraction_percent.values.tolist() == ["99%", "99.9%", "99.99%", "99.999%"]
    assert "'99.999%'" in repr(red) and float(red.fraction.sel(fraction=0.99999)) == 0.99999
    np.testing.assert_array_equal(red.anisotropy_points.sel(fraction=0.999).values, g["anisotropy_points"][:, 1])
    assert float(red.global_eigvals.sel(eig=1)) == g["global_eigvals"][0]
    np.testing.assert_array_equal(ds.z.sel(code=4, dim=2).values, arrays["z"][4, 2])  # a done code


def test_chunks_give_dask_arrays(store):
    import dask.array as dask_array  # a dependency (pyproject.toml): no skip when it is missing
    path, arrays = store
    ds = open_run_xarray(path, RUN, KEY, chunks={})
    assert isinstance(ds.eigvecs.data, dask_array.Array)
    assert ds.eigvecs.chunks == ((C,) * (N // C), (D,), (D,))  # the store's own chunks
    # Summed chunk by chunk: the order of additions differs from numpy's, hence 1e-14. The chunk
    # that is not done is NaN (still lazy), so the mean is over the four done codes.
    np.testing.assert_allclose(ds.eigvecs.mean("code").compute().values, arrays["eigvecs"][[0, 1, 4, 5]].mean(0),
                               rtol=1e-14)
    red = open_run_xarray(path, RUN, KEY, reduced=True, chunks={"code_i": 3})
    assert isinstance(red.homogeneity_log.data, dask_array.Array) and red.homogeneity_log.chunks[0] == (3, 3)
    assert not isinstance(open_run_xarray(path, RUN, KEY).eigvals.variable._data, dask_array.Array)


def test_a_whole_run_stacks_its_groups(store):
    path, _ = store
    red = open_run_xarray(path, RUN, reduced=True)
    assert list(red["group"].values) == [LAYER, KEY]
    assert list(red["target"].values) == ["layer:main.2", "mse"]
    assert red.anisotropy_global.dims == ("group", "fraction")
    one = open_run_xarray(path, RUN, KEY, reduced=True)
    np.testing.assert_array_equal(red.homogeneity_log.sel(group=KEY).values, one.homogeneity_log.values)
    ds = open_run_xarray(path, RUN)
    assert ds.eigvals.dims == ("group", "code", "eig") and ds.done_code.dims == ("group", "code")


@pytest.mark.parametrize("sub", ["", "/reduce"])
def test_plain_open_zarr_reads_consolidated_metadata(store, sub):
    """The end of a reduce consolidates: xarray's default open needs no option and warns of nothing."""
    path, arrays = store
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(f"{path}/{RUN}/{KEY}{sub}")
    raw = zarr.open_group(f"{path}/{RUN}/{KEY}{sub}", mode="r", zarr_format=3, use_consolidated=True)
    assert raw.metadata.consolidated_metadata is not None
    if sub:
        np.testing.assert_array_equal(ds["homogeneity_log"].values, raw["homogeneity_log"][:])
    else:
        np.testing.assert_array_equal(ds["eigvals"].values, arrays["eigvals"])
        assert {"z", "eigvals", "done", "reduce"} <= set(raw.metadata.consolidated_metadata.metadata)


def test_consolidated_copy_never_outlives_a_reduce(tmp_path, monkeypatch):
    """A second reduce rewrites reduce/ (other tiles): the copy follows; an interrupted one leaves none."""
    import cluster.reduce as reduce_mod
    from cluster.view import reduce_state

    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.standard_normal((N, D, D)))
    lam = np.sort(rng.random((N, D)) + 0.1, axis=1)[:, ::-1].copy()
    root = zarr.open_group(str(tmp_path), mode="a", zarr_format=3)
    g = write_group(root, f"{RUN}/{KEY}", {"z": rng.standard_normal((N, D)), "eigvals": lam, "eigvecs": q},
                    chunk_size=C)
    reduce_group(g, tile=3, use_ray=False)
    reduce_group(root[f"{RUN}/{KEY}"], tile=2, use_ray=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        red = xr.open_zarr(f"{tmp_path}/{RUN}/{KEY}/reduce")
    assert red["homogeneity_log"].encoding["chunks"] == (2, 2)

    def killed(*a, **k):
        raise KeyboardInterrupt

    table = reduce_mod.REDUCER_TABLE
    monkeypatch.setitem(table, "homogeneity", dataclasses.replace(table["homogeneity"], compute=killed))
    with pytest.raises(KeyboardInterrupt):
        reduce_group(zarr.open_group(str(tmp_path), mode="r+", zarr_format=3)[f"{RUN}/{KEY}"], use_ray=False)
    # Read as every command reads it (through the root): unfinished, not the old copy's "complete".
    fresh = zarr.open_group(str(tmp_path), mode="r", zarr_format=3)[f"{RUN}/{KEY}"]
    assert reduce_state(fresh) == "unfinished"
    assert fresh.metadata.consolidated_metadata is None


def test_consolidated_on_s3(s3_server):
    """The same on S3: one read of the group's zarr.json gives xarray every array's metadata."""
    from cluster.storage import open_root

    url = s3_server.new_bucket("xr") + "/runs"
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.standard_normal((N, D, D)))
    lam = np.sort(rng.random((N, D)) + 0.1, axis=1)[:, ::-1].copy()
    g = write_group(open_root(url), f"{RUN}/{KEY}", {"z": rng.standard_normal((N, D)), "eigvals": lam,
                                                     "eigvecs": q}, chunk_size=C)
    reduce_group(g, reducers=("global", "anisotropy"), use_ray=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        red = xr.open_zarr(f"{url}/{RUN}/{KEY}/reduce", storage_options={"endpoint_url": s3_server.endpoint})
    assert red.anisotropy_global.dims == ("fraction",)
    red = open_run_xarray(url, RUN, KEY, reduced=True, s3_endpoint=s3_server.endpoint)
    np.testing.assert_array_equal(red.global_eigvals.values, g["reduce/global_eigvals"][:])


def test_end_of_run_consolidates(ray_local, tmp_path):
    """A run without reducers: the driver consolidates each group as the run ends."""
    from cluster.driver import run_sweep
    from cluster.spec import parse_spec
    from tests.support.runs import tanh_spec

    summary = run_sweep(parse_spec(tanh_spec("c", n=4, resources={"workers": 1})), store=str(tmp_path),
                        progress=False)
    assert summary["status"] == "complete"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(f"{tmp_path}/c/module/z/mse")
    assert ds.eigvals.shape == (4, 12)
