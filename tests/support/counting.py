"""A tiny generator with layers, and a sweep worker that counts the generator's forward-mode passes.

Example::

    gen = {"name": "module", "spaces": ["z"], "options": TINY_OPTIONS}
    summary = run_sweep(spec, worker_cls=CountingWorker)
    sum(w["tangent_passes"] for w in summary["worker_info"])   # forward-mode passes of G

``TinyNet``: z (12,) -> Linear -> tanh -> Linear -> tanh, shaped to a 3x12x12 image
(SSIM's 11-pixel window fits),
weights drawn from a fixed seed so every worker builds the same generator.
"""

from __future__ import annotations

import torch
from torch import nn

from cluster.worker import SweepWorker

__all__ = ["TINY_OPTIONS", "CountingWorker", "TinyNet"]

TINY_OPTIONS = {"arch": "tests.support.counting:TinyNet", "latent_dim": 12, "allow_import": True,
                "layer_names": ["net.1", "net.3"]}


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 3 * 12 * 12), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.flatten(1)).reshape(-1, 3, 12, 12)


class CountingWorker(SweepWorker):
    """Counts forward-mode passes of the generator (``forward_jacobian`` calls) and the groups it computed.

    Both come back through ``info()`` (the run summary's ``worker_info``).
    """

    def __init__(self, *args, **kwargs) -> None:
        import geometry_core.metric as metric

        super().__init__(*args, **kwargs)
        self.tangent_passes = 0
        self.computed: list[list] = []
        real = metric.forward_jacobian

        def counted(*a, **k):
            self.tangent_passes += 1
            return real(*a, **k)

        metric.forward_jacobian = counted  # this actor's own process

    def compute(self, task):
        self.computed.append([task.chunk, sorted(getattr(task, "keys", [task.key]))])
        return super().compute(task)

    def info(self) -> dict:
        return {**super().info(), "tangent_passes": self.tangent_passes, "computed": self.computed}
