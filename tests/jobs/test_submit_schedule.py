"""`gangeo submit` builds the right Ray Jobs request; `gangeo schedule` neither skips nor repeats.

Submission is tested with a stand-in for ``JobSubmissionClient`` that behaves as
Ray's does where it matters here: it reads the staged working directory at
submit time and refuses a duplicate ``submission_id`` with a RuntimeError.
The schedule is tested with an injected clock and that stand-in.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
import zarr

from jobs.schedule import ScheduleBook, ScheduleError, daemon, submission_id
from cluster.spec import SpecError
from jobs.submit import PROJECT_MODULES, SubmitError, submit_spec

QUICKSTART = Path(__file__).resolve().parents[2] / "jobs" / "examples" / "quickstart.yaml"
T0 = datetime(2026, 1, 1, 10, 0, tzinfo=timezone.utc)


class FakeJobClient:
    """Records submissions; refuses a duplicate submission id as Ray's job server does."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.staged_specs: list[dict] = []
        self.accepted: list[str] = []

    def submit_job(self, *, entrypoint, runtime_env, submission_id=None, metadata=None, **_):
        if submission_id is not None and submission_id in self.accepted:
            raise RuntimeError(f"Request failed with status code 400: Job with submission_id "
                               f"{submission_id} already exists. Please use a different submission_id.")
        staged = Path(runtime_env["working_dir"], "spec.yaml")
        self.staged_specs.append(yaml.safe_load(staged.read_text()))
        self.requests.append({"entrypoint": entrypoint, "runtime_env": runtime_env,
                              "submission_id": submission_id, "metadata": metadata})
        job = submission_id or f"raysubmit_{len(self.accepted)}"
        self.accepted.append(job)
        return job


def test_submit_builds_request(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-to-be-sent")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDNOTSENT")
    client = FakeJobClient()
    job = submit_spec(QUICKSTART, "http://head:8265", store="s3://bucket/runs",
                      s3_endpoint="http://minio:9000", submission_id="qs-1", client=client)
    assert job == "qs-1"
    req = client.requests[0]
    assert req["entrypoint"] == ("python -m jobs.cli run spec.yaml --address auto "
                                 "--s3-endpoint http://minio:9000")
    env = req["runtime_env"]
    assert [Path(p).name for p in env["py_modules"]] == list(PROJECT_MODULES)
    assert all((Path(p) / "__init__.py").is_file() for p in env["py_modules"])
    assert "env_vars" not in env  # a driver's ray.init(runtime_env=...) must not collide with them
    assert "not-to-be-sent" not in json.dumps(req) and "AKIDNOTSENT" not in json.dumps(req)
    staged = client.staged_specs[0]
    assert staged["store"] == "s3://bucket/runs" and staged["name"] == "quickstart"
    assert req["metadata"] == {"gangeo_run": "quickstart", "gangeo_store": "s3://bucket/runs"}
    assert not Path(env["working_dir"]).exists()  # staging removed after the upload


def test_submit_refuses_duplicate_and_bad_spec(tmp_path):
    client = FakeJobClient()
    submit_spec(QUICKSTART, "http://head:8265", submission_id="qs-1", client=client)
    with pytest.raises(SubmitError, match="already exists"):
        submit_spec(QUICKSTART, "http://head:8265", submission_id="qs-1", client=client)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ngenerators: []\ncodes: {n: -3}\nbogus: 1\n")
    with pytest.raises(SpecError) as err:
        submit_spec(bad, "http://head:8265", client=client)
    assert any(p.startswith("codes.n") for p in err.value.problems)
    assert any(p.startswith("bogus") for p in err.value.problems)
    assert len(client.requests) == 1


def _submitter(client: FakeJobClient, crash_after_accept: set[str] | None = None):
    """Like jobs.schedule.submit_entry, against the fake; optionally dies after Ray accepted."""
    crash = crash_after_accept if crash_after_accept is not None else set()

    def submit(entry: dict, sid: str) -> str:
        try:
            job = client.submit_job(entrypoint="python -m jobs.cli run spec.yaml", runtime_env={
                "working_dir": str(_submitter.staging)}, submission_id=sid)
        except RuntimeError as exc:
            if "already exists" in str(exc):
                return sid
            raise
        if sid in crash:
            crash.discard(sid)
            raise KeyboardInterrupt  # the process dies before recording the fire time
        return job

    return submit


