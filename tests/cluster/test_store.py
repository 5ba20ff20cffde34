"""The results store on a local directory and on S3 (a moto server over HTTP): same suite. What the
commands make of it (status, ls, query, S3 failures as one line): tests/jobs/test_store.py."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from cluster.layout import GroupLayout, safe_name
from cluster.spec import parse_spec
from cluster.storage import StoreError, open_root, parse_store_url
from cluster.store import RunExistsError, RunStore

D = 5


def _spec(**patch):
    raw = {"name": "r", "generators": [{"name": "dcgan-faces"}], "targets": ["mse", "layer:main.5"],
           "codes": {"n": 5, "seed": 0}, "chunk_size": 2, "keep": {"hessian": True, "eigvecs": True}}
    return parse_spec({**raw, **patch})


PLANS = [GroupLayout("dcgan-faces", "z", "mse", n=5, dim=D, chunk_size=2),
         GroupLayout("dcgan-faces", "z", "layer:main.5", n=5, dim=D, chunk_size=2)]


def _chunk(rows: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"z": rng.standard_normal((rows, D)), "eigvals": rng.random((rows, D)),
            "eigvecs": rng.standard_normal((rows, D, D)), "hessian": rng.standard_normal((rows, D, D))}


class StoreSuite:
    """Subclasses provide ``url`` (a fresh, empty store) and ``raw_root`` (zarr without our code)."""

    def test_create_write_done_read(self, url):
        rs = RunStore(url)
        assert rs.create("r", _spec(), PLANS) is True
        key = PLANS[1].key
        assert key == "dcgan-faces/z/layer-main.5"
        assert rs.done_mask("r", key).tolist() == [False, False, False]
        data = _chunk(1, 0)  # the last chunk holds the one remaining code
        rs.write_chunk("r", key, 2, data, seconds=0.5)
        assert rs.done_mask("r", key).tolist() == [False, False, False]  # not counted before done
        rs.mark_done("r", key, 2)
        assert rs.done_mask("r", key).tolist() == [False, False, True]
        # float64 in, float32 stored: compare at float32 resolution (rtol 1e-7 of the values' scale).
        np.testing.assert_allclose(rs.read("r", key, "eigvecs", slice(4, 5)), data["eigvecs"], rtol=1e-6)
        root = self.raw_root(url)
        g = root["r/dcgan-faces/z/layer-main.5"]
        assert g.attrs["target"] == "layer:main.5"
        assert g["eigvecs"].metadata.dimension_names == ("code", "dim", "eig")
        assert g["hessian"].metadata.dimension_names == ("code", "dim", "dim2")
        assert g["z"].chunks == (2, D) and g["done"].chunks == (1,)
        np.testing.assert_allclose(g["z"][4:5], data["z"], rtol=1e-6)
        assert g["seconds"][2] == pytest.approx(0.5)

    def test_same_spec_resumes_different_spec_refused(self, url):
        rs = RunStore(url)
        rs.create("r", _spec(), PLANS)
        rs.write_chunk("r", PLANS[0].key, 0, _chunk(2, 1))
        rs.mark_done("r", PLANS[0].key, 0)
        assert rs.create("r", _spec(store="elsewhere", resources={"workers": 2}), PLANS) is False
        assert rs.done_mask("r", PLANS[0].key).tolist() == [True, False, False]  # nothing reset
        with pytest.raises(RunExistsError, match=r"differs in: codes") as info:
            rs.create("r", _spec(codes={"n": 6, "seed": 0}), PLANS)
        assert "\n" not in str(info.value)

    def test_ls_status_and_unknown_names(self, url):
        rs = RunStore(url)
        rs.create("a", _spec(name="a"), PLANS[:1])
        rs.create("b", _spec(name="b"), PLANS[:1])
        rs.update_attrs("b", status="complete")
        assert [(r["run"], r["status"]) for r in rs.ls()] == [("a", "created"), ("b", "complete")]
        assert rs.attrs("a")["spec"]["codes"] == {"n": 5, "seed": 0}
        with pytest.raises(StoreError, match="no run 'zz'"):
            rs.attrs("zz")
        with pytest.raises(StoreError, match="no array 'nope'"):
            rs.read("a", PLANS[0].key, "nope")
        with pytest.raises(StoreError, match="expected shape"):
            rs.write_chunk("a", PLANS[0].key, 0, _chunk(1, 0))


class TestLocalStore(StoreSuite):
    @pytest.fixture
    def url(self, tmp_path):
        return str(tmp_path / "store")

    def raw_root(self, url):
        return zarr.open_group(url, mode="r", zarr_format=3)

    def test_missing_store_without_create(self, tmp_path):
        with pytest.raises(StoreError, match="no results store"):
            open_root(tmp_path / "absent", create=False)
        assert not (tmp_path / "absent").exists()


class TestS3Store(StoreSuite):
    @pytest.fixture
    def url(self, s3_server):
        return s3_server.new_bucket("store") + "/runs"

    def raw_root(self, url):
        import os

        return zarr.open_group(url, mode="r", zarr_format=3, storage_options={
            "endpoint_url": os.environ["AWS_ENDPOINT_URL"], "skip_instance_cache": True})


def test_parse_store_url():
    assert parse_store_url("s3://bkt/a/b/").path == "bkt/a/b"
    assert parse_store_url("file:///tmp/x").path == "/tmp/x"
    for bad in ("gs://bkt", "s3://B_", "s3://"):
        with pytest.raises(StoreError):
            parse_store_url(bad)


def test_safe_name():
    assert safe_name("layer:main.5") == "layer-main.5"
    assert safe_name("lpips-alex") == "lpips-alex"


def test_root_created_by_another_driver_meanwhile_is_opened(tmp_path, monkeypatch):
    # Two drivers starting on a fresh store: the other one writes the root between zarr's
    # "does it exist" check and this driver's create (seen as a flaky two-run test).
    real = zarr.open_group
    calls = []

    def racing(store, *, mode, zarr_format):
        calls.append(mode)
        if len(calls) == 1:
            real(store, mode="a", zarr_format=zarr_format)  # the other driver wins the race
            raise zarr.errors.ContainsGroupError("A group exists in store at path ''.")
        return real(store, mode=mode, zarr_format=zarr_format)

    monkeypatch.setattr(zarr, "open_group", racing)
    root = open_root(str(tmp_path / "s"))
    assert calls == ["a", "r+"] and isinstance(root, zarr.Group)
