"""`--address` means a Ray cluster for run/resume/reduce and a job server for submit/status (issue 11).

A job server URL given where a cluster is needed is refused in one line, exit 9,
before Ray is touched and before anything is written.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.cli import build_parser, main

QUICKSTART = Path(__file__).resolve().parents[2] / "jobs" / "examples" / "quickstart.yaml"


def _files(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("argv", [
    ["run", str(QUICKSTART), "--quiet"],
    ["run", str(QUICKSTART)],  # refused before the first progress line
    ["resume", "quickstart", "--quiet"],
    ["reduce", "quickstart", "--quiet"],
])
def test_job_server_url_where_a_cluster_is_needed(argv, tmp_path, capsys):
    store = tmp_path / "store"
    if argv[0] != "run":  # resume and reduce need an existing run: a store with one, not touched
        from cluster.spec import load_spec
        from cluster.store import RunStore

        RunStore(str(store)).create("quickstart", load_spec(QUICKSTART).with_store(str(store)), [])
    before = _files(tmp_path)
    rc = main([*argv, "--store", str(store), "--address", "http://127.0.0.1:8265"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 9, err
    assert len(lines) == 1, err
    assert "job server" in lines[0] and "HOST:PORT" in lines[0] and "gangeo submit" in lines[0]
    assert "Traceback" not in err
    assert _files(tmp_path) == before


def _help(command: str) -> str:
    parser = build_parser()[0]
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return " ".join(sub.format_help().split())


@pytest.mark.parametrize("command", ["run", "resume", "reduce"])
def test_help_says_cluster_address(command):
    text = _help(command)
    assert "--address CLUSTER" in text and "HOST:PORT" in text and "ray://" in text
    assert "not the job server's http:// URL" in text


@pytest.mark.parametrize("command", ["submit", "status", "job-status"])
def test_help_says_job_server_address(command):
    text = _help(command)
    assert "--address JOB_SERVER" in text and "http://HEAD:8265" in text


@pytest.mark.parametrize("argv", [
    ["run", str(QUICKSTART), "--quiet"],
    ["resume", "quickstart", "--quiet"],
    ["reduce", "quickstart", "--quiet"],
])
def test_cluster_address_where_no_head_answers(argv, tmp_path, capsys):
    from tests.support.processes import free_port

    store = tmp_path / "store"
    if argv[0] != "run":
        from cluster.spec import load_spec
        from cluster.store import RunStore

        RunStore(str(store)).create("quickstart", load_spec(QUICKSTART).with_store(str(store)), [])
    before = _files(tmp_path)
    address = f"127.0.0.1:{free_port()}"  # nothing listens there: Ray would retry it for minutes
    rc = main([*argv, "--store", str(store), "--address", address])
    err = capsys.readouterr().err
    assert rc == 9, err
    assert err.strip().splitlines() == [f"gangeo {argv[0]}: no Ray head answers at {address} (Connection refused); "
                                        "start one with `ray start --head` there, or give the head's GCS address "
                                        "(HOST:PORT)"]
    assert _files(tmp_path) == before


def test_a_head_that_answered_is_probed_once(monkeypatch):
    import socket

    import cluster.ray_runtime as rr

    monkeypatch.setattr(rr, "_ANSWERED", set())
    with socket.socket() as head:
        head.bind(("127.0.0.1", 0))
        head.listen(8)
        address = "127.0.0.1:%d" % head.getsockname()[1]
        rr.check_cluster_address(address)  # the driver, before its first progress line
        rr.check_cluster_address(address)  # init_ray, joining the same head
        head.settimeout(0.5)
        accepted = []
        try:
            while True:
                accepted.append(head.accept()[0])
        except TimeoutError:
            pass
        for conn in accepted:
            conn.close()
    assert len(accepted) == 1


def test_a_failure_inside_ray_is_one_line_of_kind_ray(capsys, monkeypatch):
    import argparse

    import ray
    import ray.exceptions

    from cluster.ray_runtime import as_ray_error
    from jobs.cli import run_command

    def lost_head(args):
        raise ray.exceptions.RaySystemError("GCS lost\n(and a long dump below)")

    # What this process started of Ray is ended; spied here, so the session's shared Ray stays up for other tests.
    shutdowns = []
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "shutdown", lambda: shutdowns.append(1))
    rc = run_command(argparse.Namespace(command="run", func=lost_head))
    assert rc == 9 and shutdowns == [1]
    assert capsys.readouterr().err.strip().splitlines() == [
        "gangeo run: Ray failed: RaySystemError: System error: GCS lost"]
    try:
        raise ValueError("not Ray's")
    except ValueError as exc:
        assert as_ray_error(exc) is None


def test_an_error_a_ray_task_raised_is_that_error_and_a_bug_keeps_its_traceback(capsys):
    import argparse

    import ray.exceptions

    from cluster.storage import StoreError
    from jobs.cli import run_command

    def task_failed(cause):
        def func(args):
            raise ray.exceptions.RayTaskError("_tile", "Traceback (most recent call last): ...", cause)
        return func

    rc = run_command(argparse.Namespace(command="reduce", func=task_failed(StoreError("run 'x' is locked"))))
    assert rc == 5
    assert capsys.readouterr().err.strip().splitlines() == ["gangeo reduce: run 'x' is locked"]
    with pytest.raises(ray.exceptions.RayTaskError):  # a bug in a task is not Ray failing
        run_command(argparse.Namespace(command="reduce", func=task_failed(ZeroDivisionError("bug"))))
