"""`gangeo rm` and `gangeo compare` on stored runs of the face DCGAN, through the real CLI.

Runs are written by the workers' own chunk computation and reduced in this process
(``tests.support.stored_runs``); rm is checked on a local directory and on moto's S3
server on loopback.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from jobs.cli import main
from tests.support.stored_runs import write_run


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _ls(store: str, capsys) -> list[str]:
    capsys.readouterr()
    assert main(["ls", "--store", store]) == 0
    return [r["run"] for r in json.loads(capsys.readouterr().out)["runs"]]


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> Path:
    """Two unreduced two-code runs, ``a`` and ``b``; tests copy it before changing anything."""
    root = tmp_path_factory.mktemp("rm") / "store"
    write_run(root, "a", n=2, reduce=False)
    write_run(root, "b", n=2, reduce=False)
    return root


@pytest.fixture
def store(small_store, tmp_path) -> Path:
    return Path(shutil.copytree(small_store, tmp_path / "store"))


# ---- rm ----


def test_rm_yes_deletes_the_run_and_ls_no_longer_lists_it(store, capsys):
    assert _ls(str(store), capsys) == ["a", "b"]
    assert main(["rm", "a", "--store", str(store), "--yes"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"run": "a", "store": str(store), "deleted": True}
    assert not (store / "a").exists()
    assert _ls(str(store), capsys) == ["b"]
    assert not (store / "_locks" / "a").exists()  # rm's own lock is gone with it
    assert main(["status", "b", "--store", str(store)]) == 0  # the other run is untouched


def _upload(local: Path, s3_server, url: str, runs=None) -> None:
    """The local store's files (every run, or ``runs``) as objects under ``url``: the same store on S3."""
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    client = s3_server.client()
    for p in sorted(local.rglob("*")):
        rel = p.relative_to(local)
        if p.is_file() and (runs is None or rel.parts[0] in runs or rel.parts == ("zarr.json",)):
            client.put_object(Bucket=bucket, Key="/".join(filter(None, [prefix, *rel.parts])), Body=p.read_bytes())


def test_rm_on_s3_deletes_every_key_of_the_run(small_store, s3_server, capsys):
    url = s3_server.new_bucket("rm") + "/runs"
    _upload(small_store, s3_server, url)
    before = s3_server.keys(url)
    assert any(k.startswith("runs/a/") for k in before)
    from cluster.lock import RunLock

    with RunLock(url, "a"):  # a live driver on S3 (conditional PUT): refused, nothing deleted
        assert main(["rm", "a", "--store", url, "--yes"]) == 5
        assert "live driver" in capsys.readouterr().err
        assert set(before) <= set(s3_server.keys(url))
    assert main(["rm", "a", "--store", url, "--yes"]) == 0
    after = s3_server.keys(url)
    assert not [k for k in after if k.startswith("runs/a/")]
    assert sorted(k for k in before if k.startswith("runs/b/")) == sorted(k for k in after if k.startswith("runs/b/"))
    assert _ls(url, capsys) == ["b"]


def _refused(argv, capsys, code: int, fragment: str, root: Path) -> None:
    before = _snapshot(root)
    capsys.readouterr()
    assert main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gangeo rm: ") and fragment in err[0], err
    assert _snapshot(root) == before  # nothing deleted, nothing written


def test_rm_unknown_run_refused_exit_5(store, capsys):
    _refused(["rm", "zz", "--store", str(store), "--yes"], capsys, 5, "no run 'zz'", store)


def test_rm_run_of_a_live_driver_refused_exit_5(store, capsys):
    from cluster.lock import RunLock

    with RunLock(str(store), "a"):  # as a driver holds it while it writes
        _refused(["rm", "a", "--store", str(store), "--yes"], capsys, 5, "live driver", store)
    assert (store / "a" / "zarr.json").exists()


def test_rm_run_of_a_killed_driver_is_deleted(store, capsys):
    """A driver that died without releasing its lock (same host, pid gone) does not block rm."""
    import subprocess
    import sys

    from cluster.lock import lock_info

    repo = Path(__file__).resolve().parents[2]
    code = f"from cluster.lock import RunLock; import os; RunLock({str(store)!r}, 'a').acquire(); os._exit(0)"
    subprocess.run([sys.executable, "-c", code], cwd=repo, check=True, timeout=60)
    assert lock_info(str(store), "a") is not None  # left behind
    assert main(["rm", "a", "--store", str(store), "--yes"]) == 0
    assert not (store / "a").exists() and lock_info(str(store), "a") is None


def test_rm_without_yes_off_a_terminal_refused_saying_how(store, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))  # not a TTY: never read
    _refused(["rm", "a", "--store", str(store)], capsys, 2, "pass --yes", store)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("answer, deleted", [("y\n", True), ("n\n", False), ("\n", False)])
