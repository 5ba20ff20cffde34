"""Types: mypy, with pyproject.toml's [tool.mypy], is clean on the two library layers (geometry_core, cluster).

The `test` extra pins mypy (and requirements.lock), so a missing mypy fails here rather than skipping the check.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _mypy(*args: str, cache: Path) -> subprocess.CompletedProcess:
    if importlib.util.find_spec("mypy") is None:
        pytest.fail("mypy is not installed: install the test extra (pip install -c requirements.lock -e '.[test]')")
    return subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(cache), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def test_mypy_is_clean_on_geometry_core_and_cluster(tmp_path):
    out = _mypy(cache=tmp_path / "cache")  # the packages of [tool.mypy]
    assert out.returncode == 0, f"mypy found problems:\n{out.stdout}{out.stderr}"
    assert "no issues found in" in out.stdout, out.stdout


def test_the_type_check_sees_a_violation(tmp_path):
    """The project's config is the one applied, and it reads the project's classes: a wrong return type."""
    probe = tmp_path / "probe.py"
    probe.write_text("from geometry_core.generators.base import Generator\n\n\n"
                     "def f(G: Generator) -> int:\n    return G.name\n")
    out = _mypy(str(probe), cache=tmp_path / "cache")
    assert out.returncode == 1, out.stdout + out.stderr
    assert 'Incompatible return value type (got "str", expected "int")' in out.stdout, out.stdout
