"""Spectra are decomposed in float64 whatever the metric's dtype, in memory and in the store.

A float32 metric and its exact float64 copy are the same matrix, so every spectrum
and homogeneity matrix derived from them must agree to float64 round-off. Decomposed
in float32 instead they differ by ~1e-3 per homogeneity entry (the bottom of the
spectrum is LAPACK float32 round-off), which the 1e-8 tolerance below rejects.
"""

from __future__ import annotations

import numpy as np
import torch
import zarr

from cluster.layout import GroupLayout
from cluster.reduce import reduce_group
from cluster.spec import parse_spec
from cluster.store import RunStore
from cluster.verify import verify_run
from cluster.worker import ChunkTask, compute_chunk
from geometry_core.homogeneity import global_metric, homogeneity
from geometry_core.metric import metric_tensor
from geometry_core.spectrum import eigen

# float64 arithmetic on identical inputs in another order (tiles, tree sums): far below 1e-8.
ATOL = 1e-8


def _float32_metrics(n=6, d=60, seed=0) -> torch.Tensor:
    """n float32 PSD matrices whose spectra fall from 1 to 1e-8, like a generator's JᵀJ."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, d, d, generator=gen, dtype=torch.float64))
    lam = torch.logspace(0, -8, d, dtype=torch.float64) * (1 + 0.3 * torch.rand(n, d, generator=gen,
                                                                                  dtype=torch.float64))
    h = torch.einsum("nik,nk,njk->nij", q, lam, q)
    return (0.5 * (h + h.transpose(1, 2))).float()


def _assert_same_homogeneity(h32: torch.Tensor) -> None:
    got_log, got_lin = homogeneity(h32)
    want_log, want_lin = homogeneity(h32.double())
    torch.testing.assert_close(got_log, want_log, rtol=0, atol=ATOL, equal_nan=True)
    torch.testing.assert_close(got_lin, want_lin, rtol=0, atol=ATOL, equal_nan=True)


def test_eigen_of_float32_is_the_float64_decomposition():
    h32 = _float32_metrics()
    vals, vecs = eigen(h32)
    assert vals.dtype == vecs.dtype == torch.float64
    want_vals, want_vecs = eigen(h32.double())
    assert torch.equal(vals, want_vals) and torch.equal(vecs, want_vecs)  # the same input bits
    _, g_vals, _ = global_metric(h32)
    torch.testing.assert_close(g_vals, global_metric(h32.double())[1], rtol=0, atol=ATOL)


def test_float32_metrics_give_the_homogeneity_of_their_float64_copies():
    _assert_same_homogeneity(_float32_metrics())


def test_same_on_the_face_dcgan(dcgan, mse):
    h32 = metric_tensor(dcgan, mse, dcgan.sample(3, seed=0)).detach()  # float32, (3, 100, 100)
    assert h32.dtype == torch.float32
    _assert_same_homogeneity(h32)


def _spec(keep_eigvecs: bool):
    return parse_spec({"name": "p", "generators": [{"name": "dcgan-faces"}], "targets": ["mse"],
                       "codes": {"n": 6, "seed": 0}, "chunk_size": 3,
                       "keep": {"hessian": True, "eigvecs": keep_eigvecs}})


def test_store_keeps_float64_eigenvalues_and_the_reducer_decomposes_in_float64(tmp_path):
    h32 = _float32_metrics(d=20)
    plan = GroupLayout("dcgan-faces", "z", "mse", n=6, dim=20, chunk_size=3)
    rs = RunStore(str(tmp_path))
    rs.create("p", _spec(keep_eigvecs=False), [plan])
    for c in range(2):
        vals, _ = eigen(h32[3 * c:3 * c + 3])  # what the worker computes
        rows = h32[3 * c:3 * c + 3].numpy()
        rs.write_chunk("p", plan.key, c, {"z": np.ones((3, 20)), "eigvals": vals.numpy(), "hessian": rows})
        rs.mark_done("p", plan.key, c)
    g = zarr.open_group(str(tmp_path), mode="a", zarr_format=3)["p"][plan.key]
    assert g.attrs["precision"] == {"eigen": "float64", "z": "float32", "eigvals": "float64", "hessian": "float32"}
    np.testing.assert_array_equal(g["eigvals"][:], eigen(h32)[0].numpy())  # no float32 rounding
    report = verify_run(str(tmp_path), "p")
    assert report["clean"], report["errors"]  # checksums still agree
    reduce_group(g, tile=4, use_ray=False)
    want_log, want_lin = homogeneity(h32.double())
    np.testing.assert_allclose(g["reduce/homogeneity_log"][:], want_log.numpy(), rtol=0, atol=ATOL, equal_nan=True)
    np.testing.assert_allclose(g["reduce/homogeneity_lin"][:], want_lin.numpy(), rtol=0, atol=ATOL, equal_nan=True)
    assert g["reduce"].attrs["eigen_dtype"] == "float64"


def test_worker_returns_float64_eigenvalues(linear_generator, mse):
    task = ChunkTask("p", GroupLayout("linear", "z", "mse", n=2, dim=6, chunk_size=2), chunk=0, generator="linear",
                     options={}, seed=0, method="exact", topk=None)
    out = compute_chunk(linear_generator.float(), mse, task)
    assert out["eigvals"].dtype == torch.float64 and out["hessian"].dtype == torch.float32
    torch.testing.assert_close(out["eigvals"], eigen(out["hessian"])[0], rtol=0, atol=0)
