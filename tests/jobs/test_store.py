"""The store through the commands: ``status``, ``ls`` and ``query`` of a run written by RunStore, and S3
failures (no bucket, no server, refused credentials) as one line that shows no secret, nothing written.
The store itself, on a directory and on S3, is tested in tests/cluster/test_store.py."""

from __future__ import annotations

import json

import numpy as np

from cluster.layout import GroupLayout
from cluster.spec import parse_spec
from cluster.storage import open_root, store_env
from cluster.store import RunStore
from jobs.cli import EXIT_CODES, main

D = 5


def _assert_one_clean_line(err: str, *secrets: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert all(s not in lines[0] for s in secrets)
    return lines[0]


def test_s3_failures_are_one_line_and_write_nothing(s3_server, tmp_path, capsys, monkeypatch):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: r\ngenerators: [dcgan-faces]\ntargets: [mse]\ncodes: {n: 2}\n")
    cases = {"does not exist": ["--store", "s3://no-such-bucket/x"],
             "cannot reach": ["--store", "s3://any-bucket/x", "--s3-endpoint", "http://127.0.0.1:9"]}
    for needle, args in cases.items():
        assert main(["run", str(spec), "--quiet", *args]) == EXIT_CODES["store"]
        out, err = capsys.readouterr()
        assert out == "" and needle in _assert_one_clean_line(err)
    url = s3_server.new_bucket("auth")
    with s3_server.enforce_auth() as (key_id, secret):
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-" + secret[:4])
        assert main(["run", str(spec), "--quiet", "--store", url]) == EXIT_CODES["store"]
        out, err = capsys.readouterr()
        line = _assert_one_clean_line(err, secret, "not-the-secret")
        assert "denied" in line and "credentials" in line
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        open_root(url)  # the right credentials work against the same enforcing server
    monkeypatch.undo()
    assert s3_server.keys(url) == ["zarr.json"]  # only the root the valid open created; no run
    env = store_env("http://h:1")
    assert env["AWS_ENDPOINT_URL"] == "http://h:1" and env["AWS_REQUEST_CHECKSUM_CALCULATION"] == "when_required"


def test_cli_status_ls_query(tmp_path, capsys):
    url = str(tmp_path / "store")
    spec = parse_spec({"name": "r", "generators": [{"name": "dcgan-faces"}], "targets": ["mse", "layer:main.5"],
                       "codes": {"n": 5, "seed": 0}, "chunk_size": 2, "keep": {"hessian": True, "eigvecs": True}})
    plans = [GroupLayout("dcgan-faces", "z", t, n=5, dim=D, chunk_size=2) for t in ("mse", "layer:main.5")]
    rng = np.random.default_rng(3)
    data = {"z": rng.standard_normal((2, D)), "eigvals": rng.random((2, D)),
            "eigvecs": rng.standard_normal((2, D, D)), "hessian": rng.standard_normal((2, D, D))}
    rs = RunStore(url)
    rs.create("r", spec, plans)
    rs.write_chunk("r", plans[0].key, 0, data)
    rs.mark_done("r", plans[0].key, 0)
    assert main(["status", "r", "--store", url]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["progress"]["groups"][plans[0].key] == {"done": 1, "chunks": 3}
    assert main(["ls", "--store", url]) == 0
    assert [r["run"] for r in json.loads(capsys.readouterr().out)["runs"]] == ["r"]
    q = ["query", "r", "--store", url, "--target", "mse", "--array", "eigvals", "--index", "0:2"]
    assert main([*q, "--format", "json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["shape"] == [2, D] and got["group"] == plans[0].key
    np.testing.assert_allclose(got["data"], data["eigvals"], rtol=1e-6)  # float32 storage
    assert main([*q, "--format", "table"]) == 0
    header, *rows = capsys.readouterr().out.strip().splitlines()  # a header row, then rows labelled by code
    assert header.split("\t")[:2] == ["code", "eig1"] and [r.split("\t")[0] for r in rows] == ["0", "1"]
    np.testing.assert_allclose([[float(v) for v in r.split("\t")[1:]] for r in rows], data["eigvals"], rtol=1e-6)
    out = tmp_path / "v.npy"
    assert main([*q[:-4], "--array", "eigvecs", "--format", "npy", "--out", str(out)]) == 0
    np.testing.assert_allclose(np.load(out)[:2], data["eigvecs"], rtol=1e-6)
    assert "not done" in capsys.readouterr().err  # the run's last chunk is not done: said, not served as data
    for bad, needle, kind in ((["query", "r", "--store", url], "several groups match", "usage"),
                              ([*q[:-2], "--index", "x"], "--index", "usage"),
                              (["status", "zz", "--store", url], "no run 'zz'", "store"),
                              (["ls", "--store", str(tmp_path / "none")], "no results store", "store")):
        assert main(bad) == EXIT_CODES[kind]
        out_, err = capsys.readouterr()
        assert out_ == "" and len(err.strip().splitlines()) == 1 and needle in err
