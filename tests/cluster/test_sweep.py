"""Sweeps end to end on embedded Ray (2 CPUs): local and S3 stores, a dying worker,
a failing chunk, a killed driver and its resume. The ``gangeo run`` process tree killed and resumed
through the commands: tests/jobs/test_ray_lost.py and tests/jobs/test_run_cmd.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from cluster.driver import run_sweep
from cluster.spec import parse_spec
from tests.support.faults import always_fail, crash_after_write
from tests.support.processes import tree, wait_dead

N, SEED = 6, 11
REPO = Path(__file__).resolve().parents[2]


def _raw(name: str, n: int = 4, **patch) -> dict:
    return {"name": name, "generators": [{"name": "dcgan-faces"}], "targets": ["mse"],
            "codes": {"n": n, "seed": SEED}, "chunk_size": 2, "keep": {"hessian": True, "eigvecs": True},
            "reducers": {"global": False, "homogeneity": False, "anisotropy": False},
            "resources": {"workers": 2}, **patch}


@pytest.fixture(scope="module")
def reference():
    """In-memory geometry_core results for the first N codes of the seed (one batch), drawn one by one."""
    import geometry_core as gc
    from cluster.codes import seed_codes

    G = gc.load_generator("dcgan-faces")
    z = seed_codes(G, SEED, slice(0, N), n=N)
    H = gc.metric_tensor(G, gc.load_distance("mse"), z)
    vals, _ = gc.eigen(H)
    return {"z": z.numpy(), "hessian": H.numpy(), "eigvals": vals.numpy()}


def _check_group(g: zarr.Group, ref: dict, n: int) -> None:
    """Stored arrays equal the in-memory reference.

    fp32 throughout; the workers run chunks of 2 codes on 1 thread, the reference one
    batch of N, so summation order differs: 1e-5 of the largest entry bounds that
    (observed differences are ~1e-7 relative). Eigenvalues move by at most ||dH||
    (Weyl), so the same bound holds for them; eigenvectors are checked through
    V diag(l) V^T, which is insensitive to near-degenerate eigenvalue pairs.
    """
    assert g["done"][:].tolist() == [1] * (n // 2)
    np.testing.assert_array_equal(g["z"][:], ref["z"][:n])
    scale = float(np.abs(ref["hessian"][:n]).max())
    np.testing.assert_allclose(g["hessian"][:], ref["hessian"][:n], rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(g["eigvals"][:], ref["eigvals"][:n], rtol=0, atol=1e-5 * scale)
    V, lam = g["eigvecs"][:], g["eigvals"][:]
    recon = np.einsum("bij,bj,bkj->bik", V, lam, V)
    np.testing.assert_allclose(recon, ref["hessian"][:n], rtol=0, atol=1e-5 * scale)


class SweepSuite:
    """Subclasses provide ``url`` and ``open_raw(url)`` (plain zarr, none of our code)."""

    def test_end_to_end_equals_in_memory(self, ray_local, url, reference):
        spec = parse_spec(_raw("e2e", reducers={"global": True, "homogeneity": False, "anisotropy": True}))
        summary = run_sweep(spec, store=url, progress=False)
        assert (summary["status"], summary["computed"], summary["failed"]) == ("complete", 2, [])
        g = self.open_raw(url)["e2e/dcgan-faces/z/mse"]
        _check_group(g, reference, 4)
        # The reducer saw the stored chunks: its global metric is the mean of the stored H.
        glob = g["reduce/global_hessian"][:]
        np.testing.assert_allclose(glob, g["hessian"][:].mean(0), rtol=0, atol=1e-6 * np.abs(glob).max())
        again = run_sweep(spec, store=url, progress=False)  # same spec: nothing left to do
        assert (again["computed"], again["skipped"]) == (0, 2)


class TestLocalSweep(SweepSuite):
    @pytest.fixture
    def url(self, tmp_path):
        return str(tmp_path / "store")

    def open_raw(self, url):
        return zarr.open_group(url, mode="r", zarr_format=3)


class TestS3Sweep(SweepSuite):
    @pytest.fixture
    def url(self, s3_server):
        return s3_server.new_bucket("sweep") + "/results"

    def open_raw(self, url):
        return zarr.open_group(url, mode="r", zarr_format=3, storage_options={
            "endpoint_url": os.environ["AWS_ENDPOINT_URL"], "skip_instance_cache": True})


def test_dead_worker_is_replaced_and_chunk_retried(ray_local, tmp_path, reference, monkeypatch):
    marker = tmp_path / "crashed"
    # The worker that reaches chunk 1 writes its data, then exits before its done entry.
    summary = run_sweep(parse_spec(_raw("crash")), store=str(tmp_path / "s"), progress=False,
                        worker_cls=crash_after_write(1, marker))
    assert marker.exists()
    assert summary["status"] == "complete" and summary["workers_replaced"] >= 1
    _check_group(zarr.open_group(tmp_path / "s", mode="r")["crash/dcgan-faces/z/mse"], reference, 4)


def test_chunk_that_keeps_failing_is_reported_others_complete(ray_local, tmp_path):
    # An unknown layer is refused before the run is written (cluster.bounds), so the failure is injected.
    bad = "dcgan-faces/z/mse"
    summary = run_sweep(parse_spec(_raw("fail", n=2, targets=["mse", "ssim"])), store=str(tmp_path / "s"),
                        progress=False, worker_cls=always_fail(bad))
    assert summary["status"] == "partial"
    assert [(f["key"], f["chunk"]) for f in summary["failed"]] == [(bad, 0)]
    assert "injected failure" in summary["failed"][0]["error"]
    root = zarr.open_group(tmp_path / "s", mode="r")
    assert root["fail/dcgan-faces/z/ssim/done"][:].tolist() == [1]
    assert root[f"fail/{bad}/done"][:].tolist() == [0]
    assert root["fail"].attrs["status"] == "partial"


def test_killed_driver_then_resume_recomputes_only_missing(ray_local, tmp_path, reference):
    store = tmp_path / "s"
    raw = _raw("kill", n=N, resources={"workers": 1})
    code = ("from cluster.driver import run_sweep\nfrom cluster.spec import parse_spec\n"
            f"run_sweep(parse_spec({raw!r}), store={str(store)!r}, progress=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done_path = store / "kill/dcgan-faces/z/mse/done"
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if done_path.exists() and (zarr.open_array(done_path, mode="r")[:] == 1).sum() >= 1:
                break
            time.sleep(0.2)
    finally:
        procs = tree(proc.pid)  # the driver and its embedded Ray
        os.killpg(proc.pid, signal.SIGKILL)  # all of them, as a lost machine
        proc.wait()
        assert not wait_dead(procs), "the killed driver still runs"  # dying takes a moment under load
    g = zarr.open_group(store / "kill/dcgan-faces/z/mse", mode="r")
    done_before = g["done"][:] == 1
    stamps_before = g["computed_at"][:]
    assert 1 <= done_before.sum() < N // 2, done_before
    summary = run_sweep(parse_spec(raw), store=str(store), progress=False)  # what `gangeo resume` runs
    assert summary["computed"] == int((~done_before).sum())
    assert summary["skipped"] == int(done_before.sum())
    g = zarr.open_group(store / "kill/dcgan-faces/z/mse", mode="r")
    np.testing.assert_array_equal(g["computed_at"][:][done_before], stamps_before[done_before])
    assert (g["computed_at"][:][~done_before] > stamps_before.max()).all()
    _check_group(g, reference, N)


def test_several_generators_one_worker_loads_each_once_to_compute(ray_local, tmp_path):
    from tests.support.runs import tanh_spec

    gens = [{"name": "module", "label": f"tanh{d}", "spaces": ["z"], "options": {
        "arch": "torch.nn:Tanh", "latent_dim": d, "input_shape": [3, 2, d // 6],
        "allow_import": True}} for d in (12, 6)]
    raw = tanh_spec("many", n=4, generators=gens, resources={"workers": 1})
    summary = run_sweep(parse_spec(raw), store=str(tmp_path / "s"), progress=False)
    assert summary["status"] == "complete" and summary["computed"] == 4
    (info,) = summary["worker_info"]
    # Planning describes each generator once on the first worker, then its chunks run model by model.
    assert info["model_loads"] == 2 + 2 and info["device"] == "cpu"
