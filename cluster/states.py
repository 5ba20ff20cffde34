"""Run states: the ``status`` a driver records on a run, and the state ``gangeo status`` reports.

Example::

    from cluster.states import RunState, Status
    rs.update_attrs("quickstart", status=Status.RUNNING)     # stored as the string "running"
    RunState("interrupted").is_terminal                       # True: nothing changes until `gangeo resume`

Both are ``StrEnum``: a member equals its string, is written to zarr attributes
and JSON as that string, and a stored string converts back with ``Status(s)``.
The reported state combines the recorded status with the run lock and the reduce
records (``cluster.run_state.run_state``): ``running`` is reported as ``computing``
while its driver lives and as ``interrupted`` once it is gone.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["RunState", "Status"]


class Status(StrEnum):
    """The ``status`` attribute of a run, as its driver (or ``gangeo rm``) wrote it last."""

    CREATED = "created"
    RUNNING = "running"      # chunks being computed
    REDUCING = "reducing"    # every chunk done, reducers running
    COMPLETE = "complete"
    PARTIAL = "partial"      # some chunks failed
    DELETING = "deleting"    # written by `gangeo rm` before it deletes any key


class RunState(StrEnum):
    """What a run is doing now (``gangeo status``'s ``status``), like Ray's ``JobStatus``."""

    CREATED = "created"
    COMPUTING = "computing"
    REDUCING = "reducing"
    GROWING = "growing"
    DELETING = "deleting"
    COMPLETE = "complete"
    PARTIAL = "partial"
    INTERRUPTED = "interrupted"

    @property
    def is_terminal(self) -> bool:
        """True when no live driver will change the run: only a new command (resume, reduce, rm) does.

        ``deleting`` is not terminal: an ``rm`` is deleting the run, or one stopped part-way and
        the run is unreadable until ``rm`` finishes it.
        """
        return self in (RunState.COMPLETE, RunState.PARTIAL, RunState.INTERRUPTED)
