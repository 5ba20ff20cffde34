"""Run locks never follow links out of the store and never trust a record's fields (issue 21)."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

from cluster.lock import MAX_LEASE, RunLock, RunLockedError, is_stale, lock_info, pid_started
from cluster.storage import StoreError


def _record(**fields) -> bytes:
    now = time.time()
    info = {"owner": "x", "host": "elsewhere", "pid": 4242, "heartbeat": now, "expires": now + 60, **fields}
    return json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {"lock": info}}).encode()


@pytest.fixture
def outside(tmp_path) -> Path:
    """A directory outside the store holding a file that gangeo must never touch."""
    d = tmp_path / "elsewhere"
    d.mkdir()
    (d / "zarr.json").write_text("precious")
    return d


def _untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == ["zarr.json"]
    assert (outside / "zarr.json").read_text() == "precious"


@pytest.mark.parametrize("where", ["run dir", "lock file", "locks dir"])
def test_a_link_in_the_lock_path_is_refused_and_nothing_outside_changes(tmp_path, outside, where):
    store = tmp_path / "store"
    (store / "_locks" / "r").mkdir(parents=True)
    if where == "run dir":
        (store / "_locks" / "r").rmdir()
        (store / "_locks" / "r").symlink_to(outside)
    elif where == "lock file":
        (store / "_locks" / "r" / "zarr.json").symlink_to(outside / "zarr.json")
    else:
        (store / "_locks" / "r").rmdir()
        (store / "_locks").rmdir()
        (store / "_locks").symlink_to(outside)
    with pytest.raises(StoreError, match="symbolic link") as err:
        RunLock(str(store), "r").acquire()
    assert "\n" not in str(err.value)
    _untouched(outside)


def test_a_foreign_lock_holds_at_most_max_lease_after_its_heartbeat():
    now = time.time()
    year = 365 * 86400.0
    held = {"owner": "x", "host": "elsewhere", "pid": 7, "heartbeat": now - 5, "expires": now + year}
    assert not is_stale(held, now)
    assert is_stale({**held, "heartbeat": now - MAX_LEASE - 1}, now)
    # Clock skew up to MAX_LEASE is tolerated; a heartbeat further ahead is no heartbeat.
    assert not is_stale({**held, "heartbeat": now + MAX_LEASE / 2}, now)
    assert is_stale({**held, "heartbeat": now + year}, now)


def test_a_lock_of_this_host_naming_an_unrelated_live_pid_is_stale():
    now = time.time()
    parent = os.getppid()  # alive, and not the driver that wrote the record
    started = pid_started(parent)
    if started is None:
        pytest.skip("no /proc start times here")
    info = {"owner": "x", "host": socket.gethostname(), "pid": parent, "heartbeat": now, "expires": now + 60}
    assert is_stale({**info, "pid_start": started + 1}, now)
    assert not is_stale({**info, "pid_start": started}, now)


@pytest.mark.parametrize("fields", [
    {"expires": "abc"}, {"pid": 10**30}, {"pid": True}, {"pid": -3}, {"heartbeat": float("nan")},
    {"host": 5}, {"owner": None}, {"pid_start": "x"},
])
def test_malformed_lock_fields_are_stale_never_a_traceback(tmp_path, fields):
    store = tmp_path / "store"
    (store / "_locks" / "r").mkdir(parents=True)
    (store / "_locks" / "r" / "zarr.json").write_bytes(_record(**fields))
    assert lock_info(str(store), "r") == {}
    lock = RunLock(str(store), "r").acquire()  # taken over, no traceback
    try:
        assert lock.took_over == {}
    finally:
        lock.release()


def test_a_valid_foreign_lock_still_refuses(tmp_path):
    store = tmp_path / "store"
    (store / "_locks" / "r").mkdir(parents=True)
    (store / "_locks" / "r" / "zarr.json").write_bytes(_record())
    with pytest.raises(RunLockedError, match="another driver"):
        RunLock(str(store), "r").acquire()


def test_a_zombie_driver_is_dead_and_its_lock_is_taken_over(tmp_path):
    """A driver killed with the process that supervised it may stay a zombie (nothing reaps it)."""
    import subprocess
    import sys

    from cluster.lock import pid_alive

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    try:
        assert not pid_alive(child.pid) and pid_alive(os.getpid())
        now = time.time()
        info = {"owner": "x", "host": socket.gethostname(), "pid": child.pid, "heartbeat": now, "expires": now + 60}
        assert is_stale(info, now=now)
    finally:
        child.wait()