@pytest.fixture
def book(tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "spec.yaml").write_text(QUICKSTART.read_text())
    _submitter.staging = staging
    root = zarr.open_group(str(tmp_path / "store"), mode="a", zarr_format=3)
    b = ScheduleBook(root)
    b.add("sweep", "*/15 * * * *", {"name": "quickstart"}, "http://head:8265", store=None, now=T0)
    return b, tmp_path / "store"


def test_schedule_no_repeat_no_skip_across_restart(book):
    b, store = book
    client = FakeJobClient()
    submit = _submitter(client, crash_after_accept={"sweep-20260101T1030"})
    assert b.run_due(T0 + timedelta(minutes=14), submit) == []
    first = b.run_due(T0 + timedelta(minutes=15), submit)
    assert [r["submission_id"] for r in first] == ["sweep-20260101T1015"]
    assert b.run_due(T0 + timedelta(minutes=16), submit) == []  # no repeat
    with pytest.raises(KeyboardInterrupt):  # dies after Ray accepted 10:30, before recording it
        b.run_due(T0 + timedelta(minutes=31), submit)
    # Restart: a new book on the same store resubmits 10:30 once, Ray refuses the duplicate.
    b2 = ScheduleBook(zarr.open_group(str(store), mode="a", zarr_format=3))
    again = b2.run_due(T0 + timedelta(minutes=32), submit)
    assert [r["submission_id"] for r in again] == ["sweep-20260101T1030"]
    assert b2.list()["sweep"]["last_fire"] == "2026-01-01T10:30:00+00:00"
    assert client.accepted == ["sweep-20260101T1015", "sweep-20260101T1030"]
    # Down from 10:32 to 11:20: 10:45, 11:00 and 11:15 missed; the latest runs once.
    late = b2.run_due(T0 + timedelta(minutes=80), submit)
    assert [(r["submission_id"], r["missed"]) for r in late] == [("sweep-20260101T1115", 2)]
    assert client.accepted[-1] == "sweep-20260101T1115" and len(client.accepted) == 3
    assert b2.list()["sweep"]["missed"] == 2


def test_failed_submission_is_retried(book):
    b, _ = book
    client = FakeJobClient()
    calls = []

    def flaky(entry, sid):
        calls.append(sid)
        if len(calls) == 1:
            raise ConnectionError("head unreachable")
        return _submitter(client)(entry, sid)

    out = b.run_due(T0 + timedelta(minutes=15), flaky)
    assert "error" in out[0] and b.list()["sweep"]["last_fire"] is None
    out = b.run_due(T0 + timedelta(minutes=17), flaky)
    assert out[0]["job_id"] == "sweep-20260101T1015" and calls == ["sweep-20260101T1015"] * 2


def test_daemon_loop_with_injected_clock(book):
    b, _ = book
    client = FakeJobClient()
    times = iter([T0 + timedelta(minutes=m) for m in range(0, 61, 1)])
    lines = []

    class Out:
        def write(self, s):
            lines.append(s)

        def flush(self):
            pass

    daemon(b, _submitter(client), clock=lambda: next(times), sleep=lambda s: None, iterations=61, out=Out())
    # Minutes 0..60: fire times 10:15, 10:30, 10:45, 11:00, each exactly once.
    assert client.accepted == [submission_id("sweep", T0 + timedelta(minutes=m)) for m in (15, 30, 45, 60)]
    assert len(lines) == 4


def test_schedule_rejects_bad_input(book):
    b, _ = book
    with pytest.raises(ScheduleError, match="cron"):
        b.add("x", "every day", {}, "http://h:8265", store=None, now=T0)
    with pytest.raises(ScheduleError, match="schedule name"):
        b.add("bad name!", "* * * * *", {}, "http://h:8265", store=None, now=T0)
    with pytest.raises(ScheduleError, match="no schedule"):
        b.remove("missing")


