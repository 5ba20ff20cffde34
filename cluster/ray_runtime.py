"""Ray start-up, for the driver and the reducers alike.

Embedded (no address): a single-node Ray whose every process listens on
127.0.0.1 only, on ports the system picks, since Ray's endpoints have no
authentication. An existing cluster (``address``) is used as its operators
configured it. What binds where is listed in ARCHITECTURE.md, "Trust".

Example::

    started = init_ray(None, store_env())     # embedded, loopback only
    ...
    if started:
        ray.shutdown()
"""

from __future__ import annotations

import os
import socket
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from geometry_core.errors import GangeoError, clip

__all__ = ["CLUSTER_ADDRESS_HELP", "LOOPBACK", "RayStartError", "as_ray_error", "check_cluster_address",
           "check_head_answers", "init_ray", "task_cause"]

LOOPBACK = "127.0.0.1"

# Read by Ray's processes when they start. The first makes Ray take the loopback
# address as the node's address, so GCS, raylet, workers and agents bind to it
# rather than to every interface; the metric exporters otherwise take fixed ports.
_EMBEDDED_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "AUTOSCALER_METRIC_PORT": "0",
    "DASHBOARD_METRIC_PORT": "0",
}


class RayStartError(GangeoError, RuntimeError):
    """Ray could not be started as required (one line)."""

    kind = "ray"


# The two addresses users meet: a cluster's (GCS host:port, "auto", ray://) for
# ray.init, and its job server's http:// URL for Ray Jobs. Help texts say which.
CLUSTER_ADDRESS_HELP = ("Ray cluster to join: HOST:PORT of its head (GCS, e.g. 10.0.0.5:6379), auto, or "
                        "ray://HOST:10001; not the job server's http:// URL (default: embedded Ray)")


def check_cluster_address(address: str | None) -> None:
    """Refuse a job server URL where a Ray cluster address is needed, and a HOST:PORT where no head
    answers, before Ray is touched."""
    if isinstance(address, str) and address.strip().lower().startswith(("http://", "https://")):
        raise RayStartError(
            f"--address {clip(address, bare=True)} is a Ray job server (dashboard) URL; this command joins a "
            "Ray cluster: give HOST:PORT of the head (e.g. 127.0.0.1:6379), auto or ray://HOST:10001, "
            "or submit the spec to that job server with `gangeo submit SPEC --address URL`")
    if isinstance(address, str) and address.strip():
        check_head_answers(address)


_ANSWERED: set[str] = set()  # heads that accepted a connection in this process: probed once, not per call


def check_head_answers(address: str, timeout_s: float = 5.0) -> None:
    """A HOST:PORT cluster address must accept a connection before Ray is asked to join it: Ray itself
    retries an absent head for minutes, printing C++ warnings. ``auto`` and ``ray://`` are left to Ray.

    A head that answered once is not probed again by this process (the driver checks before its
    first progress line, and ``init_ray`` checks whoever calls it)."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or not port.isdigit() or address.strip().lower().startswith(("ray://", "auto")):
        return
    if address.strip() in _ANSWERED:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except (OSError, ValueError, OverflowError) as err:
        why = getattr(err, "strerror", None) or type(err).__name__
        raise RayStartError(f"no Ray head answers at {clip(address, bare=True)} ({why}); start one with "
                            "`ray start --head` there, or give the head's GCS address (HOST:PORT)") from None
    _ANSWERED.add(address.strip())


def task_cause(exc: BaseException) -> BaseException:
    """The exception a Ray task raised, out of the RayTaskError that carries it to the driver (else ``exc``)."""
    exceptions = sys.modules.get("ray.exceptions")
    while exceptions is not None and isinstance(exc, exceptions.RayTaskError) and \
            isinstance(getattr(exc, "cause", None), BaseException):
        exc = exc.cause
    return exc


def as_ray_error(exc: BaseException) -> RayStartError | None:
    """A failure raised inside Ray (a lost head, raylet or GCS; a start that timed out) as one line of kind
    ``ray`` (exit 9), after ending what this process started of Ray; None for anything else."""
    frames = traceback.extract_tb(exc.__traceback__)
    ray_mod = sys.modules.get("ray")
    if ray_mod is None or not frames:
        return None
    ray_dir = str(Path(cast(str, ray_mod.__file__)).parent)  # a package imported from its files
    exceptions = sys.modules.get("ray.exceptions")
    if exceptions is not None and isinstance(exc, exceptions.RayTaskError):
        return None  # the task's own error (a bug keeps its traceback), not Ray's
    from_ray = frames[-1].filename.startswith(ray_dir) or (
        exceptions is not None and isinstance(exc, exceptions.RayError))
    if not from_ray:
        return None
    try:
        if ray_mod.is_initialized():
            ray_mod.shutdown()  # an embedded Ray's processes end with it; a joined cluster is only left
    except Exception:  # noqa: BLE001 (Ray is already failing; the line below is what the user needs)
        pass
    first = (str(exc).strip().splitlines() or [""])[0]
    return RayStartError(f"Ray failed: {type(exc).__name__}: {clip(first, bare=True)}")


@contextmanager
def _embedded_environment():
    """Ray's start-up settings for this process and the processes it starts, then restored."""
    from ray._private import ray_constants

    saved_env = {k: os.environ.get(k) for k in _EMBEDDED_ENV}
    saved_flag = ray_constants.ENABLE_RAY_CLUSTER
    os.environ.update({k: v for k, v in _EMBEDDED_ENV.items() if saved_env[k] is None})
    # The driver read this flag when ray was imported; its children read the variable above.
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)


def _cluster_messages_to_stderr() -> None:
    """Ray prints the cluster's messages to a driver (a node marked dead, say) on its stdout, even
    with ``log_to_driver=False``; gangeo's stdout holds its result alone, so they go to stderr."""
    from ray._private import worker as ray_worker

    show = ray_worker.print_to_stdstream
    if getattr(show, "gangeo_to_stderr", False):
        return

    def to_stderr(data, ignore_prefix):
        return show({**data, "is_err": True}, ignore_prefix)

    cast(Any, to_stderr).gangeo_to_stderr = True  # a mark on the function: mypy types no function attributes
    ray_worker.print_to_stdstream = to_stderr


def init_ray(address: str | None, env: dict, *, num_cpus: int | None = None) -> bool:
    """Connect to Ray (embedded on loopback unless ``address``); True if this call started it.

    ``env`` reaches the workers through the runtime_env, except inside a Ray job,
    whose own runtime_env already does and which Ray refuses to merge with a second.
    Raises :class:`RayStartError` if ``address`` is a job server URL or an
    embedded Ray did not come up on loopback.
    """
    check_cluster_address(address)
    import ray

    if ray.is_initialized():
        return False
    _cluster_messages_to_stderr()
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": "ERROR", "include_dashboard": False}
    if env and not os.environ.get("RAY_JOB_ID"):
        kwargs["runtime_env"] = {"env_vars": env}
    if address:
        ray.init(address=address, **kwargs)
        return True
    with _embedded_environment():
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, **kwargs)
    node_ip = ray.util.get_node_ip_address()
    if node_ip != LOOPBACK:  # fail closed: never leave an unauthenticated Ray on the network
        ray.shutdown()
        raise RayStartError(f"embedded Ray came up on {node_ip}, not {LOOPBACK}; refusing to run")
    return True
