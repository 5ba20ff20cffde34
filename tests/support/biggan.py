"""A tiny random BigGAN-deep (pytorch-pretrained-biggan's classes) that behaves like a trained file.

Example::

    cfg, net = tiny_biggan(attention_gamma=0.5)
    torch.save(net.state_dict(), root / "pytorch_model.bin")
"""

from __future__ import annotations

import io
import json

import torch

__all__ = ["biggan_deep_files", "tiny_biggan"]


def tiny_biggan(*, attention_gamma: float | None = None, seed: int = 0):
    """``(config, BigGAN)``: output 32, z 8, 5 classes, channel width 4, one self-attention layer.

    Batch-norm affines and spectral norms are settled as in a trained checkpoint
    (``biggan.settle_fresh_weights``). ``attention_gamma`` switches attention on.
    """
    from pytorch_pretrained_biggan import BigGAN, BigGANConfig

    from geometry_core.generators.biggan import settle_fresh_weights

    # Smallest config the architecture allows: channels halve per block down to
    # channel_width, which must be >= 3 for RGB.
    cfg = BigGANConfig(output_dim=32, z_dim=8, class_embed_dim=8, channel_width=4, num_classes=5,
                       layers=[(True, 16, 8), (True, 8, 4), (False, 4, 2), (True, 2, 1)],
                       attention_layer_position=2)
    torch.manual_seed(seed)
    net = BigGAN(cfg)
    settle_fresh_weights(net)
    if attention_gamma is not None:
        with torch.no_grad():
            for m in net.modules():
                if hasattr(m, "gamma"):
                    m.gamma.fill_(attention_gamma)
    return cfg, net


def biggan_deep_files(entry=None) -> dict[str, bytes]:
    """pytorch-pretrained-biggan's pair, config.json + pytorch_model.bin, of :func:`tiny_biggan` (a catalogue
    entry's files; ``entry`` is accepted so this serves as a catalogue writer)."""
    cfg, net = tiny_biggan()
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    return {"config.json": json.dumps(cfg.to_dict()).encode(), "pytorch_model.bin": buf.getvalue()}