def test_long_outage_fires_latest_once_quickly(book):
    # Decades down at one fire per minute: the latest fire runs once; counting the missed saturates.
    b, _ = book
    client = FakeJobClient()
    b.add("often", "* * * * *", {"name": "quickstart"}, "http://head:8265", store=None, now=T0)
    out = {r["name"]: r for r in b.run_due(datetime(2099, 1, 1, 0, 0, 30, tzinfo=timezone.utc),
                                            _submitter(client))}
    assert out["often"]["submission_id"] == "often-20990101T0000"
    assert out["often"]["missed"] == 10_000
    assert out["sweep"]["submission_id"] == "sweep-20990101T0000"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path, monkeypatch):
    """A real Ray head with its job server on 127.0.0.1, in its own process group, stopped by pid.

    Its PATH starts with this interpreter's directory, as ray-cluster.yaml arranges on a
    cluster, so that the entrypoint's `python` is the project's.
    """
    import os
    import re
    import shutil
    import signal
    import subprocess
    import sys
    import time

    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ.get('PATH', '')}", "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # loopback only
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    temp = Path("/tmp") / f"gangeo-rayhead-{os.getpid()}"  # Ray's socket paths must stay short
    cmd = [str(Path(bindir, "ray")), "start", "--head", "--block", "--port=0", "--num-cpus=2",
           "--node-ip-address=127.0.0.1",
           "--dashboard-host=127.0.0.1", "--dashboard-port=0", f"--temp-dir={temp}",
           # The tests' embedded Ray already holds the default agent port (52365): without a
           # port of its own this head's job agent never starts ("No available agent").
           f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    address, deadline = None, time.monotonic() + 90
    while address is None and time.monotonic() < deadline and proc.poll() is None:
        m = re.search(r"RAY_API_SERVER_ADDRESS='(http://127\.0\.0\.1:\d+)'", proc.stdout.readline())
        address = m.group(1) if m else None
    try:
        if address is None:
            pytest.fail("the Ray head did not report its job server address within 90 s")
        yield address
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # `ray start --block` stops the processes it started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.stdout.close()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.timeout(300)
def test_submit_end_to_end_on_a_real_ray_head(ray_head, tmp_path, capsys):
    import numpy as np

    from cluster.view import find_target_groups
    from geometry_core.distances import load_distance
    from geometry_core.generators import load_generator
    from geometry_core.metric import metric_tensor
    from cluster.codes import seed_codes
    from geometry_core.spectrum import eigen
    from jobs.submit import follow_job

    spec = tmp_path / "tiny.yaml"
    spec.write_text("name: tiny\ngenerators: [{name: dcgan-faces}]\ntargets: [mse]\ncodes: {n: 2, seed: 0}\n"
                    "chunk_size: 2\nresources: {workers: 1, cpus_per_worker: 1}\n")
    store = tmp_path / "store"
    job = submit_spec(spec, ray_head, store=str(store), submission_id="tiny-e2e")
    assert job == "tiny-e2e"
    with pytest.raises(SubmitError, match="already exists"):
        submit_spec(spec, ray_head, store=str(store), submission_id="tiny-e2e")
    lines = []

    class Sink:
        def write(self, s):
            lines.append(s)

        def flush(self):
            pass

    info = follow_job(job, ray_head, out=Sink())
    assert info["status"] == "SUCCEEDED", "".join(lines)[-2000:]
    from jobs.cli import main

    capsys.readouterr()
    assert main(["status", job, "--address", ray_head]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "SUCCEEDED"
    run = zarr.open_group(str(store), mode="r", zarr_format=3)["tiny"]
    (path,) = find_target_groups(run)
    target = run[path]
    assert (target["done"][:] == 1).all()
    G, d = load_generator("dcgan-faces"), load_distance("mse")
    want = eigen(metric_tensor(G, d, seed_codes(G, 0, slice(0, 2), n=2)))[0]  # drawn one by one (cluster.codes)
    # Same float32 computation in another process: equal to float32 round-off of the top eigenvalues.
    np.testing.assert_allclose(target["eigvals"][:, :5], want[:, :5].numpy(), rtol=1e-4)
    assert "global_eigvals" in set(target["reduce"].array_keys())


def test_schedule_add_keeps_the_specs_store_and_passes_the_endpoint(tmp_path, monkeypatch, capsys):
    import jobs.submit
    from jobs.cli import main
    from jobs.schedule import submit_entry

    spec = tmp_path / "s.yaml"
    spec.write_text("name: s3run\nstore: s3://bucket/runs\ngenerators: [dcgan-faces]\ntargets: [mse]\n"
                    "codes: {n: 2, seed: 0}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["schedule", "add", "nightly", "--cron", "0 3 * * *", "--spec", str(spec),
                 "--address", "http://127.0.0.1:8265", "--s3-endpoint", "http://127.0.0.1:9000"]) == 0
    entry = json.loads(capsys.readouterr().out)
    assert entry["store"] is None  # no --store: the job writes where the spec says, not ./gangeo-results
    calls = []
    monkeypatch.setattr(jobs.submit, "submit_spec", lambda path, address, **kw: calls.append(kw) or "job")
    assert submit_entry(entry, "nightly-1") == "job"
    assert calls == [{"store": None, "s3_endpoint": "http://127.0.0.1:9000", "submission_id": "nightly-1"}]
