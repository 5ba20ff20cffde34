"""`gangeo head start|stop`: a local Ray head for trying submit and schedule, on loopback, with a token (issue 18)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from cluster.head import head_processes, stop_head
from jobs.cli import main
from tests.support.processes import listening


def _status(url: str, token: str | None = None) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.mark.timeout(600)
def test_head_on_loopback_with_a_token_and_stopped_by_its_directory(tmp_path, capsys):
    root = tmp_path / "head"
    head: dict = {}
    try:
        assert main(["head", "start", "--dir", str(root), "--num-cpus", "1"]) == 0
        cap = capsys.readouterr()
        head = json.loads(cap.out)
        assert "RAY_AUTH_TOKEN_PATH=" in cap.err and "gangeo head stop" in cap.err
        procs = head_processes(root)
        assert len(procs) >= 5 and head["address"].startswith("127.0.0.1:")
        # Every socket the head's processes listen on, checked here again, is on loopback.
        sockets = listening({p.pid for p in procs})
        assert sockets and all(ip in ("127.0.0.1", "::ffff:127.0.0.1", "::1") for ip, _, _ in sockets), sockets
        token_file = root / "auth_token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and head["token_file"] == str(token_file)
        token = token_file.read_text()
        jobs = head["job_server"] + "/api/jobs/"
        assert (_status(jobs), _status(jobs, token)) == (401, 200)  # nothing answers without the token
        # Ray's own client, with the environment the command printed, reaches the job server.
        code = "from ray.job_submission import JobSubmissionClient as C; import sys; print(C(sys.argv[1]).list_jobs())"
        env = {**os.environ, **head["client_env"]}
        done = subprocess.run([sys.executable, "-c", code, head["job_server"]], env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr[-2000:]
        # A second start from the same directory is refused in one line, exit 9.
        assert main(["head", "start", "--dir", str(root)]) == 9
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "already running" in err[0]
        assert main(["head", "stop", "--dir", str(root)]) == 0
        stopped = json.loads(capsys.readouterr().out)["stopped_pids"]
        assert set(stopped) >= {p.pid for p in procs}
        assert head_processes(root) == []
        assert main(["head", "stop", "--dir", str(root)]) == 0  # nothing left: a no-op
    finally:
        stop_head(root)
        if head.get("ray_dir"):
            shutil.rmtree(head["ray_dir"], ignore_errors=True)  # Ray's logs of this head, as the start printed
