"""A tiny random BigGAN-deep (pytorch-pretrained-biggan's classes) that behaves like a trained file.

Example::

    cfg, net = tiny_biggan(attention_gamma=0.5)
    torch.save(net.state_dict(), root / "pytorch_model.bin")
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["tiny_biggan"]


def tiny_biggan(*, attention_gamma: float | None = None, seed: int = 0):
    """``(config, BigGAN)``: output 32, z 8, 5 classes, channel width 4, one self-attention layer.

    The package leaves unconditional batch-norm weights uninitialised
    (``torch.Tensor(n)``: whatever memory held, NaN in some runs), so they are set
    to the identity; the spectral norms' power iterations are converged, as in a
    trained checkpoint (with random u, v the eval-mode sigma is far too small and
    activations blow up). ``attention_gamma`` switches attention on.
    """
    from pytorch_pretrained_biggan import BigGAN, BigGANConfig

    # Smallest config the architecture allows: channels halve per block down to
    # channel_width, which must be >= 3 for RGB.
    cfg = BigGANConfig(output_dim=32, z_dim=8, class_embed_dim=8, channel_width=4, num_classes=5,
                       layers=[(True, 16, 8), (True, 8, 4), (False, 4, 2), (True, 2, 1)],
                       attention_layer_position=2)
    torch.manual_seed(seed)
    net = BigGAN(cfg)
    with torch.no_grad():
        for m in net.modules():
            if type(m).__name__ == "BigGANBatchNorm" and not m.conditional:
                m.weight.fill_(1.0)
                m.bias.zero_()
            if attention_gamma is not None and hasattr(m, "gamma"):
                m.gamma.fill_(attention_gamma)
            if hasattr(m, "weight_orig"):
                W = m.weight_orig.reshape(m.weight_orig.shape[0], -1)
                for _ in range(50):
                    m.weight_v.copy_(nn.functional.normalize(W.T @ m.weight_u, dim=0))
                    m.weight_u.copy_(nn.functional.normalize(W @ m.weight_v, dim=0))
    return cfg, net
