"""Checkpoint series in a spec: expansion in step order, identity by pattern, bad input one line each,
weights identity that grows by new checkpoints and never loses one; principal-angle cosines."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cluster.spec import SpecError, parse_spec
from cluster.store import RunExistsError, check_identity
from geometry_core.alignment import subspace_cosines


def _spec(series: dict, **gen) -> dict:
    return {"name": "t", "generators": [{"name": "dcgan-faces", "label": "faces", "series": series, **gen}],
            "targets": ["mse"], "codes": {"n": 4, "seed": 0}, "chunk_size": 2}


def _files(d, *names):
    d.mkdir(exist_ok=True)
    for n in names:
        (d / n).write_bytes(b"x")
    return d


def test_series_expands_in_step_order_and_keeps_its_pattern_as_identity(tmp_path):
    d = _files(tmp_path / "ck", "ckpt-100.tar", "ckpt-5.tar", "ckpt-40.tar")  # name order is not step order
    spec = parse_spec(_spec({"weights": str(d / "ckpt-*.tar")}))
    assert [(g.label, g.step) for g in spec.generators] == [
        ("faces-step5", 5), ("faces-step40", 40), ("faces-step100", 100)]
    assert [g.options["weights"] for g in spec.generators] == [str(d / f"ckpt-{s}.tar") for s in (5, 40, 100)]
    assert list(spec.series()) == ["faces"]
    entry = spec.to_dict()["generators"]
    assert entry == [{"name": "dcgan-faces", "spaces": ["z"], "options": {}, "label": "faces",
                      "series": {"weights": str(d / "ckpt-*.tar")}}]
    assert parse_spec(spec.to_dict()) == spec
    # A new checkpoint adds a generator; the identity (the pattern) stays the same.
    _files(d, "ckpt-200.tar")
    grown = parse_spec(_spec({"weights": str(d / "ckpt-*.tar")}))
    assert [g.step for g in grown.generators] == [5, 40, 100, 200]
    assert grown.identity() == spec.identity()


def test_a_directory_an_explicit_step_regex_and_a_relative_path(tmp_path, monkeypatch):
    d = _files(tmp_path / "ck", "run3_it000020_seed7.pt", "run3_it000010_seed7.pt")
    monkeypatch.chdir(tmp_path)
    spec = parse_spec(_spec({"weights": "ck", "step": r"_it(\d+)_"}))
    assert [(g.label, g.step) for g in spec.generators] == [("faces-step10", 10), ("faces-step20", 20)]
    assert spec.generators[0].options["weights"] == str(d / "run3_it000010_seed7.pt")
    assert spec.to_dict()["generators"][0]["series"] == {"weights": str(d), "step": r"_it(\d+)_"}
    # By default the step is the last number of the name: the seed here, the same for both files.
    with pytest.raises(SpecError, match=r"both name step 7"):
        parse_spec(_spec({"weights": "ck"}))


@pytest.mark.parametrize("series, extra, message", [
    ({"weights": "{d}/none-*.tar"}, {}, r"generators\[0\]\.series\.weights: no checkpoint file matches"),
    ({"weights": "{d}/*.tar", "step": "ckpt"}, {}, r"series\.step: expected a regular expression with a group"),
    ({"weights": "{d}/*.tar", "step": "(["}, {}, r"series\.step: not a regular expression"),
    ({"weights": "{d}/*.tar", "step": r"(ckpt)"}, {}, r"series\.step: no step in the file name"),
    ({"weights": "{d}/*.tar", "option": "ckpt_path"}, {}, r"series\.option: expected one of the generator's"),
    ({"weights": "{d}/*.tar"}, {"options": {"weights": "x.tar"}}, r"options\.weights: give each checkpoint"),
    ({"weights": "https://host/ckpt-*.tar"}, {}, r"series\.weights: expected a local glob or directory or s3://"),
    ({"weights": "{d}/*.tar", "every": 2}, {}, r"series\.every: unknown key"),
    ("{d}/*.tar", {}, r"series: expected a mapping with weights"),
], ids=["no-match", "no-group", "bad-regex", "no-number", "unknown-option", "option-twice", "https", "unknown-key",
        "not-a-mapping"])
def test_bad_series_is_one_line_naming_the_field(tmp_path, series, extra, message):
    d = _files(tmp_path / "ck", "ckpt-1.tar", "ckpt-2.tar")

    def fill(v):
        return v.format(d=d) if isinstance(v, str) else v

    raw = {k: fill(v) for k, v in series.items()} if isinstance(series, dict) else fill(series)
    with pytest.raises(SpecError, match=message) as err:
        parse_spec(_spec(raw, **extra))
    assert len(err.value.problems) == 1 and "\n" not in str(err.value)


def test_series_labels_must_not_collide(tmp_path):
    d = _files(tmp_path / "ck", "ckpt-1.tar")
    raw = _spec({"weights": str(d / "*.tar")})
    raw["generators"].append({"name": "dcgan-faces", "label": "faces-step1"})
    with pytest.raises(SpecError, match=r"generators\[1\]\.label: 'faces-step1' is used by another generator"):
        parse_spec(raw)
    with pytest.raises(SpecError, match=r"label: expected a group name \(not 'reduce'\)"):
        parse_spec({**_good_plain(), "generators": [{"name": "dcgan-faces", "label": "reduce"}]})


def _good_plain() -> dict:
    return {"name": "t", "generators": ["dcgan-faces"], "targets": ["mse"]}


def _w(sha: str, step: int | None = None) -> dict:
    return {"path": f"/ck/ckpt-{step}.tar", "sha256": sha, **({"series": "faces", "step": step} if step else {})}


def test_identity_grows_by_new_checkpoints_and_never_loses_or_changes_one():
    core = {"name": "t"}
    old = {**core, "weights": {"faces-step1/weights": _w("a", 1)}}
    grown = {**core, "weights": {"faces-step1/weights": _w("a", 1), "faces-step2/weights": _w("b", 2)}}
    assert check_identity("t", "store", old, grown) is True       # recorded: the run grows
    assert check_identity("t", "store", grown, grown) is False    # the same: nothing to record
    with pytest.raises(RunExistsError, match=r"checkpoint /ck/ckpt-2.tar \(faces-step2/weights\) of series "
                                             r"'faces' is gone"):
        check_identity("t", "store", grown, old)
    changed = {**core, "weights": {"faces-step1/weights": _w("c", 1)}}
    with pytest.raises(RunExistsError, match=r"differs from the one the run started with"):
        check_identity("t", "store", old, changed)
    plain = {**core, "weights": {"faces-step1/weights": _w("a", 1), "other/weights": _w("d")}}
    with pytest.raises(RunExistsError, match=r"other/weights"):  # a file outside a series is never added
        check_identity("t", "store", old, plain)


def test_subspace_cosines_are_the_cosines_of_known_principal_angles():
    t = 0.3
    U = np.eye(4)[:, :3]
    V = np.stack([np.eye(4)[0], math.cos(t) * np.eye(4)[1] + math.sin(t) * np.eye(4)[3], np.eye(4)[2]], axis=1)
    # span(U) and span(V) share e1 and e3 and meet at angle t in the third direction.
    np.testing.assert_allclose(subspace_cosines(U, V, 3), [1, 1, math.cos(t)], rtol=0, atol=1e-15)
    np.testing.assert_allclose(subspace_cosines(U, V, 1), [1], rtol=0, atol=1e-15)
    Q = np.linalg.qr(np.random.default_rng(0).normal(size=(6, 6)))[0]
    np.testing.assert_allclose(subspace_cosines(Q, Q @ np.diag([1, 1, -1, 1, 1, 1]), 4), np.ones(4), atol=1e-12)
    assert subspace_cosines(Q[:, :2], Q[:, 2:4], 2).max() < 1e-12  # orthogonal subspaces


def test_the_example_spec_reads_a_checkpoint_directory(tmp_path, monkeypatch):
    from pathlib import Path

    from cluster.spec import load_spec

    example = Path(__file__).resolve().parents[2] / "jobs" / "examples" / "training_series.yaml"
    _files(tmp_path / "checkpoints", "ckpt-2000.tar", "ckpt-500.tar", "notes.txt")
    monkeypatch.chdir(tmp_path)
    spec = load_spec(example)
    assert [g.label for g in spec.generators] == ["faces-step500", "faces-step2000"]  # notes.txt: not matched


def test_stored_series_steps_load_from_the_paths_the_run_recorded():
    from cluster.layout import spec_generators

    spec = {"generators": [{"name": "dcgan-faces", "label": "faces", "options": {"dtype": "float64"},
                            "series": {"weights": "/gone/ckpt-*.tar"}}, {"name": "dcgan-faces"}]}
    weights = {"faces-step1/weights": _w("a", 1), "faces-step2/weights": _w("b", 2),
               "dcgan-faces/weights": {"path": "/w.tar", "sha256": "c"}}
    assert spec_generators(spec, weights) == {
        "faces-step1": ("dcgan-faces", {"dtype": "float64", "weights": "/ck/ckpt-1.tar"}),
        "faces-step2": ("dcgan-faces", {"dtype": "float64", "weights": "/ck/ckpt-2.tar"}),
        "dcgan-faces": ("dcgan-faces", {})}
    assert "faces" not in spec_generators(spec)  # a series is never loaded from its pattern
