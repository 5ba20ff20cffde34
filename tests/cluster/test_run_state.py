"""What a run is doing now (``cluster.run_state``): a state of the ``RunState`` enum, terminal or not,
read from the recorded status and whether the run's lock has a live driver. What ``gangeo status`` and the
readers make of an interrupted reduce: tests/jobs/test_run_state.py."""

from __future__ import annotations

from cluster.lock import RunLock
from cluster.run_state import run_state
from cluster.states import RunState, Status
from cluster.store import RunStore
from tests.support.runs import build_run

ON = {"global": True, "homogeneity": True, "anisotropy": True}


def test_run_state_is_an_enum_with_is_terminal(tmp_path):
    store = tmp_path / "s"
    rs = build_run(store)
    rs.update_attrs("v", spec={**rs.attrs("v")["spec"], "reducers": ON})  # reduce is part of the state
    rs.update_attrs("v", status=Status.RUNNING)
    with RunLock(str(store), "v"):
        live = run_state(rs, "v")["state"]
    dead = run_state(rs, "v")["state"]
    assert (live, dead) == (RunState.COMPUTING, RunState.INTERRUPTED)
    assert isinstance(live, RunState) and not live.is_terminal and dead.is_terminal
    assert RunStore(str(store), mode="r", create=False).attrs("v")["status"] == "running"  # stored as the string
    assert [s for s in RunState if s.is_terminal] == [RunState.COMPLETE, RunState.PARTIAL, RunState.INTERRUPTED]
    rs.update_attrs("v", status="archived")  # a status written by a newer version: reported as it is
    assert run_state(rs, "v")["state"] == "archived"
