"""NVIDIA StyleGAN2-ADA ``.pkl`` files, read without running anything from them.

Example::

    cfg, state, latent_avg, name_of = read_nvidia_pkl("ffhq.pkl")

NVIDIA's pickles (``training_loop.py`` writes ``{"G", "D", "G_ema",
"augment_pipe", "training_set_kwargs", ...}``) store every network as a call
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` whose ``meta``
carries the class's *source code* (``module_src``, executed by NVIDIA's
loader) and the module's ``__dict__`` (``state``). Here a restricted
unpickler resolves only tensor and storage rebuilders, plain containers and
numpy scalars and arrays; the persistent-object call yields an inert record of ``meta``
whose source is never looked at, and any other global is refused with
:class:`UnsafeCheckpointError` before it could run. Parameters come from each
record's ``_parameters`` / ``_buffers`` / ``_modules`` dictionaries.

Names (``training/networks.py``): ``mapping.fc{i}.{weight,bias}`` with gains
``weight_gain = lr / sqrt(in)`` and ``bias_gain = lr`` applied at run time, as
rosinality does; ``mapping.w_avg`` (the truncation centre);
``synthesis.b{res}.{conv0,conv1,torgb}.{weight,bias,affine.weight,affine.bias}``,
``noise_const`` (res, res) and ``noise_strength`` (); ``synthesis.b4.const``.
The synthesis weights are stored without their equalized-lr gain, which the
built-in layers apply; demodulation cancels it except inside the 1e-8 of the
rsqrt. Their mapping normalises z by its second moment (the pixel norm) and
their layers clamp activations to +-``conv_clamp``, both kept here.
"""

from __future__ import annotations

import collections
import io
import pickle
import re
from pathlib import Path

import numpy as np
import torch

from ..errors import GeometryError, MissingWeightsError, UnsafeCheckpointError
from .stylegan2_arch import StyleGAN2Config, blur_kernel

__all__ = ["PersistentRecord", "nvidia_name", "read_nvidia_pkl", "safe_unpickle"]


class PersistentRecord:
    """What ``_reconstruct_persistent_obj(meta)`` stands for: the class name and its state, inert."""

    def __init__(self, meta: object):
        meta = meta if isinstance(meta, dict) else {}
        self.class_name = str(meta.get("class_name", "?"))
        state = meta.get("state")
        self.state = state if isinstance(state, dict) else {}


class _EasyDict(dict):
    """dnnlib's attribute dict as a plain dict (its attribute state, if any, is dropped)."""

    def __setstate__(self, state):
        pass


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, *metadata):
    if not isinstance(storage, (torch.UntypedStorage, torch.TypedStorage)):
        raise UnsafeCheckpointError(f"stylegan2 pkl: a tensor's storage is a {type(storage).__name__}")
    return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, collections.OrderedDict())


def _rebuild_parameter(data, requires_grad=False, hooks=None, *state):
    return data  # a parameter's data is all that is needed


def _load_storage(data: bytes):
    # Storages pickle themselves as a nested torch.save: read it with weights_only, too.
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise UnsafeCheckpointError(f"stylegan2 pkl: refused numpy scalar of dtype {dtype!r}")
    return np.frombuffer(data, dtype=dtype)[0].item()


def _numpy_array(subtype, shape, dtype_code):
    # numpy's pickled arrays: an empty array of this exact class, then its __setstate__ (raw data).
    if subtype is not np.ndarray:
        raise UnsafeCheckpointError(f"stylegan2 pkl: refused numpy array subclass {subtype!r}")
    if not isinstance(shape, tuple) or len(shape) != 1 or shape[0] != 0:  # allocated before any size check
        raise UnsafeCheckpointError(f"stylegan2 pkl: refused a numpy array that does not start empty "
                                    f"(shape {str(shape)[:40]}), as numpy writes them")
    return np.ndarray.__new__(np.ndarray, shape, dtype_code if isinstance(dtype_code, str) else "b")


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): PersistentRecord,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_array,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_array,
    ("numpy", "ndarray"): np.ndarray,
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        found = _ALLOWED.get((module, name))
        if found is None:
            raise UnsafeCheckpointError(
                f"stylegan2 pkl: refused global {module}.{name} (only tensors, plain containers and "
                "NVIDIA's persistent networks are read; nothing in the file is run)"
            )
        return found

    def persistent_load(self, pid):
        raise UnsafeCheckpointError(f"stylegan2 pkl: refused persistent id {str(pid)[:40]!r}")


