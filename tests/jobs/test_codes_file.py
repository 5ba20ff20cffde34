"""``gangeo run`` and ``resume`` with ``codes: {file: z.npy}``: a run of the user's codes. The file is
validated before anything is written (one line per problem, exit 4); the run records the sha256 of its
codes, so a resume with a changed file is refused, and a longer file that starts with the run's codes
extends the run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from cluster.codes import codes_sha256
from jobs.cli import main
from tests.support.runs import D, analytic, random_codes, tanh_spec

KEY = "module/z/mse"
REPO = Path(__file__).resolve().parents[2]


def _spec_file(tmp_path, name: str, codes) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tanh_spec(name, codes=codes, resources={"workers": 1})))
    return str(path)


def _bad_files(tmp_path) -> dict:
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, D)))
    np.save(tmp_path / "ints.npy", np.zeros((2, D), dtype=np.int64))
    nan = random_codes(3)
    nan[2, 4] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    far = random_codes(5).astype(np.float64)
    far[3, 1] = -1e39  # finite in float64, inf in float32: every chunk would fail
    np.save(tmp_path / "far.npy", far)
    (tmp_path / "text.npy").write_text("not an array")
    return {
        "missing": ({"file": str(tmp_path / "absent.npy")}, "absent.npy does not exist or is not a file"),
        "pickle": ({"file": str(tmp_path / "objects.npy")}, "is not a plain .npy array: holds Python objects"),
        "ndim": ({"file": str(tmp_path / "cube.npy")}, "has shape (2, 3, 12); expected (N, D) codes"),
        "dtype": ({"file": str(tmp_path / "ints.npy")}, "holds int64 values; expected floating point codes"),
        "nan": ({"file": str(tmp_path / "nan.npy")}, "has a non-finite value in code 2; expected finite"),
        "text": ({"file": str(tmp_path / "text.npy")}, "is not a plain .npy array: unreadable"),
        "far": ({"file": str(tmp_path / "far.npy")}, "has a value of -1e+39 in code 3; codes must lie within "
                                                     "±10000 (latent codes are of order 1)"),
        "both": ({"file": str(tmp_path / "nan.npy"), "n": 3}, "codes: give either file or n and seed, not both"),
    }


@pytest.mark.parametrize("case", ["missing", "pickle", "ndim", "dtype", "nan", "text", "far", "both"])
def test_a_bad_codes_file_is_one_line_exit_4_nothing_written(tmp_path, capsys, case):
    codes, expected = _bad_files(tmp_path)[case]
    store = tmp_path / "s"
    assert main(["run", _spec_file(tmp_path, "bad", codes), "--store", str(store), "--quiet"]) == 4
    lines = capsys.readouterr().err.splitlines()
    assert any(expected in ln for ln in lines) and len(lines) <= 2, lines  # "both" also reports the NaN
    assert all(ln.startswith("gangeo run: codes") for ln in lines)
    assert not store.exists()


@pytest.mark.slow  # two sweeps: ~20-40 s on a loaded 2-core machine
def test_file_codes_run_refuse_a_changed_file_and_grow_with_a_longer_one(ray_local, tmp_path, capsys,
                                                                         monkeypatch):
    store = tmp_path / "s"
    z = random_codes(5).astype(np.float32)  # float32 codes: stored exactly
    np.save(tmp_path / "z.npy", z)
    spec = _spec_file(tmp_path, "f", {"file": "z.npy"})
    monkeypatch.chdir(tmp_path)  # a relative path is the caller's working directory's, like a local store
    assert main(["run", spec, "--store", str(store), "--quiet"]) == 0
    monkeypatch.chdir(REPO)
    g = zarr.open_group(store, mode="r")[f"f/{KEY}"]
    np.testing.assert_array_equal(g["z"][:], z)
    H = analytic(z)  # closed form; float32 storage: 1e-6 of the largest entry
    np.testing.assert_allclose(g["hessian"][:], H, rtol=0, atol=1e-6 * np.abs(H).max())
    attrs = zarr.open_group(store, mode="r")["f"].attrs
    assert attrs["identity"]["codes"] == {"n": 5, "sha256": codes_sha256(z, 5)}
    assert attrs["spec"]["codes"] == {"file": str(tmp_path / "z.npy")}

    changed = z.copy()
    changed[1, 0] += 1
    np.save(tmp_path / "z.npy", changed)
    capsys.readouterr()
    assert main(["resume", "f", "--store", str(store), "--quiet", "--allow-import"]) == 5
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("gangeo resume: run 'f' in ") and (
        f": codes.file: {tmp_path / 'z.npy'} holds other codes than the run started with (sha256 "
        f"{codes_sha256(z, 5)[:12]} then, {codes_sha256(changed, 5)[:12]} now)") in line, line

    np.save(tmp_path / "z.npy", np.concatenate([changed, z[:3]]))  # longer, but not the run's codes first
    assert main(["resume", "f", "--store", str(store), "--quiet", "--allow-import"]) == 5
    assert "codes.file: the first 5 codes of" in capsys.readouterr().err

    longer = np.concatenate([z, random_codes(3, seed=1).astype(np.float32)])
    np.save(tmp_path / "z.npy", longer)
    assert main(["resume", "f", "--store", str(store), "--quiet", "--allow-import"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["skipped"], summary["computed"]) == (2, 2)  # chunk 2 gains rows, chunk 3 is new
    g = zarr.open_group(store, mode="r")[f"f/{KEY}"]
    np.testing.assert_array_equal(g["z"][:], longer)
