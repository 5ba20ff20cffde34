"""Distances by name: pixel MSE, LPIPS (alex / vgg / squeeze), SSIM, a generator layer's L2.

Example::

    from geometry_core.distances import load_distance, register_distance
    d = load_distance("lpips-alex", resize=224)
    d_layer = load_distance("layer:main.6", generator=G)
    register_distance("my-dist", "mypkg.dist:load_my_dist", options=("scale",))

Every distance is either ``d(x0, x) = c * ||phi(x) - phi(x0)||^2`` or a scalar
image distance ``d(x0, x)`` (``ScalarDistance``: SSIM); see ``base``.
A registry by name: each family registers its factory (``"module:attr"``,
imported on first use, so listing names is cheap) and the options it accepts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import import_module
from typing import cast

from ..errors import GeometryError
from .base import Distance, ScalarDistance

__all__ = ["Distance", "LAYER_PREFIX", "ScalarDistance", "list_distances", "load_distance", "register_distance"]

LAYER_PREFIX = "layer:"
_COMMON = frozenset({"device", "generator"})  # accepted by every distance


@dataclass
class _Entry:
    factory: Callable[..., Distance] | str  # a callable, or "module:attr" imported on first use
    options: frozenset[str]
    argument: str | None  # a family ("layer:"): what follows the prefix, shown as "layer:<layer name>"
    members: Callable[[object], Iterable[str]] | None  # a family: the arguments a generator offers


_REGISTRY: dict[str, _Entry] = {}
_ALIASES: dict[str, str] = {}


def register_distance(
    name: str,
    factory: Callable[..., Distance] | str,
    *,
    options: Iterable[str] = (),
    aliases: Iterable[str] = (),
    argument: str | None = None,
    members: Callable[[object], Iterable[str]] | None = None,
) -> None:
    """Register ``factory(name, *, generator, device, **options) -> Distance`` under ``name``.

    ``options``: the keyword options it accepts besides ``generator`` and
    ``device`` (which every factory receives; image distances ignore
    ``generator``); any other is refused before the factory is imported.
    ``factory`` gets the canonical name, so one function may serve several
    names. A ``name`` ending in ``":"`` registers a family: every
    ``name + <argument>`` is one of its distances (``"layer:"``, ``argument="layer
    name"``), and ``members(generator)`` lists the arguments a generator offers.
    Re-registering a name replaces it.
    """
    if not isinstance(name, str) or not name:
        raise GeometryError(f"distance name must be a non-empty str, got {name!r}")
    if not (callable(factory) or (isinstance(factory, str) and ":" in factory)):
        raise GeometryError(f"distance {name!r}: factory must be callable or 'module:attr', got {factory!r}")
    options, aliases = frozenset(options), tuple(aliases)
    if not all(isinstance(o, str) and o for o in options) or options & _COMMON:
        raise GeometryError(f"distance {name!r}: options must be names other than {sorted(_COMMON)}, "
                            f"got {sorted(map(str, options))}")
    family = name.endswith(":")
    if family != (argument is not None) or (members is not None and not family):
        raise GeometryError(f"distance {name!r}: a family's name ends in ':' and it gives argument=; "
                            "other distances give neither argument= nor members=")
    if family and aliases:
        raise GeometryError(f"distance {name!r}: a family has no aliases")
    _REGISTRY[name] = _Entry(factory, options, argument, members)
    _ALIASES.update(dict.fromkeys(aliases, name))


def _names() -> list[str]:
    return sorted({n for n, e in _REGISTRY.items() if e.argument is None} | set(_ALIASES))


def _patterns() -> list[str]:
    return [f"{n}<{e.argument}>" for n, e in sorted(_REGISTRY.items()) if e.argument is not None]


def list_distances(generator=None) -> list[str]:
    """Known distance names (aliases included); with ``generator``, its ``layer:<name>`` too.

    Without a generator each family is listed as its pattern, e.g. ``"layer:<layer name>"``.
    """
    if generator is None:
        return _names() + _patterns()
    offered = [f"{n}{m}" for n, e in sorted(_REGISTRY.items()) if e.members is not None for m in e.members(generator)]
    return _names() + offered


def _find(name: object) -> tuple[str, _Entry]:
    """(canonical name, entry) of a requested name; one line listing the known ones otherwise."""
    if isinstance(name, str):
        key = _ALIASES.get(name, name)
        if key in _REGISTRY and _REGISTRY[key].argument is None:
            return key, _REGISTRY[key]
        for prefix, entry in _REGISTRY.items():
            if entry.argument is not None and name.startswith(prefix):
                return name, entry
    families = "".join(f", or {p!r}" for p in _patterns())
    raise GeometryError(f"unknown distance {name!r}; expected one of {', '.join(_names())}{families}")


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
    key, entry = _find(name)
    extra = sorted(set(options) - entry.options)
    if extra:
        raise GeometryError(f"distance {name!r}: unknown option(s) {extra}; "
                            f"accepted: {sorted(entry.options | _COMMON)}")
    if isinstance(entry.factory, str):
        module_name, _, attr = entry.factory.partition(":")
        entry.factory = cast("Callable[..., Distance]", getattr(import_module(module_name), attr))
    return entry.factory(key, generator=generator, device=device, **options)


_LPIPS_OPTIONS = ("resize", "pretrained_backbone")

register_distance("mse", "geometry_core.distances.mse:load_mse")
register_distance("ssim", "geometry_core.distances.ssim:load_ssim", options=("window", "sigma"))
for _net in ("alex", "vgg", "squeeze"):
    register_distance(f"lpips-{_net}", "geometry_core.distances.lpips_distance:load_lpips", options=_LPIPS_OPTIONS,
                      aliases=("lpips",) if _net == "alex" else ())
register_distance(LAYER_PREFIX, "geometry_core.distances.layer:load_layer", argument="layer name",
                  members=lambda generator: getattr(generator, "layer_names", []))
