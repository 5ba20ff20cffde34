"""A small sweep whose metric is known in closed form, and a finished run of it written as workers do.

``G(z) = tanh(z)`` shaped to 3x2x2 images with MSE over 12 pixels:
``H = (2/12) diag(sech(z)^4)``. Shared by the verify, fault, trust, security and
bad-input tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cluster.layout import GroupLayout
from cluster.spec import parse_spec
from cluster.store import RunStore

__all__ = ["C", "D", "N", "analytic", "build_run", "random_codes", "tanh_generator", "tanh_spec", "unfinish"]

N, C, D = 8, 2, 12
def tanh_spec(name: str, n: int = N, **patch) -> dict:
    """A sweep of G(z) = tanh(z) shaped to 3x2x2 images with MSE: H = (2/12) diag(sech(z)^4)."""
    raw = {"name": name, "targets": ["mse"], "codes": {"n": n, "seed": 3}, "chunk_size": C,
           "generators": [{"name": "module", "spaces": ["z"], "options": {
               "arch": "torch.nn:Tanh", "latent_dim": D, "input_shape": [3, 2, 2], "allow_import": True}}],
           "keep": {"hessian": True, "eigvecs": True},
           "reducers": {"global": False, "homogeneity": False, "anisotropy": False}}
    raw.update(patch)
    return raw


def tanh_generator():
    """The generator of :func:`tanh_spec`: ``G(z) = tanh(z)`` shaped to 3x2x2 images."""
    import geometry_core as gc

    return gc.load_generator("module", **tanh_spec("x")["generators"][0]["options"])


def random_codes(n: int, dim: int = D, seed: int = 0) -> np.ndarray:
    """``n`` standard normal codes of ``dim`` dimensions (float64), the same for the same seed."""
    return np.random.default_rng(seed).standard_normal((n, dim))


def analytic(z: np.ndarray) -> np.ndarray:
    """The metric of tanh with MSE over 12 pixels, as a stack of diagonal matrices."""
    return np.stack([np.diag(2.0 / 12 * np.cosh(row.astype(np.float64)) ** -4) for row in z])


def build_run(store: Path | str, name: str = "v") -> RunStore:
    """A finished run written through RunStore, chunk by chunk, as a worker does (a directory or an s3:// URL)."""
    import geometry_core as gc

    spec = parse_spec(tanh_spec(name))
    G = gc.load_generator("module", **spec.generators[0].options)
    dist = gc.load_distance("mse")
    rs = RunStore(store if isinstance(store, str) else str(store))
    plan = GroupLayout("module", "z", "mse", n=N, dim=D, chunk_size=C)
    rs.create(name, spec, [plan])
    z = G.sample(N, seed=3)
    for i in range(plan.n_chunks):
        H = gc.metric_tensor(G, dist, z[plan.rows(i)])
        vals, vecs = gc.eigen(H)
        rs.write_chunk(name, plan.key, i, {"z": z[plan.rows(i)].numpy(), "hessian": H.numpy(),
                                           "eigvals": vals.numpy(), "eigvecs": vecs.numpy()})
        rs.mark_done(name, plan.key, i)
    return rs


def unfinish(store: Path, rs: RunStore, run: str = "v") -> list[int]:
    """Make chunks 1 and 2 of :func:`build_run`'s run not done; return their codes.

    Chunk 1 keeps its rows with its eigvals bytes flipped (a torn write: no longer decodes);
    chunk 2's eigvals were never written (zeros, as after a full disk).
    """
    key = "module/z/mse"
    rs.mark_done(run, key, 1, value=0)
    path = Path(store) / run / key / "eigvals" / "c" / "1" / "0"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    rs.mark_done(run, key, 2, value=0)
    (Path(store) / run / key / "eigvals" / "c" / "2" / "0").unlink()
    return [2, 3, 4, 5]
