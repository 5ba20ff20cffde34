"""Damage seen by the store: a refused write inside the store becomes a store error naming the file; one
outside it is not the store's. Every command against each kind of damage: tests/jobs/test_store_damage.py."""

from __future__ import annotations

import errno

from cluster.damage import as_store_error
from tests.support.runs import build_run


def test_refused_write_inside_the_store_is_one_line_outside_it_is_not_ours(tmp_path):
    """A read-only store (root cannot be made so by chmod): the conversion itself, both ways."""
    store = tmp_path / "s"
    build_run(store)
    inside = PermissionError(errno.EROFS, "Read-only file system", str(store / "v" / "zarr.json"))
    err = as_store_error(inside, str(store), "v")
    assert err is not None and "read-only" in str(err) and str(store / "v" / "zarr.json") in str(err)
    outside = PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "elsewhere.npy"))
    assert as_store_error(outside, str(store), "v") is None
