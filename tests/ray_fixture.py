"""A real single-node Ray instance for tests (2 CPUs, no dashboard), one per session.

Usage: ``from tests.ray_fixture import ray_local  # noqa: F401`` in a test module.
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
def ray_local():
    """Start embedded Ray once; reuse an instance another suite already started."""
    import ray

    started = False
    if not ray.is_initialized():
        start_embedded_ray()
        started = True
    yield ray
    if started:
        ray.shutdown()
