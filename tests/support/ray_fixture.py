"""A real single-node Ray instance for tests (2 CPUs, no dashboard), one per session.

Reached through ``tests/conftest.py``: name ``ray_local`` as a test's argument.
"""

from __future__ import annotations

import pytest

__all__ = ["ray_local", "start_embedded_ray"]


def start_embedded_ray() -> None:
    """The tests' embedded Ray: the product's own start-up (loopback only), 2 CPUs, quiet."""
    from cluster.ray_runtime import init_ray
    from cluster.storage import store_env

    init_ray(None, store_env(), num_cpus=2)


@pytest.fixture(scope="session")
def ray_local(s3_server):
    """Start embedded Ray once; reuse an instance another suite already started.

    The S3 server starts first: Ray's worker processes inherit its AWS_* variables,
    as they inherit a node's environment on a cluster (credentials never travel in
    a runtime_env).
    """
    import ray

    started = False
    if not ray.is_initialized():
        start_embedded_ray()
        started = True
    yield ray
    if started:
        ray.shutdown()
