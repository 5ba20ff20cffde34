"""Lint: ruff, with the rules of pyproject.toml's [tool.ruff], is clean on the whole tree.

CI runs `make test`, which installs the `test` extra (ruff pinned there and in requirements.lock),
so a missing ruff fails here rather than skipping the check.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DIRS = ["geometry_core", "cluster", "jobs", "bench", "tests"]


def _ruff(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    if importlib.util.find_spec("ruff") is None:
        pytest.fail("ruff is not installed: install the test extra (pip install -c requirements.lock -e '.[test]')")
    return subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *args], cwd=REPO, input=stdin,
                          capture_output=True, text=True, timeout=300)


def test_ruff_check_is_clean():
    out = _ruff(*DIRS)
    assert out.returncode == 0, f"ruff check {' '.join(DIRS)} found problems:\n{out.stdout}{out.stderr}"


def test_the_lint_check_sees_a_violation():
    """The project's config is the one applied (stdin named as a file of the tree): imports out of order and a
    line over 120 columns are both reported."""
    bad = "import sys\nimport os\n\nX = '" + "x" * 120 + "'\nprint(os, sys)\n"
    out = _ruff("--stdin-filename", "geometry_core/_lint_probe.py", "-", stdin=bad)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "I001" in out.stdout and "E501" in out.stdout, out.stdout
