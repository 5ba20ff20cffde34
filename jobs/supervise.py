"""Commands that drive Ray run in a child process this one watches, so a run that Ray ends still ends in one line.

Example (the console script does this for ``run`` and ``resume``)::

    sys.exit(supervise(["run", "spec.yaml"], command="run", run="quickstart", ray_exit=9, interrupted_exit=130))

Why: when Ray's control process (GCS) or the node's raylet is lost, Ray's C++ core
ends the driver process itself (after ``gcs_rpc_server_reconnect_timeout_s``, 60 s by
default) with its own log line and exit 1: no Python exception, no ``finally``, so
the driver can neither say what happened nor end the Ray processes it started. The
parent here can: the child records a normal interpreter exit (``atexit``, which Ray's
exit skips); a child gone without that record is reported as a Ray failure (exit 9,
one line), and every process it left behind is ended (this process is their
subreaper on Linux). Ctrl-C and ``SIGTERM`` reach the child once; its exit status is
this process's.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import tempfile

__all__ = ["AVAILABLE", "CHILD_ENV", "SUPERVISED", "mark_normal_exit", "supervise"]

SUPERVISED = ("run", "resume")  # the commands that start or join Ray as a driver
# Linux: signal.sigtimedwait (who sent a signal), PR_SET_CHILD_SUBREAPER and PR_SET_PDEATHSIG; elsewhere
# (macOS) a command runs in the console script's own process, as before.
AVAILABLE = sys.platform.startswith("linux") and hasattr(signal, "sigtimedwait")
CHILD_ENV = "GANGEO_SUPERVISED_EXIT_FILE"  # set in the child: where it records a normal exit
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_GRACE_S = 5.0


def mark_normal_exit() -> None:
    """In the child: record, at interpreter exit, that Python ended normally (whatever the status)."""
    import atexit

    path = os.environ.pop(CHILD_ENV, None)  # not inherited by Ray's processes or jobs
    if path:
        atexit.register(lambda: _touch(path))


def _touch(path: str) -> None:
    try:
        with open(path, "w") as f:
            f.write("exited\n")
    except OSError:
        pass


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _in_child(mask: set) -> None:
    """Between fork and exec: the child's signals as this process had them, and it dies with this process."""
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _descendants(pid: int) -> dict:
    import psutil

    try:
        return {p.pid: p for p in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return {}


def _end(procs: dict) -> int:
    """End ``procs`` (pid -> psutil.Process): SIGTERM, then SIGKILL what is left. How many there were."""
    import psutil

    live = [p for p in procs.values() if p.pid != os.getpid()]
    for p in live:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(live, timeout=_GRACE_S)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=_GRACE_S)
    return len(live)


def supervise(argv: list[str], *, command: str, run: str, ray_exit: int, interrupted_exit: int) -> int:
    """Run ``gangeo argv`` in a child and return its exit status; a child that Ray ended: one line, exit 9.

    The child stays in this process group, so a terminal's Ctrl-C reaches it directly (it is
    not sent twice) and a signal to the group ends both; a signal sent to this process alone
    is passed on. The child dies with this process (Linux).
    """
    reaper = _prctl(_PR_SET_CHILD_SUBREAPER, 1)  # Ray's processes, orphaned by the child, come here
    fd, mark = tempfile.mkstemp(prefix="gangeo-exit-")
    os.close(fd)
    os.unlink(mark)  # the child creates it on a normal exit
    watched = {signal.SIGINT, signal.SIGTERM}
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    seen: dict = {}
    interrupted = False
    try:
        child = subprocess.Popen([sys.executable, "-m", "jobs.cli", *argv], env={**os.environ, CHILD_ENV: mark},
                                 preexec_fn=lambda: _in_child(old_mask))
        ticks = 0
        while child.poll() is None:
            info = signal.sigtimedwait(watched, 0.2)
            if info is not None:
                interrupted = True
                if info.si_pid != 0:  # sent to this process by another; the terminal's went to the child too
                    child.send_signal(info.si_signo)
            ticks += 1
            if not reaper and ticks % 10 == 0:  # no subreaper: remember what the child started
                seen.update(_descendants(child.pid))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    rc = child.returncode
    normal = os.path.exists(mark)
    if normal:
        os.unlink(mark)
    left = _end({**seen, **_descendants(os.getpid())})
    if normal:
        return rc
    if interrupted or rc in (-signal.SIGINT, interrupted_exit):
        print(f"gangeo {command}: interrupted", file=sys.stderr)
        return interrupted_exit
    ended = f"; ended {left} process{'es' if left != 1 else ''} it had started" if left else ""
    if rc < 0:  # killed from outside (the OOM killer, kill -9): not Ray's doing
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        print(f"gangeo {command}: the driver was killed by {name}{ended}; the run is interrupted: "
              f"`gangeo resume {run}` continues it", file=sys.stderr)
        return 128 - rc
    print(f"gangeo {command}: Ray failed: Ray ended the driver (status {rc}), as it does when its control "
          f"process (GCS) or the raylet is lost{ended}; the run is interrupted: `gangeo resume {run}` continues it",
          file=sys.stderr)
    return ray_exit