def test_rm_on_a_terminal_asks(store, capsys, monkeypatch, answer, deleted):
    monkeypatch.setattr("sys.stdin", _Terminal(answer))
    code = main(["rm", "a", "--store", str(store)])
    err = capsys.readouterr().err
    assert "delete run 'a'" in err and "[y/N]" in err
    assert (code == 0) is deleted and (store / "a").exists() is not deleted
    if not deleted:
        assert code == 2 and "not deleted" in err


# ---- compare ----


def _strict_json(text: str):
    def no_constant(name):
        raise AssertionError(f"not valid JSON: bare {name}")

    return json.loads(text, parse_constant=no_constant)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Reduced 4-code runs: trained, its shuffled control, another seed; a partial and an unreduced run."""
    root = tmp_path_factory.mktemp("compare") / "store"
    write_run(root, "trained", n=4)
    write_run(root, "shuffled", n=4, generators=[{"name": "dcgan-faces", "options": {"shuffle_seed": 0}}])
    write_run(root, "seed1", n=4, seed=1)
    write_run(root, "raw", n=2, reduce=False)
    write_run(root, "part", n=2).update_attrs("part", status="partial")
    return root


def _compare(capsys, *argv) -> dict:
    capsys.readouterr()
    assert main(["compare", *argv]) == 0
    return _strict_json(capsys.readouterr().out)


def _stored(root: Path, run: str, key: str) -> dict:
    """What the store holds for a group, read straight from its arrays (no product code)."""
    g = zarr.open_group(str(root / run / key), mode="r")
    red = g["reduce"]
    used = np.repeat(g["done"][:] == 1, g["z"].chunks[0])[: g["z"].shape[0]]
    return {"eigvals": g["eigvals"][:][used], "points": red["anisotropy_points"][:][used],
            "global_aniso": red["anisotropy_global"][:], "global": red["global_eigvals"][:],
            "log": red["homogeneity_log"][:], "lin": red["homogeneity_lin"][:], "attrs": dict(red.attrs)}


def test_compare_trained_vs_shuffled_equals_the_stored_arrays(runs, capsys):
    out = _compare(capsys, "trained", "shuffled", "--store", str(runs))
    assert out["runs"] == ["trained", "shuffled"] and len(out["groups"]) == 1
    pair = out["groups"][0]
    # different model labels: matched by <space>/<target>
    assert (pair["a"]["group"], pair["b"]["group"]) == ("dcgan-faces/z/mse", "dcgan-faces-shuffled0/z/mse")
    for side, run in (("a", "trained"), ("b", "shuffled")):
        s, ref = pair[side], _stored(runs, run, pair[side]["group"])
        assert s["codes"] == 4 and s["dim"] == 100
        # Read back exactly (float64 arrays through JSON's repr of floats).
        np.testing.assert_array_equal(s["spectrum"]["median"], np.median(ref["eigvals"], axis=0))
        np.testing.assert_array_equal(s["spectrum"]["global"], ref["global"])
        np.testing.assert_array_equal(s["anisotropy"]["median"], np.median(ref["points"], axis=0))
        # ... the statistic `gangeo reduce` printed (its summary, kept in reduce/'s attrs)
        assert s["anisotropy"]["median"] == ref["attrs"]["anisotropy"]["points_median"]
        assert s["anisotropy"]["global"] == ref["global_aniso"].tolist()
        for scale in ("log", "lin"):
            m = ref[scale][~np.eye(4, dtype=bool)]  # the 12 off-diagonal pairs
            assert s["homogeneity"][scale]["pairs"] == 12
            # Summed by the reducer tile by tile (float64): a few ulps from numpy's mean; its std
            # comes from E[x²] - E[x]², which loses ~1e-16 / var relative (var ~1e-2 here).
            assert s["homogeneity"][scale]["mean"] == pytest.approx(m.mean(), rel=1e-12, abs=0)
            assert s["homogeneity"][scale]["std"] == pytest.approx(m.std(), rel=1e-9, abs=0)
    # Shuffled weights: a flatter spectrum (more eigenvalues for 99% of the sum), less homogeneous.
    assert pair["b"]["anisotropy"]["median"][0] > 2 * pair["a"]["anisotropy"]["median"][0]
    assert pair["b"]["homogeneity"]["log"]["mean"] < pair["a"]["homogeneity"]["log"]["mean"]


def test_compare_two_seeds_matches_equal_keys_and_group_filter(runs, capsys):
    out = _compare(capsys, "trained", "seed1", "--store", str(runs), "--group", "dcgan-faces/z/mse")
    pair = out["groups"][0]
    assert pair["a"]["group"] == pair["b"]["group"] == "dcgan-faces/z/mse"
    assert pair["a"]["spectrum"]["median"] != pair["b"]["spectrum"]["median"]  # other codes
    ref = _stored(runs, "seed1", "dcgan-faces/z/mse")
    np.testing.assert_array_equal(pair["b"]["spectrum"]["median"], np.median(ref["eigvals"], axis=0))


def test_compare_on_s3_equals_the_local_comparison(runs, s3_server, capsys):
    url = s3_server.new_bucket("cmp")
    _upload(runs, s3_server, url, runs=("trained", "seed1"))
    remote = _compare(capsys, "trained", "seed1", "--store", url)
    local = _compare(capsys, "trained", "seed1", "--store", str(runs))
    assert remote["store"] == url
    assert remote["groups"] == local["groups"]  # the same bytes read through S3


def test_compare_non_finite_values_are_null(runs, tmp_path, capsys):
    store = Path(shutil.copytree(runs, tmp_path / "store"))
    red = zarr.open_group(str(store / "seed1" / "dcgan-faces/z/mse" / "reduce"), mode="r+")
    vals = red["global_eigvals"][:]
    vals[-1] = np.nan
    red["global_eigvals"][:] = vals
    capsys.readouterr()
    assert main(["compare", "trained", "seed1", "--store", str(store)]) == 0
    text = capsys.readouterr().out
    assert "NaN" not in text
    out = _strict_json(text)
    assert out["groups"][0]["b"]["spectrum"]["global"][-1] is None
    assert out["groups"][0]["b"]["spectrum"]["global"][0] == pytest.approx(float(vals[0]), rel=0)


def test_compare_report_writes_the_figures_side_by_side(runs, tmp_path, capsys):
    rep = tmp_path / "cmp"
    out = _compare(capsys, "trained", "shuffled", "--store", str(runs), "--report", str(rep))
    html = Path(out["report"]).read_text()
    assert Path(out["report"]) == rep / "compare-trained-shuffled.html"
    assert html.count("<img ") == 5  # overlay, two spectrum bands, two homogeneity panels
    assert len(list(rep.glob("*.png"))) == 5
    a = out["groups"][0]["a"]
    cell = 'data-key="dcgan-faces/z/mse:anisotropy_median:0.99:a">'
    assert cell in html
    assert html.split(cell, 1)[1].startswith(f"{a['anisotropy']['median'][0]:.4g}<")
    assert "trained" in html and "shuffled" in html


def test_compare_report_figures_show_each_runs_own_data(runs, tmp_path, capsys):
    """Each figure is the one its caption names: drawn from that run's arrays by the report's
    figure helpers (same process, same matplotlib: the same bytes), so a spectrum figure is no
    homogeneity figure and the two runs' spectra differ."""
    from cluster import report_figures as figs

    rep = tmp_path / "cmp"
    _compare(capsys, "trained", "shuffled", "--store", str(runs), "--report", str(rep))
    png = {p.name: p.read_bytes() for p in rep.glob("*.png")}
    for run, key in (("trained", "dcgan-faces/z/mse"), ("shuffled", "dcgan-faces-shuffled0/z/mse")):
        ref = _stored(runs, run, key)
        stem = "compare-" + f"{run}-{key}".replace("/", "_")
        spectrum, homog = png[f"{stem}-spectrum.png"], png[f"{stem}-homogeneity.png"]
        assert spectrum != homog
        assert spectrum == figs.spectrum_band_png(ref["eigvals"], title=f"{run}: {key}")
        assert homog == figs.homogeneity_png(ref["log"], ref["lin"], title=f"{run}: {key}")
    assert (png["compare-trained-dcgan-faces_z_mse-spectrum.png"]
            != png["compare-shuffled-dcgan-faces-shuffled0_z_mse-spectrum.png"])


