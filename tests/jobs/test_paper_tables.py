"""Tables 2, 3 and 5 of the paper: statistics against numpy on synthetic metrics, and the command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from geometry_core.spectrum import eigen
from jobs.cli import EXIT_CODES
from jobs.paper_tables_cmd import main, table2, table5


def _stack(U: torch.Tensor, L: torch.Tensor):
    H = U @ torch.diag_embed(L) @ U.transpose(-1, -2)
    vals, vecs = eigen(H)
    return H, vals, vecs


@pytest.fixture
def synthetic():
    """Reference metrics with spectra 1 .. 1e-6; a second distance with log-linear spectra and turned eigenvectors."""
    gen = torch.Generator().manual_seed(0)
    N, D = 3, 8
    U = torch.linalg.qr(torch.randn(N, D, D, generator=gen, dtype=torch.float64))[0]
    L_r = torch.logspace(0, -6, D, dtype=torch.float64).expand(N, D) * torch.tensor([[1.0], [2.0], [0.5]])
    L_x = 10**0.5 * L_r**1.2  # log10 L_x = 1.2 log10 L_r + 0.5 exactly
    turn = torch.linalg.matrix_exp(0.05 * (lambda A: A - A.T)(torch.randn(D, D, generator=gen, dtype=torch.float64)))
    return _stack(U, L_r), _stack(turn @ U, L_x)


def test_table5_against_numpy(synthetic):
    ref, other = synthetic
    t = table5(ref, other)
    # Exact log-linear relation: the regression recovers it to float64 round-off.
    assert t["slope"]["mean"] == pytest.approx(1.2, abs=1e-9) and t["slope"]["std"] < 1e-9
    assert t["intercept"]["mean"] == pytest.approx(0.5, abs=1e-8)
    assert t["eig_corr_log"]["mean"] == pytest.approx(1.0, abs=1e-12)
    for b in range(3):
        H_r, L_r, U_r = (a[b].numpy() for a in ref)
        H_x, L_x = other[0][b].numpy(), other[1][b].numpy()
        v = np.einsum("dk,de,ek->k", U_r, H_x, U_r)  # u_k^T H_x u_k, u_k of the reference
        expected = {
            "h_corr": np.corrcoef(H_x.ravel(), H_r.ravel())[0, 1],
            "eig_corr": np.corrcoef(L_x, L_r)[0, 1],
            "sim_lin": np.corrcoef(v, L_x)[0, 1],
            "sim_log": np.corrcoef(np.log10(v), np.log10(L_x))[0, 1],
        }
        for key, value in expected.items():
            # Same float64 sums in another order: 1e-10 leaves room for the eigensolver's round-off.
            assert t[key]["per_code"][b] == pytest.approx(value, abs=1e-10), key
    # The turned eigenvectors mix the spectrum: similarity drops below 1 but stays high.
    assert 0.5 < t["sim_log"]["mean"] < 0.999


def test_table2_counts_mean_spectrum_and_per_code():
    vals = torch.tensor([[90.0, 9.5, 0.45, 0.05], [50.0, 49.5, 0.45, 0.05]], dtype=torch.float64)
    t = table2(vals)
    # Mean spectrum 70, 29.5, 0.45, 0.05: partial sums 70, 99.5, 99.95, 100 (no ties with a bar).
    assert t["mean_spectrum"] == {"0.99": 2, "0.999": 3, "0.9999": 4, "0.99999": 4}
    assert t["per_code"]["0.99"] == {"mean": 2.0, "std": 0.0}
    assert t["per_code"]["0.999"] == {"mean": 3.0, "std": 0.0}


def test_command_on_dcgan_faces(tmp_path, capsys):
    out = tmp_path / "tables.json"
    rc = main(["--n", "3", "--reference", "mse", "--compare", "ssim", "--batch", "2", "--out", str(out)])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result == json.loads(out.read_text())
    r = result["generators"]["dcgan-faces"]
    assert r["latent_dim"] == 100 and set(r["table2"]) == {"mse", "ssim"} and set(r["table5"]) == {"ssim"}
    assert 0.0 < r["table3"]["mse"]["log"]["mean"] <= 1.0
    assert len(r["table5"]["ssim"]["h_corr"]["per_code"]) == 3


def test_command_bad_input(capsys):
    assert main(["--n", "1", "--reference", "mse", "--compare", "ssim"]) == EXIT_CODES["geometry"]
    assert "n must be an int >= 2" in capsys.readouterr().err
