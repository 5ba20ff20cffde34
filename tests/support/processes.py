"""Processes the tests start: free loopback ports, stopping a process tree by pid, what listens where.

Example::

    port = free_port()
    stop_tree(proc)                         # proc and everything it started, by pid
    wait_dead(procs)                        # until each is gone (or a zombie nobody reaps)
    exposed = [s for s in listening(pids) if not is_loopback(s[0])]
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import time

import psutil

__all__ = ["free_port", "is_loopback", "listening", "stop_tree", "tree", "wait_dead"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the caller binds it soon after)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tree(pid: int) -> list[psutil.Process]:
    """``pid`` and every process below it (empty when it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _signal_all(procs: list[psutil.Process], sig: int) -> None:
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            pass


def stop_tree(pid: int, *, kill: bool = False, timeout: float = 10.0) -> None:
    """Stop ``pid`` and every process it started (all listed before any is signalled).

    ``kill``: SIGKILL at once, as a machine that is lost; else SIGTERM, then SIGKILL
    for what still runs after ``timeout`` seconds.
    """
    procs = tree(pid)
    _signal_all(procs, signal.SIGKILL if kill else signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    _signal_all(alive, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=timeout)


def wait_dead(procs: list[psutil.Process], timeout: float = 60.0) -> list[psutil.Process]:
    """Wait until each of ``procs`` is gone or a zombie (dead, only not reaped: an orphan under a
    PID 1 that reaps nothing); the ones still running after ``timeout`` seconds."""
    def running(p: psutil.Process) -> bool:
        try:
            return p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + timeout
    left = [p for p in procs if running(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if running(p)]
    return left


def listening(pids: set[int]) -> list[tuple[str, int, str]]:
    """(address, port, process name) of every listening TCP/UDP socket of ``pids``."""
    found = []
    for c in psutil.net_connections(kind="inet"):
        is_listening = c.status == psutil.CONN_LISTEN or (c.type == 2 and not c.raddr)  # SOCK_DGRAM bound
        if c.pid in pids and is_listening and c.laddr:
            try:
                name = psutil.Process(c.pid).name()
            except psutil.Error:
                name = "?"
            found.append((c.laddr.ip, c.laddr.port, name))
    return found


def is_loopback(ip: str) -> bool:
    """127.0.0.0/8 or ::1, also in its IPv6-mapped form."""
    addr = ipaddress.ip_address(ip)
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback
