"""What a run is doing now, from its attributes, its lock and its groups' reduce records.

Example::

    from cluster.run_state import run_state
    run_state(RunStore("./gangeo-results", mode="r", create=False), "quickstart")
    # {"state": "interrupted", "detail": "driver gone during reduce (host h, pid 123)"}

States (ARCHITECTURE.md, "Store"): ``created``, ``computing`` (a live driver computes
chunks), ``reducing`` (a live driver reduces), ``complete`` (every chunk done and every
enabled reduce wrote its completion record), ``partial`` (chunks failed), and
``interrupted`` (the driver is dead, or a reduce never wrote its record).
"""

from __future__ import annotations

import time

from .lock import LOCK_GROUP, is_stale, lock_info
from .view import reduce_state

__all__ = ["run_state"]

_LIVE = {"running": "computing", "reducing": "reducing"}


def _driver(rs, run: str) -> dict | None:
    """The live driver's lock record, or None when none holds the run (read-only: nothing is created)."""
    if LOCK_GROUP not in set(rs.root.group_keys()):
        return None
    info = lock_info(rs.url, run, s3_endpoint=rs.s3_endpoint)
    return None if info is None or is_stale(info, time.time()) else info


def _reducers_on(attrs: dict) -> bool:
    spec = attrs.get("spec") if isinstance(attrs.get("spec"), dict) else {}
    flags = spec.get("reducers")
    return not isinstance(flags, dict) or any(bool(v) for v in flags.values())


def _unfinished_reduce(rs, run: str, attrs: dict) -> list[str]:
    """Groups whose reduce started and never wrote its record (or, reducers enabled, never ran)."""
    out = []
    for key in attrs.get("groups", []):
        state = reduce_state(rs.group(run, key))
        if state == "unfinished" or (state is None and _reducers_on(attrs)):
            out.append(key)
    return out


def run_state(rs, run: str) -> dict:
    """``{"state": ..., "detail": ...}`` of run ``run`` in the open :class:`~cluster.store.RunStore` ``rs``."""
    attrs = rs.attrs(run)
    stored = attrs.get("status")
    if stored in _LIVE:
        info = _driver(rs, run)
        if info is not None:
            return {"state": _LIVE[stored], "detail": f"driver on host {info.get('host')}, pid {info.get('pid')}"}
        if stored == "reducing" and not _unfinished_reduce(rs, run, attrs):
            return {"state": "complete", "detail": "reduced after the driver stopped"}
        what = "computing chunks" if stored == "running" else "reducing"
        return {"state": "interrupted", "detail": f"the driver stopped while {what}; run `gangeo resume`"}
    if stored == "complete":
        pending = _unfinished_reduce(rs, run, attrs)
        if pending:
            return {"state": "interrupted", "detail": f"reduce unfinished for {', '.join(pending)}; "
                                                      "run `gangeo resume` or `gangeo reduce`"}
    return {"state": stored, "detail": None}
