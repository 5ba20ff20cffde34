"""`--metric run:NAME[/group]` for `gangeo axes`, `invert` and `search`: the eigenframe a reduced
run stored is the one used, and a run of another generator is refused, through the real CLI.

Runs of the face DCGAN are written by the workers' chunk computation and reduced in this
process (``tests.support.stored_runs``); the tanh run of ``tests.support.runs`` stands for
a different generator (D = 12).
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
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
    # As the README's quickstart stores it (dcgan-faces x lpips-alex), with fewer codes.
    write_run(root, "quickstart", n=2, targets=("lpips-alex",))
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


# ---- the distance a stored eigenframe is measured with ----


def _spy_distances(monkeypatch) -> list[str]:
    """Names of the distances the three commands measure with (axes' steps, invert's and search's objective)."""
    import geometry_core.axes as axes
    import geometry_core.inversion as inv
    import geometry_core.search as search

    seen: list[str] = []
    for mod, name, pos in ((axes, "explore_axes", 1), (inv, "invert", 1), (search, "target_distance_objective", 1)):
        real = getattr(mod, name)

        def spy(*a, _real=real, _pos=pos, **kw):
            seen.append(a[_pos].name)
            return _real(*a, **kw)

        monkeypatch.setattr(mod, name, spy)
    return seen


@pytest.mark.parametrize("cmd", ["axes", "invert", "search"])
@pytest.mark.parametrize("distance", [[], ["--distance", "lpips"]])  # none, or an alias of the group's own
def test_metric_from_run_measures_with_the_groups_distance(store, tmp_path, capsys, monkeypatch, cmd, distance):
    """The quickstart's eigenframe is LPIPS's: the command measures with lpips-alex, not --distance's mse."""
    seen = _spy_distances(monkeypatch)
    argv = [*CMDS[cmd], "--metric", "run:quickstart", "--store", str(store), *distance]
    argv += {"axes": ["--topk", "1", "--steps", "1", "--out", str(tmp_path / "a")],
             "search": ["--popsize", "2"]}.get(cmd, [])
    capsys.readouterr()
    assert main(argv) == 0, capsys.readouterr().err
    out = _json(capsys)
    assert seen == ["lpips-alex"]
    if cmd != "search":
        assert out["distance"] == "lpips-alex"


@pytest.mark.parametrize("cmd", ["axes", "invert", "search"])
def test_metric_from_run_with_another_distance_refused(store, tmp_path, capsys, cmd):
    out = tmp_path / "out"
    argv = [*CMDS[cmd], "--metric", "run:quickstart", "--distance", "mse", "--store", str(store)]
    argv += ["--out", str(out)] if cmd != "search" else []
    before = _snapshot(store)
    capsys.readouterr()
    assert main(argv) == 2
    cap = capsys.readouterr()
    err = cap.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"gangeo {cmd}: --distance mse: "), err
    assert "computed with 'lpips-alex'" in err[0]
    assert cap.out == "" and not out.exists() and _snapshot(store) == before


def test_readme_stored_run_examples_run(store, tmp_path, capsys, monkeypatch):
    """The README's `--metric run:quickstart` lines, against a run stored as the quickstart's,
    with budgets cut to seconds (appended options win in argparse)."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = re.search(r"## Stored runs\n.*?```\n(.*?)```", text, flags=re.S).group(1)
    lines = [shlex.split(line.split("#")[0]) for line in block.splitlines() if "--metric run:" in line]
    assert [a[1] for a in lines] == ["axes", "invert", "search"]
    cheap = {"axes": ["--topk", "1", "--steps", "1"], "invert": ["--steps", "2"],
             "search": ["--budget", "4", "--seeds", "1", "--popsize", "2"]}
    monkeypatch.chdir(tmp_path)  # --out folders land here
    for argv in lines:
        assert argv[0] == "gangeo"
        capsys.readouterr()
        assert main([*argv[1:], "--store", str(store), *cheap[argv[1]]]) == 0, (argv, capsys.readouterr().err)