def safe_unpickle(path: str | Path) -> object:
    """Unpickle ``path`` with the restricted unpickler above (never runs code from the file)."""
    path = Path(path).expanduser().absolute()
    if not path.is_file():
        raise MissingWeightsError(f"stylegan2 pkl: weight file not found: {path}")
    try:
        with path.open("rb") as f:
            return _Unpickler(f).load()
    except UnsafeCheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, RuntimeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise GeometryError(f"stylegan2 pkl: {path} is not a readable StyleGAN2-ADA pickle: {first}") from None


def _flatten(record: PersistentRecord, prefix: str, tensors: dict, attrs: dict) -> None:
    """Parameters and buffers by dotted name; each record's plain attributes under its own name."""
    attrs[prefix.rstrip(".")] = record.state
    for group in ("_parameters", "_buffers"):
        for name, t in (record.state.get(group) or {}).items():
            if t is not None:
                tensors[prefix + name] = t
    for name, child in (record.state.get("_modules") or {}).items():
        if isinstance(child, PersistentRecord):
            _flatten(child, f"{prefix}{name}.", tensors, attrs)
        elif child is not None:
            raise GeometryError(f"stylegan2 pkl: submodule {prefix + name!r} is a {type(child).__name__}")


def nvidia_name(name: str) -> str:
    """The pickle's name of a built-in parameter or buffer (for error messages)."""
    if m := re.fullmatch(r"mapping\.(\d+)\.(\w+)", name):
        return f"mapping.fc{int(m[1]) - 1}.{m[2]}"
    if name == "synthesis.const":
        return "synthesis.b4.const"
    m = re.fullmatch(r"synthesis\.(conv1|to_rgb1|convs\.\d+|to_rgbs\.\d+)\.(.+)", name)
    if not m:
        return name
    layer, rest = m[1], ("noise_const" if m[2] == "noise" else m[2])
    if layer in ("conv1", "to_rgb1"):
        return f"synthesis.b4.{'conv1' if layer == 'conv1' else 'torgb'}.{rest}"
    i = int(layer.rsplit(".", 1)[1])
    if layer.startswith("convs"):
        return f"synthesis.b{2 ** (i // 2 + 3)}.conv{i % 2}.{rest}"
    return f"synthesis.b{2 ** (i + 3)}.torgb.{rest}"


def _get(tensors: dict, key: str) -> torch.Tensor:
    t = tensors.get(key)
    if not isinstance(t, torch.Tensor):
        raise GeometryError(f"stylegan2 pkl: missing tensor {key!r} (not a StyleGAN2-ADA generator?)")
    return t


def _one_value(attrs: dict, key: str, layers: list[str], what: str):
    values = {attrs.get(layer, {}).get(key) for layer in layers}
    if len(values) != 1:
        raise GeometryError(f"stylegan2 pkl: {what} differs between layers ({sorted(map(str, values))})")
    return values.pop()


def _generator(obj: object) -> PersistentRecord:
    if not isinstance(obj, dict):
        raise GeometryError(f"stylegan2 pkl: expected a dict with 'G_ema', got {type(obj).__name__}")
    G = obj.get("G_ema", obj.get("G"))
    if not isinstance(G, PersistentRecord) or G.class_name != "Generator":
        raise GeometryError(f"stylegan2 pkl: expected a persistent 'G_ema' Generator, got keys {sorted(obj)[:6]}")
    return G


