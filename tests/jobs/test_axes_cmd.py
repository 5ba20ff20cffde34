"""``gangeo axes`` and ``gangeo localdim``: the figures and the summary written, bad directions and an unknown
layer refused in one line with nothing written. The axes themselves: tests/core/test_axes.py."""

from __future__ import annotations

import json

import numpy as np

from jobs.axes_cmd import main as cli
from jobs.cli import EXIT_CODES


def test_cli_axes_writes_grid_curve_and_alignment(tmp_path, capsys):
    dirs = np.random.default_rng(0).standard_normal((2, 100)).astype(np.float32)
    np.save(tmp_path / "dirs.npy", dirs)
    out = tmp_path / "out"
    rc = cli(["axes", "--generator", "dcgan-faces", "--distance", "mse", "--seed", "0", "--topk", "2",
              "--delta", "0.002", "--steps", "1", "--out", str(out), "--directions", str(tmp_path / "dirs.npy"),
              "--sefa"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert (out / "axes_grid.png").is_file() and (out / "axes_curve.png").is_file()
    assert json.loads((out / "axes.json").read_text()) == summary
    assert len(summary["alignment"]) == 2 and len(summary["sefa_alignment"]) == 2
    assert len(summary["measured"]) == 2 and len(summary["measured"][0]) == 3


def test_cli_axes_bad_directions_writes_nothing(tmp_path, capsys):
    np.save(tmp_path / "bad.npy", np.ones((2, 7)))
    out = tmp_path / "out"
    rc = cli(["axes", "--topk", "2", "--out", str(out), "--directions", str(tmp_path / "bad.npy")])
    err = capsys.readouterr().err
    assert rc == 2 and "(n, 100)" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_localdim_prints_a_table(capsys):
    rc = cli(["localdim", "--n", "2", "--layers", "main.2", "--distortion"])
    assert rc == 0
    table = json.loads(capsys.readouterr().out)
    row = table["main.2"]
    assert len(row["dims"]) == 2 and 0.0 <= row["distortion"] <= 1.0


def test_cli_localdim_unknown_layer_is_one_line(capsys):
    rc = cli(["localdim", "--n", "2", "--layers", "nope"])
    err = capsys.readouterr().err
    assert rc == EXIT_CODES["geometry"] and "nope" in err and len(err.strip().splitlines()) == 1
