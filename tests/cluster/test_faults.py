"""Faults injected into real sweeps (embedded Ray, moto S3 on loopback), counted.

Each scenario ends with: the run's status and progress telling the truth, every
chunk present once, `verify_run` clean (or naming what is unfinished), and the
results equal to an undisturbed run's. The worker killed mid-chunk and the driver
killed mid-run live in tests/cluster/test_sweep.py (two more scenarios of the same kind).
"""

from __future__ import annotations

import os
import threading
import time

import botocore.exceptions as bexc
import numpy as np
import pytest
import zarr

from cluster.driver import run_sweep
from cluster.lock import RunLock, RunLockedError, lock_info
from cluster.retry import RetryPolicy, is_transient, retry_call
from cluster.spec import parse_spec
from cluster.storage import StoreError
from cluster.store import RunStore
from cluster.verify import verify_run
from tests.support.fault_proxy import FaultProxy
from tests.support.runs import analytic, tanh_spec

N = 12  # 6 chunks of 2 codes, D = 12: each chunk is ~10 small PUTs
KEY = "module/z/mse"
ARRAY_NAMES = ("z", "eigvals", "eigvecs", "hessian", "done", "checksum")


def _spec(name: str, workers: int = 2):
    return parse_spec(tanh_spec(name, n=N, resources={"workers": workers}))


@pytest.fixture(scope="module")
def undisturbed(ray_local, tmp_path_factory):
    """The same sweep on a local store with no faults: the reference for every scenario."""
    store = tmp_path_factory.mktemp("ref") / "s"
    assert run_sweep(_spec("ref"), store=str(store), progress=False)["status"] == "complete"
    g = zarr.open_group(store / "ref" / KEY, mode="r")
    return {name: g[name][:] for name in ("z", "eigvals", "eigvecs", "hessian")}


def _open_s3(url: str, endpoint: str) -> zarr.Group:
    return zarr.open_group(url, mode="r", zarr_format=3,
                           storage_options={"endpoint_url": endpoint, "skip_instance_cache": True})


def _assert_truthful(url: str, run: str, endpoint: str, ref: dict, keys: list[str], n: int = N) -> None:
    """Status, progress, verify and values of a finished S3 run; every chunk key stored once."""
    rs = RunStore(url, s3_endpoint=endpoint, mode="r", create=False)
    assert rs.attrs(run)["status"] == "complete" and rs.attrs(run)["failed"] == []
    prog = rs.progress(run)
    assert prog["done"] == prog["chunks"] == n // 2
    report = verify_run(url, run, s3_endpoint=endpoint)
    assert report["clean"], report["errors"]
    g = _open_s3(url, endpoint)[f"{run}/{KEY}"]
    for name, want in ref.items():
        # Same code path, same single-thread CPU kernels: only the store is in between.
        np.testing.assert_allclose(g[name][: len(want)], want, rtol=0, atol=1e-7 * max(1.0, float(np.abs(want).max())))
    for name in ARRAY_NAMES:
        chunk_keys = [k for k in keys if f"/{run}/{KEY}/{name}/c/" in f"/{k}"]
        assert len(chunk_keys) == len(set(chunk_keys)) == n // 2, (name, chunk_keys)
    # Beyond the reference's rows, the analytic metric of tanh (fp32 rounding: 1e-6 of 2/12).
    np.testing.assert_allclose(g["hessian"][:], analytic(g["z"][:]), rtol=0, atol=1e-6 * 2 / 12)


# -- retry policy -------------------------------------------------------------------------------

