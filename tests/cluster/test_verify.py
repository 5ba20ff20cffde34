"""``verify_run``: a finished run is clean; each kind of damage is named by group and chunk. The command
(its JSON, exit codes and stderr lines): tests/jobs/test_verify.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from cluster.store import RunStore
from cluster.verify import verify_run
from tests.support.runs import C, D, N, analytic, build_run

KEY = "module/z/mse"


@pytest.fixture
def run(tmp_path) -> Path:
    build_run(tmp_path / "s")
    return tmp_path / "s"


def _chunks_with(report: dict, text: str) -> list:
    return sorted(e["chunk"] for e in report["errors"] if text in e["problem"])


def test_clean_run_and_stored_values_match_analytic(run):
    g = zarr.open_group(run / "v" / KEY, mode="r")
    # fp32 storage of exact-method results: 1e-6 of the largest entry (2/12) covers rounding.
    np.testing.assert_allclose(g["hessian"][:], analytic(g["z"][:]), rtol=0, atol=1e-6 * 2 / 12)
    report = verify_run(str(run), "v")
    assert report["clean"] and report["errors"] == [] and report["groups"][KEY]["done"] == N // C


def test_overwritten_chunk_bytes_are_named(run):
    path = run / "v" / KEY / "eigvecs" / "c" / "1" / "0" / "0"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte in the middle of the compressed chunk
    path.write_bytes(bytes(raw))
    report = verify_run(str(run), "v")
    assert _chunks_with(report, "eigvecs: unreadable") == [1] and not report["clean"]


def test_values_changed_without_checksum_are_named(run):
    g = zarr.open_group(run / "v" / KEY, mode="r+")
    h = g["hessian"][4:6]
    h[0, 0, 0] *= 1.5  # still symmetric and PSD: only the checksum can tell
    g["hessian"][4:6] = h
    report = verify_run(str(run), "v")
    assert not report["clean"]
    assert _chunks_with(report, "checksum mismatch") == [2]


def test_done_without_data_and_data_without_done(run):
    (run / "v" / KEY / "z" / "c" / "0" / "0").unlink()  # chunk 0 done, its codes gone
    g = zarr.open_group(run / "v" / KEY, mode="r+")
    g["done"][3] = 0  # chunk 3 written, not marked done
    report = verify_run(str(run), "v")
    assert _chunks_with(report, "marked done but z not written") == [0]
    assert report["groups"][KEY]["unfinished"] == [3] and not report["complete"]


def test_non_psd_nan_and_bad_eigvecs_are_named(run):
    rs = RunStore(str(run))
    good = {name: rs.read("v", KEY, name, slice(0, 2)) for name in ("z", "eigvals", "eigvecs", "hessian")}
    bad_psd = {**good, "hessian": -good["hessian"]}  # symmetric, negative definite
    rs.write_chunk("v", KEY, 1, bad_psd)  # a consistent checksum: the values themselves are wrong
    nan = {**good, "eigvals": np.where(np.arange(D) == 3, np.nan, good["eigvals"])}
    rs.write_chunk("v", KEY, 2, nan)
    skew = {**good, "eigvecs": good["eigvecs"] * 1.01}  # 2% off unit length
    rs.write_chunk("v", KEY, 3, skew)
    report = verify_run(str(run), "v")
    assert _chunks_with(report, "not positive semi-definite") == [1]
    assert _chunks_with(report, "non-finite") == [2]
    assert _chunks_with(report, "not orthonormal") == [3]
    assert _chunks_with(report, "checksum") == []