def read_nvidia_pkl(path: str | Path):
    """``(config, built-in state dict, latent_avg, nvidia_name)`` of a StyleGAN2-ADA pickle."""
    tensors: dict[str, torch.Tensor] = {}
    attrs: dict[str, dict] = {}
    _flatten(_generator(safe_unpickle(path)), "", tensors, attrs)
    if "mapping.embed.weight" in tensors:
        raise GeometryError("stylegan2 pkl: conditional generators (mapping.embed, c_dim > 0) are not supported")
    n_mlp = sum(1 for k in tensors if re.fullmatch(r"mapping\.fc\d+\.weight", k))
    style_dim = _get(tensors, "mapping.fc0.weight").shape[1]
    fcs = [f"mapping.fc{i}" for i in range(n_mlp)]
    lr_mlp = _one_value(attrs, "bias_gain", fcs, "the mapping's learning-rate multiplier")
    if _one_value(attrs, "activation", fcs, "the mapping's activation") != "lrelu":
        raise GeometryError("stylegan2 pkl: expected leaky-ReLU mapping layers")
    res = sorted(int(m[1]) for k in attrs if (m := re.fullmatch(r"synthesis\.b(\d+)", k)))
    if not res or res != [2**i for i in range(2, len(res) + 2)]:
        raise GeometryError(f"stylegan2 pkl: expected synthesis blocks b4, b8, ... , got {res}")
    for r in res:
        if attrs[f"synthesis.b{r}"].get("architecture", "skip") != "skip":
            raise GeometryError(f"stylegan2 pkl: block b{r} is not a 'skip' architecture (StyleGAN2 config F)")
    layers = [k for k in attrs if re.fullmatch(r"synthesis\.b\d+\.(conv0|conv1|torgb)", k)]
    clamp = _one_value(attrs, "conv_clamp", layers, "conv_clamp")
    convs = [k for k in layers if not k.endswith("torgb")]
    if _one_value(attrs, "activation", convs, "the synthesis activation") != "lrelu":
        raise GeometryError("stylegan2 pkl: expected leaky-ReLU synthesis layers")
    channels = {r: _get(tensors, f"synthesis.b{r}.conv1.weight").shape[0] for r in res}
    cfg = StyleGAN2Config(res[-1], style_dim, n_mlp, channels, lr_mlp=float(lr_mlp),
                          conv_clamp=None if clamp is None else float(clamp))
    return cfg, _convert(tensors, cfg), tensors.get("mapping.w_avg"), nvidia_name


def _convert(tensors: dict, cfg: StyleGAN2Config) -> dict[str, torch.Tensor]:
    filt = blur_kernel(1.0)
    out: dict[str, torch.Tensor] = {}
    for key, t in tensors.items():
        if key == "mapping.w_avg":
            continue
        if key.endswith("resample_filter"):
            if t.shape != (4, 4) or not torch.allclose(t.float(), filt, atol=1e-6):
                raise GeometryError(f"stylegan2 pkl: {key!r} is not the [1, 3, 3, 1] filter this model uses")
            continue
        out[key] = t
    renamed = {}
    for name in _builtin_names(cfg):
        theirs = nvidia_name(name)
        if theirs in out:
            t = out.pop(theirs)
            if name == "synthesis.const" or name.endswith(".noise"):
                t = t.unsqueeze(0) if name == "synthesis.const" else t.reshape(1, 1, *t.shape[-2:])
            renamed[name] = t
    if out:
        raise GeometryError(f"stylegan2 pkl: unexpected tensor {next(iter(out))!r} for a StyleGAN2 generator")
    return renamed


def _builtin_names(cfg: StyleGAN2Config) -> list[str]:
    names = [f"mapping.{i}.{p}" for i in range(1, cfg.n_mlp + 1) for p in ("weight", "bias")]
    names.append("synthesis.const")
    conv = ("weight", "bias", "affine.weight", "affine.bias", "noise_strength", "noise")
    rgb = ("weight", "bias", "affine.weight", "affine.bias")
    layers = [("conv1", conv), ("to_rgb1", rgb)]
    for i in range(cfg.log_size - 2):
        layers += [(f"convs.{2 * i}", conv), (f"convs.{2 * i + 1}", conv), (f"to_rgbs.{i}", rgb)]
    return names + [f"synthesis.{layer}.{p}" for layer, ps in layers for p in ps]