def _client_error(code: str, status: int) -> bexc.ClientError:
    return bexc.ClientError({"Error": {"Code": code, "Message": code},
                             "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


def test_transient_errors_are_classified():
    transient = [_client_error("SlowDown", 503), _client_error("InternalError", 500), _client_error("502", 502),
                 _client_error("504", 504), bexc.EndpointConnectionError(endpoint_url="http://x"),
                 ConnectionResetError("reset"), TimeoutError(), StoreError("x", transient=True)]
    final = [_client_error("AccessDenied", 403), _client_error("NoSuchBucket", 404), PermissionError("denied"),
             FileNotFoundError("gone"), ValueError("bad"), StoreError("no bucket")]
    wrapped = OSError(16, "Please reduce your request rate.")
    wrapped.__cause__ = _client_error("SlowDown", 503)  # how s3fs translates a 503
    assert [is_transient(e) for e in transient + [wrapped]] == [True] * (len(transient) + 1)
    assert [is_transient(e) for e in final] == [False] * len(final)


def test_retry_is_bounded_and_stops_on_final_errors():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise _client_error("SlowDown", 503)
        return "ok"

    policy = RetryPolicy(attempts=5, base=0.001, cap=0.002)
    assert retry_call(flaky, policy=policy) == "ok" and len(calls) == 3 and policy.retries == 2

    def always(exc):
        def fn():
            calls.append(1)
            raise exc
        return fn

    calls.clear()
    with pytest.raises(bexc.ClientError):  # attempts exhausted: the last error comes out
        retry_call(always(_client_error("SlowDown", 503)), policy=RetryPolicy(attempts=4, base=0.001, cap=0.001))
    assert len(calls) == 4
    calls.clear()
    with pytest.raises(PermissionError):
        retry_call(always(PermissionError("403")), policy=RetryPolicy(base=0.001))
    assert len(calls) == 1  # non-transient: one attempt
    t0 = time.monotonic()
    with pytest.raises(ConnectionError):
        retry_call(always(ConnectionError("down")), policy=RetryPolicy(attempts=100, base=0.05, cap=0.05,
                                                                        deadline=0.3))
    assert time.monotonic() - t0 < 5  # the deadline bounds the total time (0.3 s of sleeps)


# -- injected faults in real sweeps -----------------------------------------------------------

def test_throttling_and_5xx_through_proxy(ray_local, s3_server, undisturbed):
    url = s3_server.new_bucket("throttle") + "/r"
    proxy = FaultProxy(s3_server.endpoint, fail_first=6, fraction=0.3, max_faults=14, seed=1).start()
    try:
        summary = run_sweep(_spec("thr"), store=url, s3_endpoint=proxy.endpoint, progress=False)
    finally:
        proxy.stop()
    print(f"\nfaults survived (throttling/5xx): {dict(proxy.faults)}")
    assert summary["status"] == "complete" and summary["failed"] == []
    assert proxy.faults["503 SlowDown"] == 6 and proxy.total_faults >= 7
    _assert_truthful(url, "thr", s3_server.endpoint, undisturbed, s3_server.keys(url))


def test_s3_server_stopped_and_restarted_mid_run(ray_local, s3_server, undisturbed):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    url = s3_server.new_bucket("outage") + "/r"  # moto's state is per process: both servers see it
    done_prefix = url.removeprefix("s3://").partition("/")[2] + f"/out/{KEY}/done/c/"
    bucket = url.removeprefix("s3://").partition("/")[0]
    outage: dict = {}

    def watch() -> None:  # stop the server as soon as the first chunk is done, restart it 8 s later
        client = s3_server.client()
        while not outage:
            if client.list_objects_v2(Bucket=bucket, Prefix=done_prefix).get("KeyCount", 0):
                server.stop()
                outage["stopped"] = time.time()
                time.sleep(8.0)  # longer than s3fs's and botocore's own retries (~3 s)
                restarted = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
                restarted.start()
                outage["server"] = restarted
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        spec = parse_spec(tanh_spec("out", n=40, resources={"workers": 2}))
        summary = run_sweep(spec, store=url, s3_endpoint=endpoint, progress=False)
        finished = time.time()
        watcher.join(timeout=30)
    finally:
        outage.setdefault("stopped", None)
        (outage.get("server") or server).stop()
    print(f"\nS3 outage: server stopped 8 s mid-run; store retries {summary['store_retries']}")
    assert outage["stopped"] is not None and outage["stopped"] < finished - 8
    assert summary["status"] == "complete" and summary["store_retries"] >= 1
    _assert_truthful(url, "out", s3_server.endpoint, undisturbed, s3_server.keys(url), n=40)


def test_forbidden_write_fails_at_once_and_is_never_marked_done(ray_local, s3_server, undisturbed):
    url = s3_server.new_bucket("deny") + "/r"
    proxy = FaultProxy(s3_server.endpoint, forbid=rf"/deny/{KEY}/done/c/1$").start()
    try:
        summary = run_sweep(_spec("deny"), store=url, s3_endpoint=proxy.endpoint, progress=False)
    finally:
        proxy.stop()
    assert summary["status"] == "partial"
    assert [(f["key"], f["chunk"]) for f in summary["failed"]] == [(KEY, 1)]
    assert "PermissionError" in summary["failed"][0]["error"]
    # No retries inside a chunk for a 403: one refused PUT per attempt of the chunk (3 attempts).
    assert proxy.faults["403 AccessDenied"] == 3
    report = verify_run(url, "deny")
    assert report["groups"][KEY]["unfinished"] == [1] and report["errors"] == [] and not report["clean"]
    assert RunStore(url, mode="r", create=False).attrs("deny")["status"] == "partial"
    again = run_sweep(_spec("deny"), store=url, progress=False)  # the fault is gone: resume
    assert (again["status"], again["computed"], again["skipped"]) == ("complete", 1, N // 2 - 1)
    _assert_truthful(url, "deny", s3_server.endpoint, undisturbed, s3_server.keys(url))


# -- no clobbering ------------------------------------------------------------------------------

def test_run_lock_refuses_live_and_takes_over_stale(tmp_path, s3_server):
    for url in (str(tmp_path / "s"), s3_server.new_bucket("lock") + "/p"):
        with RunLock(url, "r1") as first:
            with pytest.raises(RunLockedError, match="being written by another driver"):
                RunLock(url, "r1").acquire()
            RunLock(url, "r2").acquire().release()  # another run: independent
            assert lock_info(url, "r1")["owner"] == first.owner
        assert lock_info(url, "r1") is None  # released
        expired = RunLock(url, "r1", ttl=-1).acquire()  # already past its expiry
        expired._stop.set()  # no heartbeat: as if its driver hung
        expired._thread.join(timeout=30)  # a beat still in flight would change the lock under the taker
        taker = RunLock(url, "r1").acquire()
        assert taker.took_over["owner"] == expired.owner
        taker.release()


def test_same_run_twice_is_refused_two_runs_share_a_store(ray_local, tmp_path):
    store = tmp_path / "s"
    results = {}

    def sweep(name: str) -> None:
        results[name] = run_sweep(_spec(name, workers=1), store=str(store), progress=False)

    threads = [threading.Thread(target=sweep, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert {n: r["status"] for n, r in results.items()} == {"a": "complete", "b": "complete"}
    for name in ("a", "b"):
        assert verify_run(str(store), name)["clean"]
    with RunLock(str(store), "a"):  # a live driver (this process) holds run "a"
        before = sorted(p.relative_to(store) for p in store.rglob("*"))
        with pytest.raises(RunLockedError, match="being written by another driver"):
            run_sweep(_spec("a", workers=1), store=str(store), progress=False)
        assert sorted(p.relative_to(store) for p in store.rglob("*")) == before
    assert os.path.exists(store / "a" / "zarr.json")
