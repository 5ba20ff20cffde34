"""`gangeo run SPEC` / `resume` on a run already complete and reduced with the same identity:
answered from the store, without Ray, workers or a model, and nothing written."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml
import zarr

from cluster.finished import finished_summary
from cluster.spec import parse_spec
from cluster.store import RunExistsError
from jobs.cli import main
from tests.support.runs import tanh_spec

KEY = "module/z/mse"
REDUCERS = {"global": True, "homogeneity": True, "anisotropy": True}


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(ray_local, tmp_path_factory):
    """A tanh run (4 codes, 2 chunks, every reducer) computed by the driver; its spec file and summary."""
    import contextlib
    import io

    tmp = tmp_path_factory.mktemp("finished")
    spec = tmp / "done.yaml"
    spec.write_text(yaml.safe_dump(tanh_spec("done", n=4, reducers=REDUCERS, resources={"workers": 1})))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["run", str(spec), "--store", str(tmp / "store"), "--quiet"]) == 0
    first = json.loads(out.getvalue())
    assert first["computed"] == 2 and first["status"] == "complete"
    return spec, tmp / "store", first


def _no_ray_no_model(monkeypatch) -> None:
    import ray

    import cluster.driver as driver
    import geometry_core

    def refuse(*_a, **_kw):
        raise AssertionError("a finished run started Ray, a worker or a model")

    for mod, name in ((driver, "init_ray"), (driver, "_Pool"), (ray, "init"), (geometry_core, "load_generator")):
        monkeypatch.setattr(mod, name, refuse)


@pytest.mark.parametrize("argv", [["run", "SPEC"], ["resume", "done", "--allow-import"]])
def test_finished_run_answers_from_the_store(finished, monkeypatch, capsys, argv):
    spec, store, first = finished
    before = _snapshot(store)
    _no_ray_no_model(monkeypatch)
    capsys.readouterr()
    argv = [str(spec) if a == "SPEC" else a for a in argv]
    assert main([*argv, "--store", str(store)]) == 0
    cap = capsys.readouterr()
    again = json.loads(cap.out)
    assert "nothing" in again.pop("nothing_to_do")
    assert set(again) == set(first)  # the same summary's keys
    assert again["reduce"] == first["reduce"]  # what the reducers returned, read back from reduce/
    assert (again["status"], again["chunks"], again["skipped"], again["computed"], again["failed"]) == \
        ("complete", 2, 2, 0, [])
    assert again["groups"] == first["groups"] == [KEY] and again["workers"] == 0
    assert cap.err.strip() == "sweep done: complete and reduced with this spec; nothing to do"
    assert _snapshot(store) == before  # nothing written: no attempt, no lock, no reduce


def _copy(finished, tmp_path) -> Path:
    return Path(shutil.copytree(finished[1], tmp_path / "store"))


def _spec(store: Path, **patch):
    return parse_spec({**tanh_spec("done", n=4, reducers=REDUCERS, resources={"workers": 1}), **patch}
                      ).with_store(str(store))


def test_unfinished_runs_take_the_full_path(finished, tmp_path):
    """Any doubt (a chunk not done or damaged, a reduce unfinished or missing a reducer) is no answer."""
    store = _copy(finished, tmp_path)
    assert finished_summary(_spec(store)) is not None
    g = zarr.open_group(str(store / "done" / KEY), mode="r+")

    red = g["reduce"]
    saved = dict(red.attrs)
    red.attrs["state"] = "reducing"  # a reduce that never wrote its record
    assert finished_summary(_spec(store)) is None
    red.attrs.put(saved)
    red.attrs.pop("homogeneity")  # reduced without one of the spec's reducers
    assert finished_summary(_spec(store)) is None
    red.attrs.put(saved)

    g["done"][1] = 0  # a chunk to compute
    assert finished_summary(_spec(store)) is None
    g["done"][1] = 1
    eig = g["eigvals"][:]
    eig[0, 0] += 1.0  # data that no longer match their checksum
    g["eigvals"][:] = eig
    assert finished_summary(_spec(store)) is None


def test_more_codes_grow_and_another_spec_is_refused_before_ray(finished, tmp_path, monkeypatch):
    store = _copy(finished, tmp_path)
    assert finished_summary(_spec(store, codes={"n": 6, "seed": 3})) is None  # grows: the full path
    _no_ray_no_model(monkeypatch)
    with pytest.raises(RunExistsError, match="different spec"):
        from cluster.driver import run_sweep

        run_sweep(_spec(store, method="bp"), progress=False)


def test_the_store_location_is_parsed_once(finished, tmp_path, monkeypatch):
    """The driver parses --store once; the checks, the run store, the lock and the reducers share the value."""
    import cluster.storage as storage
    from cluster.driver import run_sweep

    texts = []
    parse = storage._parse_text
    monkeypatch.setattr(storage, "_parse_text", lambda url: texts.append(str(url)) or parse(url))
    fresh = parse_spec(tanh_spec("fresh", n=4, reducers=REDUCERS, resources={"workers": 1}))
    assert run_sweep(fresh, store=str(tmp_path / "store"), progress=False)["status"] == "complete"
    assert texts == [str(tmp_path / "store")]
    done = _spec(finished[1])
    texts.clear()
    assert run_sweep(done, progress=False)["computed"] == 0  # answered from the store
    assert texts == [str(finished[1])]
