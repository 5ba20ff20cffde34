"""Shared helpers of the StyleGAN2 tests: the rosinality fixture and edited copies of it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

DATA = Path(__file__).parent / "data" / "stylegan2"


def load_ref() -> dict:
    """Inputs and rosinality's outputs for tests/support/data/stylegan2/rosinality_tiny.pt (see README.txt there)."""
    return torch.load(DATA / "rosinality_tiny_ref.pt", weights_only=True)


def load_ckpt() -> dict:
    return torch.load(DATA / "rosinality_tiny.pt", weights_only=False)  # our own fixture (argparse.Namespace)


def save_variant(path: Path, edit: Callable[[dict], object], *, latent_avg: bool = True) -> Path:
    """The fixture checkpoint with ``edit(g_ema state dict)`` applied, saved at ``path``."""
    ckpt = load_ckpt()
    edit(ckpt["g_ema"])
    if not latent_avg:
        del ckpt["latent_avg"]
    torch.save(ckpt, path)
    return path
