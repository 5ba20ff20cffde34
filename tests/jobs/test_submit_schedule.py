"""`gangeo submit` builds the right Ray Jobs request; `gangeo schedule` neither skips nor repeats.

Submission is tested with a stand-in for ``JobSubmissionClient`` that behaves as
Ray's does where it matters here: it reads the staged working directory at
submit time, refuses a duplicate ``submission_id`` with a RuntimeError and
answers ``get_job_info`` (404 for an unknown job). The schedule is tested with an
injected clock and that stand-in; tests/jobs/test_schedule_fires.py runs real
sweeps from it. The end-to-end test submits to a real Ray head whose ``PATH``
``python`` lacks the project's dependencies.
"""

from __future__ import annotations

import json
import shlex
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import zarr

from cluster.spec import SpecError, load_spec
from jobs.schedule import Firer, RayJobs, ScheduleBook, ScheduleError, daemon, submission_id
from jobs.submit import PROJECT_MODULES, SubmitError, submit_job, submit_spec
from tests.support.job_client import FakeJobClient, LineSink
from tests.support.processes import free_port, stop_tree

QUICKSTART = Path(__file__).resolve().parents[2] / "jobs" / "examples" / "quickstart.yaml"
T0 = datetime(2026, 1, 1, 10, 0, tzinfo=timezone.utc)


def test_submit_builds_request(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-to-be-sent")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDNOTSENT")
    client = FakeJobClient()
    job = submit_spec(QUICKSTART, "http://head:8265", store="s3://bucket/runs",
                      s3_endpoint="http://minio:9000", submission_id="qs-1", client=client)
    assert job == "qs-1"
    req = client.requests[0]
    # The job's interpreter is named, never the head's PATH `python` (issue 11).
    assert req["entrypoint"] == shlex.join([sys.executable, "-m", "jobs.cli", "run", "spec.yaml", "--address",
                                            "auto", "--s3-endpoint", "http://minio:9000"])
    env = req["runtime_env"]
    assert env["py_executable"] == sys.executable
    assert [Path(p).name for p in env["py_modules"]] == list(PROJECT_MODULES)
    assert all((Path(p) / "__init__.py").is_file() for p in env["py_modules"])
    assert "env_vars" not in env  # a driver's ray.init(runtime_env=...) must not collide with them
    assert "not-to-be-sent" not in json.dumps(req) and "AKIDNOTSENT" not in json.dumps(req)
    staged = client.staged_specs[0]
    assert staged["store"] == "s3://bucket/runs" and staged["name"] == "quickstart"
    meta = dict(req["metadata"])
    assert len(meta.pop("gangeo_spec_sha256")) == 64
    assert meta == {"gangeo_run": "quickstart", "gangeo_store": "s3://bucket/runs"}
    assert not Path(env["working_dir"]).exists()  # staging removed after the upload


def test_submit_python_override():
    client = FakeJobClient()
    submit_spec(QUICKSTART, "http://head:8265", python="/opt/gangeo/venv/bin/python", client=client)
    req = client.requests[0]
    assert req["entrypoint"].startswith("/opt/gangeo/venv/bin/python -m jobs.cli run spec.yaml")
    assert req["runtime_env"]["py_executable"] == "/opt/gangeo/venv/bin/python"
    with pytest.raises(SubmitError, match="--python"):
        submit_spec(QUICKSTART, "http://head:8265", python="  ", client=client)
    assert len(client.requests) == 1


def test_duplicate_submission_id_is_idempotent_and_bad_spec_refused(tmp_path):
    client = FakeJobClient()
    first = submit_job(QUICKSTART, "http://head:8265", submission_id="qs-1", client=client)
    assert first["job_id"] == "qs-1" and first["already_existed"] is False
    again = submit_job(QUICKSTART, "http://head:8265", submission_id="qs-1", client=client)
    assert again == {**first, "already_existed": True}
    other = tmp_path / "other.yaml"
    other.write_text(QUICKSTART.read_text().replace("seed: 0", "seed: 1"))
    assert load_spec(other).to_dict() != load_spec(QUICKSTART).to_dict()
    with pytest.raises(SubmitError, match="already names a job .* with a different spec"):
        submit_job(other, "http://head:8265", submission_id="qs-1", client=client)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ngenerators: []\ncodes: {n: -3}\nbogus: 1\n")
    with pytest.raises(SpecError) as err:
        submit_spec(bad, "http://head:8265", client=client)
    assert any(p.startswith("codes.n") for p in err.value.problems)
    assert any(p.startswith("bogus") for p in err.value.problems)
    assert len(client.requests) == 1


