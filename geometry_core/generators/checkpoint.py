"""Safe checkpoint loading: tensors only, never pickled code.

Example::

    state = safe_load("weights.pt", what="dcgan-faces weights")
    load_state_dict_strict(net, state, what="dcgan-faces weights")

``safe_load`` always uses ``torch.load(..., weights_only=True)``; a checkpoint
that would need arbitrary code to unpickle is refused with
:class:`UnsafeCheckpointError` before any of that code runs.

A checkpoint that pickles a plain-data object of a foreign library (a config
holding numbers and strings) loads without that library: ``stand_in(name)``
admits that one global name as an :class:`InertRecord`, which only stores the
attributes::

    state = safe_load(path, safe_globals=[stand_in("models.utils.config.BaseConfig")])
    fields = state["config"].fields          # {"depthScale0": 512, ...}
"""

from __future__ import annotations

import pickle
import re
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import NoReturn

import torch
from torch import nn

from ..errors import GeometryError, MissingWeightsError, UnsafeCheckpointError, clip

__all__ = ["InertRecord", "check_finite", "load_state_dict_strict", "safe_load", "stand_in"]

# torch names a refused global in two wordings: an unknown one, or one from a module it blocks (os, subprocess).
_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) (\S+)")
_STAND_IN = re.compile(r"stand-in object: [^\n]*")
_SIZE = re.compile(
    r"size mismatch for (\S+): copying a param with shape torch\.Size\(\[([^\]]*)\]\) "
    r"from checkpoint, the shape in current model is torch\.Size\(\[([^\]]*)\]\)"
)


class InertRecord:
    """A pickled plain-data object read back as its attributes, with no behaviour.

    The unpickler only creates it (``__new__``) and hands it its state; a state
    that is not a dict of str keys is refused, and calling it with arguments
    (a pickle's REDUCE) fails. ``fields`` holds the attributes.
    """

    def __init__(self) -> None:
        self.fields: dict[str, object] = {}

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise pickle.UnpicklingError(
                f"stand-in object: expected a dict of attributes, got {type(state).__name__}"
            )
        self.__dict__["fields"] = dict(state)

    def __repr__(self) -> str:
        return f"InertRecord({self.__dict__.get('fields', {})!r})"


def stand_in(global_name: str) -> tuple[type, str]:
    """A ``safe_globals`` entry that unpickles ``global_name`` as an :class:`InertRecord`."""
    if not isinstance(global_name, str) or "." not in global_name:
        raise GeometryError(f"stand_in: expected a dotted global name such as 'pkg.Class', got {global_name!r}")
    return (InertRecord, global_name)


def safe_load(
    path: str | Path,
    *,
    what: str = "checkpoint",
    safe_globals: Iterable[type | tuple[type, str]] = (),
) -> object:
    """Load a checkpoint with ``weights_only=True`` onto the CPU.

    ``safe_globals`` allowlists plain data classes that some checkpoints carry
    (e.g. ``argparse.Namespace`` in StyleGAN2 training checkpoints), or
    ``stand_in(name)`` entries for a foreign plain-data class.

    Raises :class:`MissingWeightsError` (names the absolute path) when the file
    is absent, :class:`UnsafeCheckpointError` when it needs pickled code, and
    :class:`GeometryError` when it is not a readable checkpoint.
    """
    path = Path(path).expanduser().absolute()
    if not path.exists():
        raise MissingWeightsError(f"{what}: weight file not found: {path}")
    if not path.is_file():
        raise GeometryError(f"{what}: expected a checkpoint file, got a directory or special file: {path}")
    _check_zip_members(path, what)
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise GeometryError(f"{what}: {path} declares more data than fits in memory; refused "
                            "(a damaged or hostile file?)") from None
    except pickle.UnpicklingError as err:
        found = _GLOBAL.search(str(err))
        code = found.group(1) if found else _foreign_global(path)
        if code:
            raise UnsafeCheckpointError(
                f"{what}: {path} contains pickled code ({code}) and is refused; "
                "re-save it as a plain state_dict: torch.save(model.state_dict(), path)"
            ) from None
        refused = _STAND_IN.search(str(err))
        detail = refused.group(0) if refused else f"the weights-only loader refused it: {_unpickler_reason(str(err))}"
        raise GeometryError(f"{what}: {path} is not a readable torch checkpoint ({detail})") from None
    # struct: short/garbled files; TypeError: a stand-in called with arguments
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, struct.error) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise GeometryError(f"{what}: {path} is not a readable torch checkpoint: {first}") from None
    _check_tensor_extents(state, path, what)
    return state


def _check_zip_members(path: Path, what: str) -> None:
    """Refuse a zip checkpoint whose members would expand past the file before torch reads them.

    torch.save stores its records uncompressed, so a compressed member (a zip bomb's
    way to become gigabytes) or declared sizes beyond the file's own are not its own.
    """
    import zipfile

    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise GeometryError(f"{what}: {path} is not a readable torch checkpoint: {err}") from None
    size = path.stat().st_size
    for m in members:
        if m.compress_type != zipfile.ZIP_STORED:
            raise GeometryError(f"{what}: {path} holds a compressed member {m.filename!r} "
                                f"({m.file_size} bytes expanded); torch checkpoints are stored uncompressed, refused")
    declared = sum(m.file_size for m in members)
    if declared > size:
        raise GeometryError(f"{what}: {path} declares {declared} bytes of members in a file of {size}; refused")


