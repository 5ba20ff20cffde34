"""Distances by name: pixel MSE, LPIPS (alex / vgg / squeeze), SSIM, a generator layer's L2.

Example::

    from geometry_core.distances import load_distance
    d = load_distance("lpips-alex", resize=224)
    d_layer = load_distance("layer:main.6", generator=G)

Every distance is either ``d(x0, x) = c * ||phi(x) - phi(x0)||^2`` or a scalar
image distance ``d(x0, x)`` (``ScalarDistance``: SSIM); see ``base``.
Implementations are imported on first use, so listing names is cheap.
"""

from __future__ import annotations

from .base import Distance
from .base import ScalarDistance
from ..errors import GeometryError

__all__ = ["Distance", "LAYER_PREFIX", "ScalarDistance", "list_distances", "load_distance"]

LAYER_PREFIX = "layer:"

_ALIASES = {"lpips": "lpips-alex"}
# name -> options it accepts besides `generator` and `device` (accepted by all).
_OPTIONS: dict[str, frozenset[str]] = {
    "mse": frozenset(),
    "ssim": frozenset({"window", "sigma"}),
    "lpips-alex": frozenset({"resize", "pretrained_backbone"}),
    "lpips-vgg": frozenset({"resize", "pretrained_backbone"}),
    "lpips-squeeze": frozenset({"resize", "pretrained_backbone"}),
}


def list_distances(generator=None) -> list[str]:
    """Known distance names (aliases included); with ``generator``, its ``layer:<name>`` too.

    Without a generator the layer form is listed as the pattern ``"layer:<layer name>"``.
    """
    names = sorted(set(_OPTIONS) | set(_ALIASES))
    if generator is None:
        return names + [f"{LAYER_PREFIX}<layer name>"]
    return names + [f"{LAYER_PREFIX}{n}" for n in getattr(generator, "layer_names", [])]


def _unknown(name: object) -> GeometryError:
    known = ", ".join(sorted(set(_OPTIONS) | set(_ALIASES)))
    return GeometryError(f"unknown distance {name!r}; expected one of {known}, or 'layer:<layer name>'")


def _check_options(name: str, allowed: frozenset[str], options: dict) -> None:
    extra = sorted(set(options) - allowed)
    if extra:
        expected = sorted(allowed | {"device", "generator"})
        raise GeometryError(f"distance {name!r}: unknown option(s) {extra}; accepted: {expected}")


def load_distance(name: str, *, generator=None, device=None, **options) -> Distance:
    """A frozen ``Distance`` by name.

    Names: "mse", "ssim" (1 - SSIM), "lpips-alex", "lpips-vgg", "lpips-squeeze" ("lpips" = alex),
    "layer:<layer name>" (needs ``generator=``, a Generator with that layer).
    ``generator`` is ignored by image distances, so callers may always pass it.
    LPIPS options: ``resize`` (None / int / (H, W)), ``pretrained_backbone``
    (False: random trunk, for benchmarks only). SSIM options: ``window`` (odd,
    default 11), ``sigma`` (default 1.5). ``device``: where to put it
    (a layer distance runs wherever its generator is).
    """
    if not isinstance(name, str):
        raise _unknown(name)
    if name.startswith(LAYER_PREFIX):
        layer_name = name[len(LAYER_PREFIX):]
        _check_options(name, frozenset(), options)
        if generator is None:
            raise GeometryError(f"distance {name!r} needs generator=<the Generator whose layer it reads>")
        if not layer_name:
            raise GeometryError(f"distance {name!r}: expected 'layer:<layer name>', the layer name is empty")
        from .layer import LayerDistance

        return LayerDistance(generator, layer_name)
    key = _ALIASES.get(name, name)
    if key not in _OPTIONS:
        raise _unknown(name)
    _check_options(name, _OPTIONS[key], options)
    if key == "mse":
        from .mse import MSEDistance

        dist = MSEDistance()
        return dist.to(device) if device is not None else dist
    if key == "ssim":
        from .ssim import SSIMDistance

        dist = SSIMDistance(**options)
        return dist.to(device) if device is not None else dist
    from .lpips_distance import LPIPSDistance

    return LPIPSDistance(key.split("-", 1)[1], device=device, **options)
