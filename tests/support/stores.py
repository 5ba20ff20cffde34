"""Target groups written straight into Zarr, in float64, for reducer, report and xarray tests.

Example::

    g = write_group(root, "quick/dcgan-faces/z/mse", {"z": z, "eigvals": l, "eigvecs": V},
                    chunk_size=4, done=[1, 0, 1])

The layout is the store's (:mod:`cluster.layout`: array names, their dimension
names, one ``done`` entry per chunk); float64 keeps comparisons with in-memory
results tight, which the product's float32 arrays would not.
"""

from __future__ import annotations

import numpy as np
import zarr

from cluster.layout import ARRAYS

__all__ = ["write_group"]


def write_group(root: zarr.Group, path: str, arrays: dict, *, chunk_size: int, done=None,
                attrs: dict | None = None) -> zarr.Group:
    """Write arrays (numpy or torch, names from ``ARRAYS``) and ``done`` (default: every chunk) at ``path``."""
    g = root.require_group(path)
    g.attrs.update(attrs or {})
    for name, x in arrays.items():
        x = np.asarray(x)
        g.create_array(name, shape=x.shape, chunks=(chunk_size, *x.shape[1:]), dtype="float64", fill_value=0.0,
                       dimension_names=ARRAYS[name], overwrite=True)[:] = x
    n_chunks = -(-np.asarray(arrays["z"]).shape[0] // chunk_size)
    flags = np.ones(n_chunks, dtype=np.uint8) if done is None else np.asarray(done, dtype=np.uint8)
    g.create_array("done", shape=(n_chunks,), chunks=(1,), dtype="uint8", fill_value=0,
                   dimension_names=("chunk",), overwrite=True)[:] = flags
    return g
