"""``gangeo models``: the catalogue listed (JSON and a table), an entry fetched from a loopback mirror and its
pin reported, and fetch errors as one line. The catalogue's downloads themselves: tests/core/test_catalog.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from geometry_core.generators.catalog import CATALOG
from jobs.cli import EXIT_CODES, main  # in-process where no process boundary is observed
from tests.support.biggan import biggan_deep_files
from tests.support.mirror import serve_entry

ROOT = Path(__file__).resolve().parents[2]


def _gangeo(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.mark.slow  # three CLI processes, each importing torch (about 7 s each on a busy 2-core machine)
def test_cli_models_lists_fetches_and_reports_pins(mirror, monkeypatch):
    serve_entry(mirror, "biggan-deep-256", biggan_deep_files(), monkeypatch)

    listed = _gangeo("models")
    assert listed.returncode == 0, listed.stderr
    out = json.loads(listed.stdout)
    assert out["cache"] == os.environ["GANGEO_HOME"]
    rows = {r["name"]: r for r in out["models"]}
    assert set(rows) == set(CATALOG)
    assert rows["pggan-celebahq-256"]["files"][0]["check"] == "published sha256 6196db68"
    assert rows["biggan-deep-256"]["cached"] is False
    assert rows["biggan-deep-256"]["files"][0]["pinned_on_first_use"] is True

    fetched = _gangeo("models", "fetch", "biggan-deep-256")
    assert fetched.returncode == 0, fetched.stderr
    record = json.loads(fetched.stdout)
    assert record["name"] == "biggan-deep-256" and record["cached"] is True
    assert f"downloading {mirror.url}/biggan-deep-256/pytorch_model.bin" in fetched.stderr

    table = _gangeo("models", "--format", "table")
    assert table.returncode == 0, table.stderr
    line = next(ln for ln in table.stdout.splitlines() if ln.startswith("biggan-deep-256 "))
    assert " yes " in line and "pinned on first use: " in line and str(Path(os.environ["GANGEO_HOME"])) in line
    assert " no " in next(ln for ln in table.stdout.splitlines() if ln.startswith("biggan-deep-128 "))


def test_cli_models_fetch_errors_are_one_line(mirror, monkeypatch, capsys):
    assert main(["models", "fetch", "nope"]) == EXIT_CODES["geometry"]
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "unknown catalogue entry 'nope'" in err
    assert main(["models", "fetch"]) == EXIT_CODES["usage"]
    assert "give catalogue names, or --all" in capsys.readouterr().err
    monkeypatch.setenv("GANGEO_OFFLINE", "1")
    assert main(["models", "fetch", "dcgan-fashiongen"]) == EXIT_CODES["weights"]
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "downloads are off" in err
    assert mirror.requests == []
