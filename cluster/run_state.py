"""What a run is doing now, from its attributes, its lock and its groups' reduce records.

Example::

    from cluster.run_state import run_state
    run_state(RunStore("./gangeo-results", mode="r", create=False), "quickstart")
    # {"state": "interrupted", "detail": "driver gone during reduce (host h, pid 123)"}

States (``cluster.states.RunState``; ARCHITECTURE.md, "Store"): ``created``, ``computing`` (a live driver computes
chunks), ``reducing`` (a live driver reduces), ``complete`` (every chunk done and every
enabled reduce wrote its completion record), ``partial`` (chunks failed),
``growing`` (a live driver resizes the run's arrays to more codes), ``deleting`` (``gangeo
rm`` is deleting it, or stopped part-way: ``rm`` again finishes), and ``interrupted`` (the
driver is dead, a reduce never wrote its record, or a growth stopped between resizes).

Each time a driver runs or resumes a run it appends an attempt to the run's
``history`` (started, finished, seconds, points, chunks computed/skipped/failed,
status); ``timing`` holds the figures summed over every attempt::

    timing_report(rs.attrs("quickstart"))
    # {"cumulative": {"attempts": 2, "seconds": 41.2, "points": 64, ...}, "attempts": [{...}, {...}]}
"""

from __future__ import annotations

import time

from .integrity import growth_in_progress, reduce_state
from .lock import LOCK_GROUP, is_stale, lock_info
from .reduce import enabled_reducers
from .states import RunState, Status

__all__ = ["attempt_attrs", "live_driver", "run_state", "timing_report"]

_LIVE = {Status.RUNNING: RunState.COMPUTING, Status.REDUCING: RunState.REDUCING}


def live_driver(rs, run: str) -> dict | None:
    """The live driver's lock record, or None when none holds the run (read-only: nothing is created)."""
    if LOCK_GROUP not in set(rs.root.group_keys()):
        return None
    info = lock_info(rs.location, run, s3_endpoint=rs.s3_endpoint)
    return None if info is None or is_stale(info, time.time()) else info


def _unfinished_reduce(rs, run: str, attrs: dict) -> list[str]:
    """Groups whose reduce started and never wrote its record (or, reducers enabled, never ran)."""
    out = []
    for key in attrs.get("groups", []):
        state = reduce_state(rs.group(run, key))
        if state == "unfinished" or (state is None and enabled_reducers(attrs)):
            out.append(key)
    return out


def _state(state: RunState, detail: str | None = None) -> dict:
    return {"state": state, "detail": detail}


def run_state(rs, run: str) -> dict:
    """``{"state": RunState, "detail": str | None}`` of run ``run`` in the open :class:`~cluster.store.RunStore` ``rs``.

    A status this version does not know (a newer writer's) is reported as it is, a plain string.
    """
    attrs = rs.attrs(run)
    stored = attrs.get("status")
    if stored == Status.DELETING:
        info = live_driver(rs, run)
        if info is not None:
            return _state(RunState.DELETING, f"`gangeo rm` on host {info.get('host')}, pid {info.get('pid')}")
        return _state(RunState.DELETING, f"partially deleted: a `gangeo rm` stopped part-way; run `gangeo rm "
                                         f"{run} --yes` to finish deleting it")
    grow = growth_in_progress(attrs)
    if grow is not None:
        what = f"from {grow.get('from')} to {grow.get('to')} codes"
        info = live_driver(rs, run)
        if info is not None:
            return _state(RunState.GROWING, f"{what}; driver on host {info.get('host')}, pid {info.get('pid')}")
        return _state(RunState.INTERRUPTED, f"growth {what} stopped between array resizes; "
                                            f"run `gangeo resume {run}` to finish it")
    if stored in _LIVE:
        info = live_driver(rs, run)
        if info is not None:
            return _state(_LIVE[Status(stored)], f"driver on host {info.get('host')}, pid {info.get('pid')}")
        if stored == Status.REDUCING and not _unfinished_reduce(rs, run, attrs):
            return _state(RunState.COMPLETE, "reduced after the driver stopped")
        what = "computing chunks" if stored == Status.RUNNING else "reducing"
        return _state(RunState.INTERRUPTED, f"the driver stopped while {what}; run `gangeo resume`")
    if stored == Status.COMPLETE:
        pending = _unfinished_reduce(rs, run, attrs)
        if pending:
            return _state(RunState.INTERRUPTED, f"reduce unfinished for {', '.join(pending)}; "
                                                "run `gangeo resume` or `gangeo reduce`")
    known = stored in RunState.__members__.values()
    return _state(RunState(stored) if known else stored)


# -- timing and history ----------------------------------------------------------
_SUMMED = ("seconds", "points", "chunks_computed", "chunks_failed")


def _history(attrs: dict) -> list[dict]:
    """The attempts recorded so far; a run from before histories counts its one ``timing`` as one attempt."""
    hist = attrs.get("history")
    if isinstance(hist, list):
        return [dict(a) for a in hist if isinstance(a, dict)]
    old = attrs.get("timing")
    if isinstance(old, dict) and old:
        return [{"started": old.get("started"), "seconds": old.get("seconds"), "points": old.get("points"),
                 "chunks_computed": old.get("chunks_computed"), "status": attrs.get("status")}]
    return []


def _cumulative(history: list[dict]) -> dict:
    """Figures summed over every attempt; points per second over the attempts' compute time."""
    out: dict = {"attempts": len(history)}
    for k in _SUMMED:
        out[k] = sum(a.get(k) or 0 for a in history)
    out["seconds"] = round(out["seconds"], 3)
    out["points_per_second"] = round(out["points"] / out["seconds"], 3) if out["seconds"] > 0 else None
    out["first_started"] = history[0].get("started") if history else None
    out["last_finished"] = history[-1].get("finished") if history else None
    return out


def attempt_attrs(attrs: dict, attempt: dict, *, replace_last: bool = False) -> dict:
    """The ``history`` and cumulative ``timing`` attributes once ``attempt`` is recorded.

    ``replace_last``: ``attempt`` finishes the one its driver recorded when it started.
    """
    history = _history(attrs)
    if replace_last and history:
        history[-1] = {**history[-1], **attempt}
    else:
        history.append(dict(attempt))
    return {"history": history, "timing": _cumulative(history)}


def timing_report(attrs: dict) -> dict:
    """``{"cumulative": ..., "attempts": [...]}`` of a run's attributes, for ``status`` and the report."""
    history = _history(attrs)
    return {"cumulative": _cumulative(history), "attempts": history}
