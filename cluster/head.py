"""A local Ray head on 127.0.0.1 with token authentication, for trying `submit`, `job-status` and `schedule`.

Example::

    from cluster.head import start_head, stop_head
    head = start_head("./gangeo-head")      # {"address": "127.0.0.1:PORT", "job_server": "http://127.0.0.1:PORT",
                                            #  "token_file": ".../auth_token", "pids": [...], "listening": [...]}
    stop_head("./gangeo-head")              # ends exactly the processes of that head

``ray start --head --node-ip-address 127.0.0.1`` alone binds the GCS, the raylet and
the agents to every interface, and leaves authentication off. This head runs with
Ray's cluster mode off (as gangeo's embedded Ray does), so each of its processes
binds 127.0.0.1, and with ``RAY_AUTH_MODE=token`` and a fresh token in a 0600 file
under its directory. Clients need ``RAY_AUTH_MODE=token`` and
``RAY_AUTH_TOKEN_PATH=<token_file>`` (``client_env``). Every listening socket of the
head is checked after start: one that is not on loopback stops the head (fail closed).

The head's processes are found by its own Ray temp directory (on their command lines;
``gangeo-head-<digest of its directory>`` under the system's temp directory, short because
Ray's socket paths must fit 107 bytes), never by name: stopping it ends nothing else
(no ``ray stop``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .ray_runtime import LOOPBACK, RayStartError

__all__ = ["client_env", "head_processes", "start_head", "stop_head"]

RECORD = "head.json"
TOKEN = "auth_token"
_START_S = 180.0
_RAY_CLI = "import sys; from ray.scripts.scripts import main; sys.argv[0] = 'ray'; sys.exit(main())"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _ray_dir(root: str | os.PathLike) -> Path:
    """Ray's temp directory for the head of ``root``: short, as Ray's socket paths must fit 107 bytes."""
    digest = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"gangeo-head-{digest}"


def client_env(token_file: str | os.PathLike) -> dict[str, str]:
    """What a client of the head needs in its environment (``gangeo submit``, ``schedule``)."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)}


def head_processes(root: str | os.PathLike) -> list:
    """The live processes of the head under ``root``: those whose command line names its temp directory, and
    every process they started."""
    import psutil

    marker = str(_ray_dir(root))
    found: dict[int, object] = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in arg for arg in proc.info["cmdline"] or ()):
                # and what they started: agents and workers retitle themselves (ray::DashboardAgent)
                found.update({p.pid: p for p in (proc, *proc.children(recursive=True))})
        except (psutil.Error, TypeError):
            continue
    return list(found.values())


def _on_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:127.0.0.1, a dual-stack socket bound to loopback
    return addr.is_loopback or (mapped is not None and mapped.is_loopback)


def _listening(procs: list) -> list[tuple[str, int]]:
    import psutil

    pids = {p.pid for p in procs}
    return sorted({(c.laddr.ip, c.laddr.port) for c in psutil.net_connections(kind="inet")
                   if c.pid in pids and c.laddr and (c.status == psutil.CONN_LISTEN or (c.type == 2 and not c.raddr))})


def _wait_answers(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection((LOOPBACK, port), timeout=2).close()
            time.sleep(2.0)  # the agents register with the raylet just after
            return
        except OSError:
            time.sleep(0.5)


def start_head(root: str | os.PathLike, *, num_cpus: int | None = None, timeout_s: float = _START_S) -> dict:
    """Start the head under directory ``root`` (created); its record is also written to ``root/head.json``."""
    root = Path(root).resolve()
    if (root / RECORD).exists() and head_processes(root):
        raise RayStartError(f"a head is already running from {root}; `gangeo head stop --dir {root}` first")
    root.mkdir(parents=True, exist_ok=True)
    token_file = root / TOKEN
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
    gcs, dashboard = _free_port(), _free_port()
    env = {**os.environ, **client_env(token_file), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-c", _RAY_CLI, "start", "--head", f"--node-ip-address={LOOPBACK}",
           f"--port={gcs}", f"--dashboard-host={LOOPBACK}", f"--dashboard-port={dashboard}", "--include-dashboard=true",
           f"--ray-client-server-port={_free_port()}", f"--temp-dir={_ray_dir(root)}", "--disable-usage-stats",
           f"--num-cpus={num_cpus or os.cpu_count() or 1}",
           # Ray's fixed default ports (the agent's 52365, ...) would clash with another Ray on this machine.
           *(f"--{name}-port={_free_port()}" for name in (
               "node-manager", "object-manager", "runtime-env-agent", "metrics-export", "dashboard-agent-listen",
               "dashboard-agent-grpc"))]
    log = root / "ray-start.log"
    with open(log, "wb") as out:
        done = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s, check=False)
    if done.returncode != 0:
        stop_head(root)
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise RayStartError(f"the Ray head did not start (exit {done.returncode}): {tail[0][:300]}; log: {log}")
    _wait_answers(dashboard, timeout_s)  # the job server (and the agents the raylet starts) come up after
    procs = head_processes(root)
    listening = _listening(procs)
    exposed = [f"{ip}:{port}" for ip, port in listening if not _on_loopback(ip)]
    if exposed:
        stop_head(root)
        raise RayStartError(f"the Ray head listened beyond {LOOPBACK} ({', '.join(exposed[:4])}); stopped it")
    record = {"address": f"{LOOPBACK}:{gcs}", "job_server": f"http://{LOOPBACK}:{dashboard}",
              "token_file": str(token_file), "dir": str(root), "ray_dir": str(_ray_dir(root)),
              "pids": sorted(p.pid for p in procs),
              "listening": [f"{ip}:{port}" for ip, port in listening]}
    (root / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


def stop_head(root: str | os.PathLike, *, timeout_s: float = 20.0) -> list[int]:
    """End every process of the head under ``root`` (SIGTERM, then SIGKILL); the pids that were ended."""
    import psutil

    procs = head_processes(root)
    ended = sorted(p.pid for p in procs)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in procs:
            try:
                p.send_signal(sig)
            except psutil.Error:
                pass
        _, procs_left = psutil.wait_procs(procs, timeout=timeout_s)
        if not procs_left:
            break
        procs = procs_left
    deadline = time.monotonic() + timeout_s
    while (late := head_processes(root)) and time.monotonic() < deadline:  # workers Ray forked late
        for p in late:
            try:
                p.kill()
            except psutil.Error:
                pass
        time.sleep(0.2)
    return ended