def _compare_refused(runs, capsys, argv, code, fragment, tmp_path) -> None:
    before = _snapshot(runs)
    rep = tmp_path / "rep"
    capsys.readouterr()
    assert main(["compare", *argv, "--store", str(runs), "--report", str(rep)]) == code
    cap = capsys.readouterr()
    err = cap.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gangeo compare: ") and fragment in err[0], err
    assert cap.out == "" and not rep.exists() and _snapshot(runs) == before


@pytest.mark.parametrize("argv, code, fragment", [
    (["trained", "part"], 5, "run 'part' is partial"),
    (["raw", "trained"], 5, "run 'raw' group dcgan-faces/z/mse is not reduced"),
    (["trained", "nosuch"], 5, "no run 'nosuch'"),
    (["trained", "shuffled", "--group", "x/y/z"], 2, "--group 'x/y/z'"),
    (["trained", "../up"], 2, "RUN"),
])
def test_compare_refuses_with_one_line(runs, capsys, tmp_path, argv, code, fragment):
    _compare_refused(runs, capsys, argv, code, fragment, tmp_path)


def test_rm_holds_the_run_lock_while_deleting(store, capsys, monkeypatch):
    """A driver starting meanwhile finds the run locked (cluster.lock), never a half-deleted run."""
    import os

    import zarr.core.sync as zsync

    from cluster.lock import lock_info

    held = []
    real = zsync.sync

    def spy(coro, *a, **kw):
        if getattr(coro, "__qualname__", "").endswith("delete_dir"):
            held.append(lock_info(str(store), "a"))
        return real(coro, *a, **kw)

    monkeypatch.setattr(zsync, "sync", spy)
    assert main(["rm", "a", "--store", str(store), "--yes"]) == 0
    assert held and all(h["pid"] == os.getpid() for h in held)  # each group's subtree, then the run's folder
    assert lock_info(str(store), "a") is None  # released afterwards


