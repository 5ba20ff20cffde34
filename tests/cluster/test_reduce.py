"""Reducers read back from a synthetic store equal geometry_core's in-memory results.

The store is written here with zarr directly (tests/support/stores.py, the store's layout)
(N=12 codes, D=6, chunks of 4), in float64 so the comparison is tight: the
reducers and the in-memory functions do the same float64 arithmetic in a
different order (tree of partial sums, tiles), so agreement is to round-off,
rtol 1e-9 (the matrices have condition numbers <= 1e4; round-off ~1e-16 * 1e4).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from cluster.executor import InProcess
from cluster.reduce import FRACTIONS, reduce_group, reduce_run
from cluster.storage import StoreError
from cluster.view import find_target_groups
from geometry_core.errors import GeometryError
from geometry_core.homogeneity import global_metric, homogeneity
from geometry_core.spectrum import anisotropy, eigen
from tests.support.stores import write_group

N, D, C = 12, 6, 4
RTOL = 1e-9
GROUP = "quick/dcgan-faces/z/mse"


def _metrics(seed: int = 0, rank: int = D) -> torch.Tensor:
    """N symmetric PSD matrices with spread spectra (10^0 .. 10^-4) and random bases."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(N, D, D, generator=gen, dtype=torch.float64))
    spec = torch.logspace(0, -4, D, dtype=torch.float64) * (1 + 0.5 * torch.rand(N, D, generator=gen,
                                                                                   dtype=torch.float64))
    spec[:, rank:] = 0.0
    h = torch.einsum("nik,nk,njk->nij", q, spec, q)
    return 0.5 * (h + h.transpose(1, 2))


