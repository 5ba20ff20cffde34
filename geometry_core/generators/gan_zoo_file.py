"""Reading pytorch_GAN_zoo files safely and inferring the generator's configuration.

The zoo's ``BaseGAN.save`` writes ``{"config": BaseConfig, "netG", "netD",
"avgG"}``. The config object is read through one stand-in global
(``models.utils.config.BaseConfig``) as an inert record of its attributes: no
code of the zoo is imported or run, and any other global is refused.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import cast

import torch
from torch import nn

from ..errors import GeometryError, MissingWeightsError, clip
from .checkpoint import InertRecord, check_finite, safe_load, stand_in
from .gan_zoo_nets import DCGANConfig, PGGANConfig

__all__ = ["infer_dcgan", "infer_pggan", "load_renamed", "pggan_zoo_key", "read_zoo_file"]

CONFIG_GLOBAL = "models.utils.config.BaseConfig"
_NETS = ("avgG", "netG")
# The zoo's losses: DCGAN and MSE end the generator in tanh, WGANGP and Logistic do not.
_TANH_LOSS = {"DCGAN": True, "MSE": True, "WGANGP": False, "Logistic": False}


def read_zoo_file(
    weights: str | Path | None, *, name: str, net: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, object], str]:
    """``(generator state dict, config attributes, what)`` from a zoo file.

    ``net`` None takes ``avgG`` when present, else ``netG``. A bare state dict
    (str -> tensor) is accepted too, with an empty config.
    """
    if weights is None:
        raise MissingWeightsError(
            f"{name}: weights= is required: a pytorch_GAN_zoo file, e.g. "
            "PGAN/celebaHQ_s6_i80000-6196db68.pth or DCGAN_fashionGen-1d67302.pth"
        )
    if net is not None and net not in _NETS:
        raise GeometryError(f"{name}: net must be one of {list(_NETS)} or None, got {net!r}")
    what = f"{name} weights {Path(weights).expanduser().absolute()}"
    obj = safe_load(weights, what=f"{name} weights", safe_globals=[stand_in(CONFIG_GLOBAL)])
    if not isinstance(obj, dict):
        raise GeometryError(f"{what}: expected a dict, got {type(obj).__name__}")
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        if net is not None:
            raise GeometryError(f"{what}: net={net!r} given but the file is a bare state dict")
        return obj, {}, what
    key = net or next((k for k in _NETS if k in obj), None)
    if key is None or key not in obj:
        wanted = repr(key) if key else "'avgG' or 'netG'"
        raise GeometryError(f"{what}: missing key {wanted}; found keys {sorted(map(str, obj))}")
    state = obj[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GeometryError(f"{what}: {key!r} is not a state dict of tensors")
    return dict(state), _config_fields(obj.get("config"), what), f"{what} [{key}]"


def _config_fields(config: object, what: str) -> dict[str, object]:
    if config is None:
        return {}
    if isinstance(config, InertRecord):
        return dict(config.__dict__.get("fields", {}))
    if isinstance(config, dict):
        return dict(config)
    raise GeometryError(f"{what}: 'config' should be the zoo's BaseConfig, got {type(config).__name__}")


def _option(config: dict, key: str, kind: type | tuple[type, ...], default, what: str, *, within=None):
    """``config[key]`` of type ``kind`` (a number: finite, and in the closed interval ``within`` if given)."""
    value = config.get(key, default)
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise GeometryError(f"{what}: config {key!r} should be {getattr(kind, '__name__', kind)}, got {clip(value)}")
    # a number here: ``kind`` is a numeric type whenever ``within`` is given
    if within is not None and not (math.isfinite(cast(float, value)) and within[0] <= value <= within[1]):
        raise GeometryError(f"{what}: config {key!r} should be in [{within[0]}, {within[1]}], got {value!r}")
    return value


def _weight(state: dict, key: str, ndim: int, what: str) -> torch.Tensor:
    if key not in state:
        raise GeometryError(f"{what}: missing key {key!r} (not a pytorch_GAN_zoo generator of this kind?)")
    w = state[key]
    if w.ndim != ndim:
        raise GeometryError(f"{what}: {key!r} should have {ndim} dims, got shape {tuple(w.shape)}")
    return w


def _tanh(config: dict, default: str, what: str) -> bool:
    loss = _option(config, "lossCriterion", str, default, what)
    if loss not in _TANH_LOSS:
        raise GeometryError(f"{what}: config 'lossCriterion' should be one of {sorted(_TANH_LOSS)}, got {loss!r}")
    return _TANH_LOSS[loss]


def _agree(config: dict, key: str, found: int | list[int], what: str) -> None:
    """A size the config states must be what the weights give (ints only: a tensor or float is refused)."""
    if key not in config:
        return
    value = config[key]
    plain = isinstance(value, int) and not isinstance(value, bool) or (
        isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value))
    if not plain:
        raise GeometryError(f"{what}: config {key!r} should be an int or a list of ints, got {clip(value)}")
    if (list(value) if isinstance(value, (list, tuple)) else value) != found:
        raise GeometryError(f"{what}: config {key!r} is {clip(value)} but the weights give {found!r}")


def infer_pggan(state: dict, config: dict, *, what: str) -> PGGANConfig:
    """Scales, channels and latent size from the weights; flags from the config."""
    fc = _weight(state, "formatLayer.module.weight", 2, what)
    if fc.shape[0] % 16:
        raise GeometryError(f"{what}: 'formatLayer.module.weight' rows {fc.shape[0]} are not 16 * depthScale0")
    depths = [fc.shape[0] // 16]
    while f"scaleLayers.{len(depths) - 1}.0.module.weight" in state:
        depths.append(_weight(state, f"scaleLayers.{len(depths) - 1}.0.module.weight", 4, what).shape[0])
    out = _weight(state, "toRGBLayers.0.module.weight", 4, what).shape[0]
    _agree(config, "latentVectorDim", fc.shape[1], what)
    _agree(config, "depthScale0", depths[0], what)
    _agree(config, "depthOtherScales", depths[1:], what)
    _agree(config, "dimOutput", out, what)
    if out != 3:
        raise GeometryError(f"{what}: expected an RGB generator (3 output channels), got {out}")
    if not _option(config, "perChannelNormalization", bool, True, what):
        raise GeometryError(f"{what}: perChannelNormalization=False is not supported (the zoo's GNet needs it)")
    alpha = float(_option(config, "alpha", (int, float), 0.0, what, within=(0, 1)))
    return PGGANConfig(
        latent_dim=fc.shape[1],
        depths=tuple(depths),
        leak=float(_option(config, "leakyReluLeak", (int, float), 0.2, what, within=(0, 1))),
        equalized=_option(config, "equalizedlR", bool, True, what),
        normalize_latent=True,
        alpha=alpha,
        tanh=_tanh(config, "WGANGP", what),
    )


def infer_dcgan(state: dict, config: dict, *, what: str) -> DCGANConfig:
    """Latent size, width and depth from the weights; the final tanh from the config's loss."""
    fmt = _weight(state, "formatLayer.weight", 4, what)
    n_up = 0
    while f"main.convTranspose{n_up + 1}.weight" in state:
        n_up += 1
    out = _weight(state, "main.outlayer.weight", 4, what)
    base = out.shape[0]
    if fmt.shape[1] != base * 2**n_up:
        raise GeometryError(
            f"{what}: 'formatLayer.weight' has {fmt.shape[1]} channels, expected {base} * 2**{n_up} "
            f"from 'main.outlayer.weight' and {n_up} upsampling layers"
        )
    _agree(config, "latentVectorDim", fmt.shape[0], what)
    _agree(config, "depth", n_up, what)
    _agree(config, "dimG", base, what)
    if out.shape[1] != 3:
        raise GeometryError(f"{what}: expected an RGB generator (3 output channels), got {out.shape[1]}")
    return DCGANConfig(latent_dim=fmt.shape[0], base=base, n_up=n_up, tanh=_tanh(config, "DCGAN", what))


