"""Growth through the commands: ``gangeo run`` refuses fewer codes or another seed in one line naming the
field, nothing written; a growth cut short between array resizes is shown by ``status``, refused by every
reader with the remedy, and finished by ``gangeo resume``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
import zarr

from cluster.codes import seed_codes
from cluster.layout import ARRAYS, GroupLayout
from cluster.spec import parse_spec
from cluster.store import RunStore
from jobs.cli import main
from tests.support.runs import D, analytic, build_run, tanh_generator, tanh_spec

KEY = "module/z/mse"


@pytest.mark.parametrize(("codes", "problem"), [
    ({"n": 4, "seed": 3}, "codes.n: the spec asks 4 codes, the run has 8; a run grows, it never shrinks"),
    ({"n": 8, "seed": 4}, "codes.seed: the run was drawn from seed 3, the spec asks 4; a run keeps its seed"),
    ({"n": 16, "seed": 4}, "codes.seed: the run was drawn from seed 3, the spec asks 4; a run keeps its seed"),
])
def test_shrinking_or_another_seed_is_refused_in_one_line(tmp_path, capsys, monkeypatch, codes, problem):
    import cluster.driver as driver

    monkeypatch.setattr(driver, "init_ray", lambda *a, **k: pytest.fail("refused only after Ray started"))
    store = tmp_path / "s"
    build_run(store, "v")  # 8 codes of seed 3
    before = dict(zarr.open_group(store, mode="r")["v"].attrs)
    spec = tmp_path / "v.yaml"
    spec.write_text(yaml.safe_dump(tanh_spec("v", codes=codes)))
    assert main(["run", str(spec), "--store", str(store), "--quiet"]) == 5
    (line,) = capsys.readouterr().err.splitlines()
    assert line == f"gangeo run: run 'v' in {store}: {problem}; choose another run name"
    assert dict(zarr.open_group(store, mode="r")["v"].attrs) == before  # nothing written


# ---- issue 21, finding 2: a growth cut short between array resizes ----


def _grow_cut_short(store, monkeypatch, capsys):
    """Run 'v' (8 codes) asked for 16, the growth killed after its first array resize."""
    from cluster.growth import grow_run

    rs = build_run(store)
    rs.update_attrs("v", code_scheme="per-code")  # may grow (the first codes' values do not matter here)
    big = parse_spec(tanh_spec("v", n=16))
    lay = GroupLayout("module", "z", "mse", n=16, dim=D, chunk_size=2)
    real, calls = zarr.Array.resize, []

    def resize_then_die(self, shape):
        if calls:
            raise KeyboardInterrupt  # the driver killed between two resizes
        calls.append(self.path)
        return real(self, shape)

    monkeypatch.setattr(zarr.Array, "resize", resize_then_die)
    with pytest.raises(KeyboardInterrupt):
        grow_run(rs, big, [lay], 8)
    monkeypatch.undo()
    g = zarr.open_group(store, mode="r")[f"v/{KEY}"]
    first = calls[0].rsplit("/", 1)[1]  # whichever array zarr listed first: resized, the others not
    other = "eigvals" if first != "eigvals" else "z"
    assert len(calls) == 1 and g[first].shape[0] == (16 if first in ARRAYS else 8) and g[other].shape[0] == 8
    capsys.readouterr()
    return rs


def test_a_growth_cut_short_is_shown_by_status_and_refused_by_readers(tmp_path, monkeypatch, capsys):
    store = tmp_path / "s"
    _grow_cut_short(store, monkeypatch, capsys)
    assert RunStore(str(store)).attrs("v")["growing"]["from"] == 8
    assert main(["status", "v", "--store", str(store)]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["status"] == "interrupted" and "growth from 8 to 16 codes" in st["detail"]
    assert "gangeo resume v" in st["detail"]
    for argv in (["reduce", "v", "--no-ray", "--quiet"], ["report", "v", "--no-traversals", "--quiet",
                                                            "--out", str(tmp_path / "rep")],
                 ["query", "v"], ["compare", "v", "v"]):
        assert main([*argv, "--store", str(store)]) == 5, argv
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith(f"gangeo {argv[0]}: run 'v' is ") and "from 8 to 16 codes" in line, line
        assert "run `gangeo resume v` to finish it" in line, line
    assert not (tmp_path / "rep").exists()
    spec = tmp_path / "old.yaml"  # the old spec would leave it half grown: refused, naming the remedy
    spec.write_text(yaml.safe_dump(tanh_spec("v")))
    assert main(["run", str(spec), "--store", str(store), "--quiet"]) == 5
    (line,) = capsys.readouterr().err.splitlines()
    assert "stopped growing from 8 to 16 codes; run `gangeo resume v` to finish that growth first" in line


@pytest.mark.slow  # one sweep on embedded Ray
def test_resume_finishes_a_growth_cut_short(ray_local, tmp_path, monkeypatch, capsys):
    store = tmp_path / "s"
    _grow_cut_short(store, monkeypatch, capsys)
    assert main(["resume", "v", "--store", str(store), "--quiet", "--allow-import"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["status"], summary["skipped"], summary["computed"]) == ("complete", 4, 4)
    g = zarr.open_group(store, mode="r")[f"v/{KEY}"]
    assert {g[n].shape[0] for n in ("z", "eigvals", "eigvecs", "hessian")} == {16}
    assert g["done"][:].tolist() == [1] * 8
    H = analytic(g["z"][:])  # closed form; float32 storage of tiny entries: 1e-6 of the largest
    np.testing.assert_allclose(g["hessian"][:], H, rtol=0, atol=1e-6 * np.abs(H).max())
    np.testing.assert_array_equal(g["z"][8:], seed_codes(tanh_generator(), 3, slice(8, 16), n=16).numpy())
    attrs = RunStore(str(store)).attrs("v")
    assert attrs.get("growing") is None and attrs["identity"]["codes"]["n"] == 16
    assert main(["status", "v", "--store", str(store)]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "complete"
