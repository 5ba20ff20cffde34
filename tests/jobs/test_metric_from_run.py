"""`--metric run:NAME[/group]` for `gangeo axes`, `invert` and `search`: the eigenframe a reduced
run stored is the one used, and a run of another generator is refused, through the real CLI.

Runs of the face DCGAN are written by the workers' chunk computation and reduced in this
process (``tests.support.stored_runs``); the tanh run of ``tests.support.runs`` stands for
a different generator (D = 12).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from jobs.cli import main
from tests.support.runs import build_run
from tests.support.stored_runs import write_run

KEY = "dcgan-faces/z/mse"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("metric") / "store"
    write_run(root, "trained", n=4)
    write_run(root, "shuffled", n=2, generators=[{"name": "dcgan-faces", "options": {"shuffle_seed": 0}}])
    write_run(root, "raw", n=2, reduce=False)
    build_run(root, "tanh")
    return root


def _stored(store: Path, run: str = "trained") -> tuple[np.ndarray, np.ndarray]:
    """reduce/global_eigvals and global_eigvecs, read straight from the arrays."""
    red = zarr.open_group(str(store / run / KEY / "reduce"), mode="r")
    return red["global_eigvals"][:], red["global_eigvecs"][:]


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("ref", ["run:trained", f"run:trained/{KEY}"])
def test_axes_traverses_the_stored_eigenvectors(store, tmp_path, capsys, ref):
    out = tmp_path / "axes"
    capsys.readouterr()
    assert main(["axes", "--metric", ref, "--store", str(store), "--topk", "3", "--steps", "1",
                 "--out", str(out)]) == 0
    summary = _json(capsys)
    vals, vecs = _stored(store)
    assert summary["metric"] == {"run": "trained", "group": KEY}
    np.testing.assert_allclose(np.load(out / "directions.npy"), vecs[:, :3].T, rtol=0, atol=1e-6)
    np.testing.assert_allclose(summary["eigvals_top"], vals[:3], rtol=1e-12, atol=0)


def test_axes_without_metric_uses_the_local_one(store, tmp_path, capsys):
    """The control: at the code, the metric's eigenframe is not the stored global one."""
    out = tmp_path / "axes"
    capsys.readouterr()
    assert main(["axes", "--topk", "3", "--steps", "1", "--out", str(out)]) == 0
    assert _json(capsys)["metric"] == "local"
    _, vecs = _stored(store)
    assert np.abs(np.load(out / "directions.npy") - vecs[:, :3].T).max() > 1e-2


def test_invert_uses_the_stored_eigenframe(store, monkeypatch, capsys):
    import geometry_core.inversion as inv

    seen = {}
    real = inv.invert

    def spy(G, d, target, options):
        seen["basis"], seen["eigvals"] = options.basis, options.eigvals
        return real(G, d, target, options)

    monkeypatch.setattr(inv, "invert", spy)
    capsys.readouterr()
    assert main(["invert", "--metric", "run:trained", "--store", str(store), "--steps", "2"]) == 0
    assert _json(capsys)["metric"] == "run:trained"
    vals, vecs = _stored(store)
    assert torch.equal(torch.as_tensor(seen["basis"]).double(), torch.from_numpy(vecs))
    assert torch.equal(torch.as_tensor(seen["eigvals"]).double(), torch.from_numpy(vals))


def test_search_uses_the_stored_eigenframe(store, monkeypatch, capsys):
    import geometry_core.search as search

    seen = []
    real = search.cma_search

    def spy(objective, D, **kw):
        seen.append(kw)
        return real(objective, D, **kw)

    monkeypatch.setattr(search, "cma_search", spy)
    capsys.readouterr()
    assert main(["search", "--metric", f"run:trained/{KEY}", "--store", str(store), "--basis", "global",
                 "--objective", "target", "--budget", "4", "--popsize", "2", "--seeds", "1"]) == 0
    assert _json(capsys)["metric"] == f"run:trained/{KEY}"
    vals, vecs = _stored(store)
    assert len(seen) == 1
    assert torch.equal(torch.as_tensor(seen[0]["eigvecs"]).double(), torch.from_numpy(vecs))
    assert torch.equal(torch.as_tensor(seen[0]["eigvals"]).double(), torch.from_numpy(vals))


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


CMDS = {"axes": ["axes"], "invert": ["invert", "--steps", "2"],
        "search": ["search", "--basis", "global", "--budget", "4", "--seeds", "1", "--objective", "target"]}


@pytest.mark.parametrize("cmd, ref, code, fragment", [
    ("axes", "run:shuffled", 2, "computed for generator 'dcgan-faces' with options {'shuffle_seed': 0}"),
    ("invert", "run:shuffled", 2, "computed for generator 'dcgan-faces' with options"),
    ("search", "run:shuffled", 2, "computed for generator 'dcgan-faces' with options"),
    ("axes", "run:tanh", 2, "run 'tanh' has no group of generator 'dcgan-faces' in space 'z'"),
    ("invert", "run:tanh/module/z/mse", 2, "computed for generator 'module' with options"),
    ("axes", "run:raw", 5, "run 'raw' group dcgan-faces/z/mse has no reduced global metric"),
    ("search", "run:raw", 5, "has no reduced global metric"),
    ("axes", "run:trained/dcgan-faces/z/lpips", 2, "run 'trained' has no group 'dcgan-faces/z/lpips'"),
    ("invert", "run:nosuch", 5, "no run 'nosuch'"),
    ("axes", "run:../up", 2, "--metric run:../up: the run"),
])
def test_metric_from_run_refused_with_one_line(store, tmp_path, capsys, cmd, ref, code, fragment):
    out = tmp_path / "out"
    argv = [*CMDS[cmd], "--metric", ref, "--store", str(store)]
    argv += ["--out", str(out)] if cmd != "search" else []
    before = _snapshot(store)
    capsys.readouterr()
    assert main(argv) == code
    cap = capsys.readouterr()
    err = cap.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"gangeo {cmd}: ") and fragment in err[0], err
    assert cap.out == "" and not out.exists() and _snapshot(store) == before
