"""Sweep spec validation: every problem is one line naming its field; nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cluster.spec import DEFAULTS, SpecError, load_spec, parse_spec

QUICKSTART = Path(__file__).resolve().parents[2] / "jobs" / "examples" / "quickstart.yaml"


def _good() -> dict:
    return {"name": "t", "generators": [{"name": "dcgan-faces"}], "targets": ["mse"],
            "codes": {"n": 8, "seed": 1}, "chunk_size": 4}


def test_quickstart_is_valid_and_round_trips():
    spec = load_spec(QUICKSTART)
    assert (spec.generators[0].name, spec.targets, spec.n_codes, spec.method) == (
        "dcgan-faces", ("lpips-alex",), 64, "exact")
    assert all(spec.reducers.values())
    assert spec.generators[0].spaces == ("z",)  # the registry's first space
    assert parse_spec(spec.to_dict()) == spec


def test_defaults_fill_missing_sections():
    spec = parse_spec(_good())
    assert spec.store == DEFAULTS["store"] and spec.method == "exact" and spec.topk is None
    assert spec.keep_eigvecs and not spec.keep_hessian
    assert spec.identity() == parse_spec({**_good(), "store": "s3://b/x", "resources": {"workers": 3}}).identity()
    assert spec.resources["reduce_device"] == "auto"
    cpu = parse_spec({**_good(), "resources": {"reduce_device": "cpu"}})
    assert cpu.resources["reduce_device"] == "cpu" and cpu.identity() == spec.identity()  # placement, not numbers


def test_layers_all_from_yaml_mapping():
    raw = yaml.safe_load("targets:\n  - mse\n  - layers: all\n  - layer:main.5\n")
    spec = parse_spec({**_good(), **raw})
    assert spec.targets == ("mse", "layers:all", "layer:main.5")


@pytest.mark.parametrize("patch, field", [
    ({"codes": {"n": 0, "seed": 1}}, "codes.n"),
    ({"codes": {"n": 4, "seed": -1}}, "codes.seed"),
    ({"codes": {"n": 4, "sed": 1}}, "codes.sed"),
    ({"method": "newton"}, "method"),
    ({"method": "lanczos-backward"}, "topk"),
    ({"topk": 0, "method": "lanczos-forward"}, "topk"),
    ({"chunk_size": 2.5}, "chunk_size"),
    ({"generators": [{"name": "no-such-gan"}]}, "generators[0].name"),
    ({"generators": [{"name": "dcgan-faces", "spaces": ["w"]}]}, "generators[0].spaces"),
    ({"generators": [{"name": "dcgan-faces", "opts": {}}]}, "generators[0].opts"),
    ({"generators": []}, "generators"),
    ({"targets": ["lpips-foo"]}, "targets[0]"),
    ({"targets": ["layers: some"]}, "targets[0]"),
    ({"keep": {"eigvecs": "yes"}}, "keep.eigvecs"),
    ({"keep": {"eigvecs": False}}, "keep"),  # reducers on need eigvecs or hessian
    ({"reducers": {"global": 1}}, "reducers.global"),
    ({"resources": {"workers": 0}}, "resources.workers"),
    ({"resources": {"gpus": 1}}, "resources.gpus"),
    ({"resources": {"reduce_device": "gpu"}}, "resources.reduce_device"),
    ({"name": "has space"}, "name"),
    ({"extra": 1}, "extra"),
])
def test_each_bad_field_is_one_line_naming_it(patch, field):
    with pytest.raises(SpecError) as info:
        parse_spec({**_good(), **patch})
    assert len(info.value.problems) == 1, info.value.problems
    line = info.value.problems[0]
    assert line.startswith(f"{field}:") and "\n" not in line


def test_all_problems_are_collected():
    raw = {**_good(), "name": "", "codes": {"n": -1}, "method": "x", "bogus": True}
    with pytest.raises(SpecError) as info:
        parse_spec(raw)
    fields = sorted(p.split(":")[0] for p in info.value.problems)
    assert fields == ["bogus", "codes.n", "method", "name"]


def test_an_unknown_generator_with_a_space_that_is_no_plain_name_is_two_lines():
    # It raised TypeError: the generator's own space names were looked up on a generator the registry lacks.
    raw = {**_good(), "generators": [{"name": "nosuchgen", "spaces": ["w+"]}]}
    with pytest.raises(SpecError) as info:
        parse_spec(raw)
    assert [p.split(":")[0] for p in info.value.problems] == ["generators[0].name", "generators[0].spaces"]


@pytest.mark.parametrize("text, needle", [("name: [unclosed", "not valid YAML"), ("- a list", "mapping")])
def test_unreadable_spec_file(tmp_path, text, needle):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=needle):
        load_spec(path)
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")


def test_shuffled_control_gets_its_own_label_and_duplicates_are_refused():
    from cluster.spec import SpecError, parse_spec

    base = {"name": "ctl", "targets": ["mse"], "codes": {"n": 4, "seed": 0}}
    spec = parse_spec({**base, "generators": [{"name": "dcgan-faces"},
                                              {"name": "dcgan-faces", "options": {"shuffle_seed": 1}}]})
    assert [g.label for g in spec.generators] == ["dcgan-faces", "dcgan-faces-shuffled1"]
    assert parse_spec(spec.to_dict()).generators == spec.generators  # round-trips
    with pytest.raises(SpecError) as err:
        parse_spec({**base, "generators": [{"name": "dcgan-faces"}, {"name": "dcgan-faces"}]})
    assert err.value.problems == [
        "generators[1].label: 'dcgan-faces' is used by another generator; give each a distinct label"]


def test_paper_gans_example_names_the_catalogue():
    from geometry_core.generators.catalog import CATALOG

    spec = load_spec(QUICKSTART.parent / "paper_gans.yaml")
    assert {g.name for g in spec.generators} <= set(CATALOG)
    assert {s for g in spec.generators for s in g.spaces} == {"z", "w", "noise", "class"}
    assert spec.resources["gpus_per_worker"] == 1 and spec.targets == ("lpips-alex",)


def test_a_generators_own_space_names_are_accepted():
    raw = yaml.safe_load(QUICKSTART.read_text())
    raw["generators"] = [{"name": "stylegan2", "spaces": ["w+"], "options": {"weights": "x.pt"}}]
    assert parse_spec(raw).generators[0].spaces == ("w+",)
    raw["generators"] = [{"name": "dcgan-faces", "spaces": ["w+"]}]
    with pytest.raises(SpecError, match="spaces"):
        parse_spec(raw)