def test_cli_duplicate_submission_id(tmp_path, monkeypatch, capsys):
    """`gangeo submit` twice with one id: the same spec exits 0 saying so; another spec exits 7 in one line."""
    import ray.job_submission

    from jobs.cli import main

    client = FakeJobClient()
    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", lambda address: client)
    argv = ["submit", str(QUICKSTART), "--address", "http://127.0.0.1:8265", "--submission-id", "qs-7"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["already_existed"] is False
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["job_id"] == "qs-7" and out["already_existed"] is True and out["run"] == "quickstart"
    other = tmp_path / "other.yaml"
    other.write_text(QUICKSTART.read_text().replace("seed: 0", "seed: 1"))
    assert main(["submit", str(other), "--address", "http://127.0.0.1:8265", "--submission-id", "qs-7"]) == 7
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1 and "different spec" in lines[0], captured.err
    assert client.accepted == ["qs-7"]


class CrashingJobs(RayJobs):
    """RayJobs that dies once, after Ray accepted the given submission ids, before the fire is recorded."""

    def __init__(self, client, crash_after_accept=()) -> None:
        super().__init__(HEAD, client)
        self.crash = set(crash_after_accept)

    def submit(self, entry, sid):
        job = super().submit(entry, sid)
        if sid in self.crash:
            self.crash.discard(sid)
            raise KeyboardInterrupt  # the process dies before recording the fire time
        return job


QS_SPEC = load_spec(QUICKSTART).to_dict()
HEAD = Firer("http://head:8265")  # the job server the schedules below were added for


@pytest.fixture
def book(tmp_path):
    root = zarr.open_group(str(tmp_path / "store"), mode="a", zarr_format=3)
    b = ScheduleBook(root)
    b.add("sweep", "*/15 * * * *", QS_SPEC, "http://head:8265", store=None, now=T0)
    return b, tmp_path / "store"


def test_schedule_no_repeat_no_skip_across_restart(book):
    b, store = book
    client = FakeJobClient()
    jobs = CrashingJobs(client, crash_after_accept={"sweep-20260101T1030Z"})
    assert b.run_due(T0 + timedelta(minutes=14), jobs) == []
    first = b.run_due(T0 + timedelta(minutes=15), jobs)
    assert [r["submission_id"] for r in first] == ["sweep-20260101T1015Z"]
    assert first[0]["run"] == "sweep-20260101T1015Z" and client.staged_specs[0]["name"] == "sweep-20260101T1015Z"
    assert b.run_due(T0 + timedelta(minutes=16), jobs) == []  # no repeat
    with pytest.raises(KeyboardInterrupt):  # dies after Ray accepted 10:30, before recording it
        b.run_due(T0 + timedelta(minutes=31), jobs)
    # Restart: a new book on the same store resubmits 10:30 once; Ray reports the existing job.
    b2 = ScheduleBook(zarr.open_group(str(store), mode="a", zarr_format=3))
    again = b2.run_due(T0 + timedelta(minutes=32), jobs)
    assert [r["submission_id"] for r in again] == ["sweep-20260101T1030Z"]
    assert b2.list()["sweep"]["last_fire"] == "2026-01-01T10:30:00+00:00"
    assert client.accepted == ["sweep-20260101T1015Z", "sweep-20260101T1030Z"]
    # Down from 10:32 to 11:20: 10:45, 11:00 and 11:15 missed; the latest runs once.
    late = b2.run_due(T0 + timedelta(minutes=80), jobs)
    assert [(r["submission_id"], r["missed"]) for r in late] == [("sweep-20260101T1115Z", 2)]
    assert client.accepted[-1] == "sweep-20260101T1115Z" and len(client.accepted) == 3
    assert b2.list()["sweep"]["missed"] == 2


def test_failed_submission_is_retried(book):
    b, _ = book
    client = FakeJobClient()
    calls = []

    class Flaky(RayJobs):
        def submit(self, entry, sid):
            calls.append(sid)
            if len(calls) == 1:
                raise ConnectionError("head unreachable")
            return super().submit(entry, sid)

    out = b.run_due(T0 + timedelta(minutes=15), Flaky(HEAD, client))
    assert "error" in out[0] and b.list()["sweep"]["last_fire"] is None
    out = b.run_due(T0 + timedelta(minutes=17), Flaky(HEAD, client))
    assert out[0]["job_id"] == "sweep-20260101T1015Z" and calls == ["sweep-20260101T1015Z"] * 2


def test_daemon_loop_with_injected_clock(book):
    b, _ = book
    client = FakeJobClient()
    times = iter([T0 + timedelta(minutes=m) for m in range(0, 61, 1)])
    out = LineSink()
    daemon(b, RayJobs(HEAD, client), clock=lambda: next(times), sleep=lambda s: None, iterations=61, out=out)
    # Minutes 0..60: fire times 10:15, 10:30, 10:45, 11:00, each exactly once.
    assert client.accepted == [submission_id("sweep", T0 + timedelta(minutes=m)) for m in (15, 30, 45, 60)]
    assert len(out.lines) == 4


def test_schedule_rejects_bad_input(book):
    b, _ = book
    with pytest.raises(ScheduleError, match="cron"):
        b.add("x", "every day", {}, "http://h:8265", store=None, now=T0)
    with pytest.raises(ScheduleError, match="schedule name"):
        b.add("bad name!", "* * * * *", {}, "http://h:8265", store=None, now=T0)
    with pytest.raises(ScheduleError, match="no schedule"):
        b.remove("missing")
    with pytest.raises(ScheduleError, match="--overlap"):
        b.add("x", "* * * * *", {}, "http://h:8265", store=None, now=T0, overlap="later")


def test_long_outage_fires_latest_once_quickly(book):
    # Decades down at one fire per minute: the latest fire runs once; counting the missed saturates.
    b, _ = book
    client = FakeJobClient()
    b.add("often", "* * * * *", QS_SPEC, "http://head:8265", store=None, now=T0)
    out = {r["name"]: r for r in b.run_due(datetime(2099, 1, 1, 0, 0, 30, tzinfo=timezone.utc),
                                            RayJobs(HEAD, client))}
    assert out["often"]["submission_id"] == "often-20990101T0000Z"
    assert out["often"]["missed"] == 10_000
    assert out["sweep"]["submission_id"] == "sweep-20990101T0000Z"


def _bare_python_dir(tmp_path: Path) -> Path:
    """A directory whose ``python`` is the system interpreter, which lacks the project's dependencies."""
    import shutil
    import subprocess

    system = shutil.which("python3", path="/usr/bin:/bin")
    if system is None or subprocess.run([system, "-c", "import zarr"], capture_output=True).returncode == 0:
        pytest.skip("needs a system python3 without zarr")
    bare = tmp_path / "bare-bin"
    bare.mkdir()
    (bare / "python").symlink_to(system)
    return bare


@pytest.fixture
def ray_head(tmp_path, monkeypatch):
    """A real Ray head with its job server on 127.0.0.1, started by the venv's ``ray`` without activating it.

    Its ``PATH`` starts with a directory whose ``python`` lacks zarr, torch and the
    project (issue 11: a bare ``python`` entrypoint then fails with "No module
    named ..."). Stopped by pid, with every process it started; the test checks none remains.
    """
    import os
    import re
    import shutil
    import subprocess
    import time

    import psutil

    bindir = str(Path(sys.executable).parent)
    bare = _bare_python_dir(tmp_path)
    path = ":".join(p for p in os.environ.get("PATH", "").split(":")
                    if p and Path(p).resolve() != Path(bindir).resolve())
    env = {**os.environ, "PATH": f"{bare}:{path}", "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # loopback only
    env.pop("VIRTUAL_ENV", None)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    temp = Path("/tmp") / f"gangeo-rayhead-{os.getpid()}"  # Ray's socket paths must stay short
    cmd = [str(Path(bindir, "ray")), "start", "--head", "--block", "--port=0", "--num-cpus=2",
           "--node-ip-address=127.0.0.1", "--include-dashboard=true",
           "--dashboard-host=127.0.0.1", "--dashboard-port=0", f"--temp-dir={temp}",
           # The tests' embedded Ray already holds the default agent port (52365): without a
           # port of its own this head's job agent never starts ("No available agent").
           f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}"]
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
        stop_tree(proc.pid)
        proc.stdout.close()
        stray = [p.pid for p in psutil.process_iter(["cmdline"]) if str(temp) in " ".join(p.info["cmdline"] or [])]
        shutil.rmtree(temp, ignore_errors=True)
        assert stray == [], f"processes of the Ray head still run: {stray}"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_submit_end_to_end_on_a_head_without_the_venv_on_path(ray_head, tmp_path, capsys):
    """The job finds its interpreter on a head whose PATH python lacks zarr; a resubmission is idempotent."""
    import numpy as np

    from cluster.codes import seed_codes
    from cluster.view import find_target_groups
    from geometry_core.distances import load_distance
    from geometry_core.generators import load_generator
    from geometry_core.metric import metric_tensor
    from geometry_core.spectrum import eigen
    from jobs.submit import follow_job

    spec = tmp_path / "tiny.yaml"
    spec.write_text("name: tiny\ngenerators: [{name: dcgan-faces}]\ntargets: [mse]\ncodes: {n: 2, seed: 0}\n"
                    "chunk_size: 2\nresources: {workers: 1, cpus_per_worker: 1}\n")
    store = tmp_path / "store"
    first = submit_job(spec, ray_head, store=str(store), submission_id="tiny-e2e")
    assert first["job_id"] == "tiny-e2e" and first["already_existed"] is False
    again = submit_job(spec, ray_head, store=str(store), submission_id="tiny-e2e")
    assert again["job_id"] == "tiny-e2e" and again["already_existed"] is True
    other = tmp_path / "other.yaml"
    other.write_text(spec.read_text().replace("seed: 0", "seed: 1"))
    with pytest.raises(SubmitError, match="different spec"):
        submit_job(other, ray_head, store=str(store), submission_id="tiny-e2e")
    logs = LineSink()
    info = follow_job("tiny-e2e", ray_head, out=logs)
    assert info["status"] == "SUCCEEDED", "".join(logs.lines)[-2000:]
    from jobs.cli import main

    capsys.readouterr()
    assert main(["status", "tiny-e2e", "--address", ray_head]) == 0
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
    monkeypatch.setattr(jobs.submit, "submit_job",
                        lambda path, address, **kw: calls.append(kw) or {"job_id": "job"})
    assert submit_entry(entry, "nightly-1") == "job"
    assert calls == [{"store": None, "s3_endpoint": "http://127.0.0.1:9000", "submission_id": "nightly-1",
                      "python": None, "client": None}]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_planted_schedule_runs_no_code_on_a_real_head(ray_head, tmp_path, capsys):
    """Issue 21: a store writer plants an import in a schedule; the fire through a real head runs nothing of it."""
    import yaml
    from ray.job_submission import JobSubmissionClient

    from jobs.cli import main
    from jobs.submit import follow_job
    from tests.support.schedule_tamper import TINY, payload, tamper

    spec, store, marker = tmp_path / "tiny.yaml", tmp_path / "store", tmp_path / "marker"
    spec.write_text(yaml.safe_dump(TINY))
    for name in ("good", "bad"):
        assert main(["schedule", "add", name, "--cron", "*/15 * * * *", "--spec", str(spec), "--address", ray_head,
                     "--store", str(store), "--now", "2026-01-01T10:00"]) == 0
    capsys.readouterr()
    tamper(store, "bad", spec=payload(marker))
    rc = main(["schedule", "run-due", "--store", str(store), "--address", ray_head, "--now", "2026-01-01T10:15"])
    out = capsys.readouterr()
    lines = [x for x in out.err.splitlines() if x.startswith("gangeo")]  # Ray's SDK logs its uploads too
    assert rc == 1 and len(lines) == 1 and "names code to import" in lines[0], out.err
    # The other schedule fired through the same head and finished; the planted one was never submitted.
    info = follow_job("good-20260101T1015Z", ray_head, out=LineSink())
    assert info["status"] == "SUCCEEDED"
    assert [j.submission_id for j in JobSubmissionClient(ray_head).list_jobs()] == ["good-20260101T1015Z"]
    assert not marker.exists()
