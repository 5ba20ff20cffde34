"""Scheduled sweeps produce new results: one run per fire, an overlap policy, no silent overwrite (issue 11).

The clock is injected (no real sleeping). The three-fire test submits through the
real ``RayJobs.submit`` path to a stand-in job server that runs each staged spec
in this process (embedded Ray), as a head would run the job.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
import zarr

from jobs.cli import main
from jobs.schedule import Firer, RayJobs, ScheduleBook, daemon
from tests.support.job_client import FakeJobClient, LineSink

DAY = datetime(2026, 11, 26, 0, 0, tzinfo=timezone.utc)
TINY = {"name": "tiny", "generators": [{"name": "dcgan-faces"}], "targets": ["mse"], "codes": {"n": 2, "seed": 0},
        "chunk_size": 2, "keep": {"eigvecs": True, "hessian": False},
        "reducers": {"global": True, "homogeneity": False, "anisotropy": False},
        "resources": {"workers": 1, "cpus_per_worker": 1}}


def _book(tmp_path: Path) -> ScheduleBook:
    return ScheduleBook(zarr.open_group(str(tmp_path / "schedules"), mode="a", zarr_format=3))


def _spec() -> dict:
    from cluster.spec import parse_spec

    return parse_spec(TINY).to_dict()


def _run_the_job(summaries: list):
    """The head's part: run the staged spec as `python -m jobs.cli run spec.yaml` would, here."""
    from cluster.driver import run_sweep
    from cluster.spec import load_spec

    def on_submit(client, job, request):
        assert request["entrypoint"].split()[0] == sys.executable  # the job's interpreter is named
        summaries.append(run_sweep(load_spec(Path(request["runtime_env"]["working_dir"], "spec.yaml")),
                                   progress=False))

    return on_submit


@pytest.mark.slow
def test_three_fires_across_a_day_make_three_complete_runs(tmp_path, ray_local):
    from cluster.store import RunStore

    store = tmp_path / "results"
    summaries: list = []
    client = FakeJobClient(on_submit=_run_the_job(summaries))
    book = _book(tmp_path)
    book.add("day", "0 */8 * * *", _spec(), "http://127.0.0.1:8265", store=str(store),
             now=DAY - timedelta(minutes=30))
    clock = iter([DAY + timedelta(hours=h) for h in range(24)])  # 00:00 .. 23:00, one check an hour
    out = LineSink()
    daemon(book, RayJobs(Firer("http://127.0.0.1:8265"), client), clock=lambda: next(clock), sleep=lambda s: None,
           iterations=24, out=out)
    want = ["day-20261126T0000Z", "day-20261126T0800Z", "day-20261126T1600Z"]
    assert [json.loads(x)["run"] for x in out.lines] == want
    assert client.accepted == want
    # Each fire is a fresh complete run: every chunk computed, none skipped as already done.
    assert [(s["status"], s["computed"], s["skipped"]) for s in summaries] == [("complete", 1, 0)] * 3, summaries
    rs = RunStore(str(store), create=False)
    assert sorted(r["run"] for r in rs.ls()) == want
    first = None
    for run in want:
        assert rs.attrs(run)["status"] == "complete"
        (key,) = rs.attrs(run)["groups"]
        assert (rs.read(run, key, "done") == 1).all()
        eig = rs.read(run, key, "eigvals")
        assert eig.shape[0] == 2 and (eig[:, 0] > 0).all()
        first = eig if first is None else first
        assert (eig == first).all()  # the spec's seed stays: the same codes every fire
    assert book.list()["day"]["last_run"] == "day-20261126T1600Z"


def test_overlapping_fire_is_skipped_with_a_logged_line(tmp_path, caplog):
    client = FakeJobClient(initial_status="RUNNING")
    book = _book(tmp_path)
    book.add("hourly", "0 * * * *", _spec(), "http://127.0.0.1:8265", store=None, now=DAY)
    jobs = RayJobs(Firer("http://127.0.0.1:8265"), client)
    assert [r["run"] for r in book.run_due(DAY + timedelta(hours=1), jobs)] == ["hourly-20261126T0100Z"]
    with caplog.at_level(logging.WARNING, logger="gangeo.schedule"):
        (rec,) = book.run_due(DAY + timedelta(hours=2), jobs)
    assert rec["skipped"] is True and rec["run"] is None
    (line,) = [r.getMessage() for r in caplog.records]
    assert "hourly: fire 2026-11-26T02:00:00+00:00 skipped" in line
    assert "hourly-20261126T0100Z still runs" in line
    assert client.accepted == ["hourly-20261126T0100Z"] and book.list()["hourly"]["skipped"] == 1
    client.status["hourly-20261126T0100Z"] = "SUCCEEDED"
    assert book.run_due(DAY + timedelta(hours=2, minutes=30), jobs) == []  # the skipped fire stays skipped
    book.run_due(DAY + timedelta(hours=3), jobs)
    assert client.accepted == ["hourly-20261126T0100Z", "hourly-20261126T0300Z"]


