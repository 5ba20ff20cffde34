"""rosinality-format StyleGAN2 checkpoints -> the built-in architecture.

Example::

    cfg, state = convert_rosinality(ckpt["g_ema"])     # shapes read from the state dict
    net = StyleGAN2(cfg, "z"); net.load_state_dict(state)

rosinality/stylegan2-pytorch names a layer's parameters ``<layer>.conv.weight``
(shape ``(1, out, in, k, k)``), ``<layer>.conv.modulation.{weight,bias}``,
``<layer>.noise.weight`` (shape ``(1,)``), ``<layer>.activate.bias`` (to-RGB
layers: ``<layer>.bias`` of shape ``(1, 3, 1, 1)``), the mapping network
``style.{1..n_mlp}.{weight,bias}``, the constant ``input.input`` and the fixed
noise ``noises.noise_{k}`` (k = 0 for ``conv1``, k = j + 1 for ``convs.j``). Its
blur kernels are buffers, checked against the [1, 3, 3, 1] filter and dropped.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from ..errors import GeometryError
from .checkpoint import safe_load
from .stylegan2_arch import StyleGAN2Config, blur_kernel, standard_channels

__all__ = ["builtin_name", "convert_rosinality", "read_rosinality", "rosinality_name"]

_LAYER = r"(conv1|convs\.\d+|to_rgb1|to_rgbs\.\d+)"
# The one name table, read both ways: (rosinality checkpoint key, built-in name). A field {f} stands
# for _FIELDS[f] on both sides; {k+1} is field k written one higher (the checkpoint numbers noises
# from the first conv, the built-in model from the first of ``convs``). First match wins.
_FIELDS = {"i": r"\d+", "p": r"weight|bias", "k": r"\d+", "layer": r"conv1|convs\.\d+|to_rgb1|to_rgbs\.\d+",
           "conv": r"conv1|convs\.\d+", "rgb": r"to_rgb1|to_rgbs\.\d+"}
_NAMES = (
    ("style.{i}.{p}", "mapping.{i}.{p}"),
    ("input.input", "synthesis.const"),
    ("noises.noise_0", "synthesis.conv1.noise"),
    ("noises.noise_{k+1}", "synthesis.convs.{k}.noise"),
    ("{layer}.conv.weight", "synthesis.{layer}.weight"),
    ("{layer}.conv.modulation.weight", "synthesis.{layer}.affine.weight"),
    ("{layer}.conv.modulation.bias", "synthesis.{layer}.affine.bias"),
    ("{layer}.noise.weight", "synthesis.{layer}.noise_strength"),
    ("{conv}.activate.bias", "synthesis.{conv}.bias"),
    ("{rgb}.bias", "synthesis.{rgb}.bias"),
)
_FIELD = re.compile(r"\{(\w+)(\+1)?\}")


def _pattern(template: str) -> re.Pattern:
    parts, last = [], 0
    for m in _FIELD.finditer(template):
        parts += [re.escape(template[last:m.start()]), f"(?P<{m[1]}>{_FIELDS[m[1]]})"]
        last = m.end()
    return re.compile("".join(parts) + re.escape(template[last:]))


_PATTERNS = [(_pattern(theirs), _pattern(mine)) for theirs, mine in _NAMES]


def _translate(name: str, src: int) -> str | None:
    """``name`` read with side ``src`` of the table (0: checkpoint, 1: built-in), written with the other."""
    for row, patterns in zip(_NAMES, _PATTERNS):
        m = patterns[src].fullmatch(name)
        if m is None:
            continue
        fields = dict(m.groupdict())
        shifted = {f for f, plus in _FIELD.findall(row[src]) if plus}
        if any(int(fields[f]) < 1 for f in shifted):
            continue
        fields.update({f: str(int(fields[f]) - 1) for f in shifted})
        return _FIELD.sub(lambda f: str(int(fields[f[1]]) + 1) if f[2] else fields[f[1]], row[1 - src])
    return None


_BLUR = re.compile(rf"{_LAYER}\.(conv\.blur|upsample)\.kernel")


def read_rosinality(weights: str | Path) -> tuple[dict, torch.Tensor | None]:
    """``(g_ema state dict, latent_avg or None)`` of a checkpoint, loaded with ``weights_only=True``."""
    # Training checkpoints carry their argparse.Namespace of options: plain data.
    ckpt = safe_load(weights, what="stylegan2 checkpoint", safe_globals=[argparse.Namespace])
    if not isinstance(ckpt, dict) or "g_ema" not in ckpt:
        keys = sorted(ckpt)[:5] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise GeometryError(f"stylegan2: expected a rosinality checkpoint with a 'g_ema' entry, got {keys}")
    avg = ckpt.get("latent_avg")
    if avg is not None and not (isinstance(avg, torch.Tensor) and avg.is_floating_point()):
        raise GeometryError(f"stylegan2: latent_avg must be a floating tensor, got {type(avg).__name__}")
    return ckpt["g_ema"], avg


def builtin_name(key: str) -> str | None:
    """Built-in name of a checkpoint key, None when the key is not one of the format's."""
    return _translate(key, 0)


