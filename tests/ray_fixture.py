"""A real single-node Ray instance for tests (2 CPUs, no dashboard), one per session.

Usage: ``from tests.ray_fixture import ray_local  # noqa: F401`` in a test module.
"""

from __future__ import annotations

import pytest

__all__ = ["ray_local", "start_embedded_ray"]


def start_embedded_ray() -> None:
    """The tests' embedded Ray: 2 CPUs, no dashboard, quiet."""
    import ray

    from cluster.storage import store_env

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR", runtime_env={"env_vars": store_env()})


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