def test_overlapping_fire_is_queued_until_the_previous_ends(tmp_path, caplog):
    client = FakeJobClient(initial_status="RUNNING")
    book = _book(tmp_path)
    book.add("hourly", "0 * * * *", _spec(), "http://127.0.0.1:8265", store=None, now=DAY, overlap="queue")
    jobs = RayJobs(Firer("http://127.0.0.1:8265"), client)
    book.run_due(DAY + timedelta(hours=1), jobs)
    with caplog.at_level(logging.WARNING, logger="gangeo.schedule"):
        (rec,) = book.run_due(DAY + timedelta(hours=2), jobs)
    assert rec["queued"] is True and "queued" in caplog.records[0].getMessage()
    assert book.run_due(DAY + timedelta(hours=2, minutes=20), jobs) == []  # still running: it waits
    client.status["hourly-20261126T0100Z"] = "SUCCEEDED"
    (rec,) = book.run_due(DAY + timedelta(hours=2, minutes=40), jobs)
    assert rec["run"] == "hourly-20261126T0200Z" and client.staged_specs[-1]["name"] == "hourly-20261126T0200Z"
    assert book.list()["hourly"]["queued"] is None
    # Two fires while one runs: only the latest waits, the replaced one counts as missed.
    book.run_due(DAY + timedelta(hours=3), jobs)
    book.run_due(DAY + timedelta(hours=4), jobs)
    assert book.list()["hourly"]["queued"] == "2026-11-26T04:00:00+00:00"
    assert book.list()["hourly"]["missed"] == 1
    client.status["hourly-20261126T0200Z"] = "SUCCEEDED"
    book.run_due(DAY + timedelta(hours=4, minutes=10), jobs)
    assert client.accepted == ["hourly-20261126T0100Z", "hourly-20261126T0200Z", "hourly-20261126T0400Z"]


def _files(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _spec_file(tmp_path: Path) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return str(path)


def test_add_refuses_an_existing_name_unless_replace(tmp_path, capsys):
    store = str(tmp_path / "schedules")
    add = ["schedule", "add", "nightly", "--spec", _spec_file(tmp_path), "--address", "http://127.0.0.1:8265",
           "--store", store]
    assert main([*add, "--cron", "0 3 * * *"]) == 0
    capsys.readouterr()
    before = _files(tmp_path)
    assert main([*add, "--cron", "0 4 * * *"]) == 8
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1 and "'nightly' exists" in lines[0] and "--replace" in lines[0], err
    assert _files(tmp_path) == before
    assert main([*add, "--cron", "0 4 * * *", "--replace", "--overlap", "queue"]) == 0
    entry = json.loads(capsys.readouterr().out)
    assert entry["cron"] == "0 4 * * *" and entry["overlap"] == "queue"


def test_list_shows_the_next_fire_time(tmp_path, capsys):
    store = str(tmp_path / "schedules")
    assert main(["schedule", "add", "nightly", "--cron", "0 3 * * *", "--spec", _spec_file(tmp_path),
                 "--address", "http://127.0.0.1:8265", "--store", store]) == 0
    capsys.readouterr()
    assert main(["schedule", "list", "--store", store, "--now", "2026-11-26T03:00:01"]) == 0
    assert json.loads(capsys.readouterr().out)["nightly"]["next_fire"] == "2026-11-27T03:00:00+00:00"


@pytest.mark.parametrize("cron, fragments", [
    ("61 3 * * *", ["field 1, minute", "got 61", "allowed 0-59"]),
    ("0 24 * * *", ["field 2, hour", "got 24", "allowed 0-23"]),
    ("0 3 0 * *", ["field 3, day of month", "got 0", "allowed 1-31"]),
    ("0 3 * 13 *", ["field 4, month", "got 13", "allowed 1-12"]),
    ("0 3 * * 9", ["field 5, day of week", "got 9", "allowed 0-7"]),
    ("*/0 3 * * *", ["field 1, minute", "step 0"]),
    ("0 3 * *", ["expected 5 fields", "got 4"]),
    ("0 3 * * * *", ["expected 5 fields", "got 6"]),
])
def test_cron_errors_say_what_is_wrong(cron, fragments, tmp_path, capsys):
    before = _files(tmp_path)
    rc = main(["schedule", "add", "n", "--cron", cron, "--spec", str(Path(__file__)), "--address",
               "http://127.0.0.1:8265", "--store", str(tmp_path / "schedules")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 8 and len(lines) == 1, lines
    assert all(f in lines[0] for f in fragments), lines[0]
    assert _files(tmp_path) == before
