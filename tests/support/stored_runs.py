"""Finished, reduced runs of real generators written without Ray: the workers' own chunk
computation (``cluster.worker.compute_chunk``) and the store's write path, then the reducers
in this process.

Example::

    write_run(tmp_path / "store", "trained", n=4)
    write_run(tmp_path / "store", "shuffled", n=4, generators=[{"name": "dcgan-faces",
              "options": {"shuffle_seed": 0}}])

What a driver writes (spec, identity, groups, chunks with their checksums and ``done``,
``reduce/`` with its completion record, status ``complete``), in seconds rather than the
time an embedded Ray needs to start on a busy machine. Used by the stored-run command tests.
"""

from __future__ import annotations

from pathlib import Path

from cluster.layout import GroupLayout
from cluster.reduce import reduce_run
from cluster.spec import parse_spec
from cluster.store import RunStore
from cluster.worker import ChunkTask, compute_chunk

__all__ = ["write_run"]


def write_run(store: str | Path, name: str, *, n: int = 4, chunk_size: int = 2, seed: int = 0,
              generators: list | None = None, targets: tuple[str, ...] = ("mse",), reduce: bool = True,
              s3_endpoint: str | None = None) -> RunStore:
    """A complete run ``name`` of ``generators`` (default the face DCGAN) x ``targets``, reduced unless told."""
    import geometry_core as gc

    raw = {"name": name, "generators": generators or [{"name": "dcgan-faces"}], "targets": list(targets),
           "codes": {"n": n, "seed": seed}, "chunk_size": chunk_size, "keep": {"hessian": False, "eigvecs": True}}
    if not reduce:
        raw["reducers"] = {"global": False, "homogeneity": False, "anisotropy": False}
    spec = parse_spec(raw)
    rs = RunStore(str(store), s3_endpoint=s3_endpoint)
    work = []
    for gen in spec.generators:
        for space in gen.spaces:
            G = gc.load_generator(gen.name, space=space, **gen.options)
            for target in spec.targets:
                dist = gc.load_distance(target, generator=G)
                lay = GroupLayout(gen.label, space, target, n=n, dim=G.latent_dim, chunk_size=chunk_size)
                work.append((gen, lay, G, dist))
    rs.create(name, spec, [lay for _, lay, _, _ in work])
    rs.update_attrs(name, status="running")
    for gen, lay, G, dist in work:
        for chunk in range(lay.n_chunks):
            task = ChunkTask(name, lay, chunk, gen.name, dict(gen.options), spec.seed, spec.method, spec.topk)
            arrays = compute_chunk(G, dist, task)
            rs.write_chunk(name, lay.key, chunk, {k: v.numpy() for k, v in arrays.items()})
            rs.mark_done(name, lay.key, chunk)
    if reduce:
        rs.update_attrs(name, status="reducing")
        reduce_run(rs.root, name, use_ray=False)
    rs.update_attrs(name, status="complete")
    return rs
