"""What a run needs is checked before the run exists: distances (their weights), layers and
store access fail in one line of their kind, and nothing is written (ARCHITECTURE.md, "Limits")."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.driver import run_sweep
from cluster.spec import SpecError, parse_spec
from cluster.storage import StoreError
from cluster.worker import whole_sentences
from geometry_core.errors import MissingWeightsError
from tests.support.planning_workers import failing_with, without_lpips_trunks


def _raw(name: str, **patch) -> dict:
    return {"name": name, "generators": [{"name": "dcgan-faces"}], "targets": ["mse"],
            "codes": {"n": 2, "seed": 0}, "chunk_size": 2, "keep": {"hessian": False, "eigvecs": True},
            "reducers": {"global": False, "homogeneity": False, "anisotropy": False},
            "resources": {"workers": 1}, **patch}


def _no_run(store: Path, name: str) -> None:
    """Nothing of the run was written (the store directory may exist, empty of runs)."""
    assert not (store / name).exists()


def test_lpips_without_trunk_fails_before_the_run_with_the_weights_error(ray_local, tmp_path):
    # The case: mse + lpips-alex offline with no trunk. Before: the run was created, the mse
    # chunks computed, then every lpips chunk failed with a message cut at 300 characters (exit 1).
    store = tmp_path / "s"
    spec = parse_spec(_raw("lp", targets=["mse", "lpips-alex"]))
    with pytest.raises(MissingWeightsError) as info:
        run_sweep(spec, store=str(store), progress=False, worker_cls=without_lpips_trunks(tmp_path / "empty"))
    message = str(info.value)
    assert message.startswith("targets: lpips-alex: lpips-alex needs torchvision's ImageNet backbone file")
    assert message.endswith("alternatively use --distance mse") and "\n" not in message  # whole, one line
    _no_run(store, "lp")


def test_unknown_layer_fails_before_the_run(ray_local, tmp_path):
    store = tmp_path / "s"
    with pytest.raises(SpecError, match="has no layer 'no.such'"):
        run_sweep(parse_spec(_raw("ly", targets=["mse", "layer:no.such"])), store=str(store), progress=False)
    _no_run(store, "ly")


def test_store_that_cannot_be_written_fails_before_ray(tmp_path, monkeypatch):
    import cluster.driver as driver

    monkeypatch.setattr(driver, "init_ray", lambda *a, **k: pytest.fail("Ray started for an unusable store"))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(StoreError, match=r"a-file is a file, not a directory"):
        run_sweep(parse_spec(_raw("st")), store=str(blocker / "store"), progress=False)
    assert blocker.read_text() == ""


def test_read_only_store_fails_before_ray(tmp_path, monkeypatch):
    import os

    import cluster.driver as driver

    if os.geteuid() == 0:
        pytest.skip("root writes through directory permissions")
    monkeypatch.setattr(driver, "init_ray", lambda *a, **k: pytest.fail("Ray started for an unusable store"))
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(StoreError, match="cannot write in"):
            run_sweep(parse_spec(_raw("st")), store=str(ro / "store"), progress=False)
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


def test_failed_chunk_keeps_its_whole_message(ray_local, tmp_path):
    long = " ".join(f"Sentence {i} explains one more thing about why the chunk failed." for i in range(12))
    assert len(long) > 300  # the old record cut it at 300 characters, mid-sentence
    summary = run_sweep(parse_spec(_raw("fw")), store=str(tmp_path / "s"), progress=False,
                        worker_cls=failing_with(long))
    (failed,) = summary["failed"]
    assert failed["error"].startswith(f"RuntimeError: {long} (")


def test_long_messages_are_cut_between_sentences_only():
    text = "First part. Second part; third part goes on and on"
    assert whole_sentences(text, 100) == text
    assert whole_sentences(text, 20) == "First part. [39 more characters left out]"
    assert whole_sentences(text, 30) == "First part. Second part; [26 more characters left out]"


# ---- checks that need no worker come before Ray starts ----


def _no_ray(monkeypatch) -> None:
    import cluster.driver as driver

    monkeypatch.setattr(driver, "init_ray",
                        lambda *a, **k: pytest.fail("Ray started before a check that needs no worker"))


def test_a_layer_one_of_two_generators_lacks_is_refused_before_ray_listing_its_layers(tmp_path, monkeypatch):
    from tests.support.runs import tanh_spec

    _no_ray(monkeypatch)
    tanh = tanh_spec("x")["generators"][0]
    raw = _raw("ly2", generators=[{"name": "dcgan-faces"}, {**tanh, "label": "tanh"}],
               targets=["mse", "layer:main.5", "layer:no.such"])
    store = tmp_path / "s"
    with pytest.raises(SpecError) as info:
        run_sweep(parse_spec(raw), store=str(store), progress=False)
    assert info.value.problems == [
        "targets: dcgan-faces has no layer 'no.such'; its layers: main.2, main.5, main.8, main.11, main.12",
        "targets: tanh has no layer 'main.5'; its layers: none",
        "targets: tanh has no layer 'no.such'; its layers: none"]
    _no_run(store, "ly2")


def test_codes_file_of_another_width_is_refused_before_ray(tmp_path, monkeypatch):
    import numpy as np

    from tests.support.runs import tanh_spec

    _no_ray(monkeypatch)
    np.save(tmp_path / "z7.npy", np.zeros((4, 7)))
    store = tmp_path / "s"
    with pytest.raises(SpecError, match=r"codes.file: .*z7.npy holds 7-d codes; expected the latent size of "
                                        r"every group: module/z/mse \(12-d\)$"):
        run_sweep(parse_spec(tanh_spec("d", codes={"file": str(tmp_path / "z7.npy")})), store=str(store),
                  progress=False)
    _no_run(store, "d")


def test_a_distance_that_cannot_load_is_refused_before_embedded_ray(tmp_path, monkeypatch):
    """The same line a worker's check gives, here from the driver: weights keep their exit code."""
    import geometry_core

    _no_ray(monkeypatch)

    def no_trunk(name, **_kw):
        raise MissingWeightsError(f"{name} needs torchvision's ImageNet backbone file\nsecond line")

    monkeypatch.setattr(geometry_core, "load_distance", no_trunk)
    store = tmp_path / "s"
    with pytest.raises(MissingWeightsError) as info:
        run_sweep(parse_spec(_raw("lp2", targets=["lpips-alex"])), store=str(store), progress=False)
    assert str(info.value) == "targets: lpips-alex: lpips-alex needs torchvision's ImageNet backbone file second line"
    _no_run(store, "lp2")