_PGGAN_KEY = (
    (re.compile(r"blocks\.0\.fc\.(\w+)"), "formatLayer.module.{}"),
    (re.compile(r"blocks\.0\.conv\.(\w+)"), "groupScale0.0.module.{}"),
    (re.compile(r"blocks\.(\d+)\.conv(\d)\.(\w+)"), None),
    (re.compile(r"to_rgb\.(\d+)\.(\w+)"), "toRGBLayers.{}.module.{}"),
)


def pggan_zoo_key(key: str) -> str:
    """The zoo's name of one of :class:`PGGANNet`'s parameters."""
    for pattern, template in _PGGAN_KEY:
        m = pattern.fullmatch(key)
        if m and template is None:
            return f"scaleLayers.{int(m.group(1)) - 1}.{m.group(2)}.module.{m.group(3)}"
        if m:  # template is a str: the None one returned above
            return cast(str, template).format(*m.groups())
    raise KeyError(key)


def load_renamed(model: nn.Module, state: dict, zoo_key: Callable[[str], str], *, what: str) -> None:
    """Load ``state`` (the zoo's names) into ``model``; errors name the zoo's keys."""
    own = model.state_dict()
    names = {zoo_key(k): k for k in own}
    missing = [z for z in names if z not in state]
    unexpected = [k for k in state if k not in names]
    if missing or unexpected:
        parts = [f"missing key(s) {missing[:3]}"] if missing else []
        parts += [f"unexpected key(s) {unexpected[:3]}"] if unexpected else []
        raise GeometryError(f"{what}: state dict does not fit the generator: {'; '.join(parts)}")
    for z, k in names.items():
        if state[z].shape != own[k].shape:
            raise GeometryError(
                f"{what}: {z!r} has shape {tuple(state[z].shape)}, expected {tuple(own[k].shape)}"
            )
    check_finite(state, what)
    model.load_state_dict({k: state[z].to(own[k].dtype) for z, k in names.items()}, strict=True)
