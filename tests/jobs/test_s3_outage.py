"""An S3 store that stops answering: every command ends in one line and exit 5, never a traceback (issue 21).

The test starts its own moto server on 127.0.0.1, writes a finished run there, stops
the server, and asks the CLI about the run.
"""

from __future__ import annotations

import pytest

from jobs.cli import main
from tests.support.runs import build_run
from tests.support.s3_server import S3Server


@pytest.fixture
def gone_store(monkeypatch):
    """(store URL, endpoint) of a run on an S3 server that has since stopped."""
    server = S3Server().start()
    try:
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        url = server.new_bucket("outage") + "/runs"
        build_run(url, "v")
    finally:
        server.stop()
    return url, server.endpoint


@pytest.mark.parametrize("argv", [["status", "v"], ["query", "v", "--array", "eigvals"], ["ls"],
                                  ["reduce", "v", "--no-ray", "--quiet"], ["verify", "v"]])
def test_a_store_that_stopped_answering_is_one_line_exit_5(gone_store, capsys, argv):
    url, endpoint = gone_store
    rc = main([*argv, "--store", url, "--s3-endpoint", endpoint])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 5, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"gangeo {argv[0]}: ")


@pytest.fixture
def outage_of(monkeypatch):
    """``start(n)``: (store URL, endpoint, proxy) of a run behind a proxy whose next ``n`` chunk reads fail
    with 503 SlowDown: more than s3fs and botocore retry within one read (about 70 here)."""
    from tests.support.fault_proxy import FaultProxy

    server = S3Server().start()
    proxies = []

    def start(n: int):
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        url = server.new_bucket("burst") + "/runs"
        build_run(url, "v")
        proxies.append(FaultProxy(server.endpoint, match=r"^GET .*/c/", fail_first=n).start())
        return url, proxies[-1].endpoint, proxies[-1]

    try:
        yield start
    finally:
        for proxy in proxies:
            proxy.stop()
        server.stop()


@pytest.mark.parametrize("argv", [["query", "v", "--array", "eigvals"], ["verify", "v"]])
def test_a_burst_of_failing_reads_is_waited_out(outage_of, capsys, argv):
    """Reads are retried like writes: 100 failed reads in a row (about 25 s) end in the right answer, exit 0."""
    url, endpoint, proxy = outage_of(100)
    rc = main([*argv, "--store", url, "--s3-endpoint", endpoint])
    cap = capsys.readouterr()
    assert rc == 0, cap.err[-2000:]
    assert sum(proxy.faults.values()) == 100  # the burst happened, and was waited out
    if argv[0] == "query":
        assert "eigvals" in cap.out


@pytest.fixture
def failing_reads(monkeypatch):
    """(store URL, endpoint) of a run behind a proxy whose every chunk read fails with 503 SlowDown,
    as an S3 endpoint that falls over after the store was opened."""
    from tests.support.fault_proxy import FaultProxy

    server = S3Server().start()
    proxy = None
    try:
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        url = server.new_bucket("flaky") + "/runs"
        build_run(url, "v")
        proxy = FaultProxy(server.endpoint, match=r"^GET .*/c/", fail_first=10**6).start()
        yield url, proxy.endpoint
    finally:
        if proxy is not None:
            proxy.stop()
        server.stop()


@pytest.mark.parametrize("argv", [["reduce", "v", "--no-ray", "--quiet"]])  # each case waits out S3 retries
def test_reads_failing_after_the_store_opened_are_one_line_exit_5(failing_reads, capsys, argv):
    url, endpoint = failing_reads
    rc = main([*argv, "--store", url, "--s3-endpoint", endpoint])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 5, err[-3000:]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert lines[0].startswith(f"gangeo {argv[0]}: the store s3://") and "stopped answering" in lines[0], lines
