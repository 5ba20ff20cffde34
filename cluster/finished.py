"""A run already finished with the same identity: its summary from the store, without Ray.

Example::

    from cluster.finished import finished_summary
    finished_summary(spec, s3_endpoint=None)
    # None, or {"run": "quickstart", "status": "complete", "computed": 0, "nothing_to_do": True, ...}

``gangeo run SPEC`` / ``resume`` on such a run answer from here in the time it takes to
read the store (:func:`cluster.driver.run_sweep` asks before Ray starts): no worker
starts, no model loads, no reducer runs again, nothing is written. "Finished" is
strict, so any doubt falls back to the full path, which repairs or refuses:

- the stored identity equals the spec's, weights files' sha256 included (a differing
  spec or file is refused here, one line, as the full path would after Ray starts);
- the run's state is ``complete`` (:func:`cluster.run_state.run_state`: no live
  driver, every enabled reduce wrote its record), every chunk is ``done`` and its
  data match their checksums (:func:`cluster.integrity.damaged_chunks`, the check the
  full path makes before it skips a chunk);
- each group's ``reduce/`` record covers every reducer the spec enables, over every chunk.

The summary has the full path's keys (``computed`` 0, every chunk ``skipped``, no
workers) and ``reduce`` is each group's stored reduce summary, the one the reducers
returned when they wrote it; ``nothing_to_do`` says why nothing ran.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, cast

from geometry_core.errors import GangeoError

from .growth import plan_growth
from .integrity import damaged_chunks, reduced_summary
from .layout import GroupLayout
from .run_state import run_state
from .states import RunState, Status
from .storage import StoreError, StoreURL, array_in, parse_store_url
from .store import RunStore, check_identity

if TYPE_CHECKING:
    import numpy as np

__all__ = ["finished_summary"]


def _open(spec, s3_endpoint: str | None, loc: StoreURL) -> RunStore | None:
    if loc.kind == "local" and not os.path.isdir(loc.path):
        return None
    try:
        rs = RunStore(loc, s3_endpoint=s3_endpoint, mode="r", create=False)
    except StoreError:
        return None
    return rs if rs.has_run(spec.name) else None


def _same_identity(rs: RunStore, spec, attrs: dict) -> bool:
    """True when the run was made from this spec and these weights files; a different one is refused."""
    from .weights_identity import weights_digests

    try:
        weights = weights_digests(spec)
    except GangeoError:  # e.g. a catalogue file not in the cache: the full path says so
        return False
    stored = attrs.get("identity")
    if not isinstance(stored, dict) or not isinstance(stored.get("weights"), dict):
        return False  # made before weights were hashed: the full path records them
    # RunExistsError when they differ; True would mean hashes to record, which the full path does.
    return not check_identity(spec.name, rs.url, stored, {**spec.identity(), "weights": weights})


def finished_summary(spec, s3_endpoint: str | None = None, *, loc: StoreURL | None = None) -> dict | None:
    """The run summary of ``spec``'s run when it is finished with the same identity, else None.

    ``loc``: the store location already parsed from ``spec.store`` (the driver's).

    Raises :class:`~cluster.store.RunExistsError` when the stored run's spec or weights
    files differ from ``spec``'s (before any Ray start).
    """
    t0, started = time.perf_counter(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    rs = _open(spec, s3_endpoint, parse_store_url(spec.store if loc is None else loc))
    if rs is None:
        return None
    attrs = rs.attrs(spec.name)
    if attrs.get("status") != Status.COMPLETE or plan_growth(spec.name, rs.url, attrs, spec) is not None:
        return None  # unfinished, or the spec asks more codes (any other difference raises)
    if not _same_identity(rs, spec, attrs):
        return None
    if run_state(rs, spec.name)["state"] != RunState.COMPLETE:
        return None
    chosen = tuple(k for k, on in spec.reducers.items() if on)
    keys, reduced, chunks = list(attrs.get("groups") or []), {}, 0
    if not keys:
        return None
    for key in keys:
        g = rs.group(spec.name, key)
        lay = GroupLayout.of(g)
        done = cast("np.ndarray", array_in(g, "done")[:]) == 1  # a 1-d array read whole
        if not done.all() or damaged_chunks(g, lay, done):
            return None
        if chosen:
            reduced[key] = reduced_summary(g, chosen)
            if reduced[key] is None:
                return None
        chunks += lay.n_chunks
    return {"run": spec.name, "store": rs.url, "status": "complete", "chunks": chunks, "skipped": chunks,
            "computed": 0, "failed": [], "workers": 0, "workers_replaced": 0, "store_retries": rs.retry.retries,
            "lock_taken_over": False, "groups": keys, "started": started,
            "seconds": round(time.perf_counter() - t0, 3), "chunks_computed": 0, "points": 0,
            "points_per_second": None, "worker_info": [], "reduce_nodes": {}, "reduce": reduced if chosen else None,
            "nothing_to_do": f"run {spec.name!r} is complete and reduced with this spec; nothing was recomputed"}
