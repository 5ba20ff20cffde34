"""``gangeo verify``: the report as JSON on stdout, exit 0 when clean and 1 when damage is found (each damaged
chunk a line on stderr), and a bad argument or store as one line. What is checked: tests/cluster/test_verify.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.cli import EXIT_CODES, main
from tests.support.runs import C, N, build_run

KEY = "module/z/mse"


@pytest.fixture
def run(tmp_path) -> Path:
    build_run(tmp_path / "s")
    return tmp_path / "s"


def test_verify_prints_the_report_and_names_each_damaged_chunk(run, capsys):
    assert main(["verify", "v", "--store", str(run)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["clean"] and report["groups"][KEY]["done"] == N // C
    path = run / "v" / KEY / "eigvecs" / "c" / "1" / "0" / "0"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte in the middle of the compressed chunk
    path.write_bytes(bytes(raw))
    assert main(["verify", "v", "--store", str(run)]) == 1
    out, err = capsys.readouterr()
    assert not json.loads(out)["clean"]
    assert f"{KEY} chunk 1: eigvecs: unreadable" in err


def test_verify_errors_are_one_line(tmp_path, run, capsys):
    assert main(["verify", "nope", "--store", str(run)]) == EXIT_CODES["store"]
    assert main(["verify", "v", "--store", str(tmp_path / "absent")]) == EXIT_CODES["store"]
    assert main(["verify", "v", "--store", str(run), "--rtol", "-1"]) == EXIT_CODES["usage"]
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 3, err
    assert not (tmp_path / "absent").exists()
