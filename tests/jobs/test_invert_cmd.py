"""``gangeo invert`` and ``gangeo search``: a short inversion writes its images and trajectory, a search prints
each method's values, and a metric of the wrong shape is one line with nothing written. The methods:
tests/core/test_inversion.py."""

from __future__ import annotations

import json

import numpy as np
import torch

from jobs.invert_cmd import main


def test_cli_invert_and_search(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    A = torch.randn(100, 100, generator=g, dtype=torch.float64)
    np.save(tmp_path / "H.npy", (A @ A.T).numpy())
    out = tmp_path / "inv"
    rc = main(["invert", "--metric", str(tmp_path / "H.npy"), "--basis", "global", "--steps", "4",
               "--target-seed", "5", "--out", str(out)])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["evaluations"] == 4 and summary["final_distance"] <= summary["initial_distance"]
    assert sorted(p.name for p in out.iterdir()) == [
        "reconstruction.png", "result.json", "target.png", "trajectory.npy", "z.npy"]

    rc = main(["search", "--objective", "target", "--basis", "none", "--budget", "6", "--seeds", "2", "--popsize", "3"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)["methods"]["cma"]
    assert res["n"] == 2 and len(res["values"]) == 2

    np.save(tmp_path / "bad.npy", np.eye(3))
    bad_out = tmp_path / "never"
    rc = main(["invert", "--metric", str(tmp_path / "bad.npy"), "--basis", "global", "--steps", "2",
               "--out", str(bad_out)])
    captured = capsys.readouterr()
    assert rc == 2 and captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert "(100, 100)" in captured.err and not bad_out.exists()
