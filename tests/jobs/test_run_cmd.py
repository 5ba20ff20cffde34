"""``gangeo run`` and ``resume`` as commands: ``--name`` names the run; a run a live driver holds is refused in
one line, exit code of the store, nothing written."""

from __future__ import annotations

import json

import yaml

from cluster.lock import RunLock
from jobs.cli import EXIT_CODES, main
from tests.support.runs import tanh_spec


def test_run_name_flag_names_the_run(ray_local, tmp_path, capsys):
    """`gangeo run --name` (one run per scheduled fire): the run is stored under that name;
    a bad name writes nothing."""
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(tanh_spec("base", n=2, resources={"workers": 1})))
    store = tmp_path / "store"
    assert main(["run", str(spec), "--store", str(store), "--name", "bad/name", "--quiet"]) == EXIT_CODES["usage"]
    assert not store.exists()
    assert main(["run", str(spec), "--store", str(store), "--name", "base-20261126T0200Z", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["ls", "--store", str(store)]) == 0
    runs = {r["run"]: r["status"] for r in json.loads(capsys.readouterr().out)["runs"]}
    assert runs == {"base-20261126T0200Z": "complete"}


def test_a_run_a_live_driver_holds_is_refused_in_one_line_nothing_written(ray_local, tmp_path, capsys):
    store = tmp_path / "s"
    spec = tmp_path / "a.yaml"
    spec.write_text(yaml.safe_dump(tanh_spec("a", n=2, resources={"workers": 1})))
    assert main(["run", str(spec), "--store", str(store), "--quiet"]) == 0
    capsys.readouterr()
    with RunLock(str(store), "a"):  # a live driver (this process) holds run "a"
        before = sorted((p.relative_to(store), p.stat().st_mtime_ns) for p in store.rglob("*"))
        for argv in (["run", str(spec)], ["resume", "a", "--allow-import"]):
            assert main([*argv, "--store", str(store), "--quiet"]) == EXIT_CODES["store"], argv
            err = capsys.readouterr().err
            assert len(err.strip().splitlines()) == 1 and "being written by another driver" in err, err
        assert sorted((p.relative_to(store), p.stat().st_mtime_ns) for p in store.rglob("*")) == before
