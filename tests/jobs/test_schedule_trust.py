"""A schedule's stored entry never decides what a fire runs or where (issue 21).

The ``_schedules`` attributes live in a store others may write. These tests edit
them as such a writer would and check that the fire is refused in one line, that
nothing reaches the job server, and that the other schedules still fire. The same
payload is fired through a real Ray head in tests/jobs/test_submit_schedule.py.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
import zarr

from jobs.cli import main
from jobs.schedule import Firer, RayJobs, ScheduleBook, ScheduleError, trusted_entry
from tests.support.job_client import FakeJobClient
from tests.support.schedule_tamper import TINY, payload, tamper

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=timezone.utc)
HEAD = "http://127.0.0.1:8265"


@pytest.fixture
def book(tmp_path):
    from cluster.spec import parse_spec

    store = tmp_path / "store"
    b = ScheduleBook(zarr.open_group(str(store), mode="a", zarr_format=3))
    spec = parse_spec(TINY).to_dict()
    for name in ("good", "bad"):
        b.add(name, "*/15 * * * *", spec, HEAD, store=None, now=T0)
    return b, store


@pytest.mark.parametrize("fields, fragment", [
    ({"address": "http://127.0.0.1:9"}, "recorded for job server"),
    ({"python": "/tmp/evil-python"}, "recorded with python"),
    ({"s3_endpoint": "http://127.0.0.1:9"}, "recorded with s3_endpoint"),
    ({"spec": {**TINY, "codes": {"n": -1, "seed": 0}}}, "stored spec is not valid"),
])
def test_a_tampered_entry_is_refused_and_the_others_fire(book, fields, fragment):
    _, store = book
    b = tamper(store, "bad", **fields)
    client = FakeJobClient()
    out = {r["name"]: r for r in b.run_due(T0 + timedelta(minutes=15), RayJobs(Firer(HEAD), client))}
    assert client.accepted == ["good-20260101T1015Z"]  # nothing of "bad" reached the job server
    assert fragment in out["bad"]["error"] and "not fired" in out["bad"]["error"]
    assert b.list()["bad"]["last_fire"] is None  # refused fires are not recorded: fixed entries fire later


def test_stored_import_needs_the_firers_allow_import(book, tmp_path):
    _, store = book
    marker = tmp_path / "marker"
    b = tamper(store, "bad", spec=payload(marker))
    client = FakeJobClient()
    out = {r["name"]: r for r in b.run_due(T0 + timedelta(minutes=15), RayJobs(Firer(HEAD), client))}
    assert "names code to import" in out["bad"]["error"] and "--allow-import" in out["bad"]["error"]
    assert client.accepted == ["good-20260101T1015Z"]
    # The firer's own flag, not the store's, lets the import through.
    entry = trusted_entry(b.list()["bad"], Firer(HEAD, allow_import=True), run="bad-1")
    assert entry["spec"]["generators"][0]["options"]["allow_import"] is True
    assert not marker.exists()


def test_firer_values_replace_the_stored_ones(book):
    b, _ = book
    entry = trusted_entry(b.list()["good"], Firer(HEAD + "/"), run="good-1")
    assert entry["address"] == HEAD + "/" and entry["python"] is None


def _spec_file(tmp_path: Path) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return str(path)


def _one_line(capsys) -> str:
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1, out.err
    return lines[0]


def test_cli_run_due_refuses_the_payload_in_one_line(tmp_path, capsys, monkeypatch):
    import jobs.submit

    store = str(tmp_path / "store")
    assert main(["schedule", "add", "n", "--cron", "*/15 * * * *", "--spec", _spec_file(tmp_path),
                 "--address", HEAD, "--store", store, "--now", "2026-01-01T10:00"]) == 0
    capsys.readouterr()
    marker = tmp_path / "marker"
    tamper(Path(store), "n", spec=payload(marker))
    submitted = []
    monkeypatch.setattr(jobs.submit, "submit_job", lambda *a, **kw: submitted.append(a) or {"job_id": "x"})
    rc = main(["schedule", "run-due", "--store", store, "--address", HEAD, "--now", "2026-01-01T10:15"])
    line = _one_line(capsys)
    assert rc == 1 and "names code to import" in line and submitted == [] and not marker.exists()


def test_run_due_needs_the_firers_job_server(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["schedule", "run-due", "--store", str(tmp_path / "s")])
    assert exit_.value.code == 2 and "--address" in _one_line(capsys)


def test_a_date_that_never_occurs_is_refused(tmp_path, capsys):
    rc = main(["schedule", "add", "n", "--cron", "0 0 30 2 *", "--spec", _spec_file(tmp_path),
               "--address", HEAD, "--store", str(tmp_path / "store")])
    assert rc == 8 and "no fire time" in _one_line(capsys)
    assert not (tmp_path / "store").exists()


def test_a_stored_cron_that_never_fires_stops_no_other_schedule(book, capsys):
    _, store = book
    b = tamper(store, "bad", cron="0 0 30 2 *")
    listed = b.list(now=T0)
    assert listed["bad"]["next_fire"] is None and "no fire time" in listed["bad"]["error"]
    assert listed["good"]["next_fire"] == "2026-01-01T10:15:00+00:00"
    client = FakeJobClient()
    out = {r["name"]: r for r in b.run_due(T0 + timedelta(minutes=15), RayJobs(Firer(HEAD), client))}
    assert client.accepted == ["good-20260101T1015Z"] and "error" in out["bad"]
    rc = main(["schedule", "list", "--store", str(store), "--now", "2026-01-01T10:00"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["bad"]["next_fire"] is None


@pytest.mark.parametrize("now", ["9999-12-31T23:59", "0001-01-01T00:00", "soon"])
def test_now_is_bounded(tmp_path, capsys, now):
    rc = main(["schedule", "run-due", "--store", str(tmp_path / "s"), "--address", HEAD, "--now", now])
    assert rc == 8 and "--now" in _one_line(capsys)


@pytest.mark.parametrize("interval", ["0", "-1", "nan", "inf", "1e9"])
def test_interval_is_bounded(tmp_path, capsys, interval):
    rc = main(["schedule", "daemon", "--store", str(tmp_path / "s"), "--address", HEAD, "--interval", interval])
    assert rc == 8 and "--interval" in _one_line(capsys)
    assert not (tmp_path / "s").exists()


def test_check_interval():
    from jobs.schedule import check_interval

    with pytest.raises(ScheduleError):
        check_interval(0.0)
    assert check_interval(60) == 60.0