def _write_store(path, h: torch.Tensor, *, keep_hessian=True, keep_eigvecs=True, done=None,
                 eig=None) -> zarr.Group:
    root = path if isinstance(path, zarr.Group) else zarr.open_group(str(path), mode="a", zarr_format=3)
    vals, vecs = eigen(h) if eig is None else eig
    z = torch.randn(N, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    arrays = {"z": z, "eigvals": vals}
    if keep_eigvecs:
        arrays["eigvecs"] = vecs
    if keep_hessian:
        arrays["hessian"] = h
    return write_group(root, GROUP, arrays, chunk_size=C, done=done)


def _assert_matches_memory(red: zarr.Group, h: torch.Tensor, rows: np.ndarray | None = None) -> None:
    """reduce/ arrays equal global_metric, homogeneity and anisotropy of the codes in ``rows``."""
    rows = np.arange(N) if rows is None else rows
    hs = h[torch.as_tensor(rows)]
    h_mean, g_vals, g_vecs = global_metric(hs)
    np.testing.assert_allclose(red["global_hessian"][:], h_mean.numpy(), rtol=RTOL, atol=1e-15)
    np.testing.assert_allclose(red["global_eigvals"][:], g_vals.numpy(), rtol=RTOL, atol=1e-15)
    # Eigenvectors are sign-fixed by eigen(); the spectrum is simple, so they match column by column.
    np.testing.assert_allclose(red["global_eigvecs"][:], g_vecs.numpy(), rtol=0, atol=1e-8)
    c_log, c_lin = homogeneity(hs)
    got_log = red["homogeneity_log"][:][np.ix_(rows, rows)]
    got_lin = red["homogeneity_lin"][:][np.ix_(rows, rows)]
    np.testing.assert_allclose(got_log, c_log.numpy(), rtol=RTOL, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(got_lin, c_lin.numpy(), rtol=RTOL, atol=1e-12, equal_nan=True)
    want_pts = anisotropy(eigen(hs)[0], fractions=FRACTIONS)
    pts = red["anisotropy_points"][:]
    for k, f in enumerate(FRACTIONS):
        np.testing.assert_array_equal(pts[rows, k], np.asarray(want_pts[f]))
    want_g = anisotropy(g_vals, fractions=FRACTIONS)
    np.testing.assert_array_equal(red["anisotropy_global"][:], [int(want_g[f]) for f in FRACTIONS])


@pytest.mark.parametrize("keep_hessian", [True, False])
def test_in_process_equals_memory(tmp_path, keep_hessian):
    h = _metrics()
    g = _write_store(tmp_path, h, keep_hessian=keep_hessian)
    summary = reduce_group(g, tile=5, use_ray=False)
    assert summary["n_used"] == N and summary["complete"]
    _assert_matches_memory(g["reduce"], h)
    off = ~np.eye(N, dtype=bool)
    log = g["reduce/homogeneity_log"][:][off]
    assert summary["homogeneity"]["log_mean"] == pytest.approx(np.nanmean(log), rel=1e-9)
    assert summary["homogeneity"]["log_std"] == pytest.approx(np.nanstd(log), rel=1e-6)
    assert g["reduce/homogeneity_log"].metadata.dimension_names == ("code_i", "code_j")
    assert g["reduce/homogeneity_log"].chunks == (5, 5)


def test_partial_run_uses_only_done_chunks(tmp_path):
    h = _metrics(seed=2)
    g = _write_store(tmp_path, h, done=[1, 0, 1])
    summary = reduce_group(g, tile=4, use_ray=False)
    assert summary["n_used"] == 8 and not summary["complete"]
    assert "partial" in g["reduce"].attrs["note"]
    rows = np.r_[0:4, 8:12]
    _assert_matches_memory(g["reduce"], h, rows)
    hom = g["reduce/homogeneity_log"][:]
    assert np.isnan(hom[4:8, :]).all() and np.isnan(hom[:, 4:8]).all()
    assert (g["reduce/anisotropy_points"][4:8] == -1).all()


def test_masked_entries_counted(tmp_path):
    # Rank 4 of 6 with exact zero eigenvalues stored (no hessian): every pair masks >= 2 entries.
    gen = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(N, D, D, generator=gen, dtype=torch.float64))
    vals = torch.tensor([1.0, 0.3, 0.1, 0.01, 0.0, 0.0], dtype=torch.float64).expand(N, D).contiguous()
    h = torch.einsum("nik,nk,njk->nij", q, vals, q)
    g = _write_store(tmp_path, h, keep_hessian=False, eig=(vals, q))
    summary = reduce_group(g, tile=5, reducers=("homogeneity",), use_ray=False)
    masked = g["reduce/homogeneity_masked"][:]
    assert (np.diag(masked) == -1).all()
    off = ~np.eye(N, dtype=bool)
    assert (masked[off] >= 2).all()
    want_log, _, want_masked = homogeneity(h, eigvals=vals, eigvecs=q, return_masked=True)
    np.testing.assert_array_equal(masked[off], want_masked.numpy()[off])
    np.testing.assert_allclose(g["reduce/homogeneity_log"][:], want_log.numpy(), rtol=RTOL, atol=1e-12,
                               equal_nan=True)
    assert summary["homogeneity"]["masked_total"] == int(masked[off].sum())
    assert "global_hessian" not in set(g["reduce"].array_keys())


def test_ray_equals_in_process_and_is_idempotent(tmp_path, ray_local):
    h = _metrics(seed=4)
    g = _write_store(tmp_path, h, keep_hessian=False)
    reduce_group(g, tile=5, use_ray=True)
    _assert_matches_memory(g["reduce"], h)
    first = {k: g["reduce"][k][:] for k in g["reduce"].array_keys()}
    summary = reduce_run(str(tmp_path), "quick", tile=5, use_ray=True)
    assert list(summary) == ["dcgan-faces/z/mse"]
    for k, v in first.items():
        np.testing.assert_array_equal(g["reduce"][k][:], v)


def test_s3_store_with_ray(s3_server, ray_local):
    # Tasks receive the pickled S3 group and write their tiles over HTTP to the moto server.
    from cluster.storage import open_root

    url = s3_server.new_bucket("reduce") + "/runs"
    h = _metrics(seed=6)
    _write_store(open_root(url), h, keep_hessian=False)
    summary = reduce_run(url, "quick", tile=5, use_ray=True)
    assert summary["dcgan-faces/z/mse"]["n_used"] == N
    _assert_matches_memory(open_root(url, mode="r")[GROUP]["reduce"], h)


def test_run_level_discovery_and_spec_reducers(tmp_path):
    h = _metrics(seed=5)
    g = _write_store(tmp_path, h)
    root = zarr.open_group(str(tmp_path), mode="a", zarr_format=3)
    root["quick"].attrs["spec"] = {"reducers": {"global": True, "homogeneity": False, "anisotropy": True}}
    assert find_target_groups(root["quick"]) == ["dcgan-faces/z/mse"]
    out = reduce_run(root, "quick", use_ray=False)["dcgan-faces/z/mse"]
    assert "homogeneity" not in out and "global" in out
    assert set(g["reduce"].array_keys()) == {"global_hessian", "global_eigvals", "global_eigvecs",
                                             "anisotropy_points", "anisotropy_global"}


def _paper_loop(h: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The paper's definition, ordered pair by ordered pair: v_k = u_ik^T H_j u_ik against l_j."""
    vals, vecs = np.linalg.eigh(h)
    vals, vecs = vals[:, ::-1], vecs[:, :, ::-1]  # descending, as stored
    out = np.full((3, N, N), np.nan)
    for i in rows:
        for j in rows:
            if i != j:
                v = np.array([vecs[i][:, k] @ h[j] @ vecs[i][:, k] for k in range(D)])
                ok = (v > 0) & (vals[j] > 0)
                out[:, i, j] = (np.corrcoef(np.log10(v[ok]), np.log10(vals[j][ok]))[0, 1],
                                np.corrcoef(v, vals[j])[0, 1], (~ok).sum())
    return out[0], out[1], out[2]


@pytest.mark.parametrize("keep", [{"keep_hessian": False}, {"keep_eigvecs": False}, {}])
def test_homogeneity_equals_paper_loop(tmp_path, keep):
    # Tiles of 5 over 12 codes: diagonal tiles, off-diagonal tiles and their mirrors, a ragged edge, and a
    # chunk not done. Full-rank spectra 1..1e-4 in random bases spread each v_k over the spectrum
    # (v_k >~ 1e-3 l_max), so the two summation orders (sum_m M_km^2 l_m against u^T H u, each ~D eps
    # l_max off) move log10 v by < 1e-13 and the correlations by less still: 1e-12 holds with margin.
    h = _metrics(seed=8)
    g = _write_store(tmp_path, h, done=[1, 0, 1], **keep)
    reduce_group(g, tile=5, reducers=("homogeneity",), use_ray=False)
    rows = np.r_[0:4, 8:12]
    want_log, want_lin, want_masked = _paper_loop(h.numpy(), rows)
    red = g["reduce"]
    np.testing.assert_allclose(red["homogeneity_log"][:], want_log, rtol=0, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(red["homogeneity_lin"][:], want_lin, rtol=0, atol=1e-12, equal_nan=True)
    masked = red["homogeneity_masked"][:]
    off = ~np.eye(N, dtype=bool) & np.isin(np.arange(N), rows)[:, None] & np.isin(np.arange(N), rows)[None, :]
    np.testing.assert_array_equal(masked[off], want_masked[off])
    assert (masked[~off] == -1).all()


class _Recording(InProcess):
    """In-process executor that records what the homogeneity tiles are folded over."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls = []

    def fold(self, fn, args, combine, initial, **kw):
        listed = isinstance(args, (list, tuple))  # a list would be the driver holding N² tasks at once
        seen = []
        out = super().fold(fn, (seen.append(a[1:3]) or a for a in args), combine, initial, **kw)
        self.calls.append((listed, seen, kw))
        return out


def test_one_task_per_unordered_pair_of_tiles(tmp_path):
    h = _metrics(seed=9)
    g = _write_store(tmp_path, h, keep_hessian=False)
    ex = _Recording(device="cpu")
    summary = reduce_group(g, tile=5, reducers=("homogeneity",), ex=ex)
    (listed, seen, kw), = ex.calls
    assert not listed, "tile arguments must be generated lazily, not held as a list"
    blocks = [(0, 5), (5, 10), (10, 12)]
    assert seen == [(r, c) for k, r in enumerate(blocks) for c in blocks[k:]]
    assert kw["total"] == 6 and kw["accelerated"] is True
    assert summary["homogeneity"]["tiles"] == 9  # zarr chunks written: each mirror by its pair's task
    _assert_matches_memory_homogeneity(g["reduce"], h)


def _assert_matches_memory_homogeneity(red: zarr.Group, h: torch.Tensor) -> None:
    c_log, c_lin, c_masked = homogeneity(h, return_masked=True)
    np.testing.assert_allclose(red["homogeneity_log"][:], c_log.numpy(), rtol=0, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(red["homogeneity_lin"][:], c_lin.numpy(), rtol=0, atol=1e-12, equal_nan=True)
    off = ~np.eye(N, dtype=bool)
    np.testing.assert_array_equal(red["homogeneity_masked"][:][off], c_masked.numpy()[off])


def test_reduce_device_from_spec(tmp_path, monkeypatch):
    import cluster.reduce as reduce_mod

    h = _metrics(seed=10)
    _write_store(tmp_path, h)
    root = zarr.open_group(str(tmp_path), mode="a", zarr_format=3)
    asked = []
    real = reduce_mod.executor
    monkeypatch.setattr(reduce_mod, "executor", lambda use_ray, device: asked.append(device) or real(use_ray,
                                                                                                  device=device))
    reduce_run(root, "quick", reducers=("anisotropy",), use_ray=False)
    root["quick"].attrs["spec"] = {"resources": {"reduce_device": "cpu"}}
    reduce_run(root, "quick", reducers=("anisotropy",), use_ray=False)
    reduce_run(root, "quick", reducers=("anisotropy",), use_ray=False, device="auto")
    assert asked == ["auto", "cpu", "auto"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tiles_equal_cpu_tiles(tmp_path):
    h = _metrics(seed=11)
    g = _write_store(tmp_path, h, keep_hessian=False)
    reduce_group(g, tile=5, reducers=("homogeneity",), ex=InProcess(device="cpu"))
    cpu = {k: g["reduce"][k][:] for k in ("homogeneity_log", "homogeneity_lin", "homogeneity_masked")}
    reduce_group(g, tile=5, reducers=("homogeneity",), ex=InProcess(device="auto"))
    for k, v in cpu.items():  # float64 on both; different BLAS, same sums to round-off
        np.testing.assert_allclose(g["reduce"][k][:], v, rtol=0, atol=1e-12, equal_nan=True)


def test_a_reducer_added_to_the_table_runs_everywhere(tmp_path, monkeypatch):
    # One table entry (function, arrays with dims, needs eigvecs, summary lines) is all a statistic needs.
    import cluster.reduce as reduce_mod
    from cluster.xr import open_run_xarray

    def trace(job):
        job.create("trace_points", (job.view.layout.n, len(FRACTIONS)), (C, len(FRACTIONS)))[:] = 7
        return {"value": 7}

    new = reduce_mod.Reducer("trace", "trace", trace, (reduce_mod.ReducedArray("trace_points", ("code", "fraction"),
                                                                             "int32", -1),), False,
                             lambda s: [f"trace: {s['value']}"] if s else [])
    monkeypatch.setitem(reduce_mod.REDUCER_TABLE, "trace", new)
    monkeypatch.setitem(reduce_mod.ARRAYS, "trace_points", new.arrays[0])
    g = _write_store(tmp_path, _metrics(seed=12))
    root = zarr.open_group(str(tmp_path), mode="a", zarr_format=3)
    root["quick"].attrs["spec"] = {"reducers": {"global": False, "homogeneity": False, "anisotropy": False}}
    assert reduce_mod.enabled_reducers(dict(root["quick"].attrs)) == ("trace",)  # on unless the spec says off
    out = reduce_run(root, "quick", use_ray=False)["dcgan-faces/z/mse"]
    assert out["trace"] == {"value": 7} and set(g["reduce"].array_keys()) == {"trace_points"}
    assert g["reduce/trace_points"].metadata.dimension_names == ("code", "fraction")
    # xarray labels its fraction axis (a table array with a "fraction" dimension); the summary (the demo's text)
    # has its line.
    g["reduce/trace_points"].attrs["fractions"] = list(FRACTIONS)
    ds = open_run_xarray(str(tmp_path), "quick", "dcgan-faces/z/mse", reduced=True)
    assert list(ds["fraction"].values) == list(FRACTIONS)
    assert "trace: 7" in reduce_mod.summary_lines(out)


def test_bad_input(tmp_path):
    g = _write_store(tmp_path, _metrics())
    with pytest.raises(GeometryError, match="reducers must be among"):
        reduce_group(g, reducers=("bogus",), use_ray=False)
    with pytest.raises(GeometryError, match="tile must be"):
        reduce_group(g, tile=0, use_ray=False)
    with pytest.raises(GeometryError, match="device must be one of"):
        reduce_group(g, device="gpu", use_ray=False)
    with pytest.raises(StoreError, match="no run 'other'"):
        reduce_run(str(tmp_path), "other", use_ray=False)


def test_auto_tile_keeps_64_code_tiles_and_at_most_40_blocks():
    from cluster.reduce import MAX_BLOCKS, auto_tile

    assert [auto_tile(n) for n in (1, 64, 2560, 2561, 10_000)] == [64, 64, 64, 128, 256]
    for n in range(1, 30_000, 97):
        t = auto_tile(n)
        assert t % 64 == 0 and -(-n // t) <= MAX_BLOCKS
        assert t == 64 or -(-n // (t - 64)) > MAX_BLOCKS  # the smallest such tile
