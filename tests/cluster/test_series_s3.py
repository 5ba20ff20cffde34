"""A checkpoint series kept in S3 (moto's server on 127.0.0.1): listed in step order, each checkpoint
pinned to the object listed, downloaded by whoever loads it; a replaced or deleted object is refused,
never loaded in its place; a sweep over it equals the sweep over the same files on disk."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from cluster.driver import run_sweep
from cluster.layout import spec_generators
from cluster.s3_checkpoints import PIN, local_copy, local_options, unpinned
from cluster.spec import SpecError, parse_spec
from cluster.store import RunExistsError
from cluster.weights_identity import weights_digests
from geometry_core.errors import MissingWeightsError, WeightsError
from geometry_core.weights_cache import cache_home
from tests.support.training_run import train_checkpoints


def _spec(weights: str, name: str = "t", **series) -> dict:
    return {"name": name, "generators": [{"name": "dcgan-faces", "label": "faces",
                                          "series": {"weights": weights, **series}}],
            "targets": ["mse"], "codes": {"n": 2, "seed": 5}, "chunk_size": 2, "resources": {"workers": 1}}


@pytest.fixture
def bucket(s3_server):
    """A fresh bucket; its downloaded copies are removed from the weights cache afterwards."""
    url = s3_server.new_bucket("ckpts")
    yield url, s3_server.client(), url[len("s3://"):]
    shutil.rmtree(cache_home() / "s3" / url[len("s3://"):], ignore_errors=True)


def test_a_series_in_s3_is_listed_in_step_order_and_each_checkpoint_pinned_to_the_object(bucket):
    url, s3, name = bucket
    for step, body in [(100, b"c100"), (5, b"c5"), (40, b"c40")]:
        s3.put_object(Bucket=name, Key=f"run/ckpt-{step}.tar", Body=body)
    s3.put_object(Bucket=name, Key="run/deeper/ckpt-7.tar", Body=b"no")  # a wildcard never crosses '/'
    spec = parse_spec(_spec(f"{url}/run/ckpt-*.tar"))
    assert [(g.label, g.step) for g in spec.generators] == [("faces-step5", 5), ("faces-step40", 40),
                                                             ("faces-step100", 100)]
    pinned = [g.options["weights"] for g in spec.generators]
    assert [unpinned(p) for p in pinned] == [f"{url}/run/ckpt-{s}.tar" for s in (5, 40, 100)]
    assert all(PIN in p for p in pinned)
    assert spec.to_dict()["generators"][0]["series"] == {"weights": f"{url}/run/ckpt-*.tar"}
    # A folder: every object directly in it, the same checkpoints.
    assert [g.options["weights"] for g in parse_spec(_spec(f"{url}/run/")).generators] == pinned
    # Loading downloads the listed object once, into the cache; a damaged copy is fetched again.
    path = local_copy(pinned[0])
    assert path.read_bytes() == b"c5" and path == cache_home() / "s3" / name / "run" / "ckpt-5.tar"
    path.write_bytes(b"damaged")
    assert local_copy(pinned[0]).read_bytes() == b"c5"
    # Replaced since it was listed: refused, never loaded in its place; deleted: gone.
    s3.put_object(Bucket=name, Key="run/ckpt-40.tar", Body=b"retrained")
    with pytest.raises(WeightsError, match=r"ckpt-40\.tar: the checkpoint was replaced in S3 since the run listed"):
        local_copy(pinned[1])
    s3.delete_object(Bucket=name, Key="run/ckpt-100.tar")
    with pytest.raises(MissingWeightsError, match=r"ckpt-100\.tar: the checkpoint is gone from S3"):
        local_copy(pinned[2])


@pytest.mark.parametrize("where, message", [
    ("{url}/none-*.tar", r"generators\[0\]\.series\.weights: no checkpoint file matches"),
    ("s3://no-such-bucket-gangeo/x/*.tar", r"generators\[0\]\.series\.weights: .*the bucket does not exist"),
    ("gs://b/x/*.tar", r"generators\[0\]\.series\.weights: expected a local glob or directory or s3://"),
])
def test_a_bad_s3_series_is_one_line_naming_the_field(bucket, where, message):
    with pytest.raises(SpecError, match=message) as err:
        parse_spec(_spec(where.format(url=bucket[0])))
    assert len(err.value.problems) == 1


@pytest.mark.slow  # two sweeps of 2 codes over 2 checkpoints: ~20-40 s on 2 cores
def test_a_series_swept_from_s3_equals_the_same_checkpoints_on_disk(ray_local, bucket, tmp_path):
    url, s3, name = bucket
    files = train_checkpoints(tmp_path / "ck", steps=(1, 2))  # a real (two-step) training run
    for f in files:
        s3.upload_file(str(f), name, f"faces/{f.name}")
    store = tmp_path / "store"
    s3_spec, disk_spec = parse_spec(_spec(f"{url}/faces/", "s3")), parse_spec(_spec(str(tmp_path / "ck"), "disk"))
    for spec in (s3_spec, disk_spec):
        assert run_sweep(spec, store=str(store), progress=False)["status"] == "complete"
    root = zarr.open_group(str(store), mode="r")
    for label in ("faces-step1", "faces-step2"):
        a, b = root[f"s3/{label}/z/mse"], root[f"disk/{label}/z/mse"]
        names = sorted(n for n, _ in a.arrays() if n not in ("computed_at", "seconds"))  # when, not what
        assert "eigvals" in names and names == sorted(n for n, _ in b.arrays() if n not in ("computed_at", "seconds"))
        for arr in names:
            np.testing.assert_array_equal(a[arr][...], b[arr][...])  # the same files: the same bits
    # The identity names the object listed and its sha256, as for a file on disk.
    ident = weights_digests(s3_spec)
    assert [w["sha256"] for w in ident.values()] == [w["sha256"] for w in weights_digests(disk_spec).values()]
    assert all(w["path"].startswith(f"{url}/faces/ckpt-") and PIN in w["path"] for w in ident.values())
    # A report loads each step from the identity: the object listed, downloaded again if need be.
    shutil.rmtree(cache_home() / "s3" / name)
    stored = root["s3"].attrs
    gens = spec_generators(stored["spec"], stored["identity"]["weights"])
    for f, label in zip(files, ("faces-step1", "faces-step2")):
        assert Path(local_options(gens[label][1])["weights"]).read_bytes() == f.read_bytes()
    # A checkpoint retrained at the same key: the run refuses it, as for a file changed on disk.
    s3.put_object(Bucket=name, Key="faces/ckpt-1.tar", Body=files[1].read_bytes())
    with pytest.raises(RunExistsError, match=r"ckpt-1\.tar.* differs from the one the run started with"):
        run_sweep(parse_spec(_spec(f"{url}/faces/", "s3")), store=str(store), progress=False)
