"""Several targets of one (generator, space) share one generator pass per chunk (method exact).

The stored groups stay what per-target computation writes; resume recomputes only
the groups whose chunk is not done.
"""

from __future__ import annotations

import numpy as np
import zarr

from cluster.driver import run_sweep
from cluster.spec import parse_spec
from cluster.store import RunStore
from tests.support.counting import TINY_OPTIONS, CountingWorker

TARGETS = ["mse", "ssim", "layer:net.1", "layer:net.3"]
N, CHUNK = 4, 2


def _raw(name: str, targets: list[str], **patch) -> dict:
    return {"name": name, "targets": targets, "codes": {"n": N, "seed": 5}, "chunk_size": CHUNK,
            "generators": [{"name": "module", "label": "tiny", "spaces": ["z"], "options": dict(TINY_OPTIONS)}],
            "keep": {"hessian": True, "eigvecs": True},
            "reducers": {"global": False, "homogeneity": False, "anisotropy": False},
            "resources": {"workers": 1}, **patch}


def _group(store, run: str, target: str) -> zarr.Group:
    return zarr.open_group(store / run / "tiny" / "z" / target.replace(":", "-"), mode="r")


def test_targets_share_one_pass_per_chunk_and_equal_per_target_sweeps(ray_local, tmp_path):
    store = tmp_path / "s"
    summary = run_sweep(parse_spec(_raw("all", TARGETS)), store=str(store),
                        progress=False, worker_cls=CountingWorker)
    assert (summary["status"], summary["computed"], summary["chunks"]) == ("complete", 8, 8)
    (info,) = summary["worker_info"]
    # One forward-mode pass of the generator per chunk for all four targets (per-target: four).
    assert info["tangent_passes"] == N // CHUNK
    assert info["computed"] == [[c, sorted(f"tiny/z/{t.replace(':', '-')}" for t in TARGETS)] for c in (0, 1)]
    for target in TARGETS:
        run = f"one-{target.replace(':', '-')}"
        run_sweep(parse_spec(_raw(run, [target])), store=str(store), progress=False)
        shared, alone = _group(store, "all", target), _group(store, run, target)
        assert shared["done"][:].tolist() == alone["done"][:].tolist() == [1, 1]
        np.testing.assert_array_equal(shared["z"][:], alone["z"][:])
        # float32 on a 12-d MLP: the same ops per tangent, only batched differently
        # (metric.metric_tensors): a few ulp of the largest entry (float32 eps 1.2e-7).
        scale = float(np.abs(alone["hessian"][:]).max())
        for name in ("hessian", "eigvals"):
            np.testing.assert_allclose(shared[name][:], alone[name][:], rtol=0, atol=1e-6 * scale)
        assert list(shared.attrs.items()) == list(alone.attrs.items())


def test_resume_recomputes_only_the_target_whose_chunk_is_not_done(ray_local, tmp_path):
    store = tmp_path / "s"
    spec = parse_spec(_raw("part", ["mse", "layer:net.1"]))
    first = run_sweep(spec, store=str(store), progress=False)
    assert first["computed"] == 4
    stamps = {t: _group(store, "part", t)["computed_at"][:] for t in ("mse", "layer:net.1")}
    RunStore(str(store)).mark_done("part", "tiny/z/mse", 1, value=0)  # chunk 1 of mse lost
    again = run_sweep(spec, store=str(store), progress=False, worker_cls=CountingWorker)
    assert (again["status"], again["computed"], again["skipped"]) == ("complete", 1, 3)
    (info,) = again["worker_info"]
    assert info["computed"] == [[1, ["tiny/z/mse"]]]
    mse, layer = _group(store, "part", "mse"), _group(store, "part", "layer:net.1")
    assert mse["done"][:].tolist() == layer["done"][:].tolist() == [1, 1]
    np.testing.assert_array_equal(layer["computed_at"][:], stamps["layer:net.1"])
    assert mse["computed_at"][0] == stamps["mse"][0] and mse["computed_at"][1] > stamps["mse"][1]


def test_a_task_carries_as_many_targets_as_fit_the_chunk_memory_limit():
    from cluster.bounds import chunk_bytes, targets_per_task
    from cluster.spec import LIMITS
    from tests.support.runs import tanh_spec

    # 512-d: one target's chunk of 512 codes holds 4 x 512 x 512^2 float32 = 2 GiB; the codes 8 KiB.
    spec = parse_spec(tanh_spec("b", n=2, chunk_size=512))
    assert targets_per_task(spec, 512) == 3
    assert 3 * (chunk_bytes(spec, 512) - 2 * 512 * 8) + 2 * 512 * 8 <= LIMITS["chunk_bytes"]
    assert targets_per_task(parse_spec(tanh_spec("b", n=2, chunk_size=1024)), 512) == 1
    assert targets_per_task(parse_spec(tanh_spec("b", n=2, chunk_size=2)), 12) > 1000
