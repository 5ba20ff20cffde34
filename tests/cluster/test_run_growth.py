"""Runs that grow: more codes of the same seed extend a run (only the new chunks are computed, the
first codes unchanged, reducers rerun over all); fewer codes or another seed are refused in one
line naming the field; a run made before codes were drawn one by one keeps its batch draw."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
import zarr

import geometry_core as gc
from cluster.codes import code_seed, seed_codes
from cluster.driver import run_sweep
from cluster.layout import ARRAYS, GroupLayout
from cluster.spec import parse_spec
from cluster.store import RunExistsError, RunStore
from jobs.cli import main
from tests.support.runs import D, analytic, build_run, tanh_spec

KEY = "module/z/mse"
ON = {"global": True, "homogeneity": False, "anisotropy": True}


def _tanh():
    return gc.load_generator("module", **tanh_spec("x")["generators"][0]["options"])


def test_codes_are_drawn_one_by_one_so_more_codes_keep_the_first():
    G = _tanh()
    z128 = seed_codes(G, 0, slice(0, 128), n=128)
    np.testing.assert_array_equal(seed_codes(G, 0, slice(0, 64), n=64), z128[:64])
    np.testing.assert_array_equal(seed_codes(G, 0, slice(80, 96), n=128), z128[80:96])  # a chunk alone
    np.testing.assert_array_equal(z128[5], G.sample(1, seed=code_seed(0, 5))[0])
    # The old draw of all n codes at once is not prefix-stable, hence the new scheme.
    assert not torch.equal(G.sample(3, seed=0), G.sample(5, seed=0)[:3])
    assert len({code_seed(0, i) for i in range(1000)} | {code_seed(1, i) for i in range(1000)}) == 2000


@pytest.mark.slow  # two sweeps and a reduce: ~20-45 s on a loaded 2-core machine
def test_64_codes_grow_to_128_only_new_chunks_computed_reducers_rerun(ray_local, tmp_path):
    store = str(tmp_path / "s")
    small = parse_spec(tanh_spec("g", n=64, chunk_size=16, reducers=ON, resources={"workers": 2}))
    assert run_sweep(small, store=store, progress=False)["computed"] == 4
    before = zarr.open_group(store, mode="r")[f"g/{KEY}"]
    z64, stamps = before["z"][:], before["computed_at"][:]
    big = parse_spec(tanh_spec("g", n=128, chunk_size=16, reducers=ON, resources={"workers": 2}))
    summary = run_sweep(big, store=store, progress=False)
    assert (summary["status"], summary["skipped"], summary["computed"]) == ("complete", 4, 4)
    g = zarr.open_group(store, mode="r")[f"g/{KEY}"]
    assert g["z"].shape == (128, D) and g["done"][:].tolist() == [1] * 8
    np.testing.assert_array_equal(g["z"][:64], z64)                      # the first 64 codes unchanged
    np.testing.assert_array_equal(g["computed_at"][:4], stamps)           # and not recomputed
    np.testing.assert_array_equal(g["z"][:], seed_codes(_tanh(), 3, slice(0, 128), n=128).numpy())
    H = analytic(g["z"][:])  # closed form; float32 storage of tiny entries: 1e-6 of the largest
    np.testing.assert_allclose(g["hessian"][:], H, rtol=0, atol=1e-6 * np.abs(H).max())
    glob = g["reduce/global_hessian"][:]  # reduced again, over all 128 codes
    np.testing.assert_allclose(glob, H.mean(0), rtol=0, atol=1e-6 * np.abs(glob).max())
    attrs = zarr.open_group(store, mode="r")["g"].attrs
    assert attrs["spec"]["codes"] == {"n": 128, "seed": 3} and attrs["identity"]["codes"]["n"] == 128
    assert attrs["code_scheme"] == "per-code" and g.attrs["n"] == 128 and g.attrs["n_chunks"] == 8
    assert [a["codes"] for a in attrs["history"]] == [64, 128]


@pytest.mark.slow  # two sweeps
def test_a_short_last_chunk_is_recomputed_whole_when_the_run_grows(ray_local, tmp_path):
    store = str(tmp_path / "s")
    small = tanh_spec("o", n=5, resources={"workers": 1})
    run_sweep(parse_spec(small), store=store, progress=False)  # chunks of 2: 0-1, 2-3, 4
    summary = run_sweep(parse_spec({**small, "codes": {"n": 8, "seed": 3}}), store=store, progress=False)
    assert (summary["skipped"], summary["computed"]) == (2, 2)  # chunk 2 gains a row, chunk 3 is new
    g = zarr.open_group(store, mode="r")[f"o/{KEY}"]
    np.testing.assert_array_equal(g["z"][:], seed_codes(_tanh(), 3, slice(0, 8), n=8).numpy())


@pytest.mark.parametrize(("codes", "problem"), [
    ({"n": 4, "seed": 3}, "codes.n: the spec asks 4 codes, the run has 8; a run grows, it never shrinks"),
    ({"n": 8, "seed": 4}, "codes.seed: the run was drawn from seed 3, the spec asks 4; a run keeps its seed"),
    ({"n": 16, "seed": 4}, "codes.seed: the run was drawn from seed 3, the spec asks 4; a run keeps its seed"),
])
def test_shrinking_or_another_seed_is_refused_in_one_line(tmp_path, capsys, monkeypatch, codes, problem):
    import cluster.driver as driver

    monkeypatch.setattr(driver, "init_ray", lambda *a, **k: pytest.fail("refused only after Ray started"))
    store = tmp_path / "s"
    build_run(store, "v")  # 8 codes of seed 3
    before = dict(zarr.open_group(store, mode="r")["v"].attrs)
    spec = tmp_path / "v.yaml"
    spec.write_text(yaml.safe_dump(tanh_spec("v", codes=codes)))
    assert main(["run", str(spec), "--store", str(store), "--quiet"]) == 5
    (line,) = capsys.readouterr().err.splitlines()
    assert line == f"gangeo run: run 'v' in {store}: {problem}; choose another run name"
    assert dict(zarr.open_group(store, mode="r")["v"].attrs) == before  # nothing written


def test_a_run_drawn_in_one_batch_keeps_its_codes_and_cannot_grow(ray_local, tmp_path):
    store = tmp_path / "s"
    rs = build_run(store)  # written as drivers did before code_scheme: G.sample(N, seed)[rows]
    assert "code_scheme" not in rs.attrs("v")
    rs.mark_done("v", KEY, 1, value=0)
    summary = run_sweep(parse_spec(tanh_spec("v")), store=str(store), progress=False)
    assert (summary["computed"], summary["skipped"]) == (1, 3)
    z = zarr.open_group(store, mode="r")[f"v/{KEY}/z"][:]
    np.testing.assert_array_equal(z, _tanh().sample(8, seed=3).numpy())  # the recomputed chunk too
    with pytest.raises(RunExistsError, match="codes.n: the run's 8 codes were drawn in one batch"):
        run_sweep(parse_spec(tanh_spec("v", n=16)), store=str(store), progress=False)
    assert RunStore(str(store)).attrs("v")["identity"]["codes"] == {"n": 8, "seed": 3}


# ---- issue 21, finding 2: a growth cut short between array resizes ----


def _grow_cut_short(store, monkeypatch, capsys):
    """Run 'v' (8 codes) asked for 16, the growth killed after its first array resize."""
    from cluster.growth import grow_run

    rs = build_run(store)
    rs.update_attrs("v", code_scheme="per-code")  # may grow (the first codes' values do not matter here)
    big = parse_spec(tanh_spec("v", n=16))
    lay = GroupLayout("module", "z", "mse", n=16, dim=D, chunk_size=2)
    real, calls = zarr.Array.resize, []

    def resize_then_die(self, shape):
        if calls:
            raise KeyboardInterrupt  # the driver killed between two resizes
        calls.append(self.path)
        return real(self, shape)

    monkeypatch.setattr(zarr.Array, "resize", resize_then_die)
    with pytest.raises(KeyboardInterrupt):
        grow_run(rs, big, [lay], 8)
    monkeypatch.undo()
    g = zarr.open_group(store, mode="r")[f"v/{KEY}"]
    first = calls[0].rsplit("/", 1)[1]  # whichever array zarr listed first: resized, the others not
    other = "eigvals" if first != "eigvals" else "z"
    assert len(calls) == 1 and g[first].shape[0] == (16 if first in ARRAYS else 8) and g[other].shape[0] == 8
    capsys.readouterr()
    return rs


def test_a_growth_cut_short_is_shown_by_status_and_refused_by_readers(tmp_path, monkeypatch, capsys):
    store = tmp_path / "s"
    _grow_cut_short(store, monkeypatch, capsys)
    assert RunStore(str(store)).attrs("v")["growing"]["from"] == 8
    assert main(["status", "v", "--store", str(store)]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["status"] == "interrupted" and "growth from 8 to 16 codes" in st["detail"]
    assert "gangeo resume v" in st["detail"]
    for argv in (["reduce", "v", "--no-ray", "--quiet"], ["report", "v", "--no-traversals", "--quiet",
                                                            "--out", str(tmp_path / "rep")],
                 ["query", "v"], ["compare", "v", "v"]):
        assert main([*argv, "--store", str(store)]) == 5, argv
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith(f"gangeo {argv[0]}: run 'v' is ") and "from 8 to 16 codes" in line, line
        assert "run `gangeo resume v` to finish it" in line, line
    assert not (tmp_path / "rep").exists()
    spec = tmp_path / "old.yaml"  # the old spec would leave it half grown: refused, naming the remedy
    spec.write_text(yaml.safe_dump(tanh_spec("v")))
    assert main(["run", str(spec), "--store", str(store), "--quiet"]) == 5
    (line,) = capsys.readouterr().err.splitlines()
    assert "stopped growing from 8 to 16 codes; run `gangeo resume v` to finish that growth first" in line


@pytest.mark.slow  # one sweep on embedded Ray
def test_resume_finishes_a_growth_cut_short(ray_local, tmp_path, monkeypatch, capsys):
    store = tmp_path / "s"
    _grow_cut_short(store, monkeypatch, capsys)
    assert main(["resume", "v", "--store", str(store), "--quiet", "--allow-import"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["status"], summary["skipped"], summary["computed"]) == ("complete", 4, 4)
    g = zarr.open_group(store, mode="r")[f"v/{KEY}"]
    assert {g[n].shape[0] for n in ("z", "eigvals", "eigvecs", "hessian")} == {16}
    assert g["done"][:].tolist() == [1] * 8
    H = analytic(g["z"][:])  # closed form; float32 storage of tiny entries: 1e-6 of the largest
    np.testing.assert_allclose(g["hessian"][:], H, rtol=0, atol=1e-6 * np.abs(H).max())
    np.testing.assert_array_equal(g["z"][8:], seed_codes(_tanh(), 3, slice(8, 16), n=16).numpy())
    attrs = RunStore(str(store)).attrs("v")
    assert attrs.get("growing") is None and attrs["identity"]["codes"]["n"] == 16
    assert main(["status", "v", "--store", str(store)]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "complete"
