"""Consolidated metadata of target groups: written when a run or a reduce ends, dropped before a rewrite.

A target group's ``zarr.json`` (and its ``reduce/``'s) holds a copy of the metadata
below it, so plain ``xr.open_zarr`` reads one file (ARCHITECTURE.md, "Store").
Below both the reducers, which rewrite ``reduce/``, and :mod:`cluster.xr`, which
re-exports these functions.
"""

from __future__ import annotations

import warnings

import zarr

from .storage import group_in, plain_group

__all__ = ["consolidate_group", "consolidate_run", "drop_consolidated"]


def _reopen(group: zarr.Group) -> zarr.Group:
    """The same group read from its own zarr.json, ignoring any consolidated copy it carries."""
    return plain_group(group.store, group.path)


def drop_consolidated(group: zarr.Group) -> zarr.Group:
    """Remove the consolidated metadata of a target group and of its ``reduce/``; return the group reopened.

    Called before anything rewrites the group's array metadata, so a copy never
    outlives what it describes.
    """
    fresh = _reopen(group)
    for g in (fresh, _reopen(group_in(fresh, "reduce")) if "reduce" in set(fresh.group_keys()) else None):
        if g is not None:
            # Opened without its consolidated copy, the group's metadata is rewritten without it.
            g.update_attributes({})
    return _reopen(group)


def consolidate_group(group: zarr.Group) -> None:
    """Write consolidated metadata into a target group's zarr.json and into its ``reduce/``'s.

    Transient store errors (S3 throttling, a dropped connection) are retried as store writes are.
    """
    from .retry import retry_call

    if not group.store.supports_consolidated_metadata:
        return
    paths = [f"{group.path}/reduce"] if "reduce" in set(_reopen(group).group_keys()) else []
    with warnings.catch_warnings():
        # zarr says consolidated metadata is not yet part of the v3 spec; xarray and zarr-python read it.
        warnings.simplefilter("ignore", category=UserWarning)
        for path in [*paths, group.path]:  # reduce/ first: the group's copy then holds reduce/'s own
            retry_call(lambda p=path: zarr.consolidate_metadata(group.store, path=p, zarr_format=3),
                       what=f"consolidated metadata of {path}")


def consolidate_run(root: zarr.Group, run: str) -> int:
    """Consolidate every target group of ``run`` (end of a run); return how many groups."""
    from .view import find_target_groups

    run_group = group_in(root, run)
    keys = find_target_groups(run_group)
    for key in keys:
        consolidate_group(group_in(run_group, key))
    return len(keys)
