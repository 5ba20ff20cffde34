"""What a store may not decide, and where the processes a sweep starts listen.

A spec read back from a run's attributes never imports code unless the user
passes --allow-import on that command; an embedded Ray listens on loopback only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
import zarr

from cluster.spec import parse_spec
from jobs.cli import EXIT_CODES, main
from tests.support.processes import is_loopback, listening
from tests.support.runs import tanh_spec

REPO = Path(__file__).resolve().parents[2]


def _tamper(store: Path, run: str, marker: Path) -> None:
    """Rewrite the stored spec as an attacker with write access would: code to run, identity to match."""
    group = zarr.open_group(str(store / run), mode="r+", zarr_format=3)
    spec = dict(group.attrs["spec"])
    spec["generators"] = [{"name": "module", "spaces": ["z"], "options": {
        "arch": "subprocess:run", "arch_kwargs": {"args": ["touch", str(marker)]},
        "allow_import": True, "latent_dim": 12, "input_shape": [3, 2, 2]}}]
    group.attrs.update({"spec": spec, "identity": parse_spec(spec).identity()})


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A small finished run made through the real CLI (embedded Ray), in its own process."""
    root = tmp_path_factory.mktemp("trust")
    spec = root / "t.yaml"
    spec.write_text(yaml.safe_dump(tanh_spec("t", n=4, resources={"workers": 1},
                                         reducers={"global": True, "homogeneity": False, "anisotropy": False})))
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", "run", str(spec), "--store", str(root / "store"),
                           "--quiet"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return root / "store"


@pytest.mark.parametrize("command", ["report", "resume"])
def test_stored_import_path_never_runs(finished_run, tmp_path, capsys, command):
    store = tmp_path / "store"
    subprocess.run(["cp", "-r", str(finished_run), str(store)], check=True)
    marker = tmp_path / "PWNED"
    _tamper(store, "t", marker)
    out_dir = tmp_path / "report"
    args = [command, "t", "--store", str(store)] + (["--out", str(out_dir)] if command == "report" else ["--quiet"])
    assert main(args) == EXIT_CODES["store"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--allow-import" in err[0] and "subprocess:run" in err[0]
    assert not marker.exists()
    assert not out_dir.exists()  # nothing written on refusal


def test_allow_import_on_the_command_line_is_honoured(finished_run, tmp_path, capsys):
    out_dir = tmp_path / "report"
    assert main(["report", "t", "--store", str(finished_run), "--out", str(out_dir), "--quiet"]) == EXIT_CODES["store"]
    assert "--allow-import" in capsys.readouterr().err
    assert main(["report", "t", "--store", str(finished_run), "--out", str(out_dir), "--quiet",
                 "--allow-import"]) == 0
    html = (out_dir / "t.html").read_text()
    assert "Rows: eigenvectors 1..k of the global metric" in html  # the generator was loaded and ran


def test_embedded_sweep_listens_on_loopback_only(tmp_path):
    spec = tmp_path / "l.yaml"
    spec.write_text(yaml.safe_dump(tanh_spec("l", n=32, resources={"workers": 2})))
    before = set(psutil.pids())
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", "run", str(spec), "--store", str(tmp_path / "s"),
                             "--quiet"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen: dict[tuple[str, int], str] = {}
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        new = set(psutil.pids()) - before  # the driver and every Ray process it started
        seen.update({(ip, port): name for ip, port, name in listening(new)})
        time.sleep(0.2)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    names = set(seen.values())
    # Ray's core servers were caught listening: the check below covered them.
    assert any("gcs_server" in n for n in names) and any("raylet" in n for n in names), names
    exposed = sorted(f"{name} on {ip}:{port}" for (ip, port), name in seen.items() if not is_loopback(ip))
    assert exposed == []