def rosinality_name(name: str) -> str:
    """The checkpoint key of a built-in parameter or buffer name (for error messages)."""
    return _translate(name, 1) or name


def _shape(state: dict, key: str, ndim: int) -> tuple[int, ...]:
    t = state.get(key)
    if not isinstance(t, torch.Tensor):
        raise GeometryError(f"stylegan2 g_ema: missing key {key!r} (not a rosinality StyleGAN2 state dict?)")
    if t.ndim != ndim:
        raise GeometryError(f"stylegan2 g_ema: {key!r} has shape {tuple(t.shape)}, expected {ndim} dimensions")
    return tuple(t.shape)


def infer_config(state: dict) -> StyleGAN2Config:
    """Size, style_dim, n_mlp and channels per resolution from the tensors' shapes."""
    n_mlp = 0
    while f"style.{n_mlp + 1}.weight" in state:
        n_mlp += 1
    if n_mlp == 0:
        raise GeometryError("stylegan2 g_ema: missing key 'style.1.weight' (not a rosinality StyleGAN2 state dict?)")
    style_dim = _shape(state, "style.1.weight", 2)[1]
    n_rgb = 0
    while f"to_rgbs.{n_rgb}.conv.weight" in state:
        n_rgb += 1
    channels = {4: _shape(state, "conv1.conv.weight", 5)[1]}
    for i in range(n_rgb):
        channels[2 ** (i + 3)] = _shape(state, f"convs.{2 * i}.conv.weight", 5)[1]
    return StyleGAN2Config(4 * 2**n_rgb, style_dim, n_mlp, channels)


def channel_multiplier_of(cfg: StyleGAN2Config) -> int | None:
    """The config-F channel multiplier that gives these channels, None when none does."""
    return next((m for m in (1, 2, 4) if standard_channels(cfg.size, m) == cfg.channels), None)


def convert_rosinality(state: dict) -> tuple[StyleGAN2Config, dict[str, torch.Tensor]]:
    """(config, built-in state dict) of a rosinality ``g_ema`` state dict.

    Raises :class:`GeometryError` naming the first key that is not part of the
    format or a blur kernel other than [1, 3, 3, 1].
    """
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise GeometryError(f"stylegan2 g_ema: expected a state_dict (str -> tensor), got {type(state).__name__}")
    cfg = infer_config(state)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise GeometryError(f"stylegan2 g_ema: {key!r} is a {type(value).__name__}, expected a tensor")
        if _BLUR.fullmatch(key):
            if value.shape != (4, 4) or not torch.allclose(value.float(), blur_kernel(4.0), atol=1e-6):
                raise GeometryError(f"stylegan2 g_ema: {key!r} is not the [1, 3, 3, 1] blur kernel this model uses")
            continue
        name = builtin_name(key)
        if name is None:
            raise GeometryError(f"stylegan2 g_ema: unexpected key {key!r} (not part of a rosinality StyleGAN2)")
        if name.endswith(".weight") and value.ndim == 5:
            value = value.squeeze(0)
        elif name.endswith("noise_strength") and value.numel() == 1:
            value = value.reshape(())
        elif re.fullmatch(r"synthesis\.to_rgbs?[.\d]*\.bias", name):
            value = value.reshape(-1)
        out[name] = value
    return cfg, out
