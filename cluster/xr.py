"""Labelled access to a run's arrays with xarray (dims ``code``, ``dim``, ``eig``).

Example::

    from cluster.xr import open_run_xarray
    ds = open_run_xarray("./gangeo-results", "quickstart", "dcgan-faces/z/mse")
    ds.eigvals.isel(code=0)                 # (eig,) spectrum of the first code
    ds.eigvals.where(ds.done_code).mean("code")

    red = open_run_xarray("./gangeo-results", "quickstart", "dcgan-faces/z/mse", reduced=True)
    red.homogeneity_log                      # (code_i, code_j)

The same without this module (a local store)::

    import xarray as xr
    ds = xr.open_zarr("./gangeo-results", group="quickstart/dcgan-faces/z/mse",
                      zarr_format=3, consolidated=False)

The store's arrays carry Zarr v3 ``dimension_names``, which xarray reads as dims:
``z (code, dim)``, ``eigvals (code, eig)``, ``eigvecs (code, dim, eig)``,
``hessian (code, dim, dim2)``, ``done (chunk,)``.
"""

from __future__ import annotations

import os

import numpy as np

from .layout import GroupLayout
from .storage import StoreError

__all__ = ["open_run_xarray"]


def open_run_xarray(
    url: str | os.PathLike | None,
    run: str,
    group_key: str,
    *,
    s3_endpoint: str | None = None,
    reduced: bool = False,
):
    """The arrays of one ``<model>/<space>/<target>`` group as an ``xarray.Dataset`` (lazy, dask-free).

    ``group_key`` is the group's path inside the run (e.g. ``"dcgan-faces/z/mse"``).
    ``reduced=True`` opens its ``reduce/`` subgroup instead. The sweep's dataset gains
    coordinates ``code`` and ``eig`` (integers, ``eig`` counted from 1 in descending
    eigenvalue order) and ``done_code`` (code,) bool: the code's chunk is done.
    """
    import xarray as xr
    import zarr

    from .storage import open_root

    root = open_root(url, s3_endpoint=s3_endpoint, mode="r", create=False)
    path = f"{run}/{group_key.strip('/')}" + ("/reduce" if reduced else "")
    try:
        group = root[path]
    except KeyError:
        raise StoreError(f"no group {path!r} in the store (expected <run>/<model>/<space>/<target>)") from None
    if not isinstance(group, zarr.Group):
        raise StoreError(f"{path!r} is an array, expected a group <run>/<model>/<space>/<target>")
    ds = xr.open_zarr(root.store, group=path, zarr_format=3, consolidated=False, chunks=None)
    if reduced or "done" not in ds or "z" not in ds:
        return ds
    n = ds.sizes["code"]
    done = GroupLayout.of(group).codes_done(ds["done"].values)
    coords = {"code": np.arange(n), "done_code": ("code", done)}
    if "eig" in ds.dims:
        coords["eig"] = np.arange(1, ds.sizes["eig"] + 1)
    return ds.assign_coords(coords)
