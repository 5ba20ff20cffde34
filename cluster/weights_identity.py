"""A content hash of every weights file a run's generators load, part of the run's identity.

Example::

    from cluster.weights_identity import weights_digests
    weights_digests(spec)
    # {"dcgan-faces/weights": {"path": ".../gan_face_generate/weights.tar", "sha256": "9f2c..."}}

Files named by the options ``weights``, ``weights_dir`` (every file in it),
``config`` and ``checkpoint``; a catalogue name (as the generator or as
``weights``) resolves to its cached files; ``dcgan-faces`` without ``weights``
to the file its package ships. A run resumed with different contents at the same
path is refused (ARCHITECTURE.md, "Store").
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["FILE_OPTIONS", "file_sha256", "weights_digests"]

FILE_OPTIONS = ("weights", "weights_dir", "config", "checkpoint")
_BLOCK = 1 << 20


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def _catalog_files(name: str) -> dict[str, Path]:
    from geometry_core.generators.catalog import get_entry, is_catalog_name, local_path

    if not is_catalog_name(name):
        return {}
    entry = get_entry(name)
    return {f.option: local_path(entry, f) for f in entry.files}


def _files(gen) -> dict[str, Path]:
    """option (or option/file) -> path of every file generator ``gen`` loads; absent files are left out."""
    out: dict[str, Path] = dict(_catalog_files(gen.name))
    for opt in FILE_OPTIONS:
        value = gen.options.get(opt)
        if not isinstance(value, (str, Path)):
            continue
        cached = _catalog_files(str(value)) if opt == "weights" else {}
        if cached:
            out.update(cached)
            continue
        path = Path(value).expanduser()
        if path.is_dir():
            out.update({f"{opt}/{p.relative_to(path)}": p for p in sorted(path.rglob("*")) if p.is_file()})
        else:
            out[opt] = path
    if gen.name == "dcgan-faces" and "weights" not in gen.options:
        from geometry_core.generators.dcgan_faces import default_weights

        try:
            out["weights"] = default_weights()
        except Exception:  # package absent: loading the generator reports it
            pass
    return {k: p for k, p in out.items() if p.is_file()}


def weights_digests(spec) -> dict[str, dict]:
    """``{"<label>/<option>": {"path", "sha256"}}`` for every weights file of ``spec``'s generators."""
    out = {}
    for gen in spec.generators:
        for opt, path in _files(gen).items():
            out[f"{gen.label}/{opt}"] = {"path": str(path.resolve()), "sha256": file_sha256(path)}
    return dict(sorted(out.items()))
