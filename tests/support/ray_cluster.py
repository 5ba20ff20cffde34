"""A real multi-node Ray cluster on this machine: a head and worker nodes, every process on 127.0.0.1.

Reached through ``tests/conftest.py``: name ``ray_cluster`` as a test's argument (one
per test module: a head with its job server and two worker nodes, one CPU each; a
node a test killed is started again before the next test).

Example::

    cluster = LoopbackCluster(tmp_path, workers=2).start()
    cluster.address                      # "127.0.0.1:PORT", for `gangeo run --address`
    cluster.job_server                   # "http://127.0.0.1:PORT", for `gangeo submit --address`
    cluster.kill("w1")                   # SIGKILL the node's whole process tree at once
    cluster.revive()                     # a fresh w1 in its place
    cluster.stop()                       # raises if a process of the cluster survived
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from .processes import free_port, listening, stop_tree, tree

__all__ = ["LoopbackCluster", "ray_cluster"]

REPO = Path(__file__).resolve().parents[2]
MARKER = "GANGEO_TEST_CLUSTER"  # every process of a cluster inherits it: how strays are found

# Node death is noticed after period x threshold of missed health checks (Ray's default: 3 s x 5,
# plus its initial delay); shorter here so a killed node costs the test seconds, not half a minute.
# The driver's handling of node loss does not depend on how long detection takes.
_HEALTH = {"RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "1000",
           "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "3"}


@dataclass
class Node:
    name: str
    proc: subprocess.Popen
    temp: Path
    log: Path


# `ray start` turns --node-ip-address=127.0.0.1 into the machine's routable address unless cluster
# mode is off (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, as embedded Ray runs), and with cluster mode off
# it refuses to start a worker node. The nodes here keep cluster mode on and the address as given,
# so every process of every node binds 127.0.0.1 (checked by the tests through listeners()).
_RAY_START = ("import sys; from ray._private import services; "
              "services.resolve_ip_for_localhost = lambda host: host; "
              "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; sys.exit(main())")


def _ray() -> list[str]:
    return [sys.executable, "-c", _RAY_START]


class LoopbackCluster:
    """A head and ``workers`` worker nodes of ``cpus`` CPUs each, started by the venv's ``ray``."""

    def __init__(self, logs: Path, *, workers: int = 2, cpus: int = 1, job_server: bool = True) -> None:
        self.logs, self.n_workers, self.cpus, self.with_jobs = Path(logs), workers, cpus, job_server
        self.token = uuid.uuid4().hex[:8]
        self.nodes: dict[str, Node] = {}
        self.killed: list[Node] = []
        self.address: str | None = None
        self.job_server: str | None = None
        self.seen: dict[int, float] = {}  # pid -> create time, of every process of the cluster seen

    # ---- environment shared by the cluster's processes and the drivers that join it ----

    def env(self, *, joins: bool = False) -> dict:
        """The environment of the head and of drivers (``joins``: of a worker node): loopback, no auth.

        The head and drivers run with cluster mode off, as embedded Ray does, so a driver
        takes 127.0.0.1 as its own address and attaches to the head's raylet; a worker node
        needs cluster mode on to join (see ``_RAY_START``).
        """
        env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled",
               "RAY_USAGE_STATS_ENABLED": "0", "AUTOSCALER_METRIC_PORT": "0", "DASHBOARD_METRIC_PORT": "0",
               "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1" if joins else "0", MARKER: self.token, **_HEALTH}
        env.pop("RAY_ADDRESS", None)
        return env

    def _ports(self) -> list[str]:
        return [f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
                f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
                f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}"]

    def _start_node(self, name: str, args: list[str]) -> Node:
        temp = Path("/tmp") / f"gg-{self.token}-{name}-{len(self.killed)}"  # Ray's socket paths must stay short
        log = self.logs / f"ray-{name}.log"
        cmd = [*_ray(), "start", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={self.cpus}",
               "--num-gpus=0", f"--temp-dir={temp}", "--disable-usage-stats",
               f"--resources={json.dumps({f'node_{name}': 1})}", *self._ports(), *args]
        with open(log, "a") as out:
            proc = subprocess.Popen(cmd, env=self.env(joins=name != "head"), stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd=str(REPO))
        node = Node(name, proc, temp, log)
        self.nodes[name] = node
        return node

    def _wait_log(self, node: Node, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, node.log.read_text(errors="replace"))
            if m:
                return m
            if node.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"Ray node {node.name} did not start: " + node.log.read_text(errors="replace")[-3000:])

    def start(self, timeout: float = 300.0) -> "LoopbackCluster":
        """Start the head, then the worker nodes; return once every node is alive in the GCS."""
        self.logs.mkdir(parents=True, exist_ok=True)
        gcs = free_port()
        head_args = ["--head", f"--port={gcs}", f"--ray-client-server-port={free_port()}"]
        if self.with_jobs:
            head_args += ["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={free_port()}"]
        else:
            head_args += ["--include-dashboard=false"]
        try:
            head = self._start_node("head", head_args)
            self.address = f"127.0.0.1:{gcs}"
            if self.with_jobs:
                m = self._wait_log(head, r"RAY_API_SERVER_ADDRESS='(http://127\.0\.0\.1:\d+)'", timeout)
                self.job_server = m.group(1)
            else:
                self._wait_log(head, r"Ray runtime started", timeout)
            for i in range(1, self.n_workers + 1):
                self._start_node(f"w{i}", [f"--address={self.address}"])
            self._wait_started(timeout)
        except BaseException:
            self.stop(check=False)
            raise
        return self

    def alive_nodes(self) -> list[dict]:
        """The GCS's live nodes (``NodeName``, ``NodeManagerAddress``, ``Resources``, ...), asked by a subprocess.

        A subprocess keeps this test process free of a second Ray connection.
        """
        code = ("import json, ray; ray.init(address=%r, logging_level='ERROR', log_to_driver=False); "
                "print('NODES=' + json.dumps([{k: n[k] for k in ('NodeID', 'NodeManagerAddress', 'Resources')} "
                "for n in ray.nodes() if n['Alive']]))" % self.address)
        out = subprocess.run([sys.executable, "-c", code], env=self.env(), capture_output=True, text=True,
                             timeout=120, cwd=str(REPO))
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
        (line,) = [x for x in out.stdout.splitlines() if x.startswith("NODES=")]  # Ray may print more
        return json.loads(line[len("NODES="):])

    def wait_nodes(self, n: int, timeout: float) -> list[str]:
        """Wait until the GCS has ``n`` live nodes; the names of nodes whose process ended meanwhile, if any."""
        deadline = time.monotonic() + timeout
        while True:
            self.remember_pids()
            ended = [name for name, node in self.nodes.items() if node.proc.poll() is not None]
            if ended:
                return ended
            if len(self.alive_nodes()) == n:
                return []
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not reach {n} live nodes within {timeout:.0f} s")
            time.sleep(1)

    def node_ids(self) -> dict[str, str]:
        """Node name (head, w1, ...) -> Ray node id, from each node's custom resource."""
        out = {}
        for n in self.alive_nodes():
            for key in n["Resources"]:
                if key.startswith("node_") and key[len("node_"):] in self.nodes:
                    out[key[len("node_"):]] = n["NodeID"]
        return out

    # ---- processes ----

    def remember_pids(self) -> None:
        """Note every process of every node now (workers come and go): the stray check covers them."""
        for node in self.nodes.values():
            for p in tree(node.proc.pid):
                try:
                    self.seen[p.pid] = p.create_time()
                except psutil.NoSuchProcess:
                    pass

    def pids(self) -> set[int]:
        self.remember_pids()
        return {p.pid for node in self.nodes.values() for p in tree(node.proc.pid)}

    def listeners(self) -> list[tuple[str, int, str]]:
        """(address, port, process name) of every socket the cluster's processes listen on now."""
        return listening(self.pids())

    def kill(self, name: str) -> None:
        """SIGKILL node ``name`` and every process it started at once, as a machine that is lost."""
        self.remember_pids()
        stop_tree(self.nodes[name].proc.pid, kill=True)
        self.killed.append(self.nodes[name])

    def revive(self, timeout: float = 300.0) -> None:
        """Start a fresh worker node in place of each one killed; return once all are alive."""
        dead = [name for name, node in self.nodes.items() if node.proc.poll() is not None]
        if "head" in dead:
            raise RuntimeError("the head is gone: the cluster cannot be revived")
        for name in dead:
            self._clear(self.nodes[name])
            self._start_node(name, [f"--address={self.address}"])
        if dead:
            self._wait_started(timeout)

    def _wait_started(self, timeout: float, tries: int = 2) -> None:
        """Wait for every node; a worker node whose start failed (its agents too slow) is started again once."""
        for attempt in range(tries):
            failed = self.wait_nodes(len(self.nodes), timeout)
            if not failed:
                return
            if "head" in failed or attempt == tries - 1:
                raise RuntimeError(f"Ray nodes {failed} did not start: see {self.logs}")
            for name in failed:
                self._clear(self.nodes[name])
                self._start_node(name, [f"--address={self.address}"])

    def _clear(self, node: Node) -> None:
        """Put a node whose ``ray start`` ended aside: its left-over processes (named by its temp dir) stopped."""
        for p in psutil.process_iter(["cmdline"]):
            if str(node.temp) in " ".join(p.info["cmdline"] or []):
                stop_tree(p.pid, kill=True)
        if node not in self.killed:
            self.killed.append(node)

    def strays(self) -> list[int]:
        """Processes of this cluster still running: by the marker in their environment, or seen before."""
        found = set()
        for p in psutil.process_iter():
            try:
                if p.environ().get(MARKER) == self.token:
                    found.add(p.pid)
            except (psutil.Error, OSError):
                continue
        for pid, created in self.seen.items():  # the same process, not a reused pid
            try:
                p = psutil.Process(pid)
                if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                    found.add(pid)
            except psutil.NoSuchProcess:
                pass
        return sorted(found)

    def stop(self, *, check: bool = True) -> None:
        """Stop every node (workers first) by pid with its process tree; raise if any process of it remains."""
        self.remember_pids()
        for node in reversed(list(self.nodes.values())):
            stop_tree(node.proc.pid)
        for node in self.nodes.values():
            node.proc.wait(timeout=30)
        left = self.strays()
        for pid in left:  # never leave them behind, even when the check fails
            stop_tree(pid, kill=True)
        for node in [*self.nodes.values(), *self.killed]:
            shutil.rmtree(node.temp, ignore_errors=True)
        if check:
            assert left == [], f"processes of the Ray cluster still run after it was stopped: {left}"


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A head (with its job server) and two worker nodes on 127.0.0.1, one CPU each, for one test module.

    Nodes a test killed are started again before the next test starts (``revive``).
    Stopped by pid at the end; no process of it may remain.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")  # the job client in this process, as the cluster runs
        cluster = LoopbackCluster(tmp_path_factory.mktemp("ray-cluster")).start()
        try:
            yield cluster
        finally:
            cluster.stop()
