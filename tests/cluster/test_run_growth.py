"""Runs that grow: more codes of the same seed extend a run (only the new chunks are computed, the
first codes unchanged, reducers rerun over all); a run made before codes were drawn one by one keeps its
batch draw. What the commands say of a refused or half-done growth: tests/jobs/test_run_growth.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from cluster.codes import code_seed, seed_codes
from cluster.driver import run_sweep
from cluster.spec import parse_spec
from cluster.store import RunExistsError, RunStore
from tests.support.runs import D, analytic, build_run, tanh_generator, tanh_spec

KEY = "module/z/mse"
ON = {"global": True, "homogeneity": False, "anisotropy": True}


def test_codes_are_drawn_one_by_one_so_more_codes_keep_the_first():
    G = tanh_generator()
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
    np.testing.assert_array_equal(g["z"][:], seed_codes(tanh_generator(), 3, slice(0, 128), n=128).numpy())
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
    np.testing.assert_array_equal(g["z"][:], seed_codes(tanh_generator(), 3, slice(0, 8), n=8).numpy())


def test_a_run_drawn_in_one_batch_keeps_its_codes_and_cannot_grow(ray_local, tmp_path):
    store = tmp_path / "s"
    rs = build_run(store)  # written as drivers did before code_scheme: G.sample(N, seed)[rows]
    assert "code_scheme" not in rs.attrs("v")
    rs.mark_done("v", KEY, 1, value=0)
    summary = run_sweep(parse_spec(tanh_spec("v")), store=str(store), progress=False)
    assert (summary["computed"], summary["skipped"]) == (1, 3)
    z = zarr.open_group(store, mode="r")[f"v/{KEY}/z"][:]
    np.testing.assert_array_equal(z, tanh_generator().sample(8, seed=3).numpy())  # the recomputed chunk too
    with pytest.raises(RunExistsError, match="codes.n: the run's 8 codes were drawn in one batch"):
        run_sweep(parse_spec(tanh_spec("v", n=16)), store=str(store), progress=False)
    assert RunStore(str(store)).attrs("v")["identity"]["codes"] == {"n": 8, "seed": 3}

