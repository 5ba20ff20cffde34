"""Geometry over a real (short) training run: a checkpoint series swept by a schedule that grows one
run, fire by fire, as later checkpoints appear; equal array for array to the series swept at once;
its cross-step statistics open in xarray with ``step`` as a dimension."""

from __future__ import annotations

import shutil
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import zarr

from cluster.driver import run_sweep
from cluster.series_reduce import SERIES_GROUP
from cluster.spec import load_spec, parse_spec
from jobs.schedule import Firer, RayJobs, ScheduleBook
from tests.support.job_client import FakeJobClient
from tests.support.training_run import train_checkpoints

STEPS = (100, 200, 300)  # a few hundred steps: the generator has left its initialisation


def _spec(name: str, weights: str):
    return parse_spec({
        "name": name, "generators": [{"name": "dcgan-faces", "label": "faces", "series": {"weights": weights}}],
        "targets": ["mse"], "codes": {"n": 2, "seed": 3}, "chunk_size": 2, "resources": {"workers": 1}})


def _arrays(group: zarr.Group, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for name, arr in group.arrays():
        if name not in ("computed_at", "seconds"):  # when and how long, not what
            out[f"{prefix}{name}"] = arr[...]
    for name, sub in group.groups():
        out |= _arrays(sub, f"{prefix}{name}/")
    return out


def _run_the_job(summaries: list):
    """The head's part: run the staged spec as `python -m jobs.cli run spec.yaml` would, here."""

    def on_submit(client, job, request):
        assert request["entrypoint"].split()[0] == sys.executable
        summaries.append(run_sweep(load_spec(Path(request["runtime_env"]["working_dir"], "spec.yaml")),
                                   progress=False))

    return on_submit


@pytest.mark.slow  # a real training run (300 steps, ~45 s) and three sweeps of 2 codes: ~2-3 min on 2 cores
def test_a_series_grown_by_schedule_fires_equals_the_series_swept_at_once(ray_local, tmp_path):
    ckpts = train_checkpoints(tmp_path / "train", STEPS, batch=8)
    series = tmp_path / "series"
    series.mkdir()
    for p in ckpts[:2]:
        shutil.copy(p, series / p.name)
    store, whole = str(tmp_path / "grown"), str(tmp_path / "whole")
    summaries: list = []
    book = ScheduleBook(zarr.open_group(str(tmp_path / "schedules"), mode="a", zarr_format=3))
    t0 = datetime(2026, 11, 26, tzinfo=timezone.utc)
    book.add("tr", "0 * * * *", _spec("x", str(series / "ckpt-*.tar")).to_dict(), "http://127.0.0.1:8265",
             store=store, now=t0 - timedelta(minutes=1), grow=True)
    jobs = RayJobs(Firer("http://127.0.0.1:8265"), FakeJobClient(on_submit=_run_the_job(summaries)))
    assert [r["run"] for r in book.run_due(t0, jobs)] == ["tr"]  # the schedule's name: one run
    shutil.copy(ckpts[2], series / ckpts[2].name)  # training went on: a later checkpoint appears
    assert [r["run"] for r in book.run_due(t0 + timedelta(hours=1), jobs)] == ["tr"]
    book.run_due(t0 + timedelta(hours=2), jobs)  # nothing new
    first, grown, again = summaries
    assert (first["status"], first["computed"]) == ("complete", 2)
    assert (grown["status"], grown["skipped"], grown["computed"]) == ("complete", 2, 1)  # only the new one
    assert again.get("nothing_to_do")  # answered from the store
    run_sweep(_spec("tr", str(tmp_path / "train" / "ckpt-*.tar")), store=whole, progress=False)

    g, w = zarr.open_group(store, mode="r")["tr"], zarr.open_group(whole, mode="r")["tr"]
    keys = [f"faces-step{s}/z/mse" for s in STEPS]
    assert g.attrs["groups"] == w.attrs["groups"] == keys
    a, b = _arrays(g), _arrays(w)
    assert sorted(a) == sorted(b) and any(k.startswith(SERIES_GROUP) for k in a)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    # The checkpoints differ, so their metrics do: the series is not three copies of one model.
    vals = [g[f"{k}/eigvals"][:] for k in keys]
    assert not np.array_equal(vals[0], vals[2])

    import xarray as xr

    ds = xr.open_zarr(f"{store}/tr/{SERIES_GROUP}/faces/z/mse", consolidated=False)
    assert ds.step.values.tolist() == list(STEPS) and ds.alignment_final.dims == ("step", "angle")
    np.testing.assert_allclose(ds.alignment_final.sel(step=300).values, 1.0, rtol=0, atol=1e-12)
    assert np.isnan(ds.alignment_next.sel(step=300).values).all()
    assert ((ds.alignment_next.sel(step=100).values >= 0) & (ds.alignment_next.sel(step=100).values <= 1)).all()
    top = ds.top_eigvals.values
    assert np.all(np.diff(top, axis=1) <= 0) and np.all(top > 0)  # ranks descending, a positive spectrum
    np.testing.assert_array_equal(top[:, 0], [g[f"{k}/reduce/global_eigvals"][0] for k in keys])

    # The report: curves against step; each step's generator from the path its run recorded, so
    # checkpoints moved since are a note on the traversal grids, not a failed report.
    from cluster.report import build_report

    shutil.rmtree(series)
    html = build_report(store, "tr", out_dir=tmp_path / "report", progress=False).read_text(encoding="utf-8")
    assert '<section id="series"><h2>Training series</h2>' in html
    assert html.count("faces-step") >= len(STEPS)
