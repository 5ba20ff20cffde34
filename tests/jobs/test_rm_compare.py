"""`gangeo rm` and `gangeo compare` on stored runs of the face DCGAN, through the real CLI.

Runs are written by the workers' own chunk computation and reduced in this process
(``tests.support.stored_runs``); rm is checked on a local directory and on moto's S3
server on loopback.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from jobs.cli import main
from tests.support.stored_runs import write_run


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _ls(store: str, capsys) -> list[str]:
    capsys.readouterr()
    assert main(["ls", "--store", store]) == 0
    return [r["run"] for r in json.loads(capsys.readouterr().out)["runs"]]


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> Path:
    """Two unreduced two-code runs, ``a`` and ``b``; tests copy it before changing anything."""
    root = tmp_path_factory.mktemp("rm") / "store"
    write_run(root, "a", n=2, reduce=False)
    write_run(root, "b", n=2, reduce=False)
    return root


@pytest.fixture
def store(small_store, tmp_path) -> Path:
    return Path(shutil.copytree(small_store, tmp_path / "store"))


# ---- rm ----


def test_rm_yes_deletes_the_run_and_ls_no_longer_lists_it(store, capsys):
    assert _ls(str(store), capsys) == ["a", "b"]
    assert main(["rm", "a", "--store", str(store), "--yes"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"run": "a", "store": str(store), "deleted": True}
    assert not (store / "a").exists()
    assert _ls(str(store), capsys) == ["b"]
    assert not (store / "_locks" / "a").exists()  # rm's own lock is gone with it
    assert main(["status", "b", "--store", str(store)]) == 0  # the other run is untouched


def test_rm_on_s3_deletes_every_key_of_the_run(s3_server, capsys):
    url = s3_server.new_bucket("rm") + "/runs"
    write_run(url, "a", n=2, reduce=False)
    write_run(url, "b", n=2, reduce=False)
    before = s3_server.keys(url)
    assert any(k.startswith("runs/a/") for k in before)
    assert main(["rm", "a", "--store", url, "--yes"]) == 0
    after = s3_server.keys(url)
    assert not [k for k in after if k.startswith("runs/a/")]
    assert sorted(k for k in before if k.startswith("runs/b/")) == sorted(k for k in after if k.startswith("runs/b/"))
    assert _ls(url, capsys) == ["b"]


def _refused(argv, capsys, code: int, fragment: str, root: Path) -> None:
    before = _snapshot(root)
    capsys.readouterr()
    assert main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gangeo rm: ") and fragment in err[0], err
    assert _snapshot(root) == before  # nothing deleted, nothing written


def test_rm_unknown_run_refused_exit_5(store, capsys):
    _refused(["rm", "zz", "--store", str(store), "--yes"], capsys, 5, "no run 'zz'", store)


def test_rm_run_of_a_live_driver_refused_exit_5(store, capsys):
    from cluster.lock import RunLock

    with RunLock(str(store), "a"):  # as a driver holds it while it writes
        _refused(["rm", "a", "--store", str(store), "--yes"], capsys, 5, "live driver", store)
    assert (store / "a" / "zarr.json").exists()


def test_rm_without_yes_off_a_terminal_refused_saying_how(store, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))  # not a TTY: never read
    _refused(["rm", "a", "--store", str(store)], capsys, 2, "pass --yes", store)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("answer, deleted", [("y\n", True), ("n\n", False), ("\n", False)])
def test_rm_on_a_terminal_asks(store, capsys, monkeypatch, answer, deleted):
    monkeypatch.setattr("sys.stdin", _Terminal(answer))
    code = main(["rm", "a", "--store", str(store)])
    err = capsys.readouterr().err
    assert "delete run 'a'" in err and "[y/N]" in err
    assert (code == 0) is deleted and (store / "a").exists() is not deleted
    if not deleted:
        assert code == 2 and "not deleted" in err
