"""A reduced run of synthetic metrics written straight into Zarr, for the report's tests.

Three groups of the face DCGAN's z space (D = 100, so the traversal grid renders real
images from the shipped generator), float64 metrics with spectra spread over 10^0 .. 10^-6,
reduced by the real reducers in-process. The second layer group has one chunk not done
(and garbage in its rows), so 4 of the run's 36 codes must count nowhere.

Example::

    write_report_run(tmp_path)   # run "quick" in the store tmp_path
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from cluster.reduce import reduce_group
from tests.support.stores import write_group

__all__ = ["C", "D", "LAYERS", "MSE", "N", "RUN", "SPEC", "TIMING", "metrics", "write_report_run"]

N, D, C = 12, 100, 4
RUN = "quick"
MSE = "dcgan-faces/z/mse"
LAYERS = ("dcgan-faces/z/layer-main.2", "dcgan-faces/z/layer-main.5")
SPEC = {
    "name": RUN,
    "generators": [{"name": "dcgan-faces", "spaces": ["z"], "options": {}}],
    "targets": ["mse", "layer:main.2", "layer:main.5"],
    "codes": {"n": N, "seed": 0},
}
TIMING = {"sweep_s": 12.5, "reduce_s": 3.25}


def metrics(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """N PSD matrices with spectra spread over 10^0 .. 10^-6 and random bases; (H, eigvals desc, eigvecs)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((N, D, D)))
    lam = np.logspace(0, -6, D) * (1 + 0.5 * rng.random((N, D)))
    lam = -np.sort(-lam, axis=1)
    h = np.einsum("nik,nk,njk->nij", q, lam, q)
    return 0.5 * (h + h.transpose(0, 2, 1)), lam, q


def _write_group(run: zarr.Group, key: str, seed: int, *, done, hessian: bool) -> zarr.Group:
    model, space, target = key.split("/")
    h, lam, q = metrics(seed)
    z = np.random.default_rng(100 + seed).standard_normal((N, D))
    arrays = {"z": z, "eigvals": lam, "eigvecs": q, **({"hessian": h} if hessian else {})}
    return write_group(run, key, arrays, chunk_size=C, done=done,
                       attrs={"model": model, "space": space, "target": target.replace("layer-", "layer:")})


def write_report_run(path: Path) -> Path:
    """Run :data:`RUN` in the store at ``path``: the MSE group reduced whole, two layer groups (anisotropy)."""
    root = zarr.open_group(str(path), mode="a", zarr_format=3)
    run = root.require_group(RUN)
    run.attrs.update({"spec": SPEC, "status": "complete", "created": "2026-01-01T00:00:00+00:00",
                      "versions": {"torch": "2.14.1"}, "timing": TIMING})
    g = _write_group(run, MSE, 0, done=[1, 1, 1], hessian=True)
    reduce_group(g, tile=6, use_ray=False)
    # The second layer has one chunk not done: its rows must not count anywhere.
    for key, seed, done in ((LAYERS[0], 1, [1, 1, 1]), (LAYERS[1], 2, [1, 0, 1])):
        lg = _write_group(run, key, seed, done=done, hessian=False)
        if done[1] == 0:
            lg["eigvals"][C : 2 * C] = 1e6  # a half-written chunk: garbage that must be ignored
        reduce_group(lg, reducers=("anisotropy",), use_ray=False)
    return path


