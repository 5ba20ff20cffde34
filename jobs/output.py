"""What every ``gangeo`` command prints on stdout: strict JSON and tables with a header row.

Example::

    from jobs.output import print_json, print_table
    print_json({"mean": float("nan"), "eigvals": np.ones(3)})   # {"mean": null, "eigvals": [1.0, 1.0, 1.0]}
    print_table(["code", "eig1"], [[0, 0.5], [1, 0.25]])
    print_array_table(group["eigvals"], group["eigvals"][2:4], slice(2, 4))   # code, eig1, eig2, ...

JSON is RFC 8259 JSON, which has no NaN or infinity: a non-finite number is
written ``null`` (a strict parser, ``json.loads(text, parse_constant=...)`` that
refuses ``NaN``, reads every output). numpy scalars and arrays become numbers and
lists; anything else without a JSON form (a path, a date) becomes its ``str``.

Tables label a dimension as xarray does: eigenvalue ranks (``eig``) from 1, as the
report and ``axes`` number eigenvectors; fractions by their exact value
(``fraction=0.99999``); codes and other positions from 0, as ``--index`` takes them.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from cluster.json_safe import json_safe
from cluster.layout import dim_coordinate
from geometry_core.errors import UsageError

__all__ = ["dumps_json", "json_safe", "print_array_table", "print_json", "print_table"]


def dumps_json(obj, *, indent: int | None = 2) -> str:
    """Strict JSON text of ``obj`` (see :func:`json_safe`); ``indent=None``: one line."""
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False)


def print_json(obj, *, indent: int | None = 2, flush: bool = False) -> None:
    """Print ``obj`` as strict JSON on stdout: the one JSON printer of the command line."""
    sys.stdout.write(dumps_json(obj, indent=indent) + "\n")
    if flush:
        sys.stdout.flush()


def print_table(header: list[str], rows) -> None:
    """Tab-separated rows under a header row; floats with 9 significant digits, NaN as ``nan``."""
    def cell(v) -> str:
        return f"{v:.9g}" if isinstance(v, (float, np.floating)) else str(v)

    sys.stdout.write("\t".join(header) + "\n")
    for row in rows:
        sys.stdout.write("\t".join(cell(v) for v in row) + "\n")


def print_array_table(arr, data: np.ndarray, index) -> None:
    """``data`` (``arr[index]``, ``arr`` a Zarr array) as a table: a header row naming the dimensions
    (the array's ``dimension_names``), then one row per entry of the first, labelled with its index."""
    dims = [d or f"axis{i}" for i, d in enumerate(getattr(arr.metadata, "dimension_names", None) or
                                                  [None] * arr.ndim)]
    if arr.ndim == 0:
        return print_table([arr.basename], [[data.item()]])
    fractions = arr.attrs.get("fractions")
    coords = [dim_coordinate(d, n, fractions if d == "fraction" else None) for d, n in zip(dims, arr.shape)]
    if isinstance(index, int) and data.ndim <= 1:  # one entry of the first dimension: one row
        data, labels = data[None], [coords[0][index]]
    elif isinstance(index, int):
        dims, coords, labels = dims[1:], coords[1:], coords[1]
    else:
        labels = coords[0][index if index is not None else slice(None)]
    if data.ndim > 2:
        raise UsageError(f"--format table shows at most 2 dimensions, got shape {data.shape}; "
                         "use --index or --format npy")
    header = [dims[0]] + ([_column(dims[1], c) for c in coords[1]] if data.ndim == 2 else [arr.basename])
    print_table(header, ([lab, *np.atleast_1d(row).tolist()] for lab, row in zip(labels, data)))


def _column(dim: str, label) -> str:
    return f"{dim}={label!r}" if isinstance(label, float) else f"{dim}{label}"
