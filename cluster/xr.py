"""Labelled access to a run's arrays with xarray, and the consolidated metadata that plain xarray reads.

Example::

    from cluster.xr import open_run_xarray
    ds = open_run_xarray("./gangeo-results", "quickstart", "dcgan-faces/z/mse")
    ds.eigvals.sel(code=0)                   # (eig,) spectrum of the first code
    ds.eigvals.where(ds.done_code).mean("code")

    red = open_run_xarray("./gangeo-results", "quickstart", "dcgan-faces/z/mse", reduced=True)
    red.anisotropy_global.sel(fraction=0.99)
    red.homogeneity_log                      # (code_i, code_j)

    lazy = open_run_xarray("./gangeo-results", "quickstart", "dcgan-faces/z/mse", chunks={})  # dask arrays
    every = open_run_xarray("./gangeo-results", "layers-shuffled", reduced=True)  # all groups, dim "group"

The same without this module: each target group (and its ``reduce/``) carries
consolidated metadata, written at the end of a run and of a reduce, so xarray
opens it as a store of its own in one read::

    import xarray as xr
    ds = xr.open_zarr("./gangeo-results/quickstart/dcgan-faces/z/mse")

Every dimension has a coordinate: ``code``, ``code_i``, ``code_j`` (code index),
``dim``, ``dim2`` (latent coordinate), ``eig`` (eigenvalue rank, from 1, descending),
``chunk`` (chunk index), ``fraction`` (the anisotropy fractions, with ``fraction_percent``
beside them, ``"99.999%"``: xarray prints 0.99999 as 1.0); scalar
coordinates ``model``, ``space``, ``target`` (``layer:<name>`` for a layer) name
the group, and with ``group_key=None`` a ``group`` dimension stacks the run's groups.

Consolidated metadata is a copy of the arrays' metadata: it is written only when a
run or a reduce has finished writing, and a reduce removes it before it rewrites
``reduce/`` (:func:`drop_consolidated`), so a reader never sees a stale copy
(ARCHITECTURE.md, "Store"). This module's own reader ignores it.
"""

from __future__ import annotations

import os

import numpy as np
import zarr

from geometry_core.spectrum import FRACTIONS

from .consolidated import consolidate_group, consolidate_run, drop_consolidated
from .layout import GroupLayout, dim_coordinate
from .storage import StoreError, array_in, group_in

__all__ = ["consolidate_group", "consolidate_run", "drop_consolidated", "open_run_xarray"]


# ---- labelled datasets ----


def _fractions(ds, attrs: dict) -> list[float]:
    from .reduce import ARRAYS  # reduce imports this module

    for name in (a.name for a in ARRAYS.values() if "fraction" in a.dims):
        if name in ds and ds[name].attrs.get("fractions"):
            return [float(f) for f in ds[name].attrs["fractions"]]
    return [float(f) for f in attrs.get("fractions", FRACTIONS)]


def _label(ds, group: zarr.Group, layout: GroupLayout | None):
    """Coordinates on every dimension, and the group's model, space and target as scalar coordinates."""
    attrs = dict(group.attrs)
    coords: dict = {}
    for name, size in ds.sizes.items():
        fr = _fractions(ds, attrs) if name == "fraction" else None
        coords[name] = np.asarray(dim_coordinate(name, size, fr))
        if fr is not None and len(fr) == size:  # xarray prints 0.99999 as 1.0: the exact label beside it
            coords["fraction_percent"] = (name, [f"{100 * f:.10g}%" for f in fr])
    if layout is not None:
        coords.update(model=layout.model, space=layout.space, target=layout.target)
    return ds.assign_coords(coords)


def _only_done(ds, group: zarr.Group, layout: GroupLayout, key: str, chunks):
    """``done_code`` and ``codes_not_done``; per-code variables NaN where the chunk is not done.

    Done state comes from :func:`cluster.integrity.recorded_done` (data are not
    re-verified here: ``gangeo verify`` does). A run whose chunks are all done stays
    as opened; otherwise each per-code variable is rebuilt from its done chunks only
    (an unfinished chunk's bytes, zeros or a torn write, are never decoded): lazily
    with dask when ``chunks`` was given, else read now.
    """
    from .integrity import recorded_done

    done = recorded_done(group, layout, key=key)
    used = layout.codes_done(done)
    ds = ds.assign_coords(done_code=("code", used))
    missing = int(used.size - used.sum())
    if missing:
        for name in [v for v in ds.data_vars if ds[v].dims[:1] == ("code",)]:
            data = _done_rows(array_in(group, name), layout, done, lazy=chunks is not None)
            ds[name] = ds[name].copy(data=data)
        if chunks not in (None, {}):
            ds = ds.chunk(chunks)
    ds.attrs["codes_not_done"] = missing
    return ds


