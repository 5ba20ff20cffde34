"""Ray's control process lost in the middle of `gangeo run`: Ray's C++ core ends the driver itself (no Python
exception), so the console script watches it from a parent: one gangeo line, exit 9, nothing left running,
and the run is interrupted, not complete."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
import zarr

from jobs.cli import EXIT_CODES, main
from tests.support.processes import stop_tree, tree

REPO = Path(__file__).resolve().parents[2]


def _gangeo(*argv: str, env: dict | None = None) -> subprocess.Popen:
    """The console script as a user runs it (argv from the command line), in its own session."""
    return subprocess.Popen([sys.executable, "-m", "jobs.cli", *argv], cwd=REPO, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _session(sid: int) -> list[int]:
    out = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except (OSError, psutil.Error):
            continue
    return out


def _chunk_done(store: Path) -> bool:
    try:
        return bool(zarr.open_group(str(store), mode="r")["gk/dcgan-faces/z/mse/done"][:].any())
    except Exception:  # not created yet
        return False


def _started_run(tmp_path: Path, env: dict | None = None) -> tuple[subprocess.Popen, Path]:
    """`gangeo run` of 24 face-DCGAN codes on one worker, once its first chunk is done."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "gk", "generators": [{"name": "dcgan-faces"}], "targets": ["mse"],
                                    "codes": {"n": 24, "seed": 0}, "chunk_size": 2, "resources": {"workers": 1}}))
    store = tmp_path / "store"
    proc = _gangeo("run", str(spec), "--store", str(store), env=env)
    deadline = time.monotonic() + 200
    while not _chunk_done(store) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    return proc, store


@pytest.mark.slow  # embedded Ray in a child process, then Ray's own reconnect timeout (5 s here): ~40-80 s
@pytest.mark.timeout(300)
def test_gcs_lost_mid_run_is_one_line_exit_9_and_nothing_left_running(tmp_path, capsys):
    # Ray waits this long for its GCS before it ends the driver (60 s by default).
    proc, store = _started_run(tmp_path, env={"RAY_gcs_rpc_server_reconnect_timeout_s": "5"})
    try:
        gcs = [p for p in tree(proc.pid) if "gcs_server" in " ".join(p.cmdline()[:1])]
        assert proc.poll() is None and len(gcs) == 1, "the sweep ended before its GCS could be lost"
        gcs[0].send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=200)
    finally:
        stop_tree(proc.pid)  # only if the test failed before the run ended
    lines = err.strip().splitlines()
    assert proc.returncode == EXIT_CODES["ray"], err[-3000:]
    assert lines[-1].startswith("gangeo run: Ray failed: Ray ended the driver (status 1), as it does when its "
                                "control process (GCS) or the raylet is lost; ended ")
    assert lines[-1].endswith("the run is interrupted: `gangeo resume gk` continues it")
    assert sum(ln.startswith("gangeo ") for ln in lines) == 1 and out == ""
    assert _session(proc.pid) == []  # the raylet, workers and agents the driver had started: all ended
    assert main(["status", "gk", "--store", str(store)]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "interrupted"


def test_a_supervised_command_keeps_its_own_line_and_status(tmp_path):
    """The parent adds nothing when the command ends normally, with whatever status."""
    proc = _gangeo("run", str(tmp_path / "absent.yaml"), "--store", str(tmp_path / "s"))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_CODES["spec"] and out == ""
    assert len(err.strip().splitlines()) == 1 and "Ray" not in err
    assert _session(proc.pid) == []


@pytest.mark.slow  # embedded Ray in a child process: ~30-60 s
@pytest.mark.timeout(300)
def test_an_interrupt_sent_to_gangeo_reaches_the_driver_once(tmp_path):
    proc, _ = _started_run(tmp_path)
    try:
        assert proc.poll() is None, "the sweep ended before it could be interrupted"
        os.kill(proc.pid, signal.SIGINT)  # to the console script alone, as `kill -INT PID` does
        out, err = proc.communicate(timeout=120)
    finally:
        stop_tree(proc.pid)
    assert proc.returncode == 130, err[-3000:]
    assert [ln for ln in err.splitlines() if ln.startswith("gangeo ")] == ["gangeo run: interrupted"]
    assert "Traceback" not in err and _session(proc.pid) == []
