"""Issue 13, finding 3: a deleted or damaged chunk never counts.

A chunk counts as done only when its ``done`` entry, its data and its recorded
checksum agree: ``query``, ``reduce`` and ``report`` refuse naming group, array and
chunk (or skip with ``--skip-damaged`` and say how many); ``resume`` recomputes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from jobs.cli import EXIT_CODES, main
from tests.support.runs import C, N, build_run

KEY = "module/z/mse"
SWEEP = ("z", "eigvals", "eigvecs", "hessian")


def _damage(store: Path) -> None:
    """Delete eigvecs chunk 2 and flip one byte of eigvecs chunk 1."""
    base = store / "v" / KEY / "eigvecs" / "c"
    (base / "2" / "0" / "0").unlink()
    path = base / "1" / "0" / "0"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.fixture
def damaged(tmp_path) -> tuple[Path, dict]:
    store = tmp_path / "s"
    build_run(store)
    g = zarr.open_group(store / "v" / KEY, mode="r")
    ref = {name: np.asarray(g[name][:]) for name in SWEEP}
    _damage(store)
    return store, ref


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("index", [None, "4:6", "2"])
def test_query_refuses_damaged_chunk(damaged, capsys, index):
    store, _ = damaged
    argv = ["query", "v", "--store", str(store), "--array", "eigvecs"] + (["--index", index] if index else [])
    assert main(argv) == EXIT_CODES["store"]
    out, err = capsys.readouterr()
    line = _one_line(err)
    chunk = 1 if index in (None, "2") else 2
    assert out == "" and KEY in line and "eigvecs" in line and f"chunk {chunk}" in line


def test_query_of_an_intact_chunk_and_skip_flag(damaged, capsys):
    store, ref = damaged
    assert main(["query", "v", "--store", str(store), "--array", "eigvals", "--index", "0:2"]) == 0
    got = np.asarray(json.loads(capsys.readouterr().out)["data"])
    np.testing.assert_array_equal(got, ref["eigvals"][0:2])
    assert main(["query", "v", "--store", str(store), "--array", "eigvals", "--skip-damaged"]) == 0
    out, err = capsys.readouterr()
    got = np.asarray(json.loads(out)["data"], dtype=float)
    assert "skipped 2 damaged chunks" in _one_line(err)
    assert np.isnan(got[2:6]).all() and np.array_equal(got[[0, 1, 6, 7]], ref["eigvals"][[0, 1, 6, 7]])


def test_reduce_refuses_then_skips_and_counts(damaged, capsys):
    store, _ = damaged
    assert main(["reduce", "v", "--store", str(store), "--no-ray", "--quiet"]) == EXIT_CODES["store"]
    line = _one_line(capsys.readouterr().err)
    assert KEY in line and "eigvecs" in line and "chunk 1" in line and "1 more damaged" in line
    assert main(["reduce", "v", "--store", str(store), "--no-ray", "--quiet", "--skip-damaged"]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)["groups"][KEY]
    assert "skipped 2 damaged chunks" in _one_line(err)
    assert summary["damaged_skipped"] == [1, 2] and summary["n_used"] == N - 2 * C and not summary["complete"]


def test_report_refuses_damaged_chunk(damaged, tmp_path, capsys):
    store, _ = damaged
    out_dir = tmp_path / "rep"
    assert main(["report", "v", "--store", str(store), "--no-traversals", "--quiet",
                 "--out", str(out_dir)]) == EXIT_CODES["store"]
    line = _one_line(capsys.readouterr().err)
    assert KEY in line and "chunk 1" in line and not out_dir.exists()


def test_resume_recomputes_damaged_chunks(ray_local, damaged, capsys):
    store, ref = damaged
    assert main(["resume", "v", "--store", str(store), "--quiet", "--allow-import"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["computed"] == 2 and summary["skipped"] == N // C - 2
    g = zarr.open_group(store / "v" / KEY, mode="r")
    for name in SWEEP:  # the same codes and the same deterministic computation as the undisturbed run
        np.testing.assert_array_equal(np.asarray(g[name][:]), ref[name], err_msg=name)
    assert main(["verify", "v", "--store", str(store)]) == 0
    assert json.loads(capsys.readouterr().out)["clean"]


def test_report_skip_flag_says_how_many(damaged, tmp_path, capsys):
    store, _ = damaged
    assert main(["report", "v", "--store", str(store), "--no-traversals", "--quiet", "--skip-damaged",
                 "--out", str(tmp_path / "rep")]) == 0
    assert "skipped 2 damaged chunks" in _one_line(capsys.readouterr().err)
    assert (tmp_path / "rep" / "v.html").is_file()