def test_rm_cut_short_lists_as_deleting_is_read_by_no_one_and_a_second_rm_finishes(store, capsys, monkeypatch):
    """Issue 21, finding 3: an rm killed part-way never leaves a run that looks complete."""
    import zarr.core.sync as zsync

    real = zsync.sync

    def delete_then_die(coro, *a, **kw):
        out = real(coro, *a, **kw)
        if getattr(coro, "__qualname__", "").endswith("delete_dir"):
            raise KeyboardInterrupt  # Ctrl-C once the first group's keys are gone
        return out

    monkeypatch.setattr(zsync, "sync", delete_then_die)
    assert main(["rm", "a", "--store", str(store), "--yes"]) == 130
    monkeypatch.undo()
    assert (store / "a" / "zarr.json").exists() and not (store / "a" / "dcgan-faces").exists()
    capsys.readouterr()
    assert main(["ls", "--store", str(store)]) == 0
    assert {r["run"]: r["status"] for r in json.loads(capsys.readouterr().out)["runs"]} == {
        "a": "deleting", "b": "complete"}
    assert main(["status", "a", "--store", str(store)]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["status"] == "deleting" and "partially deleted" in st["detail"] and st["progress"] is None
    assert "gangeo rm a --yes" in st["detail"]
    for argv in (["query", "a"], ["reduce", "a", "--no-ray", "--quiet"], ["report", "a", "--quiet"],
                 ["resume", "a", "--quiet"], ["compare", "a", "b"]):
        assert main([*argv, "--store", str(store)]) == 5, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "being deleted" in err[0] and "gangeo rm a --yes" in err[0], err
    assert main(["rm", "a", "--store", str(store), "--yes"]) == 0
    assert not (store / "a").exists() and _ls(str(store), capsys) == ["b"]


# ---- reduce holds the run's lock ----


def test_reduce_of_a_run_a_driver_writes_is_refused(store, capsys):
    from cluster.lock import RunLock

    with RunLock(str(store), "a"):
        before = _snapshot(store)
        capsys.readouterr()
        assert main(["reduce", "a", "--store", str(store), "--no-ray", "--quiet"]) == 5
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is being written by another driver" in err[0], err
        assert _snapshot(store) == before


def test_rm_is_refused_while_a_reduce_runs(store, capsys, monkeypatch):
    import cluster.reduce

    real, seen = cluster.reduce.reduce_run, []

    def reduce_and_try_rm(*args, **kwargs):  # what a second shell would do mid-reduce
        seen.append(main(["rm", "a", "--store", str(store), "--yes"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(cluster.reduce, "reduce_run", reduce_and_try_rm)
    assert main(["reduce", "a", "--store", str(store), "--no-ray", "--quiet"]) == 0
    assert seen == [5] and (store / "a" / "zarr.json").exists()
    assert main(["rm", "a", "--store", str(store), "--yes"]) == 0  # the lock went with the reduce


def test_rm_with_a_linked_lock_deletes_nothing_outside(tmp_path, capsys):
    from tests.support.stored_runs import write_run

    outside = tmp_path / "elsewhere"  # a directory outside the store that rm must never touch
    outside.mkdir()
    (outside / "zarr.json").write_text("precious")
    store = tmp_path / "store"
    write_run(store, "r")
    (store / "_locks").mkdir(exist_ok=True)
    (store / "_locks" / "r").symlink_to(outside)
    assert main(["rm", "r", "--store", str(store), "--yes"]) == 5
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "symbolic link" in lines[0], lines
    assert [p.name for p in outside.iterdir()] == ["zarr.json"] and (outside / "zarr.json").read_text() == "precious"
    assert (store / "r").exists()