def _done_rows(arr: zarr.Array, layout: GroupLayout, done: np.ndarray, *, lazy: bool):
    """The array with the rows of chunks not done as NaN, read chunk by chunk (a dask array when ``lazy``)."""
    dtype = np.result_type(arr.dtype, np.float32)
    blocks = []
    for c in range(layout.n_chunks):
        span = layout.rows(c)
        shape = (span.stop - span.start,) + tuple(arr.shape[1:])
        if not done[c]:
            blocks.append(np.full(shape, np.nan, dtype=dtype))
        elif lazy:
            import dask
            import dask.array as da

            blocks.append(da.from_delayed(dask.delayed(lambda s=span: np.asarray(arr[s], dtype=dtype))(),
                                          shape=shape, dtype=dtype))
        else:
            blocks.append(np.asarray(arr[span], dtype=dtype))
    if lazy:
        import dask.array as da

        return da.concatenate([da.asarray(b) for b in blocks], axis=0)
    return np.concatenate(blocks, axis=0)


def _open_one(root: zarr.Group, run: str, key: str, reduced: bool, chunks):
    import xarray as xr

    from .integrity import refuse_unsettled

    key = key.strip("/")
    if run in set(root.group_keys()):
        refuse_unsettled(run, dict(root[run].attrs))  # arrays being resized or deleted are not data
    path = f"{run}/{key}"
    try:
        group = root[path]
    except KeyError:
        raise StoreError(f"no group {path!r} in the store (expected <run>/<model>/<space>/<target>)") from None
    if not isinstance(group, zarr.Group):
        raise StoreError(f"{path!r} is an array, expected a group <run>/<model>/<space>/<target>")
    layout = GroupLayout.of(group) if "z" in set(group.array_keys()) else None
    if reduced:
        from .view import require_reduced

        if "reduce" not in set(group.group_keys()):
            raise StoreError(f"group {path!r} has not been reduced (run `gangeo reduce {run}`)")
        require_reduced(path, group)  # an interrupted reduce/ is refused, as query and report refuse it
        path, group = f"{path}/reduce", group_in(group, "reduce")
    # Our own reader ignores consolidated copies: it always reads the arrays' current metadata.
    ds = xr.open_zarr(root.store, group=path, zarr_format=3, consolidated=False, chunks=chunks)
    if reduced and layout is not None:
        ds = _label(ds, group, None).assign_coords(model=layout.model, space=layout.space, target=layout.target)
        return ds
    ds = _label(ds, group, layout)
    return _only_done(ds, group, layout, path, chunks) if layout is not None and "done" in ds else ds


def open_run_xarray(
    url: str | os.PathLike | None,
    run: str,
    group_key: str | None = None,
    *,
    s3_endpoint: str | None = None,
    reduced: bool = False,
    chunks=None,
):
    """The arrays of one ``<model>/<space>/<target>`` group (or of all) as an ``xarray.Dataset``.

    ``group_key`` is the group's path inside the run (e.g. ``"dcgan-faces/z/mse"``);
    None stacks every target group along a ``group`` dimension (coordinate: the
    group's key; ``model``, ``space``, ``target`` along it), groups of other sizes
    padded with NaN. ``reduced=True`` opens ``reduce/`` instead. ``chunks``: None
    (lazy numpy, the default), or dask chunks as xarray takes them (``{}``: the
    store's own chunks, ``"auto"``, or ``{"code": 64}``). The sweep's dataset also
    has ``done_code`` (code,) bool: the code's chunk is done; a code whose chunk is
    not done is NaN in every per-code variable, and ``attrs["codes_not_done"]``
    says how many (summed over groups when stacked). A run being grown or deleted
    is refused (:class:`StoreError`).
    """
    import xarray as xr

    from .storage import open_root

    root = open_root(url, s3_endpoint=s3_endpoint, mode="r", create=False)
    if group_key is not None:
        return _open_one(root, run, group_key, reduced, chunks)
    from .view import find_target_groups, open_run

    view = open_run(root, run)
    keys = [g for g in find_target_groups(view.group)
            if not reduced or "reduce" in set(group_in(view.group, g).group_keys())]
    if not keys:
        raise StoreError(f"run {run!r} has no {'reduced ' if reduced else ''}target group")
    parts = [_open_one(root, run, k, reduced, chunks).expand_dims(group=[k]) for k in keys]
    scalars = ("model", "space", "target")
    parts = [p.assign_coords({s: ("group", [str(p[s].values.ravel()[0])]) for s in scalars}) for p in parts]
    # Which codes are done is a property of each group: it keeps the group dimension even where groups agree.
    parts = [p.assign_coords(done_code=p["done_code"].expand_dims(group=p["group"].values)) if "done_code" in p.coords
             else p for p in parts]
    out = xr.concat(parts, dim="group", join="outer", coords="different", compat="equals",
                    fill_value=np.nan)
    if not reduced:
        out.attrs["codes_not_done"] = sum(int(p.attrs.get("codes_not_done", 0)) for p in parts)
    return out
