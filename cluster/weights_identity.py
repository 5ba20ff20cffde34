"""A content hash of every weights file a run's generators load, part of the run's identity.

Example::

    from cluster.weights_identity import weights_digests
    weights_digests(spec)
    # {"dcgan-faces/weights": {"path": ".../gan_face_generate/weights.tar", "sha256": "9f2c..."}}

Which files a generator loads is its registration's business
(``geometry_core.generators.weight_files``: the options it declares, its files
by default, catalogue names resolved to the cache); this module only hashes
them, and knows no family by name. A run resumed with different contents at the
same path is refused (ARCHITECTURE.md, "Store").
"""

from __future__ import annotations

from geometry_core.generators import weight_files
from geometry_core.weights_cache import sha256_file

from .s3_checkpoints import is_s3, local_options

__all__ = ["weights_digests"]


def weights_digests(spec) -> dict[str, dict]:
    """``{"<label>/<option>": {"path", "sha256"}}`` for every weights file of ``spec``'s generators.

    A checkpoint of a series also names its ``series`` and ``step`` (new ones grow the run);
    one in S3 is downloaded here first and named by its pinned URL.
    """
    out = {}
    for gen in spec.generators:
        mark = {"series": gen.series_of, "step": gen.step} if gen.series is not None else {}
        for opt, path in weight_files(gen.name, local_options(gen.options)).items():
            # An S3 checkpoint is recorded by its pinned URL: a report reloads that very object.
            where = gen.options[opt] if is_s3(gen.options.get(opt)) else str(path.resolve())
            out[f"{gen.label}/{opt}"] = {"path": where, "sha256": sha256_file(path), **mark}
    return dict(sorted(out.items()))