def _check_tensor_extents(state: object, path: Path, what: str, _depth: int = 0) -> None:
    """Every tensor must fit in its storage: a zero or overlapping stride makes a small file a view of
    gigabytes, which the first copy would allocate."""
    if _depth > 32:
        return
    if isinstance(state, torch.Tensor):
        extent = state.numel() * state.element_size()
        if extent > state.untyped_storage().nbytes():
            raise GeometryError(f"{what}: {path} holds a tensor of shape {tuple(state.shape)} ({extent} bytes) "
                                f"over a storage of {state.untyped_storage().nbytes()} bytes (strides "
                                f"{state.stride()}); refused")
    elif isinstance(state, dict):
        for value in state.values():
            _check_tensor_extents(value, path, what, _depth + 1)
    elif isinstance(state, (list, tuple)):
        for value in state:
            _check_tensor_extents(value, path, what, _depth + 1)


def _unpickler_reason(text: str) -> str:
    """The weights-only unpickler's own reason, from its many-line message."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip() or (lines[i + 1] if i + 1 < len(lines) else "")
            return rest[:200] or "unsupported content"
    return "unsupported content"


# Modules whose names a plain (pre-zip) tensor pickle refers to.
_DATA_MODULES = ("torch", "collections", "numpy", "_codecs")
_MAX_SCAN_BYTES = 64 << 20


def _foreign_global(path: Path) -> str | None:
    """The first global of a plain pickle file outside the data modules (read as opcodes, never run).

    The weights-only loader stops at a pickle opcode it does not know before it
    names the global (protocol 4 framing), which would read as damage, not code.
    """
    import pickletools
    import zipfile

    if zipfile.is_zipfile(path) or path.stat().st_size > _MAX_SCAN_BYTES:
        return None
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(path.read_bytes()):
            if op.name == "GLOBAL":
                name = str(arg).replace(" ", ".")
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                name = f"{strings[-2]}.{strings[-1]}"
            else:
                if isinstance(arg, str):
                    strings.append(arg)
                continue
            if name.split(".")[0] not in _DATA_MODULES:
                return name
    except Exception:  # noqa: BLE001 - not a pickle at all: damage, reported by the caller
        return None
    return None


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(s) for s in text.split(",") if s.strip())


def check_finite(state: dict, what: str) -> None:
    """Refuse weights holding NaN or Inf: they load, then every image and metric is NaN."""
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise GeometryError(f"{what}: {clip(key)} holds NaN or Inf values; these weights are damaged")


def load_state_dict_strict(
    module: nn.Module,
    state: object,
    *,
    what: str = "checkpoint",
    allow_missing: str | None = None,
) -> list[str]:
    """``module.load_state_dict(state, strict=True)`` with one clear error line.

    ``allow_missing`` is a regular expression of keys that may be absent (for
    example StyleGAN2's fixed noise buffers in older checkpoints); the keys
    actually missing and matching it are returned so the caller can fill them.
    Raises :class:`GeometryError` naming the first mismatched parameter with
    both shapes, or the missing / unexpected keys.
    """
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise GeometryError(f"{what}: expected a state_dict (str -> tensor), got {type(state).__name__}")
    check_finite(state, what)
    result = None
    try:
        result = module.load_state_dict(state, strict=allow_missing is None)
    except RuntimeError as err:
        _raise_load_error(err, what)
    if allow_missing is None:
        return []
    pattern = re.compile(allow_missing)
    bad_missing = [k for k in result.missing_keys if not pattern.fullmatch(k)]
    if bad_missing or result.unexpected_keys:
        _raise_keys(bad_missing, result.unexpected_keys, what)
    return list(result.missing_keys)


def _raise_load_error(err: RuntimeError, what: str) -> NoReturn:
    text = str(err)
    size = _SIZE.search(text)
    if size:
        name, ckpt, model = size.group(1), _shape(size.group(2)), _shape(size.group(3))
        raise GeometryError(
            f"{what}: parameter {name!r} has shape {ckpt} in the checkpoint but {model} in the model "
            "(wrong architecture options, e.g. latent size?)"
        ) from None
    missing = _quoted_after(text, "Missing key(s) in state_dict:")
    unexpected = _quoted_after(text, "Unexpected key(s) in state_dict:")
    if missing or unexpected:
        _raise_keys(missing, unexpected, what)
    raise GeometryError(f"{what}: state_dict does not fit the model: {text.splitlines()[0]}") from None


def _quoted_after(text: str, header: str) -> list[str]:
    # torch lists keys as "a", "b" on the line after its header.
    if header not in text:
        return []
    return re.findall(r'"([^"]+)"', text.split(header, 1)[1].split("\n", 1)[0])


def _raise_keys(missing: list[str], unexpected: list[str], what: str) -> NoReturn:
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) (first: {missing[:3]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) (first: {unexpected[:3]})")
    raise GeometryError(
        f"{what}: state_dict does not fit the model: {'; '.join(parts)} (wrong architecture or options?)"
    ) from None
