"""Issue 13, finding 6: an interrupted reduce never looks finished, through the commands.

Reduce writes a completion record last per group; ``status`` tells ``computing``,
``reducing``, ``complete`` and ``interrupted`` (driver dead) apart; ``query`` and
``report`` of an unfinished reduce fail in one line; ``resume`` redoes it.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import zarr

import cluster.reduce as reduce_mod
from cluster.lock import RunLock
from cluster.reduce import reduce_run
from cluster.store import RunStore
from jobs.cli import EXIT_CODES, main
from tests.support.runs import build_run

KEY = "module/z/mse"
ON = {"global": True, "homogeneity": True, "anisotropy": True}


def _enable_reducers(rs: RunStore) -> None:
    """The fixture run with every reducer on (reducers are not part of the run's identity)."""
    spec = rs.attrs("v")["spec"]
    rs.update_attrs("v", spec={**spec, "reducers": ON})


def _killed_in_reduce(store, monkeypatch) -> None:
    """The state a SIGKILL leaves during homogeneity: global written, no completion record."""
    def killed(*a, **k):
        raise KeyboardInterrupt("killed")

    table = reduce_mod.REDUCER_TABLE
    monkeypatch.setitem(table, "homogeneity", dataclasses.replace(table["homogeneity"], compute=killed))
    with pytest.raises(KeyboardInterrupt):
        reduce_run(str(store), "v", use_ray=False)
    monkeypatch.undo()


@pytest.fixture
def interrupted(tmp_path, monkeypatch):
    store = tmp_path / "s"
    rs = build_run(store)
    _enable_reducers(rs)
    rs.update_attrs("v", status="reducing")  # what the driver records before reducing
    _killed_in_reduce(store, monkeypatch)
    return store


def _status(store, capsys) -> dict:
    assert main(["status", "v", "--store", str(store)]) == 0
    return json.loads(capsys.readouterr().out)


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_interrupted_reduce_is_reported_and_refused(interrupted, tmp_path, capsys):
    store = interrupted
    st = _status(store, capsys)
    assert (st["status"], st["recorded_status"]) == ("interrupted", "reducing")
    assert main(["query", "v", "--store", str(store), "--array", "reduce/homogeneity_log"]) == EXIT_CODES["store"]
    out, err = capsys.readouterr()
    assert out == "" and "unfinished" in _one_line(err) and KEY in err
    assert main(["verify", "v", "--store", str(store)]) == 1
    assert "reduce/: unfinished" in capsys.readouterr().err
    assert main(["report", "v", "--store", str(store), "--no-traversals", "--quiet",
                 "--out", str(tmp_path / "r")]) == EXIT_CODES["store"]
    assert "unfinished" in _one_line(capsys.readouterr().err)


def test_complete_run_whose_reduce_never_finished_is_not_complete(interrupted, capsys):
    RunStore(str(interrupted)).update_attrs("v", status="complete")  # a run from before the record
    assert _status(interrupted, capsys)["status"] == "interrupted"


def test_live_driver_is_computing_or_reducing_dead_one_interrupted(tmp_path, capsys):
    store = tmp_path / "s"
    rs = build_run(store)
    _enable_reducers(rs)  # and never reduced
    for recorded, live in (("running", "computing"), ("reducing", "reducing")):
        rs.update_attrs("v", status=recorded)
        with RunLock(str(store), "v"):
            assert _status(store, capsys)["status"] == live
        assert _status(store, capsys)["status"] == "interrupted"  # lock released: nobody is working


def test_reduce_again_completes(interrupted, capsys):
    assert main(["reduce", "v", "--store", str(interrupted), "--no-ray", "--quiet"]) == 0
    capsys.readouterr()
    assert _status(interrupted, capsys)["status"] == "complete"
    assert main(["query", "v", "--store", str(interrupted), "--array", "reduce/homogeneity_log"]) == 0
    assert np.isfinite(np.asarray(json.loads(capsys.readouterr().out)["data"], dtype=float)).any()


def test_resume_redoes_interrupted_reduce(ray_local, interrupted, tmp_path, capsys):
    ref = tmp_path / "ref"
    _enable_reducers(build_run(ref))
    reduce_run(str(ref), "v", use_ray=False)
    assert main(["resume", "v", "--store", str(interrupted), "--quiet", "--allow-import"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["computed"] == 0 and summary["reduce"] is not None
    assert _status(interrupted, capsys)["status"] == "complete"
    got = zarr.open_group(interrupted / "v" / KEY / "reduce", mode="r")
    want = zarr.open_group(ref / "v" / KEY / "reduce", mode="r")
    for name in ("global_eigvals", "homogeneity_log", "anisotropy_points"):
        np.testing.assert_allclose(got[name][:], want[name][:], rtol=1e-12, equal_nan=True, err_msg=name)
